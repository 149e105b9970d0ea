"""`updateCampaignStatus` on queue `delivery-status-update`."""

from __future__ import annotations

import logging

import dramatiq

from actors import settings
from service import audit, delivery
from service.infra import dispatch

log = logging.getLogger("astronote.actors.status")


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
