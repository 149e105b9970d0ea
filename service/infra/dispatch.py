"""Publishing actor messages by name, so services and the web process need not import actors.

Callers publish only after their transaction has committed: a message must never name rows
that a rollback could take back. What Redis loses, the durable `send_batch` rows bring back."""
from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq import Message

SEND_QUEUE = "sms-send"
STATUS_QUEUE = "delivery-status-update"
QUEUES = (SEND_QUEUE, STATUS_QUEUE)


def broker_reachable() -> bool:
    """Whether the broker's Redis answers right now."""
    try:
        return bool(dramatiq.get_broker().client.ping())
    except redis.RedisError:
        return False


def publish(queue: str, actor_name: str, *args: Any, delay_ms: int | None = None) -> None:
    message = Message(queue_name=queue, actor_name=actor_name, args=args, kwargs={}, options={})
    dramatiq.get_broker().enqueue(message, delay=delay_ms)


def publish_batch(campaign_id: int, shop_id: int, recipient_ids: list[int],
                  delay_ms: int | None = None) -> None:
    publish(SEND_QUEUE, "sendBulkSMS", campaign_id, shop_id, recipient_ids, delay_ms=delay_ms)


def publish_persist(payload: dict[str, Any]) -> None:
    publish(SEND_QUEUE, "persistSmsResults", payload)


def publish_status_update(campaign_id: int) -> None:
    publish(STATUS_QUEUE, "updateCampaignStatus", campaign_id)
