"""The Dramatiq broker, configured from settings in one place: Redis (REDIS_URL) unless
BROKER_URL names a RabbitMQ (`service.infra.rabbitmq`)."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker

from service.infra.config import Settings


def setup_broker(settings: Settings) -> Broker:
    """Create the broker with explicit timeouts and make it Dramatiq's global broker.
    Nothing connects here: each thread connects when it first publishes or consumes."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    broker: Broker
    if settings.broker_url:
        from service.infra import rabbitmq  # pika only where RabbitMQ is used

        broker = rabbitmq.create_broker(settings.broker_url, settings.broker_dead_message_ttl_ms)
    else:
        broker = redis_broker(settings)
    dramatiq.set_broker(broker)
    return broker


def redis_broker(settings: Settings) -> RedisBroker:
    # Timeouts: a Redis that stops answering must fail a publish (the reconciler republishes
    # from PostgreSQL), not hold a web thread forever.
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    return RedisBroker(
        client=client,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        dead_message_ttl=settings.broker_dead_message_ttl_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )
