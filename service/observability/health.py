"""What `/readiness` and `/health/full` report (SPEC 8), and why the system is not ok.

`readiness()` answers whether this process can serve: PostgreSQL and Redis answer, and RabbitMQ
too when it is the broker (BROKER_URL). It is public, so it names the dependency that is down
and nothing else; the error goes to the log.
`full()` answers whether the *system* works: a worker consumes every queue, a clock leads, no
campaign is stuck. Each of those failures has a reason an operator can act on; the seed's
campaign sat in `sending` for hours because nobody consumed `sms-send` and nothing said so.
Campaigns paused for long are listed too, without making `ok` false (a merchant's choice).

Cheap by construction (p95 well under 50 ms with 100,000 waiting messages, see bench/health.py):
queue counts are one Lua round trip of O(1) reads (on RabbitMQ, three passive declares per
queue), workers and clocks are small indexed sets, and the database part is three queries on the
`campaign` table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from peewee import SQL, fn

from models import Campaign, SendBatch
from models.database import fetchall
from models.expressions import epoch_seconds, milliseconds_ago
from service.infra import dispatch
from service.infra import queues as queue_counts
from service.infra.config import Settings
from service.observability import scheduler_state, workers

log = logging.getLogger("astronote.health")

# How many stuck campaigns are listed (and named in the reasons); the count is always exact.
STUCK_LISTED = 50
STUCK_NAMED = 5


def describe(error: BaseException) -> str:
    """One line: the exception's type and the start of its message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _probe(check: Callable[[], Any]) -> str | None:
    try:
        check()
    except Exception as error:  # noqa: BLE001 - any failure means the dependency is down
        return describe(error)
    return None


# A worker up this long has had time to attach its consumers to RabbitMQ.
CONSUMER_SETTLE_S = 30


class HealthChecker:
    """Reads the state of the whole system from PostgreSQL and Redis; needs no other process."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        queues: Sequence[str] = dispatch.QUEUES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.client = client
        self.queues = tuple(queues)
        self.clock = clock
        self.counter = queue_counts.counter_for(settings, client)
        # The broker as a dependency of its own, when it is not the Redis above.
        self.broker = "rabbitmq" if settings.broker_url else None

    # --- readiness -------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        """`{ok, down: [dependency], reason}`: PostgreSQL and Redis answer. The answer names
        what is down, never the error (it may hold a host name or a DSN): that is logged."""
        errors = {
            name: error
            for name, error in (
                # A round trip that reads no table: whether PostgreSQL answers, nothing more.
                ("postgresql", _probe(lambda: fetchall("SELECT 1"))),
                ("redis", _probe(self.client.ping)),
                *([(self.broker, _probe(self.counter.ping))] if self.broker else []),
            )
            if error
        }
        for name, error in errors.items():
            log.warning("dependency down", extra={"dependency": name, "error": error})
        down = list(errors)
        reason = "; ".join(f"{name} is down" for name in down)
        return {"ok": not down, "down": down, **({"reason": reason} if down else {})}

    # --- the whole system ------------------------------------------------------------------
    def full(self) -> dict[str, Any]:
        """The system as an operator needs it; `ok` false with a reason for each problem."""
        began = time.perf_counter()
        problems: list[str] = []
        dependencies = {
            "postgresql": "ok",
            "redis": "ok",
            **({self.broker: "ok"} if self.broker else {}),
        }
        report: dict[str, Any] = {}
        try:
            report.update(self._redis_sections())
        except redis.RedisError as error:
            dependencies["redis"] = describe(error)
            problems.append(
                f"redis is down ({describe(error)}): workers, queues and the "
                "scheduler lock cannot be read, and nothing can be published"
                if not self.broker
                else f"redis is down ({describe(error)}): workers and the scheduler "
                "lock cannot be read, and no clock can lead"
            )
            report.update(
                {
                    name: {"error": dependencies["redis"]}
                    for name in ("scheduler", "workers", "queues")
                }
            )
        if self.broker:
            report["queues"] = self._broker_queues(dependencies, problems)
        try:
            report["campaigns"] = self._campaigns()
            if "jobs" in report["scheduler"] and not report["scheduler"]["jobs"]:
                # Redis flushed since the leader's last run: the database keeps every run.
                report["scheduler"]["jobs"] = scheduler_state.latest_from_database()
        except Exception as error:  # noqa: BLE001 - any database failure: say so, never a 500
            dependencies["postgresql"] = describe(error)
            problems.append(f"postgresql is down ({describe(error)})")
            report["campaigns"] = {"error": dependencies["postgresql"]}
        problems += self._problems(report)
        return {
            "ok": not problems,
            "problems": problems,
            "checked_at": self.clock().isoformat(),
            "dependencies": dependencies,
            **report,
            "took_ms": round((time.perf_counter() - began) * 1000, 1),
        }

    def _redis_sections(self) -> dict[str, Any]:
        queues = {} if self.broker else {"queues": self.counter.counts(self.queues)}
        live = workers.live_workers(self.client, self.clock())
        consumers = {queue: sum(1 for w in live if queue in w["queues"]) for queue in self.queues}
        return {
            "scheduler": scheduler_state.snapshot(self.client),
            "workers": {"live": len(live), "consumers": consumers, "processes": live},
            **queues,
        }

    def _broker_queues(self, dependencies: dict[str, str], problems: list[str]) -> dict:
        """Queue counts from RabbitMQ; `active` is None there (unacknowledged messages are
        not visible over AMQP: see service/infra/rabbitmq.py)."""
        try:
            return self.counter.counts(self.queues)
        except Exception as error:  # noqa: BLE001 - any broker failure: say so, never a 500
            broker = self.broker or "broker"
            log.warning("dependency down", extra={"dependency": broker, "error": describe(error)})
            dependencies[broker] = describe(error)
            problems.append(
                f"{broker} is down ({describe(error)}): queues cannot be read"
                " and nothing can be published"
            )
            return {"error": dependencies[broker]}

    def _campaigns(self) -> dict[str, Any]:
        by_status = dict(
            Campaign.select(Campaign.status, fn.COUNT(SQL("*"))).group_by(Campaign.status).tuples()
        )
        threshold_ms = self.settings.stuck_campaign_after_ms
        # A campaign that never progressed is measured from its start (enqueue sets both);
        # one whose recipients wait for quiet hours to end, from their latest opening.
        idle_since = fn.GREATEST(
            fn.COALESCE(Campaign.last_progress_at, Campaign.started_at), waiting_until()
        )
        idle_ms = (epoch_seconds(fn.now() - idle_since) * 1000).cast("bigint")
        rows = list(
            Campaign.select(
                Campaign.id,
                Campaign.shop,
                Campaign.started_at,
                Campaign.last_progress_at,
                idle_ms.alias("idle_ms"),
                fn.COUNT(SQL("*")).over().alias("stuck"),
            )
            .where((Campaign.status == "sending") & (idle_since < milliseconds_ago(threshold_ms)))
            .order_by(idle_since)
            .limit(STUCK_LISTED)
            .tuples()
        )
        # Ids only: operators see this (and `/metrics`), campaign names are the merchants'.
        keys = ("id", "shop_id", "started_at", "last_progress_at", "idle_ms")
        return {
            "by_status": by_status,
            "stuck_after_ms": threshold_ms,
            "stuck_count": rows[0][-1] if rows else 0,
            "stuck": [dict(zip(keys, row[:-1])) for row in rows],
            **self._long_paused(),
        }

    def _long_paused(self) -> dict[str, Any]:
        """Campaigns paused for longer than PAUSED_CAMPAIGN_ALERT_MS. Listed, but not a reason
        for `ok: false`: a pause is the merchant's choice, and nothing in the system is
        broken; an operator may still want to ask about one that holds its credits for days."""
        threshold_ms = self.settings.paused_campaign_alert_ms
        # Pausing is a paused campaign's last update (its answers in flight write progress
        # only), so `updated_at` is when it was paused.
        paused_ms = (epoch_seconds(fn.now() - Campaign.updated_at) * 1000).cast("bigint")
        rows = list(
            Campaign.select(
                Campaign.id,
                Campaign.shop,
                Campaign.updated_at,
                paused_ms.alias("paused_ms"),
                fn.COUNT(SQL("*")).over().alias("count"),
            )
            .where(
                (Campaign.status == "paused")
                & (Campaign.updated_at < milliseconds_ago(threshold_ms))
            )
            .order_by(Campaign.updated_at)
            .limit(STUCK_LISTED)
            .tuples()
        )
        keys = ("id", "shop_id", "paused_since", "paused_ms")
        return {
            "paused_alert_after_ms": threshold_ms,
            "long_paused_count": rows[0][-1] if rows else 0,
            "long_paused": [dict(zip(keys, row[:-1])) for row in rows],
        }

    def _problems(self, report: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        if "error" not in report.get("workers", {"error": True}):
            queues = report.get("queues", {})
            problems += self._worker_problems(
                report["workers"], {} if "error" in queues else queues
            )
        if "error" not in report.get("scheduler", {"error": True}):
            problems += scheduler_state.problems(report["scheduler"])
        campaigns = report.get("campaigns", {})
        if campaigns.get("stuck_count"):
            problems.append(self._stuck_problem(campaigns))
        return problems

    def _worker_problems(self, state: dict[str, Any], queues: dict[str, dict]) -> list[str]:
        if not state["live"]:
            waiting = sum(counts["waiting"] + counts["delayed"] for counts in queues.values())
            return [
                f"no live worker process: nothing consumes {', '.join(self.queues)}"
                f" ({waiting} messages waiting; none is registered: none runs, or Redis lost"
                " the registrations and a running worker registers again within seconds)"
            ]
        problems = [
            f"no live worker consumes queue {queue}"
            f" ({queues.get(queue, {}).get('waiting', 0)} messages waiting)"
            for queue, count in state["consumers"].items()
            if not count
        ]
        # RabbitMQ counts the consumers it has: a worker registered in Redis that cannot reach
        # the broker (wrong password or vhost, retried for ever) consumes nothing. A probe saw
        # `ok: true` with three campaigns waiting on `consumers: 0`.
        # Only workers up for a while count: one just started registers before its consumers
        # have connected (a restart or a deploy would read as this problem for seconds).
        settled = [w for w in state["processes"] if (w.get("age_s") or 0) >= CONSUMER_SETTLE_S]
        problems += [
            f"no consumer is attached to queue {queue} at the broker though {serving} live"
            f" worker(s) serve it ({queues[queue].get('waiting', 0)} messages waiting): they"
            " cannot reach it (BROKER_URL's credentials or vhost?)"
            for queue in state["consumers"]
            if (serving := sum(1 for w in settled if queue in w["queues"]))
            and queues.get(queue, {}).get("consumers") == 0
        ]
        return problems

    @staticmethod
    def _stuck_problem(campaigns: dict[str, Any]) -> str:
        named = ", ".join(
            f"{c['id']} (shop {c['shop_id']}, idle {c['idle_ms'] // 1000} s)"
            for c in campaigns["stuck"][:STUCK_NAMED]
        )
        more = campaigns["stuck_count"] - min(STUCK_NAMED, len(campaigns["stuck"]))
        return (
            f"{campaigns['stuck_count']} campaign(s) stuck in sending with no progress for"
            f" over {campaigns['stuck_after_ms'] // 1000} s: {named}"
            + (f" and {more} more" if more > 0 else "")
        )


def waiting_until() -> Any:
    """The latest opening of the campaign's recipients waiting for quiet hours (NULL when
    none wait): a campaign idle until then is waiting, not stuck."""
    return SendBatch.select(
        fn.MAX(fn.COALESCE(SendBatch.waiting_until, SendBatch.not_before))
    ).where(
        (SendBatch.campaign == Campaign.id)
        & (SendBatch.state != "finished")
        & (SendBatch.waiting > 0)
    )
