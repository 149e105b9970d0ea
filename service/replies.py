"""Answers to STOP, START and HELP (SPEC 11): their texts, and sending each one once.

An answer is sent through the provider from the number the customer wrote to, by the worker
(`sendInboundReply`, on the priority queue), queued right after the inbound message is
committed: the webhook never waits for the provider, whose 2-4 s answers would otherwise hold
a web thread per STOP and, in a wave of replies after a large send, every thread the delivery
reports and the merchants' requests need. It is not a marketing message: it belongs to no
campaign, takes nothing from a reservation and debits no credit (carriers require it, so it
must go out even from a shop with no credits left); its segments are recorded with it.
Inserting its `inbound_reply` row is the claim to send it, so a provider retry of the inbound
message, or a concurrent duplicate, sends nothing more. The row waits in `retrying` for the
worker's try, which takes it to `sending` (one try at a time). A call that surely did not
reach the provider (a 429, a 503) is tried again after the provider's Retry-After or a
growing delay, up to RETRY_ATTEMPTS times; an unknown outcome is never resent. Should the
broker be unreachable when the answer is first queued, the web sends it itself (one answer
rather than none). A try lost on the way (Redis flushed, a worker down for hours) is queued
again by the reconcile (`requeue_abandoned`): the webhook answered 200, so no provider retry
of the inbound message will ever come.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from peewee import SQL, fn

from models import InboundMessage, InboundReply
from service.infra import dispatch
from service.infra.ratelimit import SendLimiter
from service.provider import Outcome, Provider, SendResult, Sms
from service.segments import segment_count
from service.windows import dispatch_refused

log = logging.getLogger("astronote.replies")

# Names listed in an answer to a reply for several shops, before they are only counted.
MAX_NAMES_LENGTH = 80
STATES = {Outcome.ACCEPTED: "sent", Outcome.REJECTED: "failed", Outcome.UNKNOWN: "unknown"}
# Tries after the first, each after the provider's Retry-After or RETRY_DELAY_MS doubled per
# try (at most RETRY_MAX_DELAY_MS): about half an hour in all.
RETRY_ATTEMPTS = 10
RETRY_DELAY_MS = 2000
RETRY_MAX_DELAY_MS = 300_000
# A `retrying` row untouched this long lost its message (Redis flushed, the actor's own
# retries spent in an outage, a worker down for hours): the reconcile queues it again
# (`requeue_abandoned`); a `sending` row this old lost its try mid-call (a killed worker) and
# may have been sent: it is `unknown`, never sent again.
ABANDONED_AFTER_S = 2 * 3600
# A first try not taken this long after its row was written was most likely never published.
NEVER_TAKEN_AFTER_S = 10


# The longest HELP answer made of several shops' help texts (about six GSM-7 segments).
MAX_HELP_LENGTH = 960


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
    # Each help text is at most 480 characters; many shops' together would be a long,
    # costly answer: as many as fit in MAX_HELP_LENGTH, at least one.
    texts: list[str] = []
    for _, help_text in shops:
        if texts and len("\n".join([*texts, help_text])) > MAX_HELP_LENGTH:
            break
        texts.append(help_text)
    return "\n".join(texts)


def send_once(
    message_key: str,
    sender: str,
    to: str,
    text: str,
    provider: Provider,
    limiter: SendLimiter | None = None,
) -> str | None:
    """Queue the answer to one inbound message for the worker unless it was queued (or sent)
    already: `queued`, None for a duplicate. With the broker out of reach, send it now and
    return its outcome (`sent`, `failed`, `unknown`, `retrying`, `not_sent`)."""
    claimed = (
        InboundReply.insert(
            message_key=message_key,
            sender=sender,
            text=text,
            segments=segment_count(text),
            state="retrying",  # waiting for a try: the worker's first
        )
        .on_conflict_ignore()
        .as_rowcount()
        .execute()
    )
    if not claimed:
        if not _never_taken(message_key):
            return None
        # A web process that died between this row's commit and its publish left it waiting
        # for the reconcile's ABANDONED_AFTER_S (2 h): the provider's repost of the inbound
        # message, which that death caused, publishes it now (`_take` sends it once).
        log.info("answer never taken: queued again for a repost of its inbound message")
    try:
        dispatch.publish_reply(message_key, sender, to, text, 0, delay_ms=None)
        return "queued"
    except dispatch.PUBLISH_ERRORS:
        log.warning("answer to an inbound message not queued; sent by the web", exc_info=True)
    if not _take(message_key):
        # The publish failed after the broker had the message (a lost reply), and the
        # worker took it already: one answer.
        return "queued"
    return _call(message_key, sender, to, text, provider, 0, limiter, in_worker=False)


def _never_taken(message_key: str) -> bool:
    """Whether the answer's row waits for its first try longer than a worker takes to start
    one (NEVER_TAKEN_AFTER_S): its message was most likely never published. A concurrent
    copy of the inbound message finds it younger and publishes nothing."""
    since = fn.now() - SQL(f"interval '{NEVER_TAKEN_AFTER_S} seconds'")
    return (
        InboundReply.select()
        .where(
            (InboundReply.message_key == message_key)
            & (InboundReply.state == "retrying")
            & (InboundReply.created_at < since)
        )
        .exists()
    )


def requeue_abandoned() -> int:
    """The reconcile's step for answers whose try was lost: each `retrying` row untouched for
    ABANDONED_AFTER_S is queued again for one last try (the number read back from its
    inbound message; one erased since is given up), and each `sending` row as old becomes
    `unknown` (its call may have gone out). The webhook answered 200: no provider retry of
    the inbound message will come, so nothing else would ever send it. Returns how many."""
    stale = fn.now() - SQL(f"interval '{ABANDONED_AFTER_S} seconds'")
    lost_mid_call = (
        InboundReply.update(state="unknown", finished_at=fn.now())
        .where((InboundReply.state == "sending") & (InboundReply.created_at < stale))
        .execute()
    )
    waiting = list(
        InboundReply.select(InboundReply.message_key, InboundReply.sender, InboundReply.text)
        .where((InboundReply.state == "retrying") & (InboundReply.created_at < stale))
        .limit(1000)
        .tuples()
    )
    numbers = dict(
        InboundMessage.select(InboundMessage.message_key, InboundMessage.phone)
        .where(
            InboundMessage.message_key.in_([key for key, _, _ in waiting])
            & InboundMessage.phone.is_null(False)
        )
        .tuples()
    )
    requeued = 0
    for message_key, sender, text in waiting:
        to = numbers.get(message_key)
        if to is None:  # erased meanwhile: no number to answer
            InboundReply.delete().where(InboundReply.message_key == message_key).execute()
            continue
        # Its clock starts again: queued once more per ABANDONED_AFTER_S at most.
        InboundReply.update(created_at=fn.now()).where(
            InboundReply.message_key == message_key
        ).execute()
        dispatch.publish_reply(message_key, sender, to, text, RETRY_ATTEMPTS, delay_ms=None)
        requeued += 1
    if requeued or lost_mid_call:
        log.warning(
            "answers to inbound messages abandoned: queued again, or unknown if lost mid-call",
            extra={"requeued": requeued, "unknown": lost_mid_call},
        )
    return requeued + lost_mid_call


def resend(
    message_key: str,
    sender: str,
    to: str,
    text: str,
    attempt: int,
    provider: Provider,
    limiter: SendLimiter | None = None,
) -> str | None:
    """The worker's try of an answer waiting in `retrying` (its first, or the next after one
    the provider did not take); None if another try took it (or it was finished meanwhile)."""
    if not _take(message_key):
        return None
    return _call(message_key, sender, to, text, provider, attempt, limiter, in_worker=True)


def _take(message_key: str) -> int:
    """Take the answer's row from `retrying` to `sending`: this try, and no other, calls."""
    return (
        InboundReply.update(state="sending")
        .where((InboundReply.message_key == message_key) & (InboundReply.state == "retrying"))
        .execute()
    )


def _call(
    message_key: str,
    sender: str,
    to: str,
    text: str,
    provider: Provider,
    attempt: int,
    limiter: SendLimiter | None,
    in_worker: bool,
) -> str:
    # An answer counts against the account's (and sender's) rate limit and honours its
    # cool-down like every other message: a wave of STOPs after a large send went out on
    # top of the campaign's full rate. Refused, it waits in the worker's queue for the
    # budget, which costs none of its tries.
    refused = dispatch_refused(limiter, sender, 1) if limiter else None
    # Without Redis there is no shared count, and no queue to wait in either; nor is there
    # for the web when the broker is out of reach: one answer goes out rather than none.
    if refused is not None and refused.limited_by != "redis_down" and in_worker:
        return _not_sent(message_key, sender, to, text, attempt, refused, in_worker)
    result = provider.send_one(sender, Sms(to, text, f"reply:{message_key}"[:200]), None)
    if result.outcome is Outcome.NOT_SENT:
        if limiter and result.throttled:  # a 429 slows the account for every sender
            limiter.cool_down(result.retry_after_s)
        return _not_sent(message_key, sender, to, text, attempt, result, in_worker)
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


def _not_sent(
    message_key: str,
    sender: str,
    to: str,
    text: str,
    attempt: int,
    result: SendResult,
    in_worker: bool,
) -> str:
    limited = result.limited_ms is not None  # our own limit: not a try, and not logged as one
    if attempt >= RETRY_ATTEMPTS and not limited:
        (
            InboundReply.update(state="failed", finished_at=fn.now())
            .where(InboundReply.message_key == message_key)
            .execute()
        )
        log.warning(
            "answer to an inbound message not sent after every try: failed",
            extra={"reason": result.reason, "attempts": attempt + 1},
        )
        return "failed"
    if result.limited_ms is not None:
        delay_ms, next_attempt = max(1, result.limited_ms), attempt
    else:
        delay_ms = (
            int(result.retry_after_s * 1000)
            if result.retry_after_s is not None
            else min(RETRY_DELAY_MS * 2**attempt, RETRY_MAX_DELAY_MS)
        )
        next_attempt = attempt + 1
    # `retrying` before the message exists: its try finds the row ready to take.
    (InboundReply.update(state="retrying").where(InboundReply.message_key == message_key).execute())
    try:
        dispatch.publish_reply(message_key, sender, to, text, next_attempt, delay_ms=delay_ms)
    except Exception:  # noqa: BLE001 - Redis' or RabbitMQ's error: the row stays `retrying`
        if in_worker:
            raise  # Dramatiq's retry of this message takes it again
        # The web, the broker down: the reconcile queues it again (`requeue_abandoned`).
        log.warning(
            "answer to an inbound message not sent, and no retry could be queued; the"
            " reconcile will queue it",
            extra={"reason": result.reason},
        )
        return "retrying"
    if not limited:
        log.warning(
            "answer to an inbound message not sent; the worker tries again",
            extra={"reason": result.reason, "attempt": next_attempt, "delay_ms": delay_ms},
        )
    return "retrying"
