"""Consent (SPEC 11): the consent in force on each contact and its append-only log.

A contact has consent when it carries an opt-in (`consent_collected_at`, the most recent one)
and is not opted out. Opt-ins come from an import (`consent` of a row, or Shopify's "Accepts
SMS Marketing") or a START reply; opt-outs from the unsubscribe link, a STOP reply or erasure.
Each is one `consent_event` row, which the database refuses to change (erasure may only clear
a proof). A shop with `require_consent` sends campaigns only to contacts with consent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import fn

from models import ConsentEvent, Contact
from models.database import execute_many

KINDS = ("opt_in", "opt_out")
SOURCES = ("import", "link", "reply", "admin", "erasure")


@dataclass(frozen=True)
class Consent:
    """An opt-in as a merchant states it on import: how it was collected, when, and evidence."""

    source: str
    collected_at: datetime
    proof: str | None = None


def record(
    shop_id: int,
    contact_ids: Sequence[int],
    kind: str,
    source: str,
    collected_at: datetime | None = None,
    proof: str | None = None,
    consent_source: str | None = None,
) -> int:
    """Append one event per contact (inside the caller's transaction); returns how many.
    SQL (`execute_values`): an erasure of a shop logs one per contact, in few statements."""
    rows = [
        (shop_id, contact_id, kind, source, consent_source, collected_at, proof)
        for contact_id in contact_ids
    ]
    execute_many(
        "INSERT INTO consent_event (shop_id, contact_id, kind, source, consent_source,"
        " collected_at, proof) VALUES %s",
        rows,
        template="(%s, %s, %s, %s, %s, coalesce(%s::timestamptz, now()), %s)",
    )
    return len(rows)


def record_imported(shop_id: int, consents: Sequence[tuple[int, Consent]]) -> int:
    """The opt-ins of an import, one per (contact, consent): importing the same consent again
    records nothing (a unique index). Returns how many were new.

    SQL (`execute_values`): up to 10,000 rows per import in a few statements, and the partial
    unique index as the conflict target, which Peewee's insert_many cannot name."""
    rows = [
        (shop_id, contact_id, consent.source, consent.collected_at, consent.proof)
        for contact_id, consent in consents
    ]
    return len(
        execute_many(
            "INSERT INTO consent_event (shop_id, contact_id, kind, source, consent_source,"
            " collected_at, proof) VALUES %s"
            " ON CONFLICT (contact_id, collected_at, consent_source)"
            "   WHERE kind = 'opt_in' AND source = 'import' DO NOTHING RETURNING id",
            rows,
            template="(%s, %s, 'opt_in', 'import', %s, %s, %s)",
            fetch=True,
        )
    )


def opt_in(shop_id: int, phone: str, source: str, proof: str | None) -> list[int]:
    """The contact with `phone` gives consent now (a START reply): no longer opted out, its
    consent is this one, and the log says so. Returns its id ([] when there is no contact)."""
    ids = [
        contact_id
        for (contact_id,) in (
            Contact.update(
                opted_out_at=None,
                consent_source=source,
                consent_collected_at=fn.now(),
                updated_at=fn.now(),
            )
            .where((Contact.shop == shop_id) & (Contact.phone == phone))
            .returning(Contact.id)
            .tuples()
            .execute()
        )
    ]
    record(shop_id, ids, "opt_in", source, proof=proof, consent_source=source)
    return ids


def opt_out(shop_id: int, phone: str, source: str, proof: str | None) -> list[int]:
    """The contact with `phone` opts out now; logged only when it was subscribed (the first
    opt-out time is kept). Returns the ids that were opted out by this call."""
    ids = [
        contact_id
        for (contact_id,) in (
            Contact.update(opted_out_at=fn.now(), updated_at=fn.now())
            .where(
                (Contact.shop == shop_id)
                & (Contact.phone == phone)
                & Contact.opted_out_at.is_null()
            )
            .returning(Contact.id)
            .tuples()
            .execute()
        )
    ]
    record(shop_id, ids, "opt_out", source, proof=proof)
    return ids


def history(shop_id: int, contact_id: int, limit: int, after: int | None) -> dict[str, Any] | None:
    """A contact's consent in force and one keyset page of its log; None when the shop has no
    such contact."""
    contact = (
        Contact.select(
            Contact.id,
            Contact.consent_source,
            Contact.consent_collected_at,
            Contact.opted_out_at,
            Contact.erased_at,
        )
        .where((Contact.id == contact_id) & (Contact.shop == shop_id))
        .first()
    )
    if contact is None:
        return None
    events = ConsentEvent.select(
        ConsentEvent.id,
        ConsentEvent.kind,
        ConsentEvent.source,
        ConsentEvent.consent_source,
        ConsentEvent.collected_at,
        ConsentEvent.proof,
        ConsentEvent.created_at,
    ).where(ConsentEvent.contact == contact_id)
    if after is not None:
        events = events.where(ConsentEvent.id > after)
    consent = None
    if contact.consent_collected_at is not None:
        consent = {"source": contact.consent_source, "collected_at": contact.consent_collected_at}
    return {
        "contact_id": contact.id,
        "consent": consent,
        "consented": consent is not None and contact.opted_out_at is None,
        "opted_out_at": contact.opted_out_at,
        "erased_at": contact.erased_at,
        "items": list(events.order_by(ConsentEvent.id).limit(limit).dicts()),
    }
