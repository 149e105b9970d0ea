"""The credit ledger and reservations.

The ledger (`credit_transaction`) is append-only with a unique idempotency key per row; the
shop's `credit_balance` column caches its sum and is only changed in the same transaction.
Reserving and topping up lock the shop row first (`SELECT ... FOR NO KEY UPDATE`), so two
campaigns of one shop can never reserve more than is available. The lock is NO KEY: inserting a
ledger row takes a KEY SHARE lock on the shop through the foreign key, which a plain FOR UPDATE
would conflict with (two batches of one shop would deadlock).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from models.database import db, execute, execute_many, fetchall, fetchone
from service.errors import InsufficientCredits, NotFound


@dataclass(frozen=True)
class CreditSummary:
    balance: int
    reserved: int
    available: int


def reservation_key(shop_id: int, campaign_id: int) -> str:
    return f"shop:{shop_id}:campaign:{campaign_id}"


def lock_shop(shop_id: int) -> int:
    """Lock the shop's credit row for this transaction and return its balance."""
    row = fetchone("SELECT credit_balance FROM shop WHERE id = %s FOR NO KEY UPDATE", (shop_id,))
    if row is None:
        raise NotFound(f"shop {shop_id} does not exist")
    return row[0]


def reserved_total(shop_id: int, excluding_campaign: int | None = None) -> int:
    row = fetchone(
        "SELECT coalesce(sum(amount - consumed), 0) FROM credit_reservation"
        " WHERE shop_id = %s AND status = 'active' AND campaign_id IS DISTINCT FROM %s",
        (shop_id, excluding_campaign),
    )
    return int(row[0])


def summary(shop_id: int) -> CreditSummary:
    balance = fetchone("SELECT credit_balance FROM shop WHERE id = %s", (shop_id,))
    if balance is None:
        raise NotFound(f"shop {shop_id} does not exist")
    reserved = reserved_total(shop_id)
    return CreditSummary(balance[0], reserved, balance[0] - reserved)


def top_up(shop_id: int, amount: int, reference: str) -> int:
    """Add credits once per (shop, reference); a repeated reference adds nothing. Returns balance."""
    with db.atomic():
        lock_shop(shop_id)
        inserted = execute(
            "INSERT INTO credit_transaction (shop_id, kind, amount, idempotency_key, note)"
            " VALUES (%s, 'top-up', %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING",
            (shop_id, amount, f"top-up:{shop_id}:{reference}", reference),
        )
        if inserted:
            execute("UPDATE shop SET credit_balance = credit_balance + %s WHERE id = %s",
                    (amount, shop_id))
        return lock_shop(shop_id)


def reserve(shop_id: int, campaign_id: int, amount: int) -> None:
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
    execute(
        "INSERT INTO credit_reservation (shop_id, campaign_id, key, amount)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (campaign_id) DO UPDATE"
        " SET amount = EXCLUDED.amount + credit_reservation.consumed, status = 'active',"
        "     released_at = NULL",
        (shop_id, campaign_id, reservation_key(shop_id, campaign_id), amount),
    )


def cover_excess(shop_id: int, campaign_id: int, excess: int) -> bool:
    """Grow an active reservation by `excess` if the shop's available credits allow it.

    Used when a batch turns out to cost more than its part of the reservation (the upper bound
    was computed at enqueue; a configuration change can exceed it)."""
    with db.atomic():
        # Reservation before shop: the order every batch's persist takes them in.
        execute("SELECT 1 FROM credit_reservation WHERE campaign_id = %s FOR UPDATE",
                (campaign_id,))
        balance = lock_shop(shop_id)
        if excess > balance - reserved_total(shop_id):
            return False
        return bool(execute(
            "UPDATE credit_reservation SET amount = amount + %s"
            " WHERE campaign_id = %s AND status = 'active'", (excess, campaign_id)))


def insert_debits(shop_id: int, campaign_id: int, debits: Sequence[tuple[int, int]]) -> int:
    """One debit per accepted message, keyed `debit:{recipient_id}`; a replay inserts nothing.

    `debits` is [(recipient_id, segments)]. Runs inside the caller's transaction, which must
    then call `consume()` with the returned total (the credits actually inserted)."""
    rows = [(shop_id, -segments, f"debit:{rid}", campaign_id, rid) for rid, segments in debits]
    inserted = execute_many(
        "INSERT INTO credit_transaction (shop_id, kind, amount, idempotency_key, campaign_id,"
        " recipient_id) VALUES %s ON CONFLICT (idempotency_key) DO NOTHING RETURNING amount",
        rows, template="(%s, 'debit', %s, %s, %s, %s)", fetch=True,
    )
    return -sum(row[0] for row in inserted)


def consume(shop_id: int, campaign_id: int, total: int) -> None:
    """Take debited credits from the reservation and the cached balance.

    Every batch of a shop updates these two rows, so callers do this last in their
    transaction (the locks are held until the commit) and in this order (reservation, then
    shop) like every other transaction: no lock cycle. A late upgrade (evidence after the
    campaign finished) finds the reservation released; the debit then draws on the balance
    directly, which is what the reservation held."""
    if not total:
        return
    execute("UPDATE credit_reservation SET consumed = consumed + %s"
            " WHERE campaign_id = %s AND status = 'active'", (total, campaign_id))
    execute("UPDATE shop SET credit_balance = credit_balance - %s WHERE id = %s",
            (total, shop_id))


def release(campaign_id: int) -> bool:
    """Release the campaign's reservation (idempotent): what was not consumed is available again."""
    return bool(execute(
        "UPDATE credit_reservation SET status = 'released', released_at = now()"
        " WHERE campaign_id = %s AND status = 'active'", (campaign_id,)))


def transactions(shop_id: int, limit: int, after: int | None) -> list[dict]:
    rows = fetchall(
        "SELECT id, kind, amount, idempotency_key, campaign_id, recipient_id, note, created_at"
        " FROM credit_transaction WHERE shop_id = %s AND (%s::bigint IS NULL OR id > %s)"
        " ORDER BY id LIMIT %s",
        (shop_id, after, after, limit),
    )
    keys = ("id", "kind", "amount", "key", "campaign_id", "recipient_id", "note", "created_at")
    return [dict(zip(keys, row)) for row in rows]
