"""The OpenAPI 3.1 document (`GET /openapi.json`), built from the routed application itself.

Every route Falcon serves is walked; each responder contributes the `Operation` its resource
declares (`docs`, see `api/docs.py`), with the request schemas that validate it and the answer
schemas of `api/schemas.py`. What the route already says is derived here, never declared twice:
path parameters from the URI template and its converters (an id is `id`, 1 to 2^63-1),
security from the resource's `Access`, and the error answers from the access, the body and the
parameters. A new route needs only its `docs`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import falcon

from api import schemas
from api.access import Access, access_for, responders
from api.docs import JSON, Answer, Operation, operation_id
from api.ops_access import COOKIE
from api.paths import MAX_ID
from service.idempotency import HEADER as IDEMPOTENCY_HEADER
from service.idempotency import MAX_KEY_LENGTH

# Every public schema constant of `api/schemas.py` is a named component (CAMPAIGN_CREATE ->
# CampaignCreate), found by identity wherever an operation uses it; other schemas are inline.
COMPONENTS = {
    id(value): "".join(word.capitalize() for word in name.split("_"))
    for name, value in vars(schemas).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, dict)
}

SECURITY_SCHEMES = {
    "shopApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A shop's API key (`POST /admin/shops` answers the first one, once):"
            " `Authorization: Bearer <key>`. The operation sees only that shop's data."
        ),
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "`ADMIN_TOKEN`: `Authorization: Bearer <token>`. Unset, the routes that take it"
            " answer 404."
        ),
    },
    "webhookToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Webhook-Token",
        "description": "`DLR_WEBHOOK_SECRET`; unset, the webhook answers 404.",
    },
    "webhookTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "`DLR_WEBHOOK_SECRET` in the callback URL (`?token=`).",
    },
    "shopifyHmac": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Shopify-Hmac-Sha256",
        "description": "base64 HMAC-SHA256 of the raw body under SHOPIFY_API_SECRET;"
        " unset, the webhooks answer 404.",
    },
    "operatorSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE,
        "description": (
            "The operator session `POST /ops/login` sets (HttpOnly, SameSite=Strict; no Path: the"
            " browser scopes it to `/ops`, under any path prefix a proxy adds)."
        ),
    },
}

# Who may call an operation (`api/access.py`) -> its OpenAPI security requirement (any one).
SECURITY: dict[Access, list[dict[str, list]]] = {
    Access.PUBLIC: [],
    Access.SHOP: [{"shopApiKey": []}],
    Access.ADMIN: [{"adminToken": []}],
    Access.OPERATOR: [{"adminToken": []}, {"operatorSession": []}],
    Access.WEBHOOK: [{"webhookToken": []}, {"webhookTokenQuery": []}],
    Access.SHOPIFY: [{"shopifyHmac": []}],
}

_RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 0},
}

# Every error is `{title, description, field?}` (`api/errors.py`); what each status means here.
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Malformed body: not JSON (or not CSV), or empty", {}),
    401: (
        "Missing or invalid credentials",
        {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    ),
    402: ("Insufficient credits: nothing changed", {}),
    404: (
        "Not found: no such object, another shop's (indistinguishable), a disabled feature,"
        " or a path not in its one canonical spelling",
        {},
    ),
    409: ("Invalid state transition, or a request with this Idempotency-Key still in flight", {}),
    410: (
        "A replay whose first answer held personal data that has since been erased: the"
        " answer is not kept, and the request is not run again",
        {},
    ),
    413: ("Body over 5 MiB", {}),
    415: ("The body is not JSON by its Content-Type (or CSV where taken), or is compressed", {}),
    422: (
        "Validation failed (`field` names the field or header), or an Idempotency-Key"
        " reused with another request",
        {},
    ),
    429: (
        "The shop's API rate limit is exhausted",
        {"Retry-After": {**_RETRY_AFTER, "required": True}},
    ),
    503: (
        "PostgreSQL or Redis is unavailable (the answer names which, never the error), or"
        " the delivery-report webhook sheds load (retry after `Retry-After`)",
        {"Retry-After": _RETRY_AFTER},
    ),
}

IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Same key and body again: the first answer again. Same key, another body:"
        " 422. Still in flight: 409. Per shop, kept 24 h."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
}

# `{name}` or `{name:converter(arguments)}` in a Falcon URI template.
_FIELD = re.compile(r"\{(\w+)(?::(\w+)(?:\((.*?)\))?)?\}")
_ARGUMENT = re.compile(r"(\w+)\s*=\s*(-?\d+)")


def routed(app: falcon.App) -> Iterator[tuple[str, object]]:
    """(URI template, resource) of every route in Falcon's compiled router (the same walk as
    `falcon.inspect`, which names resources but does not hand them out)."""
    nodes = list(app._router._roots)
    while nodes:
        node = nodes.pop()
        if node.resource is not None:
            yield str(node.uri_template), node.resource
        nodes.extend(node.children)


def path_parameter(name: str, converter: str | None, arguments: str | None) -> dict[str, Any]:
    """The OpenAPI parameter of one template field, constrained as its converter is."""
    if converter is None:  # any non-empty segment
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
    elif converter == "id":  # `api/paths.IdConverter`
        schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    elif converter == "int":
        bounds = dict(_ARGUMENT.findall(arguments or ""))
        schema = {"type": "integer"}
        schema.update(
            {
                key: int(bounds[arg])
                for key, arg in (("minimum", "min"), ("maximum", "max"))
                if arg in bounds
            }
        )
    else:
        raise ValueError(f"no OpenAPI description for the route converter {converter!r}")
    return {"name": name, "in": "path", "required": True, "schema": schema}


def openapi_path(uri_template: str) -> tuple[str, list[dict[str, Any]]]:
    """`/campaigns/{campaign_id:int(...)}` -> (`/campaigns/{campaign_id}`, its parameters)."""
    parameters = [path_parameter(*field.groups()) for field in _FIELD.finditer(uri_template)]
    return _FIELD.sub(lambda field: f"{{{field.group(1)}}}", uri_template), parameters


def error_statuses(
    method: str, access: Access, operation: Operation, has_path_parameters: bool
) -> set[int]:
    """The error answers an operation can give, from what it is and what it declares."""
    # 413: a declared length over the cap, on every route (`DeclaredInput`)
    statuses = set(operation.errors) | {413}
    if has_path_parameters or access is not Access.PUBLIC:
        statuses.add(404)  # no such object (or another shop's), or the feature is off
    if access is not Access.PUBLIC:
        statuses.add(401)
    json_api = access in (Access.SHOP, Access.ADMIN)
    if access is Access.SHOP:
        statuses.add(429)
        if method == "POST":
            # Idempotency-Key in flight, reused; a replay whose first answer held personal
            # data since erased (`service/idempotency.ERASED_ANSWER`)
            statuses.update((409, 410, 422))
    if operation.body is not None or json_api:
        # A body read by `api/body.py` (a form is read by its resource); on the JSON API also
        # `DeclaredInput`: an undeclared query parameter, or a body where none is taken (read
        # whole first: an incomplete one is 400)
        statuses.update((400, 422))
    if operation.body is not None and json_api:
        statuses.add(415)  # the webhooks read a body whatever its labels (`api/body.py`)
    if operation.query:
        statuses.add(422)
    if operation.needs_dependencies:
        statuses.add(503)
    return statuses


def answer_object(answer: Answer, ids: set[str]) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.schema is not None:
        described["content"] = {answer.media_type: {"schema": answer.schema}}
    if answer.headers:
        described["headers"] = {
            name: {"schema": schema, "required": required}
            for name, (schema, required) in answer.headers.items()
        }
    # A link to an operation that is not documented would be a broken reference.
    links = {
        name: {
            "operationId": operation_id(link.method, link.path),
            "parameters": dict(link.parameters),
        }
        for name, link in answer.links.items()
        if operation_id(link.method, link.path) in ids
    }
    if links:
        described["links"] = links
    return described


def error_object(status: int, also: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON error of `status`; merged into the operation's own answer when it has one
    (the link pages answer a 404 as HTML, the canonical-path check as JSON)."""
    description, headers = ERRORS[status]
    described: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": schemas.ERROR}},
    }
    if headers:
        described["headers"] = dict(headers)
    if also is None:
        return described
    merged = {
        **described,
        **also,
        "description": f"{also['description']}; or: {description}",
        "content": {**described["content"], **also.get("content", {})},
    }
    if headers or "headers" in also:
        merged["headers"] = {**headers, **also.get("headers", {})}
    return merged


def operation_object(
    method: str,
    path: str,
    path_parameters: list[dict[str, Any]],
    access: Access,
    operation: Operation,
    ids: set[str],
) -> dict[str, Any]:
    parameters = list(path_parameters)
    parameters += [
        {
            "name": param.name,
            "in": param.location,
            "required": param.required,
            "description": param.description,
            "schema": param.schema,
        }
        for param in operation.query
    ]
    if access is Access.SHOP and method == "POST":
        parameters.append(IDEMPOTENCY_KEY)
    answers = {
        str(status): answer_object(answer, ids) for status, answer in operation.answers.items()
    }
    for status in sorted(error_statuses(method, access, operation, bool(path_parameters))):
        answers[str(status)] = error_object(status, answers.get(str(status)))
    described: dict[str, Any] = {
        "operationId": operation_id(method, path),
        "summary": operation.summary,
        "tags": [path.strip("/").split("/")[0] or "root"],
        "security": SECURITY[access],
        "responses": dict(sorted(answers.items())),
    }
    if operation.description:
        described["description"] = operation.description
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None or operation.other_bodies:
        content = {JSON: {"schema": operation.body}} if operation.body is not None else {}
        content.update(
            {media: {"schema": schema} for media, schema in operation.other_bodies.items()}
        )
        described["requestBody"] = {"required": operation.body_required, "content": content}
    return described


def documented(app: falcon.App) -> Iterator[tuple[str, str, list[dict], Access, Operation]]:
    """(method, path, path parameters, access, operation) of every documented responder."""
    for template, resource in sorted(routed(app), key=lambda route: route[0]):
        path, path_parameters = openapi_path(template)
        declared = getattr(resource, "docs", None) or {}
        for method in responders(resource):
            if method in declared:
                yield method, path, path_parameters, access_for(resource, method), declared[method]


def referenced(value: Any, components: dict[str, Any], root: bool = False) -> Any:
    """`value` with each named schema in it replaced by its `$ref`, collected in
    `components` (a copy: the schemas that validate requests are never changed)."""
    if isinstance(value, dict):
        name = COMPONENTS.get(id(value))
        if name is not None and not root:
            if name not in components:
                components[name] = {}  # taken, while its own references are resolved
                components[name] = referenced(value, components, root=True)
            return {"$ref": f"#/components/schemas/{name}"}
        return {key: referenced(item, components) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [referenced(item, components) for item in value]
    return value


def document(app: falcon.App) -> dict[str, Any]:
    operations = list(documented(app))
    ids = {operation_id(method, path) for method, path, *_ in operations}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, path_parameters, access, operation in operations:
        paths.setdefault(path, {})[method.lower()] = operation_object(
            method, path, path_parameters, access, operation, ids
        )
    components: dict[str, Any] = {}
    paths = referenced(paths, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Astronote",
            "version": _version(),
            "description": (
                "SMS campaigns for online shops. Errors are `{title, description, field?}`; lists"
                " are keyset-paginated (`limit` at most 100, `after` = the previous page's"
                " `next`)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _version() -> str:
    try:
        return metadata.version("astronote")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


class OpenApiResource:
    """Built on the first request, once every route has been added, then served as is."""

    auth = Access.PUBLIC
    docs = {
        "GET": Operation(
            "This document",
            {200: Answer("The OpenAPI 3.1 document", {"type": "object"})},
            needs_dependencies=False,
        )
    }

    def __init__(self, app: falcon.App) -> None:
        self.app = app
        self._document: dict[str, Any] | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._document is None:
            self._document = document(self.app)
        resp.media = self._document
