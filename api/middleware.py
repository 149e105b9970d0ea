"""Falcon middleware: canonical paths only, a pooled database connection per request,
authentication by routed resource, and the security headers of every answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import threading
import uuid
from typing import Any

import falcon

from api import paths
from api.access import HEAVY_BODY, Access, access_for, heavy
from api.body import MAX_BODY, discard_body, parse_json, read_bytes, too_large
from api.ops_access import FROM_PAGE_TO_LOGIN, LOGIN_PATH, OperatorSessions, same_secret
from api.workers import hold_connection
from models.database import db
from service import api_keys
from service.errors import InvalidInput, NotFound, Unauthorized
from service.infra.api_rate_limit import Admission, ShopLimits
from service.infra.config import Settings

# Refused requests of one shop whose body a web process reads at once (`Authentication._discard`).
DISCARDING_PER_SHOP = 1


class CanonicalPath:
    """First of all middleware: a path in any spelling but the canonical one is a 404 before
    routing, authentication or any resource sees it (see `api/paths.py`)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        why = paths.refusal(req.env)
        if why:
            raise falcon.HTTPNotFound(description=f"there is nothing at this path ({why})")


class DatabaseConnection:
    """Connect lazily (autoconnect), hand the connection back to the pool after the answer."""

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool
    ) -> None:
        if not db.is_closed():
            db.close()


def bearer(req: falcon.Request) -> str | None:
    header = req.get_header("Authorization") or ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authentication:
    """Decides from the routed resource's declared `Access` (`api/access.py`), never from the
    path; a shop's key sets `req.context.shop_id`, the only shop the resource may see."""

    def __init__(
        self, settings: Settings, sessions: OperatorSessions, limits: ShopLimits | None = None
    ) -> None:
        self.admin_token = settings.admin_token
        self.webhook_secret = settings.dlr_webhook_secret
        self.shopify_secret = settings.shopify_api_secret
        self.sessions = sessions
        self.limits = limits
        self.refusal_hold_s = settings.api_refusal_hold_ms / 1000
        # Refused requests of each shop reading their body right now, in this process.
        self._discarding: dict[int, int] = {}
        self._discarding_lock = threading.Lock()

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource, params: dict
    ) -> None:
        access = access_for(resource, req.method)
        req.context.access = access
        # strip_url_path_trailing_slash serves `/r/{code}/` (links mangled by SMS apps); a
        # protected route has one spelling only, and so do the operator's login and logout,
        # whose relative links and cookie scope resolve from their one path.
        if paths.has_trailing_slash(req.env) and (
            access is not Access.PUBLIC or getattr(resource, "one_spelling", False)
        ):
            raise falcon.HTTPNotFound()
        if access is Access.PUBLIC:
            return
        {
            Access.SHOP: self._shop,
            Access.ADMIN: self._admin,
            Access.OPERATOR: self._operator,
            Access.WEBHOOK: self._webhook,
            Access.SHOPIFY: self._shopify,
        }[access](req, resource)

    def _shop(self, req: falcon.Request, resource: object) -> None:
        token = bearer(req)
        if not token:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        key_hash, request_id = api_keys.hash_key(token), uuid.uuid4().hex
        # A key seen before names its shop in Redis: the shop's limits are decided there, in
        # one round trip, before the body is read or the database asked (a shop over its
        # budget costs the others no database connection or query).
        is_heavy = heavy(
            resource, req.method, req.content_length, bool(req.get_header("Transfer-Encoding"))
        )
        admission = self._admit(req, request_id, key_hash=key_hash, heavy=is_heavy)
        principal = api_keys.authenticate(token)  # every admitted request: revocation at once
        if principal is None:
            if admission is not None and admission.shop_id is not None and self.limits:
                self.limits.forget(key_hash)
            raise Unauthorized("the API key is not valid")
        req.context.shop_id = principal.shop_id
        req.context.api_key_id = principal.key_id
        if self.limits is not None and (admission is None or admission.shop_id is None):
            self.limits.remember(key_hash, principal.shop_id)
            self._admit(req, request_id, shop_id=principal.shop_id, heavy=is_heavy)

    def _admit(self, req: falcon.Request, request_id: str, **who: Any) -> Admission | None:
        if self.limits is None:
            return None
        admission = self.limits.admit(request_id, **who)
        if admission.held:
            req.context.in_flight = (admission.shop_id, request_id)
        if admission.refused and admission.shop_id is not None:
            self._discard(req, admission.shop_id)
        if admission.refused:
            # The 429 is written only after (part of) its Retry-After, the connection unread
            # meanwhile (`api/workers.py`): for between half of the hold and all of it, at
            # random. A shop's refusals come in bursts (its threads refused together when it
            # reaches its limit); held alike, they came back together a second later, took
            # both cores for 50-90 ms, were refused together again, and so on: another shop's
            # slowest requests were the ones that fell into those bursts (bench/RESULTS.md,
            # "A shop's refusals in step").
            hold_connection(
                min(self.refusal_hold_s, admission.retry_after) * random.uniform(0.5, 1.0)
            )
        if admission.refused == "rate":
            raise falcon.HTTPTooManyRequests(
                title="Too many requests",
                description=f"this shop's API limit is {self.limits.rate_description}"
                f" (API_RATE_LIMIT); retry after {admission.retry_after} s",
                retry_after=admission.retry_after,
            )
        if admission.refused == "concurrency":
            raise falcon.HTTPTooManyRequests(
                title="Too many requests",
                description=f"this shop may have {self.limits.cap} requests in"
                " flight at once (API_SHOP_CONCURRENCY); retry when one has been answered",
                retry_after=admission.retry_after,
            )
        if admission.refused == "heavy":
            raise falcon.HTTPTooManyRequests(
                title="Too many requests",
                description=f"this shop may have {self.limits.heavy_cap} heavy request"
                f"{'' if self.limits.heavy_cap == 1 else 's'} (imports, and bodies over"
                f" {HEAVY_BODY // 1024} KiB) in flight at once (API_SHOP_HEAVY_CONCURRENCY);"
                " retry when it has been answered",
                retry_after=admission.retry_after,
            )
        return admission

    def _discard(self, req: falcon.Request, shop_id: int) -> None:
        """Read a refused request's body, so that a client still sending it gets the 429 (see
        `discard_body`), but for one of a shop's refused requests at a time in this process: a
        shop sending big bodies as fast as it is refused would otherwise hold every thread
        reading them (8 KiB, and a GIL hand-over, at a time). Its other refusals are left to
        gunicorn, which closes a connection with more than 64 KiB of body unread (the app cannot
        ask for it: gunicorn drops a `Connection` header of the app's)."""
        with self._discarding_lock:
            if self._discarding.get(shop_id, 0) >= DISCARDING_PER_SHOP:
                return
            self._discarding[shop_id] = self._discarding.get(shop_id, 0) + 1
        try:
            discard_body(req)
        finally:
            with self._discarding_lock:
                self._discarding[shop_id] -= 1
                if not self._discarding[shop_id]:
                    del self._discarding[shop_id]

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool
    ) -> None:
        in_flight = getattr(req.context, "in_flight", None)
        if in_flight is not None and self.limits is not None:
            self.limits.release(*in_flight)

    def _admin(self, req: falcon.Request, resource: object) -> None:
        if not self.admin_token:
            raise NotFound("the admin API is disabled (ADMIN_TOKEN is not set)")
        if not same_secret(bearer(req), self.admin_token):
            raise Unauthorized(
                "a valid admin token is required: Authorization: Bearer <ADMIN_TOKEN>"
            )

    def _operator(self, req: falcon.Request, resource: object) -> None:
        if not self.admin_token:
            raise NotFound("the operator page is disabled (ADMIN_TOKEN is not set)")
        if same_secret(bearer(req), self.admin_token) or self.sessions.present(req):
            return
        if req.method == "GET" and getattr(resource, "login_redirect", False):
            raise falcon.HTTPSeeOther(FROM_PAGE_TO_LOGIN)
        raise Unauthorized(f"log in at {LOGIN_PATH}, or send Authorization: Bearer <ADMIN_TOKEN>")

    def _webhook(self, req: falcon.Request, resource: object) -> None:
        if not self.webhook_secret:
            raise NotFound("the provider's webhooks are disabled (DLR_WEBHOOK_SECRET unset)")
        token = req.get_header("X-Webhook-Token") or req.get_param("token")
        if not same_secret(token, self.webhook_secret):
            raise Unauthorized("a valid webhook token is required")

    def _shopify(self, req: falcon.Request, resource: object) -> None:
        if not self.shopify_secret:
            raise NotFound("the Shopify webhooks are disabled (SHOPIFY_API_SECRET unset)")
        # The signature covers the body exactly as sent; read_bytes keeps it for the resource.
        if not shopify_signature_valid(
            self.shopify_secret, read_bytes(req), req.get_header("X-Shopify-Hmac-Sha256")
        ):
            raise Unauthorized("a valid X-Shopify-Hmac-Sha256 signature is required")


def shopify_signature_valid(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` is Shopify's base64 HMAC-SHA256 of `body` under `secret`, compared
    in constant time."""
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return signature is not None and hmac.compare_digest(signature.strip().encode(), expected)


class SecurityHeaders:
    """`nosniff` and no framing on every answer (the operator page and the unsubscribe
    confirmation must not be clickjacked); `no-store` on every answer of a non-public route,
    which carry phone numbers, API keys and the operator's view."""

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("X-Frame-Options", "DENY")
        if not resp.get_header("Content-Security-Policy"):
            resp.set_header("Content-Security-Policy", "frame-ancestors 'none'")
        if getattr(req.context, "access", Access.PUBLIC) is not Access.PUBLIC:
            resp.cache_control = ["no-store"]


class DeclaredInput:
    """The API's routes take only what their operation declares (SPEC 5: unknown fields are
    422, never silently dropped): a query parameter it does not list, or a body on a bodiless
    POST (`pause`, `cancel`, `enqueue`, issuing a key), is refused naming the field. A caller
    sending `{"reason": ...}` to cancel, or `?first_name=` to a list, believed it was read.
    A declared parameter given twice is refused too (which one was meant?), and a body on a
    GET or DELETE is read like a bodiless POST's.
    Bodies with a schema are checked by it (`read_json`). Only the JSON API (shop and admin
    routes): pages, forms and webhooks read what they read."""

    CHECKED = (Access.SHOP, Access.ADMIN)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if resource is None or req.method in ("OPTIONS", "HEAD"):
            return
        if req.content_length is not None and req.content_length > MAX_BODY:
            # Every route, pages and forms too: a 6 MiB unsubscribe POST was answered 200
            # (its body never read) where the README's limit says 413.
            raise too_large()
        if req.content_length is None and req.get_header("Transfer-Encoding"):
            # A chunked body says its size only as it comes: read (and kept for whoever reads
            # it), 413 over the cap, 400 incomplete, on routes that never read theirs too.
            read_bytes(req)
        if getattr(req.context, "access", None) not in self.CHECKED:
            return
        operation = (getattr(resource, "docs", None) or {}).get(req.method)
        if operation is None:
            return
        declared = {param.name for param in operation.query if param.location == "query"}
        for name, value in req.params.items():
            if name not in declared:
                listed = ", ".join(sorted(declared)) or "none"
                raise InvalidInput(
                    f"unknown query parameter {name!r} (this request takes: {listed})",
                    name or "query",
                )
            if isinstance(value, list):
                # Falcon hands the handlers the last of them: `?limit=1&limit=2`, or
                # `?default_country=GR&default_country=CY`, read as one the caller may not mean.
                raise InvalidInput(f"query parameter {name!r} is given more than once", name)
        if operation.body is not None or operation.other_bodies:
            return
        raw = read_bytes(req)
        if not raw.strip():
            return
        try:
            document = parse_json(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            document = raw
        if document == {} or document is None:  # `{}` or `null`: nothing sent
            return
        field = next(iter(document)) if isinstance(document, dict) else "body"
        raise InvalidInput(f"this request takes no body (got {field})", field)
