"""Repairs for every way a campaign can get stuck (the clock schedules them; SPEC 4.1, 4.7).

Each function is safe to run from two processes at once: its effects are conditional updates,
and what it publishes is harmless twice (a batch sends only what it claims).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from peewee import fn

from models import Campaign, CampaignRecipient, CreditReservation, DeliveryReport, SendBatch
from models.database import db, fetchall, planned_on_indexes
from models.expressions import audience_created, milliseconds_ago
from service import (
    admission,
    creation,
    delivery,
    evidence,
    recipient_counts,
    replies,
    reservations,
    retention,
    test_sends,
)
from service.audit import Actor
from service.infra import dispatch
from service.infra.config import Settings

log = logging.getLogger("astronote.reconcile")


@dataclass
class ReconcileReport:
    resumed_creations: int = 0
    admitted_batches: int = 0
    republished_batches: int = 0
    upgraded_by_evidence: int = 0
    unknown_outcomes: int = 0
    finalized: dict[int, str] = field(default_factory=dict)
    released_reservations: int = 0
    test_sends: int = 0  # test sends failed as unknown outcome, or published again
    abandoned_replies: int = 0  # answers to STOP/START/HELP whose try was lost: queued again
    folded_counts: int = 0
    purged: dict[str, int] = field(default_factory=dict)  # rows past their retention, by kind
    errors: dict[str, str] = field(default_factory=dict)  # repair -> what went wrong


def republish_stale_batches(settings: Settings) -> int:
    """Publish again the unfinished batches of `sending` campaigns that were published long
    ago (a Redis flush, a dead worker). The claim makes a duplicate send nothing twice.
    Batches never published wait for admission (`admit_waiting`), not for this, and so do
    batches parked for quiet hours (`pending`). A `published` batch whose recipients wait
    for quiet hours (a recheck, a throttled delivery) has a message due now, not at their
    opening: it is stale like any other (left alone until its opening, a recheck whose
    message was lost held one of its shop's places all night)."""
    rows = list(
        SendBatch.update(
            state="published", published_at=fn.now(), publish_count=SendBatch.publish_count + 1
        )
        .from_(Campaign)
        .where(
            (Campaign.id == SendBatch.campaign)
            & (Campaign.status == "sending")
            & (SendBatch.state == "published")
            & (SendBatch.published_at < milliseconds_ago(settings.batch_stale_after_ms))
        )
        .returning(SendBatch.campaign, Campaign.shop, SendBatch.recipient_ids)
        .tuples()
    )
    for campaign_id, shop_id, recipient_ids in rows:
        dispatch.publish_batch(campaign_id, shop_id, recipient_ids)
    if rows:
        log.info("republished stale batches", extra={"batches": len(rows)})
    return len(rows)


# Reports read per round of the reconciler's evidence pass.
EVIDENCE_CHUNK = 1000


def upgrade_by_evidence(settings: Settings, actor: Actor) -> int:
    """Recipients whose outcome is unknown (claim timed out, or already failed as
    `unknown_outcome`) but for which a delivery report names them by reference: the provider
    has the message, so they become `sent` with their debit.

    Driven by the reports that could be such evidence (unapplied, with a provider id and a
    reference, through their partial index), each chunk read as the applier reads its own
    (`evidence.resolve_reported`: the same matching, by recipient id and number or by batch
    key and number): the applier resolves most at once, and this is the retry of the rest
    (rows a persist held, a failed upgrade, a claim that timed out since). Driven by the
    recipients it read the whole of `campaign_recipient`, twice a run, whatever its history
    (a review: 0.5-1.3 s a statement at 2,000,000 rows)."""
    # Reports the applier could not resolve at once are retried here within minutes; one
    # older than the evidence window (a day at least) is not read again at every run
    # (strangers' reports stay unapplied until retention deletes them: a review measured
    # 50,000 of them at 0.4 s a run).
    evidence_look_back_ms = max(settings.evidence_window_ms, 86_400_000)
    upgraded = 0
    after = 0
    while True:
        ids = list(
            DeliveryReport.select(DeliveryReport.id)
            .where(
                DeliveryReport.applied_at.is_null()
                & DeliveryReport.provider_id.is_null(False)
                & DeliveryReport.reference.is_null(False)
                & (DeliveryReport.received_at > milliseconds_ago(evidence_look_back_ms))
                & (DeliveryReport.id > after)
            )
            .order_by(DeliveryReport.id)
            .limit(EVIDENCE_CHUNK)
            .scalars()
        )
        if not ids:
            return upgraded
        resolved = evidence.resolve_reported(ids, settings, actor)
        upgraded += resolved.count
        for campaign_id in sorted(resolved.campaign_ids):
            try:
                delivery.apply_reports(campaign_id=campaign_id)
            except Exception:  # noqa: BLE001 - applied at the campaign's next refresh
                log.exception(
                    "applying reports after evidence failed", extra={"campaign_id": campaign_id}
                )
        if len(ids) < EVIDENCE_CHUNK:
            return upgraded
        after = ids[-1]


def fail_unknown_outcomes(settings: Settings) -> int:
    """Claims older than CLAIM_TIMEOUT_MS without evidence: `failed`, reason `unknown_outcome`,
    no debit. Never resent: at most once towards the provider."""
    # A cancelled campaign with calls in flight keeps its reservation active; the others
    # (every one ever cancelled) have none in flight.
    settling = CreditReservation.select(CreditReservation.campaign).where(
        CreditReservation.status == "active"
    )
    open_campaigns = list(
        Campaign.select(Campaign.id)
        .where(
            Campaign.status.in_(("sending", "paused"))
            | ((Campaign.status == "cancelled") & Campaign.id.in_(settling))
        )
        .scalars()
    )
    # Only campaigns whose counters say some are in flight, their rows through the campaign
    # index: the recipients' status has no index, and the whole table was read every run.
    counts = recipient_counts.for_campaigns(open_campaigns)
    in_flight = sorted(
        campaign_id for campaign_id, found in counts.items() if found["status"]["sending"]
    )
    if not in_flight:
        return 0
    with db.atomic(), planned_on_indexes():
        return (
            CampaignRecipient.update(status="failed", error="unknown_outcome", updated_at=fn.now())
            .where(
                CampaignRecipient.campaign.in_(in_flight)
                & (CampaignRecipient.status == "sending")
                & (CampaignRecipient.claimed_at < milliseconds_ago(settings.claim_timeout_ms))
            )
            .execute()
        )


def finalize_idle_campaigns(settings: Settings, actor: Actor) -> dict[int, str]:
    """Finish every `sending` campaign whose audience is wholly created and that has nothing
    pending or in flight."""
    created = list(
        Campaign.select(Campaign.id)
        .where((Campaign.status == "sending") & audience_created())
        .scalars()
    )
    # Read from the counters, not by walking each campaign's recipients (SPEC 12); a campaign
    # without recipients has no counts and is idle too.
    counts = recipient_counts.for_campaigns(created)
    idle = [
        campaign_id
        for campaign_id in created
        if not (
            (found := counts.get(campaign_id))
            and (found["status"]["pending"] or found["status"]["sending"])
        )
    ]
    finished = {}
    for campaign_id in idle:
        status = delivery.refresh_campaign(campaign_id, settings, actor)
        if status:
            finished[campaign_id] = status
    return finished


# A cancelled campaign whose recipients are still pending is looked for this long after its
# cancel: its skip runs within seconds (the worker's, or the next reconcile's).
CANCELLED_PENDING_LOOKBACK = "1 day"


def finalize_cancelled_campaigns(settings: Settings, actor: Actor) -> dict[int, str]:
    """Finish every cancelled campaign whose calls in flight have all resolved: its pending
    recipients skipped, its reservation, still holding their part, settled
    (`service.reservations`). Also one cancelled lately whose reservation is settled but
    some recipients still pending (a claim given back after the settle)."""
    unsettled = (
        CreditReservation.select(CreditReservation.campaign)
        .join(Campaign)
        .where((CreditReservation.status == "active") & (Campaign.status == "cancelled"))
        .scalars()
    )
    left_pending = fetchall(
        "SELECT c.id FROM campaign c WHERE c.status = 'cancelled'"
        f" AND c.finished_at > now() - interval '{CANCELLED_PENDING_LOOKBACK}'"
        f" AND {recipient_counts.counted_sql('c.id', 'pending')} > 0"
    )
    finished = {}
    for campaign_id in sorted(set(unsettled) | {row[0] for row in left_pending}):
        if delivery.finalize_cancelled(campaign_id, settings, actor):
            finished[campaign_id] = "cancelled"
    return finished


def release_finished_reservations(settings: Settings, actor: Actor) -> int:
    """No active reservation outlives its campaign, and no hold outlives the evidence window:
    settle what a finished campaign still holds, release holds that expired."""
    return reservations.settle_finished(settings, actor) + reservations.release_expired_holds(
        settings, actor
    )


def reconcile(settings: Settings, actor: Actor) -> ReconcileReport:
    """Every repair, in the order that lets one feed the next. A repair that fails is logged
    and reported; the ones after it still run. What it changes is recorded for `actor` (the
    clock's job, or the operator running `astronote reconcile`)."""
    report = ReconcileReport()
    steps = (
        # Audiences whose creation stopped (its message lost), before admitting their batches.
        ("resumed_creations", lambda: creation.resume_stalled(settings)),
        # Batches waiting for fair admission (a web process died after its commit, the broker
        # was down, a worker died before admitting the next), then the stale ones.
        ("admitted_batches", lambda: admission.admit_waiting(settings)),
        ("republished_batches", lambda: republish_stale_batches(settings)),
        ("upgraded_by_evidence", lambda: upgrade_by_evidence(settings, actor)),
        ("unknown_outcomes", lambda: fail_unknown_outcomes(settings)),
        (
            "finalized",
            lambda: {
                **finalize_idle_campaigns(settings, actor),
                **finalize_cancelled_campaigns(settings, actor),
            },
        ),
        ("released_reservations", lambda: release_finished_reservations(settings, actor)),
        ("test_sends", lambda: test_sends.repair(settings, actor)),
        ("abandoned_replies", replies.requeue_abandoned),
        # Progress counters: the deltas written since the last run into each campaign's total.
        ("folded_counts", lambda: recipient_counts.fold()),
        # Idempotency keys and delivery reports past their retention, in bounded chunks.
        ("purged", lambda: retention.purge(settings)),
    )
    for name, repair in steps:
        try:
            setattr(report, name, repair())
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.exception("repair failed", extra={"repair": name})
            report.errors[name] = f"{type(error).__name__}: {str(error)[:200]}"
    return report
