"""The credit ledger and reservations.

The ledger (`credit_transaction`) is append-only with a unique idempotency key per row; the
shop's `credit_balance` column caches its sum and is only changed in the same transaction.
Reserving and topping up lock the shop row first (`SELECT ... FOR NO KEY UPDATE`), so two
campaigns of one shop can never reserve more than is available. The lock is NO KEY: inserting a
ledger row takes a KEY SHARE lock on the shop through the foreign key, which a plain FOR UPDATE
would conflict with (two batches of one shop would deadlock).

A reservation holds `amount - consumed - released` (its outstanding part) while it is `active`
(the campaign may still send) or `held` (the campaign is over; what may still be charged for
messages of unknown outcome); `service.reservations` decides how much that is at each stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peewee import EXCLUDED, ColumnBase, fn

from models import CreditReservation, CreditTransaction, Shop, TestSend
from models.database import db, execute_many
from models.expressions import milliseconds_ago
from service import audit
from service.audit import Actor
from service.errors import InsufficientCredits, InvalidInput, NotFound
from service.infra import config


@dataclass(frozen=True)
class CreditSummary:
    balance: int
    reserved: int
    available: int


def reservation_key(shop_id: int, campaign_id: int) -> str:
    return f"shop:{shop_id}:campaign:{campaign_id}"


def lock_shop(shop_id: int) -> int:
    """Lock the shop's credit row for this transaction and return its balance."""
    balance = (
        Shop.select(Shop.credit_balance)
        .where(Shop.id == shop_id)
        .for_update("FOR NO KEY UPDATE")
        .scalar()
    )
    if balance is None:
        raise NotFound(f"shop {shop_id} does not exist")
    return balance


def outstanding() -> ColumnBase:
    """What a reservation still holds. Never below zero: a debit above its upper bound (a
    configuration change between enqueue and send) must not make other credits look free."""
    return fn.GREATEST(
        CreditReservation.amount - CreditReservation.consumed - CreditReservation.released, 0
    )


# A test send holds its cost while in these states (`service.test_sends`), and while of
# unknown outcome within EVIDENCE_WINDOW_MS (`test_sends_holding`).
TEST_SENDS_HOLDING = ("queued", "sending")
UNKNOWN_OUTCOME = "unknown_outcome"


def test_sends_holding() -> ColumnBase:
    """Test sends whose cost is held: not finished, or failed of unknown outcome within the
    evidence window. The provider's acceptance of such a one may still be persisted
    (`test_sends.accepted`), and must then find its credits: released at once, they could
    be spent meanwhile, and its debit would fail the balance's check at every retry (a
    review: sent, and never charged)."""
    window_ms = config.settings().evidence_window_ms
    return TestSend.status.in_(TEST_SENDS_HOLDING) | (
        (TestSend.status == "failed")
        & (TestSend.error == UNKNOWN_OUTCOME)
        & (TestSend.finished_at > milliseconds_ago(window_ms))
    )


def reserved_total(shop_id: int, excluding_campaign: int | None = None) -> int:
    """Credits the shop's reservations still hold (active and held ones), and its test sends
    not finished yet."""
    query = CreditReservation.select(fn.COALESCE(fn.SUM(outstanding()), 0)).where(
        (CreditReservation.shop == shop_id) & (CreditReservation.status != "released")
    )
    if excluding_campaign is not None:
        query = query.where(CreditReservation.campaign != excluding_campaign)
    tests = TestSend.select(fn.COALESCE(fn.SUM(TestSend.segments), 0)).where(
        (TestSend.shop == shop_id) & test_sends_holding()
    )
    return int(query.scalar()) + int(tests.scalar())


def summary(shop_id: int) -> CreditSummary:
    balance = Shop.select(Shop.credit_balance).where(Shop.id == shop_id).scalar()
    if balance is None:
        raise NotFound(f"shop {shop_id} does not exist")
    reserved = reserved_total(shop_id)
    return CreditSummary(balance, reserved, balance - reserved)


def _check_repeat(key: str, amount: int, reference: str, what: str) -> bool:
    """Whether `key` was already used (the request is a repeat: it changes nothing). A
    repeat must be the same request: the same reference with another amount is refused
    (InvalidInput on `reference`), or the operator would read a success that added nothing."""
    done = CreditTransaction.select(CreditTransaction.amount).where(
        CreditTransaction.idempotency_key == key
    )
    first = done.scalar()
    if first is None:
        return False
    if first != amount:
        raise InvalidInput(
            f"reference {reference!r} was already used for {what} of {first} credits; a "
            f"repeat must give the same amount (this one gives {amount}); another "
            f"{what.split(' ', 1)[1]} needs another reference",
            "reference",
        )
    return True


def top_up(shop_id: int, amount: int, reference: str, actor: Actor) -> int:
    """Add credits once per (shop, reference); a repeated reference with the same amount adds
    nothing, with another amount it is refused. Returns the balance."""
    with db.atomic():
        lock_shop(shop_id)
        if _check_repeat(f"top-up:{shop_id}:{reference}", amount, reference, "a top-up"):
            return lock_shop(shop_id)
        inserted = (
            CreditTransaction.insert(
                shop=shop_id,
                kind="top-up",
                amount=amount,
                idempotency_key=f"top-up:{shop_id}:{reference}",
                note=reference,
            )
            .on_conflict(conflict_target=[CreditTransaction.idempotency_key], action="IGNORE")
            .as_rowcount()
            .execute()
        )
        if inserted:
            (
                Shop.update(credit_balance=Shop.credit_balance + amount)
                .where(Shop.id == shop_id)
                .execute()
            )
            audit.record(
                actor,
                audit.Event(
                    shop_id,
                    "credits",
                    "top_up",
                    f"top-up {reference}",
                    amount=amount,
                    detail={"reference": reference},
                ),
            )
        return lock_shop(shop_id)


def adjust(shop_id: int, amount: int, reason: str, reference: str, actor: Actor) -> CreditSummary:
    """An operator's correction of the balance, once per (shop, reference): a positive amount
    is a `refund` (credits given back, say for undelivered messages), a negative one an
    `adjustment` (credits taken away). A repeated reference with the same amount changes
    nothing; with another amount it is refused. A negative amount may only take available
    credits: what is reserved for campaigns stays theirs, so it never makes an accepted
    campaign's debits uncoverable
    (InsufficientCredits, 402). Returns the shop's credits after it."""
    if not amount:
        raise InvalidInput("amount must not be zero", "amount")
    key = f"adjustment:{shop_id}:{reference}"
    with db.atomic():
        balance = lock_shop(shop_id)  # serialises adjustments, top-ups and reservations
        if not _check_repeat(key, amount, reference, "an adjustment"):
            available = balance - reserved_total(shop_id)
            if -amount > available:
                raise InsufficientCredits(
                    f"an adjustment of {amount} credits needs {-amount}"
                    f" available; {max(available, 0)} available"
                )
            (
                CreditTransaction.insert(
                    shop=shop_id,
                    kind="refund" if amount > 0 else "adjustment",
                    amount=amount,
                    idempotency_key=key,
                    note=reason,
                ).execute()
            )
            (
                Shop.update(credit_balance=Shop.credit_balance + amount)
                .where(Shop.id == shop_id)
                .execute()
            )
            audit.record(
                actor,
                audit.Event(
                    shop_id,
                    "credits",
                    "refund" if amount > 0 else "adjustment",
                    reason,
                    amount=amount,
                    detail={"reference": reference},
                ),
            )
        return summary(shop_id)


def reserve(shop_id: int, campaign_id: int, amount: int, actor: Actor) -> None:
    """Create (or grow) the campaign's reservation; must run inside the enqueue transaction.

    The campaign's own active reservation counts as available to itself (a resumed or
    re-enqueued campaign reuses it), which is the seed's `insufficient_credits` bug made
    impossible."""
    balance = lock_shop(shop_id)
    others = reserved_total(shop_id, excluding_campaign=campaign_id)
    if amount > balance - others:
        raise InsufficientCredits(
            f"this campaign needs up to {amount} credits; {max(balance - others, 0)} available"
        )
    (
        CreditReservation.insert(
            shop=shop_id,
            campaign=campaign_id,
            key=reservation_key(shop_id, campaign_id),
            amount=amount,
        )
        .on_conflict(
            conflict_target=[CreditReservation.campaign],
            update={
                CreditReservation.amount: EXCLUDED.amount + CreditReservation.consumed,
                CreditReservation.status: "active",
                CreditReservation.released: 0,
                CreditReservation.released_at: None,
            },
        )
        .execute()
    )
    audit.record(
        actor,
        audit.Event(
            shop_id,
            "reservation",
            "reserved",
            "the campaign's upper bound, reserved at enqueue",
            campaign_id=campaign_id,
            to_status="active",
            amount=amount,
        ),
    )


def cover_excess(shop_id: int, campaign_id: int, excess: int, actor: Actor) -> bool:
    """Grow an active reservation by `excess` if the shop's available credits allow it.

    Used when a batch turns out to cost more than its part of the reservation (the upper bound
    was computed at enqueue; a configuration change can exceed it)."""
    with db.atomic():
        # Reservation before shop: the order every batch's persist takes them in.
        (
            CreditReservation.select(CreditReservation.id)
            .where(CreditReservation.campaign == campaign_id)
            .for_update()
            .execute()
        )
        balance = lock_shop(shop_id)
        if excess > balance - reserved_total(shop_id):
            return False
        grown = (
            CreditReservation.update(amount=CreditReservation.amount + excess)
            .where(
                (CreditReservation.campaign == campaign_id) & (CreditReservation.status == "active")
            )
            .execute()
        )
        if grown:
            audit.record(
                actor,
                audit.Event(
                    shop_id,
                    "reservation",
                    "grown",
                    "a batch costs more than its part of the reservation",
                    campaign_id=campaign_id,
                    amount=excess,
                ),
            )
        return bool(grown)


def insert_debits(shop_id: int, campaign_id: int, debits: Sequence[tuple[int, int]]) -> int:
    """One debit per accepted message, keyed `debit:{recipient_id}`; a replay inserts nothing.

    `debits` is [(recipient_id, segments)]. Runs inside the caller's transaction, which must
    then call `consume()` with the returned total (the credits actually inserted).

    SQL (`execute_values`), not Peewee: it is the bulk insert of every batch's persist, a row
    per accepted message, kept as it was when bench/RESULTS.md measured the pipeline (100,000
    recipients at 6,201/s, PostgreSQL the bottleneck at 17.0 CPU s)."""
    rows = [(shop_id, -segments, f"debit:{rid}", campaign_id, rid) for rid, segments in debits]
    inserted = execute_many(
        "INSERT INTO credit_transaction (shop_id, kind, amount, idempotency_key, campaign_id,"
        " recipient_id) VALUES %s ON CONFLICT (idempotency_key) DO NOTHING RETURNING amount",
        rows,
        template="(%s, 'debit', %s, %s, %s, %s)",
        fetch=True,
    )
    return -sum(row[0] for row in inserted)


class HoldReleased(RuntimeError):
    """Debits found their campaign's reservation released: the caller's transaction must roll
    back, and its retry charges nothing (`service.sending.MARK_SENT`)."""


def consume(shop_id: int, campaign_id: int, total: int) -> None:
    """Take debited credits from the reservation and the cached balance.

    Every batch of a shop updates these two rows, so callers do this last in their
    transaction (the locks are held until the commit) and in this order (reservation, then
    shop) like every other transaction: no lock cycle. A late upgrade (evidence after the
    campaign finished) draws on the reservation's hold for unknown outcomes (`held`). Evidence
    older than that hold charges nothing (`MARK_SENT` reads the hold), but the hold may be
    released between that read and this lock (the evidence window ending that instant): the
    debits would then draw on credits already given back as available, so HoldReleased."""
    if not total:
        return
    held = (
        CreditReservation.update(consumed=CreditReservation.consumed + total)
        .where(
            (CreditReservation.campaign == campaign_id) & (CreditReservation.status != "released")
        )
        .execute()
    )
    if not held:
        raise HoldReleased(f"campaign {campaign_id}'s reservation was released meanwhile")
    (Shop.update(credit_balance=Shop.credit_balance - total).where(Shop.id == shop_id).execute())


def release(campaign_id: int, actor: Actor, reason: str) -> bool:
    """Release the campaign's reservation (idempotent): what was not consumed is available
    again. Recorded for `actor` with `reason` when it was not released before."""
    with db.atomic():
        released = list(
            CreditReservation.update(
                status="released",
                released_at=fn.now(),
                released=fn.GREATEST(CreditReservation.amount - CreditReservation.consumed, 0),
            )
            .where(
                (CreditReservation.campaign == campaign_id)
                & (CreditReservation.status != "released")
            )
            .returning(CreditReservation.shop, CreditReservation.released)
            .tuples()
        )
        for shop_id, amount in released:
            audit.record(
                actor,
                audit.Event(
                    shop_id,
                    "reservation",
                    "released",
                    reason,
                    campaign_id=campaign_id,
                    to_status="released",
                    amount=amount,
                ),
            )
    return bool(released)


def transactions(shop_id: int, limit: int, after: int | None) -> list[dict]:
    """The shop's ledger rows in id order, `limit` of them after the id `after`."""
    query = (
        CreditTransaction.select(
            CreditTransaction.id,
            CreditTransaction.kind,
            CreditTransaction.amount,
            CreditTransaction.idempotency_key.alias("key"),
            CreditTransaction.campaign_id,
            CreditTransaction.recipient_id,
            CreditTransaction.note,
            CreditTransaction.created_at,
        )
        .where(CreditTransaction.shop == shop_id)
        .order_by(CreditTransaction.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(CreditTransaction.id > after)
    return list(query.dicts())
