"""The clock's state as `/health/full` shows it (SPEC 8): no process of the clock is needed.

    {"lock": {exists, ttl_ms, holder, epoch},
     "clocks": [{holder, run_scheduler, leading, epoch, started_at, seen_at}, ...],
     "run_scheduler": {holder: bool, ...},
     "jobs": {name: {slot, epoch, holder, started_at, duration_ms, ok, result}, ...}}

Everything comes from Redis (a few commands, no scan). After a Redis flush the jobs' hash is
empty until the leader's next run; `runs.latest_from_database(JOB_NAMES)` has them meanwhile.
"""
from __future__ import annotations

from typing import Any

import redis

from scheduler import registry, runs
from scheduler.leader import read_lock


def snapshot(client: redis.Redis) -> dict[str, Any]:
    clocks = registry.live_clocks(client)
    return {"lock": read_lock(client), "clocks": clocks,
            "run_scheduler": {clock["holder"]: clock["run_scheduler"] for clock in clocks},
            "jobs": runs.latest_from_redis(client)}


def problems(state: dict[str, Any]) -> list[str]:
    """Why the clock makes the system not ok: nobody leads (say why if we can tell)."""
    if state["lock"]["exists"]:
        return []
    if state["clocks"] and not any(clock["run_scheduler"] for clock in state["clocks"]):
        return ["no scheduler leader: every live clock has RUN_SCHEDULER=false"]
    if not state["clocks"]:
        return ["no scheduler leader: no clock process is running"]
    return ["no scheduler leader holds the lock"]
