"""Campaigns: creation, editing, and the state transitions a merchant can ask for.

Every transition is one conditional UPDATE whose row count says whether it happened; a
campaign in the wrong state gets `InvalidTransition` (409), another shop's campaign `NotFound`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from models import Campaign
from models.database import db, execute, fetchall, fetchone
from service import credits
from service.errors import InvalidInput, InvalidTransition, NotFound
from service.infra import dispatch

CAMPAIGN_FIELDS = ("id", "name", "text", "status", "status_reason", "contact_ids",
                   "append_unsubscribe", "scheduled_at", "started_at", "finished_at",
                   "last_progress_at", "created_at", "updated_at")


def as_dict(campaign: Campaign) -> dict[str, Any]:
    return {name: getattr(campaign, name) for name in CAMPAIGN_FIELDS}


def get(shop_id: int, campaign_id: int) -> Campaign:
    campaign = Campaign.get_or_none((Campaign.id == campaign_id) & (Campaign.shop == shop_id))
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return campaign


def create(shop_id: int, name: str, text: str, contact_ids: Sequence[int] | None = None,
           append_unsubscribe: bool = True) -> Campaign:
    """A draft campaign. `contact_ids` must all be the shop's contacts (else 422 naming them)."""
    if contact_ids is not None:
        contact_ids = sorted(set(contact_ids))
        known = {row[0] for row in fetchall(
            "SELECT id FROM contact WHERE shop_id = %s AND id = ANY(%s)", (shop_id, contact_ids))}
        unknown = [cid for cid in contact_ids if cid not in known]
        if unknown:
            raise InvalidInput(f"unknown contact ids: {unknown[:20]}", "contact_ids")
    campaign = Campaign.create(shop=shop_id, name=name, text=text, contact_ids=contact_ids,
                               append_unsubscribe=append_unsubscribe)
    return get(shop_id, campaign.id)  # with the database's timestamps


def list_for_shop(shop_id: int, limit: int, after: int | None,
                  status: str | None = None) -> list[Campaign]:
    query = (Campaign.select()
             .where(Campaign.shop == shop_id)
             .order_by(Campaign.id)
             .limit(limit))
    if after is not None:
        query = query.where(Campaign.id > after)
    if status is not None:
        query = query.where(Campaign.status == status)
    return list(query)


def _transition(shop_id: int, campaign_id: int, sql_set: str, from_states: Sequence[str],
                params: Sequence[Any] = ()) -> Campaign:
    """Apply `sql_set` if the campaign is in one of `from_states`; else 404 or 409."""
    changed = execute(
        f"UPDATE campaign SET {sql_set}, updated_at = now()"
        " WHERE id = %s AND shop_id = %s AND status = ANY(%s)",
        (*params, campaign_id, shop_id, list(from_states)),
    )
    campaign = get(shop_id, campaign_id)
    if not changed:
        raise InvalidTransition(
            f"campaign {campaign_id} is {campaign.status}; allowed from {', '.join(from_states)}")
    return campaign


def update(shop_id: int, campaign_id: int, changes: dict[str, Any]) -> Campaign:
    """Edit name and/or text while the campaign is a draft or scheduled."""
    assignments = ", ".join(f"{name} = %s" for name in changes)
    return _transition(shop_id, campaign_id, assignments, ("draft", "scheduled"),
                       tuple(changes.values()))


def schedule(shop_id: int, campaign_id: int, scheduled_at: datetime, now: datetime) -> Campaign:
    if scheduled_at <= now:
        raise InvalidInput("scheduled_at must be in the future", "scheduled_at")
    return _transition(shop_id, campaign_id, "status = 'scheduled', scheduled_at = %s",
                       ("draft", "scheduled"), (scheduled_at,))


def pause(shop_id: int, campaign_id: int) -> Campaign:
    """Stop claiming: batches already queued claim nothing while the campaign is paused."""
    return _transition(shop_id, campaign_id, "status = 'paused'", ("sending",))


def resume(shop_id: int, campaign_id: int) -> Campaign:
    """Back to sending with the same reservation; unfinished batches are published again."""
    with db.atomic():
        campaign = _transition(shop_id, campaign_id,
                               "status = 'sending', last_progress_at = now()", ("paused",))
        batches = fetchall(
            "UPDATE send_batch SET state = 'published', published_at = now(),"
            " publish_count = publish_count + 1"
            " WHERE campaign_id = %s AND state <> 'finished' RETURNING recipient_ids",
            (campaign_id,))
    for (recipient_ids,) in batches:
        dispatch.publish_batch(campaign_id, shop_id, recipient_ids)
    # A campaign paused after its last batch finishes here rather than waiting for the clock.
    dispatch.publish_status_update(campaign_id)
    return campaign


def cancel(shop_id: int, campaign_id: int) -> Campaign:
    """Cancel: recipients not yet claimed are skipped and the reservation is released.
    Messages already in flight still persist (and are debited) when their call returns."""
    with db.atomic():
        campaign = _transition(
            shop_id, campaign_id,
            "status = 'cancelled', finished_at = now(), status_reason = 'cancelled by merchant'",
            ("draft", "scheduled", "sending", "paused"))
        execute("UPDATE campaign_recipient SET status = 'skipped', error = 'cancelled',"
                " updated_at = now() WHERE campaign_id = %s AND status = 'pending'",
                (campaign_id,))
        execute("UPDATE send_batch SET state = 'finished', finished_at = now()"
                " WHERE campaign_id = %s AND state <> 'finished'", (campaign_id,))
        credits.release(campaign_id)
    return campaign


def progress(shop_id: int, campaign_id: int) -> dict[str, Any]:
    """Counts by recipient status and delivery status, and the reservation's state."""
    campaign = get(shop_id, campaign_id)
    counts = dict.fromkeys(("pending", "sending", "sent", "failed", "skipped"), 0)
    delivery: dict[str, int] = {}
    for status, delivery_status, count in fetchall(
            "SELECT status, delivery_status, count(*) FROM campaign_recipient"
            " WHERE campaign_id = %s GROUP BY status, delivery_status", (campaign_id,)):
        counts[status] += count
        if delivery_status:
            delivery[delivery_status] = delivery.get(delivery_status, 0) + count
    reservation = fetchone("SELECT amount, consumed, status FROM credit_reservation"
                           " WHERE campaign_id = %s", (campaign_id,))
    amount, consumed, state = reservation or (0, 0, None)
    return {
        "id": campaign.id, "status": campaign.status, "status_reason": campaign.status_reason,
        "total": sum(counts.values()), **counts, "delivery": delivery,
        "credits": {"reserved": amount, "consumed": consumed,
                    "released": amount - consumed if state == "released" else 0},
        "started_at": campaign.started_at, "finished_at": campaign.finished_at,
        "last_progress_at": campaign.last_progress_at,
    }


def recipients(shop_id: int, campaign_id: int, limit: int, after: int | None,
               status: str | None) -> list[dict[str, Any]]:
    get(shop_id, campaign_id)
    keys = ("id", "contact_id", "phone", "first_name", "status", "mitto_message_id",
            "delivery_status", "error", "sent_at", "delivery_at")
    rows = fetchall(
        f"SELECT {', '.join(keys)} FROM campaign_recipient WHERE campaign_id = %s"
        " AND (%s::bigint IS NULL OR id > %s) AND (%s::text IS NULL OR status = %s)"
        " ORDER BY id LIMIT %s",
        (campaign_id, after, after, status, status, limit))
    return [dict(zip(keys, row)) for row in rows]
