"""HTTP as clients write it, over real gunicorn.

A body sent chunked (`Transfer-Encoding: chunked`, no Content-Length: what a client streaming
its upload sends) is read like any other: Falcon's bounded stream reads nothing without a
length, so such an import was answered "the body is empty", and a chunked body over the 5 MiB
cap was not refused 413. And what gunicorn refuses itself, before the application sees it (a
bad request line or header, an over-long target, too many header bytes), is answered as the
API answers: JSON naming the problem, with the security headers (it was an HTML page without
them)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from api.body import MAX_BODY
from tests.conftest import DLR_WEBHOOK_SECRET
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


def raw_exchange(
    port: int, request: bytes, half_close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send `request` and read the answer; `half_close`: close the sending side first (a
    client whose upload was cut off)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    return int(status_line.split(" ")[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
        (b"G\x00T /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    ],
    ids=["request-line", "method", "header-name", "long-target", "many-headers"],
)
def test_what_gunicorn_refuses_itself_is_json_with_the_security_headers(web, request_bytes, status):
    port = int(web.web.rsplit(":", 1)[1])
    got, headers, body = raw_exchange(port, request_bytes)
    assert got == status, (headers, body[:300])
    assert headers["content-type"] == "application/json", headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["content-security-policy"] == "frame-ancestors 'none'"
    assert int(headers["content-length"]) == len(body)
    document = json.loads(body)
    assert set(document) == {"title", "description"} and document["description"], document


def test_a_malformed_chunked_body_is_400_not_500(web, db):
    # Given a shop key, so that the request reaches the body
    _, key = web.create_shop("badchunk.example", 0)
    port = int(web.web.rsplit(":", 1)[1])
    head = (
        "POST /campaigns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    # When its chunks are not chunks (a size that is not hex; a chunk longer than its size)
    for body in (b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}}}}\r\n0\r\n\r\n"):
        got, headers, answer = raw_exchange(port, head + body)
        # Then 400 as JSON, and nothing created
        assert got == 400, answer[:300]
        assert headers["content-type"] == "application/json"
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 0


@pytest.mark.parametrize("path", ["/campaigns", "/webhooks/mitto/dlr"], ids=["api", "reports"])
def test_a_413_closes_the_connection_with_the_rest_of_the_body_unread(web, db, path):
    # Given a request declaring more than 5 MiB, of which only 1,000 bytes are sent
    _, key = web.create_shop("toolarge.example", 0) if path == "/campaigns" else (None, "")
    port = int(web.web.rsplit(":", 1)[1])
    query = f"?token={DLR_WEBHOOK_SECRET}" if path != "/campaigns" else ""
    head = (
        f"POST {path}{query} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Length: {6 * 1024 * 1024}\r\n\r\n"
    ).encode()
    # When it is answered
    got, headers, _ = raw_exchange(port, head + b"x" * 1000)
    # Then 413, and the server says it closes the connection and does (raw_exchange reads
    # until the server closes: kept alive, it waited for the rest and timed out)
    assert got == 413
    assert headers["connection"] == "close", headers


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_cut_short_is_400_and_nothing_of_it_is_used(web, db, framing):
    # Given a shop key, and uploads whose client stops before the body's end: fewer bytes
    # than the Content-Length declares, or a chunked body without its last chunk
    _, key = web.create_shop("cutshort.example", 0)
    port = int(web.web.rsplit(":", 1)[1])
    csv = b"phone,first_name\n+306911000501,a\n+306911000502,b\n+3069110005"
    cases = [
        ("/contacts", "text/csv", f"Bearer {key}", csv),
        ("/campaigns", "application/json", f"Bearer {key}", b'{"name": "Cut", "text": "Hi"'),
        (f"/webhooks/mitto/dlr?token={DLR_WEBHOOK_SECRET}", "application/json", "", b'[{"id"'),
    ]
    for path, content_type, authorization, body in cases:
        if framing == "content-length":
            framed = f"Content-Length: {len(body) + 1000}\r\n\r\n".encode() + body
        else:
            size = f"{len(body) + 100:x}\r\n".encode()  # a chunk that never ends
            framed = b"Transfer-Encoding: chunked\r\n\r\n" + size + body
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Authorization: {authorization}\r\n"
        ).encode()

        # When it is answered
        got, headers, answer = raw_exchange(port, head + framed, half_close=True)

        # Then 400 naming the problem, as JSON (not 500, not a partial import)
        assert got == 400, (path, answer[:300])
        assert headers["content-type"] == "application/json"
        assert json.loads(answer)["title"] == "Incomplete body", answer
    assert db.execute_sql("SELECT count(*) FROM contact").fetchone()[0] == 0
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 0
    assert db.execute_sql("SELECT count(*) FROM delivery_report").fetchone()[0] == 0
