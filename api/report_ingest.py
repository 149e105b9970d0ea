"""The delivery-report webhook's own path: `POST /webhooks/mitto/dlr` answered in front of Falcon.

The provider posts a report per message, at the send rate. Through Falcon, its middleware and
jsonschema, one report cost the web process about 0.64 ms of CPU (`bench/RESULTS.md`), five
times what PostgreSQL spends storing it, which capped the webhook below the send rate. Here the
route costs what a plain WSGI function costs: the token compared in constant time, the body's
size, JSON and fields checked by hand (`parse_reports`, equal in effect to
`schemas.DELIVERY_REPORTS`, which stays the documented body), the reports handed to the
process's `ReportWriter`. Every other request, and any spelling of this path but the canonical
one, goes to Falcon as before; Falcon's `DeliveryReportResource` answers through the same
`ReportIngest`, so the two cannot differ.

Answers follow `api/errors.py`: `{"title", "description", "field"?}` with the same statuses
(401/404 for the token, 413, 400 for malformed JSON, 422 naming the field, 503 when PostgreSQL
is down). Load is shed explicitly, with 503 and `Retry-After` at once, before the body is
parsed: beyond REPORT_INGEST_MAX_PENDING reports waiting for or in their INSERT in the
process, and for a request that waited for a thread longer than REPORT_INGEST_MAX_WAIT_MS
(its sender has likely given up and will post it again). So a burst turns into the provider's
retries instead of a queue of requests nobody waits for any more. A report answered 503 was
not stored.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import redis

from api import paths, schemas
from api.body import MAX_BODY, UnreadableBody, parse_json, read_stream
from api.errors import UNAVAILABLE, dependency_name
from api.workers import close_connection, queued_for
from service import provider, report_inbox
from service.delivery import DELIVERY_STATUSES
from service.errors import InvalidInput
from service.infra import metrics
from service.infra.config import Settings
from service.report_writer import OwnConnection, ReportWriter

log = logging.getLogger("astronote.api.reports")

ROUTE = paths.DELIVERY_REPORTS
MAX_REPORTS = 10_000  # per request, as `schemas.DELIVERY_REPORTS` says
MAX_INVALID_LISTED = 100  # refused reports of an array named in the answer
SHED_RETRY_AFTER_S = 1
_INT32 = 2**31


# An answer: status line, JSON body, extra headers.
Answer = tuple[str, dict[str, Any], tuple[tuple[str, str], ...]]


class Refused(Exception):
    """An answer other than 200: status line, body, extra headers."""

    def __init__(
        self,
        status: str,
        title: str,
        description: str,
        field: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(description)
        self.status = status
        self.body: dict[str, str] = {"title": title, "description": description}
        if field is not None:
            self.body["field"] = field
        self.headers = headers


def _invalid(field: str, description: str) -> InvalidInput:
    return InvalidInput(f"{field}: {description}", field)


def malformed(description: str) -> Refused:
    return Refused("400 Bad Request", "Malformed JSON", description)


# --- the body ----------------------------------------------------------------------------------
#
# A provider does not post a report again after a 4xx: what this route refuses is lost, and
# with it the evidence that settles a message of unknown outcome (SPEC 4). So only what cannot
# be stored or matched refuses a report: an id (a string, or an integer as some providers
# write it), a status among SPEC 7's in any case. The informational fields are read where they
# can be (`statusCode` as an integer or its digits; `timestamp` in RFC 3339, or ISO 8601
# without an offset, read as UTC) and otherwise kept empty (the applier then uses the time it
# applies the report). In an array each report stands alone: the valid ones are stored and the
# others listed in the answer's `invalid`, by index; a body with no valid report is a 422.

_STATUS_BY_NAME = {status.lower(): status for status in DELIVERY_STATUSES}


def _text(value: Any, field: str, maximum: int, nullable: bool, minimum: int = 0) -> str | None:
    """A string of `minimum` to `maximum` characters, or a whole number from 0 of at most
    `maximum` digits as its decimal text (`provider.whole_number_text`)."""
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        value = provider.whole_number_text(value, maximum) or value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise _invalid(field, f"an integer must be whole, from 0, of at most {maximum} digits")
    if not isinstance(value, str):
        kind = "a string, an integer or null" if nullable else "a string or an integer"
        raise _invalid(field, f"must be {kind}")
    if not minimum <= len(value) <= maximum:
        raise _invalid(field, f"must be {minimum} to {maximum} characters long")
    return value


def _optional_text(value: Any, maximum: int) -> str | None:
    """A field that helps match a report when its id does not (the number, the reference):
    as `_text` reads it, else None (also when PostgreSQL could not store it). The report stays
    evidence by its id."""
    try:
        text = _text(value, "", maximum, True)
    except InvalidInput:
        return None
    return None if text is None or schemas._UNSTORABLE.search(text) else text


def _message_id(value: Any, field: str) -> str:
    # An integer as its decimal text, as the send's answer is read (`provider.message_id`).
    text = _text(value, field, 100, False, 1)
    assert text is not None
    if schemas._UNSTORABLE.search(text):
        raise _unstorable(field)
    return text


def _delivery_status(value: Any, field: str) -> str:
    # (a NUL, which cannot be stored, is dropped as an inbound message's is)
    status = (
        _STATUS_BY_NAME.get(value.replace("\x00", "").strip().lower())
        if isinstance(value, str)
        else None
    )
    if status is None:
        raise _invalid(field, f"must be one of {', '.join(DELIVERY_STATUSES)} (in any case)")
    return status


def _status_code(value: Any) -> int | None:
    """The provider's code, informational: an integer (1.0 is one) or its digits, else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    code = provider.response_code(value)
    return code if code is not None and -_INT32 <= code < _INT32 else None


def _report(item: Any, prefix: str) -> dict[str, Any]:
    """One report as `schemas.DELIVERY_REPORT` describes it: the six stored fields, or
    `InvalidInput` naming the first field that refuses it."""
    if not isinstance(item, dict):
        raise _invalid(prefix.rstrip(".") or "body", "a report must be an object")
    get = item.get
    # A missing field is named before a wrong one, as the schema's validation names them.
    for name in ("id", "deliveryStatus"):
        if name not in item:
            raise InvalidInput(f"'{prefix}{name}' is required", f"{prefix}{name}")
    report = {
        "id": _message_id(get("id"), f"{prefix}id"),
        "to": _optional_text(get("to"), 40),
        "reference": _optional_text(get("reference"), 200),
        "deliveryStatus": _delivery_status(get("deliveryStatus"), f"{prefix}deliveryStatus"),
        "statusCode": _status_code(get("statusCode")),
        "timestamp": schemas.provider_time(get("timestamp")),
    }
    # Providers add fields; they are not stored, so whatever text they hold refuses nothing (a
    # probe saw a NUL in one lose a report to a 422, which a provider does not post again).
    return report


def _unstorable(field: str) -> InvalidInput:
    return InvalidInput(
        f"{field!r} holds a NUL or an unpaired surrogate, which cannot be stored", field
    )


@dataclass
class Parsed:
    """A body's reports: the valid ones (the six stored fields, `timestamp` parsed) and, for
    an array, each refused one by index with the field and the reason."""

    reports: list[dict[str, Any]]
    invalid: list[dict[str, Any]] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        # The first MAX_INVALID_LISTED only: a body of 10,000 refused items would otherwise
        # be answered with megabytes echoing its own field names.
        return {
            "received": len(self.reports),
            "invalid": self.invalid[:MAX_INVALID_LISTED],
            "invalid_count": len(self.invalid),
        }


def parse_reports(raw: bytes) -> Parsed:
    """The reports of a body: one report object or an array of 1 to 10,000. Raises `Refused`
    (400, malformed JSON) or `InvalidInput` naming the field (422) when the body's shape is
    wrong or none of its reports is valid."""
    if not raw.strip():
        raise malformed("the body is empty")
    try:
        document = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise malformed(str(error)) from None
    except RecursionError:  # "[[[[..." a few KiB deep exhausts the parser's stack
        raise malformed("the document is nested too deeply") from None
    if isinstance(document, dict):
        return Parsed([_report(document, "")])
    if not isinstance(document, list):
        raise _invalid("body", "must be a report object or an array of reports")
    if not document:
        raise _invalid("body", "an array of reports must hold at least one")
    if len(document) > MAX_REPORTS:
        raise InvalidInput(
            f"body: at most {MAX_REPORTS} items (it has {len(document)})", "body"
        )  # as `schemas._too_many` says it
    parsed = Parsed([])
    first_error: InvalidInput | None = None
    for index, item in enumerate(document):
        try:
            parsed.reports.append(_report(item, f"{index}."))
        except InvalidInput as error:
            first_error = first_error or error
            parsed.invalid.append(
                {
                    "index": index,
                    "field": error.field[:100] if error.field else error.field,
                    "reason": error.description[:300],
                }
            )
    if not parsed.reports:
        assert first_error is not None
        raise first_error
    return parsed


# --- storing -----------------------------------------------------------------------------------


class ReportIngest:
    """One web process's intake: the admission bound, the shared writer, the applier's signal.
    Thread-safe."""

    def __init__(self, settings: Settings, signals: redis.Redis) -> None:
        self.max_pending = settings.report_ingest_max_pending
        self.max_wait_s = settings.report_ingest_max_wait_ms / 1000
        self.writer = ReportWriter(OwnConnection(settings.database_url).write)
        self.applier = report_inbox.ApplierSignal(signals, settings)
        self._lock = threading.Lock()
        self._pending = 0  # reports admitted and not yet answered

    def full(self, now: float | None = None) -> bool:
        """Whether a request must be shed before its body is read: the process holds its
        bound (a racy read is fine), or the request waited for a thread so long that its
        sender has likely given up (`api/workers.py`)."""
        if self._pending >= self.max_pending:
            return True
        return bool(self.max_wait_s) and queued_for(now or time.monotonic()) > self.max_wait_s

    def store(self, reports: list[dict[str, Any]]) -> None:
        """Commit `reports` (a report answered 200 is on disk), then signal the applier; or
        raise `Refused` (503) at once when the process already holds its bound. A request
        alone may exceed the bound (an array of up to 10,000 always gets in eventually)."""
        count = len(reports)
        with self._lock:
            if self._pending and self._pending + count > self.max_pending:
                raise shed()
            self._pending += count
        try:
            self.writer.store(reports)
        finally:
            with self._lock:
                self._pending -= count
        # Applying is the applier's, signalled after the commit (at most one Redis round trip,
        # and a publish once per REPORT_APPLY_DELAY_MS across every web process).
        self.applier.after_commit()


def shed() -> Refused:
    return Refused(
        "503 Service Unavailable",
        "Service unavailable",
        "the delivery-report webhook is shedding load (too many reports waiting to be stored,"
        f" or this request waited too long for a thread); retry after {SHED_RETRY_AFTER_S} s",
        headers=(("Retry-After", str(SHED_RETRY_AFTER_S)),),
    )


def refusal(error: Exception) -> Answer:
    """The answer to a request that raised `error` (`api/errors.py`'s shapes and statuses),
    for both fronts: this module's and `api/report_server.py`'s."""
    if isinstance(error, Refused):
        return error.status, error.body, error.headers
    if isinstance(error, InvalidInput):
        return (
            "422 Unprocessable Entity",
            {"title": error.title, "description": error.description, "field": error.field},
            (),
        )
    if isinstance(error, UNAVAILABLE):
        # The answer names the dependency only: the error may hold a host name or a DSN.
        name = dependency_name(error)
        log.warning(
            "dependency unavailable",
            extra={"path": ROUTE, "dependency": name, "error": str(error)[:200]},
        )
        return (
            "503 Service Unavailable",
            {
                "title": "Service unavailable",
                "description": f"{name} is unavailable, try again shortly",
            },
            (("Retry-After", "5"),),
        )
    log.error("unexpected error", extra={"path": ROUTE, "method": "POST"}, exc_info=error)
    return (
        "500 Internal Server Error",
        {"title": "Internal error", "description": "the error was logged"},
        (),
    )


def check_token(secret: bytes | None, header: str | None, query: str) -> None:
    """`Refused` (404, 401) unless the request carries the webhook's token, in the
    `X-Webhook-Token` header or as the query's (last) `token`."""
    if secret is None:
        raise Refused(
            "404 Not Found",
            "Not found",
            "the provider's webhooks are disabled (DLR_WEBHOOK_SECRET unset)",
        )
    token = header or _query_token(query)
    # Bytes: compare_digest refuses str with non-ASCII characters. WSGI headers are
    # latin-1 strings; encoded as UTF-8 like `same_secret` does.
    if not token or not hmac.compare_digest(token.encode(), secret):
        raise Refused(
            "401 Unauthorized",
            "Unauthorized",
            "a valid webhook token is required",
            headers=(("WWW-Authenticate", "Bearer"),),
        )


# --- the WSGI front ----------------------------------------------------------------------------

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# What `SecurityHeaders` adds to every answer of a route that is not public.
_HEADERS = (
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
)


class ReportRoute:
    """The WSGI application gunicorn serves: this route's POST in canonical spelling is
    answered here, everything else by `app` (Falcon). It touches no pooled database connection:
    the process's `ReportWriter` writes on one of its own (`OwnConnection`)."""

    def __init__(self, app: WsgiApp, ingest: ReportIngest, settings: Settings) -> None:
        self.app = app
        self.ingest = ingest
        self.secret = settings.dlr_webhook_secret.encode() if settings.dlr_webhook_secret else None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != ROUTE or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        raw_uri = environ.get("RAW_URI")
        if raw_uri is not None and raw_uri.partition("?")[0] != ROUTE:
            return self.app(environ, start_response)  # another spelling: Falcon refuses it
        began = time.monotonic()
        try:
            status, body, headers = self._answer(environ, began)
        except Exception as error:  # noqa: BLE001 - every failure has its answer
            status, body, headers = refusal(error)
        data = json.dumps(body).encode()
        start_response(status, [*_HEADERS, ("Content-Length", str(len(data))), *headers])
        metrics.observe_http("POST", ROUTE, f"{status[0]}xx", time.monotonic() - began)
        return [data]

    def _answer(self, environ: dict[str, Any], began: float) -> Answer:
        self._authenticate(environ)
        length = _content_length(environ)
        if self.ingest.full(began):
            raise shed()  # before the body is read or parsed: the cheapest answer there is
        try:
            raw = read_stream(environ["wsgi.input"], length)
        except UnreadableBody as error:
            close_connection()  # what follows on the connection cannot be told from the body
            raise Refused(
                "400 Bad Request",
                "Incomplete body",
                str(error),
                headers=(("Connection", "close"),),
            ) from None
        if len(raw) > MAX_BODY:
            raise too_large()
        parsed = parse_reports(raw)
        self.ingest.store(parsed.reports)
        return "200 OK", parsed.answer(), ()

    def _authenticate(self, environ: dict[str, Any]) -> None:
        check_token(
            self.secret, environ.get("HTTP_X_WEBHOOK_TOKEN"), environ.get("QUERY_STRING", "")
        )


def _query_token(query: str) -> str | None:
    """The last `token` parameter, decoded as Falcon's `get_param` does."""
    if "token" not in query:
        return None
    token = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            token = value
    return token


def too_large() -> Refused:
    # As `api.body.too_large`: the rest is unread, the connection closes after the answer.
    close_connection()
    return Refused(
        "413 Content Too Large",
        "Body too large",
        f"bodies are limited to {MAX_BODY} bytes",
        headers=(("Connection", "close"),),
    )


def _content_length(environ: dict[str, Any]) -> int | None:
    return declared_length(environ.get("CONTENT_LENGTH"))


def declared_length(declared: str | bytes | None) -> int | None:
    """A request's Content-Length (None without one), or `Refused`: 400 when it is not a
    number, 413 over MAX_BODY (for both fronts)."""
    if not declared:
        return None
    try:
        length = int(declared)
    except ValueError:
        raise Refused(
            "400 Bad Request", "Invalid header value", "Content-Length is not a number"
        ) from None
    if length > MAX_BODY:
        raise too_large()
    return max(length, 0)
