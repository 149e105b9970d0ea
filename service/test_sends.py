"""Test sends (issue 11, the priority lane): one message of a campaign's text to one number.

A merchant checks how a campaign reads on a phone before launching it. Asked through the API
(`request`), the message is composed, costed and its credits held at once, in one transaction
under the shop row's lock like a reservation; the worker sends it from the priority queue
(`dispatch.PRIORITY_QUEUE`), which no shop's bulk backlog is in front of (`deliver`).

The rules a campaign message follows, a test send follows too:
- consent (SPEC 11): a suppressed or opted-out number is refused (422 naming `phone`), at the
  request and again right before the call; a shop with `require_consent` sends only to a
  contact with consent;
- the provider account's rate limit and cool-down (service/infra/ratelimit.py): a refused
  test send goes back on its queue for as long as the limiter says, no worker sleeps, no
  retry spent; it asks with its shop, which is then owed its fair share of a capped account;
- credits: its cost is held from the shop's available credits while it is `queued` or
  `sending` (summed with the reservations, `credits.reserved_total`) and debited once, keyed
  `test-send:{id}`, when the provider accepts it; a rejection, a refusal or an unknown outcome
  charges nothing (an unknown outcome keeps its hold for EVIDENCE_WINDOW_MS: its acceptance may
  still be persisted, `accepted`).
Quiet hours and the frequency cap do not apply: the merchant asks for this one message now, to
a number of their choosing (usually their own), and it is not a campaign message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from peewee import fn

from models import Contact, CreditTransaction, Shop, TestSend
from models.database import db
from models.expressions import milliseconds_ago
from service import audit, composition, credits, erasure_lock, links, messages, suppressions
from service.audit import Actor
from service.contacts import normalise_phone
from service.errors import InsufficientCredits, InvalidInput, NotFound
from service.infra import dispatch
from service.infra.config import Settings
from service.infra.ratelimit import DEFAULT_COOL_DOWN_MS, SendLimiter
from service.provider import Outcome, Provider, SendResult, Sms
from service.windows import dispatch_refused

log = logging.getLogger("astronote.test_sends")

HOLDING = credits.TEST_SENDS_HOLDING
# A test send the provider surely did not take (a refused connection, a 503) is tried again
# this many times, after its Retry-After or this long, before it fails as `not_sent`.
NOT_SENT_ATTEMPTS = 5
NOT_SENT_DELAY_MS = 1000


@dataclass(frozen=True)
class _Addressee:
    contact_id: int
    first_name: str | None


@dataclass(frozen=True)
class Delivery:
    """What one delivery of a test send did: its status after it, and, when it goes back on
    the queue (the rate limit, the cool-down, not sent), after how long."""

    status: str
    delay_ms: int | None = None
    limited: str | None = None  # why the limiter put it back (service/infra/ratelimit.py)
    limited_at_dispatch: bool = False  # admitted, then refused right before the call


def _contact(shop_id: int, phone: str) -> Contact | None:
    return (
        Contact.select()
        .where((Contact.shop == shop_id) & (Contact.phone == phone))
        .order_by(Contact.id)
        .first()
    )


def refusal(shop_id: int, phone: str, settings: Settings) -> str | None:
    """Why SPEC 11 forbids sending `phone` a message of the shop now, or None."""
    if suppressions.is_suppressed(shop_id, phone, settings.secret_key):
        return "the number is suppressed for this shop (it opted out)"
    contact = _contact(shop_id, phone)
    if contact is not None and contact.opted_out_at is not None:
        return "the number's contact opted out of this shop's messages"
    requires = Shop.select(Shop.require_consent).where(Shop.id == shop_id).scalar()
    if requires and (contact is None or contact.consent_collected_at is None):
        return "the shop requires consent, and the number is not a contact with consent"
    return None


def compose(
    shop_id: int, campaign_id: int, phone: str, settings: Settings
) -> tuple[str, str, int | None]:
    """(sender, text, contact id) of the campaign's message to `phone`: the first name from the
    number's contact (blank without one), links shortened, the unsubscribe link appended as
    the campaign does (a number that is not a contact gets a link of the same length that
    opens nothing: the text costs what a contact's would)."""
    context = messages.load_context(shop_id, campaign_id, settings)
    if context is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    contact = _contact(shop_id, phone)
    if contact is not None:
        text = messages.compose_for(context, _Addressee(contact.id, contact.first_name), settings)
        return context.sender, text, contact.id
    unsubscribe = (
        links.sample_unsubscribe_url(settings.public_base_url)
        if context.append_unsubscribe
        else None
    )
    text = composition.compose(context.template, None, context.short_links, unsubscribe)
    return context.sender, text, None


def request(
    shop_id: int, campaign_id: int, raw_phone: str, settings: Settings, actor: Actor
) -> dict[str, Any]:
    """Queue a test send of the campaign to `raw_phone` (E.164, or national with the shop's
    numbers' country code): refused with a 422 naming `phone` when SPEC 11 forbids it, a 402
    when the available credits do not cover its cost, else held, recorded and published on
    the priority queue. A broker that cannot take it fails it (its credits freed) and
    answers 503."""
    try:
        phone, _ = normalise_phone(raw_phone)
    except ValueError as error:
        raise InvalidInput(f"phone: {error}", "phone") from None
    with db.atomic():
        # The checks and the text under the shop's erasure lock: an erasure committed after
        # them would miss this row and leave its number and the name in its text.
        erasure_lock.writing(shop_id)
        why = refusal(shop_id, phone, settings)
        if why:
            raise InvalidInput(f"phone: {why}; nothing was sent", "phone")
        sender, text, contact_id = compose(shop_id, campaign_id, phone, settings)
        cost = messages.segment_costs([text])[0]
        balance = credits.lock_shop(shop_id)
        available = balance - credits.reserved_total(shop_id)
        if cost > available:
            raise InsufficientCredits(
                f"this test send costs {cost} credits; {max(available, 0)} available"
            )
        row = TestSend.create(
            shop=shop_id,
            campaign=campaign_id,
            contact_id=contact_id,
            phone=phone,
            sender=sender,
            text=text,
            segments=cost,
        )
        audit.record(actor, _event(row, "requested", None, "queued", "test send asked"))
    try:
        dispatch.publish_test_send(row.id)
    except dispatch.PUBLISH_ERRORS:
        _finish(row.id, "failed", "broker_unavailable", audit.WORKER)
        raise
    return as_dict(TestSend.get_by_id(row.id))


def get(shop_id: int, campaign_id: int, test_send_id: int) -> dict[str, Any]:
    """One of the campaign's test sends (another shop's is a 404)."""
    row = (
        TestSend.select()
        .where(
            (TestSend.id == test_send_id)
            & (TestSend.shop == shop_id)
            & (TestSend.campaign == campaign_id)
        )
        .first()
    )
    if row is None:
        raise NotFound(f"test send {test_send_id} does not exist")
    return as_dict(row)


def as_dict(row: TestSend) -> dict[str, Any]:
    return {
        "id": row.id,
        "campaign_id": row.campaign_id,
        "phone": row.phone,
        "text": row.text,
        "segments": row.segments,
        "status": row.status,
        "error": row.error,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


def _event(row: TestSend, action: str, from_status: str | None, to_status: str, reason: str):
    return audit.Event(
        row.shop_id,
        "test_send",
        action,
        reason,
        campaign_id=row.campaign_id,
        subject_id=row.id,
        from_status=from_status,
        to_status=to_status,
        amount=row.segments,
        detail={"contact_id": row.contact_id} if row.contact_id else None,
    )


def deliver(
    test_send_id: int, provider: Provider, limiter: SendLimiter | None, settings: Settings
) -> Delivery:
    """`sendTestSMS`: send a queued test send once. Checks consent again, asks the shared
    limiter (refused: back on the queue, nothing claimed), claims the row, counts the call at
    dispatch, calls the provider and records the outcome (accepted: sent and debited in one
    transaction). A row that is not `queued` (sent, failed, or claimed by a delivery that may
    have reached the provider) is left alone: never sent twice."""
    row = TestSend.get_or_none(TestSend.id == test_send_id)
    if row is None or row.status != "queued":
        return Delivery(row.status if row else "missing")
    if row.phone is None:
        # Erased while its call was in flight and the call came back unsent (`_unclaim`): the
        # erasure could not fail it then; failed now, or its credits would stay held.
        _finish(row.id, "failed", "erased", audit.WORKER)
        return Delivery("failed")
    if refusal(row.shop_id, row.phone, settings):
        _finish(row.id, "failed", "suppressed", audit.WORKER)
        return Delivery("failed")
    grant = None
    if limiter:
        grant = limiter.acquire(row.sender, 1, row.shop_id)
        if not grant.count:
            return Delivery("queued", grant.wait_ms, grant.reason)
    try:
        delivery = _call(row, provider, limiter, settings)
        if limiter and grant and delivery.limited_at_dispatch:
            limiter.give_back(row.shop_id, grant)  # as a window's: nothing went out
        return delivery
    finally:
        if limiter:
            limiter.withdraw(row.shop_id)


def _call(
    row: TestSend, provider: Provider, limiter: SendLimiter | None, settings: Settings
) -> Delivery:
    claimed = (
        TestSend.update(status="sending", claimed_at=fn.now(), attempts=TestSend.attempts + 1)
        .where((TestSend.id == row.id) & (TestSend.status == "queued"))
        .execute()
    )
    if not claimed:
        return Delivery("taken")
    result: SendResult | None = None
    if limiter and limiter.limits_sends:
        # Admitted ahead of the budget like any window (PROVIDER_RATE_LOOKAHEAD_MS), it departs
        # when the budget frees, as they do: refused here instead, the bulk windows waiting for
        # that moment took every freed send and the test send went round its queue for seconds.
        result = dispatch_refused(limiter, row.sender, 1, settings.provider_rate_departure_ms)
    if result is None:
        result = provider.send_one(row.sender, Sms(row.phone, row.text, f"test-{row.id}"), None)
    if result.limited_ms is not None:
        # Held back by our own limit (or a cool-down) right before the call: not a try.
        TestSend.update(attempts=TestSend.attempts - 1).where(TestSend.id == row.id).execute()
        _unclaim(row.id)
        return Delivery("queued", result.limited_ms, result.limited_by, limited_at_dispatch=True)
    if result.outcome is Outcome.ACCEPTED:
        persist_or_hand_over(row.id, result.provider_id or "")
        return Delivery("sent")
    if result.outcome is Outcome.REJECTED:
        _finish(row.id, "failed", result.reason or "rejected", audit.WORKER)
        return Delivery("failed")
    if result.outcome is Outcome.NOT_SENT:
        return _not_sent(row, result, limiter)
    # Unknown: it may have reached the provider. Never sent again, and not charged (a test
    # send carries no delivery-report callback that could prove it later).
    _finish(row.id, "failed", credits.UNKNOWN_OUTCOME, audit.WORKER)
    return Delivery("failed")


def _not_sent(row: TestSend, result: SendResult, limiter: SendLimiter | None) -> Delivery:
    if result.throttled:
        # A 429: every worker of the account holds off; this one waits as long, no try spent.
        wait = (
            limiter.cool_down(result.retry_after_s)
            if limiter
            else int((result.retry_after_s or DEFAULT_COOL_DOWN_MS / 1000) * 1000)
        )
        TestSend.update(attempts=TestSend.attempts - 1).where(TestSend.id == row.id).execute()
        _unclaim(row.id)
        return Delivery("queued", wait)
    if row.attempts + 1 >= NOT_SENT_ATTEMPTS:
        _finish(row.id, "failed", result.reason or "not_sent", audit.WORKER)
        return Delivery("failed")
    _unclaim(row.id)
    delay = (
        int(result.retry_after_s * 1000) if result.retry_after_s is not None else NOT_SENT_DELAY_MS
    )
    return Delivery("queued", delay)


def _unclaim(test_send_id: int) -> None:
    """The call surely did not reach the provider: queued again."""
    (
        TestSend.update(status="queued", claimed_at=None)
        .where((TestSend.id == test_send_id) & (TestSend.status == "sending"))
        .execute()
    )


def persist_or_hand_over(test_send_id: int, provider_id: str) -> None:
    """Record the provider's acceptance; if that fails (PostgreSQL gone mid-call), hand it to
    `persistTestSend`, which retries: the provider has the message, so it must be charged.
    A retry of `sendTestSMS` would find the row `sending` and do nothing, and the reconcile
    would fail it as `unknown_outcome` after CLAIM_TIMEOUT_MS, sent and never charged."""
    try:
        accepted(test_send_id, provider_id)
    except Exception:  # noqa: BLE001 - any failure here must hand over to the repair
        log.exception(
            "persisting a test send's acceptance failed; handing over to persistTestSend",
            extra={"test_send_id": test_send_id},
        )
        dispatch.publish_test_send_persist(test_send_id, provider_id)


def accepted(test_send_id: int, provider_id: str) -> bool:
    """Sent and debited in one transaction; a replay changes nothing. Also after the reconcile
    failed it as `unknown_outcome` meanwhile: the acceptance is the evidence it was sent."""
    with db.atomic():
        row = (
            TestSend.select()
            .where(
                (TestSend.id == test_send_id)
                & (
                    (TestSend.status == "sending")
                    | ((TestSend.status == "failed") & (TestSend.error == credits.UNKNOWN_OUTCOME))
                )
            )
            .for_update()
            .first()
        )
        if row is None:
            return False
        (
            TestSend.update(
                status="sent", provider_id=provider_id, error=None, finished_at=fn.now()
            )
            .where(TestSend.id == row.id)
            .execute()
        )
        balance = credits.lock_shop(row.shop_id)
        # (the row, sent now, no longer holds its own cost)
        if balance - credits.reserved_total(row.shop_id) < row.segments:
            # Accepted after its hold ended (EVIDENCE_WINDOW_MS after the reconcile gave it
            # up) and the credits spent or held by others since: sent, and not charged, as a
            # campaign's late evidence after its reservation was released. A debit would take
            # credits another send holds (a review: available -1), or fail the balance's
            # check at every retry of `persistTestSend`.
            log.warning(
                "a test send accepted after its hold ended is not charged: the shop's"
                " credits were spent meanwhile",
                extra={"test_send_id": row.id, "segments": row.segments, "balance": balance},
            )
            audit.record(
                audit.WORKER,
                _event(
                    row,
                    "sent",
                    row.status,
                    "sent",
                    "the provider accepted it after its hold ended; not charged",
                ),
            )
            return True
        inserted = (
            CreditTransaction.insert(
                shop=row.shop_id,
                kind="debit",
                amount=-row.segments,
                idempotency_key=f"test-send:{row.id}",
                # Not the campaign's: its debits are its recipients' messages, one each.
                note=f"test send {row.id} of campaign {row.campaign_id}",
            )
            .on_conflict(conflict_target=[CreditTransaction.idempotency_key], action="IGNORE")
            .as_rowcount()
            .execute()
        )
        if inserted:
            (
                Shop.update(credit_balance=Shop.credit_balance - row.segments)
                .where(Shop.id == row.shop_id)
                .execute()
            )
        audit.record(
            audit.WORKER, _event(row, "sent", row.status, "sent", "the provider accepted it")
        )
    return True


def _finish(test_send_id: int, status: str, error: str, actor: Actor) -> None:
    """Failed: its credits are no longer held (nothing is charged)."""
    with db.atomic():
        row = TestSend.get_or_none(TestSend.id == test_send_id)
        if row is None:
            return
        done = (
            TestSend.update(status=status, error=error, finished_at=fn.now())
            .where((TestSend.id == test_send_id) & TestSend.status.in_(HOLDING))
            .execute()
        )
        if done:
            audit.record(actor, _event(row, status, row.status, status, error))


def repair(settings: Settings, actor: Actor) -> int:
    """The clock's reconcile: a test send claimed longer ago than CLAIM_TIMEOUT_MS (its worker
    died mid-call) fails as `unknown_outcome`, never resent and not charged, which frees its
    credits; one queued longer than BATCH_STALE_AFTER_MS (its message lost with Redis) is
    published again (harmless twice: only the delivery that claims it sends). Returns how many
    it touched."""
    timed_out = [
        test_send_id
        for (test_send_id,) in TestSend.select(TestSend.id)
        .where(
            (TestSend.status == "sending")
            & (TestSend.claimed_at < milliseconds_ago(settings.claim_timeout_ms))
        )
        .tuples()
    ]
    for test_send_id in timed_out:
        _finish(test_send_id, "failed", credits.UNKNOWN_OUTCOME, actor)
    # Marked as it is republished (`claimed_at` of a queued row: when it was last published by
    # this repair), so one left waiting by a long cool-down is published once per staleness
    # period, not once more at every reconcile.
    stale = [
        test_send_id
        for (test_send_id,) in TestSend.update(claimed_at=fn.now())
        .where(
            (TestSend.status == "queued")
            & (
                fn.COALESCE(TestSend.claimed_at, TestSend.created_at)
                < milliseconds_ago(settings.batch_stale_after_ms)
            )
        )
        .returning(TestSend.id)
        .tuples()
    ]
    for test_send_id in stale:
        dispatch.publish_test_send(test_send_id)
    return len(timed_out) + len(stale)
