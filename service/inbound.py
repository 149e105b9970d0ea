"""Inbound messages (SPEC 11): STOP, START and HELP replies, and every other reply kept.

A reply is for the shop whose sender it was written to. When that sender is the shared
MITTO_SENDER (or several shops use the same one), it is for each of those shops that messaged
the number within INBOUND_MATCH_DAYS: a reply cannot say which of them it answers, and opting
the number out of all of them is the safe reading of a STOP. A STOP that none of them
messaged lately is for each of them that has the number as a contact.

- STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, REVOKE: the number is suppressed
  (source `reply`) and its contact opted out, logged in its consent;
- START, UNSTOP, YES: the suppressions its owner may lift are lifted, the contact is
  subscribed again with consent from the reply;
- HELP, INFO: nothing changes;
and each of them gets one answer (`service/replies.py`). A keyword is the whole message, case,
spacing and punctuation aside ("Stop!" is one, "please stop" is not). Every message is stored
for its shops once: a provider retry of the same message (same id) changes and sends nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from peewee import SQL, fn

from models import Campaign, CampaignRecipient, Contact, InboundMessage, Shop, TestSend
from models.database import db, execute
from service import consent, erasure_lock, replies, reservations, shops, suppressions
from service.audit import Actor
from service.infra.config import Settings
from service.infra.ratelimit import SendLimiter
from service.provider import Provider

KEYWORDS = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"), "stop"
    ),
    **dict.fromkeys(("START", "UNSTOP", "YES"), "start"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
# Inside a keyword: spacing, underscores, dots ("S.T.O.P") and every dash a phone's
# autocorrect may put in "opt-out" (hyphen, non-breaking hyphen, en and em dash, minus), and
# the invisible characters (soft hyphen, zero-width spaces and joiners, word joiner, BOM).
_INNER_SPACING = re.compile(r"[\s_.\-\u00b7\u2010-\u2015\u2212\u00ad\u200b-\u200f\u2060\ufeff]+")
_NOT_ALPHANUMERIC = re.compile(r"[^0-9a-z]")


@dataclass(frozen=True)
class Inbound:
    """An inbound message as the provider reported it; `phone` is E.164 already."""

    phone: str
    sender: str
    text: str
    provider_id: str | None = None
    received_at: datetime | None = None


@dataclass(frozen=True)
class Received:
    """What receiving a message did: its keyword, the shops it was for, whether it was seen
    before (a retry), and the state of the answer sent now (None: none was sent now)."""

    keyword: str | None
    shop_ids: tuple[int, ...]
    duplicate: bool
    reply: str | None


def keyword_of(text: str) -> str | None:
    """`stop`, `start` or `help` when the whole message is one of their words (case, width,
    spacing and punctuation around or inside it aside: "Stop!", "opt-out"), else None."""
    core = _INNER_SPACING.sub("", _EDGES.sub("", unicodedata.normalize("NFKC", text)))
    return KEYWORDS.get(core.upper())


def sender_key(sender: str) -> str:
    """A sender id as replies name it: "+30 699 000 0000" and "306990000000" are one."""
    return _NOT_ALPHANUMERIC.sub("", sender.lower())


def message_key(secret: str, message: Inbound) -> str:
    """The provider's id, else a keyed digest of the message (a retry of it is the same)."""
    if message.provider_id:
        return f"id:{message.provider_id}"
    when = message.received_at.isoformat() if message.received_at else ""
    material = "\x1f".join((message.phone, sender_key(message.sender), message.text, when))
    return "digest:" + hmac.new(secret.encode(), material.encode(), hashlib.sha256).hexdigest()


# A message with neither the provider's id nor a timestamp is a retry of the number's last
# message to the same sender only if that one has the same text and came at most this long
# ago: with the text alone as its key, a second STOP after a START (or any repeated word)
# was taken for a retry of the first, for ever, and the number stayed subscribed.
UNTIMED_RETRY_WINDOW_S = 600
# First key of `pg_advisory_xact_lock(UNTIMED_LOCK, hashtext(number, sender))`.
UNTIMED_LOCK = 0x756E7469  # "unti"


def untimed_key(secret: str, message: Inbound, now: datetime) -> str:
    """The key of a message without id or timestamp: its last message's key when that was
    the same text within UNTIMED_RETRY_WINDOW_S (a retry), else a new one."""
    base = message_key(secret, message)
    last = (
        InboundMessage.select(InboundMessage.message_key)
        .where(
            (InboundMessage.phone == message.phone)
            & (InboundMessage.received_at > now - timedelta(seconds=UNTIMED_RETRY_WINDOW_S))
            & _sender_matches(InboundMessage.sender, sender_key(message.sender))
        )
        .order_by(InboundMessage.id.desc())
        .limit(1)
        .scalar()
    )
    if last is not None and last.split("@", 1)[0] == base:
        return last
    return f"{base}@{now.isoformat()}"


def _sender_matches(column: Any, key: str) -> Any:
    """`column` (a sender id) names the sender `key` (`sender_key`), in SQL."""
    return fn.regexp_replace(fn.lower(column), "[^0-9a-z]", "", "g") == key


def messaged_recently(phone: str, candidates: Any, days: int) -> list[Shop]:
    """The shops among `candidates` (a condition on Shop) that sent `phone` a message (of a
    campaign, or a test send) within `days`, or may have: a message whose call is in flight
    or whose outcome is unknown may have reached the phone, and a STOP answering it must not
    be for no shop (the provider is answered 200 and never posts it again). Through the
    contact (indexed by phone) and the shop's campaigns that were still open in the window,
    each probed by (campaign, contact): no scan of recipients."""
    window = fn.now() - SQL("make_interval(days => %s)", (days,))
    may_have_reached = (reservations.IN_FLIGHT | reservations.UNKNOWN_OUTCOME) & (
        CampaignRecipient.claimed_at > window
    )
    sent = (
        CampaignRecipient.select(SQL("1"))
        .join(Campaign, on=(Campaign.id == CampaignRecipient.campaign))
        .where(
            (Campaign.shop == Contact.shop)
            & (Campaign.finished_at.is_null() | (Campaign.finished_at > window))
            & (CampaignRecipient.contact_id == Contact.id)
            & ((CampaignRecipient.sent_at > window) | may_have_reached)
        )
    )
    by_campaign = list(
        Shop.select(Shop)
        .join(Contact, on=(Contact.shop == Shop.id))
        .where((Contact.phone == phone) & candidates & fn.EXISTS(sent))
        .distinct()
        .order_by(Shop.id)
    )
    # A test send is a message the shop sent the number too (to a contact or not); a STOP
    # after one was for no shop. Test sends are a merchant's few checks: no index by number.
    by_test = list(
        Shop.select(Shop)
        .join(TestSend, on=(TestSend.shop == Shop.id))
        .where(
            (TestSend.phone == phone)
            & (
                ((TestSend.status == "sent") & (TestSend.finished_at > window))
                | (
                    ((TestSend.status == "sending") | (TestSend.error == "unknown_outcome"))
                    & (TestSend.claimed_at > window)
                )
            )
            & candidates
        )
        .distinct()
    )
    return sorted({shop.id: shop for shop in by_campaign + by_test}.values(), key=lambda s: s.id)


def holding_contact(phone: str, candidates: Any) -> list[Shop]:
    """The shops among `candidates` (a condition on Shop) that have `phone` as a contact."""
    return list(
        Shop.select(Shop)
        .join(Contact, on=(Contact.shop == Shop.id))
        .where((Contact.phone == phone) & candidates)
        .distinct()
        .order_by(Shop.id)
    )


def shops_for(message: Inbound, settings: Settings, keyword: str | None = None) -> list[Shop]:
    """The shops a reply is for: the one whose own sender it was written to; else, for the
    shared MITTO_SENDER or a sender several shops use, those that messaged the number.

    A STOP to a shared sender that none of its shops messaged lately (a campaign message
    still pending, one older than INBOUND_MATCH_DAYS) is for each of them that has the number
    as a contact: dropped, it was answered 200, never posted again, and the number kept
    getting the shop's messages. Nothing else is widened so: a START would lift suppressions
    the number never asked to lift, a HELP would answer with many shops' help texts."""
    key = sender_key(message.sender)
    if not key:
        return []
    days = settings.inbound_match_days
    if key == sender_key(settings.default_sender):
        candidates = Shop.sender.is_null() | _sender_matches(Shop.sender, key)
    else:
        owners = list(Shop.select(Shop).where(_sender_matches(Shop.sender, key)).order_by(Shop.id))
        if len(owners) <= 1:
            return owners
        candidates = _sender_matches(Shop.sender, key)
    matched = messaged_recently(message.phone, candidates, days)
    if matched or keyword != "stop":
        return matched
    return holding_contact(message.phone, candidates)


def reply_sender(message: Inbound, targets: Sequence[Shop], settings: Settings) -> str:
    """The sender an answer goes from: the one written to, spelt as the shop registered it (or
    as MITTO_SENDER is set), not as the customer's phone wrote it ("alpha", "+30 699..."): a
    provider sends from registered sender ids, and a probe saw answers go from "A L P H A"."""
    key = sender_key(message.sender)
    if key == sender_key(settings.default_sender):
        return settings.default_sender
    registered = (shop.sender for shop in targets if shop.sender)
    return next((sender for sender in registered if sender_key(sender) == key), message.sender)


def _store(message: Inbound, key: str, keyword: str | None, shop_ids: Sequence[int]) -> set[int]:
    """Store the message for each shop; returns the shops that had not stored it yet."""
    if not shop_ids:
        return set()
    received_at = message.received_at or datetime.now(UTC)
    rows = [
        (
            shop_id,
            key,
            message.provider_id,
            message.phone,
            message.sender,
            message.text,
            keyword,
            received_at,
        )
        for shop_id in shop_ids
    ]
    stored = (
        InboundMessage.insert_many(
            rows,
            fields=[
                InboundMessage.shop,
                InboundMessage.message_key,
                InboundMessage.provider_id,
                InboundMessage.phone,
                InboundMessage.sender,
                InboundMessage.text,
                InboundMessage.keyword,
                InboundMessage.received_at,
            ],
        )
        .on_conflict_ignore()
        .returning(InboundMessage.shop)
        .tuples()
        .execute()
    )
    return {shop_id for (shop_id,) in stored}


def _apply(
    keyword: str | None, shop_id: int, message: Inbound, key: str, secret: str, actor: Actor
) -> None:
    proof = f"reply {message.text.strip()[:40]!r} ({key})"
    if keyword == "stop":
        suppressions.suppress(shop_id, message.phone, "reply", secret, actor)
        consent.opt_out(shop_id, message.phone, "reply", proof)
    elif keyword == "start":
        suppressions.lift(shop_id, message.phone, secret, actor, "opt-in by a START reply")
        consent.opt_in(shop_id, message.phone, "reply", proof)


def _erased(targets: Sequence[Shop], phone: str, secret: str) -> set[int]:
    """The shops among `targets` that keep `phone` only as an erased number."""
    return {shop_id for shop_id, _ in suppressions.erased((s.id for s in targets), [phone], secret)}


def receive(
    message: Inbound,
    settings: Settings,
    provider: Provider,
    actor: Actor,
    limiter: SendLimiter | None = None,
) -> Received:
    """Store an inbound message for its shops and act on its keyword, in one transaction (the
    suppression changes recorded for `actor`, the provider's webhook); then, after the commit,
    answer a keyword once (`replies.send_once`, within the account's rate limit: `limiter`)."""
    keyword = keyword_of(message.text)
    with db.atomic():
        # The shops and which of them had erased the number, read in one snapshot: an
        # erasure committing between the two reads would count as before the message.
        execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        targets = shops_for(message, settings, keyword)
        erased_before = _erased(targets, message.phone, settings.secret_key)
    with db.atomic():
        if message.provider_id or message.received_at:
            key = message_key(settings.secret_key, message)
        else:
            # Copies posted at once (a provider retrying a slow request) would each find no
            # earlier message and each get a key of its own time: the number and sender's
            # lock makes the second wait for the first's commit and then find it.
            execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (UNTIMED_LOCK, f"{message.phone}|{sender_key(message.sender)}"),
            )
            key = untimed_key(settings.secret_key, message, datetime.now(UTC))
        if targets:
            # Under the targets' erasure locks: a shop that erased the number after the
            # targets were found must not store it again (one that had erased it before is
            # written to again, as it always was: a new message).
            erasure_lock.writing(*(shop.id for shop in targets))
            meanwhile = _erased(targets, message.phone, settings.secret_key) - erased_before
            targets = [shop for shop in targets if shop.id not in meanwhile]
        new = _store(message, key, keyword, [shop.id for shop in targets])
        for shop_id in sorted(new):
            _apply(keyword, shop_id, message, key, settings.secret_key, actor)
    state = None
    if keyword and targets:
        answer = replies.answer(keyword, [(shop.name, shops.help_text(shop)) for shop in targets])
        sender = reply_sender(message, targets, settings)
        state = replies.send_once(key, sender, message.phone, answer, provider, limiter)
    return Received(
        keyword,
        tuple(shop.id for shop in targets),
        duplicate=bool(targets) and not new,
        reply=state,
    )


def list_inbound(shop_id: int, limit: int, after: int | None) -> list[dict[str, Any]]:
    """One keyset page of the shop's inbound messages (erased ones are gone)."""
    query = InboundMessage.select(
        InboundMessage.id,
        InboundMessage.phone.alias("from"),
        InboundMessage.sender.alias("to"),
        InboundMessage.text,
        InboundMessage.keyword,
        InboundMessage.provider_id,
        InboundMessage.received_at,
    ).where((InboundMessage.shop == shop_id) & InboundMessage.phone.is_null(False))
    if after is not None:
        query = query.where(InboundMessage.id > after)
    return list(query.order_by(InboundMessage.id).limit(limit).dicts())
