"""The webhook's writer: concurrent requests share INSERTs, each answers once its reports are
written, and a failed group fails only the request that caused it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import psycopg2.errors
import pytest

from service.report_writer import ReportWriter


class SlowStore:
    """Records each write (one INSERT); takes a moment, like a commit, so requests pile up."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self, reports: list[dict]) -> None:
        self.release.wait(0.05)
        if any(r["id"] == "bad" for r in reports):
            raise ValueError("a value PostgreSQL cannot hold")
        with self.lock:
            self.groups.append([r["id"] for r in reports])

    def written(self) -> list[str]:
        with self.lock:
            return sorted(i for group in self.groups for i in group)


def test_concurrent_requests_share_writes_and_each_returns_once_written():
    # Given a writer over a store that takes 50 ms a write
    store = SlowStore()
    writer = ReportWriter(store)

    # When 40 requests of one report each arrive from 16 threads
    def request(i: int) -> bool:
        writer.store([{"id": f"r{i:02d}"}])
        return f"r{i:02d}" in store.written()  # written by the time store() returned

    with ThreadPoolExecutor(16) as pool:
        returned_after_write = list(pool.map(request, range(40)))

    # Then every report was written once, in far fewer writes than requests, and no request
    # returned before its report was written
    assert store.written() == [f"r{i:02d}" for i in range(40)]
    assert len(store.groups) < 20
    assert all(returned_after_write)


def test_a_failing_group_fails_only_the_request_that_broke_it():
    # Given a writer whose store refuses one bad report, and requests arriving together
    store = SlowStore()
    writer = ReportWriter(store)
    ids = ["a", "bad", "b", "c", "d", "e"]

    def request(report_id: str) -> str:
        try:
            writer.store([{"id": report_id}])
        except ValueError:
            return "failed"
        return "ok"

    with ThreadPoolExecutor(6) as pool:
        outcomes = dict(zip(ids, pool.map(request, ids)))

    # Then the bad request alone fails, every other report is written
    assert outcomes == {**dict.fromkeys(ids, "ok"), "bad": "failed"}
    assert store.written() == ["a", "b", "c", "d", "e"]


def test_a_group_failing_on_the_database_fails_whole_and_is_not_written_again():
    # Given a store whose database times out (every write waits 50 ms, then fails), and
    # requests arriving together
    calls: list[int] = []

    def timing_out(reports: list[dict]) -> None:
        calls.append(len(reports))
        threading.Event().wait(0.05)
        raise psycopg2.errors.QueryCanceled("canceling statement due to statement timeout")

    writer = ReportWriter(timing_out)

    def request(i: int) -> str:
        try:
            writer.store([{"id": f"r{i}"}])
        except psycopg2.OperationalError:
            return "failed"
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(request, range(8)))

    # Then every request fails (the webhook answers 503), and no group was written again
    # report by report: one write per group, not one more per request in it
    assert outcomes == ["failed"] * 8
    assert sum(calls) == 8, calls


def test_a_group_never_exceeds_the_bound_but_takes_one_large_request_whole():
    store = SlowStore()
    writer = ReportWriter(store, max_group=5)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: writer.store([{"id": f"{i}-{j}"} for j in range(3)]), range(4)))
    writer.store([{"id": f"big-{j}"} for j in range(8)])
    assert all(len(group) <= 5 for group in store.groups[:-1])
    assert len(store.groups[-1]) == 8
    assert len(store.written()) == 20


@pytest.mark.parametrize("threads", [1, 8])
def test_the_writer_is_free_again_after_every_request(threads):
    store = SlowStore()
    store.release.set()
    writer = ReportWriter(store)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: writer.store([{"id": str(i)}]), range(30)))
    assert writer._writing is False and writer._waiting == []
