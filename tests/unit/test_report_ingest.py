"""The webhook's hand-written validation (`api/report_ingest.parse_reports`) refuses exactly what
the documented schema (`schemas.DELIVERY_REPORTS`, validated by jsonschema) refuses, naming the
same field, and accepts exactly what it accepts."""

from __future__ import annotations

import json
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

BODIES: list[Any] = [
    GOOD,
    {"id": "m", "deliveryStatus": "Queued"},
    {**GOOD, "to": None, "reference": None, "statusCode": None, "timestamp": None},
    {**GOOD, "networkCode": "20201", "extra": {"nested": [1, "two"]}},
    {**GOOD, "statusCode": 3.0},
    {**GOOD, "statusCode": 2**31 - 1},
    {**GOOD, "statusCode": -(2**31)},
    {**GOOD, "timestamp": "2025-01-01T00:00:00+03:00"},
    [GOOD],
    [GOOD, {**GOOD, "id": "msg-2"}],
    # refused
    {},
    {"id": "m"},
    {"deliveryStatus": "Delivered"},
    {**GOOD, "id": ""},
    {**GOOD, "id": "x" * 101},
    {**GOOD, "id": 5},
    {**GOOD, "id": None},
    {**GOOD, "to": 5},
    {**GOOD, "to": "1" * 41},
    {**GOOD, "reference": ["r"]},
    {**GOOD, "reference": "r" * 201},
    {**GOOD, "deliveryStatus": "Bogus"},
    {**GOOD, "deliveryStatus": "delivered"},
    {**GOOD, "deliveryStatus": None},
    {**GOOD, "deliveryStatus": 3},
    {**GOOD, "statusCode": "0"},
    {**GOOD, "statusCode": True},
    {**GOOD, "statusCode": 1.5},
    {**GOOD, "statusCode": 2**31},
    {**GOOD, "statusCode": -(2**31) - 1},
    {**GOOD, "statusCode": 10**20},
    {**GOOD, "timestamp": "yesterday"},
    {**GOOD, "timestamp": "2025-01-01T00:00:00"},
    {**GOOD, "timestamp": "9999-12-31T23:59:59-05:00"},
    {**GOOD, "timestamp": 1700000000},
    {**GOOD, "id": "a\x00b"},
    {**GOOD, "to": "\ud800"},
    {**GOOD, "networkCode": "nul\x00"},
    {**GOOD, "extra": {"deep": ["ok", "\x00"]}},
    {"to": 5},  # a wrong field is named before a missing one
    {"id": "m", "statusCode": "x"},
    "a string",
    5,
    None,
    True,
    [],
    [GOOD, {**GOOD, "deliveryStatus": "Bogus"}],
    [GOOD, 5],
    [GOOD, {"id": "m"}],
    [{"id": "m"}, {**GOOD, "to": 5}],  # the deepest error first, as the schema's
    [[GOOD]],
    [{**GOOD, "id": "\x00"}, {**GOOD, "to": 5}],  # unstorable text only once all is valid
    [{**GOOD, "id": "\x00"}, {"id": "m"}],
    [{**GOOD, "to": 5}, {**GOOD, "reference": 5}],
]


def schema_outcome(document: Any) -> str | None:
    """The field the schema path names (None: accepted)."""
    try:
        schemas.validate(document, schemas.DELIVERY_REPORTS)
        reports = document if isinstance(document, list) else [document]
        for report in reports:  # what the old resource did after validation
            if report.get("timestamp"):
                schemas.parse_datetime(report["timestamp"])
    except InvalidInput as error:
        return error.field
    return None


def fast_outcome(document: Any) -> str | None:
    try:
        parse_reports(json.dumps(document).encode())
    except InvalidInput as error:
        return error.field
    return None


@pytest.mark.parametrize("document", BODIES, ids=[repr(b)[:60] for b in BODIES])
def test_the_hand_written_validation_names_what_the_schema_names(document):
    assert fast_outcome(document) == schema_outcome(document)


def test_the_accepted_reports_carry_the_stored_fields_only():
    # Given a report with a provider's extra field, a float status code and an offset
    (report,) = parse_reports(
        json.dumps(
            {**GOOD, "statusCode": 3.0, "timestamp": "2025-01-01T03:00:00+03:00", "x": 1}
        ).encode()
    )
    # Then the six stored fields come back, the code an int, the time in UTC
    assert set(report) == {"id", "to", "reference", "deliveryStatus", "statusCode", "timestamp"}
    assert report["statusCode"] == 3 and isinstance(report["statusCode"], int)
    assert report["timestamp"].isoformat() == "2025-01-01T00:00:00+00:00"


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
