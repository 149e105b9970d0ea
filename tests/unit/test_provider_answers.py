"""Classifying provider answers (SPEC 4.4, 7): every (status, headers, body) is an outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.provider import (
    RETRY_AFTER_CAP_S,
    Outcome,
    SendResult,
    classify_bulk_answer,
    classify_sms_answer,
    message_id,
    response_code,
    retry_after_seconds,
)

TO = ["+306900000001", "+306900000002", "+306900000003"]
NOW = datetime(2025, 1, 6, 12, 0, 0, tzinfo=UTC)


def message(to: Any, id: Any = None, code: Any = 0, **fields: Any) -> dict[str, Any]:
    return {
        "id": id if id is not None else f"id-{to}",
        "to": to,
        "responseCode": code,
        "responseText": "Accepted" if code == 0 else "Invalid destination",
        **fields,
    }


def bulk(messages: Any, **fields: Any) -> bytes:
    return json.dumps(
        {"responseCode": 0, "responseText": "OK", "messages": messages, **fields}
    ).encode()


def outcomes(results: list[SendResult]) -> list[Outcome]:
    return [result.outcome for result in results]


# ---- /sms -------------------------------------------------------------------------------


def test_an_sms_answered_with_code_0_and_an_id_is_accepted() -> None:
    # Given the provider's answer to one message
    body = json.dumps(message(TO[0], id="m-1")).encode()

    # When it is classified
    result = classify_sms_answer(200, {}, body)

    # Then the message is accepted with the provider's id
    assert result == SendResult(Outcome.ACCEPTED, provider_id="m-1")


def test_an_sms_answered_with_another_code_is_rejected_with_the_reason() -> None:
    result = classify_sms_answer(200, {}, json.dumps(message(TO[0], code=6)).encode())
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "6: Invalid destination"


@pytest.mark.parametrize(
    "words",
    [
        "Invalid destination +306912345678",
        "destination 306912345678 is not reachable",
        "bad number: +30 691 234 5678",
        "bad number 0030-691-234-5678.",
        "bad number +30 (691) 234-5678",
        "bad number 30/6912345678",
        "bad number +30  691  234  5678",
        "x" * 190 + " +306912345678",  # across the cut at 200 characters
    ],
)
def test_a_refusal_s_reason_keeps_no_phone_number(words: str) -> None:
    # Given a provider that echoes the destination in its refusal, in its body or its text
    answered = classify_sms_answer(400, {}, json.dumps({"error": words}).encode())
    refused = classify_sms_answer(
        200, {}, json.dumps({**message(TO[0], code=6), "responseText": words}).encode()
    )
    # Then the reasons (an audit event's, which is never erased) hold no digits of it
    for result in (answered, refused):
        assert result.outcome is Outcome.REJECTED
        assert "[number]" in result.reason or len(words) > 150  # (cut after it)
        assert "691" not in result.reason and "5678" not in result.reason, result.reason


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'[{"id": "m-1", "responseCode": 0}]',
        b'"Accepted"',
        b"0",
        b"null",
        b"true",
        b"[" * 100_000,
        b'{"responseText": "OK"}',  # no responseCode
        b'{"id": "m-1", "responseCode": "zero"}',  # responseCode not an integer
        b'{"id": "m-1", "responseCode": true}',  # a boolean is no code
        b'{"id": "m-1", "responseCode": 0.0}',
        b'{"responseCode": 0}',  # no id
        b'{"id": 1.5, "responseCode": 0}',  # id neither a string nor an integer
        b'{"id": true, "responseCode": 0}',
        b'{"id": "  ", "responseCode": 0}',
    ],
    ids=repr,
)
def test_a_2xx_sms_answer_that_cannot_be_read_is_unknown(body: bytes) -> None:
    # Given a 2xx answer of an unexpected shape: the provider may have accepted the message
    # When it is classified
    result = classify_sms_answer(200, {}, body)

    # Then the outcome is unknown (never resent blindly), never an exception
    assert result.outcome is Outcome.UNKNOWN


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, Outcome.NOT_SENT),
        (503, Outcome.NOT_SENT),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (500, Outcome.UNKNOWN),
        (502, Outcome.UNKNOWN),
        (504, Outcome.UNKNOWN),
        (302, Outcome.UNKNOWN),
    ],
)
def test_a_non_2xx_answer_is_classified_by_its_status(status: int, expected: Outcome) -> None:
    # Given an error status whose body is anything at all
    # When it is classified, for /sms and for /smsbulk
    one = classify_sms_answer(status, {}, b"\xff<html>")
    many = classify_bulk_answer(status, {}, b"\xff<html>", TO)

    # Then the status decides, for every recipient
    assert one.outcome is expected and one.reason.startswith(f"HTTP {status}")
    assert outcomes(many) == [expected] * 3


def test_a_429_carries_its_retry_after() -> None:
    result = classify_sms_answer(429, {"retry-after": "7"}, b"")
    assert (result.outcome, result.retry_after_s) == (Outcome.NOT_SENT, 7.0)
    dated = classify_bulk_answer(
        503, {"Retry-After": "Mon, 06 Jan 2025 12:00:30 GMT"}, b"", TO, now=NOW
    )
    assert [r.retry_after_s for r in dated] == [30.0] * 3


# ---- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("Mon, 06 Jan 2025 12:01:00 GMT", 60.0),
        ("Monday, 06-Jan-25 12:00:10 GMT", 10.0),  # RFC 850, obsolete but legal
        ("Mon, 06 Jan 2025 11:00:00 GMT", 0.0),  # already past: retry now
        ("86400", RETRY_AFTER_CAP_S),
        ("99999999999999", RETRY_AFTER_CAP_S),
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_CAP_S),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("1e3", None),
        ("1_000", None),
        ("0x10", None),
        ("Mon, 99 Foo 2025 25:61:00 GMT", None),
    ],
)
def test_retry_after_is_seconds_or_a_date_capped_else_ignored(
    value: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


@given(st.text())
def test_any_retry_after_text_is_a_bounded_wait_or_none(value: str) -> None:
    seconds = retry_after_seconds(value, now=NOW)
    assert seconds is None or 0.0 <= seconds <= RETRY_AFTER_CAP_S


# ---- /smsbulk -------------------------------------------------------------------------------


def test_bulk_messages_are_matched_by_to_whatever_their_order() -> None:
    # Given an answer naming the recipients in another order, one of them rejected
    body = bulk([message(TO[2], id="m-3"), message(TO[0], id="m-1"), message(TO[1], code=6)])

    # When it is classified for the request's numbers
    results = classify_bulk_answer(200, {}, body, TO)

    # Then each recipient gets its own message's outcome and id
    assert [(r.outcome, r.provider_id) for r in results] == [
        (Outcome.ACCEPTED, "m-1"),
        (Outcome.REJECTED, None),
        (Outcome.ACCEPTED, "m-3"),
    ]


def test_bulk_messages_that_name_no_number_are_matched_in_the_order_of_to() -> None:
    # Given Mitto's published shape of a bulk answer: each message only an id and a time (and
    # its code), one per requested number, in the order of `to` (SPEC 7)
    body = bulk(
        [
            {"id": "m-1", "timestamp": "2025-01-06T12:00:00Z"},
            {"id": "m-2", "timestamp": "2025-01-06T12:00:00Z", "responseCode": 6},
            {"id": "m-3", "timestamp": "2025-01-06T12:00:00Z"},
        ]
    )
    # When it is classified, then each recipient has the message at its place (before: all
    # three unknown, failed unknown_outcome unless a report came)
    assert [(r.outcome, r.provider_id) for r in classify_bulk_answer(200, {}, body, TO)] == [
        (Outcome.ACCEPTED, "m-1"),
        (Outcome.REJECTED, None),
        (Outcome.ACCEPTED, "m-3"),
    ]


@pytest.mark.parametrize(
    "messages",
    [
        [{"id": "m-1"}, {"id": "m-2"}],  # fewer entries than numbers: no place is sure
        [{"id": "m-1"}, {"id": "m-1"}, {"id": "m-3"}],  # one id for two recipients
    ],
)
def test_bulk_messages_without_numbers_are_matched_by_place_only_when_unambiguous(
    messages,
) -> None:
    results = classify_bulk_answer(200, {}, bulk(messages), TO)
    if len(messages) < len(TO):
        assert outcomes(results) == [Outcome.UNKNOWN] * 3
    else:
        assert outcomes(results) == [Outcome.UNKNOWN, Outcome.UNKNOWN, Outcome.ACCEPTED]


def test_a_single_bulk_message_written_as_an_object_is_read() -> None:
    body = bulk({"id": "m-1", "timestamp": "2025-01-06T12:00:00Z"})
    [result] = classify_bulk_answer(200, {}, body, TO[:1])
    assert (result.outcome, result.provider_id) == (Outcome.ACCEPTED, "m-1")


def test_bulk_numbers_match_with_or_without_plus() -> None:
    body = bulk(
        [
            message("306900000001", id="m-1"),
            message(306900000002, id="m-2"),
            message(" +306900000003 ", id="m-3"),
        ]
    )
    results = classify_bulk_answer(200, {}, body, ["306900000001", *TO[1:]])
    assert [r.provider_id for r in results] == ["m-1", "m-2", "m-3"]


def test_a_recipient_missing_from_the_bulk_answer_is_unknown() -> None:
    # Given an answer with fewer messages than recipients
    body = bulk([message(TO[1], id="m-2")])

    # When it is classified
    results = classify_bulk_answer(200, {}, body, TO)

    # Then the one it names is accepted and the others are unknown, not matched by position
    assert outcomes(results) == [Outcome.UNKNOWN, Outcome.ACCEPTED, Outcome.UNKNOWN]
    assert results[1].provider_id == "m-2"
    assert results[0].reason == "not in the bulk answer"


def test_a_recipient_named_twice_is_unknown_and_strangers_are_ignored() -> None:
    # Given an answer with more messages than recipients: a duplicate and a number never asked
    body = bulk(
        [
            message(TO[0], id="m-1"),
            message(TO[1], id="m-2"),
            message(TO[1], id="m-2b"),
            message(TO[2], id="m-3"),
            message("+306999999999", id="m-x"),
        ]
    )

    # When it is classified
    results = classify_bulk_answer(200, {}, body, TO)

    # Then the ambiguous recipient is unknown and the others keep their own ids
    assert [(r.outcome, r.provider_id) for r in results] == [
        (Outcome.ACCEPTED, "m-1"),
        (Outcome.UNKNOWN, None),
        (Outcome.ACCEPTED, "m-3"),
    ]
    assert results[1].reason == "ambiguous in the bulk answer"


def test_a_number_requested_twice_is_unknown_for_both_recipients() -> None:
    body = bulk([message(TO[0], id="m-1"), message(TO[0], id="m-2")])
    assert outcomes(classify_bulk_answer(200, {}, body, [TO[0], TO[0]])) == [Outcome.UNKNOWN] * 2


def test_unreadable_entries_leave_only_their_recipients_unknown() -> None:
    # Given entries that are not objects, lack `to` or `id`, or carry an unreadable code
    body = bulk(
        [
            "m-1",
            None,
            [TO[0]],
            {"id": "m-9"},
            message(TO[0], id="m-1", code="0x"),
            {"to": TO[1], "responseCode": 0},
            message(TO[2], id="m-3"),
        ]
    )

    # When it is classified
    results = classify_bulk_answer(200, {}, body, TO)

    # Then only the well-formed entry is accepted; the rest are unknown
    assert outcomes(results) == [Outcome.UNKNOWN, Outcome.UNKNOWN, Outcome.ACCEPTED]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"\x00\xff",
        b"[]",
        b"[1, 2, 3]",
        b'"OK"',
        b"42",
        b"null",
        b"[" * 100_000,
        json.dumps([message(n) for n in TO]).encode(),  # the messages, as a bare array
        b'{"responseCode": 0, "responseText": "OK"}',  # no messages
        b'{"responseCode": 0, "messages": []}',
        b'{"responseCode": 0, "messages": {"id": "m-1"}}',  # messages not a list
        b'{"responseCode": 0, "messages": "m-1,m-2,m-3"}',
        b'{"responseCode": "0", "messages": null}',
        b'{"messages": null}',
    ],
    ids=repr,
)
def test_a_2xx_bulk_answer_that_cannot_be_read_is_unknown_for_all(body: bytes) -> None:
    # Given a 2xx bulk answer of an unexpected shape
    # When it is classified
    results = classify_bulk_answer(200, {}, body, TO)

    # Then every recipient is unknown: the provider may have sent them all
    assert outcomes(results) == [Outcome.UNKNOWN] * 3


def test_a_bulk_call_refused_whole_is_rejected_for_all() -> None:
    body = b'{"responseCode": 4, "responseText": "Invalid sender"}'
    results = classify_bulk_answer(200, {}, body, TO)
    assert outcomes(results) == [Outcome.REJECTED] * 3
    assert results[0].reason == "4: Invalid sender"


# ---- any answer at all --------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(TO + ["306900000001", "+3069", "id-1"]),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["id", "to", "responseCode", "responseText", "messages"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)
ENTRY = st.fixed_dictionaries(
    {"to": st.sampled_from(TO + ["306900000002", "+1", 306900000003])},
    optional={"id": JSON, "responseCode": st.sampled_from([0, 6]) | JSON},
)
ANSWERS = (
    st.binary()
    | JSON.map(lambda value: json.dumps(value).encode())
    | st.lists(ENTRY | JSON, max_size=6).map(bulk)
)


@given(st.integers(200, 299), ANSWERS)
def test_any_2xx_body_classifies_without_an_exception(status: int, body: bytes) -> None:
    one = classify_sms_answer(status, {}, body)
    many = classify_bulk_answer(status, {}, body, TO)
    assert isinstance(one, SendResult) and len(many) == len(TO)
    assert all(r.outcome is not Outcome.NOT_SENT for r in [one, *many])  # a 2xx may have sent


@given(st.lists(ENTRY | JSON, max_size=6))
def test_a_bulk_recipient_is_accepted_only_with_its_own_single_message(entries: list[Any]) -> None:
    # Given any list of entries as the answer's messages
    # When it is classified
    results = classify_bulk_answer(200, {}, bulk(entries), TO)

    # Then an accepted recipient is named, once, by an entry with code 0 (its own, else the
    # answer's, which `bulk` makes 0) and exactly that id (an integer one as its text); or,
    # when no entry names any number and there is one per number, it is the entry at its
    # place, with an id no other entry has
    by_place = len(entries) == len(TO) and not any(
        isinstance(e, dict) and e.get("to") not in (None, "") for e in entries
    )
    for place, (number, result) in enumerate(zip(TO, results)):
        if result.outcome is Outcome.ACCEPTED:
            if by_place:
                named = [entries[place]]
                ids = [message_id(e.get("id")) for e in entries if isinstance(e, dict)]
                assert ids.count(result.provider_id) == 1
            else:
                named = [
                    e
                    for e in entries
                    if isinstance(e, dict)
                    and str(e.get("to")).strip().lstrip("+") == number.lstrip("+")
                ]
            assert len(named) == 1
            assert response_code(named[0].get("responseCode", 0)) == 0
            assert message_id(named[0]["id"]) == result.provider_id


@pytest.mark.parametrize(
    "body, provider_id",
    [
        (b'{"id": "m-1", "responseCode": "0"}', "m-1"),  # the code's digits in a string
        (b'{"id": "m-1", "responseCode": " 0 "}', "m-1"),
        (b'{"id": 1001, "responseCode": 0}', "1001"),  # an integer id, as delivery reports name it
        (b'{"id": "m-1", "responseCode": 0.0}', None),  # not an integer: unknown
    ],
    ids=repr,
)
def test_an_sms_answer_in_another_providers_spelling_is_read(
    body: bytes, provider_id: str | None
) -> None:
    # When an answer writes its code or id as other providers do
    result = classify_sms_answer(200, {}, body)
    # Then it is accepted with the id as text (a delivery report naming it matches)
    if provider_id is None:
        assert result.outcome is Outcome.UNKNOWN
    else:
        assert (result.outcome, result.provider_id) == (Outcome.ACCEPTED, provider_id)


def test_bulk_entries_without_a_code_of_their_own_take_the_answers() -> None:
    # Given SPEC 7's bulk answer: the code on the answer, the entries only `{id, to, ...}`
    entries = [
        {"id": f"m-{i}", "to": to, "timestamp": "2026-12-03T14:17:51Z"} for i, to in enumerate(TO)
    ]
    accepted = classify_bulk_answer(200, {}, bulk(entries), TO)
    refused = classify_bulk_answer(200, {}, bulk(entries, responseCode=8), TO)
    # Then each is accepted under an answer's 0; under its refusal an entry naming a message
    # may have been sent (unknown: its report can settle it)
    assert [(r.outcome, r.provider_id) for r in accepted] == [
        (Outcome.ACCEPTED, f"m-{i}") for i in range(len(TO))
    ]
    assert outcomes(refused) == [Outcome.UNKNOWN] * len(TO)
    # And an entry's own code still decides for it
    mixed = classify_bulk_answer(
        200, {}, bulk([entries[0], {**entries[1], "responseCode": 3}, entries[2]]), TO
    )
    assert outcomes(mixed) == [Outcome.ACCEPTED, Outcome.REJECTED, Outcome.ACCEPTED]


def test_an_id_under_the_answers_refusal_is_unknown_and_one_id_twice_is_ambiguous() -> None:
    # Given a refused bulk answer naming a message by id for one number, none for the other
    refused = bulk([{"id": "a1", "to": TO[0]}, {"to": TO[1]}, {"to": TO[2]}], responseCode=1)
    # Then the named one may have been sent (unknown, its report can still settle it), the
    # others are refused
    assert outcomes(classify_bulk_answer(200, {}, refused, TO)) == [
        Outcome.UNKNOWN,
        Outcome.REJECTED,
        Outcome.REJECTED,
    ]
    # Given an answer naming one id for two numbers (17 and "17" are one id)
    twice = bulk([{"id": 17, "to": TO[0]}, {"id": "17", "to": TO[1]}, {"id": 18, "to": TO[2]}])
    # Then neither takes it; the third is accepted
    assert [(r.outcome, r.provider_id) for r in classify_bulk_answer(200, {}, twice, TO)] == [
        (Outcome.UNKNOWN, None),
        (Outcome.UNKNOWN, None),
        (Outcome.ACCEPTED, "18"),
    ]


@pytest.mark.parametrize(
    "value, text",
    [
        (17, "17"),
        (17.0, "17"),
        ("17", "17"),
        (-5, None),
        (10**100, None),
        (1.5, None),
        (True, None),
    ],
)
def test_one_reader_names_a_message_for_sends_and_reports(value, text) -> None:
    from api.report_ingest import parse_reports
    from service.provider import message_id

    assert message_id(value) == text
    parsed = parse_reports(
        json.dumps(
            [{"id": value, "deliveryStatus": "Sent"}, {"id": "x", "deliveryStatus": "Sent"}]
        ).encode()
    )
    assert ([r["id"] for r in parsed.reports][:-1] or [None]) == [text]
