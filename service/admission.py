"""Fair admission (SPEC 12): which of the durable `send_batch` rows reach the send queue.

The send queue is one FIFO for every shop. Publishing a campaign's batches all at once put a
shop's 1,000,000-recipient campaign (2,000 batches) ahead of every other shop's campaign
enqueued a second later: that shop waited for all of them. So a batch is published only when
admitted: each shop has at most `SHOP_BATCHES_IN_FLIGHT` batches of its `sending` campaigns
published and not finished (queued, or being sent), the rest wait as `pending` rows in
PostgreSQL, oldest first. The queue then holds at most that many batches of any shop, and a
shop that starts sending is at most that many batches per busy shop away from its first call.

A batch whose recipients all wait for quiet hours to end is parked: `pending` again, with its
opening (`not_before`), so it holds no place in the queue (32 parked batches of Tokyo numbers
had kept a shop's campaign to New York from sending for 38 minutes) and is admitted again,
within the bound, once its opening comes (`due`).

A shop's batches are admitted when it enqueues or resumes, whenever one of its batches ends a
delivery (a place may have freed), and by the clock's reconcile for every shop with batches
waiting (a trigger lost to a crash or a broker outage). Admission of one shop is serialised
by a transaction-scoped advisory lock, so two processes admitting at once never exceed the
bound; the batches are published inside the transaction that marks them, so a broker that
fails leaves them `pending` (the next admission publishes them) rather than marked but never
sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from peewee import fn

from models import Campaign, SendBatch
from models.database import db, execute
from models.expressions import milliseconds_ago
from service.infra import clock, dispatch
from service.infra.config import Settings

log = logging.getLogger("astronote.admission")

# First key of the two-key advisory lock `pg_advisory_xact_lock(ADMISSION_LOCK, shop_id)`.
ADMISSION_LOCK = 0x61646D74  # "admt"


def due(settings: Settings, now: datetime | None = None) -> Any:
    """A `pending` batch that may be admitted now: one never published, or one parked until
    its recipients' quiet hours end (`service.windows`, `park`) whose opening has come (on the
    clock of `service.infra.clock`), or that was last admitted QUIET_HOURS_RECHECK_MS ago (a
    shop's changed quiet hours or time zone are read again)."""
    now = now or clock.for_settings(settings).now()
    return (
        (SendBatch.waiting == 0)
        | SendBatch.not_before.is_null()
        | (SendBatch.not_before <= now)
        | (SendBatch.published_at <= milliseconds_ago(settings.quiet_hours_recheck_ms))
    )


def _batches_of_sending_campaigns(shop_id: int, state: str):
    return (
        SendBatch.select(SendBatch.id, SendBatch.campaign, SendBatch.recipient_ids)
        .join(Campaign, on=(Campaign.id == SendBatch.campaign))
        .where(
            Campaign.shop == shop_id,
            Campaign.status == "sending",
            SendBatch.state == state,
        )
    )


def admit_shop(shop_id: int, settings: Settings, now: datetime | None = None) -> int:
    """Publish the shop's oldest waiting batches until it has `shop_batches_in_flight`
    published and unfinished; returns how many were published. A broker failure is logged
    and leaves them waiting (0)."""
    try:
        with db.atomic():
            execute("SELECT pg_advisory_xact_lock(%s, %s)", (ADMISSION_LOCK, shop_id))
            moment = now or clock.for_settings(settings).now()
            in_flight = _batches_of_sending_campaigns(shop_id, "published").count()
            room = settings.shop_batches_in_flight - in_flight
            if room <= 0:
                return 0
            # Batches never published, or whose opening has come, before the rechecks of
            # batches still waiting for theirs: a recheck takes a place only when nothing
            # that can send wants it.
            recheck = (SendBatch.waiting > 0) & (SendBatch.not_before > moment)
            waiting = (
                _batches_of_sending_campaigns(shop_id, "pending")
                .where(due(settings, moment))
                .order_by(recheck.asc(), SendBatch.id)
                .limit(room)
            )
            admitted = list(
                SendBatch.update(
                    state="published",
                    published_at=fn.now(),
                    publish_count=SendBatch.publish_count + 1,
                )
                .where(SendBatch.id.in_(waiting.select(SendBatch.id)))
                .returning(SendBatch.campaign, SendBatch.recipient_ids)
                .tuples()
            )
            for campaign_id, recipient_ids in admitted:
                dispatch.publish_batch(campaign_id, shop_id, recipient_ids)
    except dispatch.PUBLISH_ERRORS:
        log.warning(
            "publishing batches failed; they wait for the next admission",
            exc_info=True,
            extra={"shop_id": shop_id},
        )
        return 0
    return len(admitted)


def shops_waiting(settings: Settings) -> list[int]:
    """Shops with batches of a `sending` campaign waiting for admission and due."""
    return list(
        Campaign.select(Campaign.shop)
        .join(SendBatch, on=(SendBatch.campaign == Campaign.id))
        .where(Campaign.status == "sending", SendBatch.state == "pending", due(settings))
        .distinct()
        .scalars()
    )


def admit_waiting(settings: Settings) -> int:
    """Admit every shop with batches waiting (the clock's repair, and what wakes batches
    parked for quiet hours); returns batches published."""
    return sum(admit_shop(shop_id, settings) for shop_id in shops_waiting(settings))
