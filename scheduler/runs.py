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
from peewee import SQL, Select, Value, fn
from psycopg2.extras import Json

from models import JobRun
from models.database import db
from models.expressions import epoch_seconds
from service.observability.scheduler_state import JOBS_KEY

RETENTION_DAYS = 7
# pg_advisory_xact_lock key of the claims (any constant the migrations' lock does not use).
CLAIM_LOCK = 0x6A6F625F72756E  # "job_run"


def claim_slot(job: str, interval_ms: int, epoch: int, holder: str) -> tuple[int, datetime] | None:
    """Claim the current slot of `job` for this epoch; None if it already ran (or a newer
    leader has run anything, so this one must not act)."""
    slot = fn.floor(epoch_seconds(fn.now()) * 1000 / interval_ms).cast("bigint")
    newer_epoch_ran = fn.EXISTS(JobRun.select(SQL("1")).where(JobRun.epoch > epoch))
    # Fencing: the claim's own WHERE refuses the slot once a newer epoch has run anything.
    claim = Select(columns=[Value(job), slot, Value(epoch), Value(holder)]).where(~newer_epoch_ran)
    with db.atomic():
        # Claims take turns: under READ COMMITTED two overlapping leaders' NOT EXISTS would
        # otherwise both look before either inserted, and the older epoch would claim a slot
        # after the newer one's first claim (seen after a Redis flush, where the old leader
        # keeps its lease until its next renewal). A claim is one short statement a few times
        # a minute: waiting for the other's costs nothing.
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
        claimed = list(
            JobRun.insert_from(claim, [JobRun.job, JobRun.slot, JobRun.epoch, JobRun.holder])
            .on_conflict(conflict_target=[JobRun.job, JobRun.slot], action="IGNORE")
            .returning(JobRun.slot, JobRun.started_at)
            .tuples()
        )
    return claimed[0] if claimed else None


def finish(job: str, slot: int, interval_ms: int, ok: bool, result: dict[str, Any]) -> None:
    """Record the outcome, and drop this job's runs older than the retention."""
    (
        JobRun.update(finished_at=fn.now(), ok=ok, result=Json(result, dumps=_dumps))
        .where((JobRun.job == job) & (JobRun.slot == slot))
        .execute()
    )
    (
        JobRun.delete()
        .where(
            (JobRun.job == job) & (JobRun.slot < slot - RETENTION_DAYS * 86_400_000 // interval_ms)
        )
        .execute()
    )


def publish(client: redis.Redis, job: str, summary: dict[str, Any]) -> None:
    client.hset(JOBS_KEY, job, _dumps(summary))


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
