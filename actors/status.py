"""`updateCampaignStatus`, `applyDeliveryReports` and `createRecipients` on queue
`delivery-status-update`."""

from __future__ import annotations

import logging

import dramatiq

from actors import settings
from service import audit, creation, delivery, report_inbox
from service.infra import dispatch

log = logging.getLogger("astronote.actors.status")

# 20 chunks of 5,000 reports: seconds of work, far below Dramatiq's 10-minute time limit.
APPLY_RUN_CHUNKS = 20


@dramatiq.actor(
    actor_name="updateCampaignStatus",
    queue_name=dispatch.STATUS_QUEUE,
    max_retries=20,
    min_backoff=500,
    max_backoff=30_000,
)
def update_campaign_status(campaign_id: int) -> None:
    status = delivery.refresh_campaign(campaign_id, settings, audit.WORKER)
    if status:
        log.info("campaign finished", extra={"campaign_id": campaign_id, "status": status})


@dramatiq.actor(
    actor_name="applyDeliveryReports",
    queue_name=dispatch.STATUS_QUEUE,
    max_retries=20,
    min_backoff=200,
    max_backoff=10_000,
)
def apply_delivery_reports() -> None:
    """Every stored report not yet examined (the webhook publishes this, debounced; the clock's
    refresh too while any waits). Idempotent: a retry or a duplicate finds less to do. A run
    stops after APPLY_RUN_CHUNKS chunks and publishes the next, so no run nears the actor's
    time limit however long reports keep coming."""
    run = report_inbox.apply_stored_reports(settings, max_chunks=APPLY_RUN_CHUNKS)
    if run.more:
        dispatch.publish_apply_reports()
    if run.examined:
        log.info(
            "delivery reports applied",
            extra={"examined": run.examined, "applied": run.applied, "resolved": run.resolved},
        )


@dramatiq.actor(
    actor_name="createRecipients",
    queue_name=dispatch.STATUS_QUEUE,
    max_retries=20,
    min_backoff=500,
    max_backoff=30_000,
)
def create_recipients(campaign_id: int, cursor: int) -> None:
    """One chunk of a campaign's recipients after `cursor` (`service.creation`); publishes the
    next. A retry or a duplicate finds the cursor moved and does nothing."""
    creation.create_next(campaign_id, cursor, settings, audit.WORKER)
