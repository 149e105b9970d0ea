"""Sending (SPEC 4.2-4.6): the statements a batch's windows are made of.

Only recipients this process claimed (one conditional UPDATE per window, committed right
before the provider calls) are sent, so a batch published twice, or a paused or cancelled
campaign's batch, sends nothing twice. Results are persisted in one transaction per window;
if that fails after the provider accepted, the results go to `persistSmsResults`, which
writes them without calling the provider again. How a batch is cut into windows is
`service.windows`; what each recipient's text is and costs is `service.messages`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from peewee import SQL, fn

from models import Campaign, CampaignRecipient, SendBatch
from models.database import db, execute, execute_many, fetchall, planned_on_indexes
from models.expressions import any_of
from service import audit, credits, reservations
from service.audit import Actor
from service.infra import dispatch, logs
from service.infra.config import Settings
from service.infra.faults import fault_point
from service.provider import Outcome, SendResult

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
    """What one delivery of a batch (or one of its windows) did."""

    claimed: int = 0
    accepted: int = 0
    rejected: int = 0
    not_sent: int = 0
    unknown: int = 0
    throttled: int = 0  # of not_sent: answered 429 (the account is over its rate)
    retry_after_s: float | None = None
    persisted: bool = True
    outcomes: dict[str, int] = field(default_factory=dict)
    windows: int = 0
    # The rest of the batch went back on the queue (deadline, shutdown, or throttled after
    # some progress): the actor has nothing to retry.
    republished: bool = False
    # Why the batch's next window was refused by the shared limiter, if it was:
    # "cool_down", "provider", "sender" or "redis_down" (service/infra/ratelimit.py).
    limited: str | None = None
    wait_ms: int | None = None  # limited: how long until the limiter allows a window

    def add(self, window: BatchReport) -> None:
        """Count one window's outcomes in the batch's."""
        self.claimed += window.claimed
        self.accepted += window.accepted
        self.rejected += window.rejected
        self.not_sent += window.not_sent
        self.unknown += window.unknown
        self.throttled += window.throttled
        if window.limited:
            self.limited, self.wait_ms = window.limited, window.wait_ms
        if window.retry_after_s is not None:
            self.retry_after_s = max(self.retry_after_s or 0, window.retry_after_s)
        self.persisted = self.persisted and window.persisted
        for outcome, count in window.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        self.windows += 1


@dataclass
class BatchOutcomes:
    """A batch's provider results, sorted by what happens to each recipient next."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    not_sent: list[int] = field(default_factory=list)
    unknown: int = 0
    throttled: int = 0
    retry_after_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> recipients
    # Never called: refused by our own rate limit right before the call (given back too).
    limited: list[int] = field(default_factory=list)
    limited_by: str | None = None
    limited_ms: int | None = None

    def report(self, claimed: int, persisted: bool) -> BatchReport:
        return BatchReport(
            claimed=claimed,
            accepted=len(self.accepted),
            rejected=len(self.rejected),
            not_sent=len(self.not_sent),
            unknown=self.unknown,
            throttled=self.throttled,
            retry_after_s=self.retry_after_s,
            persisted=persisted,
            outcomes=self.counts,
            limited=self.limited_by,
            wait_ms=self.limited_ms,
        )


class Pending(NamedTuple):
    """A batch's recipient still to send, with what quiet hours look at."""

    id: int
    phone: str | None
    country: str | None


def pending_recipients(campaign_id: int, recipient_ids: Sequence[int]) -> list[Pending]:
    """The batch's recipients still to send, in id order: a redelivered, retried or resumed
    batch cuts its windows from these only. A read: the claim of each window decides.

    `campaign_id + 0` keeps the planner on the primary key, as in the claim below."""
    return [
        Pending(*row)
        for row in CampaignRecipient.select(
            CampaignRecipient.id, CampaignRecipient.phone, CampaignRecipient.country
        )
        .where(
            CampaignRecipient.id == any_of(recipient_ids),
            (CampaignRecipient.campaign + 0) == campaign_id,
            CampaignRecipient.status == "pending",
            CampaignRecipient.mitto_message_id.is_null(),
        )
        .order_by(CampaignRecipient.id)
        .tuples()
    ]


def skip_pending(campaign_id: int, recipient_ids: Sequence[int], reason: str) -> int:
    """Skip recipients that will not be sent (`frequency_cap`, `quiet_hours`) while they are
    pending and the campaign is sending: one conditional UPDATE, so a concurrent claim or
    cancel wins or loses each row whole. Nothing is charged for them; their part of the
    reservation is released with the other skips' when the campaign settles."""
    if not recipient_ids:
        return 0
    return execute(
        "UPDATE campaign_recipient r SET status = 'skipped', error = %(reason)s,"
        "       updated_at = now()"
        " WHERE r.id = ANY(%(ids)s) AND r.campaign_id + 0 = %(c)s AND r.status = 'pending'"
        "   AND EXISTS (SELECT 1 FROM campaign WHERE id = %(c)s AND status = 'sending')",
        {"ids": list(recipient_ids), "c": campaign_id, "reason": reason},
    )


# A claimed recipient's contact must still be one the shop may message: not opted out (a
# re-import, an admin), and with consent when the shop requires it (a re-import saying
# "Accepts SMS Marketing: no" withdraws it). Decided at the claim, as suppressions are, so a
# change after the enqueue reaches the recipients still pending (a paused campaign, a batch
# not sent yet, recipients waiting for quiet hours). `%(c)s` is the campaign: the shop's
# setting is read once per statement.
_REACHABLE = (
    "EXISTS (SELECT 1 FROM contact ct WHERE ct.id = r.contact_id AND ct.opted_out_at IS NULL"
    "        AND (ct.consent_collected_at IS NOT NULL"
    "             OR NOT (SELECT sh.require_consent FROM shop sh"
    "                     JOIN campaign ca ON ca.shop_id = sh.id WHERE ca.id = %(c)s)))"
)
_SUPPRESSED = (
    "EXISTS (SELECT 1 FROM suppression s WHERE s.shop_id = r.shop_id AND s.phone = r.phone)"
)


def claim_recipients(campaign_id: int, recipient_ids: Sequence[int], key: str) -> list[Claimed]:
    """Claim a window's sendable recipients (pending, no provider id, campaign sending) and
    skip those no longer reachable (number suppressed: `suppressed`; contact opted out or
    gone: `opted_out`; without the consent its shop requires: `no_consent`), in one
    statement; commit before any provider call.

    SQL, not Peewee: a data-modifying CTE, and the pipeline's hottest statement (once per
    window over its recipients; bench/RESULTS.md). `campaign_id + 0` keeps the planner on the
    primary key: with statistics taken before the campaign's rows existed, it otherwise walks
    the (campaign_id, status) index through every pending recipient of the campaign for each
    batch (measured: 1,236 recipients/s on 100,000 instead of 2,953/s on 20,000; 3,827/s with
    it). It stays a HOT update only while no index covers `status` (6,201/s). The two
    UPDATEs take disjoint rows (their conditions exclude each other): sub-statements of one
    statement must not update the same row."""
    rows = fetchall(
        "WITH live AS (SELECT 1 FROM campaign WHERE id = %(c)s AND status = 'sending'),"
        " skipped AS ("
        "   UPDATE campaign_recipient r SET status = 'skipped',"
        f"         error = CASE WHEN {_SUPPRESSED} THEN 'suppressed'"
        "                       WHEN EXISTS (SELECT 1 FROM contact ct WHERE ct.id = r.contact_id"
        "                                    AND ct.opted_out_at IS NULL) THEN 'no_consent'"
        "                       ELSE 'opted_out' END,"
        "          updated_at = now()"
        "   WHERE r.id = ANY(%(ids)s) AND r.campaign_id + 0 = %(c)s AND r.status = 'pending'"
        "     AND EXISTS (SELECT 1 FROM live)"
        f"    AND ({_SUPPRESSED} OR NOT {_REACHABLE}))"
        " UPDATE campaign_recipient r SET status = 'sending', claimed_at = now(),"
        "        batch_key = %(key)s, updated_at = now()"
        " WHERE r.id = ANY(%(ids)s) AND r.campaign_id + 0 = %(c)s AND r.status = 'pending'"
        "   AND r.mitto_message_id IS NULL AND EXISTS (SELECT 1 FROM live)"
        f"  AND NOT {_SUPPRESSED} AND {_REACHABLE}"
        " RETURNING r.id, r.contact_id, r.phone, r.country, r.first_name",
        {"c": campaign_id, "ids": list(recipient_ids), "key": key},
    )
    return sorted(Claimed(*row) for row in rows)


def unclaim(recipient_ids: Sequence[int], key: str) -> int:
    """Undo claims whose call surely did not reach the provider: they become pending again,
    or `skipped` (`cancelled`) when the campaign was cancelled meanwhile, like every recipient
    the cancel found pending: nothing will ever send them. A pending one's batch is reopened
    too: a duplicate delivery that claimed nothing may have marked it finished meanwhile, and
    the reconciler only republishes unfinished batches.

    The campaign row is read FOR SHARE, which waits for a cancel being committed: either this
    sees the cancel, or the cancel (which takes the row first) sees these rows pending."""
    ids = list(recipient_ids)
    if not ids:
        return 0
    with db.atomic():
        campaign_status = (
            Campaign.select(Campaign.status)
            .where(
                Campaign.id.in_(
                    CampaignRecipient.select(CampaignRecipient.campaign).where(
                        CampaignRecipient.id.in_(ids)
                    )
                )
            )
            .for_update("FOR SHARE")
            .scalar()
        )
        cancelled = campaign_status == "cancelled"
        if not cancelled:
            # The batch row before the recipients (campaign, batch, recipients: the order
            # of every lock here): a duplicate delivery's `finish_batch`, which locks it before
            # looking for pending recipients, either committed first (and is reopened below)
            # or waits and then sees these pending. A review saw the batch `finished` with a
            # recipient pending again: then only this delivery's republish could send it, and
            # with that message lost (Redis flushed) the campaign stayed `sending`.
            SendBatch.select(SendBatch.id).where(SendBatch.key == key).for_update(
                "FOR NO KEY UPDATE"
            ).scalar()
        given_back = (
            {CampaignRecipient.status: "skipped", CampaignRecipient.error: "cancelled"}
            if cancelled
            else {
                CampaignRecipient.status: "pending",
                CampaignRecipient.claimed_at: None,
                CampaignRecipient.batch_key: None,
            }
        )
        undone = (
            CampaignRecipient.update({**given_back, CampaignRecipient.updated_at: fn.now()})
            .where(
                CampaignRecipient.id.in_(ids),
                CampaignRecipient.status == "sending",
                CampaignRecipient.batch_key == key,
                CampaignRecipient.mitto_message_id.is_null(),
            )
            .execute()
        )
        if undone and not cancelled:
            (
                SendBatch.update(state="published", finished_at=None)
                .where(SendBatch.key == key, SendBatch.state == "finished")
                .execute()
            )
    return undone


# The accepted recipients `sent` with their provider ids, by primary key over `unnest`; a
# late persist also turns an unknown outcome (`failed`, `unknown_outcome`) to sent.
MARK_SENT = (
    "UPDATE campaign_recipient r SET status = 'sent', mitto_message_id = v.pid,"
    " sent_at = now(), error = NULL, updated_at = now(),"
    " delivery_status = CASE WHEN delivery_rank(r.delivery_status) > 1"
    "                   THEN r.delivery_status ELSE 'Queued' END"
    " FROM unnest(%s::bigint[], %s::text[]) AS v(id, pid)"
    " WHERE r.id = v.id AND r.mitto_message_id IS NULL"
    # An id another recipient holds is that message's (a provider reusing ids, or a report
    # forged with the webhook's token made it evidence for this one): not marked, so the
    # persist does not fail on the unique index at every retry (a probe saw 32 retries and the
    # reconcile fail every 2 s); this recipient stays of unknown outcome, never charged twice.
    "   AND NOT EXISTS (SELECT 1 FROM campaign_recipient o WHERE o.mitto_message_id = v.pid)"
    "   AND (r.status = 'sending' OR (r.status = 'failed'"
    "        AND r.error = 'unknown_outcome'"
    # An answer after its claim timed out is late evidence, and counts as long as evidence
    # does: while the campaign's reservation still holds credits for its unknown outcomes
    # (released EVIDENCE_WINDOW_MS after it finished). After that it charges nothing, as a
    # late report does (`service.evidence`): drawn on the balance, it could take it below 0.
    "        AND EXISTS (SELECT 1 FROM credit_reservation h"
    "                    WHERE h.campaign_id = r.campaign_id AND h.status <> 'released')))"
    " RETURNING r.id, r.phone IS NULL"
)


def _mark_sent(accepted: Sequence[Accepted]) -> tuple[set[int], set[int]]:
    """Mark the accepted recipients sent; returns those it marked, and those of them erased
    meanwhile (SPEC 11): their contact was erased while the call was in flight. The UPDATE
    waits for an erasure holding the row and then reads the erased row, so the answer is
    exact at the commit. One not marked was persisted already (a replay), or its answer came
    after the evidence window."""
    # One recipient per provider id: two named by one id in one persist (reports reusing an
    # id as evidence for two recipients) would both pass MARK_SENT's check and the second fail
    # the unique index, this persist at every retry. The first keeps it; the other stays of
    # unknown outcome.
    first: dict[str, int] = {}
    for a in accepted:
        first.setdefault(a.provider_id, a.recipient_id)
    rows = db.execute_sql(MARK_SENT, (list(first.values()), list(first))).fetchall()
    return {recipient_id for recipient_id, _ in rows}, {rid for rid, erased in rows if erased}


def persist_results(
    shop_id: int,
    campaign_id: int,
    accepted: Sequence[Accepted],
    rejected: Sequence[tuple[int, str]],
    fault: str = "inside_persist",
    revived_because: str = "an answer persisted after the campaign failed proves it sent",
    actor: Actor = audit.WORKER,
) -> int:
    """Record a batch's provider outcomes in one transaction; idempotent, so a replay (the
    repair actor) changes nothing. Returns the credits debited by this call. `fault`: the
    chaos suite's fault point inside the transaction (`service.infra.faults`). A `failed`
    campaign (its claims timed out while the answers were on their way) that this debits is
    `completed` (`complete_failed`, `revived_because`).

    The per-recipient statements stay SQL: one UPDATE keyed by primary key over `unnest` of
    the batch's ids per outcome, and one `execute_values` INSERT into `message_log`, are the
    per-batch bulk work the pipeline benchmark measured (bench/RESULTS.md: updates by primary
    key over `unnest`, with the country kept from import, took the bulk rate from 1,942/s to
    2,953/s on 20,000; with `message_log` keyed by recipient, 6,201/s on 100,000). Peewee has
    no UPDATE ... FROM unnest, and `delivery_rank()` is a SQL function."""
    with db.atomic():
        debited = 0
        if accepted:
            with planned_on_indexes():  # `UPDATE ... FROM unnest` on a young table
                marked, erased = _mark_sent(accepted)
            if len(marked) < len(accepted):
                # Debited and logged only with their mark: a replay's rows are there already,
                # and an answer past the evidence window is not charged.
                accepted = [a for a in accepted if a.recipient_id in marked]
            debited = credits.insert_debits(
                shop_id, campaign_id, [(a.recipient_id, a.segments) for a in accepted]
            )
            execute_many(
                "INSERT INTO message_log (shop_id, campaign_id, recipient_id, provider_id, text,"
                " segments, country) VALUES %s ON CONFLICT (recipient_id) DO NOTHING",
                [
                    (
                        shop_id,
                        campaign_id,
                        a.recipient_id,
                        a.provider_id,
                        # An erased recipient's text (its name, its unsubscribe link) is
                        # not stored: an erasure after this commit finds nothing to clear.
                        None if a.recipient_id in erased else a.text,
                        a.segments,
                        a.country,
                    )
                    for a in accepted
                ],
            )
            if erased:
                # A report the provider sent before this persist was examined before the
                # recipient had its provider id, so the applier could not tell it was erased.
                execute(
                    'UPDATE delivery_report SET "to" = NULL'
                    ' WHERE provider_id = ANY(%s) AND "to" IS NOT NULL',
                    ([a.provider_id for a in accepted if a.recipient_id in erased],),
                )
        if rejected:
            with planned_on_indexes():
                execute(
                    "UPDATE campaign_recipient r SET status = 'failed', error = v.reason,"
                    " updated_at = now() FROM unnest(%s::bigint[], %s::text[]) AS v(id, reason)"
                    " WHERE r.id = v.id AND (r.status = 'sending'"
                    # A rejection answered after the claim timed out: the provider's answer
                    # replaces the unknown outcome, so no hold is kept for it.
                    "   OR (r.status = 'failed' AND r.error = 'unknown_outcome'))",
                    ([rid for rid, _ in rejected], [reason for _, reason in rejected]),
                )
        fault_point(fault)
        # Rows every batch of the campaign and shop share come last, so their locks are held
        # only until the commit, in one order everywhere: campaign, reservation, shop.
        (Campaign.update(last_progress_at=fn.now()).where(Campaign.id == campaign_id).execute())
        credits.consume(shop_id, campaign_id, debited)
        if debited:
            complete_failed(shop_id, campaign_id, actor, revived_because)
    return debited


def finish_batch(key: str) -> bool:
    """Mark the batch finished once none of its recipients is pending any more. The row is
    locked first, in a statement of its own, so that the check reads the recipients after a
    delivery giving claims back (`unclaim`, which holds the row meanwhile) has committed."""
    pending = CampaignRecipient.select(SQL("1")).where(
        CampaignRecipient.id == fn.ANY(SendBatch.recipient_ids),
        CampaignRecipient.status == "pending",
    )
    with db.atomic():
        batch_id = (
            SendBatch.select(SendBatch.id)
            .where(SendBatch.key == key, SendBatch.state != "finished")
            .for_update("FOR NO KEY UPDATE")
            .scalar()
        )
        if batch_id is None:
            return False
        return bool(
            SendBatch.update(
                state="finished",
                finished_at=fn.now(),
                waiting=0,
                not_before=None,
                waiting_until=None,
            )
            .where(SendBatch.id == batch_id, ~fn.EXISTS(pending))
            .execute()
        )


def unfinished_batches(campaign_id: int) -> int:
    """How many of the campaign's batches are not finished yet (0: its last batch is done)."""
    return (
        SendBatch.select()
        .where(SendBatch.campaign == campaign_id, SendBatch.state != "finished")
        .count()
    )


def callback_url(settings: Settings) -> str | None:
    if not settings.dlr_webhook_secret:
        return None
    base = settings.reports_base_url or settings.public_base_url
    return f"{base}/webhooks/mitto/dlr?token={settings.dlr_webhook_secret}"


def classify(
    campaign_id: int,
    key: str,
    claimed: Sequence[Claimed],
    texts: Sequence[str],
    costs: Sequence[int],
    results: Sequence[SendResult],
) -> BatchOutcomes:
    """Sort each claimed recipient by its call's outcome (SPEC 4.4): accepted (persisted with
    its text and cost), rejected (failed with the reason), surely not sent (given back, with
    the longest Retry-After), unknown (left claimed until evidence or the claim timeout)."""
    outcomes = BatchOutcomes()
    for recipient, text, cost, result in zip(claimed, texts, costs, results):
        if result.limited_ms is not None:
            outcomes.limited.append(recipient.id)
            outcomes.limited_by = result.limited_by
            outcomes.limited_ms = max(outcomes.limited_ms or 0, result.limited_ms)
            continue
        outcomes.counts[result.outcome.value] = outcomes.counts.get(result.outcome.value, 0) + 1
        if result.outcome is Outcome.ACCEPTED:
            # The classifier accepts only an answer that carries the message's id.
            assert result.provider_id is not None
            outcomes.accepted.append(
                Accepted(recipient.id, result.provider_id, text, cost, recipient.country)
            )
        elif result.outcome is Outcome.REJECTED:
            outcomes.rejected.append((recipient.id, result.reason or "rejected"))
        elif result.outcome is Outcome.NOT_SENT:
            outcomes.not_sent.append(recipient.id)
            outcomes.throttled += result.throttled
            if result.retry_after_s is not None:
                outcomes.retry_after_s = max(outcomes.retry_after_s or 0, result.retry_after_s)
        else:
            outcomes.unknown += 1
            log.warning(
                "unknown provider outcome; the claim stays until evidence or timeout",
                extra={
                    "campaign_id": campaign_id,
                    "recipient_id": recipient.id,
                    "batch_key": key,
                    "reason": result.reason,
                },
            )
    return outcomes


def persist_or_hand_over(
    shop_id: int, campaign_id: int, key: str, outcomes: BatchOutcomes, settings: Settings
) -> bool:
    """Persist a window's results; if that fails, hand them to `persistSmsResults` (the
    provider already has the messages) and say so (False).

    Answers that come after their campaign finished (a provider answering slower than the
    claim timeout: the reconciler failed the claims as `unknown_outcome` and finalised the
    campaign) are late evidence, and end as a repaired persist does: a `failed` campaign that
    now has a sent message is `completed`, and the hold shrinks to what is still unknown."""
    try:
        persist_results(shop_id, campaign_id, outcomes.accepted, outcomes.rejected)
    except Exception as error:  # noqa: BLE001 - any failure here must hand over to the repair
        outage = logs.is_outage(error)
        log.exception(
            "persisting provider results failed; handing over to persistSmsResults",
            extra={"campaign_id": campaign_id, "shop_id": shop_id, "batch_key": key},
        )
        if outage and not db.in_transaction():
            # Its backend is likely gone (a restart, a terminated session): the batch's next
            # statement (its finish) would fail on the same dead connection. Closed, the
            # pool discards it and the next statement opens another.
            db.close()
        dispatch.publish_persist(
            {
                "campaign_id": campaign_id,
                "shop_id": shop_id,
                "batch_key": key,
                "accepted": [a.as_list() for a in outcomes.accepted],
                "rejected": [list(r) for r in outcomes.rejected],
            }
        )
        return False
    try:
        reservations.settle(campaign_id, settings, audit.WORKER)  # nothing while it may send
    except Exception:  # noqa: BLE001 - the answers are persisted; the reconciler settles
        log.exception(
            "settling a finished campaign after a late persist failed; the reconciler settles it",
            extra={"campaign_id": campaign_id, "batch_key": key},
        )
    return True


def campaign_sending(campaign_id: int) -> bool:
    """Whether the campaign is `sending` now (not paused, cancelled or finished)."""
    return (
        Campaign.select(Campaign.status).where(Campaign.id == campaign_id).scalar()
    ) == "sending"


def republish_batch(
    campaign_id: int,
    shop_id: int,
    recipient_ids: list[int],
    key: str,
    delay_ms: int | None = None,
    waiting: int = 0,
    not_before: datetime | None = None,
    waiting_until: datetime | None = None,
) -> None:
    """Put an unfinished batch back on the queue (its next delivery sends what is still
    pending), recorded as published when its message is due (now, or after `delay_ms`) so the
    reconciler does not publish it again before it is stale from then; with
    `waiting` recipients held by quiet hours until `not_before` at the earliest (the
    reconciler leaves it alone until then; `waiting_until` their latest opening, for
    progress)."""
    (
        SendBatch.update(
            state="published",
            # When its message is due: the reconciler counts staleness from then. From now, a
            # message delayed past BATCH_STALE_AFTER_MS (a rate limit's wait) was published
            # again while it waited, and each copy deferred itself again: a probe saw the
            # delayed messages grow from 9 to 93 in 3.5 minutes.
            published_at=SQL("now() + %s * interval '1 millisecond'", (max(0, delay_ms or 0),)),
            publish_count=SendBatch.publish_count + 1,
            waiting=waiting,
            not_before=not_before,
            waiting_until=waiting_until,
        )
        .where((SendBatch.key == key) & (SendBatch.state != "finished"))
        .execute()
    )
    dispatch.publish_batch(campaign_id, shop_id, recipient_ids, delay_ms=delay_ms)


def touch_batch(key: str) -> None:
    """A delivery still at work on its batch: published as of now for the reconciler's
    staleness (never earlier than a due time already recorded)."""
    (
        SendBatch.update(published_at=fn.GREATEST(SendBatch.published_at, fn.now()))
        .where((SendBatch.key == key) & (SendBatch.state == "published"))
        .execute()
    )


def park_batch(key: str, waiting: int, not_before: datetime, until: datetime) -> bool:
    """A batch whose every pending recipient waits for quiet hours to end leaves the queue:
    `pending` again with its `waiting` recipients' earliest opening (`not_before`; the latest
    is `until`, for progress), for fair admission to publish once that opening comes
    (`service.admission.due`). Returns whether it was parked.

    Unlike a republish, parking creates no message, so it needs no guard against multiplying
    deliveries; guarded by the publish count read at the delivery's start, it failed when
    the admission that published this very delivery had not committed its count yet, and
    left the batch `published` with no message, holding a place until the morning. A message
    of the batch published meanwhile still comes: it finds the recipients waiting and parks
    the batch again (or sends what opened)."""
    return bool(
        SendBatch.update(
            state="pending", waiting=waiting, not_before=not_before, waiting_until=until
        )
        .where((SendBatch.key == key) & (SendBatch.state != "finished"))
        .execute()
    )


def complete_failed(shop_id: int, campaign_id: int, actor: Actor, reason: str) -> bool:
    """A `failed` campaign (nothing sent) that late evidence proves sent a message is
    `completed`, its `finished_at` kept, recorded for `actor`; in the caller's transaction."""
    revived = (
        Campaign.update(status="completed", status_reason=None, updated_at=fn.now())
        .where((Campaign.id == campaign_id) & (Campaign.status == "failed"))
        .execute()
    )
    if revived:
        audit.record(
            actor, audit.campaign_status(shop_id, campaign_id, "failed", "completed", reason)
        )
    return bool(revived)


def repair_persist(payload: dict[str, Any], settings: Settings, actor: Actor = audit.WORKER) -> int:
    """`persistSmsResults`: write results a failed persist left behind, without the provider.

    A repair that comes after the campaign finished (its claims timed out and failed as
    `unknown_outcome` meanwhile) is late evidence, and ends like it (`service.evidence`): a
    `failed` campaign that now has a sent message is `completed`, and the hold shrinks to what
    is still unknown (else it stayed `held`, its credits reserved until the evidence window
    passed)."""
    campaign_id = payload["campaign_id"]
    accepted = [Accepted(*item) for item in payload.get("accepted", [])]
    rejected = [tuple(item) for item in payload.get("rejected", [])]
    debited = persist_results(
        payload["shop_id"],
        campaign_id,
        accepted,
        rejected,
        fault="inside_repair",
        revived_because="a repaired persist proves a message of unknown outcome was sent",
        actor=actor,
    )
    finish_batch(payload["batch_key"])
    reservations.settle(campaign_id, settings, actor)
    return debited
