"""Processes that announce themselves in Redis with a short TTL (workers, clocks).

Each announcement is a hash at its own key that expires unless refreshed; a set indexes the
keys so readers never scan the keyspace. A member whose key has expired is a dead process and
is dropped by the reader.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis


def announce(
    client: redis.Redis, index_key: str, key: str, entry: Mapping[str, object], ttl_ms: int
) -> None:
    """Announce (or refresh) one process; it disappears `ttl_ms` after its last announcement."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={name: str(value) for name, value in entry.items()})
        pipe.pexpire(key, ttl_ms)
        pipe.sadd(index_key, key)
        pipe.execute()


def withdraw(client: redis.Redis, index_key: str, key: str) -> None:
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.srem(index_key, key)
        pipe.execute()


def live_entries(client: redis.Redis, index_key: str) -> list[dict[str, str]]:
    """The decoded announcement of every process still within its TTL, ordered by key."""
    keys = sorted(_text(member) for member in client.smembers(index_key))
    if not keys:
        return []
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        entries = pipe.execute()
    dead = [key for key, entry in zip(keys, entries) if not entry]
    if dead:
        client.srem(index_key, *dead)
    return [{k.decode(): v.decode() for k, v in entry.items()} for entry in entries if entry]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
