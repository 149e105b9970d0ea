"""Repairs for every way a campaign can get stuck (the clock schedules them; SPEC 4.1, 4.7).

Each function is safe to run from two processes at once: its effects are conditional updates,
and what it publishes is harmless twice (a batch sends only what it claims).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from models.database import execute, fetchall
from service import credits, delivery
from service.infra import dispatch
from service.infra.config import Settings
from service.messages import compose_for, load_context
from service.segments import segment_count
from service.sending import Accepted, Claimed, persist_results

log = logging.getLogger("astronote.reconcile")


@dataclass
class ReconcileReport:
    republished_batches: int = 0
    upgraded_by_evidence: int = 0
    unknown_outcomes: int = 0
    finalized: dict[int, str] = field(default_factory=dict)
    released_reservations: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # repair -> what went wrong


def republish_stale_batches(settings: Settings) -> int:
    """Publish again the unfinished batches of `sending` campaigns that were never published
    (a web process died after its commit) or were published long ago (a Redis flush, a dead
    worker). The claim makes a duplicate send nothing twice."""
    rows = fetchall(
        "UPDATE send_batch b SET state = 'published', published_at = now(),"
        " publish_count = publish_count + 1"
        " FROM campaign c WHERE c.id = b.campaign_id AND c.status = 'sending'"
        " AND b.state <> 'finished'"
        " AND coalesce(b.published_at, b.created_at)"
        "     < now() - make_interval(secs => %s / 1000.0)"
        " RETURNING b.campaign_id, c.shop_id, b.recipient_ids",
        (settings.batch_stale_after_ms,))
    for campaign_id, shop_id, recipient_ids in rows:
        dispatch.publish_batch(campaign_id, shop_id, recipient_ids)
    if rows:
        log.info("republished stale batches", extra={"batches": len(rows)})
    return len(rows)


def upgrade_by_evidence(settings: Settings) -> int:
    """Recipients whose outcome is unknown (claim timed out, or already failed as
    `unknown_outcome`) but for which a delivery report names them by reference: the provider
    has the message, so they become `sent` with their debit."""
    rows = fetchall(
        "SELECT DISTINCT ON (r.id) r.id, r.campaign_id, r.shop_id, r.contact_id, r.phone,"
        "       r.country, r.first_name, d.provider_id"
        " FROM campaign_recipient r"
        " JOIN delivery_report d ON d.provider_id IS NOT NULL AND (d.reference = r.id::text"
        "      OR (d.reference = r.batch_key AND d.\"to\" = r.phone))"
        " JOIN campaign c ON c.id = r.campaign_id"
        " WHERE (c.status IN ('sending', 'paused', 'cancelled')"
        "        OR c.finished_at > now() - make_interval(secs => %s / 1000.0))"
        "   AND ((r.status = 'sending' AND r.claimed_at"
        "         < now() - make_interval(secs => %s / 1000.0))"
        "        OR (r.status = 'failed' AND r.error = 'unknown_outcome'))"
        " ORDER BY r.id, d.id",
        (settings.evidence_window_ms, settings.claim_timeout_ms))
    by_campaign: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    for rid, campaign_id, shop_id, contact_id, phone, country, first_name, provider_id in rows:
        by_campaign[(campaign_id, shop_id)].append(
            (Claimed(rid, contact_id, phone, country, first_name), provider_id))
    upgraded = 0
    for (campaign_id, shop_id), items in by_campaign.items():
        try:
            upgraded += _persist_evidence(shop_id, campaign_id, items, settings)
        except Exception:  # noqa: BLE001 - one campaign's failure must not hold up the others
            log.exception("upgrading by evidence failed",
                          extra={"campaign_id": campaign_id, "shop_id": shop_id})
    return upgraded


def _persist_evidence(shop_id: int, campaign_id: int, items: list[tuple[Claimed, str]],
                      settings: Settings) -> int:
    context = load_context(shop_id, campaign_id, settings)
    accepted = []
    for recipient, provider_id in items:
        text = compose_for(context, recipient, settings)
        accepted.append(Accepted(recipient.id, provider_id, text, segment_count(text),
                                 recipient.country))
    persist_results(shop_id, campaign_id, accepted, [])
    delivery.apply_reports(campaign_id=campaign_id)
    return len(accepted)


def fail_unknown_outcomes(settings: Settings) -> int:
    """Claims older than CLAIM_TIMEOUT_MS without evidence: `failed`, reason `unknown_outcome`,
    no debit. Never resent: at most once towards the provider."""
    return execute(
        "UPDATE campaign_recipient SET status = 'failed', error = 'unknown_outcome',"
        " updated_at = now() WHERE status = 'sending'"
        " AND claimed_at < now() - make_interval(secs => %s / 1000.0)"
        " AND campaign_id IN (SELECT id FROM campaign"
        "                     WHERE status IN ('sending', 'paused', 'cancelled'))",
        (settings.claim_timeout_ms,))


def finalize_idle_campaigns() -> dict[int, str]:
    """Finish every `sending` campaign that has nothing pending or in flight."""
    rows = fetchall(
        "SELECT c.id FROM campaign c WHERE c.status = 'sending' AND NOT EXISTS ("
        "  SELECT 1 FROM campaign_recipient r WHERE r.campaign_id = c.id"
        "  AND r.status IN ('pending', 'sending'))")
    finished = {}
    for (campaign_id,) in rows:
        status = delivery.refresh_campaign(campaign_id)
        if status:
            finished[campaign_id] = status
    return finished


def release_finished_reservations() -> int:
    """No active reservation outlives its campaign."""
    rows = fetchall(
        "SELECT r.campaign_id FROM credit_reservation r JOIN campaign c ON c.id = r.campaign_id"
        " WHERE r.status = 'active' AND c.status IN ('completed', 'failed', 'cancelled')")
    return sum(credits.release(campaign_id) for (campaign_id,) in rows)


def reconcile(settings: Settings) -> ReconcileReport:
    """Every repair, in the order that lets one feed the next. A repair that fails is logged
    and reported; the ones after it still run."""
    report = ReconcileReport()
    steps = (("republished_batches", lambda: republish_stale_batches(settings)),
             ("upgraded_by_evidence", lambda: upgrade_by_evidence(settings)),
             ("unknown_outcomes", lambda: fail_unknown_outcomes(settings)),
             ("finalized", finalize_idle_campaigns),
             ("released_reservations", release_finished_reservations))
    for name, repair in steps:
        try:
            setattr(report, name, repair())
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.exception("repair failed", extra={"repair": name})
            report.errors[name] = f"{type(error).__name__}: {str(error)[:200]}"
    return report
