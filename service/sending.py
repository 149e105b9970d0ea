"""Sending one batch (SPEC 4.2-4.6): claim, compose, call the provider, persist.

Only recipients this process claimed (one conditional UPDATE, committed before the provider
call) are sent, so a batch published twice, or a paused or cancelled campaign's batch, sends
nothing twice. Results are persisted in one transaction per batch; if that fails after the
provider accepted, the results go to `persistSmsResults`, which writes them without calling
the provider again.
"""
from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Sequence

from models.database import db, execute, execute_many, fetchall, fetchone
from service import composition, credits, links, segments
from service.infra import dispatch
from service.infra.config import Settings
from service.infra.ratelimit import RateLimiter
from service.provider import Outcome, Provider, SendResult, Sms

log = logging.getLogger("astronote.sending")


@dataclass(frozen=True, order=True)
class Claimed:
    id: int
    contact_id: int
    phone: str
    country: str | None
    first_name: str | None


@dataclass(frozen=True)
class Accepted:
    recipient_id: int
    provider_id: str
    text: str
    segments: int
    country: str | None

    def as_list(self) -> list[Any]:
        return [self.recipient_id, self.provider_id, self.text, self.segments, self.country]


@dataclass
class BatchReport:
    claimed: int = 0
    accepted: int = 0
    rejected: int = 0
    not_sent: int = 0
    unknown: int = 0
    retry_after_s: float | None = None
    persisted: bool = True
    outcomes: dict[str, int] = field(default_factory=dict)


def claim_recipients(campaign_id: int, recipient_ids: Sequence[int], key: str) -> list[Claimed]:
    """Claim the batch's sendable recipients (pending, no provider id, campaign sending) and
    skip suppressed numbers, in one statement; commit before any provider call.

    `campaign_id + 0` keeps the planner on the primary key: with statistics taken before the
    campaign's rows existed, it otherwise walks the (campaign_id, status) index through every
    pending recipient of the campaign for each batch (measured: 1,236 recipients/s on 100,000
    instead of 2,953/s on 20,000)."""
    rows = fetchall(
        "WITH live AS (SELECT 1 FROM campaign WHERE id = %(c)s AND status = 'sending'),"
        " skipped AS ("
        "   UPDATE campaign_recipient r SET status = 'skipped', error = 'suppressed',"
        "          updated_at = now()"
        "   WHERE r.id = ANY(%(ids)s) AND r.campaign_id + 0 = %(c)s AND r.status = 'pending'"
        "     AND EXISTS (SELECT 1 FROM live)"
        "     AND EXISTS (SELECT 1 FROM suppression s"
        "                 WHERE s.shop_id = r.shop_id AND s.phone = r.phone))"
        " UPDATE campaign_recipient r SET status = 'sending', claimed_at = now(),"
        "        batch_key = %(key)s, updated_at = now()"
        " WHERE r.id = ANY(%(ids)s) AND r.campaign_id + 0 = %(c)s AND r.status = 'pending'"
        "   AND r.mitto_message_id IS NULL AND EXISTS (SELECT 1 FROM live)"
        "   AND NOT EXISTS (SELECT 1 FROM suppression s"
        "                   WHERE s.shop_id = r.shop_id AND s.phone = r.phone)"
        " RETURNING r.id, r.contact_id, r.phone, r.country, r.first_name",
        {"c": campaign_id, "ids": list(recipient_ids), "key": key})
    return sorted(Claimed(*row) for row in rows)


def unclaim(recipient_ids: Sequence[int], key: str) -> int:
    """Undo claims whose call surely did not reach the provider (they become pending again).
    The batch is reopened too: a duplicate delivery that claimed nothing may have marked it
    finished meanwhile, and the reconciler only republishes unfinished batches."""
    with db.atomic():
        undone = execute(
            "UPDATE campaign_recipient SET status = 'pending', claimed_at = NULL,"
            " batch_key = NULL, updated_at = now() WHERE id = ANY(%s) AND status = 'sending'"
            " AND batch_key = %s AND mitto_message_id IS NULL", (list(recipient_ids), key))
        if undone:
            execute("UPDATE send_batch SET state = 'published', finished_at = NULL"
                    " WHERE key = %s AND state = 'finished'", (key,))
    return undone


def persist_results(shop_id: int, campaign_id: int, accepted: Sequence[Accepted],
                    rejected: Sequence[tuple[int, str]]) -> int:
    """Record a batch's provider outcomes in one transaction; idempotent, so a replay (the
    repair actor) changes nothing. Returns the credits debited by this call."""
    with db.atomic():
        debited = 0
        if accepted:
            execute(
                "UPDATE campaign_recipient r SET status = 'sent', mitto_message_id = v.pid,"
                " sent_at = now(), error = NULL, updated_at = now(),"
                " delivery_status = CASE WHEN delivery_rank(r.delivery_status) > 1"
                "                   THEN r.delivery_status ELSE 'Queued' END"
                " FROM unnest(%s::bigint[], %s::text[]) AS v(id, pid)"
                " WHERE r.id = v.id AND r.mitto_message_id IS NULL"
                "   AND (r.status = 'sending' OR (r.status = 'failed'"
                "        AND r.error = 'unknown_outcome'))",
                ([a.recipient_id for a in accepted], [a.provider_id for a in accepted]))
            debited = credits.insert_debits(
                shop_id, campaign_id, [(a.recipient_id, a.segments) for a in accepted])
            execute_many(
                "INSERT INTO message_log (shop_id, campaign_id, recipient_id, provider_id, text,"
                " segments, country) VALUES %s ON CONFLICT (recipient_id) DO NOTHING",
                [(shop_id, campaign_id, a.recipient_id, a.provider_id, a.text, a.segments,
                  a.country) for a in accepted])
        if rejected:
            execute(
                "UPDATE campaign_recipient r SET status = 'failed', error = v.reason,"
                " updated_at = now() FROM unnest(%s::bigint[], %s::text[]) AS v(id, reason)"
                " WHERE r.id = v.id AND r.status = 'sending'",
                ([rid for rid, _ in rejected], [reason for _, reason in rejected]))
        # Rows every batch of the campaign and shop share come last, so their locks are held
        # only until the commit, in one order everywhere: campaign, reservation, shop.
        execute("UPDATE campaign SET last_progress_at = now() WHERE id = %s", (campaign_id,))
        credits.consume(shop_id, campaign_id, debited)
    return debited


def finish_batch(key: str) -> bool:
    """Mark the batch finished once none of its recipients is pending any more."""
    return bool(execute(
        "UPDATE send_batch b SET state = 'finished', finished_at = now()"
        " WHERE b.key = %s AND b.state <> 'finished' AND NOT EXISTS ("
        "   SELECT 1 FROM campaign_recipient r"
        "   WHERE r.id = ANY(b.recipient_ids) AND r.status = 'pending')", (key,)))


def unfinished_batches(campaign_id: int) -> int:
    row = fetchone("SELECT count(*) FROM send_batch WHERE campaign_id = %s"
                   " AND state <> 'finished'", (campaign_id,))
    return row[0]


@dataclass(frozen=True)
class CampaignContext:
    """What composing a campaign's messages needs, read once per batch."""
    campaign_id: int
    shop_id: int
    template: str
    append_unsubscribe: bool
    sender: str
    short_links: dict[str, str]


def load_context(shop_id: int, campaign_id: int, settings: Settings) -> CampaignContext | None:
    row = fetchone("SELECT c.text, c.append_unsubscribe, s.sender FROM campaign c"
                   " JOIN shop s ON s.id = c.shop_id WHERE c.id = %s AND c.shop_id = %s",
                   (campaign_id, shop_id))
    if row is None:
        return None
    template, append_unsubscribe, sender = row
    short = links.shorten(shop_id, campaign_id, composition.find_urls(template),
                          settings.public_base_url)
    return CampaignContext(campaign_id, shop_id, template, append_unsubscribe,
                           sender or settings.mitto_sender or "Astronote", short)


def compose_for(context: CampaignContext, recipient: Claimed, settings: Settings) -> str:
    unsubscribe = (links.unsubscribe_url(settings.public_base_url, settings.secret_key,
                                         context.shop_id, recipient.contact_id)
                   if context.append_unsubscribe else None)
    return composition.compose(context.template, recipient.first_name, context.short_links,
                               unsubscribe)


def compose_batch(context: CampaignContext, claimed: Sequence[Claimed],
                  settings: Settings) -> list[str]:
    """The final text of each claimed recipient; composed once when it cannot differ."""
    uniform = (not context.append_unsubscribe
               and composition.FIRST_NAME_PLACEHOLDER not in context.template)
    if uniform:
        return [compose_for(context, claimed[0], settings)] * len(claimed)
    return [compose_for(context, recipient, settings) for recipient in claimed]


def callback_url(settings: Settings) -> str | None:
    if not settings.dlr_webhook_secret:
        return None
    return f"{settings.public_base_url}/webhooks/mitto/dlr?token={settings.dlr_webhook_secret}"


class BatchSender:
    """Sends batches with one provider, one rate limiter and one pool of provider calls
    shared by every thread of the worker process (SEND_CONCURRENCY calls in flight)."""

    def __init__(self, settings: Settings, provider: Provider, calls: Executor,
                 limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.provider = provider
        self.calls = calls
        self.limiter = limiter

    def send(self, campaign_id: int, shop_id: int, recipient_ids: Sequence[int],
             key: str) -> BatchReport:
        report = BatchReport()
        claimed = claim_recipients(campaign_id, recipient_ids, key)
        report.claimed = len(claimed)
        if not claimed:
            if self._campaign_status(campaign_id) == "sending":
                finish_batch(key)  # everything was done by an earlier delivery of this batch
            return report
        try:
            context = load_context(shop_id, campaign_id, self.settings)
            texts = compose_batch(context, claimed, self.settings)
            segments_of: dict[str, int] = {}
            costs = [segments_of.get(text) or segments_of.setdefault(
                text, segments.segment_count(text)) for text in texts]
            covered = self._covered(shop_id, campaign_id, key, sum(costs))
        except BaseException:
            # Nothing reached the provider yet: give the claims back so a retry sends them.
            unclaim([r.id for r in claimed], key)
            raise
        if not covered:
            persist_results(shop_id, campaign_id, [],
                            [(r.id, "insufficient_credits") for r in claimed])
            report.rejected = len(claimed)
            return report
        results = self._call_provider(context, claimed, texts, key)
        accepted, rejected, not_sent = [], [], []
        for recipient, text, cost, result in zip(claimed, texts, costs, results):
            report.outcomes[result.outcome.value] = report.outcomes.get(result.outcome.value, 0) + 1
            if result.outcome is Outcome.ACCEPTED:
                accepted.append(Accepted(recipient.id, result.provider_id, text, cost,
                                         recipient.country))
            elif result.outcome is Outcome.REJECTED:
                rejected.append((recipient.id, result.reason or "rejected"))
            elif result.outcome is Outcome.NOT_SENT:
                not_sent.append(recipient.id)
                if result.retry_after_s is not None:
                    report.retry_after_s = max(report.retry_after_s or 0, result.retry_after_s)
            else:
                report.unknown += 1
                log.warning("unknown provider outcome; the claim stays until evidence or timeout",
                            extra={"campaign_id": campaign_id, "recipient_id": recipient.id,
                                   "batch_key": key, "reason": result.reason})
        report.accepted, report.rejected, report.not_sent = (len(accepted), len(rejected),
                                                             len(not_sent))
        report.persisted = self._persist(shop_id, campaign_id, key, accepted, rejected)
        if not_sent:
            unclaim(not_sent, key)
        else:
            finish_batch(key)
        return report

    def _campaign_status(self, campaign_id: int) -> str | None:
        row = fetchone("SELECT status FROM campaign WHERE id = %s", (campaign_id,))
        return row[0] if row else None

    def _covered(self, shop_id: int, campaign_id: int, key: str, cost: int) -> bool:
        row = fetchone("SELECT reserved FROM send_batch WHERE key = %s", (key,))
        reserved = row[0] if row else 0
        return cost <= reserved or credits.cover_excess(shop_id, campaign_id, cost - reserved)

    def _call_provider(self, context: CampaignContext, claimed: Sequence[Claimed],
                       texts: Sequence[str], key: str) -> list[SendResult]:
        callback = callback_url(self.settings)
        if self.limiter:
            self.limiter.acquire(len(claimed))
        if len(set(texts)) == 1:
            return self.provider.send_bulk(context.sender, [r.phone for r in claimed], texts[0],
                                           key, callback)

        def send_one(pair: tuple[Claimed, str]) -> SendResult:
            recipient, text = pair
            return self.provider.send_one(context.sender, Sms(recipient.phone, text,
                                                              str(recipient.id)), callback)

        return list(self.calls.map(send_one, zip(claimed, texts)))

    def _persist(self, shop_id: int, campaign_id: int, key: str, accepted: list[Accepted],
                 rejected: list[tuple[int, str]]) -> bool:
        try:
            persist_results(shop_id, campaign_id, accepted, rejected)
            return True
        except Exception:  # noqa: BLE001 - any failure here must hand over to the repair
            log.exception("persisting provider results failed; handing over to persistSmsResults",
                          extra={"campaign_id": campaign_id, "shop_id": shop_id,
                                 "batch_key": key})
            dispatch.publish_persist({
                "campaign_id": campaign_id, "shop_id": shop_id, "batch_key": key,
                "accepted": [a.as_list() for a in accepted],
                "rejected": [list(r) for r in rejected]})
            return False


def repair_persist(payload: dict[str, Any]) -> int:
    """`persistSmsResults`: write results a failed persist left behind, without the provider."""
    accepted = [Accepted(*item) for item in payload.get("accepted", [])]
    rejected = [tuple(item) for item in payload.get("rejected", [])]
    debited = persist_results(payload["shop_id"], payload["campaign_id"], accepted, rejected)
    finish_batch(payload["batch_key"])
    return debited
