"""Structured logs: one JSON object per line, carrying the `extra` fields a call site passes
(`shop_id`, `campaign_id`, `batch_key`, ...)."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
REDACTED = "[redacted]"
# Shorter values are not hidden: replacing them would garble ordinary words, and the secrets
# the configuration requires are longer (SECRET_KEY 32, ADMIN_TOKEN and DLR_WEBHOOK_SECRET 24).
MIN_HIDDEN_LENGTH = 16
_hidden: tuple[str, ...] = ()


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
            entry["exc"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str)
        for secret in _hidden:
            line = line.replace(secret, REDACTED)
        return line


def configure(process_role: str, level: str | None = None) -> None:
    """Send every logger's records to stderr as JSON lines (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process_role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO").upper())
    for noisy in ("urllib3", "peewee"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
