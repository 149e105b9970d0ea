"""The `reports` process's writer (api/report_server.py): requests waiting on the loop share
one write at a time, each returns once its reports are written, a bad report fails its own
request only, and the applier is signalled after a commit, never before or without one."""

from __future__ import annotations

import asyncio
import dataclasses

import psycopg2.errors
import pytest

from api.report_server import GroupWriter, ReportServer
from service.sending import callback_url
from tests.unit.test_report_writer import SlowStore


def run(coroutine):
    return asyncio.run(coroutine)


def route_scope(token: str) -> dict:
    """An ASGI request for the route, its token in the query."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/mitto/dlr",
        "raw_path": b"/webhooks/mitto/dlr",
        "query_string": f"token={token}".encode(),
        "headers": [],
    }


def test_requests_share_writes_and_each_returns_once_written():
    # Given a writer over a store that takes 50 ms a write
    store = SlowStore()
    signals: list[int] = []
    writer = GroupWriter(store, lambda: signals.append(len(store.groups)))

    # When 40 requests of one report each arrive together
    async def request(i: int) -> bool:
        await writer.store([{"id": f"r{i:02d}"}])
        return f"r{i:02d}" in store.written()

    async def main() -> list[bool]:
        return await asyncio.gather(*(request(i) for i in range(40)))

    returned_after_write = run(main())

    # Then every report was written once, in far fewer writes than requests, none returned
    # before its write, the applier was signalled after each write, and nothing is pending
    assert store.written() == [f"r{i:02d}" for i in range(40)]
    assert len(store.groups) < 20
    assert all(returned_after_write)
    assert signals == list(range(1, len(store.groups) + 1))
    assert writer.pending == 0
    writer.close()


def test_a_bad_report_fails_its_own_request_only():
    store = SlowStore()
    writer = GroupWriter(store, lambda: None)
    ids = ["a", "bad", "b", "c"]

    async def request(report_id: str) -> str:
        try:
            await writer.store([{"id": report_id}])
        except ValueError:
            return "failed"
        return "ok"

    async def main() -> list[str]:
        return await asyncio.gather(*(request(i) for i in ids))

    assert dict(zip(ids, run(main()))) == {**dict.fromkeys(ids, "ok"), "bad": "failed"}
    assert store.written() == ["a", "b", "c"]
    writer.close()


def test_a_database_failure_fails_every_request_and_signals_nothing():
    calls: list[int] = []
    signals: list[int] = []

    def timing_out(reports: list[dict]) -> None:
        calls.append(len(reports))
        raise psycopg2.errors.QueryCanceled("canceling statement due to statement timeout")

    writer = GroupWriter(timing_out, lambda: signals.append(1))

    async def request(i: int) -> str:
        try:
            await writer.store([{"id": f"r{i}"}])
        except psycopg2.OperationalError:
            return "failed"
        return "ok"

    async def main() -> list[str]:
        return await asyncio.gather(*(request(i) for i in range(8)))

    assert run(main()) == ["failed"] * 8
    assert sum(calls) == 8  # no group written again report by report
    assert signals == []
    assert writer.pending == 0
    writer.close()


def test_a_request_over_the_pending_bound_is_shed_before_its_body_is_read(settings):
    # Given a server whose writer already holds its bound
    server = ReportServer(dataclasses.replace(settings, report_ingest_max_pending=1), None)
    server.writer.pending = 1
    received: list[str] = []
    sent: list[dict] = []

    async def receive() -> dict:
        received.append("body")
        return {"type": "http.request", "body": b'{"id": "x", "deliveryStatus": "Sent"}'}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = route_scope(settings.dlr_webhook_secret)
    run(server(scope, receive, send))

    # Then it is answered 503 with Retry-After, its body unread
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert received == []


@pytest.mark.parametrize(
    "reports_base_url, expected",
    [
        (None, "http://public.example/webhooks/mitto/dlr?token="),
        ("https://reports.example", "https://reports.example/webhooks/mitto/dlr?token="),
    ],
)
def test_the_callback_names_the_reports_process_when_configured(
    settings, reports_base_url, expected
):
    configured = dataclasses.replace(
        settings, public_base_url="http://public.example", reports_base_url=reports_base_url
    )
    assert callback_url(configured) == expected + settings.dlr_webhook_secret


def test_requests_still_reading_their_body_count_against_the_bound(settings):
    # Given a server bounded at 2 reports, and 2 requests whose bodies have not arrived yet
    server = ReportServer(dataclasses.replace(settings, report_ingest_max_pending=2), None)
    scope = route_scope(settings.dlr_webhook_secret)
    answers: list[int] = []

    async def main() -> None:
        arrived = asyncio.Event()

        async def slow_body() -> dict:
            await arrived.wait()
            return {"type": "http.disconnect"}  # (they leave: nothing to store)

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answers.append(message["status"])

        waiting = [asyncio.ensure_future(server(scope, slow_body, send)) for _ in range(2)]
        await asyncio.sleep(0.05)
        # When a third arrives meanwhile
        await server(scope, slow_body, send)
        arrived.set()
        await asyncio.gather(*waiting)

    run(main())

    # Then it is shed at once, before its body is read (before: all three admitted)
    assert answers == [503]
    assert server.reading == 0
    server.writer.close()


def test_the_route_is_also_found_under_the_path_of_reports_base_url(settings):
    server = ReportServer(
        dataclasses.replace(settings, reports_base_url="https://x.example/provider/reports"), None
    )
    assert server.prefix == b"/provider/reports"


def test_without_a_webhook_secret_the_route_answers_404(settings):
    # (as the web's: the provider's webhooks are off; the process runs on, not restarted)
    server = ReportServer(dataclasses.replace(settings, dlr_webhook_secret=None), None)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = route_scope("anything")
    run(server(scope, receive, send))
    assert sent[0]["status"] == 404
    server.writer.close()
