"""Answers to STOP, START and HELP (SPEC 11): their texts, and sending each one once.

An answer is sent through the provider from the number the customer wrote to, right after the
inbound message is committed. It is not a marketing message: it belongs to no campaign, takes
nothing from a reservation and debits no credit (carriers require it, so it must go out even
from a shop with no credits left); its segments are recorded with it. Inserting its
`inbound_reply` row is the claim to send it, so a provider retry of the inbound message, or a
concurrent duplicate, sends nothing more. A call that surely did not reach the provider gives
the claim back, so the provider's retry of the inbound message may send it; an unknown outcome
is never resent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from peewee import fn

from models import InboundReply
from service.provider import Outcome, Provider, Sms
from service.segments import segment_count

log = logging.getLogger("astronote.replies")

# Names listed in an answer to a reply for several shops, before they are only counted.
MAX_NAMES_LENGTH = 80
STATES = {Outcome.ACCEPTED: "sent", Outcome.REJECTED: "failed", Outcome.UNKNOWN: "unknown"}


def _names(names: Sequence[str]) -> str:
    joined = ", ".join(names)
    return joined if len(joined) <= MAX_NAMES_LENGTH else f"{len(names)} shops"


def answer(keyword: str, shops: Sequence[tuple[str, str]]) -> str:
    """The answer to `keyword` from `shops` [(name, help text)]."""
    names = _names([name for name, _ in shops])
    if keyword == "stop":
        return (
            f"{names}: you are unsubscribed and will receive no more messages."
            " Reply START to subscribe again."
        )
    if keyword == "start":
        return f"{names}: you are subscribed again. Reply HELP for help, STOP to unsubscribe."
    return "\n".join(help_text for _, help_text in shops)


def send_once(message_key: str, sender: str, to: str, text: str, provider: Provider) -> str | None:
    """Send the answer to one inbound message unless it was sent (or is being sent) already.
    Returns the outcome (`sent`, `failed`, `unknown`, `not_sent`), None for a duplicate."""
    claimed = (
        InboundReply.insert(
            message_key=message_key, sender=sender, text=text, segments=segment_count(text)
        )
        .on_conflict_ignore()
        .as_rowcount()
        .execute()
    )
    if not claimed:
        return None
    result = provider.send_one(sender, Sms(to, text, f"reply:{message_key}"[:200]), None)
    if result.outcome is Outcome.NOT_SENT:
        (InboundReply.delete().where(InboundReply.message_key == message_key).execute())
        log.warning(
            "answer to an inbound message not sent; a retry of it may send it",
            extra={"reason": result.reason},
        )
        return "not_sent"
    state = STATES[result.outcome]
    (
        InboundReply.update(state=state, provider_id=result.provider_id, finished_at=fn.now())
        .where(InboundReply.message_key == message_key)
        .execute()
    )
    if state != "sent":
        log.warning(
            "answer to an inbound message was not accepted",
            extra={"state": state, "reason": result.reason},
        )
    return state
