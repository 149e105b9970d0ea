"""Falcon middleware: a pooled database connection per request, and authentication."""
from __future__ import annotations

import hmac

import falcon

from api import ops_access
from models.database import db
from service import shops
from service.errors import NotFound, Unauthorized
from service.infra.config import Settings

PUBLIC_PREFIXES = ("/health", "/readiness", "/u/", "/r/", "/webhooks/", "/openapi.json", "/metrics")


class DatabaseConnection:
    """Connect lazily (autoconnect), hand the connection back to the pool after the answer."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        if not db.is_closed():
            db.close()


def bearer(req: falcon.Request) -> str | None:
    header = req.get_header("Authorization") or ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authentication:
    """`/admin/*` takes ADMIN_TOKEN; other non-public routes take a shop API key and see only
    that shop (`req.context.shop_id`)."""

    def __init__(self, settings: Settings) -> None:
        self.admin_token = settings.admin_token

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method == "OPTIONS" or req.path.startswith(PUBLIC_PREFIXES):
            return
        token = bearer(req)
        if ops_access.is_ops_path(req.path):
            ops_access.authorize(req, self.admin_token, token)
            return
        if req.path.startswith("/admin/") or req.path == "/admin":
            if not self.admin_token:
                raise NotFound("the admin API is disabled (ADMIN_TOKEN is not set)")
            # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
            if not token or not hmac.compare_digest(token.encode(), self.admin_token.encode()):
                raise Unauthorized("a valid admin token is required")
            return
        if not token:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        shop = shops.shop_for_key(token)
        if shop is None:
            raise Unauthorized("the API key is not valid")
        req.context.shop_id = shop.id
