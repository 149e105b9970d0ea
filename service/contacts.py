"""Contacts: bulk import with E.164 normalisation, listing, and opting out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import phonenumbers
from peewee import fn

from models import Contact, Shop, Suppression
from models.database import db, execute_many

MAX_IMPORT = 10_000


@dataclass(frozen=True)
class RejectedRow:
    """A row of an import that its caller's validation refused: `field` names the row's field
    (None: the row as a whole), `error` says why. It is reported at its index, not imported."""

    field: str | None
    error: str


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Subscription:
    """What an unsubscribe page shows: whose messages, and whether they already stopped."""

    shop_name: str
    opted_out: bool


E164_MAX_DIGITS = 15


def normalise_phone(raw: str, default_region: str | None = None) -> tuple[str, str | None]:
    """(E.164 form, ISO region) of `raw`, or ValueError saying why it is not a valid number.
    The region is kept with the contact: parsing again for every message costs ~0.1 ms."""
    if not raw.strip():
        raise ValueError("phone is blank")
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"not a phone number ({error})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # phonenumbers accepts some national numbers (German fixed lines) longer than E.164's 15
    # digits, which no provider can address.
    if len(e164) - 1 > E164_MAX_DIGITS:
        raise ValueError(f"not a valid phone number (more than {E164_MAX_DIGITS} digits)")
    return e164, phonenumbers.region_code_for_number(number)


def import_contacts(shop_id: int, rows: Sequence[Mapping[str, Any] | RejectedRow],
                    default_region: str | None = None) -> ImportResult:
    """Upsert the valid rows in one statement and report every other one by its index.

    A row is a contact (`phone`, optional `first_name`) or a `RejectedRow`; a phone that is not
    a valid number (for `default_region` when national) is reported like a rejected row.
    Duplicates (after normalisation) are one contact, created or updated once: the last row
    with a first name gives it, and a later duplicate without one keeps the earlier name (as a
    re-import without names keeps the stored ones). A re-imported number keeps its opt-out:
    suppression outlives the contact row."""
    result = ImportResult()
    merged: dict[str, tuple[str | None, str | None]] = {}
    for index, row in enumerate(rows):
        if isinstance(row, RejectedRow):
            result.invalid.append({"index": index, "field": row.field, "error": row.error})
            continue
        try:
            phone, country = normalise_phone(row["phone"], default_region)
        except ValueError as error:
            result.invalid.append({"index": index, "field": "phone", "error": str(error)})
            continue
        name = (row.get("first_name") or "").strip() or None
        if name is None and phone in merged:
            name = merged[phone][1]
        merged[phone] = (country, name)
    outcome = _upsert(shop_id, [(shop_id, phone, country, name)
                                for phone, (country, name) in merged.items()])
    result.created = sum(1 for (inserted,) in outcome if inserted)
    result.updated = len(outcome) - result.created
    return result


def _upsert(shop_id: int, rows: list[tuple[int, str, str | None, str | None]]) -> list[tuple]:
    """One `(created?)` per row. SQL rather than Peewee: `execute_values` pages 10,000 rows
    into a few statements, and `xmax = 0` (the row was inserted, not updated) is what tells
    created from updated in the same round trip."""
    with db.atomic():
        return execute_many(
            "INSERT INTO contact (shop_id, phone, country, first_name) VALUES %s"
            " ON CONFLICT (shop_id, phone) DO UPDATE"
            " SET first_name = coalesce(EXCLUDED.first_name, contact.first_name),"
            "     updated_at = now()"
            " RETURNING (xmax = 0)",
            rows, fetch=True,
        )


def list_contacts(shop_id: int, limit: int, after: int | None,
                  opted_out: bool | None) -> list[dict[str, Any]]:
    """One keyset page of the shop's contacts, optionally only (un)subscribed ones."""
    query = (Contact
             .select(Contact.id, Contact.phone, Contact.first_name, Contact.opted_out_at,
                     Contact.created_at)
             .where(Contact.shop == shop_id))
    if after is not None:
        query = query.where(Contact.id > after)
    if opted_out is not None:
        query = query.where(Contact.opted_out_at.is_null(not opted_out))
    return list(query
                .order_by(Contact.id)
                .limit(limit)
                .dicts())


def subscription(shop_id: int, contact_id: int) -> Subscription | None:
    """The shop and opt-out state of a contact, or None when it does not exist. Reads only."""
    row = (Contact
           .select(Shop.name, Contact.opted_out_at)
           .join(Shop)
           .where(Contact.id == contact_id, Contact.shop == shop_id)
           .tuples()
           .first())
    return None if row is None else Subscription(row[0], row[1] is not None)


def opt_out(shop_id: int, contact_id: int, source: str = "link") -> Subscription | None:
    """Opt the contact out and suppress its number for the shop (idempotent: the first
    opt-out time is kept). Returns the contact's subscription afterwards, None when it does
    not exist."""
    with db.atomic():
        rows = (Contact
                .update(opted_out_at=fn.coalesce(Contact.opted_out_at, fn.now()),
                        updated_at=fn.now())
                .where(Contact.id == contact_id, Contact.shop == shop_id)
                .returning(Contact.phone)
                .tuples()
                .execute())
        phones = [phone for (phone,) in rows]
        if not phones:
            return None
        (Suppression
         .insert(shop=shop_id, phone=phones[0], source=source)
         .on_conflict_ignore()
         .execute())
    return subscription(shop_id, contact_id)
