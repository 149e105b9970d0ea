"""Reading request bodies: size cap (413), JSON (400), schema (422); and query parameters,
whose errors are an `InvalidInput` naming the parameter in `field`, like a body field's."""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any, overload

import falcon
from gunicorn.http.errors import NoMoreData, ParseException

from api import schemas
from api.access import Access
from api.workers import close_connection, receiving_until
from service.errors import InvalidInput

MAX_BODY = 5 * 1024 * 1024
# How long a refused request's body is read at most (`discard_body`): a client on a slow link
# may lose its 429 past that, rather than hold a thread.
DISCARD_WITHIN_S = 1.0
# A body must arrive within this, and at this rate beyond it (5 MiB: 90 s), or it is 400
# Incomplete body and its connection closed (`read_stream`).
BODY_GRACE_S = 10.0
BODY_MIN_RATE = 64 * 1024


def media_type(req: falcon.Request) -> str:
    """The body's media type without parameters, lower-case (`text/csv; charset=utf-8` ->
    `text/csv`); empty when none is given."""
    return (req.content_type or "").split(";", 1)[0].strip().lower()


def _body_stream(req: falcon.Request) -> Any:
    """Where the body is read from. Falcon's `bounded_stream` reads nothing when there is no
    Content-Length, so a chunked body (`Transfer-Encoding: chunked`, what a client streaming
    its upload sends) was read as empty: "the body is empty", or a 6 MiB one not refused
    413. gunicorn's own input decodes the chunks and ends at the last one; for a request with
    neither header it is empty."""
    return req.bounded_stream if req.content_length is not None else req.stream


def too_large() -> falcon.HTTPContentTooLarge:
    # The rest of the body is left unread: the connection closes after the answer, and the
    # answer says so (gunicorn kept it alive and read the body's rest as the next request: a
    # client reusing it waited for an answer that never came).
    close_connection()
    return falcon.HTTPContentTooLarge(
        title="Body too large",
        description=f"bodies are limited to {MAX_BODY} bytes",
        headers={"Connection": "close"},
    )


class UnreadableBody(Exception):
    """The body did not arrive whole, so nothing of it may be used: fewer bytes than its
    Content-Length before the client closed (a partial CSV was imported as if complete),
    a chunked body ending without its last chunk, or chunks that are not chunks."""


def read_stream(stream: Any, length: int | None, timed: bool = False) -> bytes:
    """A request's whole body from the WSGI input: `length` bytes (its Content-Length), or
    a chunked one up to MAX_BODY + 1 bytes. UnreadableBody if it did not arrive whole, or,
    `timed`, in time: within BODY_GRACE_S and at BODY_MIN_RATE beyond it (a chunked body,
    whose length is known only at its end, at that rate for what has arrived: a 25-byte one
    that stalled was given the 90 s of 5 MiB). A thread reads the body as it comes, and a
    client stalling in its body held the thread for good; its shop's place in flight expired
    after 2 minutes (`forget_after_ms`) and it stalled another, and another (a probe: 8 of 32
    threads in 130 s, one key)."""
    wanted = length if length is not None else MAX_BODY + 1
    started = time.monotonic()

    def deadline_of(received: int) -> float:
        # `received` counts a chunked body's framing too (chunk sizes, extensions, trailers):
        # capped, so that framing sent fast cannot stretch the read past a largest body's.
        arrived = min(received, MAX_BODY + 1) if length is None else length
        return started + BODY_GRACE_S + arrived / BODY_MIN_RATE

    parts, left = [], wanted
    try:
        with receiving_until(deadline_of) if timed else contextlib.nullcontext():
            while left > 0:
                chunk = stream.read(min(left, 256 * 1024))
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
    except NoMoreData:
        raise UnreadableBody("the chunked body ended before its last chunk") from None
    except ParseException as error:
        raise UnreadableBody(f"the chunked body is malformed: {error}") from None
    except TimeoutError:
        raise UnreadableBody(
            f"the body did not arrive in time (within {BODY_GRACE_S:.0f} s, and"
            f" {BODY_MIN_RATE // 1024} KiB a second beyond)"
        ) from None
    except OSError as error:  # the client reset the connection
        raise UnreadableBody(f"the body could not be read: {type(error).__name__}") from None
    raw = b"".join(parts)
    if length is not None and len(raw) < length:
        raise UnreadableBody(
            f"the body ended after {len(raw)} of the {length} bytes its Content-Length declares"
        )
    return raw


def read_bytes(req: falcon.Request) -> bytes:
    """The raw body, or 413 when it is over MAX_BODY (declared or actual), 400 when it did
    not arrive whole. Read once per request and kept: the idempotency middleware
    fingerprints it before the resource reads it."""
    cached = getattr(req.context, "raw_body", None)
    if cached is not None:
        return cached
    if req.content_length is not None and req.content_length > MAX_BODY:
        raise too_large()
    try:
        raw = read_stream(_body_stream(req), req.content_length, timed=True)
    except UnreadableBody as error:
        close_connection()
        raise falcon.HTTPBadRequest(
            title="Incomplete body",
            description=str(error),
            # What follows on the connection cannot be told from the body: close it.
            headers={"Connection": "close"},
        ) from None
    if len(raw) > MAX_BODY:
        raise too_large()
    req.context.raw_body = raw
    return raw


def discard_body(req: falcon.Request) -> None:
    """Read and drop the body (up to MAX_BODY) of a request refused before reading it: gunicorn
    closes a connection with more than 64 KiB unread, and a client still sending then gets a
    reset, not the answer (a refused 1 MB import saw no 429). Reading costs a copy, not the
    parsing that refusing spares."""
    if getattr(req.context, "raw_body", None) is not None:
        return
    left, deadline = MAX_BODY, time.monotonic() + DISCARD_WITHIN_S
    try:
        # A client stalling in its body, or sending it a byte now and then, held this thread
        # for good: no receive waits past the deadline.
        with receiving_until(lambda _received: deadline):
            while left > 0:
                chunk = _body_stream(req).read(min(left, 256 * 1024))
                if not chunk:
                    return
                left -= len(chunk)
    except (ParseException, OSError):  # NoMoreData and TimeoutError are OSErrors
        close_connection()


def _not_json(constant: str) -> Any:
    """Python's parser takes NaN and Infinity, which JSON has not (RFC 8259)."""
    raise ValueError(f"{constant} is not JSON")


def _finite(number: str) -> float:
    """A number too large for a double (`1e999`) was read as infinity."""
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"the number {number} is out of range")
    return value


# Python's own bound on reading an integer (sys.get_int_max_str_digits()), whose error gives
# Python's advice ("use sys.set_int_max_str_digits()"); said in words here. Shorter integers
# are read as before (a provider's report may carry a long numeric id).
MAX_INTEGER_DIGITS = 4300


def _integer(number: str) -> int:
    if len(number) > MAX_INTEGER_DIGITS:
        raise ValueError(f"a number of {len(number)} digits is out of range")
    return int(number)


def _integer_or_inf(number: str) -> int | float:
    return int(number) if len(number) <= MAX_INTEGER_DIGITS else math.inf


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object naming a key twice is ambiguous (the parser kept the last): refused."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"the key {key!r} appears twice in one object")
        document[key] = value
    return document


def parse_json(raw: bytes, unique_keys: bool = False) -> Any:
    """A body as JSON (RFC 8259: no NaN, no infinity); ValueError or RecursionError if not.
    `unique_keys`: an object naming a key twice is an error, and an integer over
    MAX_INTEGER_DIGITS is refused in words (the API's bodies; a provider's report is read as
    sent, the last value kept)."""
    if not unique_keys:  # the report webhook's path, at the send rate: no hook per value
        try:
            return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
        except ValueError:
            # Perhaps an integer over Python's 4,300 digits (else the same error again): read
            # as infinity, which no stored field takes, so only a report whose id it is is
            # refused. A probe saw one in an extra field refuse every report of an array, with
            # Python's advice as the reason.
            return json.loads(
                raw, parse_constant=_not_json, parse_float=_finite, parse_int=_integer_or_inf
            )
    return json.loads(
        raw,
        parse_constant=_not_json,
        parse_float=_finite,
        parse_int=_integer,
        object_pairs_hook=_unique_keys,
    )


# Labels a JSON body arrives with: none, its own, and the two that clients put on any body
# (`curl -d` sends `application/x-www-form-urlencoded` unless told otherwise).
READ_AS_JSON = frozenset(
    {"", "application/json", "text/plain", "application/x-www-form-urlencoded"}
)


def check_json_media(req: falcon.Request) -> None:
    """415 for a body that says it is not JSON (`application/xml`, a multipart form) or is
    compressed (`Content-Encoding: gzip`): it was read as JSON and refused as malformed,
    naming a decoder's error instead of the header. No Content-Type is taken as JSON. Only
    the JSON API (shop and admin routes): webhooks take what their sender sends, and a STOP
    refused for its label would be lost."""
    if getattr(req.context, "access", None) not in (Access.SHOP, Access.ADMIN):
        return
    encoding = (req.get_header("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity"):
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported Content-Encoding",
            description=f"Content-Encoding {encoding!r} is not taken: send the body uncompressed",
        )
    kind = media_type(req)
    if kind not in READ_AS_JSON and not kind.endswith("+json"):
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported Content-Type",
            description=f"the body must be application/json, not {kind!r}",
        )


def read_json(
    req: falcon.Request, schema: dict[str, Any], rows: str | None = None, provider: bool = False
) -> Any:
    """The body as JSON matching `schema` (400, 413, 415, 422); `rows` as in
    `schemas.validate`; `provider`: a provider's body, whose text PostgreSQL cannot store is
    cleaned rather than refused (`schemas.storable_text`)."""
    check_json_media(req)
    return json_document(read_bytes(req), schema, rows, provider)


def json_document(
    raw: bytes, schema: dict[str, Any], rows: str | None = None, provider: bool = False
) -> Any:
    """A body read (`read_bytes`) as JSON matching `schema`, as `read_json` says."""
    if not raw.strip():
        raise falcon.HTTPBadRequest(title="Malformed JSON", description="the body is empty")
    try:
        document = parse_json(raw, unique_keys=True)
    except (ValueError, UnicodeDecodeError) as error:
        raise falcon.HTTPBadRequest(title="Malformed JSON", description=str(error)) from None
    except RecursionError:  # "[[[[..." a few KiB deep exhausts the parser's stack
        raise falcon.HTTPBadRequest(
            title="Malformed JSON", description="the document is nested too deeply"
        ) from None
    if provider:
        document = schemas.storable_text(document)
    return schemas.validate(document, schema, rows)


@overload
def int_param(
    req: falcon.Request, name: str, default: int, minimum: int = 1, maximum: int = 2**63 - 1
) -> int: ...


@overload
def int_param(
    req: falcon.Request, name: str, default: None = None, minimum: int = 1, maximum: int = 2**63 - 1
) -> int | None: ...


def int_param(
    req: falcon.Request,
    name: str,
    default: int | None = None,
    minimum: int = 1,
    maximum: int = 2**63 - 1,
) -> int | None:
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be an integer", name) from None
    if not minimum <= value <= maximum:
        raise InvalidInput(
            f"query parameter {name!r} must be between {minimum} and {maximum}", name
        )
    return value


def page_limit(req: falcon.Request) -> int:
    """`limit` of a list, bounded as the OpenAPI document says (`schemas.PAGE_LIMIT`)."""
    bounds = schemas.PAGE_LIMIT
    limit = int_param(req, "limit", bounds["default"], bounds["minimum"], bounds["maximum"])
    return bounds["default"] if limit is None else limit


def page_after(req: falcon.Request) -> int | None:
    """`after` of a list: the `next` of the previous page (`schemas.PAGE_AFTER`)."""
    bounds = schemas.PAGE_AFTER
    return int_param(req, "after", None, bounds["minimum"], bounds["maximum"])


def choice_param(req: falcon.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = req.get_param(name)
    if raw is not None and raw not in choices:
        raise InvalidInput(f"query parameter {name!r} must be one of {', '.join(choices)}", name)
    return raw


def bool_param(req: falcon.Request, name: str) -> bool | None:
    """`true`/`false` (or Falcon's other spellings); anything else is a 422 like every other
    invalid parameter, where Falcon's own check answers 400."""
    try:
        return req.get_param_as_bool(name)
    except falcon.HTTPInvalidParam:
        raise InvalidInput(f"query parameter {name!r} must be true or false", name) from None


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """Keyset pagination: `next` is the id to pass as `after`, null on the last page."""
    return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}
