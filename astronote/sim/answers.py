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
