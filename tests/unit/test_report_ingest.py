"""The webhook's hand-written validation (`api/report_ingest.parse_reports`) refuses exactly what
the documented schema (`schemas.DELIVERY_REPORT`, validated by jsonschema) refuses, naming the
same field, and accepts exactly what it accepts; in an array each report on its own."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from api import schemas
from api.report_ingest import MAX_REPORTS, Refused, parse_reports
from service.errors import InvalidInput

GOOD = {
    "id": "msg-1",
    "to": "+306912345678",
    "reference": "ref-1",
    "deliveryStatus": "Delivered",
    "statusCode": 0,
    "timestamp": "2025-01-01T00:00:00Z",
}

REPORTS: list[Any] = [
    GOOD,
    {"id": "m", "deliveryStatus": "Queued"},
    {**GOOD, "to": None, "reference": None, "statusCode": None, "timestamp": None},
    {**GOOD, "networkCode": "20201", "extra": {"nested": [1, "two"]}},
    {**GOOD, "statusCode": 3.0},
    {**GOOD, "statusCode": 2**31 - 1},
    {**GOOD, "statusCode": -(2**31)},
    {**GOOD, "timestamp": "2025-01-01T00:00:00+03:00"},
    # what providers write that the first version refused (a 4xx loses the report)
    {**GOOD, "id": 5},
    {**GOOD, "id": 5.0},
    {**GOOD, "to": 306912345678, "reference": 12345},
    {**GOOD, "to": 306912345678.0},
    # what helps matching beyond the id is kept empty when it cannot be read
    {**GOOD, "to": -5},
    {**GOOD, "to": 10**40},
    {**GOOD, "to": 5.5},
    {**GOOD, "to": "1" * 41},
    {**GOOD, "reference": ["r"]},
    {**GOOD, "reference": "r" * 201},
    {**GOOD, "id": 10**100 - 1},
    {**GOOD, "deliveryStatus": "delivered"},
    {**GOOD, "deliveryStatus": "DELIVERED"},
    {**GOOD, "deliveryStatus": " Sent "},
    {**GOOD, "statusCode": "0"},
    {**GOOD, "statusCode": True},
    {**GOOD, "statusCode": 1.5},
    {**GOOD, "statusCode": 2**31},
    {**GOOD, "statusCode": 10**20},
    {**GOOD, "statusCode": "x"},
    {**GOOD, "timestamp": "yesterday"},
    {**GOOD, "timestamp": "2025-01-01T00:00:00"},
    {**GOOD, "timestamp": "2025-01-01 00:00:00"},
    {**GOOD, "timestamp": "9999-12-31T23:59:59-05:00"},
    {**GOOD, "timestamp": 1700000000},
    # refused
    {},
    {"id": "m"},
    {"deliveryStatus": "Delivered"},
    {**GOOD, "id": ""},
    {**GOOD, "id": "x" * 101},
    {**GOOD, "id": -1},
    {**GOOD, "id": 10**100},
    {**GOOD, "id": 5.5},
    {**GOOD, "id": True},
    {**GOOD, "id": None},
    {**GOOD, "id": []},
    {**GOOD, "id": {"x": 1}},
    {**GOOD, "deliveryStatus": "Bogus"},
    {**GOOD, "deliveryStatus": "Delivered!"},
    {**GOOD, "deliveryStatus": None},
    {**GOOD, "deliveryStatus": 3},
    {**GOOD, "id": "a\x00b"},
    {**GOOD, "to": "\ud800"},
    {**GOOD, "networkCode": "nul\x00"},
    {**GOOD, "extra": {"deep": ["ok", "\x00"]}},
    {"to": 5, "deliveryStatus": 3},  # a missing field is named before a wrong one
    "a string",
    5,
    None,
    True,
    [GOOD],  # an array inside an array is not a report
]


def schema_outcome(report: Any, prefix: str = "") -> str | None:
    """The field the schema path names for one report (None: accepted)."""
    try:
        # Only the id refuses for text PostgreSQL cannot store: the number and the reference
        # are then kept empty, and other fields are not stored
        cleaned = schemas.storable_text(copy.deepcopy(report))  # (it cleans in place)
        if isinstance(report, dict) and "id" in report:
            cleaned["id"] = report["id"]
        schemas.validate(cleaned, schemas.DELIVERY_REPORT)
    except InvalidInput as error:
        return error.field if error.field != "body" else (prefix.rstrip(".") or "body")
    return None


def fast_outcome(document: Any) -> str | None:
    try:
        parse_reports(json.dumps(document).encode())
    except InvalidInput as error:
        return error.field
    return None


@pytest.mark.parametrize("report", REPORTS, ids=[repr(b)[:60] for b in REPORTS])
def test_the_hand_written_validation_names_what_the_schema_names(report):
    if isinstance(report, list):  # a body of its own: an array of one report
        assert fast_outcome(report) is None
        return
    assert fast_outcome(report) == schema_outcome(report)


@pytest.mark.parametrize("report", REPORTS, ids=[repr(b)[:60] for b in REPORTS])
def test_in_an_array_each_report_is_refused_or_stored_on_its_own(report):
    # Given an array of a valid report, the report under test and another valid one
    document = [GOOD, report, {**GOOD, "id": "msg-3"}]
    # When it is parsed
    parsed = parse_reports(json.dumps(document).encode())
    # Then the report under test is listed as invalid exactly when the schema refuses it,
    # naming its field under its index, and the others are stored
    refused = schema_outcome(report, "1.")
    if refused is None:
        assert parsed.invalid == [] and len(parsed.reports) == 3
    else:
        (invalid,) = parsed.invalid
        expected = refused if refused.startswith("1") else f"1.{refused}"
        assert (invalid["index"], invalid["field"]) == (1, expected), invalid
        assert [r["id"] for r in parsed.reports] == ["msg-1", "msg-3"]


def test_an_array_without_a_valid_report_is_refused_naming_the_first():
    with pytest.raises(InvalidInput) as error:
        parse_reports(json.dumps([{**GOOD, "id": -5}, {**GOOD, "id": ""}]).encode())
    assert error.value.field == "0.id"


@pytest.mark.parametrize(
    "document, field",
    [("a string", "body"), (5, "body"), (None, "body"), (True, "body"), ([], "body")],
)
def test_a_body_that_is_neither_a_report_nor_an_array_is_refused(document, field):
    assert fast_outcome(document) == field


def test_the_accepted_reports_carry_the_stored_fields_only():
    # Given a report with a provider's extra field, a float status code and an offset
    parsed = parse_reports(
        json.dumps(
            {**GOOD, "statusCode": 3.0, "timestamp": "2025-01-01T03:00:00+03:00", "x": 1}
        ).encode()
    )
    (report,) = parsed.reports
    # Then the six stored fields come back, the code an int, the time in UTC
    assert set(report) == {"id", "to", "reference", "deliveryStatus", "statusCode", "timestamp"}
    assert report["statusCode"] == 3 and isinstance(report["statusCode"], int)
    assert report["timestamp"].isoformat() == "2025-01-01T00:00:00+00:00"


def test_a_providers_spellings_are_read_as_the_stored_values():
    # Given a report as another provider writes it: an integer id, an upper-case status,
    # the code in a string, a time without an offset
    (report,) = parse_reports(
        json.dumps(
            {
                "id": 1001,
                "deliveryStatus": "DELIVERED",
                "statusCode": "0",
                "timestamp": "2026-12-03 14:17:51",
            }
        ).encode()
    ).reports
    # Then it is stored as the send's answer named it and as SPEC 7 spells the status
    assert report["id"] == "1001" and report["deliveryStatus"] == "Delivered"
    assert report["statusCode"] == 0
    assert report["timestamp"] == datetime(2026, 12, 3, 14, 17, 51, tzinfo=UTC)
    # And an unreadable time or code is kept empty rather than refusing the report
    (vague,) = parse_reports(
        json.dumps({**GOOD, "statusCode": "n/a", "timestamp": "yesterday"}).encode()
    ).reports
    assert (vague["statusCode"], vague["timestamp"]) == (None, None)


@pytest.mark.parametrize("raw", [b"", b"  \n", b"{", b"[{]", b"\xff\xfe", b"[" * 100_000], ids=str)
def test_a_body_that_is_not_json_is_malformed(raw):
    with pytest.raises(Refused) as refused:
        parse_reports(raw)
    assert refused.value.status.startswith("400")
    assert refused.value.body["title"] == "Malformed JSON"


def test_more_reports_than_a_request_may_carry_are_refused_naming_the_body():
    with pytest.raises(InvalidInput) as error:
        parse_reports(json.dumps([GOOD] * (MAX_REPORTS + 1)).encode())
    assert error.value.field == "body"
    assert str(MAX_REPORTS) in error.value.description


def test_a_refused_arrays_answer_lists_the_first_hundred_and_counts_them_all():
    # Given one valid report and 9,999 that are not reports, with long field names
    document = [GOOD] + [{"x" * 400: "\x00"} for _ in range(9_999)]
    parsed = parse_reports(json.dumps(document).encode())
    # Then the answer stays small: the first 100 refused, each field cut, and the count
    answer = parsed.answer()
    assert (answer["received"], answer["invalid_count"]) == (1, 9_999)
    assert len(answer["invalid"]) == 100
    assert all(len(item["field"]) <= 100 for item in answer["invalid"])
    assert len(json.dumps(answer)) < 60_000


@pytest.mark.parametrize(
    "field, value",
    [("to", "30\x006912"), ("reference", "r\x00"), ("note", "a\x00b"), ("meta", {"x": ["\x00"]})],
)
def test_text_postgresql_cannot_store_outside_the_id_refuses_nothing(field, value):
    # Given a report whose number, reference or an extra field holds a NUL
    parsed = parse_reports(json.dumps({**GOOD, field: value}).encode())
    # Then it is stored by its id, what cannot be stored kept empty: a 422 would lose it
    (report,) = parsed.reports
    assert report["id"] == GOOD["id"] and parsed.invalid == []
    if field in ("to", "reference"):
        assert report[field] is None


def test_a_status_holding_a_nul_is_read_without_it():
    (report,) = parse_reports(
        json.dumps({**GOOD, "deliveryStatus": "Delivered\x00"}).encode()
    ).reports
    assert report["deliveryStatus"] == "Delivered"


def test_an_integer_over_python_s_limit_refuses_only_the_report_whose_id_it_is():
    huge = "9" * 5000
    # Given an array whose second report has such an integer in an extra field, and a third
    # whose id is one
    body = (
        '[{"id": "a", "deliveryStatus": "Delivered"},'
        f' {{"id": "b", "deliveryStatus": "Delivered", "x": {huge}, "to": {huge}}},'
        f' {{"id": {huge}, "deliveryStatus": "Delivered"}}]'
    ).encode()
    parsed = parse_reports(body)
    # Then the first two are stored (the number kept empty) and the third is refused by its
    # index, in words (it was a 400 for the whole body with Python's advice as the reason)
    assert [r["id"] for r in parsed.reports] == ["a", "b"]
    assert parsed.reports[1]["to"] is None
    (refused,) = parsed.invalid
    assert (refused["index"], refused["field"]) == (2, "2.id")
    assert "set_int_max_str_digits" not in refused["reason"]
