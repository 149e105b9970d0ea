"""Operator sessions for `/ops`: a browser cannot send a bearer header when it opens a page, so
the login form (`POST /ops/login`) exchanges ADMIN_TOKEN for a session cookie.

The cookie (HttpOnly, SameSite=Strict, Secure when PUBLIC_BASE_URL is https) holds
its expiry, a random nonce and an HMAC of both under SECRET_KEY, never the token. The HMAC also
covers a digest of ADMIN_TOKEN, so rotating either SECRET_KEY or ADMIN_TOKEN ends every
session. The server keeps no session state: logging out deletes the cookie in the browser.

Behind a proxy that serves the API under a path prefix (PUBLIC_BASE_URL=https://x/sms/), the
pages, redirects and cookie must stay under it: redirects (`FROM_..._TO_...`) and the pages'
links are relative, and the cookie has no Path, so the browser scopes it to the login's
directory (`/sms/ops`, or `/ops` without a prefix). A probe found every absolute `/ops/...`
leave the prefix, the session cookie with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import falcon
import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

COOKIE = "astronote_ops"
PATH = "/ops"
LOGIN_PATH = "/ops/login"
# Redirects as relative references (RFC 9110 allows them in Location), resolved by the browser
# against the request's own URL, prefix included: from `/ops`, from `/ops/login`, and from
# `/ops/logout`.
FROM_PAGE_TO_LOGIN = "ops/login"
FROM_LOGIN_TO_PAGE = "../ops"
FROM_LOGOUT_TO_LOGIN = "login"
# Wrong admin tokens one client address may post to the login form a minute.
LOGIN_FAILURES_ALLOWED = 10
_VERSION = "v1"


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a presented secret with the configured one."""
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class OperatorSessions:
    """Issues and checks operator session cookies; `clock` returns Unix seconds."""

    def __init__(
        self,
        secret_key: str,
        admin_token: str | None,
        ttl_s: int,
        secure: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret_key = secret_key.encode()
        self.admin_token = admin_token
        self.ttl_s = ttl_s
        self.secure = secure
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.admin_token)

    def _mac(self, expires: int, nonce: str) -> str:
        token_digest = hashlib.sha256((self.admin_token or "").encode()).hexdigest()
        message = f"ops-session:{_VERSION}:{expires}:{nonce}:{token_digest}".encode()
        digest = hmac.new(self.secret_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self) -> str:
        """A new session value, valid for `ttl_s` seconds from now."""
        expires = int(self.clock()) + self.ttl_s
        nonce = secrets.token_urlsafe(12)
        return f"{_VERSION}.{expires}.{nonce}.{self._mac(expires, nonce)}"

    def valid(self, value: str | None) -> bool:
        """True for a session this server issued that has not expired."""
        if not self.enabled or not value:
            return False
        version, _, rest = value.partition(".")
        expires_text, _, rest = rest.partition(".")
        nonce, _, mac = rest.partition(".")
        # isascii: str.isdigit() accepts digits int() refuses ("²"); and int() refuses more
        # than 4,300 digits: a Unix time has 10.
        if (
            version != _VERSION
            or len(expires_text) > 12
            or not expires_text.isascii()
            or not expires_text.isdigit()
            or not nonce
            or not mac
        ):
            return False
        expires = int(expires_text)
        return same_secret(mac, self._mac(expires, nonce)) and self.clock() < expires

    def present(self, req: falcon.Request) -> bool:
        return any(self.valid(value) for value in req.get_cookie_values(COOKIE) or ())

    def start(self, resp: falcon.Response) -> None:
        resp.set_cookie(
            COOKIE,
            self.issue(),
            max_age=self.ttl_s,
            secure=self.secure,
            http_only=True,
            same_site="Strict",
        )

    def end(self, resp: falcon.Response) -> None:
        resp.unset_cookie(COOKIE, same_site="Strict")


class LoginThrottle:
    """Failed operator logins per client address, shared by every web process (Redis, the
    `limits` library's moving window): past LOGIN_FAILURES_ALLOWED a minute, the address is
    refused (429) until the oldest failure is a minute old, right token or not, so the admin
    token cannot be guessed at the web's request rate. Without Redis, logins are not refused
    (the token's own length is the defence then)."""

    def __init__(self, client: redis.Redis) -> None:
        storage = RedisStorage("redis://", connection_pool=client.connection_pool)
        self.limiter = MovingWindowRateLimiter(storage)
        self.rate = parse(f"{LOGIN_FAILURES_ALLOWED}/minute")

    def retry_after(self, address: str) -> int | None:
        """Seconds the address must wait before trying again, or None if it may try now."""
        try:
            if self.limiter.test(self.rate, "ops-login", address):
                return None
            reset, _ = self.limiter.get_window_stats(self.rate, "ops-login", address)
        except redis.RedisError:
            return None
        return max(1, int(reset - time.time()) + 1)

    def failed(self, address: str) -> None:
        try:
            self.limiter.hit(self.rate, "ops-login", address)
        except redis.RedisError:
            pass
