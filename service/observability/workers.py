"""Live worker processes: each Dramatiq worker process registers itself in Redis with a short
TTL (`astronote:worker:{host}:{pid}` -> {queues, threads, processes, started_at, seen_at}) and
refreshes it while its consumer and worker threads are alive.

Dramatiq's `__heartbeats__` set cannot say this: every process that publishes a message (a web
process enqueueing a campaign) writes to it too. The seed's campaign waited forever because no
process consumed `sms-send` while everything claimed workers had started; here a worker that is
not consuming is simply absent, within `TTL_MS`.

The set `astronote:workers` indexes the keys so readers never scan the keyspace; a member whose
key has expired is a dead worker and is dropped by the reader.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from service.observability import presence

log = logging.getLogger("astronote.workers")

INDEX_KEY = "astronote:workers"
KEY_PREFIX = "astronote:worker:"
# A SIGKILLed worker disappears from health within TTL_MS; a live one refreshes three times
# per TTL, so one slow round trip never makes it flicker.
TTL_MS = 10_000
REFRESH_MS = TTL_MS // 3


def worker_key(holder: str) -> str:
    return f"{KEY_PREFIX}{holder}"


@dataclass
class WorkerEntry:
    """What one worker process says about itself."""

    holder: str  # host:pid
    queues: list[str]
    threads: int
    processes: int | None  # the CLI's --processes: how many siblings were asked for
    broker_id: str | None  # Dramatiq's Redis broker's id; None on RabbitMQ
    started_at: datetime

    def as_hash(self) -> dict[str, str]:
        return {
            "holder": self.holder,
            "queues": json.dumps(self.queues),
            "threads": str(self.threads),
            "processes": "" if self.processes is None else str(self.processes),
            "broker_id": self.broker_id or "",
            "started_at": self.started_at.isoformat(),
            "seen_at": datetime.now(UTC).isoformat(),
        }


def register(client: redis.Redis, entry: WorkerEntry, ttl_ms: int = TTL_MS) -> None:
    """Announce (or refresh) this worker; it disappears `ttl_ms` after its last announcement."""
    key = worker_key(entry.holder)
    presence.announce(client, INDEX_KEY, key, entry.as_hash(), ttl_ms)


def unregister(client: redis.Redis, holder: str) -> None:
    presence.withdraw(client, INDEX_KEY, worker_key(holder))


def live_workers(client: redis.Redis, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every worker process that announced itself within its TTL, with its age in seconds."""
    now = now or datetime.now(UTC)
    return [_decode(values, now) for values in presence.live_entries(client, INDEX_KEY)]


def _decode(values: dict[str, str], now: datetime) -> dict[str, Any]:
    started_at = datetime.fromisoformat(values["started_at"])
    host, _, pid = values.get("holder", "").rpartition(":")
    return {
        "holder": values.get("holder"),
        "host": host,
        "pid": int(pid) if pid.isdigit() else None,
        "queues": json.loads(values.get("queues") or "[]"),
        "threads": int(values.get("threads") or 0),
        "processes": int(values["processes"]) if values.get("processes") else None,
        "started_at": values["started_at"],
        "seen_at": values.get("seen_at"),
        "age_s": round((now - started_at).total_seconds(), 1),
    }


class Presence:
    """Keeps one worker process registered from a daemon thread while `alive()` says its
    threads are working; stops refreshing (so it expires) as soon as they are not."""

    def __init__(
        self,
        client: redis.Redis,
        entry_of: Callable[[], WorkerEntry | None],
        refresh_ms: int = REFRESH_MS,
        ttl_ms: int = TTL_MS,
    ) -> None:
        self.client = client
        self.entry_of = entry_of
        self.refresh_s = refresh_ms / 1000
        self.ttl_ms = ttl_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="astronote-presence", daemon=True)
        self._holder: str | None = None
        self._failing = False

    def start(self) -> None:
        self.announce()
        self._thread.start()

    def announce(self) -> bool:
        """One refresh; errors are logged once per outage, never raised."""
        entry = self.entry_of()
        if entry is None:
            return False  # threads are dead: let the key expire
        self._holder = entry.holder
        try:
            register(self.client, entry, self.ttl_ms)
        except redis.RedisError as error:
            if not self._failing:
                log.warning(
                    "could not register this worker in Redis; health will not list it",
                    extra={"holder": entry.holder, "error": str(error)[:200]},
                )
            self._failing = True
            return False
        if self._failing:
            log.info("worker registered again", extra={"holder": entry.holder})
        self._failing = False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.announce()

    def stop(self) -> None:
        """Stop refreshing and remove the entry at once (a graceful shutdown)."""
        self._stop.set()
        # A refresh already past its wait would register the entry again after the removal
        # (a CI run saw it listed after stop): let it finish first.
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._holder:
            try:
                unregister(self.client, self._holder)
            except redis.RedisError:
                pass  # the entry expires on its own
