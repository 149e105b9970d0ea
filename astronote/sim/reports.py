"""Delivery reports: when each accepted message's reports fall due, and posting them back.

Reports wait in a heap ordered by due time. A small pool of sender threads, started on first
use, takes the due ones (up to `dlr_batch` at a time) and POSTs them to the request's
`callback`, retrying transient failures a few times. Two ways to post (`dlr_burst`):
- pooled (default): each sender thread posts over its own keep-alive connection, so at most
  `dlr_threads` posts are in flight;
- burst: every post at once on its own new connection (`Connection: close`), with no bound:
  a provider flushing a backlog, the load that once collapsed the webhook (issue 11). Those
  posts run in a child process (`astronote.sim.burst`).
Either way a post that fails is retried as a provider does (`astronote.sim.retry`: 5xx, 429 and
no answer, after `Retry-After` when given, bounded in attempts and time).
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from astronote.sim.answers import terse_id
from astronote.sim.burst import BurstPoster
from astronote.sim.config import DLR_STATUSES
from astronote.sim.retry import Retries

# Sent (not Queued) is the intermediate report: the application itself marks an accepted
# message Queued, so Sent is the one that exercises "statuses only move forward".
_INTERMEDIATE_STATUS = "Sent"


def now_iso() -> str:
    """The provider's timestamp format, shared by send answers and delivery reports."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _terse(report: dict[str, Any]) -> dict[str, Any]:
    """A report as another provider spells it (config `terse`)."""
    return {
        **report,
        "id": terse_id(report["id"]),
        "deliveryStatus": report["deliveryStatus"].upper(),
        "statusCode": str(report["statusCode"]),
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }


def plan_reports(
    records: list[dict[str, Any]],
    finals: list[str],
    duplicated: list[bool],
    cfg: dict[str, Any],
    base: float,
) -> list[tuple[float, dict[str, Any]]]:
    """Each record's reports with their due times on the monotonic clock, counted from `base`.

    `finals` and `duplicated` are the fates already drawn for the records: the final status,
    and whether that final report is posted twice.
    """
    delay = cfg["dlr_delay_ms"] / 1000.0
    entries: list[tuple[float, dict[str, Any]]] = []
    for record, status, dup in zip(records, finals, duplicated):
        report = {
            "id": record["id"],
            "to": record["to"],
            "reference": record["reference"],
            "deliveryStatus": status,
            "statusCode": DLR_STATUSES[status],
        }
        early = dict(report, deliveryStatus=_INTERMEDIATE_STATUS, statusCode=0)
        if cfg["terse"]:
            report, early = _terse(report), _terse(early)
        if cfg["dlr_queued_first"]:
            entries.append((base + delay / 2, early))
        entries.append((base + delay, report))
        if dup:
            # Later and separately, so the webhook sees a genuine replay, not one array item
            # repeated.
            entries.append((base + delay + max(0.05, delay / 2), report))
    return entries


class DeliveryReports:
    """Reports waiting to be posted and the sender threads that post them; thread-safe.

    `batch_size` is read each time senders take reports, so a config change applies at once;
    `on_posted(ok, count)` is told the result of every post made since the last `clear`.
    `stopping` is shared with the simulator: `close` sets it, which also wakes held requests.
    """

    def __init__(
        self,
        threads: int,
        stopping: threading.Event,
        batch_size: Callable[[], int],
        on_posted: Callable[[bool, int], None],
        burst: Callable[[], bool] = lambda: False,
        on_retry: Callable[[int], None] = lambda count: None,
        timeout: Callable[[], float] = lambda: 5.0,
    ) -> None:
        self.threads = threads
        self._stopping = stopping
        self._batch_size = batch_size
        self._burst = burst
        self._on_posted = on_posted
        self._on_retry = on_retry
        self._timeout = timeout
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, str, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._generation = 0
        self._senders: list[threading.Thread] = []
        self._burst_poster = BurstPoster(stopping)

    def schedule(self, url: str, entries: list[tuple[float, dict[str, Any]]]) -> None:
        """Queue `(due, report)` entries for posting to `url`."""
        self._ensure_senders()
        with self._cond:
            for due, report in entries:
                heapq.heappush(self._heap, (due, next(self._seq), url, report))
            self._cond.notify(len(entries))

    def pending(self) -> int:
        """Reports not yet posted: waiting, or being posted now."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def clear(self) -> None:
        """Drop waiting reports; posts already under way are no longer counted."""
        with self._cond:
            self._heap = []
            self._generation += 1

    def close(self) -> None:
        """Stop the senders (unsent reports are dropped); their connections close with them."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._senders:
            thread.join(timeout=2)
        self._burst_poster.close()

    def _ensure_senders(self) -> None:
        if self._senders:
            return
        with self._cond:
            if self._senders or self._stopping.is_set():
                return
            for i in range(self.threads):
                thread = threading.Thread(
                    target=self._sender_loop, name=f"provider-sim-dlr-{i}", daemon=True
                )
                thread.start()
                self._senders.append(thread)

    def _take_due(self) -> tuple[int, int, list[tuple[str, dict[str, Any]]]] | None:
        """Block until reports are due; take up to dlr_batch of them (None when stopping)."""
        cond = self._cond
        with cond:
            while True:
                if self._stopping.is_set():
                    return None
                heap = self._heap
                now = time.monotonic()
                if heap and heap[0][0] <= now:
                    break
                cond.wait(heap[0][0] - now if heap else None)
            batch_size = self._batch_size()
            taken = []
            while heap and heap[0][0] <= now and len(taken) < batch_size:
                _, _, url, report = heapq.heappop(heap)
                taken.append((url, report))
            self._in_flight += len(taken)
            return batch_size, self._generation, taken

    def _sender_loop(self) -> None:
        connections = Connections(self._timeout)
        try:
            while True:
                item = self._take_due()
                if item is None:
                    return
                batch_size, generation, taken = item
                if self._burst():
                    self._post_burst(batch_size, generation, taken)
                else:
                    self._post_taken(batch_size, generation, taken, connections)
        finally:
            connections.close()

    def _post_burst(
        self, batch_size: int, generation: int, taken: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Every post at once on its own thread and new connection: no bound (`BurstPoster`)."""
        for start in range(0, len(taken), batch_size):
            part = taken[start : start + batch_size]
            for url, body, count in self._bodies(batch_size, part):
                self._burst_poster.submit(
                    url, body, self._timeout(), partial(self._burst_done, generation, count)
                )

    def _burst_done(self, generation: int, count: int, ok: bool, retries: int) -> None:
        try:
            if generation == self._generation:
                if retries:
                    self._on_retry(retries)
                self._on_posted(ok, count)
        finally:
            with self._cond:
                self._in_flight -= count

    @staticmethod
    def _bodies(
        batch_size: int, taken: list[tuple[str, dict[str, Any]]]
    ) -> list[tuple[str, bytes, int]]:
        """The posts that carry `taken`: (url, JSON body, how many reports)."""
        by_url: dict[str, list[dict[str, Any]]] = {}
        for url, report in taken:
            by_url.setdefault(url, []).append(report)
        posts = []
        for url, reports in by_url.items():
            stamp = now_iso()
            for report in reports:
                report["timestamp"] = stamp
            # With batching on, even a lone report goes as an array: the receiver must
            # handle both shapes, and tests can rely on the shape.
            body = reports if batch_size > 1 else reports[0]
            posts.append((url, json.dumps(body).encode(), len(reports)))
        return posts

    def _post_taken(
        self,
        batch_size: int,
        generation: int,
        taken: list[tuple[str, dict[str, Any]]],
        connections: Connections,
    ) -> None:
        try:
            for url, body, count in self._bodies(batch_size, taken):
                ok = self._post_report(url, body, connections)
                # A reset during the post must not leak counts into the fresh stats.
                if generation == self._generation:
                    self._on_posted(ok, count)
        finally:
            with self._cond:
                self._in_flight -= len(taken)

    def _post_report(self, url: str, body: bytes, connections: Connections) -> bool:
        """POST with retries (`Retries`) over the thread's keep-alive `connections`."""
        retries = Retries()
        while not self._stopping.is_set():
            status, retry_after = post_once(url, body, connections)
            wait = retries.after(status, retry_after)
            if wait is None:
                return status is not None and 200 <= status < 300
            self._on_retry(1)
            self._stopping.wait(wait)
        return False


class Connections:
    """One sender thread's keep-alive connections, one per host (not thread-safe)."""

    def __init__(self, timeout: Callable[[], float] = lambda: 5.0) -> None:
        self._open: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._timeout = timeout

    def get(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """The connection to use, and whether it is one already used (the server may have
        closed it while idle)."""
        key = (scheme, netloc)
        connection = self._open.get(key)
        if connection is None:
            connection = self._open[key] = new_connection(scheme, netloc, self._timeout())
            return connection, False
        return connection, True

    def drop(self, scheme: str, netloc: str) -> None:
        connection = self._open.pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for connection in self._open.values():
            connection.close()
        self._open.clear()


def new_connection(scheme: str, netloc: str, timeout: float = 5.0) -> http.client.HTTPConnection:
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    # One timeout for connect and read: the longer of requests' (connect, read) pair before.
    return kind(netloc, timeout=timeout)


def post_once(url: str, body: bytes, connections: Connections) -> tuple[int | None, str | None]:
    """One POST of a JSON body; its status and Retry-After, or None when it failed without
    one (refused, reset, timed out). The stdlib client, not `requests`: at thousands of posts
    a second its per-request overhead was the simulator's bottleneck, not the receiver's.
    A kept-alive connection the server closed while idle is replaced at once, as urllib3 does."""
    parts = urlsplit(url)
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    for _ in range(2):
        connection, reused = connections.get(parts.scheme, parts.netloc)
        try:
            status, will_close, retry_after = _exchange(connection, target, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            connections.drop(parts.scheme, parts.netloc)
            if reused:
                continue  # closed while idle: once more on a new connection
            return None, None
        except (OSError, http.client.HTTPException):
            connections.drop(parts.scheme, parts.netloc)
            return None, None
        if will_close:
            connections.drop(parts.scheme, parts.netloc)
        return status, retry_after
    return None, None


def _exchange(
    connection: http.client.HTTPConnection, target: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bool, str | None]:
    connection.request("POST", target, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status, bool(response.will_close), response.getheader("Retry-After")
