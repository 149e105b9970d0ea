"""Contacts: bulk import with E.164 normalisation, listing, and opting out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import phonenumbers

from models.database import db, execute, execute_many, fetchall

MAX_IMPORT = 10_000


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)


def normalise_phone(raw: str, default_region: str | None = None) -> tuple[str, str | None]:
    """(E.164 form, ISO region) of `raw`, or ValueError saying why it is not a valid number.
    The region is kept with the contact: parsing again for every message costs ~0.1 ms."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"not a phone number ({error})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
            phonenumbers.region_code_for_number(number))


def import_contacts(shop_id: int, contacts: Sequence[dict[str, Any]],
                    default_region: str | None = None) -> ImportResult:
    """Upsert contacts in one statement. Invalid rows are reported by index and skipped;
    duplicates (after normalisation) are merged, the last first name winning. A re-imported
    number keeps its opt-out: suppression outlives the contact row."""
    result = ImportResult()
    merged: dict[str, tuple[str | None, str | None]] = {}
    for index, contact in enumerate(contacts):
        try:
            phone, country = normalise_phone(contact["phone"], default_region)
        except ValueError as error:
            result.invalid.append({"index": index, "field": "phone", "error": str(error)})
            continue
        name = (contact.get("first_name") or "").strip() or None
        if name is None and phone in merged:
            name = merged[phone][1]  # a later duplicate without a name keeps the earlier one
        merged[phone] = (country, name)
    rows = [(shop_id, phone, country, name) for phone, (country, name) in merged.items()]
    with db.atomic():
        outcome = execute_many(
            "INSERT INTO contact (shop_id, phone, country, first_name) VALUES %s"
            " ON CONFLICT (shop_id, phone) DO UPDATE"
            " SET first_name = coalesce(EXCLUDED.first_name, contact.first_name),"
            "     updated_at = now()"
            " RETURNING (xmax = 0)",
            rows, fetch=True,
        )
    result.created = sum(1 for (inserted,) in outcome if inserted)
    result.updated = len(outcome) - result.created
    return result


def list_contacts(shop_id: int, limit: int, after: int | None,
                  opted_out: bool | None) -> list[dict[str, Any]]:
    rows = fetchall(
        "SELECT id, phone, first_name, opted_out_at, created_at FROM contact"
        " WHERE shop_id = %s AND (%s::bigint IS NULL OR id > %s)"
        "   AND (%s::boolean IS NULL OR (opted_out_at IS NOT NULL) = %s)"
        " ORDER BY id LIMIT %s",
        (shop_id, after, after, opted_out, opted_out, limit),
    )
    keys = ("id", "phone", "first_name", "opted_out_at", "created_at")
    return [dict(zip(keys, row)) for row in rows]


def opt_out(shop_id: int, contact_id: int, source: str = "link") -> bool:
    """Opt the contact out and suppress its number for the shop (idempotent).
    Returns whether the contact exists."""
    with db.atomic():
        rows = fetchall(
            "UPDATE contact SET opted_out_at = coalesce(opted_out_at, now()), updated_at = now()"
            " WHERE id = %s AND shop_id = %s RETURNING phone", (contact_id, shop_id))
        if not rows:
            return False
        execute(
            "INSERT INTO suppression (shop_id, phone, source) VALUES (%s, %s, %s)"
            " ON CONFLICT (shop_id, phone) DO NOTHING", (shop_id, rows[0][0], source))
    return True
