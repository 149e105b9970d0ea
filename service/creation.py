"""A campaign's recipients and their `send_batch` rows, created in bounded chunks (SPEC 12).

The enqueue (`service.enqueue`) counts the audience, reserves its exact upper bound and fixes
the audience's snapshot bound (`creation_until`: the shop's largest contact id, or the list's
length), then answers. The recipients are created here, `RECIPIENT_CHUNK_SIZE` eligible
contacts per transaction, in contact id (or list) order after the campaign's
`creation_cursor`: each chunk locks the campaign row, checks that the cursor is where its
caller found it, inserts the chunk's recipients (one INSERT ... SELECT), writes their batches
with their part of the reservation, and advances the cursor, so two creators never insert a
contact twice (the unique (campaign_id, contact_id) would refuse it anyway) and a chunk that
rolls back leaves the cursor where it was. The actor `createRecipients` does one chunk per
message and publishes the next, so no worker thread loops for minutes; a creation whose
messages were lost (worker killed, Redis flushed) is published again by the clock's reconcile
(`resume_stalled`).

A campaign is never finalised while `recipients_created_at` is NULL (`service.delivery`).
A paused campaign keeps creating (its batches wait for admission, which admits only sending
campaigns); a cancelled one stops at its next chunk, and its cancel released the whole unsent
reservation. When the last chunk is written, the part of the reservation no batch received
(the audience shrank meanwhile: opt-outs, suppressions) is released.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peewee import fn

from models import Campaign, CreditReservation, SendBatch
from models.database import db, fetchall, fetchone
from service import admission, audience, audit, composition, erasure_lock, links
from service.audience import BOUND, name_shape
from service.audit import Actor
from service.infra import dispatch
from service.infra.config import Settings
from service.infra.faults import fault_point

log = logging.getLogger("astronote.creation")

CREATING = ("sending", "paused")  # statuses whose audience is still created


def batch_key(campaign_id: int, recipient_ids: Sequence[int]) -> str:
    digest = hashlib.sha256(",".join(map(str, sorted(recipient_ids))).encode()).hexdigest()
    return f"batch:{campaign_id}:{digest}"


def pricing(template: str, append_unsubscribe: bool, base: str) -> Callable[[str | None], int]:
    """The reservation's cost of one recipient by first name (the upper bound of SPEC 4.1),
    computed once per name shape; the pre-check and the batches share one, so they agree."""
    unsubscribe_sample = links.sample_unsubscribe_url(base) if append_unsubscribe else None
    personalised = composition.FIRST_NAME_PLACEHOLDER in template
    costs: dict[object, int] = {}

    def cost(name: str | None) -> int:
        shape = name_shape(name) if personalised else None
        if shape not in costs:
            bound = (
                composition.length_cost_bound
                if isinstance(shape, tuple) and shape[0] == BOUND
                else composition.cost_upper_bound
            )
            costs[shape] = bound(template, name, links.sample_short_url(base), unsubscribe_sample)
        return costs[shape]

    return cost


def start(shop_id: int, campaign_id: int, list_length: int | None, reserved: int) -> int:
    """In the enqueue's transaction: fix the audience's snapshot bound and put the cursor at
    its start, with the whole reservation still to hand out. Returns the bound."""
    if list_length is None:
        row = fetchone("SELECT coalesce(max(id), 0) FROM contact WHERE shop_id = %s", (shop_id,))
        until = int(row[0]) if row else 0
    else:
        until = list_length
    (
        Campaign.update(
            creation_cursor=0,
            creation_until=until,
            creation_reserve=reserved,
            recipients_created_at=None,
            creation_progress_at=fn.now(),
        )
        .where(Campaign.id == campaign_id)
        .execute()
    )
    return until


@dataclass(frozen=True)
class Chunk:
    """What one chunk did: recipients and batches written, whether the audience is now
    wholly created, and the cursor the next chunk starts from."""

    shop_id: int
    recipients: int
    batches: int
    done: bool
    cursor: int
    seconds: float


def _insert_recipients(
    campaign_id: int,
    shop_id: int,
    is_list: bool,
    cursor: int,
    until: int,
    size: int,
) -> tuple[list[tuple], int, bool]:
    """Insert the next chunk's eligible contacts; returns ([(id, contact id, first name)],
    the new cursor, whether the audience is done).

    SQL: one INSERT ... SELECT over `audience.ELIGIBLE_CONTACTS`, the one definition the
    pre-check counted, cut by the cursor: every subscribed contact by id range (the
    (shop_id, id) index), a list by position (the slice's ids, at most `size`, bound as one
    array)."""
    if is_list:
        stop = min(cursor + size, until)
        row = fetchone(
            "SELECT contact_ids[%s:%s] FROM campaign WHERE id = %s", (cursor + 1, stop, campaign_id)
        )
        ids = list(row[0] or []) if row else []
        rows = fetchall(
            "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, country,"
            " first_name) SELECT %s, c.shop_id, c.id, c.phone, c.country, c.first_name"
            f" {audience.ELIGIBLE_CONTACTS}"
            " ORDER BY c.id RETURNING id, contact_id, first_name",
            (campaign_id, *audience.eligible_params(shop_id, ids)),
        )
        return rows, stop, stop >= until
    rows = fetchall(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, country,"
        " first_name) SELECT %s, c.shop_id, c.id, c.phone, c.country, c.first_name"
        f" {audience.ELIGIBLE_CONTACTS} AND c.id > %s AND c.id <= %s"
        " ORDER BY c.id LIMIT %s RETURNING id, contact_id, first_name",
        (campaign_id, *audience.eligible_params(shop_id, None), cursor, until, size),
    )
    if len(rows) < size:
        return rows, until, True
    last = max(contact_id for _, contact_id, _ in rows)
    return rows, last, last >= until


def write_chunk(
    campaign_id: int, expected_cursor: int, settings: Settings, actor: Actor
) -> Chunk | None:
    """Create the next chunk of the campaign's recipients and their batches, in one
    transaction (a savepoint inside the caller's, for the enqueue's inline creation). None
    when there is nothing to do: the cursor moved (another creator did this chunk), the
    audience is wholly created, or the campaign can no longer send (cancelled)."""
    began = time.perf_counter()
    with db.atomic():
        # Before the campaign's row: the erasure lock is taken ahead of any row lock.
        erasure_lock.writing(
            Campaign.select(Campaign.shop).where(Campaign.id == campaign_id).scalar() or 0
        )
        row = (
            Campaign.select(
                Campaign.shop,
                Campaign.status,
                Campaign.text,
                Campaign.append_unsubscribe,
                Campaign.contact_ids.is_null(False),
                Campaign.creation_cursor,
                Campaign.creation_until,
                Campaign.creation_reserve,
                Campaign.recipients_created_at,
            )
            .where(Campaign.id == campaign_id)
            .for_update("FOR NO KEY UPDATE")
            .tuples()
            .first()
        )
        if row is None:
            return None
        shop_id, status, text, append_unsubscribe, is_list, cursor, until, reserve, done_at = row
        if done_at is not None or cursor != expected_cursor or status not in CREATING:
            return None
        recipients, new_cursor, done = _insert_recipients(
            campaign_id, shop_id, is_list, cursor, until, settings.recipient_chunk_size
        )
        fault_point("inside_recipient_creation")
        cost = pricing(text, append_unsubscribe, settings.public_base_url)
        recipients.sort()
        batches = []
        for start_at in range(0, len(recipients), settings.send_batch_size):
            part = recipients[start_at : start_at + settings.send_batch_size]
            ids = [rid for rid, _, _ in part]
            # A batch's part of the reservation, never more than is left of it: a batch of
            # recipients who joined the audience after the enqueue counted it (a contact
            # subscribed again) costs more than was reserved, and its windows ask the shop's
            # available credits for the excess (`windows.BatchSender.cover`).
            part_cost = min(sum(cost(name) for _, _, name in part), reserve)
            reserve -= part_cost
            batches.append((campaign_id, batch_key(campaign_id, ids), ids, part_cost))
        if batches:
            (
                SendBatch.insert_many(
                    batches,
                    fields=[
                        SendBatch.campaign,
                        SendBatch.key,
                        SendBatch.recipient_ids,
                        SendBatch.reserved,
                    ],
                )
                .as_rowcount()
                .execute()
            )
        (
            Campaign.update(
                creation_cursor=new_cursor,
                creation_reserve=0 if done else reserve,
                creation_progress_at=fn.now(),
                last_progress_at=fn.now(),
                recipients_created_at=fn.now() if done else None,
            )
            .where(Campaign.id == campaign_id)
            .execute()
        )
        if done and reserve:
            _release_unused(shop_id, campaign_id, reserve, actor)
    return Chunk(
        shop_id, len(recipients), len(batches), done, new_cursor, time.perf_counter() - began
    )


def _release_unused(shop_id: int, campaign_id: int, amount: int, actor: Actor) -> None:
    """Give back the part of the reservation no batch received: the audience shrank between
    the enqueue's count and its creation, or a long list reserved at its length held ids that
    were not eligible. Reservation before shop, as every transaction."""
    released = (
        CreditReservation.update(released=CreditReservation.released + amount)
        .where((CreditReservation.campaign == campaign_id) & (CreditReservation.status == "active"))
        .execute()
    )
    if released:
        audit.record(
            actor,
            audit.Event(
                shop_id,
                "reservation",
                "released",
                "no batch received it: contacts left the audience, or listed ones were ineligible",
                campaign_id=campaign_id,
                to_status="active",
                amount=amount,
            ),
        )


def create_next(campaign_id: int, expected_cursor: int, settings: Settings, actor: Actor) -> bool:
    """`createRecipients`: one chunk, then admit its batches and publish what comes next (the
    next chunk, or the campaign's status update once the audience is wholly created, which
    finalises it if its batches all finished meanwhile). Returns whether a chunk was written."""
    chunk = write_chunk(campaign_id, expected_cursor, settings, actor)
    if chunk is None:
        return False
    log.info(
        "recipients created",
        extra={
            "campaign_id": campaign_id,
            "recipients": chunk.recipients,
            "batches": chunk.batches,
            "cursor": chunk.cursor,
            "done": chunk.done,
            "transaction_ms": round(chunk.seconds * 1000, 1),
        },
    )
    admission.admit_shop(chunk.shop_id, settings)
    if chunk.done:
        dispatch.publish_status_update(campaign_id)
    else:
        dispatch.publish_create_recipients(campaign_id, chunk.cursor)
    return True


def resume_stalled(settings: Settings) -> int:
    """Publish again the creation of every sending or paused campaign whose audience is not
    wholly created and whose last chunk is older than BATCH_STALE_AFTER_MS (its message was
    lost: a worker killed, Redis flushed, the broker down at the enqueue). Marked as progress
    first, so the next reconcile does not publish it again before it could run; a duplicate
    finds the cursor moved and does nothing."""
    rows = fetchall(
        "UPDATE campaign SET creation_progress_at = now()"
        " WHERE recipients_created_at IS NULL AND status IN ('sending', 'paused')"
        "   AND creation_progress_at < now() - %s * interval '1 millisecond'"
        " RETURNING id, creation_cursor",
        (settings.batch_stale_after_ms,),
    )
    for campaign_id, cursor in rows:
        dispatch.publish_create_recipients(campaign_id, cursor)
    if rows:
        log.info("recipient creation published again", extra={"campaigns": len(rows)})
    return len(rows)
