"""How the simulator answers an accepted call: in Mitto's shape, or deliberately malformed.

The malformed answers are forced outcomes (config `next`), so that a client's handling of them
can be tested over real HTTP. The messages are accepted and recorded either way, as they would
be by a provider whose answer got mangled on its way back.
"""

from __future__ import annotations

from typing import Any

MALFORMED_ANSWERS = (
    "answer_array",
    "answer_string",
    "answer_number",
    "answer_no_messages",
    "answer_no_ids",
)


def terse_id(message_id: str) -> int | str:
    """A message id as a provider writing integers would: the simulator's hex id read as one
    number (its records keep the hex; the client stores the number's decimal text)."""
    return int(message_id, 16)


def terse(answers: list[dict[str, Any]], bulk: bool) -> list[dict[str, Any]]:
    """Per-number answers as another provider spells them (config `terse`): integer ids; in a
    bulk answer only `{id, to, timestamp}` (SPEC 7: the code is the answer's, so a rejected
    number is left out of `messages`), in `/sms`'s the code as a string."""
    spelled = []
    for answer in answers:
        if answer["id"] is None:
            if not bulk:
                spelled.append({**answer, "responseCode": str(answer["responseCode"])})
            continue
        message_id = terse_id(answer["id"])
        if bulk:
            spelled.append({"id": message_id, "to": answer["to"], "timestamp": answer["timestamp"]})
        else:
            spelled.append({**answer, "id": message_id, "responseCode": "0"})
    return spelled


def answer_body(outcome: str, answers: list[dict[str, Any]], bulk: bool) -> Any:
    """The JSON answer to a call whose per-number `answers` are decided (outcome `ok`,
    `shuffled` or one of MALFORMED_ANSWERS)."""
    if outcome == "answer_array":
        return answers
    if outcome == "answer_string":
        return "Accepted"
    if outcome == "answer_number":
        return 0
    if outcome == "answer_no_messages":
        return {"responseCode": 0, "responseText": "OK"}
    if outcome == "answer_no_ids":
        answers = [{k: v for k, v in answer.items() if k != "id"} for answer in answers]
    if bulk:
        return {"responseCode": 0, "responseText": "OK", "messages": answers}
    return answers[0]
