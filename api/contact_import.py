"""Reading a contacts import (SPEC 5) from a JSON body or a CSV file.

Only the shape or size of the body refuses an import whole; every row is checked on its own
against `schemas.CONTACT`, and a bad one becomes a `RejectedRow` that `import_contacts` reports
at its index while the others are imported. A CSV is read as a merchant's shop exports it
(Shopify's customer export in particular): a header row, columns matched by name whatever their
case, every column the import does not use ignored.

Consent (SPEC 11): a JSON row's `consent: {source, collected_at, proof?}`; in a CSV, the columns
`consent_source`, `consent_collected_at` (RFC 3339 with an offset) and `consent_proof`, or else
Shopify's `Accepts SMS Marketing` = yes, which is consent with source `shopify` collected (as
far as the export tells) by the time of the import; = no withdraws a consent that came from
Shopify (the customer unsubscribed there since).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import falcon

from api import schemas
from api.body import MAX_BODY, check_json_media, json_document, media_type, read_bytes
from service.audit import Actor
from service.consent import Consent
from service.contacts import (
    MAX_IMPORT,
    WITHDRAWS_SHOPIFY_CONSENT,
    ImportResult,
    MergedImport,
    RejectedRow,
    merge_rows,
    store_merged,
)
from service.errors import InvalidInput

# Header names, normalised (`_column_name`), in order of preference: a row's phone is the first
# of its non-blank phone columns. Shopify's export has the customer's own `Phone`, often blank,
# and the `Default Address Phone` of the address book.
PHONE_COLUMNS = ("phone", "default_address_phone")
FIRST_NAME_COLUMNS = ("first_name",)
# Shopify's export writes `Customer ID` with a leading apostrophe (so spreadsheets keep it text).
CUSTOMER_ID_COLUMNS = ("shopify_customer_id", "customer_id")
CONSENT_COLUMNS = ("consent_source", "consent_collected_at", "consent_proof")
CONSENT_KEYS = ("source", "collected_at", "proof")  # the same, as a JSON row names them
SHOPIFY_SMS_CONSENT = "accepts_sms_marketing"
SHOPIFY_PROOF = "Shopify customer export: Accepts SMS Marketing = yes"


@dataclass(frozen=True)
class Upload:
    """A `POST /contacts` body as it came (`read_upload`, in the request's thread), before its
    rows are read (`merged`, CPU only: the web runs it in a child, `api/import_processes.py`)."""

    csv: bool
    raw: bytes
    charset: str | None  # a CSV's, from its Content-Type
    default_country: str | None  # a CSV's, from the query (a JSON body carries its own)


# What a CSV upload is labelled in the wild: `text/csv` (RFC 7111), and what browsers and
# spreadsheets send for a `.csv` file (Windows labels it `application/vnd.ms-excel`); a Shopify
# export uploaded so was parsed as JSON and refused "Malformed JSON".
CSV_MEDIA_TYPES = frozenset(
    {
        "text/csv",
        "application/csv",
        "text/comma-separated-values",
        "text/x-csv",
        "application/vnd.ms-excel",
    }
)


def is_csv(req: falcon.Request) -> bool:
    return media_type(req) in CSV_MEDIA_TYPES


def read_upload(req: falcon.Request) -> Upload:
    """The body of a `POST /contacts` (CSV when `Content-Type: text/csv`, else JSON) and its
    parameters, checked; its rows are read by `merged`."""
    if is_csv(req):
        country = req.get_param("default_country")
        if country is not None:
            schemas.validate({"default_country": country}, schemas.CSV_IMPORT_QUERY)
        raw = read_bytes(req)
        if not raw.strip():
            raise falcon.HTTPBadRequest(title="Malformed CSV", description="the body is empty")
        return Upload(True, raw, _charset(req), country)
    if req.get_param("default_country") is not None:
        # Not ignored: a client that believes it applies would see its national numbers refused.
        raise InvalidInput(
            "a JSON import takes 'default_country' in the body; the query parameter is for CSV",
            "default_country",
        )
    check_json_media(req)
    return Upload(False, read_bytes(req), None, None)


def imported(
    shop_id: int, upload: Upload, now: datetime, secret: str, actor: Actor
) -> ImportResult:
    """The upload read (`merged`) and written to the shop (`contacts.store_merged`): what the
    web runs in an import's child (`api/import_processes.py`), or in the request."""
    return store_merged(shop_id, merged(upload, now), secret, actor=actor)


def merged(upload: Upload, now: datetime) -> MergedImport:
    """The upload's rows checked, their numbers normalised and merged (`contacts.merge_rows`),
    or what refuses the body whole (400, 422). CPU only: no database, no request."""
    if upload.csv:
        text = _decoded(upload.charset, upload.raw)
        rows = [_checked_csv(row) for row in csv_rows(text, now)]
        return merge_rows(rows, upload.default_country, now)
    body = json_document(upload.raw, schemas.CONTACTS_IMPORT_SHAPE, rows="contacts")
    return merge_rows([_checked(row) for row in body["contacts"]], body.get("default_country"), now)


def _checked_csv(row: dict[str, Any]) -> Mapping[str, Any] | RejectedRow:
    """A CSV row checked as a JSON row is, without its mark (`WITHDRAWS_SHOPIFY_CONSENT`),
    which is the CSV's own and not a field a JSON row may carry."""
    mark = row.pop(WITHDRAWS_SHOPIFY_CONSENT, None)
    checked = _checked(row)
    if mark is None or isinstance(checked, RejectedRow):
        return checked
    return {**checked, WITHDRAWS_SHOPIFY_CONSENT: mark}


def _checked(row: Any) -> Mapping[str, Any] | RejectedRow:
    """The row with its consent read (`Consent`), or why it is refused."""
    problem = schemas.row_problem(row, schemas.CONTACT)
    if problem is not None:
        return RejectedRow(*problem)
    given = row.get("consent")
    if given is None:
        return row
    return {
        **row,
        "consent": Consent(
            given["source"], schemas.parse_datetime(given["collected_at"]), given.get("proof")
        ),
    }


def _decoded(charset: str | None, raw: bytes) -> str:
    """The file's text: in the `charset` its Content-Type names (Excel on Windows saves
    `windows-1252`), else UTF-8 with or without a byte order mark (Excel writes one, Shopify
    does not). Not guessed: a wrong guess would import every accented name garbled."""
    try:
        codec = codecs.lookup(charset or "utf-8-sig")
    except LookupError:
        codec = None
    if codec is None or not _TEXT_ENCODINGS.fullmatch(codec.name):
        # Python's codecs also name transformations (base64, zlib, rot13, unicode_escape),
        # which are not a file's encoding.
        raise InvalidInput(
            f"charset {charset!r} is not a text encoding a CSV file is saved in", "charset"
        )
    if codec.name == "utf-8":
        codec = codecs.lookup("utf-8-sig")
    try:
        return raw.decode(codec.name)
    except UnicodeError as error:
        start = getattr(error, "start", 0)
        line = raw.count(b"\n", 0, start) + 1
        raise falcon.HTTPBadRequest(
            title="Malformed CSV",
            description=f"line {line} is not {charset or 'UTF-8'} (byte {start}): save the"
            " file as UTF-8, or name its encoding (`Content-Type: text/csv;"
            " charset=windows-1252`)",
        ) from None


# The encodings spreadsheets and shops save text in, by the names `codecs.lookup` gives them.
_TEXT_ENCODINGS = re.compile(
    r"utf-8(-sig)?|utf-(16|32)(-[lb]e)?|ascii|iso8859-\d+|cp\d+|mac-[a-z]+"
    r"|koi8-[ru]|gb2312|gbk|gb18030|big5(hkscs)?|shift_jis(_2004|x0213)?|euc_[a-z0-9_]+"
)


def _charset(req: falcon.Request) -> str | None:
    for parameter in (req.content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"'):
            return value.strip().strip('"')
    return None


def _delimiter(text: str) -> str:
    """What separates the header's columns: a comma, else a semicolon (spreadsheets in locales
    whose decimal mark is a comma save CSV so) or a tab, when the header has such and no comma."""
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    if "," not in header:
        for candidate in (";", "\t"):
            if candidate in header:
                return candidate
    return ","


def _column_name(header: str) -> str:
    return "_".join(header.strip().lower().replace("-", " ").split())


def _columns(header: list[str], names: tuple[str, ...]) -> list[int]:
    """Positions of the columns called `names`, in the order of `names`."""
    normalised = [_column_name(cell) for cell in header]
    return [normalised.index(name) for name in names if name in normalised]


def _first_filled(cells: list[str], positions: list[int]) -> str | None:
    # A row may be shorter than the header: its missing cells are blank.
    return next((cells[at] for at in positions if at < len(cells) and cells[at]), None)


def _consent(
    cells: list[str], consent_at: list[int | None], shopify_at: list[int], now: datetime
) -> dict[str, Any] | None:
    """A row's consent as a JSON row would carry it (checked like one), or None."""
    given = {
        key: _first_filled(cells, [at])
        for key, at in zip(CONSENT_KEYS, consent_at)
        if at is not None
    }
    given = {key: value for key, value in given.items() if value}
    if given:  # any consent cell filled: checked as a JSON row's consent (a proof alone is
        return given  # incomplete and reported, as in JSON, not imported without consent)
    if (_first_filled(cells, shopify_at) or "").lower() in ("yes", "true"):
        return {"source": "shopify", "collected_at": now.isoformat(), "proof": SHOPIFY_PROOF}
    return None


# Shopify's customer id as exports write it: digits, with a leading apostrophe (to keep a
# spreadsheet from rounding it), or as a GraphQL id.
_CUSTOMER_ID = re.compile(r"'?(?:gid://shopify/Customer/)?([0-9]{1,19})")


def _customer_id(cell: str | None) -> str | None:
    """The digits of a `Customer ID` cell; None for anything else: the column only helps the
    privacy webhooks find the customer, and an unreadable one must not refuse the row."""
    match = _CUSTOMER_ID.fullmatch(cell or "")
    return match.group(1) if match else None


def _shopify_refuses(cells: list[str], shopify_at: list[int]) -> bool:
    """Whether Shopify's `Accepts SMS Marketing` says no: the customer is not (or no longer)
    subscribed to SMS marketing in Shopify."""
    return (_first_filled(cells, shopify_at) or "").lower() in ("no", "false")


# The csv module refuses a field over 128 KiB, which refused the whole import over one row's
# cell; the body's own cap (5 MiB) bounds every field, and a cell too long for its column is
# that row's problem, reported by its index.
csv.field_size_limit(MAX_BODY)


def csv_rows(text: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """One `{phone, first_name, consent?, shopify_customer_id?}` per data row of `text` (blank
    rows are not rows); 422 when the header names no phone column or there are more than
    MAX_IMPORT rows, 400 when it is not CSV. `now` is when a Shopify consent counts as collected."""
    now = now or datetime.now(UTC)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(reader, [])
        phone_at = _columns(header, PHONE_COLUMNS)
        name_at = _columns(header, FIRST_NAME_COLUMNS)
        customer_at = _columns(header, CUSTOMER_ID_COLUMNS)
        normalised = [_column_name(cell) for cell in header]
        consent_at = [
            normalised.index(name) if name in normalised else None for name in CONSENT_COLUMNS
        ]
        shopify_at = _columns(header, (SHOPIFY_SMS_CONSENT,))
        if not phone_at:
            raise InvalidInput(
                "the CSV header names no phone column (one of 'phone',"
                " 'Phone', 'Default Address Phone')",
                "phone",
            )
        rows: list[Any] = []
        for record in reader:
            cells = [cell.strip() for cell in record]
            if not any(cells):
                continue
            if len(rows) == MAX_IMPORT:
                raise InvalidInput(f"a CSV import holds at most {MAX_IMPORT} rows", "body")
            row: dict[str, Any] = {
                "phone": _first_filled(cells, phone_at) or "",
                "first_name": _first_filled(cells, name_at),
            }
            customer = _customer_id(_first_filled(cells, customer_at))
            if customer:
                row["shopify_customer_id"] = customer
            given = _consent(cells, consent_at, shopify_at, now)
            if given is not None:
                row["consent"] = given
            elif _shopify_refuses(cells, shopify_at):
                row[WITHDRAWS_SHOPIFY_CONSENT] = True
            rows.append(row)
    except csv.Error as error:
        raise falcon.HTTPBadRequest(
            title="Malformed CSV", description=f"line {reader.line_num}: {error}"
        ) from None
    return rows
