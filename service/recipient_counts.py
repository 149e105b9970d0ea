"""A campaign's recipients counted by status and delivery status without reading them (SPEC 12).

Triggers on `campaign_recipient` (migration 0011) append, for every statement that inserts,
updates or deletes recipients, one `campaign_recipient_delta` row per campaign it touched with
the change of each count; every code path (creation, claims, persists, reports, evidence,
cancel, erasure, repairs) is counted in that one place. `fold` (the clock's reconcile) moves
the deltas into one `campaign_recipient_total` row per campaign. A reader sums a campaign's
total and its deltas not folded yet: rows bounded by the statements of one reconcile
interval, not by the campaign's audience (progress of a 1,000,000-recipient campaign read
1,000,000 rows before).
"""

from __future__ import annotations

from collections.abc import Sequence

from peewee import SQL, ColumnBase

from models.database import execute, fetchall

RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped")
# Delivery status -> its column (the six statuses of `delivery_rank()`).
DELIVERY_COLUMNS = {
    "Queued": "queued",
    "Sent": "delivery_sent",
    "Delivered": "delivered",
    "Undelivered": "undelivered",
    "Failed": "delivery_failed",
    "Expired": "expired",
}
COLUMNS = (*RECIPIENT_STATUSES, *DELIVERY_COLUMNS.values())
_LIST = ", ".join(COLUMNS)
_SUMS = ", ".join(f"sum({column})::bigint" for column in COLUMNS)

# Deltas folded per statement: a fold is one bounded transaction however far behind it is.
FOLD_LIMIT = 100_000


def for_campaigns(campaign_ids: Sequence[int]) -> dict[int, dict[str, dict[str, int]]]:
    """{campaign id: {"status": {status: n}, "delivery": {delivery status: n}}} for the given
    campaigns (one statement; a campaign without recipients is absent). Delivery statuses
    counted zero are left out, as a count of the recipients would leave them out."""
    ids = list(campaign_ids)
    if not ids:
        return {}
    rows = fetchall(
        f"SELECT campaign_id, {_SUMS} FROM ("
        f"  SELECT campaign_id, {_LIST} FROM campaign_recipient_total"
        "   WHERE campaign_id = ANY(%(ids)s)"
        "  UNION ALL"
        f"  SELECT campaign_id, {_LIST} FROM campaign_recipient_delta"
        "   WHERE campaign_id = ANY(%(ids)s)"
        ") counts GROUP BY campaign_id",
        {"ids": ids},
    )
    result = {}
    for campaign_id, *values in rows:
        by_column = dict(zip(COLUMNS, values))
        result[campaign_id] = {
            "status": {status: by_column[status] for status in RECIPIENT_STATUSES},
            "delivery": {
                status: by_column[column]
                for status, column in DELIVERY_COLUMNS.items()
                if by_column[column]
            },
        }
    return result


def for_campaign(campaign_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """(counts by status, counts by delivery status) of one campaign."""
    counts = for_campaigns([campaign_id]).get(campaign_id)
    if counts is None:
        return dict.fromkeys(RECIPIENT_STATUSES, 0), {}
    return counts["status"], counts["delivery"]


def counted(campaign_id: int, expression: str) -> ColumnBase:
    """`expression` over the campaign's counts (columns of `COLUMNS`, e.g. `pending +
    sending`), summed: an SQL expression for a statement that must decide on the counts in
    its own snapshot. Read from the counters rather than the recipients: an EXISTS over a
    campaign's recipients stops at the first such row, but those are the last in index order
    once most are sent, so it walked a million rows at every status refresh of a
    million-recipient campaign (SPEC 12)."""
    return SQL(counted_sql("%s", expression), (campaign_id, campaign_id))


def counted_sql(campaign: str, expression: str) -> str:
    """`counted` as SQL text, for the campaign whose id is the SQL `campaign` (a column of
    the outer statement, or a placeholder)."""
    return (
        f"(SELECT coalesce(sum({expression}), 0) FROM ("
        f"  SELECT {_LIST} FROM campaign_recipient_total WHERE campaign_id = {campaign}"
        "  UNION ALL"
        f"  SELECT {_LIST} FROM campaign_recipient_delta WHERE campaign_id = {campaign}"
        ") counts)"
    )


def fold(limit: int = FOLD_LIMIT) -> int:
    """Move up to `limit` deltas, oldest first, into their campaigns' totals; returns how many.
    One statement: a reader sees the deltas or the totals that include them, never both nor
    neither. Two folds at once take disjoint deltas (the second skips those the first
    locked) and update totals in campaign order, so they wait for each other, never deadlock."""
    return execute(
        "WITH taken AS ("
        "  DELETE FROM campaign_recipient_delta WHERE id IN ("
        "    SELECT id FROM campaign_recipient_delta ORDER BY id LIMIT %s"
        "    FOR UPDATE SKIP LOCKED)"
        f"  RETURNING campaign_id, {_LIST})"
        f" INSERT INTO campaign_recipient_total AS t (campaign_id, {_LIST})"
        f" SELECT campaign_id, {_SUMS} FROM taken GROUP BY campaign_id ORDER BY campaign_id"
        " ON CONFLICT (campaign_id) DO UPDATE SET "
        + ", ".join(f"{column} = t.{column} + excluded.{column}" for column in COLUMNS),
        (limit,),
    )
