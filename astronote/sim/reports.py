"""Delivery reports: when each accepted message's reports fall due, and posting them back.

Reports wait in a heap ordered by due time. A small pool of sender threads, started on first
use, takes the due ones (up to `dlr_batch` at a time) and POSTs them to the request's
`callback`, retrying transient failures a few times. Two ways to post (`dlr_burst`):
- pooled (default): the sender threads post over one session's keep-alive connections, so at
  most `dlr_threads` posts are in flight;
- burst: every post gets its own thread and a new connection (no session, `Connection:
  close`), with no bound: a provider flushing a backlog, the load that once collapsed the
  webhook (issue 11).
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from astronote.sim.config import DLR_STATUSES

# Sent (not Queued) is the intermediate report: the application itself marks an accepted
# message Queued, so Sent is the one that exercises "statuses only move forward".
_INTERMEDIATE_STATUS = "Sent"

_DLR_ATTEMPTS = 4
_DLR_BACKOFF_S = (0.1, 0.3, 0.9)
_DLR_TIMEOUT = (2.0, 5.0)


def now_iso() -> str:
    """The provider's timestamp format, shared by send answers and delivery reports."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        if cfg["dlr_queued_first"]:
            early = dict(report, deliveryStatus=_INTERMEDIATE_STATUS, statusCode=0)
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
    ) -> None:
        self.threads = threads
        self._stopping = stopping
        self._batch_size = batch_size
        self._burst = burst
        self._on_posted = on_posted
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, str, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._generation = 0
        self._senders: list[threading.Thread] = []
        self._session: requests.Session | None = None

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
        """Stop the senders (unsent reports are dropped) and close their HTTP session."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._senders:
            thread.join(timeout=2)
        if self._session is not None:
            self._session.close()

    def _ensure_senders(self) -> None:
        if self._senders:
            return
        with self._cond:
            if self._senders or self._stopping.is_set():
                return
            session = requests.Session()
            # Callbacks are explicit URLs; consulting proxy/netrc settings from the environment
            # costs ~0.5 ms of CPU per post (it walks os.environ twice) for nothing.
            session.trust_env = False
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=4, pool_maxsize=self.threads * 2
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
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
        while True:
            item = self._take_due()
            if item is None:
                return
            batch_size, generation, taken = item
            if self._burst():
                self._post_burst(batch_size, generation, taken)
            else:
                self._post_taken(batch_size, generation, taken, self._session)

    def _post_burst(
        self, batch_size: int, generation: int, taken: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """One thread and one new connection per post, started at once: no bound at all."""
        for start in range(0, len(taken), batch_size):
            part = taken[start : start + batch_size]
            threading.Thread(
                target=self._post_taken,
                args=(batch_size, generation, part, None),
                name="provider-sim-dlr-burst",
                daemon=True,
            ).start()

    def _post_taken(
        self,
        batch_size: int,
        generation: int,
        taken: list[tuple[str, dict[str, Any]]],
        session: requests.Session | None,
    ) -> None:
        try:
            by_url: dict[str, list[dict[str, Any]]] = {}
            for url, report in taken:
                by_url.setdefault(url, []).append(report)
            for url, reports in by_url.items():
                stamp = now_iso()
                for report in reports:
                    report["timestamp"] = stamp
                # With batching on, even a lone report goes as an array: the receiver
                # must handle both shapes, and tests can rely on the shape.
                body = reports if batch_size > 1 else reports[0]
                ok = self._post_report(url, json.dumps(body).encode(), session)
                # A reset during the post must not leak counts into the fresh stats.
                if generation == self._generation:
                    self._on_posted(ok, len(reports))
        finally:
            with self._cond:
                self._in_flight -= len(taken)

    def _post_report(self, url: str, body: bytes, session: requests.Session | None) -> bool:
        """POST with retries, over `session`, or without one over a new connection."""
        headers = {"Content-Type": "application/json"}
        if session is None:
            headers["Connection"] = "close"
        for attempt in range(_DLR_ATTEMPTS):
            if self._stopping.is_set():
                return False
            try:
                response = (session or requests).post(
                    url, data=body, headers=headers, timeout=_DLR_TIMEOUT
                )
                status = response.status_code
                response.close()
                if 200 <= status < 300:
                    return True
                if status < 500 and status != 429:
                    return False  # the receiver refuses it: retrying cannot help
            except requests.RequestException:
                pass
            if attempt < len(_DLR_BACKOFF_S):
                self._stopping.wait(_DLR_BACKOFF_S[attempt])
        return False
