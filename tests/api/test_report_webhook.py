"""The delivery-report webhook's own path (`api/report_ingest.py`), answered in front of Falcon:
the same statuses and error shapes as the rest of the API for every bad request (never a 500),
arrays, the canonical spelling only, and load shed with a 503 and Retry-After at once."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import falcon.testing
import psycopg2
import pytest

from api import workers
from api.app import create_wsgi
from api.body import MAX_BODY
from api.report_ingest import ROUTE, ReportRoute
from service import report_inbox
from tests.api.conftest import CheckedClient, assert_error
from tests.conftest import DLR_WEBHOOK_SECRET

WEBHOOK = {"X-Webhook-Token": DLR_WEBHOOK_SECRET}
REPORT = {"id": "msg-1", "deliveryStatus": "Delivered", "statusCode": 0}


def stored(db) -> list[tuple]:
    return db.execute_sql(
        "SELECT provider_id, status, status_code, reported_at FROM delivery_report ORDER BY id"
    ).fetchall()


def assert_unavailable(result) -> dict:
    """A 503 in the API's error shape (`assert_error` refuses every 5xx)."""
    assert result.status_code == 503, result.text
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert body["title"] == "Service unavailable" and body["description"], body
    return body


def test_a_report_and_an_array_are_stored_and_counted(client, db):
    # When one report, then an array of three, are posted
    one = client.simulate_post(ROUTE, headers=WEBHOOK, json=REPORT)
    many = client.simulate_post(
        ROUTE,
        headers=WEBHOOK,
        json=[
            {**REPORT, "id": f"msg-{i}", "timestamp": "2025-01-01T02:00:00+02:00"}
            for i in (2, 3, 4)
        ],
    )
    # Then each is answered with its count, as JSON without caching, and stored
    assert (one.status_code, one.json) == (200, {"received": 1, "invalid": [], "invalid_count": 0})
    assert (many.status_code, many.json) == (
        200,
        {"received": 3, "invalid": [], "invalid_count": 0},
    )
    assert one.headers["content-type"] == "application/json"
    assert one.headers["cache-control"] == "no-store"
    assert one.headers["x-content-type-options"] == "nosniff"
    rows = stored(db)
    assert [row[0] for row in rows] == ["msg-1", "msg-2", "msg-3", "msg-4"]
    assert rows[1][3].isoformat() == "2025-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "headers, query",
    [({}, None), ({"X-Webhook-Token": "wrong"}, None), ({}, "token=wrong"), ({}, "token=")],
    ids=["none", "wrong-header", "wrong-query", "empty"],
)
def test_a_bad_token_is_401_before_the_body_is_read(client, db, headers, query):
    result = client.simulate_post(ROUTE, headers=headers, query_string=query, body=b"{not json")
    assert_error(result, 401)
    assert result.headers["www-authenticate"] == "Bearer"
    assert stored(db) == []


def test_the_token_in_the_query_is_the_last_one_given(client, db):
    # (as Falcon's get_param reads it: a wrong first value does not hide the right last one)
    result = client.simulate_post(
        ROUTE, query_string=f"token=wrong&token={DLR_WEBHOOK_SECRET}", json=REPORT
    )
    assert result.status_code == 200, result.text


def test_without_a_secret_the_webhook_is_404(settings, redis_client, db):
    client = CheckedClient(
        create_wsgi(dataclasses.replace(settings, dlr_webhook_secret=None), redis_client)
    )
    assert_error(client.simulate_post(ROUTE, headers=WEBHOOK, json=REPORT), 404)


@pytest.mark.parametrize("body", [b"", b"{", b"[{]", b"\xff", b"[" * 50_000], ids=str)
def test_a_body_that_is_not_json_is_400(client, db, body):
    body_ = assert_error(client.simulate_post(ROUTE, headers=WEBHOOK, body=body), 400)
    assert body_["title"] == "Malformed JSON"
    assert stored(db) == []


@pytest.mark.parametrize(
    "document, field",
    [
        ({**REPORT, "deliveryStatus": "Bogus"}, "deliveryStatus"),
        ({**REPORT, "id": -7}, "id"),
        ({**REPORT, "id": ""}, "id"),
        ({**REPORT, "id": ["x"]}, "id"),
        ({"deliveryStatus": "Delivered"}, "id"),
        ([{**REPORT, "id": ["r"]}, "report"], "0.id"),
        ([], "body"),
        ("report", "body"),
        ({**REPORT, "id": "a\u0000b"}, "id"),
    ],
)
def test_a_wrong_field_is_422_naming_it_and_nothing_is_stored(client, db, document, field):
    result = client.simulate_post(ROUTE, headers=WEBHOOK, json=document)
    assert assert_error(result, 422)["field"] == field
    assert stored(db) == []


def test_an_arrays_valid_reports_are_stored_and_the_others_listed(client, db):
    # Given an array with a valid report between two that cannot be stored or matched
    document = [{**REPORT, "id": ["r"]}, REPORT, "report"]
    # When it is posted
    result = client.simulate_post(ROUTE, headers=WEBHOOK, json=document)
    # Then the valid one is stored and answered 200 (a provider posts nothing again after a
    # 4xx: refusing the array would lose it), the others listed by index with their field
    assert result.status_code == 200, result.text
    assert result.json["received"] == 1
    assert [(i["index"], i["field"]) for i in result.json["invalid"]] == [
        (0, "0.id"),
        (2, "2"),
    ]
    assert [row[0] for row in stored(db)] == ["msg-1"]


def test_another_providers_spellings_are_stored_as_spec_7_names_them(client, db):
    # Given reports as other providers write them: an integer id, an upper-case status, the
    # code in a string, a time without an offset, fields that cannot be read
    document = [
        {
            "id": 1001,
            "deliveryStatus": "DELIVERED",
            "statusCode": "0",
            "timestamp": "2026-12-03 14:17:51",
        },
        {"id": "m-2", "deliveryStatus": "sent", "statusCode": 2**31, "timestamp": "yesterday"},
    ]
    # When they are posted
    result = client.simulate_post(ROUTE, headers=WEBHOOK, json=document)
    # Then both are stored, the id as text, the status as SPEC 7 spells it; what cannot be
    # read is kept empty
    assert (result.status_code, result.json) == (
        200,
        {"received": 2, "invalid": [], "invalid_count": 0},
    )
    rows = stored(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [("1001", "Delivered", 0), ("m-2", "Sent", None)]
    assert rows[0][3].isoformat() == "2026-12-03T14:17:51+00:00" and rows[1][3] is None


def test_a_body_over_the_limit_is_413(client, db):
    # Declared: refused before it is read
    result = client.simulate_post(
        ROUTE, headers={**WEBHOOK, "Content-Length": str(MAX_BODY + 1)}, body=b"[]"
    )
    assert_error(result, 413)
    # Actual: a body that big
    big = json.dumps([{**REPORT, "reference": "r" * 200}] * 25_000).encode()
    assert len(big) > MAX_BODY
    assert_error(client.simulate_post(ROUTE, headers=WEBHOOK, body=big), 413)
    assert stored(db) == []


def test_other_methods_and_spellings_are_falcons(client, db):
    # A GET is Falcon's 405; a percent-encoded spelling of the path is its 404, as before
    assert_error(client.simulate_get(ROUTE, headers=WEBHOOK), 405)
    result = client.simulate_post(
        ROUTE, headers=WEBHOOK, json=REPORT, extras={"RAW_URI": "/webhooks/mitto/%64lr"}
    )
    assert_error(result, 404)
    assert_error(client.simulate_post(ROUTE + "/", headers=WEBHOOK, json=REPORT), 404)
    assert stored(db) == []


def test_a_process_holding_its_bound_sheds_at_once_with_retry_after(settings, redis_client, db):
    # Given a web process that may hold one report at a time, whose INSERT is held up
    app = create_wsgi(dataclasses.replace(settings, report_ingest_max_pending=1), redis_client)
    assert isinstance(app, ReportRoute)
    client = falcon.testing.TestClient(app)  # 503 is the answer under test
    release, entered = threading.Event(), threading.Event()
    write = app.ingest.writer.write

    def slow_write(reports):
        entered.set()
        assert release.wait(10)
        return write(reports)

    app.ingest.writer.write = slow_write
    first: list = []
    posting = threading.Thread(
        target=lambda: first.append(client.simulate_post(ROUTE, headers=WEBHOOK, json=REPORT))
    )
    posting.start()
    assert entered.wait(10)

    # When another report arrives meanwhile
    result = client.simulate_post(ROUTE, headers=WEBHOOK, json={**REPORT, "id": "msg-2"})

    # Then it is answered 503 with Retry-After, and not stored
    assert_unavailable(result)
    assert result.headers["retry-after"] == "1"
    release.set()
    posting.join(10)
    assert first[0].status_code == 200
    assert [row[0] for row in stored(db)] == ["msg-1"]
    # And once the first is stored, the retry is taken
    again = client.simulate_post(ROUTE, headers=WEBHOOK, json={**REPORT, "id": "msg-2"})
    assert again.status_code == 200
    assert [row[0] for row in stored(db)] == ["msg-1", "msg-2"]


def test_postgresql_down_is_503_naming_it(settings, redis_client, db, monkeypatch):
    client = falcon.testing.TestClient(create_wsgi(settings, redis_client))

    def down(*args, **kwargs):
        raise psycopg2.OperationalError("could not connect to server at db.internal:5432")

    monkeypatch.setattr(report_inbox, "execute_values", down)
    result = client.simulate_post(ROUTE, headers=WEBHOOK, json=REPORT)
    body = assert_unavailable(result)
    assert "postgresql" in body["description"] and "db.internal" not in result.text


def test_a_request_that_waited_too_long_for_a_thread_is_shed(settings, redis_client, db):
    # Given a web process that sheds a report request after 200 ms in gunicorn's queue
    app = create_wsgi(dataclasses.replace(settings, report_ingest_max_wait_ms=200), redis_client)
    client = falcon.testing.TestClient(app)
    # When a request reaches its thread after waiting 5 s (as `TimedThreadWorker` records it)
    workers._current.queued_at = time.monotonic() - 5
    try:
        stale = client.simulate_post(ROUTE, headers=WEBHOOK, json=REPORT)
    finally:
        workers._current.queued_at = None
    # Then it is answered 503 with Retry-After and nothing is stored
    assert_unavailable(stale)
    assert stale.headers["retry-after"] == "1"
    assert stored(db) == []
    # And one that did not wait is stored
    workers._current.queued_at = time.monotonic()
    try:
        fresh = client.simulate_post(ROUTE, headers=WEBHOOK, json=REPORT)
    finally:
        workers._current.queued_at = None
    assert fresh.status_code == 200
    assert [row[0] for row in stored(db)] == ["msg-1"]
