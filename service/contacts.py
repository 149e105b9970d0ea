"""Contacts: bulk import with E.164 normalisation and consent, listing, and opting out."""

from __future__ import annotations

import functools
import importlib.resources
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
from peewee import fn

from models import Contact, Shop
from models.database import db, execute, execute_many, fetchall, retry_conflicts
from service import consent, erasure_lock, suppressions
from service.audit import Actor
from service.consent import Consent
from service.infra import config

MAX_IMPORT = 10_000
# A consent "collected" later than this after the import's own time is a mistake (a wrong
# year, a time zone off by a day), not a consent: the row is refused rather than stored.
CONSENT_CLOCK_SKEW = timedelta(minutes=5)


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
# phonenumbers' reasons, in words (its own text is "(1) The string supplied did not seem...").
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
        "not a phone number: no valid country code (write it with + and the country code,"
        " or import with default_country)"
    ),
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "not a phone number: too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "not a phone number: too short",
    phonenumbers.NumberParseException.TOO_LONG: "not a phone number: too long",
}


def normalise_phone(raw: str, default_region: str | None = None) -> tuple[str, str | None]:
    """(E.164 form, ISO region) of `raw`, or ValueError saying why it is not a valid number.
    The region is kept with the contact: parsing again for every message costs ~0.1 ms."""
    if not raw.strip():
        raise ValueError("phone is blank")
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        unknown = default_region and default_region not in phonenumbers.SUPPORTED_REGIONS
        if unknown and error.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            # A parameter, not the body's shape: the import's international numbers stand.
            raise ValueError(
                f"not a phone number: no country code, and default_country {default_region!r}"
                " is not a known ISO 3166 country code (such as GR or US)"
            ) from None
        raise ValueError(_PARSE_ERRORS.get(error.error_type, "not a phone number")) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # phonenumbers accepts some national numbers (German fixed lines) longer than E.164's 15
    # digits, which no provider can address.
    if len(e164) - 1 > E164_MAX_DIGITS:
        raise ValueError(f"not a valid phone number (more than {E164_MAX_DIGITS} digits)")
    return e164, phonenumbers.region_code_for_number(number)


# A row's mark (a CSV row whose Shopify `Accepts SMS Marketing` says no): a consent the contact
# has from Shopify is withdrawn.
WITHDRAWS_SHOPIFY_CONSENT = "withdraws_shopify_consent"
SHOPIFY_REFUSAL_PROOF = "Shopify customer export: Accepts SMS Marketing = no"


@dataclass
class _Merged:
    """One number of an import once its duplicates are merged."""

    country: str | None
    name: str | None = None
    consent: Consent | None = None
    customer_id: str | None = None
    withdraws: bool = False


def _consent_of(row: Mapping[str, Any]) -> Consent | None:
    given = row.get("consent")
    if given is None or isinstance(given, Consent):
        return given
    return Consent(given["source"], given["collected_at"], given.get("proof"))


def import_contacts(
    shop_id: int,
    rows: Sequence[Mapping[str, Any] | RejectedRow],
    default_region: str | None = None,
    secret: str | None = None,
    now: datetime | None = None,
    *,
    actor: Actor,
) -> ImportResult:
    """Upsert the valid rows in one statement and report every other one by its index.

    A row is a contact (`phone`, optional `first_name`, optional `consent`: a `Consent` or a
    mapping with `source`, `collected_at` as a datetime and `proof`) or a `RejectedRow`; a
    phone that is not a valid number (for `default_region` when national), or a consent
    collected after `now`, is reported like a rejected row. Duplicates (after normalisation)
    are one contact, created or updated once: the last row with a first name gives it, and a
    later duplicate without one keeps the earlier name (as a re-import without names keeps the
    stored ones); consent likewise. A contact's consent in force is its most recent one; each
    consent imported is logged once. A re-imported number keeps its opt-out: suppression
    outlives the contact row, and a number the shop erased (known by its digest under `secret`,
    SECRET_KEY by default) is suppressed and opted out again, recorded for `actor`.

    In two steps: `merge_rows` (CPU only, no database: the web runs it in a process of its
    own, `api/import_processes.py`) and `store_merged`."""
    return store_merged(shop_id, merge_rows(rows, default_region, now), secret, actor=actor)


@dataclass(frozen=True)
class MergedImport:
    """An import's rows checked, normalised and merged by number (`merge_rows`): what
    `store_merged` writes, and the rows it reports. Plain tuples, not objects: the web process
    unpickles it from the child that read it in one call that holds the GIL (10,000 rows took
    29 ms as objects, 3 ms as tuples).

    `contacts`: (phone, country, first name, consent source, consent collected at, consent
    proof, Shopify customer id, withdraws Shopify consent), the consent's three None when the
    rows gave none. `invalid`: (index, field, error)."""

    contacts: list[tuple]
    invalid: list[tuple[int, str | None, str]]


def merge_rows(
    rows: Sequence[Mapping[str, Any] | RejectedRow],
    default_region: str | None = None,
    now: datetime | None = None,
) -> MergedImport:
    """The rows' numbers normalised and their duplicates merged (as `import_contacts` says),
    and the rows refused, by index. No database, no settings: it may run in another process."""
    now = now or datetime.now(UTC)
    invalid: list[tuple[int, str | None, str]] = []
    merged: dict[str, _Merged] = {}
    for index, row in enumerate(rows):
        if isinstance(row, RejectedRow):
            invalid.append((index, row.field, row.error))
            continue
        try:
            phone, country = normalise_phone(row["phone"], default_region)
        except ValueError as error:
            invalid.append((index, "phone", str(error)))
            continue
        given = _consent_of(row)
        if given is not None and given.collected_at > now + CONSENT_CLOCK_SKEW:
            invalid.append((index, "consent.collected_at", "consent.collected_at is in the future"))
            continue
        earlier = merged.get(phone, _Merged(country))
        # One line: a line break or tab inside a quoted CSV cell (or a JSON string) would go
        # into every message that greets the contact.
        name = " ".join((row.get("first_name") or "").split()) or earlier.name
        customer = row.get("shopify_customer_id")
        merged[phone] = _Merged(
            country,
            name,
            given or earlier.consent,
            str(int(customer)) if customer is not None else earlier.customer_id,
            # The number's last row says: a consent withdraws a withdrawal and the reverse.
            bool(row.get(WITHDRAWS_SHOPIFY_CONSENT)) if given is None else False,
        )
    return MergedImport(
        [
            (
                phone,
                item.country,
                item.name,
                *(
                    (item.consent.source, item.consent.collected_at, item.consent.proof)
                    if item.consent
                    else (None, None, None)
                ),
                item.customer_id,
                item.withdraws,
            )
            for phone, item in merged.items()
        ],
        invalid,
    )


@retry_conflicts
def store_merged(
    shop_id: int, rows: MergedImport, secret: str | None = None, *, actor: Actor
) -> ImportResult:
    """Write `merge_rows`'s contacts to the shop in one transaction (see `import_contacts`)."""
    contacts = rows.contacts
    with db.atomic():
        erasure_lock.writing(shop_id)
        outcome = _upsert(
            shop_id,
            [
                (shop_id, phone, country, name, source, collected_at, customer)
                # In the order of the unique index: two imports of the same numbers lock
                # them in the same order instead of deadlocking (each file's order is its own).
                for phone, country, name, source, collected_at, _, customer, _ in sorted(contacts)
            ],
        )
        ids = {phone: contact_id for contact_id, phone, _ in outcome}
        consent.record_imported(
            shop_id,
            [
                (ids[phone], Consent(source, collected_at, proof))
                for phone, _, _, source, collected_at, proof, _, _ in contacts
                if collected_at is not None
            ],
        )
        _withdraw_shopify_consent(shop_id, [ids[row[0]] for row in contacts if row[7]])
        phones = [row[0] for row in contacts]
        _suppress_erased(shop_id, phones, secret or config.settings().secret_key, actor)
        _opt_out_suppressed(shop_id, phones)
    created = sum(1 for _, _, inserted in outcome if inserted)
    invalid = [
        {"index": index, "field": name, "error": error} for index, name, error in rows.invalid
    ]
    return ImportResult(created, len(outcome) - created, invalid)


def _upsert(shop_id: int, rows: list[tuple]) -> list[tuple]:
    """One `(id, phone, created?)` per row. SQL rather than Peewee: `execute_values` pages
    10,000 rows into a few statements, and `xmax = 0` (the row was inserted, not updated) is
    what tells created from updated in the same round trip. The consent in force is the most
    recently collected one, whichever import brought it."""
    return execute_many(
        "INSERT INTO contact (shop_id, phone, country, first_name, consent_source,"
        " consent_collected_at, shopify_customer_id) VALUES %s"
        " ON CONFLICT (shop_id, phone) DO UPDATE"
        " SET first_name = coalesce(EXCLUDED.first_name, contact.first_name),"
        "     consent_source = CASE WHEN EXCLUDED.consent_collected_at"
        "         > coalesce(contact.consent_collected_at, '-infinity')"
        "         THEN EXCLUDED.consent_source ELSE contact.consent_source END,"
        "     consent_collected_at = greatest(EXCLUDED.consent_collected_at,"
        "                                     contact.consent_collected_at),"
        "     shopify_customer_id = coalesce(EXCLUDED.shopify_customer_id,"
        "                                    contact.shopify_customer_id),"
        "     updated_at = now()"
        " RETURNING id, phone, (xmax = 0)",
        rows,
        template="(%s, %s, %s, %s, %s, %s::timestamptz, %s)",
        fetch=True,
    )


def _withdraw_shopify_consent(shop_id: int, contact_ids: list[int]) -> None:
    """Contacts whose consent in force came from Shopify, and whom Shopify's export now says
    do not accept SMS marketing: the consent is withdrawn (logged as an opt-out of the import),
    so a shop that requires consent no longer messages them. Not suppressed: they did not ask
    this shop to stop, and a later consent (an export saying yes, a START) counts again; an
    earlier consent from elsewhere that Shopify's had replaced is in force again."""
    if not contact_ids:
        return
    withdrawn = [
        contact_id
        for (contact_id,) in (
            Contact.update(consent_source=None, consent_collected_at=None, updated_at=fn.now())
            .where(
                (Contact.shop == shop_id)
                & Contact.id.in_(contact_ids)
                & (Contact.consent_source == "shopify")
            )
            .returning(Contact.id)
            .tuples()
            .execute()
        )
    ]
    if not withdrawn:
        return
    # The consent in force is again the most recent one from elsewhere (a checkout's, a
    # START's) that Shopify's had replaced, unless the number opted out since.
    execute(
        "UPDATE contact c SET consent_source = e.consent_source,"
        "       consent_collected_at = e.collected_at"
        " FROM (SELECT DISTINCT ON (ev.contact_id) ev.contact_id, ev.consent_source,"
        "              ev.collected_at"
        "       FROM consent_event ev"
        "       WHERE ev.contact_id = ANY(%(ids)s) AND ev.kind = 'opt_in'"
        "         AND ev.consent_source IS DISTINCT FROM 'shopify'"
        "         AND ev.created_at > coalesce((SELECT max(o.created_at) FROM consent_event o"
        "             WHERE o.contact_id = ev.contact_id AND o.kind = 'opt_out'"
        "               AND o.source <> 'import'), '-infinity')"
        "       ORDER BY ev.contact_id, ev.collected_at DESC) e"
        " WHERE c.id = e.contact_id",
        {"ids": withdrawn},
    )
    consent.record(
        shop_id,
        withdrawn,
        "opt_out",
        "import",
        proof=SHOPIFY_REFUSAL_PROOF,
        consent_source="shopify",
    )


def _opt_out_suppressed(shop_id: int, phones: list[str]) -> None:
    """Numbers suppressed before they were contacts (a STOP from a number not yet imported,
    an operator's suppression): created opted out, as the suppression says. Sending already
    refused them (the audience excludes suppressed numbers), but the contact showed as
    subscribed with consent. One statement; it touches rows only in that case."""
    rows = fetchall(
        "UPDATE contact c SET opted_out_at = now(), updated_at = now() FROM suppression s"
        " WHERE c.shop_id = %s AND c.phone = ANY(%s) AND c.opted_out_at IS NULL"
        "   AND s.shop_id = c.shop_id AND s.phone = c.phone"
        " RETURNING c.id, s.source",
        (shop_id, phones),
    )
    for source in sorted({source for _, source in rows}):
        ids = [contact_id for contact_id, of in rows if of == source]
        consent.record(shop_id, ids, "opt_out", source, proof="suppressed before the import")


def _suppress_erased(shop_id: int, phones: list[str], secret: str, actor: Actor) -> None:
    """Numbers the shop erased before, imported again: suppressed and opted out once more."""
    erased = suppressions.restore_erased(shop_id, phones, secret, actor)
    for phone in erased:
        consent.opt_out(shop_id, phone, "erasure", "the number was erased before")


def list_contacts(
    shop_id: int, limit: int, after: int | None, opted_out: bool | None
) -> list[dict[str, Any]]:
    """One keyset page of the shop's contacts (erased ones are gone), optionally only
    (un)subscribed ones."""
    query = Contact.select(
        Contact.id,
        Contact.phone,
        Contact.first_name,
        Contact.opted_out_at,
        Contact.consent_source,
        Contact.consent_collected_at,
        Contact.created_at,
    ).where((Contact.shop == shop_id) & Contact.erased_at.is_null())
    if after is not None:
        query = query.where(Contact.id > after)
    if opted_out is not None:
        query = query.where(Contact.opted_out_at.is_null(not opted_out))
    return list(query.order_by(Contact.id).limit(limit).dicts())


def subscription(shop_id: int, contact_id: int) -> Subscription | None:
    """The shop and opt-out state of a contact, or None when it does not exist. Reads only."""
    row = (
        Contact.select(Shop.name, Contact.opted_out_at)
        .join(Shop)
        .where(Contact.id == contact_id, Contact.shop == shop_id)
        .tuples()
        .first()
    )
    return None if row is None else Subscription(row[0], row[1] is not None)


def opt_out(
    shop_id: int, contact_id: int, secret: str, actor: Actor, source: str = "link"
) -> Subscription | None:
    """Opt the contact out, log it and suppress its number for the shop (idempotent: the first
    opt-out time is kept), the suppression recorded for `actor`. Returns the contact's
    subscription afterwards, None when it does not exist. An erased contact is opted out
    already, with no number left to suppress."""
    with db.atomic():
        erasure_lock.writing(shop_id)
        phone = phone_of(shop_id, contact_id)
        if phone is None:
            return subscription(shop_id, contact_id)
        consent.opt_out(shop_id, phone, source, "unsubscribe link" if source == "link" else None)
        suppressions.suppress(shop_id, phone, source, secret, actor, contact_id)
    return subscription(shop_id, contact_id)


def phones_of_customer(shop_id: int, customer_id: str) -> list[str]:
    """The numbers of the shop's contacts imported with this Shopify customer id."""
    return list(
        Contact.select(Contact.phone)
        .where(
            (Contact.shop == shop_id)
            & (Contact.shopify_customer_id == customer_id)
            & Contact.phone.is_null(False)
        )
        .order_by(Contact.id)
        .scalars()
    )


def region_of_timezone(timezone: str) -> str | None:
    """The country (ISO region) of an IANA time zone as the tz database's zone.tab names it
    (`Europe/Athens` -> `GR`); None for `UTC` and zones of no one country."""
    return _zone_regions().get(timezone)


@functools.cache
def _zone_regions() -> dict[str, str]:
    sources = [Path(path) / "zone.tab" for path in zoneinfo.TZPATH]
    try:
        sources.insert(0, Path(str(importlib.resources.files("tzdata.zoneinfo") / "zone.tab")))
    except ModuleNotFoundError:
        pass
    for source in sources:
        try:
            lines = source.read_text().splitlines()
        except OSError:
            continue
        return {
            fields[2]: fields[0]
            for fields in (line.split("\t") for line in lines if not line.startswith("#"))
            if len(fields) >= 3
        }
    return {}


def phone_of(shop_id: int, contact_id: int) -> str | None:
    """The contact's number; None when the shop has no such contact or it was erased."""
    return (
        Contact.select(Contact.phone)
        .where((Contact.id == contact_id) & (Contact.shop == shop_id))
        .scalar()
    )


def exists(shop_id: int, contact_id: int) -> bool:
    """Whether the shop has this contact (erased or not)."""
    return Contact.select().where((Contact.id == contact_id) & (Contact.shop == shop_id)).exists()
