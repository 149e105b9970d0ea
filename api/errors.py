"""The one place where errors become HTTP answers: `{"title": ..., "description": ...}`."""

from __future__ import annotations

import json
import logging

import falcon
import redis

from models.database import is_conflict, is_lock_timeout
from service import errors
from service.infra import logs

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
UNAVAILABLE = logs.OUTAGES


def domain_error(
    req: falcon.Request, resp: falcon.Response, error: errors.DomainError, params: dict
) -> None:
    body = {"title": error.title, "description": error.description}
    if error.field:
        body["field"] = error.field
    if isinstance(error, errors.Unauthorized):
        resp.set_header("WWW-Authenticate", "Bearer")
    # The most specific class mapped (a subclass of InvalidInput is still a 422).
    resp.status = next(
        (STATUS[cls] for cls in type(error).__mro__ if cls in STATUS), falcon.HTTP_400
    )
    resp.media = body


def dependency_name(error: Exception) -> str:
    return "redis" if isinstance(error, redis.RedisError) else "postgresql"


def dependency_down(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict
) -> None:
    if is_conflict(error):
        # Not a lost database: the request's transaction lost a deadlock (or a serialization
        # check) to another one, again after `retry_conflicts` ran it anew where it applies.
        log.warning("transaction conflict", extra={"path": req.path, "error": str(error)[:200]})
        raise falcon.HTTPServiceUnavailable(
            title="Conflict",
            description="the request conflicted with concurrent changes, try again",
            headers={"Retry-After": "1"},
        )
    if is_lock_timeout(error):
        # A lock not granted in time: a write of a shop whose data is being erased waits no
        # longer than `erasure_lock.WRITER_WAIT_MS` (or a frozen peer holds a row).
        log.warning("lock timeout", extra={"path": req.path, "error": str(error)[:200]})
        raise falcon.HTTPServiceUnavailable(
            title="Busy",
            description="the data this request writes is locked by another change (for"
            " example an erasure of the shop's data), try again shortly",
            headers={"Retry-After": "2"},
        )
    # The answer names the dependency only: the error may hold a host name or a DSN.
    name = dependency_name(error)
    log.warning(
        "dependency unavailable",
        extra={"path": req.path, "dependency": name, "error": str(error)[:200]},
    )
    raise falcon.HTTPServiceUnavailable(
        title="Service unavailable",
        description=f"{name} is unavailable, try again shortly",
        headers={"Retry-After": "5"},
    )


def unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict) -> None:
    if isinstance(error, falcon.HTTPError):
        raise error
    log.exception("unexpected error", extra={"path": req.path, "method": req.method})
    raise falcon.HTTPInternalServerError(title="Internal error", description="the error was logged")


# Falcon raises its routing errors without a description; SPEC 5 promises one on every error.
DEFAULT_DESCRIPTIONS = {
    404: "there is nothing at this path",
    405: "this method is not allowed on this path (the Allow header lists those that are)",
}


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every HTTPError, Falcon's own included, as JSON `{title, description}` whatever the
    client's Accept header says (Falcon's default would answer XML, or nothing)."""
    body = error.to_dict()
    body.setdefault("description", DEFAULT_DESCRIPTIONS.get(error.status_code, error.title))
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(body).encode()


def register(app: falcon.App) -> None:
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(UNAVAILABLE, dependency_down)
    app.add_error_handler(errors.DomainError, domain_error)
