"""The webhook's writer: concurrent requests of one web process share their INSERTs.

Each request's reports must be committed before it answers 200. Committing each request on
its own costs PostgreSQL a round trip, a transaction and a WAL flush per report (the provider
posts one report per request), which was the webhook's ceiling. Here a request that finds no
write under way writes every report then waiting, its own included, in one INSERT that is its
own transaction; requests arriving meanwhile wait, and when that write returns the first of
them writes the next group. Every request still answers only once a committed INSERT holds
its reports; only the waiting requests touch no connection at all.

A group that fails on its data is written again request by request, so one request's bad
report fails that request alone; a group that fails on the database (connection lost, statement
timeout) fails whole at once, rather than each request waiting out the same failure again.

`OwnConnection` is the web's writer: one PostgreSQL connection of the process's own, used by
one writing request at a time. A connection taken from the pool for each INSERT would cost a
`SELECT 1` round trip (the pool's liveness check) per INSERT, and keeping the pool's
connections in the request threads would hold one per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2
from psycopg2.extensions import parse_dsn

from models.database import connect_params
from service import report_inbox


class _Request:
    __slots__ = ("reports", "wake", "done", "error", "lead")

    def __init__(self, reports: Sequence[dict[str, Any]]) -> None:
        self.reports = reports
        self.wake = threading.Event()
        self.done = False
        self.error: BaseException | None = None
        self.lead = False


class ReportWriter:
    """`store(reports)` returns once the reports are committed (or raises why not);
    thread-safe, one per web process."""

    def __init__(
        self,
        write: Callable[[list[dict[str, Any]]], object] = report_inbox.store_reports,
        max_group: int = 10_000,
    ) -> None:
        self.write = write
        self.max_group = max_group
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._writing = False

    def store(self, reports: Sequence[dict[str, Any]]) -> None:
        request = _Request(reports)
        with self._lock:
            self._waiting.append(request)
            lead = not self._writing
            self._writing = True
        if lead:
            self._write_group()
        while not request.done:
            request.wake.wait()
            request.wake.clear()
            if request.lead and not request.done:
                request.lead = False
                self._write_group()
        if request.error is not None:
            raise request.error

    def _write_group(self) -> None:
        """Write what waits (up to `max_group` reports, at least one request), then hand the
        writing to the first request still waiting, or stop."""
        with self._lock:
            group: list[_Request] = []
            count = 0
            while self._waiting and (
                not group or count + len(self._waiting[0].reports) <= self.max_group
            ):
                count += len(self._waiting[0].reports)
                group.append(self._waiting.pop(0))
        try:
            errors = write_together(self.write, [request.reports for request in group])
        except BaseException as error:  # an interrupt: nothing known to be committed
            errors = [error] * len(group)
            raise
        finally:
            for request, outcome in zip(group, errors):
                request.error = outcome
                request.done = True
                request.wake.set()
            self._hand_over()

    def _hand_over(self) -> None:
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._writing = False


def write_together(
    write: Callable[[list[dict[str, Any]]], object], batches: Sequence[Sequence[dict[str, Any]]]
) -> list[BaseException | None]:
    """Write every batch (one request's reports) in one `write`; each batch's outcome: None
    when committed, else the error. A group that fails on its data is written again batch by
    batch, so one request's bad report fails that request alone; one that fails on the
    database (down, or a write stuck past its statement timeout) fails whole at once: written
    one by one, each would wait out the same."""
    try:
        write([report for batch in batches for report in batch])
        return [None] * len(batches)
    except Exception as error:  # noqa: BLE001 - each request learns its own outcome
        if len(batches) == 1 or isinstance(error, psycopg2.OperationalError):
            return [error] * len(batches)
    errors: list[BaseException | None] = []
    for batch in batches:
        try:
            write(list(batch))
            errors.append(None)
        except Exception as error:  # noqa: BLE001 - raised in the request's own thread
            errors.append(error)
    return errors


# The longest one shared INSERT of reports may take (it takes milliseconds).
WRITE_TIMEOUT_MS = 5000


class OwnConnection:
    """`write(reports)` on a connection of its own (autocommit), opened on first use and
    again after a failure. Not thread-safe: `ReportWriter` calls it from one request at a
    time."""

    def __init__(self, database_url: str) -> None:
        # A PostgreSQL that does not answer, or a write stuck behind a lock, fails the write
        # (503: the provider posts again) rather than hold a web thread and the reports
        # queued behind it.
        params = connect_params(database_url)
        given = parse_dsn(database_url)
        options = f"{given.get('options', '')} -c statement_timeout={WRITE_TIMEOUT_MS}"
        self.params = {**params, "connect_timeout": given.get("connect_timeout", 5)}
        self.params["options"] = options.strip()
        self._connection: Any = None

    def write(self, reports: list[dict[str, Any]]) -> list[int]:
        reused = self._connection is not None and not self._connection.closed
        if not reused:
            self._connect()
        try:
            return report_inbox.store_reports_on(self._connection, reports)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            lost = bool(self._connection.closed)
            self.close()  # the next write connects again
            if not (reused and lost):
                raise
        # A kept connection found closed (PostgreSQL restarted, a failover, an idle kill) is
        # no outage: one write on a new connection, before the reports are answered 503. A
        # probe saw each web process answer its first post after pg_terminate_backend with
        # "postgresql is unavailable". Should the lost write have committed after all, the
        # reports are stored twice, which applying tolerates (a provider posting again does
        # the same).
        self._connect()
        try:
            return report_inbox.store_reports_on(self._connection, reports)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.close()
            raise

    def _connect(self) -> None:
        self._connection = psycopg2.connect(**self.params)
        self._connection.autocommit = True

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except psycopg2.Error:
                pass
