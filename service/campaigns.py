"""Campaigns: creation, editing, and the state transitions a merchant can ask for.

Every transition is one conditional UPDATE whose row count says whether it happened; a
campaign in the wrong state gets `InvalidTransition` (409), another shop's campaign `NotFound`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from peewee import Field, ModelSelect, fn

from models import Campaign, CampaignRecipient, CreditReservation, SendBatch
from models.database import db, fetchall
from models.expressions import IdArray
from service import (
    admission,
    audit,
    composition,
    credits,
    delivery,
    recipient_counts,
    reservations,
)
from service.audit import Actor
from service.errors import InvalidInput, InvalidTransition, NotFound
from service.infra import dispatch
from service.infra.config import Settings

log = logging.getLogger("astronote.campaigns")

# A list audience holds at most this many contact ids (the create schema's maxItems, whose 422
# says so). It is the default of MAX_CAMPAIGN_RECIPIENTS, which enqueue checks whatever the
# audience; a 5 MiB body holds about 650,000 distinct ids anyway, and a bigger audience is
# "all subscribed contacts".
MAX_CONTACT_IDS = 1_000_000

# The columns of a campaign answer. The list audience is not one: its ids (up to
# MAX_CONTACT_IDS) are never read back for an answer, which says how many (`audience`).
CAMPAIGN_FIELDS = (
    "id",
    "name",
    "text",
    "status",
    "status_reason",
    "append_unsubscribe",
    "scheduled_at",
    "started_at",
    "finished_at",
    "last_progress_at",
    "created_at",
    "updated_at",
)
# What a merchant may edit, by request key: request keys reach the database only through this.
EDITABLE_FIELDS: dict[str, Field] = {"name": Campaign.name, "text": Campaign.text}


def audience(contact_count: int | None) -> dict[str, Any]:
    """The answer's audience: every subscribed contact, or a list of `count` contacts."""
    if contact_count is None:
        return {"kind": "all_subscribed"}
    return {"kind": "contacts", "count": contact_count}


def as_dict(campaign: Campaign) -> dict[str, Any]:
    """A campaign read by `get` or `list_for_shop` as its API answer."""
    return {
        **{name: getattr(campaign, name) for name in CAMPAIGN_FIELDS},
        "audience": audience(campaign.contact_count),
    }


def _answers(shop_id: int) -> ModelSelect[Campaign]:
    # cardinality() in SQL: a list audience is counted by PostgreSQL, never shipped to Python.
    return Campaign.select(
        *(getattr(Campaign, name) for name in CAMPAIGN_FIELDS),
        fn.cardinality(Campaign.contact_ids).alias("contact_count"),
    ).where(Campaign.shop == shop_id)


def get(shop_id: int, campaign_id: int) -> Campaign:
    """The shop's campaign, without its list of contact ids (`as_dict` counts them)."""
    campaign = _answers(shop_id).where(Campaign.id == campaign_id).get_or_none()
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return campaign


def check_text(text: str) -> None:
    """A text must say something to a contact without a first name: one that is only blanks
    and `{first_name}` composes to an empty message for them (a test send of it failed with a
    500, and each such recipient's call was refused by the provider)."""
    if not composition.personalise(text, None).strip():
        raise InvalidInput(
            "text must say something besides {first_name}: it is empty for a contact"
            " without a first name",
            "text",
        )


UNKNOWN_CONTACTS = (
    "SELECT u FROM unnest(%s::bigint[]) AS u WHERE NOT EXISTS"
    " (SELECT 1 FROM contact WHERE contact.shop_id = %s AND contact.id = u) ORDER BY u LIMIT 20"
)


def create(
    shop_id: int,
    name: str,
    text: str,
    contact_ids: Sequence[int] | IdArray | None = None,
    append_unsubscribe: bool = True,
) -> Campaign:
    """A draft campaign. `contact_ids` must all be the shop's contacts (else 422 naming them);
    they are kept once each, in order."""
    check_text(text)
    ids = None
    if contact_ids is not None:
        ids = contact_ids if isinstance(contact_ids, IdArray) else IdArray.of(contact_ids)
        # Found by PostgreSQL, the first 20 of them: nothing of a list of 500,000 ids but its
        # text crosses into this process.
        unknown = [row[0] for row in fetchall(UNKNOWN_CONTACTS, (ids, shop_id))]
        if unknown:
            raise InvalidInput(f"unknown contact ids: {unknown}", "contact_ids")
    campaign = Campaign.create(
        shop=shop_id,
        name=name,
        text=text,
        contact_ids=ids,
        append_unsubscribe=append_unsubscribe,
    )
    return get(shop_id, campaign.id)  # with the database's timestamps


def list_for_shop(
    shop_id: int, limit: int, after: int | None, status: str | None = None
) -> list[Campaign]:
    query = _answers(shop_id).order_by(Campaign.id).limit(limit)
    if after is not None:
        query = query.where(Campaign.id > after)
    if status is not None:
        query = query.where(Campaign.status == status)
    return list(query)


def _transition(
    shop_id: int,
    campaign_id: int,
    changes: dict[Field, Any],
    from_states: Sequence[str],
    actor: Actor | None = None,
    reason: str = "",
) -> Campaign:
    """Apply `changes` if the campaign is in one of `from_states`; else 404 or 409. A status
    change is recorded for `actor` with `reason`, in the same transaction."""
    with db.atomic():
        # Locked first (as the update itself would lock it), so the status it moves from is the
        # one the update changes.
        before = (
            Campaign.select(Campaign.status)
            .where((Campaign.id == campaign_id) & (Campaign.shop == shop_id))
            .for_update("FOR NO KEY UPDATE")
            .scalar()
        )
        changed = (
            Campaign.update({**changes, Campaign.updated_at: fn.now()})
            .where(
                (Campaign.id == campaign_id)
                & (Campaign.shop == shop_id)
                & (Campaign.status.in_(from_states))
            )
            .execute()
        )
        if changed and actor is not None and Campaign.status in changes:
            audit.record(
                actor,
                audit.campaign_status(
                    shop_id, campaign_id, before, changes[Campaign.status], reason
                ),
            )
    campaign = get(shop_id, campaign_id)
    if not changed:
        raise InvalidTransition(
            f"campaign {campaign_id} is {campaign.status}; allowed from {', '.join(from_states)}"
        )
    return campaign


def update(shop_id: int, campaign_id: int, changes: dict[str, Any]) -> Campaign:
    """Edit name and/or text while the campaign is a draft or scheduled. A key that is not an
    editable field is `InvalidInput` naming it (the API's schema refuses those already)."""
    unknown = sorted(set(changes) - EDITABLE_FIELDS.keys())
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} cannot be edited; editable: {', '.join(EDITABLE_FIELDS)}", unknown[0]
        )
    if not changes:
        raise InvalidInput(f"nothing to edit; editable: {', '.join(EDITABLE_FIELDS)}")
    if "text" in changes:
        check_text(changes["text"])
    return _transition(
        shop_id,
        campaign_id,
        {EDITABLE_FIELDS[name]: value for name, value in changes.items()},
        ("draft", "scheduled"),
    )


def schedule(
    shop_id: int, campaign_id: int, scheduled_at: datetime, now: datetime, actor: Actor
) -> Campaign:
    """Schedule (or reschedule) a draft or scheduled campaign for `scheduled_at`."""
    if scheduled_at <= now:
        raise InvalidInput("scheduled_at must be in the future", "scheduled_at")
    return _transition(
        shop_id,
        campaign_id,
        {Campaign.status: "scheduled", Campaign.scheduled_at: scheduled_at},
        ("draft", "scheduled"),
        actor,
        f"scheduled for {scheduled_at.isoformat()}",
    )


def pause(shop_id: int, campaign_id: int, actor: Actor) -> Campaign:
    """Stop claiming: batches already queued claim nothing while the campaign is paused."""
    return _transition(
        shop_id, campaign_id, {Campaign.status: "paused"}, ("sending",), actor, "paused"
    )


def resume(shop_id: int, campaign_id: int, settings: Settings, actor: Actor) -> Campaign:
    """Back to sending with the same reservation; unfinished batches wait for admission
    again (fair admission publishes as many as the shop may have in the queue)."""
    with db.atomic():
        campaign = _transition(
            shop_id,
            campaign_id,
            {Campaign.status: "sending", Campaign.last_progress_at: fn.now()},
            ("paused",),
            actor,
            "resumed",
        )
        # A paused campaign's batches claim nothing, so those published before the pause
        # were drained from the queue meanwhile (a delivery that claims nothing of a paused
        # campaign leaves its batch unfinished): each one waits to be admitted again.
        # What waited for quiet hours is decided again at their next delivery (a batch that
        # stopped short for the rate limit had recorded its waiting recipients too: kept,
        # they held its sendable rest back until the recheck).
        (
            SendBatch.update(state="pending", waiting=0, not_before=None, waiting_until=None)
            .where((SendBatch.campaign == campaign_id) & (SendBatch.state != "finished"))
            .execute()
        )
    admission.admit_shop(shop_id, settings)
    # A campaign paused after its last batch finishes here rather than waiting for the clock.
    dispatch.publish_status_update(campaign_id)
    return campaign


def cancel(shop_id: int, campaign_id: int, settings: Settings, actor: Actor) -> Campaign:
    """Cancel: no batch claims anything from the answer on; recipients not yet claimed are
    skipped and their part of the reservation released (before the answer for one chunk, by
    the worker just after for more). Messages already in flight still persist (and are
    debited) when their call returns, so the reservation keeps their part until they
    resolve, and the part of messages of unknown outcome until evidence can no longer charge
    them (`service.reservations`); a call given back meanwhile is skipped too
    (`sending.unclaim`)."""
    # The cancel commits first, alone: a claim needs the campaign `sending`, so from here on
    # no batch claims anything. Skipping what is pending follows in chunks, then the settle
    # (its hold counts only the calls in flight): here when it is one chunk, else by the
    # worker's `updateCampaignStatus` (`delivery.finalize_cancelled`; a lost message, by
    # the reconciler's), so that a cancel of a million answers at once, not after 7 s
    # (bench/cancel_large.py).
    with db.atomic():
        campaign = _transition(
            shop_id,
            campaign_id,
            {
                Campaign.status: "cancelled",
                Campaign.finished_at: fn.now(),
                Campaign.status_reason: "cancelled by merchant",
            },
            ("draft", "scheduled", "sending", "paused"),
            actor,
            "cancelled by merchant",
        )
        (
            SendBatch.update(state="finished", finished_at=fn.now())
            .where((SendBatch.campaign == campaign_id) & (SendBatch.state != "finished"))
            .execute()
        )
    pending = recipient_counts.for_campaign(campaign_id)[0].get("pending", 0)
    if pending > settings.recipient_chunk_size:
        try:
            dispatch.publish_status_update(campaign_id)
        except dispatch.PUBLISH_ERRORS:
            log.warning(
                "publishing a cancel's skip failed; the reconciler will",
                extra={"campaign_id": campaign_id, "shop_id": shop_id},
            )
        return campaign
    delivery.skip_cancelled(campaign_id, settings.recipient_chunk_size)
    reservations.settle(campaign_id, settings, actor)
    return campaign


def progress(shop_id: int, campaign_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Counts by recipient status and delivery status (the counters of
    `service.recipient_counts`: no recipient is read), the reservation's state, the
    recipients waiting for quiet hours to end at `now` (`service.infra.clock`), and how far
    the audience's creation got."""
    campaign = get(shop_id, campaign_id)
    now = now or datetime.now(UTC)
    counts, delivery = recipient_counts.for_campaign(campaign_id)
    reservation = (
        CreditReservation.select(
            CreditReservation.amount,
            CreditReservation.consumed,
            CreditReservation.released,
            credits.outstanding(),
            CreditReservation.status,
        )
        .where(CreditReservation.campaign == campaign_id)
        .tuples()
        .first()
    )
    amount, consumed, released, held, state = reservation or (0, 0, 0, 0, None)
    waiting, next_opening, last_opening = (
        SendBatch.select(
            fn.COALESCE(fn.SUM(SendBatch.waiting), 0),
            fn.MIN(SendBatch.not_before),
            fn.MAX(fn.COALESCE(SendBatch.waiting_until, SendBatch.not_before)),
        )
        .where(
            (SendBatch.campaign == campaign_id)
            & (SendBatch.state != "finished")
            & (SendBatch.waiting > 0)
            # A batch records its waiting recipients when it looks; once their last opening
            # has passed none of them waits for quiet hours any more, though the batch has not
            # looked again (a probe saw `waiting: 30` with the opening past and none pending).
            & (fn.COALESCE(SendBatch.waiting_until, SendBatch.not_before) > now)
        )
        .tuples()
        .first()
    ) or (0, None, None)
    waiting = min(int(waiting), counts["pending"])  # only pending recipients wait
    if not waiting:
        next_opening = last_opening = None
    elif next_opening is not None:
        next_opening = max(next_opening, now)  # the first of them are going now
    created = (
        Campaign.select(Campaign.recipients_created_at.is_null(False))
        .where(Campaign.id == campaign_id)
        .scalar()
    )
    return {
        "id": campaign.id,
        "status": campaign.status,
        "status_reason": campaign.status_reason,
        "total": sum(counts.values()),
        **counts,
        "delivery": delivery,
        # `held`: what the reservation still holds (all it has not sent while it sends; then
        # calls in flight and messages of unknown outcome); `reservation`: its status.
        "credits": {
            "reserved": amount,
            "consumed": consumed,
            "released": released,
            "held": held if state != "released" else 0,
            "reservation": state,
        },
        # Pending recipients held by quiet hours when their batch last looked (SPEC 11):
        # they go from `next_opening`, the last of them at `until`.
        "quiet_hours": {
            "waiting": waiting,
            "next_opening": next_opening,
            "until": last_opening,
        },
        # False while the audience's recipients are still being created in chunks after the
        # enqueue (`service.creation`): `total` grows until then.
        "recipients_created": created,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "last_progress_at": campaign.last_progress_at,
    }


def recipients(
    shop_id: int, campaign_id: int, limit: int, after: int | None, status: str | None
) -> list[dict[str, Any]]:
    """The campaign's recipients in id order, `limit` of them after the id `after`."""
    get(shop_id, campaign_id)
    query = (
        CampaignRecipient.select(
            CampaignRecipient.id,
            CampaignRecipient.contact_id,
            CampaignRecipient.phone,
            CampaignRecipient.first_name,
            CampaignRecipient.status,
            CampaignRecipient.mitto_message_id,
            CampaignRecipient.delivery_status,
            CampaignRecipient.error,
            CampaignRecipient.sent_at,
            CampaignRecipient.delivery_at,
        )
        .where(CampaignRecipient.campaign == campaign_id)
        .order_by(CampaignRecipient.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(CampaignRecipient.id > after)
    if status is not None:
        query = query.where(CampaignRecipient.status == status)
    return list(query.dicts())
