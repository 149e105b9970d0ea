"""Enqueue a campaign (SPEC 4.1, 12): one short transaction, then the audience in chunks.

In one transaction: move the campaign to `sending` (conditional), check its audience before
writing anything (one aggregate: the recipient cap, and the exact cost against the available
credits, so a shop that cannot pay gets its 402 without a row inserted), reserve that exact
upper bound (locking the shop's credit row; one text to a list longer than a chunk whose length
the shop can cover is reserved at that length instead, uncounted: `_check_audience`), and fix
the audience's snapshot bound and creation cursor (`service.creation`). An audience of at most
RECIPIENT_CHUNK_SIZE is created in this same transaction (recipients and `send_batch` rows); a
larger one by the `createRecipients` actor, a chunk per transaction, published after the commit,
so the request's work does not grow with the audience (a 1,000,000-recipient enqueue took 17 s
in one transaction before). Batches are published only after their commit, as many as fair
admission lets the shop have in the queue (`service.admission`); the rest wait in PostgreSQL,
and a crash in between is healed by the clock's reconcile (admission, and the creation's
`resume_stalled`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from peewee import fn

from models import Campaign, Shop
from models.database import db
from service import admission, audience, audit, composition, creation, credits, erasure_lock
from service.audit import Actor
from service.errors import (
    DependencyUnavailable,
    InsufficientCredits,
    InvalidInput,
    InvalidTransition,
    NoRecipients,
    NotFound,
)
from service.infra import dispatch
from service.infra.config import Settings

log = logging.getLogger("astronote.enqueue")


@dataclass(frozen=True)
class EnqueueResult:
    campaign_id: int
    # The eligible audience counted at the enqueue, and the exact upper bound reserved for it.
    recipients: int
    reserved_credits: int
    # Batches written by the enqueue itself: all of them, unless `creating`.
    batches: int
    # Whether the audience is still being created (by `createRecipients`) after the answer.
    creating: bool


def no_recipients(shop_id: int, campaign_id: int) -> NoRecipients:
    """The 422 of an empty audience, naming consent where the shop requires it (a probe read
    "no subscribed contact" of a shop whose subscribed contacts had none)."""
    requires = Shop.select(Shop.require_consent).where(Shop.id == shop_id).scalar()
    who = "subscribed contact with consent" if requires else "subscribed contact"
    why = " (this shop requires consent: `require_consent`)" if requires else ""
    return NoRecipients(f"campaign {campaign_id} has no {who} to send to{why}", "audience")


def _start_sending(
    shop_id: int, campaign_id: int, scheduled: bool, due_by: datetime | None, actor: Actor
) -> tuple[str, bool, int | None]:
    """Move the campaign to `sending`; its (template, append_unsubscribe, list length or None)."""
    from_states = ["scheduled"] if scheduled else ["draft", "scheduled"]
    # The clock launches what was due when it looked; a reschedule to later committed since
    # must win (it answered 200 with the new time), so the time is checked again here.
    where = (
        (Campaign.id == campaign_id) & (Campaign.shop == shop_id) & Campaign.status.in_(from_states)
    )
    if scheduled and due_by is not None:
        where &= Campaign.scheduled_at <= due_by
    # Locked first (as the update itself would lock it), so the status it moves from is the
    # one the update changes.
    before = (
        Campaign.select(Campaign.status)
        .where((Campaign.id == campaign_id) & (Campaign.shop == shop_id))
        .for_update("FOR NO KEY UPDATE")
        .scalar()
    )
    started = list(
        Campaign.update(
            status="sending",
            status_reason=None,
            started_at=fn.COALESCE(Campaign.started_at, fn.now()),
            last_progress_at=fn.now(),
            updated_at=fn.now(),
        )
        .where(where)
        .returning(Campaign.text, Campaign.append_unsubscribe, fn.cardinality(Campaign.contact_ids))
        .tuples()
    )
    if not started:
        current = (
            Campaign.select(Campaign.status)
            .where((Campaign.id == campaign_id) & (Campaign.shop == shop_id))
            .scalar()
        )
        if current is None:
            raise NotFound(f"campaign {campaign_id} does not exist")
        raise InvalidTransition(
            f"campaign {campaign_id} is {current}; only a draft or "
            "scheduled campaign can be enqueued"
        )
    reason = "scheduled launch" if scheduled else "launched"
    audit.record(actor, audit.campaign_status(shop_id, campaign_id, before, "sending", reason))
    return started[0]


def _check_audience(
    shop_id: int,
    campaign_id: int,
    list_length: int | None,
    cost: Callable[[str | None], int],
    personalised: bool,
    settings: Settings,
) -> tuple[int, int]:
    """(audience size, its reservation). Refuse before a recipient is inserted: an empty
    audience (422), one over the cap (422), or a reservation the shop's available credits
    cannot cover (402). The cost is the exact sum the batches will be given (the audience
    counted by name shape), never more, so this refuses nothing the reservation would accept;
    the reservation, under the shop's lock, stays the check that counts.

    One text to a list longer than a chunk is bounded by the list's length instead, when the
    shop can cover that (checked under its lock, so the reservation cannot then refuse it):
    the size and the reservation are the length, the ids are not counted (0.08 s against 0.34 s
    counted for a list of 1,000,000 here), and the creation gives back what no batch received.
    The list's first eligible id is still looked for, so an empty audience gets its 422. Not
    for a personalised text: its bound (every name at its widest) would hold several times its
    cost from the shop's other campaigns until the creation ends."""
    # Read without the shop's lock: a top-up or a release racing this only moves the refusal
    # to the reservation, which takes the lock.
    available = credits.summary(shop_id).balance - credits.reserved_total(
        shop_id, excluding_campaign=campaign_id
    )
    max_recipients = settings.max_campaign_recipients
    if (
        list_length is not None
        and settings.recipient_chunk_size < list_length <= max_recipients
        and not personalised
    ):
        bound = list_length * cost(None)
        if bound <= available:
            available = credits.lock_shop(shop_id) - credits.reserved_total(
                shop_id, excluding_campaign=campaign_id
            )
        if bound <= available:
            if not audience.list_has_eligible(shop_id, campaign_id):
                raise no_recipients(shop_id, campaign_id)
            return list_length, bound
    # A long list is joined in PostgreSQL from the campaign's row; a short one read and bound.
    list_of = campaign_id if list_length is not None and list_length > audience.LONG_LIST else None
    contact_ids = (
        None
        if list_length is None or list_of is not None
        else Campaign.select(Campaign.contact_ids).where(Campaign.id == campaign_id).scalar()
    )
    shapes = (
        audience.count_by_name_shape(shop_id, contact_ids, list_of)
        if personalised
        else [(None, audience.count(shop_id, contact_ids, list_of))]
    )
    size = sum(count for _, count in shapes)
    if not size:
        raise no_recipients(shop_id, campaign_id)
    if size > max_recipients:
        raise InvalidInput(
            f"campaign {campaign_id} would send to {size} recipients; a campaign"
            f" sends to at most {max_recipients}",
            "audience",
        )
    needed = sum(count * cost(name) for name, count in shapes)
    if needed > available:
        raise InsufficientCredits(
            f"this campaign needs up to {needed} credits; {max(available, 0)} available"
        )
    return size, needed


def enqueue(
    shop_id: int,
    campaign_id: int,
    settings: Settings,
    actor: Actor,
    scheduled: bool = False,
    due_by: datetime | None = None,
) -> EnqueueResult:
    """Start sending a draft or scheduled campaign, recorded for `actor` (the merchant's key,
    or the clock for a scheduled one: `scheduled`, only if still scheduled at or before
    `due_by` when given). Raises NotFound, InvalidTransition (409),
    NoRecipients (422), InvalidInput (422: more than `max_campaign_recipients`) or
    InsufficientCredits (402); on any of them nothing has changed (nor is recorded)."""
    base = settings.public_base_url
    if not dispatch.broker_reachable():
        # Refuse before writing anything: the merchant can simply try again later.
        raise DependencyUnavailable(
            f"{'RabbitMQ' if settings.broker_url else 'Redis'} is"
            " unreachable; the campaign was not started"
        )
    with db.atomic():
        # First: a creation chunk written inline below takes it too, after row locks.
        erasure_lock.writing(shop_id)
        template, append_unsubscribe, list_length = _start_sending(
            shop_id, campaign_id, scheduled, due_by, actor
        )
        size, total = _check_audience(
            shop_id,
            campaign_id,
            list_length,
            creation.pricing(template, append_unsubscribe, base),
            composition.FIRST_NAME_PLACEHOLDER in template,
            settings,
        )
        # The exact bound of the audience counted, reserved whole now: no chunk can find the
        # shop's credits spent by another campaign meanwhile.
        credits.reserve(shop_id, campaign_id, total, actor)
        creation.start(shop_id, campaign_id, list_length, total)
        created = batches = 0
        inline = size <= settings.recipient_chunk_size
        cursor, done = 0, False
        while inline and not done:  # at most two chunks: the audience fits in one
            chunk = creation.write_chunk(campaign_id, cursor, settings, actor)
            assert chunk is not None  # this transaction holds the campaign row
            created, batches = created + chunk.recipients, batches + chunk.batches
            cursor, done = chunk.cursor, chunk.done
        if inline and not created:  # the audience emptied since it was counted
            raise no_recipients(shop_id, campaign_id)
    if inline:
        admission.admit_shop(shop_id, settings)
    else:
        _publish_creation(campaign_id)
    return EnqueueResult(campaign_id, created if inline else size, total, batches, not inline)


def _publish_creation(campaign_id: int) -> None:
    """Start creating the audience. A broker that fails now (it answered a moment ago) leaves
    the campaign to the clock's reconcile, which publishes a creation that made no progress
    for BATCH_STALE_AFTER_MS: the campaign is accepted and its credits reserved either way."""
    try:
        dispatch.publish_create_recipients(campaign_id, 0)
    except dispatch.PUBLISH_ERRORS:
        log.warning(
            "publishing the recipient creation failed; the reconcile will",
            exc_info=True,
            extra={"campaign_id": campaign_id},
        )
