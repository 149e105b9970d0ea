"""Who may see `/ops`: holders of ADMIN_TOKEN, like `/admin/*`.

A browser cannot send a bearer header when it opens a page, so `/ops?token=<ADMIN_TOKEN>`
exchanges the token for a session cookie (HttpOnly, SameSite=Strict, path `/ops`) and
redirects to `/ops`, keeping the token out of the address bar and the history. The cookie
holds an HMAC of the token, never the token itself; changing ADMIN_TOKEN ends every session.
"""
from __future__ import annotations

import hashlib
import hmac

import falcon

from service.errors import NotFound, Unauthorized

COOKIE = "astronote_ops"
PATH = "/ops"


def is_ops_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def session_value(admin_token: str) -> str:
    return hmac.new(admin_token.encode(), b"astronote-ops-session", hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def authorize(req: falcon.Request, admin_token: str | None, bearer_token: str | None) -> None:
    """Raise unless the request carries ADMIN_TOKEN (bearer or `?token=`) or its session
    cookie; `req.context.ops_login` tells the page to set the cookie."""
    if not admin_token:
        raise NotFound("the operator page is disabled (ADMIN_TOKEN is not set)")
    if _same(bearer_token, admin_token):
        return
    for value in req.get_cookie_values(COOKIE) or ():
        if _same(value, session_value(admin_token)):
            return
    if _same(req.get_param("token"), admin_token):
        req.context.ops_login = True
        return
    raise Unauthorized("the operator page needs ADMIN_TOKEN: open /ops?token=<ADMIN_TOKEN>"
                       " or send Authorization: Bearer <ADMIN_TOKEN>")


def start_session(req: falcon.Request, resp: falcon.Response, admin_token: str) -> None:
    """Set the session cookie and redirect to the page without the token in its URL."""
    resp.set_cookie(COOKIE, session_value(admin_token), path=PATH, http_only=True,
                    secure=req.forwarded_scheme == "https", same_site="Strict")
    raise falcon.HTTPSeeOther(PATH)
