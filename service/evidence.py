"""Provider evidence for messages of unknown outcome (SPEC 4.7).

A recipient's outcome is unknown while its call is in flight or its answer was lost (`sending`),
and after CLAIM_TIMEOUT_MS as `failed` with `unknown_outcome`. A delivery report naming it (by
its reference: the recipient id for `/sms`, the batch key and its number for `/smsbulk`) proves
the provider has the message, so it becomes `sent` with the report's provider id, its debit and
its message log row, exactly as the send would have persisted it (the same text and cost).
Reports resolve unknowns as they are applied (`resolve_reported`, called by the report applier,
`service.report_inbox`); the reconciler resolves what is left.

Evidence counts while the campaign may send and until EVIDENCE_WINDOW_MS after it finished
(the window of `_NAMED`), exactly as long as its reservation holds credits for messages of unknown
outcome (`service.reservations`): a debit that evidence adds always finds credits held for it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from models import Campaign, CampaignRecipient
from models.database import db, fetchall
from service import reservations
from service.audit import Actor
from service.infra.config import Settings
from service.messages import compose_for, load_context
from service.segments import segment_count
from service.sending import Accepted, Claimed, persist_results

log = logging.getLogger("astronote.evidence")

Evidence = tuple[Claimed, str]  # a recipient of unknown outcome, and the provider id named

# The recipients the given (unapplied) reports name, with the provider id each report gives.
# SQL: the two ways a report names a recipient must each reach it through an index (the
# recipient's primary key from a numeric reference; the batch's unique key, then the primary
# keys of its recipients), which a text comparison of `id::text` would not; Peewee has no
# regular-expression CASE nor `= ANY(array column)` join. A bulk report names its number with or
# without the "+", as the provider's bulk answer may (`service.provider._phone_key`).
_NAMED = """
WITH reports AS (
    -- The number as digits, as a provider may write it: "+3069...", "3069...", "003069...",
    -- spaced or dashed (E.164 digits never start with 0); NULL when it has none.
    SELECT id, provider_id, reference,
           NULLIF(ltrim(regexp_replace("to", '[^0-9]', '', 'g'), '0'), '') AS digits
    FROM delivery_report
    WHERE id = ANY(%(ids)s) AND applied_at IS NULL
      AND provider_id IS NOT NULL AND reference IS NOT NULL
), named AS (
    SELECT d.id AS report_id, d.provider_id, r.id AS recipient_id
    FROM reports d
    JOIN campaign_recipient r ON r.id = CASE WHEN d.reference ~ '^[0-9]{1,18}$'
                                             THEN d.reference::bigint END
    -- A report's number, when it has one, is the recipient's: a small integer is easily
    -- some other message's reference (a probe charged a failed recipient on a stranger's).
    -- An erased recipient has no number left to compare: a report with a number is no
    -- evidence for it (unpaid, rather than charged on a stranger's report: a review).
    WHERE d.digits IS NULL OR ltrim(r.phone, '+') = d.digits
    UNION ALL
    SELECT d.id, d.provider_id, r.id
    FROM reports d
    JOIN send_batch b ON b.key = d.reference
    JOIN campaign_recipient r ON r.id = ANY(b.recipient_ids)
                             AND ltrim(r.phone, '+') = d.digits
)
SELECT DISTINCT ON (r.id) r.id, r.contact_id, r.phone, r.country, r.first_name,
       r.campaign_id, r.shop_id, n.provider_id
FROM named n
JOIN campaign_recipient r ON r.id = n.recipient_id
JOIN campaign c ON c.id = r.campaign_id
WHERE r.mitto_message_id IS NULL
  AND (r.status = 'sending' OR (r.status = 'failed' AND r.error = 'unknown_outcome'))
  AND NOT EXISTS (SELECT 1 FROM campaign_recipient o WHERE o.mitto_message_id = n.provider_id)
  AND (c.status IN ('sending', 'paused')
       OR c.finished_at > now() - %(window)s * interval '1 millisecond')
ORDER BY r.id, n.report_id
"""


@dataclass(frozen=True)
class Resolved:
    """Recipients of unknown outcome that reports made `sent`, and their campaigns."""

    count: int
    campaign_ids: frozenset[int]


def resolve_reported(report_ids: Sequence[int], settings: Settings, actor: Actor) -> Resolved:
    """Make `sent` every recipient of unknown outcome that these reports name. A campaign
    whose upgrade fails is logged and left to the reconciler. May run inside the caller's
    transaction (each campaign's upgrade is then a savepoint): the caller publishes the
    campaigns' status updates once it has committed. What it changes is recorded for `actor`.

    Its read (`_NAMED`) is SQL: it reaches a recipient through two indexes, by primary key from
    a numeric reference (`/sms`) and through the batch's unique key then `= ANY(recipient_ids)`
    (`/smsbulk`), and Peewee has neither the regular-expression CASE nor the join on an array
    column. Measured (`bench/sql_choices.py`, 100,000 recipients in batches of 500, 200
    reports half of each kind): 29 ms for all 200, with index scans only (each bulk report reads
    its batch's 500 rows); the naive `r.id::text = reference` join is a sequential scan of
    every recipient (10 ms at 100,000 rows, growing with the table) and finds no bulk report."""
    if not report_ids:
        return Resolved(0, frozenset())
    rows = fetchall(_NAMED, {"ids": list(report_ids), "window": settings.evidence_window_ms})
    by_campaign: dict[tuple[int, int], list[Evidence]] = defaultdict(list)
    for rid, contact_id, phone, country, first_name, campaign_id, shop_id, provider_id in rows:
        by_campaign[(campaign_id, shop_id)].append(
            (Claimed(rid, contact_id, phone, country, first_name), provider_id)
        )
    if len(by_campaign) > 1 and db.in_transaction():
        # The caller's transaction holds each campaign's locks to its commit, the shop's
        # too: taking campaign after campaign with a shop held in between deadlocked with a
        # worker persisting a batch, which locks its campaign, then the shop. So every
        # campaign first, in one order, as every persist takes campaign before shop.
        list(
            Campaign.select(Campaign.id)
            .where(Campaign.id.in_(sorted(campaign_id for campaign_id, _ in by_campaign)))
            .order_by(Campaign.id)
            # NO KEY: a row inserted meanwhile pointing at the campaign (a test send, under
            # its shop's lock) takes KEY SHARE on it, which FOR UPDATE would block.
            .for_update("FOR NO KEY UPDATE")
        )
    resolved = 0
    campaign_ids: set[int] = set()
    for (campaign_id, shop_id), items in sorted(by_campaign.items()):
        try:
            done = persist_evidence(shop_id, campaign_id, items, settings, actor)
        except Exception:  # noqa: BLE001 - the report is stored; the reconciler retries
            log.exception(
                "resolving unknown outcomes by report failed",
                extra={"campaign_id": campaign_id, "shop_id": shop_id},
            )
            continue
        resolved += done
        if done:
            campaign_ids.add(campaign_id)
    return Resolved(resolved, frozenset(campaign_ids))


def persist_evidence(
    shop_id: int, campaign_id: int, items: Sequence[Evidence], settings: Settings, actor: Actor
) -> int:
    """Persist each recipient as the send would have (text, cost, debit, message log) with
    the provider id its evidence names, in one transaction; returns how many.

    Recipients another transaction is changing right now are skipped (SKIP LOCKED): a worker
    persisting its own answer for them resolves them anyway, and whatever stays unknown is
    the reconciler's. A `failed` campaign that now has a sent message is `completed`
    (`finished_at` kept), and the campaign's reservation is settled: a finished campaign's
    hold shrinks to what is still unknown."""
    context = load_context(shop_id, campaign_id, settings)
    if context is None:
        return 0
    with db.atomic():
        unresolved = set(
            CampaignRecipient.select(CampaignRecipient.id)
            .where(
                CampaignRecipient.id.in_([r.id for r, _ in items])
                & CampaignRecipient.mitto_message_id.is_null()
                & (reservations.IN_FLIGHT | reservations.UNKNOWN_OUTCOME)
            )
            .for_update(skip_locked=True)
            .scalars()
        )
        accepted = []
        for recipient, provider_id in items:
            if recipient.id in unresolved:
                text = compose_for(context, recipient, settings)
                accepted.append(
                    Accepted(
                        recipient.id, provider_id, text, segment_count(text), recipient.country
                    )
                )
        if not accepted:
            return 0
        persist_results(
            shop_id,
            campaign_id,
            accepted,
            [],
            revived_because="a delivery report proves a message of unknown outcome was sent",
            actor=actor,
        )
        reservations.settle(campaign_id, settings, actor)
    log.info(
        "unknown outcomes resolved by evidence",
        extra={"campaign_id": campaign_id, "shop_id": shop_id, "sent": len(accepted)},
    )
    return len(accepted)
