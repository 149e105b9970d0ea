"""Suppressions (SPEC 3, 11): numbers a shop never messages, in clear or, once erased, as a
keyed digest.

A suppression names a number in clear (`phone`) while the shop holds it; erasing the number
turns it into its digest (`phone_hash`, HMAC-SHA256 under SECRET_KEY) with no number left. An
import that brings an erased number back finds the digest (`restore_erased`) and suppresses
the number in clear again, so the enqueue and the send-time claim, which compare numbers in
clear, leave it out like any other. Rotating SECRET_KEY makes the digests unrecognisable.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from models import Suppression
from models.database import db, execute, execute_many, fetchall
from service import audit
from service.audit import Actor

# Lifted by the number's owner (a START reply); an operator's or merchant's own block is not.
LIFTABLE_SOURCES = ("link", "reply", "erasure")


def phone_digest(secret: str, phone: str) -> str:
    """The keyed digest an erased number is remembered by (unkeyed, the ten-odd digits of a
    phone number would be found by trying them all)."""
    return hmac.new(secret.encode(), f"suppression:{phone}".encode(), hashlib.sha256).hexdigest()


def _event(
    shop_id: int,
    action: str,
    digest: str,
    source: str,
    reason: str,
    contact_id: int | None = None,
) -> audit.Event:
    """A suppression change, naming the number by its digest only (and its contact by id)."""
    detail: dict[str, object] = {"phone_digest": digest, "source": source}
    if contact_id is not None:
        detail["contact_id"] = contact_id
    return audit.Event(shop_id, "suppression", action, reason, detail=detail)


def suppress(
    shop_id: int,
    phone: str,
    source: str,
    secret: str,
    actor: Actor,
    contact_id: int | None = None,
) -> bool:
    """Suppress `phone` for the shop (idempotent: the first source and time are kept, and
    only the first is recorded, for `actor`). Returns whether it was not suppressed before.
    Inside the caller's transaction."""
    added = bool(
        Suppression.insert(shop=shop_id, phone=phone, source=source)
        .on_conflict_ignore()
        .as_rowcount()
        .execute()
    )
    if added:
        audit.record(
            actor,
            _event(
                shop_id,
                "suppressed",
                phone_digest(secret, phone),
                source,
                f"opt-out by {source}",
                contact_id,
            ),
        )
    return added


def lift(shop_id: int, phone: str, secret: str, actor: Actor, reason: str) -> int:
    """Remove the shop's suppressions of `phone` that its owner may lift (by link, by reply,
    by erasure), in clear or hashed; returns how many. Each is recorded for `actor`. Inside
    the caller's transaction."""
    lifted = list(
        Suppression.delete()
        .where(
            (Suppression.shop == shop_id)
            & (
                (Suppression.phone == phone)
                | (Suppression.phone_hash == phone_digest(secret, phone))
            )
            & Suppression.source.in_(LIFTABLE_SOURCES)
        )
        .returning(Suppression.source)
        .tuples()
        .execute()
    )
    digest = phone_digest(secret, phone)
    audit.record_all(
        actor, (_event(shop_id, "lifted", digest, source, reason) for (source,) in lifted)
    )
    return len(lifted)


def hash_numbers(shop_id: int, phones: Sequence[str], secret: str, actor: Actor) -> None:
    """Erasure: every suppression of `phones` by the shop becomes its digest (source kept), and
    a number that was not suppressed is suppressed as erased; each recorded for `actor`. Inside
    the caller's transaction."""
    if not phones:
        return
    # Arrays rather than IN lists: a shop's erasure passes every number it held (50,000).
    sources = dict(
        fetchall(
            "SELECT phone, source FROM suppression WHERE shop_id = %s AND phone = ANY(%s)",
            (shop_id, list(phones)),
        )
    )
    digests = {phone: phone_digest(secret, phone) for phone in phones}
    already = {
        digest
        for (digest,) in fetchall(
            "SELECT phone_hash FROM suppression WHERE shop_id = %s AND phone_hash = ANY(%s)",
            (shop_id, list(digests.values())),
        )
    }
    audit.record_all(
        actor,
        (
            _event(
                shop_id,
                "erased" if phone in sources else "suppressed",
                digests[phone],
                sources.get(phone, "erasure"),
                "the number was erased: kept as its digest only"
                if phone in sources
                else "the number was erased: suppressed so it is never messaged again",
            )
            for phone in phones
            if phone in sources or digests[phone] not in already
        ),
    )
    execute_many(
        "INSERT INTO suppression (shop_id, phone, phone_hash, source) VALUES %s"
        " ON CONFLICT (shop_id, phone_hash) WHERE phone_hash IS NOT NULL DO NOTHING",
        [(shop_id, None, digests[phone], sources.get(phone, "erasure")) for phone in phones],
    )
    execute(
        "DELETE FROM suppression WHERE shop_id = %s AND phone = ANY(%s)", (shop_id, list(phones))
    )


def hash_shop_numbers(shop_id: int, secret: str, actor: Actor, also: Sequence[str] = ()) -> int:
    """Shop erasure: every suppression of the shop in clear becomes its digest, and the
    numbers `also` (its contacts') are suppressed as digests."""
    phones = sorted(
        {
            *also,
            *Suppression.select(Suppression.phone)
            .where((Suppression.shop == shop_id) & Suppression.phone.is_null(False))
            .scalars(),
        }
    )
    with db.atomic():
        hash_numbers(shop_id, phones, secret, actor)
    return len(phones)


def restore_erased(shop_id: int, phones: Iterable[str], secret: str, actor: Actor) -> list[str]:
    """The numbers among `phones` the shop erased earlier: each is suppressed in clear again
    (with the source it had), recorded for `actor` and returned. Inside the caller's
    transaction."""
    by_digest = {phone_digest(secret, phone): phone for phone in phones}
    if not by_digest:
        return []
    erased = list(
        Suppression.select(Suppression.phone_hash, Suppression.source)
        .where((Suppression.shop == shop_id) & Suppression.phone_hash.in_(list(by_digest)))
        .tuples()
    )
    if not erased:
        return []
    restored = (
        Suppression.insert_many(
            [(shop_id, by_digest[digest], source) for digest, source in erased],
            fields=[Suppression.shop, Suppression.phone, Suppression.source],
        )
        .on_conflict_ignore()
        .returning(Suppression.phone, Suppression.source)
        .tuples()
        .execute()
    )
    audit.record_all(
        actor,
        (
            _event(
                shop_id,
                "suppressed",
                phone_digest(secret, phone),
                source,
                "an erased number was imported again: suppressed in clear again",
            )
            for phone, source in restored
        ),
    )
    return sorted(by_digest[digest] for digest, _ in erased)


def is_suppressed(shop_id: int, phone: str, secret: str) -> bool:
    """Whether the shop suppresses `phone`, in clear or as an erased number."""
    return (
        Suppression.select()
        .where(
            (Suppression.shop == shop_id)
            & (
                (Suppression.phone == phone)
                | (Suppression.phone_hash == phone_digest(secret, phone))
            )
        )
        .exists()
    )


def erased(shop_ids: Iterable[int], phones: Iterable[str], secret: str) -> set[tuple[int, str]]:
    """The (shop, number) pairs among `shop_ids` x `phones` that the shop keeps only as an
    erased number: its digest suppressed, and no contact holding it in clear (an import after
    the erasure brings the contact back)."""
    shop_list, by_digest = sorted(set(shop_ids)), {phone_digest(secret, p): p for p in phones}
    if not shop_list or not by_digest:
        return set()
    digested = {
        (shop_id, by_digest[digest])
        for shop_id, digest in fetchall(
            "SELECT shop_id, phone_hash FROM suppression"
            " WHERE shop_id = ANY(%s) AND phone_hash = ANY(%s)",
            (shop_list, list(by_digest)),
        )
    }
    if not digested:
        return set()
    held = set(
        fetchall(
            "SELECT shop_id, phone FROM contact WHERE shop_id = ANY(%s) AND phone = ANY(%s)",
            (shop_list, sorted({phone for _, phone in digested})),
        )
    )
    return digested - held
