"""The record of job runs: claimed per (job, slot) in PostgreSQL, summarised in Redis.

A slot is `floor(database time in ms / interval)`. Claiming it is one INSERT, so two leaders
that overlap (a paused one waking up, a partition) run each slot once; and an older epoch may
claim nothing once a newer one has run a job (fencing). The latest run of each job is also
kept in the Redis hash `astronote:scheduler:jobs` for `/health/full` and operators.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis
from psycopg2.extras import Json

from models.database import execute, fetchone
from service.observability.scheduler_state import JOBS_KEY

RETENTION_DAYS = 7


def claim_slot(job: str, interval_ms: int, epoch: int, holder: str) -> tuple[int, datetime] | None:
    """Claim the current slot of `job` for this epoch; None if it already ran (or a newer
    leader has run anything, so this one must not act)."""
    return fetchone(
        "INSERT INTO job_run (job, slot, epoch, holder)"
        " SELECT %(job)s, floor(extract(epoch FROM now()) * 1000 / %(interval)s)::bigint,"
        "        %(epoch)s, %(holder)s"
        " WHERE NOT EXISTS (SELECT 1 FROM job_run WHERE epoch > %(epoch)s)"
        " ON CONFLICT (job, slot) DO NOTHING"
        " RETURNING slot, started_at",
        {"job": job, "interval": interval_ms, "epoch": epoch, "holder": holder})


def finish(job: str, slot: int, interval_ms: int, ok: bool, result: dict[str, Any]) -> None:
    """Record the outcome, and drop this job's runs older than the retention."""
    execute("UPDATE job_run SET finished_at = now(), ok = %s, result = %s"
            " WHERE job = %s AND slot = %s", (ok, Json(result, dumps=_dumps), job, slot))
    execute("DELETE FROM job_run WHERE job = %s AND slot < %s",
            (job, slot - RETENTION_DAYS * 86_400_000 // interval_ms))


def publish(client: redis.Redis, job: str, summary: dict[str, Any]) -> None:
    client.hset(JOBS_KEY, job, _dumps(summary))


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
