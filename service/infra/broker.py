"""The Dramatiq broker (Redis), configured from settings in one place."""
from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from service.infra.config import Settings


def setup_broker(settings: Settings) -> RedisBroker:
    """Create the Redis broker with explicit timeouts and make it Dramatiq's global broker."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    # Timeouts: a Redis that stops answering must fail a publish (the reconciler republishes
    # from PostgreSQL), not hold a web thread forever.
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10,
                                  socket_connect_timeout=5)
    broker = RedisBroker(
        client=client,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        dead_message_ttl=settings.broker_dead_message_ttl_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )
    dramatiq.set_broker(broker)
    return broker
