"""JSON log lines never show a configured secret, whoever wrote it (SPEC 8)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from service import api_keys, links
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


def test_an_unsubscribe_token_is_redacted_in_any_line():
    # (gunicorn's error log prints a request line it cannot parse as it came)
    token = links.unsubscribe_token("k" * 32, 7, 42)
    entry = formatted(f"Invalid HTTP request line: 'GET /u/{token}\\x01 HTTP/1.1'")
    assert token not in json.dumps(entry)
    assert entry["msg"] == "Invalid HTTP request line: 'GET /u/[redacted]\\x01 HTTP/1.1'"
    assert logs.redact("GET /unsubscribe-help 200") == "GET /unsubscribe-help 200"
    for spelling in ("/u%2F", "/%75/", "/u/./", "/u\\", "/x?next=%2Fu%2F", "//U//"):
        assert token not in logs.redact(f"Invalid request line: 'GET {spelling}{token}\\x01'")


def line_for(error: BaseException) -> dict:
    record = logging.LogRecord("dramatiq.worker", logging.CRITICAL, __file__, 1, "lost", (), None)
    try:
        raise error
    except BaseException:  # noqa: BLE001
        record.exc_info = sys.exc_info()
    return json.loads(logs.JsonFormatter("worker").format(record))


@pytest.mark.parametrize(
    "error",
    [
        __import__("redis").ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        __import__("pika").exceptions.StreamLostError("Stream connection lost"),
        ConnectionResetError(104, "Connection reset by peer"),
        __import__("peewee").OperationalError("server closed the connection unexpectedly"),
    ],
    ids=repr,
)
def test_a_lost_connection_is_one_line_whoever_logs_it(error):
    # (a RabbitMQ connection closed: pika and Dramatiq logged a traceback per thread)
    entry = line_for(error)
    assert "exc" not in entry and entry["error"].startswith(type(error).__name__), entry


def test_anything_else_keeps_its_traceback_and_pika_speaks_only_when_critical():
    entry = line_for(KeyError("campaign_id"))
    assert "Traceback" in entry["exc"] and "KeyError" in entry["exc"]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("worker")
        assert logging.getLogger("pika").getEffectiveLevel() == logging.CRITICAL
    finally:
        root.handlers[:], root.level = handlers, level
        logging.getLogger("pika").setLevel(logging.NOTSET)
