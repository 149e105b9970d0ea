"""The operator's board: every live campaign (and the last finished ones) with its progress,
across shops. Read by `/ops/state` and `astronote status`; admin only."""

from __future__ import annotations

from typing import Any

from peewee import Case, Select, fn

from models import Campaign, CreditReservation, Shop
from service import recipient_counts
from service.observability.health import HealthChecker

RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped")


def _newest(statuses: tuple[str, ...], limit: int) -> Select:
    return (
        Campaign.select(Campaign.id)
        .where(Campaign.status.in_(statuses))
        .order_by(Campaign.id.desc())
        .limit(limit)
    )


def campaign_board(
    sending_limit: int = 50, waiting_limit: int = 20, finished_limit: int = 10
) -> list[dict[str, Any]]:
    """Campaigns sending (first: they move), then paused and scheduled ones, then the last
    finished ones, newest first within each, each with its recipients counted by status."""
    # One newest-first top-N per group of statuses, then one join for all of them.
    shown = (
        _newest(("sending",), sending_limit)
        + _newest(("paused", "scheduled"), waiting_limit)
        + _newest(("completed", "failed", "cancelled"), finished_limit)
    ).cte("shown")
    group = Case(Campaign.status, [("sending", 0), ("paused", 1), ("scheduled", 2)], 3)
    keys = (
        "id",
        "shop_id",
        "shop",
        "name",
        "status",
        "status_reason",
        "scheduled_at",
        "started_at",
        "finished_at",
        "last_progress_at",
    )
    rows = (
        Campaign.select(
            Campaign.id,
            Campaign.shop,
            Shop.domain,
            Campaign.name,
            Campaign.status,
            Campaign.status_reason,
            Campaign.scheduled_at,
            Campaign.started_at,
            Campaign.finished_at,
            Campaign.last_progress_at,
        )
        .join(Shop)
        .where(Campaign.id.in_(shown.select(shown.c.id)))
        .order_by(group, Campaign.id.desc())
        .with_cte(shown)
        .tuples()
    )
    board = [dict(zip(keys, row)) for row in rows]
    counts = _recipient_counts([campaign["id"] for campaign in board])
    for campaign in board:
        by_status = counts.get(campaign["id"], {})
        campaign["counts"] = {status: by_status.get(status, 0) for status in RECIPIENT_STATUSES}
        total = sum(campaign["counts"].values())
        done = total - campaign["counts"]["pending"] - campaign["counts"]["sending"]
        campaign.update(
            total=total, done=done, percent=round(100 * done / total, 1) if total else 0.0
        )
    return board


def _recipient_counts(campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    # The counters of `service.recipient_counts`, one statement for every campaign shown:
    # counting recipients read every row of a 1,000,000-recipient campaign each second.
    return {
        campaign_id: counts["status"]
        for campaign_id, counts in recipient_counts.for_campaigns(campaign_ids).items()
    }


def operator_state(checker: HealthChecker) -> dict[str, Any]:
    """`/health/full` plus the campaign board; the board is empty if PostgreSQL is down."""
    health = checker.full()
    campaigns: list[dict[str, Any]] = []
    if health["dependencies"]["postgresql"] == "ok":
        try:
            campaigns = campaign_board()
        except Exception:  # noqa: BLE001 - the health part already says what is down
            campaigns = []
    stuck = {c["id"] for c in health.get("campaigns", {}).get("stuck", [])}
    for campaign in campaigns:
        campaign["stuck"] = campaign["id"] in stuck
    return {"health": health, "campaigns": campaigns}


def credits_debited() -> int:
    """Credits debited for accepted messages, all shops (each campaign's reservation counts
    exactly the debit rows its sends inserted): one row per campaign, not per message."""
    return int(
        CreditReservation.select(fn.COALESCE(fn.SUM(CreditReservation.consumed), 0)).scalar()
    )
