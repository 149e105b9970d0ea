"""Publishing actor messages by name, so services and the web process need not import actors.

Callers publish only after their transaction has committed: a message must never name rows
that a rollback could take back. What the broker loses (Redis, or RabbitMQ with BROKER_URL),
the durable `send_batch` rows bring back."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import BrokerConnectionError

from service.errors import BrokerUnavailable

SEND_QUEUE = "sms-send"
STATUS_QUEUE = "delivery-status-update"
# Single messages a merchant waits for (test sends): a queue of their own, which no shop's
# bulk backlog is in front of, consumed by every worker alongside the send queue.
PRIORITY_QUEUE = "sms-priority"
QUEUES = (SEND_QUEUE, PRIORITY_QUEUE, STATUS_QUEUE)
# What a failed publish raises: the Redis broker's own errors, or BrokerUnavailable (a 503,
# like a lost Redis) for RabbitMQ, after Dramatiq's retries on new connections.
PUBLISH_ERRORS = (redis.RedisError, BrokerUnavailable)


def broker_reachable() -> bool:
    """Whether the broker (Redis, or RabbitMQ with BROKER_URL) answers right now."""
    broker = dramatiq.get_broker()
    if isinstance(broker, RedisBroker):
        try:
            return bool(broker.client.ping())
        except redis.RedisError:
            return False
    from service.infra import rabbitmq

    return rabbitmq.reachable(broker)  # type: ignore[arg-type]  # a RabbitmqBroker here


def publish(queue: str, actor_name: str, *args: Any, delay_ms: int | None = None) -> None:
    message: Message[Any] = Message(
        queue_name=queue, actor_name=actor_name, args=args, kwargs={}, options={}
    )
    try:
        dramatiq.get_broker().enqueue(message, delay=delay_ms)
    except BrokerConnectionError as error:
        raise BrokerUnavailable("RabbitMQ is unreachable; the message was not published") from error


def publish_batch(
    campaign_id: int, shop_id: int, recipient_ids: list[int], delay_ms: int | None = None
) -> None:
    publish(SEND_QUEUE, "sendBulkSMS", campaign_id, shop_id, recipient_ids, delay_ms=delay_ms)


def publish_test_send(test_send_id: int, delay_ms: int | None = None) -> None:
    publish(PRIORITY_QUEUE, "sendTestSMS", test_send_id, delay_ms=delay_ms)


def publish_test_send_persist(test_send_id: int, provider_id: str) -> None:
    publish(PRIORITY_QUEUE, "persistTestSend", test_send_id, provider_id)


def publish_reply(
    message_key: str, sender: str, to: str, text: str, attempt: int, delay_ms: int | None
) -> None:
    publish(
        PRIORITY_QUEUE,
        "sendInboundReply",
        message_key,
        sender,
        to,
        text,
        attempt,
        delay_ms=delay_ms,
    )


def publish_create_recipients(campaign_id: int, cursor: int) -> None:
    # On the short queue, not behind the send queue's batches: the next chunk must be written
    # before the batches of the last one are sent, or the send waits for its own audience.
    publish(STATUS_QUEUE, "createRecipients", campaign_id, cursor)


def publish_persist(payload: dict[str, Any]) -> None:
    publish(SEND_QUEUE, "persistSmsResults", payload)


def publish_status_update(campaign_id: int) -> None:
    publish(STATUS_QUEUE, "updateCampaignStatus", campaign_id)


def publish_apply_reports(delay_ms: int | None = None) -> None:
    publish(STATUS_QUEUE, "applyDeliveryReports", delay_ms=delay_ms)
