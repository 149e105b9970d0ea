"""The operator's board: every live campaign (and the last finished ones) with its progress,
across shops. Read by `/ops/state` and `astronote status`; admin only."""
from __future__ import annotations

from typing import Any

from models.database import fetchall
from service.observability.health import HealthChecker

RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped")


def campaign_board(sending_limit: int = 50, waiting_limit: int = 20,
                   finished_limit: int = 10) -> list[dict[str, Any]]:
    """Campaigns sending (first: they move), then paused and scheduled ones, then the last
    finished ones, newest first within each, each with its recipients counted by status."""
    keys = ("id", "shop_id", "shop", "name", "status", "status_reason", "scheduled_at",
            "started_at", "finished_at", "last_progress_at")
    rows = fetchall(
        "WITH shown AS ("
        "  (SELECT id FROM campaign WHERE status = 'sending' ORDER BY id DESC LIMIT %(ns)s)"
        "  UNION ALL"
        "  (SELECT id FROM campaign WHERE status IN ('paused', 'scheduled')"
        "   ORDER BY id DESC LIMIT %(nw)s)"
        "  UNION ALL"
        "  (SELECT id FROM campaign WHERE status IN ('completed', 'failed', 'cancelled')"
        "   ORDER BY id DESC LIMIT %(nf)s))"
        " SELECT c.id, c.shop_id, s.domain, c.name, c.status, c.status_reason, c.scheduled_at,"
        "        c.started_at, c.finished_at, c.last_progress_at"
        " FROM campaign c JOIN shop s ON s.id = c.shop_id"
        " WHERE c.id IN (SELECT id FROM shown)"
        " ORDER BY CASE c.status WHEN 'sending' THEN 0 WHEN 'paused' THEN 1"
        "          WHEN 'scheduled' THEN 2 ELSE 3 END, c.id DESC",
        {"ns": sending_limit, "nw": waiting_limit, "nf": finished_limit})
    board = [dict(zip(keys, row)) for row in rows]
    counts = _recipient_counts([campaign["id"] for campaign in board])
    for campaign in board:
        by_status = counts.get(campaign["id"], {})
        campaign["counts"] = {status: by_status.get(status, 0) for status in RECIPIENT_STATUSES}
        total = sum(campaign["counts"].values())
        done = total - campaign["counts"]["pending"] - campaign["counts"]["sending"]
        campaign.update(total=total, done=done,
                        percent=round(100 * done / total, 1) if total else 0.0)
    return board


def _recipient_counts(campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    # One statement for every campaign shown: a correlated count per campaign would let the
    # planner pick a full scan for each when one campaign holds most of the rows.
    counts: dict[int, dict[str, int]] = {}
    for campaign_id, status, count in fetchall(
            "SELECT campaign_id, status, count(*) FROM campaign_recipient"
            " WHERE campaign_id = ANY(%s) GROUP BY campaign_id, status", (campaign_ids,)):
        counts.setdefault(campaign_id, {})[status] = count
    return counts


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
    row = fetchall("SELECT coalesce(sum(consumed), 0) FROM credit_reservation")
    return int(row[0][0])
