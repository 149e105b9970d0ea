"""The one place where errors become HTTP answers: `{"title": ..., "description": ...}`."""
from __future__ import annotations

import logging

import falcon
import peewee
import psycopg2
import redis

from service import errors

log = logging.getLogger("astronote.api")

STATUS = {
    errors.InvalidInput: falcon.HTTP_422,
    errors.NoRecipients: falcon.HTTP_422,
    errors.NotFound: falcon.HTTP_404,
    errors.InvalidTransition: falcon.HTTP_409,
    errors.InsufficientCredits: falcon.HTTP_402,
    errors.Unauthorized: falcon.HTTP_401,
    errors.DependencyUnavailable: falcon.HTTP_503,
}

# A lost database or Redis is the dependency's fault, not the request's: 503, never 500.
UNAVAILABLE = (peewee.OperationalError, peewee.InterfaceError, psycopg2.OperationalError,
               psycopg2.InterfaceError, redis.ConnectionError, redis.TimeoutError)


def domain_error(req: falcon.Request, resp: falcon.Response, error: errors.DomainError,
                 params: dict) -> None:
    body = {"title": error.title, "description": error.description}
    if error.field:
        body["field"] = error.field
    if isinstance(error, errors.Unauthorized):
        resp.set_header("WWW-Authenticate", "Bearer")
    resp.status = STATUS.get(type(error), falcon.HTTP_400)
    resp.media = body


def dependency_down(req: falcon.Request, resp: falcon.Response, error: Exception,
                    params: dict) -> None:
    log.warning("dependency unavailable", extra={"path": req.path, "error": str(error)[:200]})
    raise falcon.HTTPServiceUnavailable(title="Service unavailable",
                                        description=f"a dependency is down: {type(error).__name__}",
                                        headers={"Retry-After": "5"})


def unexpected(req: falcon.Request, resp: falcon.Response, error: Exception,
               params: dict) -> None:
    if isinstance(error, falcon.HTTPError):
        raise error
    log.exception("unexpected error", extra={"path": req.path, "method": req.method})
    raise falcon.HTTPInternalServerError(title="Internal error",
                                         description="the error was logged")


def register(app: falcon.App) -> None:
    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(UNAVAILABLE, dependency_down)
    app.add_error_handler(errors.DomainError, domain_error)
