"""A body sent chunked (`Transfer-Encoding: chunked`, no Content-Length: what a client streaming
its upload sends) is read like any other, over real gunicorn. Falcon's bounded stream reads
nothing without a length, so such an import was answered "the body is empty", and a chunked body
over the 5 MiB cap was not refused 413."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from api.body import MAX_BODY
from tests.e2e.stack import Stack


def chunked(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """`requests` sends a generator's pieces as chunks, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def web(make_stack) -> Stack:
    stack = make_stack()
    stack.start_web()
    return stack


def test_chunked_json_and_csv_imports_and_a_campaign_are_read_and_an_oversized_one_is_413(web, db):
    _, key = web.create_shop("chunked.example", 0)
    headers = {"Authorization": f"Bearer {key}"}

    # When a JSON import and a CSV import are streamed in chunks
    rows = [{"phone": f"+30690{i:07d}", "first_name": f"N{i}"} for i in range(2_000)]
    as_json = web.call(
        "POST",
        "/contacts",
        headers={**headers, "Content-Type": "application/json"},
        data=chunked(json.dumps({"contacts": rows}).encode()),
    )
    as_csv = web.call(
        "POST",
        "/contacts",
        headers={**headers, "Content-Type": "text/csv"},
        data=chunked(b"phone,first_name\n+306990000001,Ann\n,Blank\n"),
    )
    campaign = web.call(
        "POST",
        "/campaigns",
        headers={**headers, "Content-Type": "application/json"},
        data=chunked(b'{"name": "Streamed", "text": "Hi"}', size=7),
    )

    # Then each is read whole: every row imported or reported, the campaign created
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["created"] == 2_000 and as_json.json()["invalid"] == []
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.json()["created"] == 1
    assert [row["index"] for row in as_csv.json()["invalid"]] == [1]
    assert campaign.status_code == 201, campaign.text
    assert campaign.json()["name"] == "Streamed"
    assert db.execute_sql("SELECT count(*) FROM contact").fetchone()[0] == 2_001

    # And a chunked body over the cap is refused 413, as one with its length declared is
    head, tail = b'{"name": "', b'", "text": "t"}'
    oversized = head + b"x" * (MAX_BODY + 1 - len(head) - len(tail)) + tail
    refused = web.call(
        "POST",
        "/campaigns",
        headers={**headers, "Content-Type": "application/json"},
        data=chunked(oversized, size=256 * 1024),
    )
    assert refused.status_code == 413, refused.text[:300]
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 1
