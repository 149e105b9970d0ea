"""The clock as health sees it (SPEC 8), read from Redis and PostgreSQL: no clock process needed.

    {"lock": {exists, ttl_ms, holder, epoch},
     "clocks": [{holder, run_scheduler, leading, epoch, started_at, seen_at}, ...],
     "run_scheduler": {holder: bool, ...},
     "jobs": {name: {slot, epoch, holder, started_at, duration_ms, ok, result}, ...}}

The key names are the contract between the clock (`scheduler/`, the writer) and this module
(the reader): `scheduler` imports them from here, never the reverse. After a Redis flush the
jobs' hash is empty until the leader's next run; `latest_from_database(JOB_NAMES)` has them
meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from models.database import fetchall
from service.observability import clocks

LEADER_KEY = "astronote:scheduler:leader"
JOBS_KEY = "astronote:scheduler:jobs"
# The clock's jobs by name; `scheduler.jobs.SCHEDULE` defines one job for each (a test checks).
JOB_NAMES = ("launch_scheduled", "refresh_statuses", "reconcile")


def read_lock(client: redis.Redis, key: str = LEADER_KEY) -> dict[str, Any]:
    """The lock as health shows it: `{exists, ttl_ms, holder, epoch}`."""
    with client.pipeline(transaction=True) as pipe:
        pipe.get(key)
        pipe.pttl(key)
        raw, ttl_ms = pipe.execute()
    if raw is None:
        return {"exists": False, "ttl_ms": None, "holder": None, "epoch": None}
    try:
        value = json.loads(raw)
    except ValueError:
        value = {}
    return {
        "exists": True,
        "ttl_ms": ttl_ms if ttl_ms >= 0 else None,
        "holder": value.get("holder"),
        "epoch": value.get("epoch"),
    }


def latest_from_redis(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The last run of each job as the leader published it (empty after a Redis flush)."""
    return {
        name.decode() if isinstance(name, bytes) else name: json.loads(raw)
        for name, raw in client.hgetall(JOBS_KEY).items()
    }


def latest_from_database(jobs: Sequence[str] = JOB_NAMES) -> dict[str, dict[str, Any]]:
    """The last run of each of `jobs` from `job_run` (survives a Redis flush); one index
    probe per job, however many runs the table keeps.

    SQL: the LATERAL top-1 per job over the (job, slot) primary key is what keeps it one probe
    per job whatever the retention holds (a plain DISTINCT ON / GROUP BY would read every run
    kept). Not measured on its own in bench/RESULTS.md."""
    rows = fetchall(
        "SELECT j.job, r.slot, r.epoch, r.holder, r.started_at, r.finished_at, r.ok, r.result"
        " FROM unnest(%s::text[]) AS j(job) CROSS JOIN LATERAL ("
        "   SELECT * FROM job_run WHERE job_run.job = j.job ORDER BY slot DESC LIMIT 1) r",
        (list(jobs),),
    )
    keys = ("slot", "epoch", "holder", "started_at", "finished_at", "ok", "result")
    return {row[0]: dict(zip(keys, row[1:])) for row in rows}


def snapshot(client: redis.Redis) -> dict[str, Any]:
    live = clocks.live_clocks(client)
    return {
        "lock": read_lock(client),
        "clocks": live,
        "run_scheduler": {clock["holder"]: clock["run_scheduler"] for clock in live},
        "jobs": latest_from_redis(client),
    }


def problems(state: dict[str, Any]) -> list[str]:
    """Why the clock makes the system not ok: nobody leads (say why if we can tell)."""
    if state["lock"]["exists"]:
        return []
    if state["clocks"] and not any(clock["run_scheduler"] for clock in state["clocks"]):
        return ["no scheduler leader: every live clock has RUN_SCHEDULER=false"]
    if not state["clocks"]:
        # Registrations live in Redis: a flushed Redis reads alike for a few seconds (a probe
        # saw "no clock process is running" beside two running clocks).
        return [
            "no scheduler leader: no clock process is registered (none runs, or Redis lost"
            " the registrations: a running clock registers again within seconds)"
        ]
    return ["no scheduler leader holds the lock"]
