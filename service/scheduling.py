"""Scheduled campaigns and the status refresh: what the clock's jobs do (SPEC 4, 8).

Every effect is a conditional update or goes through `enqueue` (itself conditional on the
campaign being `scheduled`), so two clocks running these at once launch nothing twice.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from models.database import execute, fetchall, fetchone
from service.errors import (
    InsufficientCredits,
    InvalidTransition,
    NoRecipients,
    NotFound,
)
from service import enqueue
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def database_now() -> datetime:
    return fetchone("SELECT now()")[0]


def expire_overdue(grace_ms: int, now: datetime) -> list[int]:
    """Fail scheduled campaigns more than `grace_ms` past their time: after a long outage a
    merchant's "Friday 9:00 sale" must not go out on Sunday without anyone deciding so."""
    rows = fetchall(
        "UPDATE campaign SET status = 'failed', finished_at = now(), updated_at = now(),"
        " status_reason = format('not sent: found %%s s after scheduled_at, beyond the'"
        "   || ' %%s s grace (the clock did not launch it in time)',"
        "   floor(extract(epoch FROM %(now)s - scheduled_at))::bigint, %(grace)s / 1000)"
        " WHERE status = 'scheduled'"
        " AND scheduled_at < %(now)s - make_interval(secs => %(grace)s / 1000.0)"
        " RETURNING id, shop_id, status_reason",
        {"now": now, "grace": grace_ms})
    for campaign_id, shop_id, reason in rows:
        log.warning("scheduled campaign overdue: failed", extra={
            "campaign_id": campaign_id, "shop_id": shop_id, "reason": reason})
    return [row[0] for row in rows]


def due_campaigns(grace_ms: int, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(campaign id, shop id) of scheduled campaigns whose time has come, oldest first."""
    return fetchall(
        "SELECT id, shop_id FROM campaign WHERE status = 'scheduled'"
        " AND scheduled_at <= %(now)s"
        " AND scheduled_at >= %(now)s - make_interval(secs => %(grace)s / 1000.0)"
        " ORDER BY scheduled_at, id LIMIT %(limit)s",
        {"now": now, "grace": grace_ms, "limit": limit})


def fail_scheduled(campaign_id: int, reason: str) -> bool:
    """scheduled -> failed with `reason`; False if the campaign left `scheduled` meanwhile."""
    return bool(execute(
        "UPDATE campaign SET status = 'failed', status_reason = %s, finished_at = now(),"
        " updated_at = now() WHERE id = %s AND status = 'scheduled'", (reason, campaign_id)))


def launch(shop_id: int, campaign_id: int, settings: Settings, report: LaunchReport) -> None:
    """Enqueue one due campaign; a campaign that cannot be sent fails with the reason."""
    context = {"campaign_id": campaign_id, "shop_id": shop_id}
    try:
        result = enqueue.enqueue(shop_id, campaign_id, settings, scheduled=True)
    except (InvalidTransition, NotFound):
        report.skipped.append(campaign_id)  # another clock launched it, or it was cancelled
        return
    except (InsufficientCredits, NoRecipients) as error:
        reason = f"not sent: {error.title.lower()}: {error.description}"
        if fail_scheduled(campaign_id, reason):
            report.failed[campaign_id] = reason
            log.warning("scheduled campaign cannot be sent: failed",
                        extra={**context, "reason": reason})
        return
    report.launched.append(campaign_id)
    log.info("scheduled campaign launched", extra={
        **context, "recipients": result.recipients, "reserved_credits": result.reserved_credits})


def launch_due_campaigns(settings: Settings, now: datetime | None = None,
                         limit: int = 1000) -> LaunchReport:
    """Launch every scheduled campaign whose time has come (database time unless `now` is
    given); fail those overdue by more than SCHEDULE_GRACE_MS or that cannot be sent."""
    now = now or database_now()
    report = LaunchReport(expired=expire_overdue(settings.schedule_grace_ms, now))
    for campaign_id, shop_id in due_campaigns(settings.schedule_grace_ms, now, limit):
        launch(shop_id, campaign_id, settings, report)
    return report


def campaigns_to_refresh(limit: int = 10_000) -> list[int]:
    """Campaigns still sending, and finished ones with delivery reports waiting to be applied."""
    rows = fetchall(
        "SELECT id FROM campaign WHERE status = 'sending'"
        " UNION"
        " SELECT r.campaign_id FROM delivery_report d"
        " JOIN campaign_recipient r ON r.mitto_message_id = d.provider_id"
        " WHERE d.applied_at IS NULL AND d.provider_id IS NOT NULL"
        " AND d.received_at > now() - make_interval(hours => %s)"
        " LIMIT %s",
        (REFRESH_REPORTS_WINDOW_HOURS, limit))
    return sorted(row[0] for row in rows)


def refresh_statuses(limit: int = 10_000) -> list[int]:
    """Publish `updateCampaignStatus` for every campaign that may need it (the worker also
    publishes after each batch; this is the safety net). Returns the campaigns published."""
    campaign_ids = campaigns_to_refresh(limit)
    for campaign_id in campaign_ids:
        dispatch.publish_status_update(campaign_id)
    return campaign_ids
