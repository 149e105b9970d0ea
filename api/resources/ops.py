"""The operator page (`/ops`): one HTML page that polls `/ops/state` and redraws campaigns,
queues, workers, the leader and stuck campaigns without a reload; the login form that opens an
operator session (`/ops/login`) and the logout (`/ops/logout`). See `api/ops_access.py`."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from urllib.parse import parse_qs

import falcon

from api import schemas
from api.access import Access
from api.body import read_bytes
from api.docs import HTML, Answer, Operation
from api.ops_access import (
    FROM_LOGIN_TO_PAGE,
    FROM_LOGOUT_TO_LOGIN,
    LOGIN_PATH,
    PATH,
    LoginThrottle,
    OperatorSessions,
    same_secret,
)
from service.infra.config import Settings
from service.observability import board
from service.observability.health import HealthChecker

log = logging.getLogger("astronote.api")

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE = STATIC / "ops.html"
LOGIN_PAGE = STATIC / "ops_login.html"
# A login form holds one token: anything longer is not one.
MAX_FORM = 4096

SEE_LOGIN = Answer(
    f"To the login form, {LOGIN_PATH}", headers={"Location": ({"type": "string"}, True)}
)
LOGIN_FORM = {
    "type": "object",
    "required": ["token"],
    "additionalProperties": False,
    "properties": {"token": {"type": "string", "description": "ADMIN_TOKEN"}},
}


class OpsPageResource:
    auth = Access.OPERATOR
    login_redirect = True  # a browser without a session is sent to the form, not shown a 401
    docs = {
        "GET": Operation(
            "The operator page (HTML): campaigns, queues, workers, leader, stuck campaigns",
            {200: Answer("The page", schemas.HTML_PAGE, HTML), 303: SEE_LOGIN},
            needs_dependencies=False,
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = PAGE.read_bytes()


class OpsStateResource:
    auth = Access.OPERATOR
    docs = {
        "GET": Operation(
            "What the operator page shows: `/health/full` and the campaigns",
            {200: Answer("The state", schemas.OPERATOR_STATE)},
            needs_dependencies=False,
        )
    }

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = board.operator_state(self.checker)


def login_page(resp: falcon.Response, status: str, error: str = "") -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.cache_control = ["no-store"]
    resp.text = LOGIN_PAGE.read_text().replace("{error}", html.escape(error))


def form_token(req: falcon.Request) -> str | None:
    """The `token` field of an urlencoded form body, or None."""
    if req.content_length is not None and req.content_length > MAX_FORM:
        return None
    raw = read_bytes(req)  # (a chunked body was read already, `DeclaredInput`)
    if len(raw) > MAX_FORM:
        return None
    values = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10).get("token", [])
    return values[0].strip() if len(values) == 1 else None


class OpsLoginResource:
    """Public by necessity: the form is how an operator proves to hold ADMIN_TOKEN."""

    auth = Access.PUBLIC
    one_spelling = True  # `/ops/login/` would resolve its relative links elsewhere
    docs = {
        "GET": Operation(
            "The login form (HTML)",
            {200: Answer("The form", schemas.HTML_PAGE, HTML)},
            errors=(404,),
            needs_dependencies=False,
        ),
        "POST": Operation(
            "Log in with the admin token: an operator session cookie",
            {
                303: Answer(
                    f"Logged in: to {PATH}, with the session cookie",
                    headers={
                        "Location": ({"type": "string"}, True),
                        "Set-Cookie": ({"type": "string"}, True),
                    },
                ),
                401: Answer("Not the admin token: the form again (HTML)", schemas.HTML_PAGE, HTML),
                429: Answer(
                    "Too many wrong tokens from this address in a minute: the form (HTML)",
                    schemas.HTML_PAGE,
                    HTML,
                    headers={"Retry-After": ({"type": "string"}, True)},
                ),
            },
            other_bodies={"application/x-www-form-urlencoded": LOGIN_FORM},
            # 400: the form did not arrive whole, or in time (`api/body.py`)
            errors=(400, 404),
            needs_dependencies=False,
        ),
    }

    def __init__(
        self,
        settings: Settings,
        sessions: OperatorSessions,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.admin_token = settings.admin_token
        self.sessions = sessions
        self.throttle = throttle

    def _require_enabled(self) -> None:
        if not self.admin_token:
            raise falcon.HTTPNotFound(
                description="the operator page is disabled (ADMIN_TOKEN is not set)"
            )

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._require_enabled()
        login_page(resp, falcon.HTTP_200)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._require_enabled()
        address = req.remote_addr or ""
        wait = self.throttle.retry_after(address) if self.throttle else None
        if wait is not None:
            log.warning("operator login throttled", extra={"remote_addr": address})
            login_page(resp, falcon.HTTP_429, "Too many wrong tokens: try again in a minute.")
            resp.set_header("Retry-After", str(wait))
            return
        try:
            token = form_token(req)
        except ValueError:  # more fields than a login form has
            token = None
        if not same_secret(token, self.admin_token):
            log.warning("operator login refused", extra={"remote_addr": address})
            if self.throttle:
                self.throttle.failed(address)
            login_page(resp, falcon.HTTP_401, "That is not the admin token.")
            return
        log.info("operator logged in", extra={"remote_addr": req.remote_addr})
        self.sessions.start(resp)
        raise falcon.HTTPSeeOther(FROM_LOGIN_TO_PAGE, headers={"Cache-Control": "no-store"})


class OpsLogoutResource:
    """Public: deleting the cookie needs no proof, and an expired session must still log out."""

    auth = Access.PUBLIC
    one_spelling = True  # `/ops/login/` would resolve its relative links elsewhere
    docs = {
        "POST": Operation(
            "Log out: the session cookie is deleted", {303: SEE_LOGIN}, needs_dependencies=False
        )
    }

    def __init__(self, sessions: OperatorSessions) -> None:
        self.sessions = sessions

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.sessions.end(resp)
        raise falcon.HTTPSeeOther(FROM_LOGOUT_TO_LOGIN, headers={"Cache-Control": "no-store"})
