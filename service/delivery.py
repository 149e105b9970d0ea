"""Delivery reports and campaign finalisation (SPEC 4.8).

Reports land in the `delivery_report` inbox as received (`service.report_inbox`) and are
applied to recipients by provider message id, idempotently: a report for a message not yet
persisted waits in the inbox and is applied once the message id is known, and a status never
moves to a lower rank (`delivery_rank()` in SQL), so duplicates and out-of-order reports change
nothing. Between two final statuses of one rank (Delivered, then Failed) the first received
stays, whether the two are applied in one pass or in two. A report naming by reference a
recipient whose outcome is unknown is evidence that the provider has the message: the applier
makes it `sent` with its debit (`service.evidence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peewee import Case, Select, fn

from models import Campaign, CreditReservation, SendBatch
from models.database import db, execute, fetchone, planned_on_indexes, retry_conflicts
from models.expressions import audience_created
from service import audit, recipient_counts, reservations
from service.audit import Actor
from service.infra.config import Settings
from service.infra.faults import fault_point

DELIVERY_STATUSES = ("Queued", "Sent", "Delivered", "Undelivered", "Failed", "Expired")
# A campaign that ends with no message known sent. Not "no message was sent": messages of unknown
# outcome may have been (their credits stay held until a report settles them or it expires).
NONE_SENT = "no message is known to have been sent"

# The recipients to move are locked in id order before any is updated: appliers and status
# refreshes running at once then wait for each other instead of deadlocking.
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
    FROM matched ORDER BY recipient_id, rank DESC, report_id ASC
), locked AS (
    SELECT r.id FROM campaign_recipient r JOIN best ON best.recipient_id = r.id
    WHERE best.rank > delivery_rank(r.delivery_status)
    ORDER BY r.id
    FOR UPDATE OF r
), moved AS (
    UPDATE campaign_recipient r
    SET delivery_status = best.status,
        -- The provider's time of the event, unless it cannot be one (the future, or before
        -- any message of ours could be alive: a provider's clock or a hostile post).
        delivery_at = CASE WHEN best.reported_at BETWEEN now() - interval '30 days'
                                                     AND now() + interval '5 minutes'
                           THEN best.reported_at ELSE now() END,
        updated_at = now()
    FROM best
    WHERE r.id = best.recipient_id AND r.id IN (SELECT id FROM locked)
      AND best.rank > delivery_rank(r.delivery_status)
    RETURNING r.id
)
UPDATE delivery_report SET applied_at = now()
WHERE id IN (SELECT report_id FROM matched)
"""


def apply_reports(
    campaign_id: int | None = None, report_ids: Sequence[int] | None = None, limit: int = 50_000
) -> int:
    """Apply stored reports (of one campaign, or the given reports) whose message is known to
    their recipients; returns how many reports were applied. A campaign's refresh takes only
    reports the applier has examined (`service.report_inbox`): the others are the applier's,
    which holds them locked while it works.

    SQL: one writable CTE matches reports to recipients by message id, keeps the best report
    per recipient (DISTINCT ON), moves a status only to a higher `delivery_rank()` and marks
    the reports applied, in one statement (figures in bench/RESULTS.md)."""
    scope = ""
    params: dict[str, Any] = {"limit": limit}
    if campaign_id is not None:
        scope += " AND r.campaign_id = %(campaign)s AND d.examined_at IS NOT NULL"
        params["campaign"] = campaign_id
    if report_ids is not None:
        scope += " AND d.id = ANY(%(ids)s)"
        params["ids"] = list(report_ids)
    return execute(_APPLY.format(scope=scope), params)


def finalize_campaign(campaign_id: int, settings: Settings, actor: Actor) -> str | None:
    """Finish a `sending` campaign whose audience is wholly created (`service.creation`) and
    that has nothing pending or in flight: `completed` if at least
    one message was sent, else `failed`; set `finished_at`, settle the reservation (released,
    or held for its messages of unknown outcome: `service.reservations`). Returns the new
    status, or None when the campaign is not ready (or already final)."""
    # Read from the counters (`service.recipient_counts`), not the recipients: first outside
    # the transaction (a campaign still sending, the usual answer, costs no UPDATE), then
    # in the UPDATE itself, which decides in one snapshot whether anything is left and
    # whether anything was sent (a late persist may still turn an unknown outcome to sent).
    counts, _ = recipient_counts.for_campaign(campaign_id)
    if counts["pending"] or counts["sending"]:
        return None
    # Evaluated once for both CASEs (a FROM item of the UPDATE).
    sent = Select(columns=[(recipient_counts.counted(campaign_id, "sent") > 0).alias("any")]).alias(
        "sent"
    )
    with db.atomic():
        # The row locked in a statement of its own first: the UPDATE then reads the counters
        # in a snapshot taken after a late persist holding the row (`sending.persist_results`
        # turns an unknown outcome to sent, then updates the campaign) has committed. In one
        # statement, PostgreSQL re-checks only the campaign row after the wait and keeps the
        # counters it read before: a review saw a campaign `failed` ("no message is known to
        # have been sent") beside its sent and charged message, and nothing revives it. Locked
        # before such a persist reaches the row, the persist's `complete_failed` revives it.
        if (
            Campaign.select(Campaign.id)
            .where((Campaign.id == campaign_id) & (Campaign.status == "sending"))
            .for_update("FOR NO KEY UPDATE")
            .scalar()
            is None
        ):
            return None
        finished = list(
            Campaign.update(
                status=Case(None, [(sent.c.any, "completed")], "failed"),
                status_reason=Case(None, [(sent.c.any, None)], NONE_SENT),
                finished_at=fn.now(),
                last_progress_at=fn.now(),
                updated_at=fn.now(),
            )
            .from_(sent)
            .where(
                (Campaign.id == campaign_id)
                & (Campaign.status == "sending")
                & audience_created()
                & (recipient_counts.counted(campaign_id, "pending + sending") == 0)
            )
            .returning(Campaign.status, Campaign.shop, Campaign.status_reason)
            .tuples()
        )
        if not finished:
            return None
        status, shop_id, reason = finished[0]
        audit.record(
            actor,
            audit.campaign_status(
                shop_id,
                campaign_id,
                "sending",
                status,
                reason or "every recipient resolved: nothing pending or in flight",
            ),
        )
        fault_point("inside_finalisation")
        reservations.settle(campaign_id, settings, actor)
        (
            SendBatch.update(state="finished", finished_at=fn.now())
            .where((SendBatch.campaign == campaign_id) & (SendBatch.state != "finished"))
            .execute()
        )
    return finished[0][0]


# One chunk of a cancelled campaign's recipients, walked along its (campaign, contact) index:
# the pending ones are skipped. Returns the chunk's last contact id (NULL past the end).
_SKIP_CANCELLED = """
WITH chunk AS (
    SELECT id, contact_id FROM campaign_recipient
    WHERE campaign_id = %(campaign)s AND contact_id > %(after)s
    ORDER BY contact_id
    LIMIT %(size)s
), skipped AS (
    UPDATE campaign_recipient r SET status = 'skipped', error = 'cancelled', updated_at = now()
    FROM chunk WHERE r.id = chunk.id AND r.status = 'pending'
)
SELECT max(contact_id) FROM chunk
"""


@retry_conflicts
def _skip_chunk(campaign_id: int, after: int, size: int) -> int | None:
    with db.atomic(), planned_on_indexes():
        row = fetchone(_SKIP_CANCELLED, {"campaign": campaign_id, "after": after, "size": size})
    return row[0] if row else None


def skip_cancelled(campaign_id: int, chunk_size: int) -> None:
    """Skip a cancelled campaign's pending recipients (nothing will send them), a chunk per
    transaction: a million of them in one UPDATE held the web thread and every row for 10-18 s
    (measured). The cancel has committed before, so no claim takes one meanwhile (a claim
    needs the campaign `sending`); a chunk that meets a claim already under way waits for it,
    and a deadlock against one is run again."""
    after: int | None = 0
    while after is not None:
        after = _skip_chunk(campaign_id, after, chunk_size)


def finalize_cancelled(campaign_id: int, settings: Settings, actor: Actor) -> str | None:
    """A cancelled campaign is over once none of its calls is in flight: anything still
    pending is skipped (nothing will send it) and its reservation settled. Returns
    "cancelled" when that happened now, else None (calls still in flight, or done before)."""
    status = Campaign.select(Campaign.status).where(Campaign.id == campaign_id).scalar()
    if status != "cancelled":
        return None
    # A cancel interrupted between its chunks, a call given back, or an audience chunk that
    # committed beside the cancel leave some pending; the counters say so without a walk.
    pending = recipient_counts.for_campaign(campaign_id)[0].get("pending", 0)
    unsettled = (
        CreditReservation.select()
        .where((CreditReservation.campaign == campaign_id) & (CreditReservation.status == "active"))
        .exists()
    )
    if not unsettled and not pending:
        return None
    if pending:
        skip_cancelled(campaign_id, settings.recipient_chunk_size)
    settled = reservations.settle(campaign_id, settings, actor)
    return "cancelled" if settled in ("held", "released") or not unsettled else None


def refresh_campaign(campaign_id: int, settings: Settings, actor: Actor) -> str | None:
    """`updateCampaignStatus`: apply the campaign's waiting reports, then try to finalise it
    (a cancelled one: settle its reservation once its calls in flight have resolved)."""
    apply_reports(campaign_id=campaign_id)
    return finalize_campaign(campaign_id, settings, actor) or finalize_cancelled(
        campaign_id, settings, actor
    )
