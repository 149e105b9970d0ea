"""The Dramatiq broker (Redis), configured from settings in one place."""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from service.config import Settings


def setup_broker(settings: Settings) -> RedisBroker:
    """Create the Redis broker with explicit timeouts and make it Dramatiq's global broker."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    broker = RedisBroker(
        url=settings.redis_url,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        dead_message_ttl=settings.broker_dead_message_ttl_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )
    dramatiq.set_broker(broker)
    return broker
