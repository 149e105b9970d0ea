"""Property tests: for any input, the parsers of outside data answer with a value or their
domain error, never another exception, and the segment counter keeps SPEC 4.3's rules.

Hypothesis generates the inputs (any text, any JSON value, and inputs shaped like the real
thing so the generated cases get past the first check); every test is bounded by
`max_examples` so the file runs in a few seconds.
"""

from __future__ import annotations

import json
import math
import re
import string
from datetime import UTC, datetime, timedelta, timezone

import phonenumbers
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.report_ingest import Refused, parse_reports
from service import links
from service.contacts import normalise_phone
from service.delivery import DELIVERY_STATUSES
from service.errors import InvalidInput
from service.segments import (
    GSM7,
    GSM7_BASIC,
    UCS2,
    encoding,
    max_segments_for_length,
    segment_count,
    text_length,
)

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Python string, lone surrogates included (JSON's "\ud800" decodes to one).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=300)

# --- (a) the phone normaliser of the contacts import -------------------------------------

# phonenumbers' E.164 form: "+", a country code, the national number (up to 17 digits).
NORMALISED = re.compile(r"\+[1-9][0-9]{1,19}")
COUNTRY_CODES = sorted(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
# What the import's schema lets through as `default_country`: any two capital letters.
DEFAULT_REGION = st.one_of(st.none(), st.sampled_from(REGIONS), st.from_regex(r"\A[A-Z]{2}\Z"))
# How people type numbers: prefixes, separators, and digits of other scripts (which
# phonenumbers reads as digits: fullwidth, Arabic-Indic, Devanagari).
PHONE_PIECES = st.sampled_from(list(string.digits) + list(" -.()/") + list("０１２９٠١٩०१९"))
PHONE_LIKE = st.builds(
    lambda prefix, code, rest: prefix + code + "".join(rest),
    st.sampled_from(["", "+", "00", "0", "+0", "++", "tel:+"]),
    st.one_of(st.just(""), st.sampled_from(COUNTRY_CODES)),
    st.lists(PHONE_PIECES, max_size=20),
)


@BOUNDED
@given(raw=st.one_of(ANY_TEXT, PHONE_LIKE), default_region=DEFAULT_REGION)
@example(raw="+30 691 234 5678", default_region=None)
@example(raw="691 234 5678", default_region="GR")
@example(raw="", default_region=None)
@example(raw="+" + "9" * 300, default_region="ZZ")
def test_the_phone_normaliser_returns_a_normalised_number_or_refuses_with_value_error(
    raw: str, default_region: str | None
) -> None:
    # Given any string a contacts import may carry, and any default country the schema allows
    # When it is normalised
    try:
        phone, country = normalise_phone(raw, default_region)
    except ValueError as error:
        # Then a refusal is the ValueError the import reports by row, with a reason
        assert str(error)
        return
    # Then a number is in E.164 form, and normalising it again changes nothing
    assert NORMALISED.fullmatch(phone), phone
    assert country is None or re.fullmatch(r"[A-Z]{2}|001", country), country
    assert normalise_phone(phone) == (phone, country)


@BOUNDED
@given(raw=PHONE_LIKE, default_region=DEFAULT_REGION)
@example(raw="20100000000000", default_region="DE")
def test_a_normalised_number_has_at_most_15_digits(raw: str, default_region: str | None) -> None:
    # Given a string shaped like a phone number
    # When it is normalised
    try:
        phone, _ = normalise_phone(raw, default_region)
    except ValueError:
        return
    # Then it is E.164: at most 15 digits, country code included
    assert len(phone) - 1 <= 15, phone


# --- (b) the segment counter (SPEC 4.3) --------------------------------------------------

# SPEC 4.3's extension characters (sent as escape + code), and the form feed of the same
# table; written out here rather than taken from the module under test.
EXTENSION = "€[]{}~^|\\\f"
GSM_BASIC_CHAR = st.sampled_from(sorted(GSM7_BASIC))  # the table is pinned by test_segments
GSM_EXTENSION_CHAR = st.sampled_from(EXTENSION)
GSM_CHAR = st.sampled_from(sorted(GSM7_BASIC | set(EXTENSION)))
NON_GSM_BMP_CHAR = st.characters(
    max_codepoint=0xFFFF, exclude_categories=("Cs",), exclude_characters=GSM7_BASIC | set(EXTENSION)
)
ASTRAL_CHAR = st.characters(min_codepoint=0x10000)
BMP_CHAR = st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",))


def septets(text: str) -> int:
    return len(text) + sum(ch in EXTENSION for ch in text)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@st.composite
def gsm_text_of(draw: st.DrawFn, length: int) -> str:
    """A GSM-7 text of exactly `length` septets, extension characters (2 each) mixed in."""
    extension = draw(st.integers(0, length // 2))
    chars = draw(st.lists(GSM_EXTENSION_CHAR, min_size=extension, max_size=extension)) + draw(
        st.lists(GSM_BASIC_CHAR, min_size=length - 2 * extension, max_size=length - 2 * extension)
    )
    return "".join(draw(st.permutations(chars)))


@st.composite
def ucs2_text_of(draw: st.DrawFn, length: int) -> str:
    """A text of exactly `length` UTF-16 units with at least one character outside GSM-7."""
    astral = draw(st.integers(0, (length - 1) // 2))
    chars = (
        [draw(NON_GSM_BMP_CHAR)]
        + draw(st.lists(ASTRAL_CHAR, min_size=astral, max_size=astral))
        + draw(
            st.lists(BMP_CHAR, min_size=length - 1 - 2 * astral, max_size=length - 1 - 2 * astral)
        )
    )
    return "".join(draw(st.permutations(chars)))


@BOUNDED
@given(text=ANY_TEXT)
@example(text="")
def test_any_text_costs_a_positive_whole_number_of_segments(text: str) -> None:
    # Given any text, surrogates and emoji included
    # When it is costed
    count = segment_count(text)
    # Then it costs a positive int (the empty text, unsendable, costs 0 by design), never
    # more than the bound the reservation is computed with
    assert isinstance(count, int)
    assert count >= 1 if text else count == 0
    assert count <= max_segments_for_length(text_length(text), encoding(text))


@BOUNDED
@given(text=st.text(GSM_BASIC_CHAR, min_size=1, max_size=700))
def test_gsm7_texts_cost_160_then_153_per_part(text: str) -> None:
    # Given a text of the GSM-7 basic alphabet only
    # When it is costed
    # Then it is GSM-7, one part up to 160 characters, else ceil(n / 153) parts
    assert encoding(text) == GSM7
    expected = 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert segment_count(text) == expected


@BOUNDED
@given(text=st.text(GSM_CHAR, min_size=1, max_size=700))
def test_gsm7_extension_characters_count_twice(text: str) -> None:
    # Given a GSM-7 text with extension characters (escape + code)
    # When it is costed
    count = segment_count(text)
    # Then its length is in septets, extension characters counting 2, and the parts hold 153
    # septets each (152 when an extension character would straddle a boundary)
    assert text_length(text) == septets(text)
    if septets(text) <= 160:
        assert count == 1
    else:
        assert math.ceil(septets(text) / 153) <= count <= math.ceil(septets(text) / 152)


@BOUNDED
@given(text=st.text(BMP_CHAR, min_size=1, max_size=300).filter(lambda t: encoding(t) == UCS2))
def test_texts_outside_gsm7_cost_70_then_67_per_part(text: str) -> None:
    # Given a text with a character outside GSM-7, every character in the BMP
    # When it is costed
    # Then it is UCS-2, one part up to 70 characters, else ceil(n / 67) parts
    expected = 1 if len(text) <= 70 else math.ceil(len(text) / 67)
    assert segment_count(text) == expected


@BOUNDED
@given(
    text=st.text(st.one_of(BMP_CHAR, ASTRAL_CHAR), min_size=1, max_size=300).filter(
        lambda t: encoding(t) == UCS2
    )
)
def test_characters_beyond_the_bmp_count_as_two_utf16_units(text: str) -> None:
    # Given a UCS-2 text that may hold emoji (surrogate pairs)
    # When it is costed
    count = segment_count(text)
    # Then its length is in UTF-16 units and no pair is split across parts
    assert text_length(text) == utf16_units(text)
    if utf16_units(text) <= 70:
        assert count == 1
    else:
        assert math.ceil(utf16_units(text) / 67) <= count <= math.ceil(utf16_units(text) / 66)


@settings(BOUNDED, max_examples=50)
@given(at_limit=gsm_text_of(160), one_more=GSM_BASIC_CHAR, extension=GSM_EXTENSION_CHAR)
def test_gsm7_boundary_160_is_one_part_161_two(
    at_limit: str, one_more: str, extension: str
) -> None:
    # Given a GSM-7 text of exactly 160 septets
    # When one more character is added (an extension character adds two septets)
    # Then 160 septets are one part, 161 or 162 are two
    assert segment_count(at_limit) == 1
    assert segment_count(at_limit + one_more) == 2
    assert segment_count(at_limit[:-1] + extension) == (1 if at_limit[-1] in EXTENSION else 2)
    assert segment_count(extension * 80) == 1
    assert segment_count(extension * 80 + one_more) == 2


@settings(BOUNDED, max_examples=50)
@given(at_limit=ucs2_text_of(70), one_more=BMP_CHAR)
def test_ucs2_boundary_70_is_one_part_71_two(at_limit: str, one_more: str) -> None:
    # Given a UCS-2 text of exactly 70 UTF-16 units
    # When one more character is added
    # Then 70 units are one part, 71 are two
    assert segment_count(at_limit) == 1
    assert segment_count(at_limit + one_more) == 2


@st.composite
def parts_and_text(
    draw: st.DrawFn, alphabet: st.SearchStrategy[str], per_part: int
) -> tuple[int, str]:
    """(k, a text of exactly k full parts of `per_part` characters from `alphabet`)."""
    parts = draw(st.integers(2, 6))
    return parts, draw(st.text(alphabet, min_size=parts * per_part, max_size=parts * per_part))


@settings(BOUNDED, max_examples=50)
@given(full=parts_and_text(GSM_BASIC_CHAR, 153), one_more=GSM_BASIC_CHAR)
def test_gsm7_parts_of_a_long_text_hold_153_septets(full: tuple[int, str], one_more: str) -> None:
    # Given a GSM-7 text that fills k concatenated parts exactly
    parts, text = full
    # When one more character is added
    # Then k * 153 septets are k parts, one more septet opens part k + 1
    assert segment_count(text) == parts
    assert segment_count(text + one_more) == parts + 1


@settings(BOUNDED, max_examples=50)
@given(full=parts_and_text(NON_GSM_BMP_CHAR, 67), one_more=BMP_CHAR)
def test_ucs2_parts_of_a_long_text_hold_67_units(full: tuple[int, str], one_more: str) -> None:
    # Given a UCS-2 text that fills k concatenated parts exactly
    parts, text = full
    # When one more character is added
    # Then k * 67 units are k parts, one more unit opens part k + 1
    assert segment_count(text) == parts
    assert segment_count(text + one_more) == parts + 1


@BOUNDED
@given(text=st.text(GSM_CHAR, max_size=500), more=st.text(GSM_CHAR, min_size=1, max_size=20))
def test_a_longer_gsm7_text_never_costs_less(text: str, more: str) -> None:
    # Given a GSM-7 text
    # When characters are appended (still GSM-7)
    # Then the cost does not go down
    assert segment_count(text + more) >= segment_count(text)


# --- (c) the unsubscribe-token parser (SPEC 6) --------------------------------------------

SECRET = st.text(min_size=1, max_size=64)
DB_ID = st.integers(1, 2**63 - 1)
# Characters a token is written in, and their standard-alphabet look-alikes.
TOKEN_ALPHABETS = string.ascii_letters + string.digits + "-_+/="


@BOUNDED
@given(secret=SECRET, token=st.one_of(ANY_TEXT, st.text(TOKEN_ALPHABETS, max_size=60)))
@example(secret="s", token="")
@example(secret="s", token="=")
@example(secret="s", token="\ud800")
def test_the_unsubscribe_token_parser_returns_ids_or_none(secret: str, token: str) -> None:
    # Given any string in the place of a token (the `/u/{token}` path segment)
    # When it is read
    ids = links.read_unsubscribe_token(secret, token)
    # Then it names a (shop, contact) or is refused (None), without raising
    assert ids is None or (
        isinstance(ids, tuple)
        and len(ids) == 2
        and all(isinstance(part, int) and part >= 0 for part in ids)
    )


@BOUNDED
@given(secret=SECRET, other=SECRET, shop_id=DB_ID, contact_id=DB_ID)
def test_a_signed_token_round_trips_and_only_under_its_secret(
    secret: str, other: str, shop_id: int, contact_id: int
) -> None:
    # Given a token signed for (shop, contact)
    token = links.unsubscribe_token(secret, shop_id, contact_id)
    # When it is read with the secret, or with another one
    # Then it names that shop and contact, and no other secret accepts it
    assert links.read_unsubscribe_token(secret, token) == (shop_id, contact_id)
    if other != secret:
        assert links.read_unsubscribe_token(other, token) is None


def alterations(token: str, replacements: str) -> list[str]:
    """Every string that differs from `token` in exactly one character from `replacements`."""
    return [
        token[:i] + ch + token[i + 1 :]
        for i in range(len(token))
        for ch in replacements
        if ch != token[i]
    ]


@BOUNDED
@given(
    secret=SECRET,
    shop_id=DB_ID,
    contact_id=DB_ID,
    replacement=ANY_CHAR.filter(lambda ch: ch not in TOKEN_ALPHABETS),
)
def test_a_token_with_one_character_outside_its_alphabet_is_refused(
    secret: str, shop_id: int, contact_id: int, replacement: str
) -> None:
    # Given a genuine token
    token = links.unsubscribe_token(secret, shop_id, contact_id)
    # When any one character becomes a character no base64 alphabet has
    # Then the altered token is refused
    for altered in alterations(token, replacement):
        assert links.read_unsubscribe_token(secret, altered) is None, altered


@settings(BOUNDED, max_examples=20)
@given(secret=SECRET, shop_id=DB_ID, contact_id=DB_ID)
def test_a_token_altered_in_any_one_character_is_refused(
    secret: str, shop_id: int, contact_id: int
) -> None:
    # Given a genuine token
    token = links.unsubscribe_token(secret, shop_id, contact_id)
    # When any one character is replaced by another of the base64 alphabets
    # Then every altered token is refused
    for altered in alterations(token, TOKEN_ALPHABETS):
        assert links.read_unsubscribe_token(secret, altered) is None, (token, altered)


# --- (d) the delivery-report webhook parser (SPEC 7) ---------------------------------------

# Any JSON value as `json.loads` returns it (it reads NaN and Infinity too, and no integer
# longer than Python's 4,300-digit conversion limit).
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(ANY_CHAR, max_size=40),
)
ANY_JSON = st.recursive(
    JSON_SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

OFFSETS = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-(24 * 60 - 1), 24 * 60 - 1)
)
TIMESTAMP = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), OFFSETS)).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(
        lambda moment: moment.isoformat().replace("+00:00", "Z")
    ),
    ANY_TEXT,
    ANY_JSON,
)
REPORT = st.fixed_dictionaries(
    {
        "id": st.one_of(st.text(min_size=1, max_size=100), ANY_JSON),
        "deliveryStatus": st.one_of(st.sampled_from(DELIVERY_STATUSES), ANY_JSON),
    },
    optional={
        "to": st.one_of(st.none(), st.text(max_size=40), ANY_JSON),
        "reference": st.one_of(st.none(), st.text(max_size=200), ANY_JSON),
        "statusCode": st.one_of(st.none(), st.integers(-(2**32), 2**32), ANY_JSON),
        "timestamp": st.one_of(st.none(), TIMESTAMP),
        "price": ANY_JSON,
    },
)  # providers add fields over time
REPORTS_LIKE = st.one_of(REPORT, st.lists(REPORT, max_size=4))


def delivery_reports(document: object) -> list[dict]:
    """What `POST /webhooks/mitto/dlr` stores of a decoded body (`api/report_ingest.py`)."""
    return parse_reports(json.dumps(document).encode()).reports


@BOUNDED
@given(document=st.one_of(ANY_JSON, REPORTS_LIKE))
@example(document=[])
@example(
    document={"id": "m1", "deliveryStatus": "Delivered", "timestamp": "0001-01-01T00:30:00+01:00"}
)
@example(
    document={"id": "m1", "deliveryStatus": "Delivered", "timestamp": "9999-12-31T23:30:00-01:00"}
)
@example(document={"id": "m1", "deliveryStatus": "Sent", "to": "\x00"})
def test_the_delivery_report_parser_gives_reports_or_invalid_input(document: object) -> None:
    # Given any JSON value as the webhook's body
    # When it is parsed
    try:
        reports = delivery_reports(document)
    except InvalidInput as error:
        # Then a refusal is the domain error (422) naming what is wrong
        assert error.description and error.field
        return
    except Refused as refused:  # a value JSON cannot carry (Infinity): malformed, 400
        assert refused.status.startswith("400")
        return
    # Then every report has a provider id and a known status, and a time in UTC if any
    assert reports
    for report in reports:
        assert isinstance(report["id"], str) and report["id"]
        assert report["deliveryStatus"] in DELIVERY_STATUSES
        moment = report.get("timestamp")
        assert moment is None or moment.utcoffset() == timedelta(0)


# A campaign's contact ids: mostly ids, now and then anything JSON can hold in their place.
NOT_AN_ID = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
CONTACT_IDS = st.lists(
    st.one_of(st.integers(min_value=1, max_value=2**63 - 1), NOT_AN_ID), min_size=2, max_size=40
) | st.lists(st.integers(min_value=1, max_value=2**63 - 1), min_size=2, max_size=40)


# The rest of a campaign's body: valid, missing, of the wrong type, or joined by an unknown field.
CAMPAIGN_REST = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("n"), st.integers()),
        "text": st.one_of(st.just("t"), st.integers()),
        "append_unsubscribe": st.one_of(st.booleans(), st.just("y")),
        "extra": st.just(1),
    },
)


@BOUNDED
@given(CONTACT_IDS, CAMPAIGN_REST)
@example([1, 2, "3"], {"name": "n", "text": "t"})
@example([1, 2.0, 3], {"name": "n", "text": "t"})
@example([5, 0], {"name": "n", "text": "t"})
@example([1, "x"], {"text": "t"})
@example([1, "x"], {"name": "n", "text": "t", "extra": 1})
@example([1, "x"], {"name": "n", "text": "t", "append_unsubscribe": "y"})
@example([1, "x"], {"name": 5, "text": "t"})
def test_a_list_of_ids_is_judged_as_the_validator_judges_it_item_by_item(ids, rest):
    # Given a campaign's body whose contact ids may hold anything in place of an id (the ids
    # are checked one comparison an item, the validator seeing the first only: 600,000 ids
    # took it 5 s), and whose other fields may be wrong too; compared with the validator
    # walking every item (the check turned off)
    from unittest import mock

    from api import schemas

    document = {**rest, "contact_ids": ids}

    def judged() -> tuple[str, str | None] | dict:
        try:
            return schemas.validate(document, schemas.CAMPAIGN_CREATE)
        except InvalidInput as error:
            return (str(error), error.field)

    fast = judged()
    with mock.patch.object(schemas, "_id_lists_checked", lambda document, schema: (document, None)):
        walked = judged()

    # Then both accept the same bodies (the document itself, every id kept) and refuse the
    # others naming the same field (the first by its path) with the same reason
    assert fast == walked
    if isinstance(fast, dict):
        assert fast["contact_ids"] is ids
