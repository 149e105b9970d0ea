"""Scheduled campaigns and the status refresh: what the clock's jobs do (SPEC 4, 8).

Every effect is a conditional update or goes through `enqueue` (itself conditional on the
campaign being `scheduled`), so two clocks running these at once launch nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from peewee import InterfaceError, OperationalError, Select, Value, fn

from models import Campaign, CampaignRecipient, DeliveryReport
from models.database import db, is_lock_timeout
from models.expressions import epoch_seconds, milliseconds_ago
from service import audit, enqueue
from service.audit import Actor
from service.errors import (
    DependencyUnavailable,
    InsufficientCredits,
    InvalidInput,
    InvalidTransition,
    NoRecipients,
    NotFound,
)
from service.infra import dispatch
from service.infra.config import Settings

log = logging.getLogger("astronote.scheduling")

# Delivery reports keep arriving after a campaign finishes; those that could not be applied
# when they arrived (their message was not persisted yet) are looked for this far back.
REFRESH_REPORTS_WINDOW_HOURS = 24


@dataclass
class LaunchReport:
    launched: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # campaign id -> status_reason
    expired: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # launched or cancelled meanwhile
    errors: dict[int, str] = field(default_factory=dict)  # unexpected: left scheduled

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def database_now() -> datetime:
    return Select(columns=[fn.now()]).scalar(db)


def expire_overdue(grace_ms: int, now: datetime, actor: Actor) -> list[int]:
    """Fail scheduled campaigns more than `grace_ms` past their time: after a long outage a
    merchant's "Friday 9:00 sale" must not go out on Sunday without anyone deciding so."""
    late_s = fn.floor(epoch_seconds(Value(now) - Campaign.scheduled_at)).cast("bigint")
    reason = fn.format(
        "not sent: found %s s after scheduled_at, beyond the %s s grace"
        " (the clock did not launch it in time)",
        late_s,
        Value(grace_ms) / 1000,
    )
    with db.atomic():
        rows = list(
            Campaign.update(
                status="failed", finished_at=fn.now(), updated_at=fn.now(), status_reason=reason
            )
            .where(
                (Campaign.status == "scheduled")
                & (Campaign.scheduled_at < now - timedelta(milliseconds=grace_ms))
            )
            .returning(Campaign.id, Campaign.shop, Campaign.status_reason)
            .tuples()
        )
        audit.record_all(
            actor,
            (
                audit.campaign_status(shop_id, campaign_id, "scheduled", "failed", reason)
                for campaign_id, shop_id, reason in rows
            ),
        )
    for campaign_id, shop_id, reason in rows:
        log.warning(
            "scheduled campaign overdue: failed",
            extra={"campaign_id": campaign_id, "shop_id": shop_id, "reason": reason},
        )
    return [row[0] for row in rows]


def due_campaigns(grace_ms: int, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(campaign id, shop id) of scheduled campaigns whose time has come, oldest first."""
    return list(
        Campaign.select(Campaign.id, Campaign.shop)
        .where(
            (Campaign.status == "scheduled")
            & (Campaign.scheduled_at <= now)
            & (Campaign.scheduled_at >= now - timedelta(milliseconds=grace_ms))
        )
        .order_by(Campaign.scheduled_at, Campaign.id)
        .limit(limit)
        .tuples()
    )


def fail_scheduled(shop_id: int, campaign_id: int, reason: str, actor: Actor) -> bool:
    """scheduled -> failed with `reason`; False if the campaign left `scheduled` meanwhile."""
    with db.atomic():
        failed = (
            Campaign.update(
                status="failed", status_reason=reason, finished_at=fn.now(), updated_at=fn.now()
            )
            .where((Campaign.id == campaign_id) & (Campaign.status == "scheduled"))
            .execute()
        )
        if failed:
            audit.record(
                actor, audit.campaign_status(shop_id, campaign_id, "scheduled", "failed", reason)
            )
    return bool(failed)


def launch(
    shop_id: int,
    campaign_id: int,
    settings: Settings,
    report: LaunchReport,
    actor: Actor,
    now: datetime,
) -> None:
    """Enqueue one due campaign (if still due at `now`); a campaign that cannot be sent
    fails with the reason. Raises only when the broker or the database is unavailable."""
    context = {"campaign_id": campaign_id, "shop_id": shop_id}
    try:
        result = enqueue.enqueue(shop_id, campaign_id, settings, actor, scheduled=True, due_by=now)
    except (InvalidTransition, NotFound):
        # Another clock launched it, it was cancelled, or rescheduled to later meanwhile.
        report.skipped.append(campaign_id)
        return
    except OperationalError as error:
        if not is_lock_timeout(error):
            raise  # the database: the others would fail alike; the next tick retries
        # Rows of this shop held elsewhere (the clock's lock_timeout): its other campaigns
        # and the other shops' are launched meanwhile; this one at the next tick.
        report.errors[campaign_id] = "its rows are locked elsewhere; tried again next tick"
        log.warning("scheduled campaign waits for a lock: next tick", extra=context)
        return
    except (DependencyUnavailable, InterfaceError):
        raise  # the broker or the database: the others would fail alike; the next tick retries
    except (InsufficientCredits, NoRecipients, InvalidInput) as error:
        reason = f"not sent: {error.title.lower()}: {error.description}"
        if fail_scheduled(shop_id, campaign_id, reason, actor):
            report.failed[campaign_id] = reason
            log.warning(
                "scheduled campaign cannot be sent: failed", extra={**context, "reason": reason}
            )
        return
    except Exception as error:  # noqa: BLE001 - one campaign must not stop the others' launch
        # Left scheduled: the next tick tries it again, after the others of this one.
        report.errors[campaign_id] = f"{type(error).__name__}: {error}"
        log.exception("scheduled campaign could not be launched", extra=context)
        return
    report.launched.append(campaign_id)
    log.info(
        "scheduled campaign launched",
        extra={
            **context,
            "recipients": result.recipients,
            "reserved_credits": result.reserved_credits,
        },
    )


def launch_due_campaigns(
    settings: Settings, actor: Actor, now: datetime | None = None, limit: int = 1000
) -> LaunchReport:
    """Launch every scheduled campaign whose time has come (database time unless `now` is
    given); fail those overdue by more than SCHEDULE_GRACE_MS or that cannot be sent. Each
    change is recorded for `actor` (the clock's job and epoch)."""
    now = now or database_now()
    try:
        expired = expire_overdue(settings.schedule_grace_ms, now, actor)
    except OperationalError as error:
        if not is_lock_timeout(error):
            raise
        # An overdue campaign's row held elsewhere: failing them waits for the next tick,
        # launching the due ones does not.
        log.warning("failing overdue campaigns waits for a lock: next tick")
        expired = []
    report = LaunchReport(expired=expired)
    for campaign_id, shop_id in due_campaigns(settings.schedule_grace_ms, now, limit):
        # One campaign failing unexpectedly is tried again at the next tick; the others due
        # are launched meanwhile (it used to abort the job, tick after tick, for every shop).
        launch(shop_id, campaign_id, settings, report, actor, now)
    return report


def campaigns_to_refresh(limit: int = 10_000) -> list[int]:
    """Campaigns still sending, and finished ones with delivery reports waiting to be applied."""
    sending = Campaign.select(Campaign.id).where(Campaign.status == "sending")
    with_waiting_reports = (
        DeliveryReport.select(CampaignRecipient.campaign)
        .join(
            CampaignRecipient, on=(CampaignRecipient.mitto_message_id == DeliveryReport.provider_id)
        )
        .where(
            DeliveryReport.applied_at.is_null()
            & DeliveryReport.provider_id.is_null(False)
            & (
                DeliveryReport.received_at
                > milliseconds_ago(REFRESH_REPORTS_WINDOW_HOURS * 3_600_000)
            )
        )
    )
    return sorted((sending | with_waiting_reports).limit(limit).scalars())


def refresh_statuses(limit: int = 10_000) -> list[int]:
    """Publish `updateCampaignStatus` for every campaign that may need it (the worker also
    publishes after each batch; this is the safety net). Returns the campaigns published."""
    campaign_ids = campaigns_to_refresh(limit)
    for campaign_id in campaign_ids:
        dispatch.publish_status_update(campaign_id)
    return campaign_ids
