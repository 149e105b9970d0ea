"""The clock process: elect a leader, run the jobs only while leading, report itself.

The main thread runs the election loop: while leading it renews every min(TTL/3, RETRY), as a
standby it retries every RETRY, and it never exits for not leading (a process manager would
take the whole stack down with it). APScheduler runs the jobs in its own threads, paused
unless this clock leads; each run also checks the lease on the monotonic clock first, and
claims its (job, slot) in PostgreSQL, so a leader that was paused past its lease, or two
leaders that overlap anyway, never do a slot's work twice.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee
import psycopg2
import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from playhouse.pool import MaxConnectionsExceeded

from models import database
from scheduler import runs
from scheduler.jobs import Job
from scheduler.leader import Leadership
from scheduler.shutdown import ShutdownSignal
from service.audit import Actor
from service.infra.config import Settings
from service.observability import clocks
from service.observability.scheduler_state import read_lock

log = logging.getLogger("astronote.clock")

UNIX_EPOCH = datetime.fromtimestamp(0, UTC)
# Election rounds in a row (a renewal each, every TTL/3 at most) in which PostgreSQL did not
# answer the leader, before it gives the lock up: a restart of a few seconds does not move it.
DATABASE_ROUNDS = 3


def next_epoch() -> int:
    """The fencing epoch of a new tenure, from a sequence Redis cannot reset."""
    with database.connection():
        return database.fetchone("SELECT nextval('scheduler_epoch')")[0]


def renew_period_s(settings: Settings) -> float:
    return min(settings.scheduler_lock_ttl_ms / 3, settings.scheduler_lock_retry_ms) / 1000


def mid_slot_trigger(interval_ms: int) -> IntervalTrigger:
    """Fire in the middle of each slot `floor(t / interval)`: runs then land in consecutive
    slots even if firing or the database's clock is late or early by up to half an interval."""
    return IntervalTrigger(
        seconds=interval_ms / 1000,
        timezone=UTC,
        start_date=UNIX_EPOCH + timedelta(milliseconds=interval_ms / 2),
    )


def build_scheduler(clock: Clock, jobs: list[Job]) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max(1, len(jobs)))},
        # A run missed while paused or standing by happens once, as soon as we lead.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    for job in jobs:
        scheduler.add_job(
            clock.run_job,
            mid_slot_trigger(job.interval_ms),
            args=(job,),
            id=job.name,
            name=job.name,
        )
    return scheduler


class Clock:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        leadership: Leadership,
        jobs: list[Job],
        stop: ShutdownSignal,
    ) -> None:
        self.settings = settings
        self.client = client
        self.leadership = leadership
        self.holder = leadership.holder
        self.jobs = jobs
        self.stop = stop
        self.started_at = datetime.now(UTC)
        self.leading: bool | None = None  # None until the first election round
        self.database_failures = 0  # rounds in a row, while leading, PostgreSQL did not answer
        self.scheduler = build_scheduler(self, jobs)

    # --- the process -------------------------------------------------------------------------
    def run(self) -> int:
        """Until SIGTERM/SIGINT: elect, run jobs while leading; then hand the lock over."""
        self._log_start()
        if not self.settings.run_scheduler:
            return self._stay_idle()
        self.scheduler.start(paused=True)
        # Listed before the first election: health must never see this clock's lock held by
        # a clock it does not list (the first round's jobs resume before it announces).
        self._announce()
        try:
            while True:
                self._elect()
                self._announce()
                if self.stop.wait(self._period()):
                    break
        finally:
            self._shut_down()
        return 0

    def _log_start(self) -> None:
        log.info(
            "clock started",
            extra={
                "holder": self.holder,
                "run_scheduler": self.settings.run_scheduler,
                "leading": False,
                "lock_ttl_ms": self.settings.scheduler_lock_ttl_ms,
                "lock_retry_ms": self.settings.scheduler_lock_retry_ms,
                "renew_ms": int(renew_period_s(self.settings) * 1000),
                "jobs": {job.name: job.interval_ms for job in self.jobs},
            },
        )

    def _stay_idle(self) -> int:
        """RUN_SCHEDULER=false: keep running and reporting ourselves, never take the lock."""
        log.warning(
            "RUN_SCHEDULER=false: this clock will never take the leader lock nor run "
            "any job; another clock with RUN_SCHEDULER=true must lead",
            extra={
                "holder": self.holder,
                "run_scheduler": False,
                "leading": False,
                "lock": self._lock_state(),
            },
        )
        while True:
            self._announce()
            if self.stop.wait(self.settings.scheduler_lock_retry_ms / 1000):
                break
        self._unregister()
        log.info("clock stopped", extra={"holder": self.holder})
        return 0

    def _period(self) -> float:
        if self.leading:
            return renew_period_s(self.settings)
        return self.settings.scheduler_lock_retry_ms / 1000

    # --- election ----------------------------------------------------------------------------
    def database_answers(self) -> bool:
        try:
            with database.connection():
                database.db.execute_sql("SELECT 1")
            return True
        except MaxConnectionsExceeded:
            return True  # the database is there; this process's connections are all busy
        except (peewee.OperationalError, peewee.InterfaceError, psycopg2.Error):
            return False

    def _elect(self) -> None:
        """One round: take or keep the lock, then follow what we hold. A leader PostgreSQL
        no longer answers (its machine cut off from the database, not from Redis) gives the
        lock up after DATABASE_ROUNDS rounds: every job would fail while it kept renewing in
        Redis, and no standby that reaches the database could take over (a review). A
        standby cut off alike cannot win: the epoch is drawn from PostgreSQL."""
        try:
            self.leadership.acquire()
        except Exception as error:  # noqa: BLE001 - Redis or PostgreSQL away: retry next round
            log.warning(
                "leader election round failed",
                extra={
                    "holder": self.holder,
                    "error": f"{type(error).__name__}: {error}",
                    "lease_remaining_ms": self.leadership.lease_remaining_ms(),
                },
            )
        leading = self.leadership.is_leading()
        # After the renewal, so that a check slow to fail costs no lease.
        if leading and not self.database_answers():
            self.database_failures += 1
            if self.database_failures >= DATABASE_ROUNDS:
                log.warning(
                    "stepping down: PostgreSQL does not answer this clock",
                    extra={"holder": self.holder, "rounds": self.database_failures},
                )
                self.database_failures = 0
                try:
                    self.leadership.release()
                except redis.RedisError:
                    self.leadership.abandon()
                leading = False
        elif leading:
            self.database_failures = 0
        self._follow(leading)

    def _follow(self, leading: bool) -> None:
        """Resume or pause the jobs when leadership changes, and say so."""
        if leading == self.leading:
            return
        first, self.leading = self.leading is None, leading
        if leading:
            self.scheduler.resume()
            log.info(
                "leading: this clock now runs the jobs",
                extra={"holder": self.holder, "leading": True, "epoch": self.leadership.epoch},
            )
            return
        self.scheduler.pause()
        if self.leadership.epoch is not None:
            self.leadership.abandon()  # the lease ran out unrenewed: whatever Redis says later
        lock = self._lock_state()
        extra = {
            "holder": self.holder,
            "leading": False,
            "lock": lock,
            "why": self._why_standby(lock),
        }
        if first:
            log.info("standby: this clock runs no job", extra=extra)
        else:
            log.warning("stepped down: this clock no longer runs jobs", extra=extra)

    def _why_standby(self, lock: dict[str, Any] | str) -> str:
        if isinstance(lock, str):
            return "Redis cannot be reached, so this clock cannot know or take the lock"
        if lock["exists"] and lock["holder"] != self.holder:
            epoch = lock["epoch"] if lock["epoch"] is not None else "being drawn"
            return f"another clock leads: {lock['holder']} (epoch {epoch})"
        retry_ms = self.settings.scheduler_lock_retry_ms
        return f"the lock is free or being taken; this clock retries every {retry_ms} ms"

    def _lock_state(self) -> dict[str, Any] | str:
        try:
            return read_lock(self.client)
        except redis.RedisError as error:
            return f"unknown ({type(error).__name__}: {error})"

    def _announce(self) -> None:
        try:
            clocks.register(
                self.client,
                self.holder,
                3 * self.settings.scheduler_lock_retry_ms,
                self.settings.run_scheduler,
                bool(self.leading),
                self.leadership.epoch if self.leading else None,
                self.started_at,
            )
        except redis.RedisError as error:
            log.warning("could not register this clock", extra={"error": str(error)})

    def _unregister(self) -> None:
        try:
            clocks.unregister(self.client, self.holder)
        except redis.RedisError:
            pass  # the entry expires on its own

    def _shut_down(self) -> None:
        """Stop starting jobs, release the lock at once (a standby takes over within its
        retry period), then let running jobs finish: their effects are safe to overlap."""
        self.scheduler.pause()
        if self.leadership.epoch is not None:
            try:
                released = self.leadership.release()
                log.info(
                    "released the leader lock"
                    if released
                    else "the leader lock was no longer ours; nothing released",
                    extra={"holder": self.holder, "leading": False},
                )
            except redis.RedisError as error:
                log.warning(
                    "could not release the leader lock; it expires with its TTL",
                    extra={"holder": self.holder, "error": str(error)},
                )
        self.scheduler.shutdown(wait=True)
        self._unregister()
        log.info("clock stopped", extra={"holder": self.holder, "leading": False})

    # --- jobs --------------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        """APScheduler's entry: check the lease, claim the slot, run, record."""
        epoch = self.leadership.epoch
        if epoch is None or not self.leadership.lease_valid():
            log.warning(
                "job not run: this clock's lease may have expired",
                extra={
                    "job": job.name,
                    "holder": self.holder,
                    "lease_remaining_ms": self.leadership.lease_remaining_ms(),
                },
            )
            return
        try:
            with database.connection():
                summary = self._claim_and_run(job, epoch)
        except Exception as error:  # noqa: BLE001 - the next slot retries; say why this failed
            log.error(
                "job could not run",
                exc_info=True,
                extra={"job": job.name, "holder": self.holder, "epoch": epoch, "error": str(error)},
            )
            return
        if summary is not None:
            self._publish(job, summary)

    def _claim_and_run(self, job: Job, epoch: int) -> dict[str, Any] | None:
        claimed = runs.claim_slot(job.name, job.interval_ms, epoch, self.holder)
        if claimed is None:
            log.info(
                "job not run: its slot already ran, or a newer leader exists",
                extra={"job": job.name, "holder": self.holder, "epoch": epoch},
            )
            return None
        slot, started_at = claimed
        began = time.monotonic()
        try:
            result, ok = job.run(self.settings, Actor.clock(job.name, epoch)), True
        except Exception as error:  # noqa: BLE001 - recorded in job_run and logged
            log.error("job failed", exc_info=True, extra={"job": job.name, "epoch": epoch})
            result, ok = {"error": f"{type(error).__name__}: {error}"}, False
        runs.finish(job.name, slot, job.interval_ms, ok, result)
        summary = {
            "slot": slot,
            "epoch": epoch,
            "holder": self.holder,
            "started_at": started_at.isoformat(),
            "duration_ms": int((time.monotonic() - began) * 1000),
            "ok": ok,
            "result": result,
        }
        log.info("job ran", extra={"job": job.name, **summary})
        return summary

    def _publish(self, job: Job, summary: dict[str, Any]) -> None:
        try:
            runs.publish(self.client, job.name, summary)
        except redis.RedisError as error:
            log.warning(
                "could not publish the job's run", extra={"job": job.name, "error": str(error)}
            )
