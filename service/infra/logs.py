"""Structured logs: one JSON object per line, carrying the `extra` fields a call site passes
(`shop_id`, `campaign_id`, `batch_key`, ...)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

import peewee
import pika.exceptions
import psycopg2
import redis

from service.errors import DependencyUnavailable

# (`color_message`: uvicorn's copy of its message with terminal colour codes, in the `reports`
# process)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}
REDACTED = "[redacted]"
# Shorter values are not hidden: replacing them would garble ordinary words, and the secrets
# the configuration requires are longer (SECRET_KEY 32, ADMIN_TOKEN and DLR_WEBHOOK_SECRET 24).
MIN_HIDDEN_LENGTH = 16
_hidden: tuple[str, ...] = ()
# A shop's API key (`service/api_keys.py`: "ak_" and 43 URL-safe characters) wherever a client
# put it (a path, a Referer, a User-Agent, a query value the access log keeps): keys are not
# configured secrets, so `hide_secrets` does not know them. The unit tests hold the shape to
# the keys `new_key` makes.
# (Not inside a longer word: "peak_connections_in_flight" stays as it is.)
API_KEY_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])ak_[A-Za-z0-9_-]{20,}")
API_KEY_REDACTED = "ak_[redacted]"
# A contact's unsubscribe capability (`/u/` and 43 base64url characters) in any line, not only
# the access log's: gunicorn's error log prints a request line it cannot parse as it came
# ("Invalid HTTP request line: 'GET /u/<token>\\x01 HTTP/1.1'", a probe), token and all.
# Any spelling of the path too (`/u%2F`, `/%75/`, `/u/./`, `/u\\`, `%2Fu%2F` in a query).
UNSUBSCRIBE_TOKEN_SHAPE = re.compile(
    r"((?:/|%2f|\\)(?:u|%75)(?:/|%2f|\\|\.)+)[A-Za-z0-9_%=-]{20,}", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` without the configured secrets nor anything shaped like an API key."""
    for secret in _hidden:
        text = text.replace(secret, REDACTED)
    text = UNSUBSCRIBE_TOKEN_SHAPE.sub(rf"\g<1>{REDACTED}", text)
    return API_KEY_SHAPE.sub(API_KEY_REDACTED, text)


# A lost database or Redis: the dependency's outage, not a bug (the API answers 503, never 500;
# a log says it in one line, with no traceback per request or per repair while it lasts).
OUTAGES = (
    peewee.OperationalError,
    peewee.InterfaceError,
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
)
# What is logged as an outage, in one line, whoever logs it: the above, a broker that cannot be
# reached (ours, and what pika or a socket raise when a connection drops).
_CONNECTION_LOST = (
    *OUTAGES,
    DependencyUnavailable,
    ConnectionError,
    pika.exceptions.AMQPConnectionError,
)


def _statement_error(error: BaseException) -> bool:
    """PostgreSQL's error for a statement (a deadlock, a statement timeout, a constraint) that
    peewee raises as an OperationalError too: it names the cause in its detail (the processes
    and the relation of a deadlock), so it is logged in full. A lost connection has no code,
    or one of class 08 (connection) or 57P (the server shutting down, a session terminated)."""
    # peewee keeps psycopg2's error, which has the code, as `orig` (and the context)
    for candidate in (error, getattr(error, "orig", None), error.__cause__, error.__context__):
        code = getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code:
            return not code.startswith(("08", "57P"))
    return False


def is_outage(error: BaseException) -> bool:
    return isinstance(error, OUTAGES) and not _statement_error(error)


def error_text(error: BaseException) -> str:
    """An outage's exception as one short field (`Type: first line`), which the formatter
    writes instead of its traceback: a dependency that is down is not a bug, and a traceback
    per request would flood the log while it lasts."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def hide_secrets(*values: str) -> None:
    """Show none of `values` (the configured secrets) in any line this process logs, whoever
    logs them (a library's exception text included): each appears as [redacted]."""
    global _hidden
    forms = {
        form
        for value in values
        if len(value) >= MIN_HIDDEN_LENGTH
        for form in (value, json.dumps(value)[1:-1])
    }  # as is, and as JSON escapes it
    _hidden = tuple(sorted(forms, key=len, reverse=True))


class JsonFormatter(logging.Formatter):
    def __init__(self, process_role: str) -> None:
        super().__init__()
        self.role = process_role

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.role,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            error = record.exc_info[1]
            if isinstance(error, _CONNECTION_LOST) and not _statement_error(error):
                # A lost connection, whoever logs it (Dramatiq, a library): an outage in one
                # line, not a traceback per request while it lasts.
                entry.setdefault("error", error_text(error))
            else:
                entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure(process_role: str, level: str | None = None) -> None:
    """Send every logger's records to stderr as JSON lines (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process_role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO").upper())
    for noisy in ("urllib3", "peewee"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika (RabbitMQ) logs each connection step at info, and a dropped connection at error
    # with the caller's stack in the message text, on every thread that had one. Dramatiq
    # publishes again on a new connection, and what still fails reaches our own lines
    # (BrokerUnavailable: 503, the reconcile's repair, the clock's job).
    logging.getLogger("pika").setLevel(logging.CRITICAL)
