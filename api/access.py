"""Who may call a resource: each resource class declares it, and `Authentication` decides from
the routed resource, never from the path string (SPEC 5).

A class declares one `Access` for all its responders (`auth = Access.SHOP`), or a mapping from
HTTP method to `Access` when its responders differ. `create_app` refuses to register a resource
whose responders are not all declared, so a route cannot go live unguarded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import falcon

# Falcon's responder names: `on_get`, `on_post`, ... (we use no suffixed responders).
METHODS = tuple(falcon.COMBINED_METHODS)


class Access(enum.Enum):
    PUBLIC = "public"  # anyone: health, readiness, links, the OpenAPI document, the login form
    SHOP = "shop"  # a shop's API key (bearer); the resource sees only `req.context.shop_id`
    ADMIN = "admin"  # ADMIN_TOKEN as a bearer token
    OPERATOR = "operator"  # ADMIN_TOKEN as a bearer token, or the operator session cookie
    WEBHOOK = "webhook"  # DLR_WEBHOOK_SECRET, header `X-Webhook-Token` or `?token=`
    SHOPIFY = "shopify"  # X-Shopify-Hmac-Sha256: HMAC of the raw body under SHOPIFY_API_SECRET


class UndeclaredAccess(Exception):
    """A resource has a responder that declares no `Access`: it must not be routed."""


def responders(resource: object) -> list[str]:
    """The HTTP methods `resource` answers itself (Falcon answers the others with 405)."""
    return [
        method for method in METHODS if callable(getattr(resource, f"on_{method.lower()}", None))
    ]


def declaration(resource: object) -> Access | Mapping[str, Access] | None:
    return getattr(resource, "auth", None)


def undeclared(resource: object) -> list[str]:
    """The methods `resource` answers without saying who may call them ([] when it is sound)."""
    declared = declaration(resource)
    if isinstance(declared, Access):
        return []
    if not isinstance(declared, Mapping):
        return responders(resource) or ["(no responder)"]
    known = {method for method, access in declared.items() if isinstance(access, Access)}
    return [method for method in responders(resource) if method not in known]


def require_declared(uri_template: str, resource: object) -> None:
    missing = undeclared(resource)
    if missing:
        raise UndeclaredAccess(
            f"{type(resource).__name__} at {uri_template} declares no access"
            f" for {', '.join(missing)}: set `auth = Access.<who>`"
        )


def access_for(resource: object, method: str) -> Access:
    """Who may call `method` on `resource`. A method a mixed resource does not declare (it has
    no responder for it) is a 405 listing the declared ones, before anything else runs."""
    declared = declaration(resource)
    if isinstance(declared, Access):
        return declared
    if isinstance(declared, Mapping) and isinstance(declared.get(method), Access):
        return declared[method]
    if isinstance(declared, Mapping):
        raise falcon.HTTPMethodNotAllowed(sorted(declared))
    # Unreachable through create_app (require_declared); refuse rather than guess.
    raise falcon.HTTPNotFound()


# A request whose body is larger is heavy whatever its route: a campaign to 500,000 contact
# ids (4.5 MB) is read in a web process's child, as an import is (`api/import_processes.py`).
HEAVY_BODY = 256 * 1024


def heavy(
    resource: object, method: str, content_length: int | None = None, chunked: bool = False
) -> bool:
    """Whether `method` on `resource` is heavy work (a contacts import: a second or so of a
    core), which a shop may have fewer of in flight (`API_SHOP_HEAVY_CONCURRENCY`). A class
    declares its heavy methods: `heavy = frozenset({"POST"})`; and any request declaring a
    body over `HEAVY_BODY`, or sending one in chunks (its size unknown until it is read), is
    heavy."""
    return (
        method in getattr(resource, "heavy", ())
        or (content_length or 0) > HEAVY_BODY
        or (content_length is None and chunked)
    )
