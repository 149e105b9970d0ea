"""Delivery reports and campaign finalisation (SPEC 4.8).

Reports land in the `delivery_report` inbox as received and are applied to recipients by
provider message id, idempotently: a report for a message not yet persisted waits in the inbox
and is applied once the message id is known, and a status never moves to a lower rank
(`delivery_rank()` in SQL), so duplicates and out-of-order reports change nothing.
"""
from __future__ import annotations

from typing import Any, Sequence

from models.database import db, execute, execute_many, fetchone
from service import credits

DELIVERY_STATUSES = ("Queued", "Sent", "Delivered", "Undelivered", "Failed", "Expired")

_APPLY = """
WITH matched AS (
    SELECT d.id AS report_id, r.id AS recipient_id, d.status, d.reported_at,
           delivery_rank(d.status) AS rank
    FROM delivery_report d
    JOIN campaign_recipient r ON r.mitto_message_id = d.provider_id
    WHERE d.applied_at IS NULL AND d.provider_id IS NOT NULL {scope}
    LIMIT %(limit)s
), best AS (
    SELECT DISTINCT ON (recipient_id) recipient_id, status, reported_at, rank
    FROM matched ORDER BY recipient_id, rank DESC, report_id DESC
), moved AS (
    UPDATE campaign_recipient r
    SET delivery_status = best.status, delivery_at = coalesce(best.reported_at, now()),
        updated_at = now()
    FROM best
    WHERE r.id = best.recipient_id AND best.rank > delivery_rank(r.delivery_status)
    RETURNING r.id
)
UPDATE delivery_report SET applied_at = now()
WHERE id IN (SELECT report_id FROM matched)
"""


def record_reports(reports: Sequence[dict[str, Any]]) -> int:
    """Store validated reports in the inbox and apply those whose message is known.
    Returns how many reports were applied now (the rest wait for their message)."""
    rows = [(r.get("id"), r.get("reference"), r.get("to"), r["deliveryStatus"],
             r.get("statusCode"), r.get("timestamp")) for r in reports]
    with db.atomic():
        ids = [row[0] for row in execute_many(
            "INSERT INTO delivery_report (provider_id, reference, \"to\", status, status_code,"
            " reported_at) VALUES %s RETURNING id", rows, fetch=True)]
        return apply_reports(report_ids=ids)


def apply_reports(campaign_id: int | None = None, report_ids: Sequence[int] | None = None,
                  limit: int = 50_000) -> int:
    """Apply waiting reports (of one campaign, or the given reports) to their recipients."""
    scope, params = "", {"limit": limit}
    if campaign_id is not None:
        scope += " AND r.campaign_id = %(campaign)s"
        params["campaign"] = campaign_id
    if report_ids is not None:
        scope += " AND d.id = ANY(%(ids)s)"
        params["ids"] = list(report_ids)
    return execute(_APPLY.format(scope=scope), params)


def finalize_campaign(campaign_id: int) -> str | None:
    """Finish a `sending` campaign with nothing pending or in flight: `completed` if at least
    one message was sent, else `failed`; set `finished_at`, release the reservation. Returns
    the new status, or None when the campaign is not ready (or already final)."""
    with db.atomic():
        row = fetchone(
            "UPDATE campaign c SET"
            " status = CASE WHEN sent.any THEN 'completed' ELSE 'failed' END,"
            " status_reason = CASE WHEN sent.any THEN NULL ELSE 'no message was sent' END,"
            " finished_at = now(), last_progress_at = now(), updated_at = now()"
            " FROM (SELECT EXISTS (SELECT 1 FROM campaign_recipient"
            "       WHERE campaign_id = %(c)s AND status = 'sent') AS any) AS sent"
            " WHERE c.id = %(c)s AND c.status = 'sending' AND NOT EXISTS ("
            "   SELECT 1 FROM campaign_recipient WHERE campaign_id = %(c)s"
            "   AND status IN ('pending', 'sending'))"
            " RETURNING c.status", {"c": campaign_id})
        if row is None:
            return None
        credits.release(campaign_id)
        execute("UPDATE send_batch SET state = 'finished', finished_at = now()"
                " WHERE campaign_id = %s AND state <> 'finished'", (campaign_id,))
    return row[0]


def refresh_campaign(campaign_id: int) -> str | None:
    """`updateCampaignStatus`: apply the campaign's waiting reports, then try to finalise."""
    apply_reports(campaign_id=campaign_id)
    return finalize_campaign(campaign_id)
