"""Live clocks: each clock process, leading or not, registers itself in Redis with a short TTL
(`astronote:clock:{host}:{pid}` -> {run_scheduler, leading, epoch, started_at, seen_at}),
so health can list every clock and its RUN_SCHEDULER: the seed's stuck campaign had exactly
one clock, idle, and nothing said so.

The set `astronote:clocks` indexes the keys, so reading them never scans the keyspace; a
member whose key has expired is a dead clock and is dropped by the reader.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from service.observability import presence

INDEX_KEY = "astronote:clocks"
KEY_PREFIX = "astronote:clock:"


def clock_key(holder: str) -> str:
    return f"{KEY_PREFIX}{holder}"


def register(
    client: redis.Redis,
    holder: str,
    ttl_ms: int,
    run_scheduler: bool,
    leading: bool,
    epoch: int | None,
    started_at: datetime,
) -> None:
    """Announce (or refresh) this clock; it disappears `ttl_ms` after its last announcement."""
    key = clock_key(holder)
    entry = {
        "holder": holder,
        "run_scheduler": int(run_scheduler),
        "leading": int(leading),
        "epoch": "" if epoch is None else epoch,
        "started_at": started_at.isoformat(),
        "seen_at": datetime.now(UTC).isoformat(),
    }
    presence.announce(client, INDEX_KEY, key, entry, ttl_ms)


def unregister(client: redis.Redis, holder: str) -> None:
    presence.withdraw(client, INDEX_KEY, clock_key(holder))


def live_clocks(client: redis.Redis) -> list[dict[str, Any]]:
    """Every clock that announced itself within its TTL, with `run_scheduler` and `leading`."""
    return [_decode(values) for values in presence.live_entries(client, INDEX_KEY)]


def _decode(values: dict[str, str]) -> dict[str, Any]:
    return {
        "holder": values.get("holder"),
        "run_scheduler": values.get("run_scheduler") == "1",
        "leading": values.get("leading") == "1",
        "epoch": int(values["epoch"]) if values.get("epoch") else None,
        "started_at": values.get("started_at"),
        "seen_at": values.get("seen_at"),
    }
