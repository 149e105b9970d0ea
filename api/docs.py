"""How a resource describes its operations for the OpenAPI document (`api/openapi.py`).

A resource declares, next to its `auth`, a `docs` mapping from HTTP method to `Operation`: what
it reads (the request body's schema, the one that validates it; its query parameters) and what
it answers on success (`Answer`). What follows from elsewhere is not repeated there: path
parameters come from the route template, security from `auth`, and the error answers from the
access (401, 404, 429, ...), the body (400, 413, 422) and the parameters (404, 422); an
operation lists only the errors of its own (`errors`: 402 for an enqueue, 409 for a
transition). A responder without an `Operation` is left out of the document, and
`tests/api/test_openapi.py` names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from api.schemas import PAGE_AFTER, PAGE_LIMIT

JSON = "application/json"
HTML = "text/html"


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter, read with `api/body.py`'s helpers."""

    name: str
    schema: Mapping[str, Any]
    description: str
    location: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """One answer of an operation: its body (`schema`, in `media_type`), headers and links."""

    description: str
    schema: Mapping[str, Any] | None = None
    media_type: str = JSON
    # Header name -> (schema, required).
    headers: Mapping[str, tuple[Mapping[str, Any], bool]] = field(default_factory=dict)
    # OpenAPI links: name -> Link; schemathesis' stateful tests follow them.
    links: Mapping[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    """A value of this answer that another operation takes: `parameters` maps that
    operation's parameter to a runtime expression (`$response.body#/id`)."""

    method: str
    path: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Operation:
    """What one responder reads and answers; the rest of its description is derived."""

    summary: str
    answers: Mapping[int, Answer]
    # The JSON Schema that validates the JSON body (`api/schemas.py`): one source, never a copy.
    body: Mapping[str, Any] | None = None
    # Other media types the body may come in, with their schema (a CSV import).
    other_bodies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    body_required: bool = True
    query: tuple[Param, ...] = ()
    # Error statuses of this operation's own (its service's domain errors).
    errors: tuple[int, ...] = ()
    # False for the few answers that need neither PostgreSQL nor Redis (no 503).
    needs_dependencies: bool = True
    description: str | None = None


LIMIT = Param("limit", PAGE_LIMIT, "page size (keyset pagination)")
AFTER = Param("after", PAGE_AFTER, "the `next` of the previous page: items after this id")


def operation_id(method: str, path: str) -> str:
    """`POST /campaigns/{campaign_id}/enqueue` -> `post_campaigns_campaign_id_enqueue`."""
    return "_".join([method.lower(), *re.findall(r"\w+", path)])


def id_links(parameter: str, expression: str, *targets: tuple[str, str]) -> dict[str, Link]:
    """Links from an answer holding an id (`expression`, such as `$response.body#/id`) to each
    (method, path) that takes it as `parameter`."""
    return {
        operation_id(method, path): Link(method, path, {parameter: expression})
        for method, path in targets
    }
