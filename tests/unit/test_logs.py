"""JSON log lines never show a configured secret, whoever wrote it (SPEC 8)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from service import api_keys
from service.infra import logs
from tests.conftest import ADMIN_TOKEN, SECRET_KEY


@pytest.fixture
def hidden():
    logs.hide_secrets(SECRET_KEY, ADMIN_TOKEN, "short")
    yield
    logs.hide_secrets()


def formatted(message: str, **extra) -> dict:
    record = logging.LogRecord("lib", logging.ERROR, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    try:
        raise ValueError(f"cannot open http://web/ops?token={ADMIN_TOKEN}")
    except ValueError:
        record.exc_info = sys.exc_info()
    return json.loads(logs.JsonFormatter("web").format(record))


def test_a_configured_secret_is_redacted_in_the_message_the_fields_and_the_traceback(hidden):
    # When a library logs the secrets, in its message, a field and an exception
    entry = formatted(f"posting to /dlr?token={ADMIN_TOKEN}", url=f"key {SECRET_KEY}")
    # Then the line is still JSON, the secrets are redacted, and the rest is kept
    line = json.dumps(entry)
    assert ADMIN_TOKEN not in line and SECRET_KEY not in line, line
    assert entry["msg"] == "posting to /dlr?token=[redacted]"
    assert entry["url"] == "key [redacted]"
    assert "cannot open http://web/ops?token=[redacted]" in entry["exc"]


def test_a_secret_json_escapes_is_redacted_too(hidden):
    secret = 'quote"and\\backslash-0123456789'
    logs.hide_secrets(secret)
    assert secret not in formatted(f"value {secret}")["msg"]


def test_a_short_value_is_not_hidden(hidden):
    # (it would garble ordinary words; the configuration requires long secrets)
    assert formatted("a short story")["msg"] == "a short story"


def test_an_api_key_is_redacted_in_any_line_and_the_shape_matches_every_key():
    keys = [api_keys.new_key() for _ in range(200)]
    assert all(logs.API_KEY_SHAPE.fullmatch(key) for key in keys)
    entry = formatted(f"GET /{keys[0]} 404", agent=f"bot {keys[1]}")
    line = json.dumps(entry)
    assert keys[0] not in line and keys[1] not in line, line
    assert entry["msg"] == "GET /ak_[redacted] 404"
    assert logs.redact("peak_connections_in_flight_total") == "peak_connections_in_flight_total"
