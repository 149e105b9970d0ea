"""Request schemas: one JSON Schema per body, used both to validate requests and to publish the
OpenAPI document (`GET /openapi.json`), so the two can never drift apart; and the schemas of the
answers, which the document publishes and `tests/api/test_schemathesis.py` holds every answer
to."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from jsonschema import Draft202012Validator, FormatChecker

from service.audit import SUBJECTS
from service.campaigns import MAX_CONTACT_IDS
from service.contacts import MAX_IMPORT
from service.delivery import DELIVERY_STATUSES
from service.errors import InvalidInput

_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
ID = _ID  # bigserial: what the router's `id` converter matches (`api/paths.IdConverter`)
_TEXT = {"type": "string", "minLength": 1, "maxLength": 1600}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


# The end of the string in both ECMA 262 and Python, whose `$` also matches before a final
# newline (a shop's domain "a.example\n" was stored).
END = r"(?![\s\S])"
_CLOCK_TIME = {"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]" + END}
SHOP_TIMEZONE = {"type": "string", "minLength": 1, "maxLength": 64, "format": "timezone"}
# SPEC 11: quiet hours in the recipient's local time (null: none; default 21:00-08:00, or the
# configured QUIET_HOURS_DEFAULT) and the frequency cap (null: none, the default).
COMPLIANCE_SETTINGS = {
    "quiet_hours": {
        "oneOf": [
            {
                "type": "object",
                "properties": {"start": _CLOCK_TIME, "end": _CLOCK_TIME},
                "required": ["start", "end"],
                "additionalProperties": False,
                "description": "local HH:MM, [start, end); crosses midnight when start > end",
            },
            {"type": "null"},
        ]
    },
    "frequency_cap": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 1000,
        "description": "at most this many campaign messages per contact in 24 h",
    },
}

# A name shown to the merchant (a shop's, a campaign's): not blank, spaces alone included.
NAME = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"}
# A sender id as SMS carries it: printable ASCII (an alphanumeric id or a number), no space
# at either end; a non-ASCII one was taken and could not be sent.
SENDER = {
    "type": "string",
    "minLength": 1,
    "maxLength": 15,
    "pattern": r"^[!-~]([ -~]*[!-~])?" + END,
}

SHOP_CREATE = _object(
    {
        "domain": {
            "type": "string",
            "minLength": 3,
            "maxLength": 255,
            "pattern": r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)+" + END,
        },
        "name": NAME,
        "sender": SENDER,
        "timezone": SHOP_TIMEZONE,
        # The answer to HELP (default: one naming the shop and how to stop, `service/shops.py`).
        "help_text": {"type": "string", "minLength": 1, "maxLength": 480},
        # Message only contacts with consent (default true).
        "require_consent": {"type": "boolean"},
        **COMPLIANCE_SETTINGS,
    },
    ("domain", "name"),
)

# What the operator may change of a shop afterwards (`PATCH /admin/shops/{id}`).
SHOP_UPDATE = {
    **_object({"timezone": SHOP_TIMEZONE, **COMPLIANCE_SETTINGS}, ()),
    "minProperties": 1,
}

TOP_UP = _object(
    {
        "amount": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
        "reference": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    ("amount", "reference"),
)

# A refund (amount > 0) or an adjustment (amount < 0) of a shop's credits (`credits.adjust`).
ADJUSTMENT = _object(
    {
        "amount": {
            "type": "integer",
            "minimum": -100_000_000,
            "maximum": 100_000_000,
            "not": {"const": 0},
        },
        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
        "reference": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    ("amount", "reason", "reference"),
)

COUNTRY = {"type": "string", "pattern": "^[A-Z]{2}" + END}  # ISO 3166 alpha-2, for national numbers

# A contact's consent as the merchant collected it (SPEC 11): how (`shopify`, `checkout`, ...),
# when, and evidence (a form's URL, a checkbox's wording). `null`: no consent given.
CONSENT = {
    **_object(
        {
            "source": {"type": "string", "minLength": 1, "maxLength": 100},
            "collected_at": {"type": "string", "format": "date-time"},
            "proof": {"type": ["string", "null"], "maxLength": 2000},
        },
        ("source", "collected_at"),
    ),
    "type": ["object", "null"],
}

# One contact of an import. It is checked row by row (`row_problem`), never as part of the whole
# body: a bad row is reported by its index and the others are imported (SPEC 5).
CONTACT = _object(
    {
        "phone": {"type": "string", "minLength": 1, "maxLength": 40},
        "first_name": {"type": ["string", "null"], "maxLength": 100},
        "consent": CONSENT,
        # Shopify's customer id (its export's `Customer ID`): the privacy webhooks find the
        # customer by it when the contact's number is not the customer's own `phone`.
        "shopify_customer_id": {
            "type": ["integer", "string", "null"],
            "pattern": "^[0-9]{1,19}" + END,
            "minimum": 0,
            "maximum": 2**63 - 1,
        },
    },
    ("phone",),
)

CONTACTS_IMPORT = _object(
    {
        "contacts": {"type": "array", "maxItems": MAX_IMPORT, "items": CONTACT},
        "default_country": COUNTRY,
    },
    ("contacts",),
)

# What refuses an import whole: its shape. Derived from CONTACTS_IMPORT (which the OpenAPI
# document publishes) by leaving the rows unchecked, so the two cannot drift apart.
CONTACTS_IMPORT_SHAPE = {
    **CONTACTS_IMPORT,
    "properties": {
        **CONTACTS_IMPORT["properties"],
        "contacts": {
            key: value
            for key, value in CONTACTS_IMPORT["properties"]["contacts"].items()
            if key != "items"
        },
    },
}

# The query of a CSV import (a CSV file has no room for it).
CSV_IMPORT_QUERY = _object({"default_country": COUNTRY})

CAMPAIGN_CREATE = _object(
    {
        "name": NAME,
        "text": _TEXT,
        "contact_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": MAX_CONTACT_IDS},
        "append_unsubscribe": {"type": "boolean"},
    },
    ("name", "text"),
)

CAMPAIGN_PATCH = {
    **_object(
        {
            "name": NAME,
            "text": _TEXT,
        }
    ),
    "minProperties": 1,
}

CAMPAIGN_SCHEDULE = _object(
    {
        "scheduled_at": {"type": "string", "format": "date-time"},
    },
    ("scheduled_at",),
)

TEST_SEND_CREATE = _object(
    {
        "phone": {
            "type": "string",
            "minLength": 1,
            "maxLength": 40,
            "description": "E.164 (`+` and the country code)",
        }
    },
    ("phone",),
)


def _any_case(words: Sequence[str]) -> str:
    """A JSON Schema (ECMA 262) pattern matching one of `words` in any case, spaces around."""
    spelled = ("".join(f"[{c.upper()}{c.lower()}]" for c in word) for word in words)
    return rf"^\s*(?:{'|'.join(spelled)})\s*$"


def _provider_text(max_length: int, *kinds: str) -> dict[str, Any]:
    """A string of at most `max_length` characters, or a whole number from 0 with as many
    digits at most (providers writing ids and numbers as JSON integers), stored as its text."""
    return {
        "type": ["string", "integer", *kinds],
        "maxLength": max_length,
        "minimum": 0,
        "maximum": 10**max_length - 1,
    }


# A provider posts no report again after a 4xx, so only what cannot be stored or matched refuses
# one (`api/report_ingest.py`): the informational `statusCode` and `timestamp` are read where
# they can be and kept empty otherwise; in an array each report is refused on its own.
DELIVERY_REPORT = {
    **_object(
        {
            "id": {**_provider_text(100), "minLength": 1},
            "to": {
                "description": "the number, as a string of at most 40 characters or a whole"
                " number; anything else is ignored (the id still matches the report)"
            },
            "reference": {
                "description": "the send's reference, as a string of at most 200 characters"
                " or a whole number; anything else is ignored"
            },
            "deliveryStatus": {
                "type": "string",
                "pattern": _any_case(DELIVERY_STATUSES),
                "description": f"one of {', '.join(DELIVERY_STATUSES)}, in any case",
            },
            "statusCode": {
                "description": "an integer, or its digits in a string; anything else is ignored"
            },
            "timestamp": {
                "description": "RFC 3339, or ISO 8601 without an offset (UTC); anything else"
                " is ignored (the report then counts from when it was applied)"
            },
        },
        ("id", "deliveryStatus"),
    ),
    "additionalProperties": True,
}  # providers add fields over time

DELIVERY_REPORTS = {
    "oneOf": [
        DELIVERY_REPORT,
        {
            "type": "array",
            "minItems": 1,
            "maxItems": 10_000,
            "description": "each report stands alone: those that are not a valid report are"
            " listed in the answer's `invalid` and the others stored; at least one must be",
            "items": {},
            "contains": DELIVERY_REPORT,
        },
    ]
}

# An inbound message (SPEC 11): `from` the customer's number, `to` the sender id or number they
# wrote to; `id` (the provider's) makes a retry recognisable, `timestamp` when it was received.
INBOUND_MESSAGE = {
    **_object(
        {
            "from": {
                **_provider_text(40),
                "minLength": 1,
                "description": "the customer's number, `+` or `00` optional; digits may come as"
                " a JSON integer",
            },
            "to": {
                **_provider_text(40),
                "minLength": 1,
                "description": "the sender id or number the customer wrote to",
            },
            "text": {"type": "string", "maxLength": 2000},
            "id": {**_provider_text(100, "null"), "minLength": 1},
            "timestamp": {
                "description": "RFC 3339, or ISO 8601 without an offset (UTC); anything else is"
                " ignored (the message then counts as received when it arrived)"
            },
        },
        ("from", "to", "text"),
    ),
    "additionalProperties": True,
}  # providers add fields over time

# Shopify's mandatory privacy webhooks. Only what is read is checked; Shopify adds fields.
_SHOPIFY_DOMAIN = {"type": "string", "minLength": 1, "maxLength": 255}
_SHOPIFY_CUSTOMER = {
    "type": "object",
    "properties": {
        "id": {"type": ["integer", "string", "null"]},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"], "maxLength": 40},
    },
}
SHOPIFY_CUSTOMER_REDACT = {
    "type": "object",
    "required": ["shop_domain", "customer"],
    "properties": {"shop_domain": _SHOPIFY_DOMAIN, "customer": _SHOPIFY_CUSTOMER},
}
SHOPIFY_DATA_REQUEST = {
    "type": "object",
    "required": ["shop_domain", "customer"],
    "properties": {
        "shop_domain": _SHOPIFY_DOMAIN,
        "customer": _SHOPIFY_CUSTOMER,
        "data_request": {
            "type": "object",
            "properties": {"id": {"type": ["integer", "string", "null"]}},
        },
    },
}
SHOPIFY_SHOP_REDACT = {
    "type": "object",
    "required": ["shop_domain"],
    "properties": {"shop_domain": _SHOPIFY_DOMAIN},
}

# Short-link codes are URL-safe base64 (`service.links`): anything else names no link, and a NUL
# in it would reach PostgreSQL as an error rather than as a miss.
SHORT_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")

# JSON allows both ("\u0000", "\ud800"); PostgreSQL text holds neither (NUL is refused, a lone
# surrogate cannot be encoded as UTF-8), so without this check they surface as database errors.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_checker = FormatChecker()


@_checker.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    """RFC 3339 with an explicit offset (a naive time would be read in an unknown zone)."""
    if not isinstance(value, str):
        return True
    return parse_datetime(value) is not None


# OSError: a folder of the zone database ("America", "Etc") is a path ZoneInfo opens and fails
# on with IsADirectoryError, which escaped as a 500.
@_checker.checks("timezone", raises=(KeyError, ValueError, OSError))
def _is_timezone(value: object) -> bool:
    """An IANA zone name ("Europe/Athens"): the shop's local time is computed in it later.
    Not the files of the zone database that are no zone: `localtime` is whatever zone each
    machine is set to, `Factory` and `posixrules` are placeholders; nor those under `right/`
    and `posix/` (zoneinfo reads `right/America/New_York` with its summer offset all year:
    quiet hours an hour early all winter), which `available_timezones` leaves out."""
    if not isinstance(value, str):
        return True
    return (
        value.lower() not in _NOT_ZONES and value in _zone_names() and ZoneInfo(value) is not None
    )


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


_NOT_ZONES = frozenset({"localtime", "factory", "posixrules", "posix", "right"})


# RFC 3339's date-time (section 5.6), its letters in either case, and the space its note
# allows for the T. Python's `fromisoformat` alone also takes ISO 8601's week dates, basic
# format, hour-only times and seconds in offsets, which the document does not promise.
_RFC_3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_datetime(value: str) -> datetime:
    """`value` in UTC; ValueError when it is not RFC 3339 with an offset, or falls outside
    years 1-9999 in UTC (PostgreSQL would store it, and every later read of the row would
    fail)."""
    if not _RFC_3339.fullmatch(value):
        if _RFC_3339.fullmatch(value + "Z"):
            raise ValueError("a time zone offset is required")
        raise ValueError("not an RFC 3339 date-time (2027-01-01T09:00:00+02:00)")
    whole, _, fraction = value.upper().replace("Z", "+00:00").partition(".")
    if fraction:  # at most microseconds, which is what is stored
        digits = len(fraction) - len(fraction.lstrip("0123456789"))
        whole = f"{whole}.{fraction[: min(digits, 6)]}{fraction[digits:]}"
    parsed = datetime.fromisoformat(whole.replace(" ", "T"))
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


def provider_time(value: Any) -> datetime | None:
    """A time a provider wrote, informational: RFC 3339, or ISO 8601 without an offset (read as
    UTC); None for anything else. A provider posts nothing again after a 4xx, so such a field
    never refuses what carries it (a delivery report, a STOP)."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _unstorable_text(document: Any) -> str | None:
    """The path of the first string PostgreSQL cannot store, or None."""
    pending: list[tuple[tuple, Any]] = [((), document)]
    while pending:  # iterative: the nesting depth is the client's choice
        path, value = pending.pop()
        if isinstance(value, str) and _UNSTORABLE.search(value):
            return ".".join(str(part) for part in path) or "body"
        items = (
            value.items()
            if isinstance(value, dict)
            else (enumerate(value) if isinstance(value, list) else ())
        )
        pending.extend(reversed([((*path, key), item) for key, item in items]))
    return None


def storable_text(document: Any) -> Any:
    """`document` with every string value PostgreSQL can store: a NUL dropped, an unpaired
    surrogate replaced (U+FFFD); keys are left as they came (a cleaned key could collide with
    another, which a body may not repeat). For a provider's bodies, which are read, not
    refused, for such text: a provider does not post again after a 4xx, and a refused STOP is
    an opt-out lost. Changes the parsed document in place, iteratively: the nesting depth is
    the client's choice."""

    def clean(text: str) -> str:
        return _UNSTORABLE.sub(lambda found: "" if found.group() == "\x00" else "\ufffd", text)

    if isinstance(document, str):
        return clean(document)
    if not isinstance(document, (dict, list)):
        return document
    pending = [document]
    while pending:
        node = pending.pop()
        places = node.items() if isinstance(node, dict) else enumerate(node)
        for place, value in list(places):
            if isinstance(value, str):
                node[place] = clean(value)
            elif isinstance(value, (dict, list)):
                pending.append(value)
    return document


def _storable(document: Any) -> Any:
    field = _unstorable_text(document)
    if field is not None:
        raise InvalidInput(
            f"{field!r} holds a NUL or an unpaired surrogate, which cannot be stored", field
        )
    return document


_validators: dict[int, Draft202012Validator] = {}


def _validator(key: int, schema: dict[str, Any]) -> Draft202012Validator:
    # Building a validator costs more than validating a small body (measured: the webhook's
    # one-report requests went from 275/s); the schemas are module constants, keyed by id.
    if key not in _validators:
        _validators[key] = Draft202012Validator(schema, format_checker=_checker)
    return _validators[key]


def _too_many(field: str, limit: int, count: int) -> InvalidInput:
    # jsonschema's own message quotes the whole list and leaves the limit out.
    return InvalidInput(f"{field}: at most {limit} items (it has {count})", field)


def _refuse_oversized_lists(document: Any, schema: dict[str, Any]) -> None:
    """A top-level list over its maxItems, refused before the validator walks every item of it
    (a 5 MiB body holds 1.6 million ids: 13 s of validation to learn it has too many)."""
    if not isinstance(document, dict):
        return
    for name, rules in schema.get("properties", {}).items():
        value, limit = document.get(name), rules.get("maxItems")
        if isinstance(value, list) and limit is not None and len(value) > limit:
            raise _too_many(name, limit, len(value))


def _id_lists_checked(
    document: Any, schema: dict[str, Any]
) -> tuple[Any, tuple[list, InvalidInput] | None]:
    """`document` with each top-level list of ids (items `_ID`: a campaign's `contact_ids`)
    checked here and left to the validator as its first item only (or `document` itself), and
    the first item that is no id: its path and its error. The validator takes 7 us an item: a
    5 MiB body's 600,000 ids held a web process's GIL for 5 s, as often as a shop cared to send
    them. Here, one comparison an item; an item failing it (a string, a float, 0) is judged by
    the validator alone."""
    if not isinstance(document, dict):
        return document, None
    checked, bad = None, None
    for name, rules in schema.get("properties", {}).items():
        value = document.get(name)
        if (
            rules.get("items") is not _ID
            or rules.get("minItems", 0) > 1
            or not isinstance(value, list)
            or len(value) < 2
        ):
            continue
        for index, item in enumerate(value):
            if type(item) is int and 0 < item <= _ID["maximum"]:
                continue
            error = next(_validator(id(_ID), _ID).iter_errors(item), None)
            if error is not None:  # else an integer as a float, `1.0`: the validator takes it
                field = f"{name}.{index}"
                found = (
                    [name, index],
                    InvalidInput(f"{field}: {_shortened(error.message)}", field),
                )
                bad = found if bad is None or found[0] < bad[0] else bad
                break
        checked = dict(checked or document)
        checked[name] = value[:1]
    return (document if checked is None else checked), bad


def validate(document: Any, schema: dict[str, Any], rows: str | None = None) -> Any:
    """Return `document` if it matches `schema`, else raise InvalidInput naming the field.
    `rows` names a top-level list whose items are checked one by one (`row_problem`) by the
    caller, not here. Of several problems, the one named is the first by its path."""
    _refuse_oversized_lists(document, schema)
    validator = _validator(id(schema), schema)
    standing_in, bad_id = _id_lists_checked(document, schema)
    error = next(iter(sorted(validator.iter_errors(standing_in), key=lambda e: list(e.path))), None)
    if bad_id is not None and (error is None or bad_id[0] < list(error.path)):
        raise bad_id[1]
    if error is None:
        if rows is not None:
            _storable({key: value for key, value in standing_in.items() if key != rows})
            return document
        _storable(standing_in)
        return document
    if error.context:  # oneOf: report the deepest (most specific) branch error
        error = max(error.context, key=lambda e: len(list(e.path)))
    # A branch error's `path` is relative to the oneOf's value: `absolute_path` names the
    # field from the body (`quiet_hours.start`, not `start`; `quiet_hours`, not `body`).
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        field = ".".join(filter(None, [path, extra[0] if extra else ""]))
        raise InvalidInput(f"unknown field {field!r}", field)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        field = ".".join(filter(None, [path, missing]))
        raise InvalidInput(f"{field!r} is required", field)
    if error.validator == "maxItems":
        raise _too_many(path or "body", error.validator_value, len(error.instance))
    if error.validator == "pattern" and error.validator_value == NAME["pattern"]:
        raise InvalidInput(f"{path}: must not be blank", path)
    raise InvalidInput(f"{path or 'body'}: {_shortened(error.message)}", path or "body")


def _shortened(message: str) -> str:
    # The message quotes the offending value: a 5 MiB string is not worth echoing back whole.
    return message if len(message) <= 300 else message[:300] + "..."


_TYPE_NAMES = {
    "string": "a string",
    "null": "null",
    "object": "an object",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _row_reason(error: Any) -> tuple[str | None, str]:
    """(field, reason) of one schema error in a row, in words a merchant can act on."""
    field = ".".join(str(part) for part in error.path) or None
    name = field or "the row"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ".".join(filter(None, [field, extra[0] if extra else ""])), (
            f"unknown field {extra[0]!r}" if extra else "unknown field"
        )
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return ".".join(filter(None, [field, missing])) or None, f"{missing or name} is required"
    if error.validator == "type":
        types = error.validator_value
        types = [types] if isinstance(types, str) else types
        return field, f"{name} must be {' or '.join(_TYPE_NAMES.get(t, t) for t in types)}"
    if error.validator == "minLength" and error.validator_value == 1:
        return field, f"{name} is blank"
    if error.validator == "maxLength":
        return field, f"{name} is longer than {error.validator_value} characters"
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return field, f"{name}: {message}"


def row_problem(row: Any, schema: dict[str, Any]) -> tuple[str | None, str] | None:
    """The first problem of one row of a bulk body as (field, reason), or None when the row is
    valid. `field` is None when the row as a whole is wrong (not an object)."""
    validator = _validator(id(schema), schema)
    error = next(iter(sorted(validator.iter_errors(row), key=lambda e: list(e.path))), None)
    if error is not None:
        return _row_reason(error)
    field = _unstorable_text(row)
    if field is not None:
        return field, f"{field} holds a NUL or an unpaired surrogate, which cannot be stored"
    return None


# --- answers ---------------------------------------------------------------------------------
# What the API answers, as published in the OpenAPI document. Objects list every field they
# carry and no other (`additionalProperties: false`): a field added to an answer without its
# schema fails tests/api/test_schemathesis.py.

CAMPAIGN_STATUSES = ("draft", "scheduled", "sending", "paused", "completed", "failed", "cancelled")
RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped")
LEDGER_KINDS = ("top-up", "debit", "refund", "adjustment")

# `limit` and `after` of every list (`api/body.py` reads them with these bounds).
PAGE_LIMIT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}
PAGE_AFTER: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}

_COUNT = {"type": "integer", "minimum": 0}
_CREDITS = {"type": "integer"}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_ID_OR_NULL = {"oneOf": [_ID, {"type": "null"}]}


def answer(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An answer object: every property is present unless named in `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    """A keyset page of `item`s (`api/body.py`'s `page`)."""
    return answer(
        {
            "items": {"type": "array", "items": item, "maxItems": PAGE_LIMIT["maximum"]},
            "next": {
                **_ID_OR_NULL,
                "description": "the `after` of the next page; null on the last page",
            },
        }
    )


ERROR = answer(
    {
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "field": {"type": "string", "description": "the field (or header) at fault, on a 422"},
    },
    optional=("field",),
)

SHOP_COMPLIANCE = {
    "quiet_hours": {
        "type": ["object", "null"],
        "properties": {"start": _CLOCK_TIME, "end": _CLOCK_TIME},
    },
    "frequency_cap": {"type": ["integer", "null"]},
}

SHOP_CREATED = answer(
    {
        "id": _ID,
        "domain": {"type": "string"},
        "name": {"type": "string"},
        "sender": _TEXT_OR_NULL,
        "timezone": {"type": "string"},
        "help_text": {"type": "string"},
        "require_consent": {"type": "boolean"},
        **SHOP_COMPLIANCE,
        "api_key": {"type": "string", "description": "shown once: only its hash is stored"},
    }
)

SHOP_SETTINGS = answer(
    {"id": _ID, "domain": {"type": "string"}, "timezone": {"type": "string"}, **SHOP_COMPLIANCE}
)

KEY_ISSUED = answer(
    {
        "id": _ID,
        "prefix": {"type": "string"},
        "api_key": {"type": "string", "description": "shown once"},
    }
)
KEY_LISTED = answer(
    {
        "id": _ID,
        "prefix": {"type": "string"},
        "created_at": _TIME,
        "last_used_at": _TIME_OR_NULL,
        "revoked_at": _TIME_OR_NULL,
    }
)
KEYS = answer({"items": {"type": "array", "items": KEY_LISTED}})
KEY_REVOKED = answer({"id": _ID, "revoked_at": _TIME})
# The compliance answers (SPEC 11) are JSON objects whose fields the README describes; their
# schemas are not itemised yet.
COMPLIANCE_ANSWER: dict[str, Any] = {"type": "object"}

# One event of the audit trail (`service/audit.py`).
AUDIT_EVENT = answer(
    {
        "id": _ID,
        "shop_id": _ID,
        "campaign_id": _ID_OR_NULL,
        "at": _TIME,
        "actor": answer(
            {
                "kind": {"enum": ["key", "admin", "webhook", "page", "clock", "worker"]},
                "name": {
                    **_TEXT_OR_NULL,
                    "description": "the API key's id, the webhook (`provider`, `shopify`),"
                    " the page (`unsubscribe`) or the clock's job",
                },
                "epoch": {
                    "type": ["integer", "null"],
                    "description": "the clock leader's fencing epoch (clock jobs only)",
                },
            }
        ),
        "subject": {"enum": list(SUBJECTS)},
        "subject_id": _ID_OR_NULL,
        "action": {"type": "string"},
        "from_status": _TEXT_OR_NULL,
        "to_status": _TEXT_OR_NULL,
        "amount": {"type": ["integer", "null"], "description": "credits, where it moves some"},
        "detail": {
            "type": ["object", "null"],
            "description": "what else it names: a contact's id, a number's suppression digest,"
            " a reference",
        },
        "reason": {"type": "string"},
    }
)

BALANCE = answer({"balance": _CREDITS})

CREDITS = answer({"balance": _CREDITS, "reserved": _CREDITS, "available": _CREDITS})

TRANSACTION = answer(
    {
        "id": _ID,
        "kind": {"enum": list(LEDGER_KINDS)},
        "amount": _CREDITS,
        "key": {"type": "string", "description": "the idempotency key of the ledger row"},
        "campaign_id": _ID_OR_NULL,
        "recipient_id": _ID_OR_NULL,
        "note": _TEXT_OR_NULL,
        "created_at": _TIME,
    }
)

CONTACT_LISTED = answer(
    {
        "id": _ID,
        "phone": {"type": "string", "description": "E.164"},
        "first_name": _TEXT_OR_NULL,
        "opted_out_at": _TIME_OR_NULL,
        "created_at": _TIME,
        "consent_source": _TEXT_OR_NULL,
        "consent_collected_at": _TIME_OR_NULL,
    }
)

CONTACTS_IMPORTED = answer(
    {
        "created": _COUNT,
        "updated": _COUNT,
        "invalid": {
            "type": "array",
            "items": answer(
                {
                    "index": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "0-based row (blank CSV lines are not rows)",
                    },
                    "field": _TEXT_OR_NULL,
                    "error": {"type": "string"},
                }
            ),
        },
    }
)

# The audience of a campaign: `contact_ids` (the list it was created with, null for every
# subscribed contact) or the `audience` object that replaces it (SPEC 5); both are described
# until every answer carries the object.
AUDIENCE = {
    "oneOf": [
        answer({"kind": {"const": "all_subscribed"}}),
        answer({"kind": {"const": "contacts"}, "count": _COUNT}),
    ]
}

CAMPAIGN = answer(
    {
        "id": _ID,
        "name": {"type": "string"},
        "text": {"type": "string"},
        "status": {"enum": list(CAMPAIGN_STATUSES)},
        "status_reason": _TEXT_OR_NULL,
        "contact_ids": {"type": ["array", "null"], "items": _ID},
        "audience": AUDIENCE,
        "append_unsubscribe": {"type": "boolean"},
        "scheduled_at": _TIME_OR_NULL,
        "started_at": _TIME_OR_NULL,
        "finished_at": _TIME_OR_NULL,
        "last_progress_at": _TIME_OR_NULL,
        "created_at": _TIME,
        "updated_at": _TIME,
    },
    optional=("contact_ids", "audience"),
)

ENQUEUED = answer(
    {
        "id": _ID,
        "status": {"const": "sending"},
        "recipients": _COUNT,
        "reserved_credits": _COUNT,
        "batches": _COUNT,
        "creating": {"type": "boolean"},
    }
)

TEST_SEND = answer(
    {
        "id": _ID,
        "campaign_id": _ID,
        "phone": {"type": ["string", "null"], "description": "E.164; null once erased"},
        "text": {**_TEXT_OR_NULL, "description": "what is sent; null once erased"},
        "segments": {"type": "integer", "minimum": 1, "description": "its cost in credits"},
        "status": {"enum": ["queued", "sending", "sent", "failed"]},
        "error": _TEXT_OR_NULL,
        "created_at": _TIME,
        "finished_at": _TIME_OR_NULL,
    }
)

PROGRESS = answer(
    {
        "id": _ID,
        "status": {"enum": list(CAMPAIGN_STATUSES)},
        "status_reason": _TEXT_OR_NULL,
        "total": _COUNT,
        **{status: _COUNT for status in RECIPIENT_STATUSES},
        "delivery": {
            "type": "object",
            "additionalProperties": _COUNT,
            "description": "recipients by delivery status",
        },
        "credits": answer(
            {
                "reserved": _COUNT,
                "consumed": _COUNT,
                "released": _COUNT,
                "held": {**_COUNT, "description": "what the reservation still holds"},
                "reservation": {
                    "enum": ["active", "held", "released", None],
                    "description": "the reservation's status",
                },
            }
        ),
        "quiet_hours": answer(
            {
                "waiting": {
                    **_COUNT,
                    "description": "pending recipients waiting for quiet hours to end",
                },
                "next_opening": {**_TIME_OR_NULL, "description": "when the first of them go"},
                "until": {**_TIME_OR_NULL, "description": "when the last of them go"},
            }
        ),
        "recipients_created": {"type": "boolean"},
        "started_at": _TIME_OR_NULL,
        "finished_at": _TIME_OR_NULL,
        "last_progress_at": _TIME_OR_NULL,
    }
)

RECIPIENT = answer(
    {
        "id": _ID,
        "contact_id": _ID,
        "phone": {"type": ["string", "null"], "description": "null once the contact was erased"},
        "first_name": _TEXT_OR_NULL,
        "status": {"enum": list(RECIPIENT_STATUSES)},
        "mitto_message_id": _TEXT_OR_NULL,
        "delivery_status": _TEXT_OR_NULL,
        "error": _TEXT_OR_NULL,
        "sent_at": _TIME_OR_NULL,
        "delivery_at": _TIME_OR_NULL,
    }
)

SHORT_LINK_DISABLED = answer(
    {
        "code": {"type": "string"},
        "url": {"type": "string"},
        "clicks": _COUNT,
        "disabled_at": _TIME,
    }
)

API_KEY_ISSUED = answer(
    {
        "id": _ID,
        "prefix": {"type": "string"},
        "api_key": {"type": "string", "description": "shown once: only its hash is stored"},
    }
)

API_KEYS = answer(
    {
        "items": {
            "type": "array",
            "items": answer(
                {
                    "id": _ID,
                    "prefix": {"type": "string"},
                    "created_at": _TIME,
                    "last_used_at": _TIME_OR_NULL,
                    "revoked_at": _TIME_OR_NULL,
                }
            ),
        }
    }
)

API_KEY_REVOKED = answer({"id": _ID, "revoked_at": _TIME})

REPORTS_RECEIVED = answer(
    {
        "received": _COUNT,
        "invalid_count": _COUNT,
        "invalid": {
            "type": "array",
            "description": "the reports of an array that were refused (the others were"
            " stored): the first 100 of `invalid_count`",
            "items": answer(
                {
                    "index": {"type": "integer", "minimum": 0},
                    "field": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                }
            ),
        },
    }
)

HEALTH = answer({"ok": {"const": True}})

READINESS = answer(
    {
        "ok": {"type": "boolean"},
        "down": {"type": "array", "items": {"enum": ["postgresql", "redis"]}},
        "reason": {"type": "string"},
    },
    optional=("reason",),
)

# The sections of `/health/full` are described in the README (SPEC 8); they are objects, and a
# section whose dependency is down is `{"error": ...}`.
_SECTION = {"type": "object"}
FULL_HEALTH = answer(
    {
        "ok": {"type": "boolean"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "checked_at": _TIME,
        "dependencies": answer({"postgresql": {"type": "string"}, "redis": {"type": "string"}}),
        "scheduler": _SECTION,
        "workers": _SECTION,
        "queues": _SECTION,
        "campaigns": _SECTION,
        "took_ms": {"type": "number", "minimum": 0},
    }
)

OPERATOR_STATE = answer(
    {"health": FULL_HEALTH, "campaigns": {"type": "array", "items": {"type": "object"}}}
)

HTML_PAGE = {"type": "string"}
