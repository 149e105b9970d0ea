"""Health's building blocks against real Redis and PostgreSQL: queue counts from the broker's
own keys, worker registrations that expire, and the reasons `/health/full` gives."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dramatiq
import pytest
import redis

from service.infra import dispatch
from service.infra.queues import QueueCounter
from service.observability import workers
from service.observability.health import HealthChecker


def entry(holder: str = "host-a:1", queues=("sms-send",)) -> workers.WorkerEntry:
    return workers.WorkerEntry(holder, list(queues), 4, 2, "broker-id", datetime.now(UTC))


@pytest.mark.brokers("redis")  # on RabbitMQ: tests/integration/test_rabbitmq.py
def test_queue_counts_come_from_the_brokers_keys_in_one_script(
    db, settings, redis_client, broker_url
):
    # Given 4 messages published to sms-send and 2 delayed ones
    for n in range(4):
        dispatch.publish_batch(n, 1, [n])
    for n in range(2):
        dispatch.publish(dispatch.SEND_QUEUE, "sendBulkSMS", n, 1, [n], delay_ms=600_000)
    counter = QueueCounter(redis_client, settings.broker_heartbeat_timeout_ms)
    assert counter.counts(dispatch.QUEUES)["sms-send"] == {
        "waiting": 4,
        "active": 0,
        "delayed": 2,
        "failed": 0,
        "orphaned": 0,
    }

    # When a consumer takes two of them and dead-letters one
    consumer = dramatiq.get_broker().consume(dispatch.SEND_QUEUE, prefetch=2, timeout=100)
    taken = [next(consumer), next(consumer)]
    consumer.nack(taken[0])

    # Then one is active (taken, not acknowledged), one failed, two still wait
    counts = counter.counts(dispatch.QUEUES)
    assert counts["sms-send"] == {
        "waiting": 2,
        "active": 1,
        "delayed": 2,
        "failed": 1,
        "orphaned": 0,
    }
    assert counts["delivery-status-update"] == dict.fromkeys(
        ("waiting", "active", "delayed", "failed", "orphaned"), 0
    )
    consumer.close()


def test_a_worker_that_stops_refreshing_disappears_after_its_ttl(db, redis_client):
    # Given a worker registered with a 300 ms TTL
    workers.register(redis_client, entry(), ttl_ms=300)
    (live,) = workers.live_workers(redis_client)
    assert (live["holder"], live["host"], live["pid"]) == ("host-a:1", "host-a", 1)
    assert live["queues"] == ["sms-send"] and live["threads"] == 4 and live["processes"] == 2

    # When it is not refreshed past its TTL
    time.sleep(0.4)

    # Then it is gone, and so is its index entry
    assert workers.live_workers(redis_client) == []
    assert redis_client.smembers(workers.INDEX_KEY) == set()


def test_presence_registers_only_while_the_worker_threads_live(db, redis_client):
    # Given a worker whose threads are alive
    alive = {"threads": True}
    presence = workers.Presence(
        redis_client, lambda: entry() if alive["threads"] else None, refresh_ms=50, ttl_ms=300
    )
    presence.start()
    assert len(workers.live_workers(redis_client)) == 1

    # When its threads die (the process lingers)
    alive["threads"] = False
    time.sleep(0.5)

    # Then it is no longer listed; a graceful stop removes it at once
    assert workers.live_workers(redis_client) == []
    alive["threads"] = True
    time.sleep(0.1)
    assert len(workers.live_workers(redis_client)) == 1
    presence.stop()
    assert workers.live_workers(redis_client) == []


def test_full_health_names_each_problem(db, settings, redis_client):
    # Given no worker, no clock, and a campaign sending without progress for an hour
    db.execute_sql("INSERT INTO shop (domain, name) VALUES ('h.example', 'H')")
    db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text, status, started_at,"
        " last_progress_at) SELECT id, 'c', 't', 'sending', now() - interval '2 h',"
        " now() - interval '1 h' FROM shop"
    )
    checker = HealthChecker(settings, redis_client)

    # Then health is not ok, with one reason for each
    report = checker.full()
    assert report["ok"] is False
    assert report["problems"][0].startswith("no live worker process: nothing consumes sms-send")
    assert any(
        problem.startswith("no scheduler leader: no clock process is registered")
        for problem in report["problems"]
    )
    assert report["problems"][-1].startswith("1 campaign(s) stuck in sending")
    assert report["campaigns"]["stuck"][0]["idle_ms"] >= 3_600_000
    assert report["campaigns"]["by_status"] == {"sending": 1}

    # When a worker consumes only sms-send
    workers.register(redis_client, entry(queues=("sms-send",)))

    # Then the other queue is named
    assert (
        "no live worker consumes queue delivery-status-update (0 messages waiting)"
        in (checker.full()["problems"])
    )
    assert checker.readiness() == {"ok": True, "down": []}


def test_readiness_names_a_dependency_that_is_down_and_nothing_else(db, settings):
    # Given a Redis that does not answer, at an address that must not leak (host, port, DSN)
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    checker = HealthChecker(settings, client)

    # When readiness is asked (a public endpoint)
    report = checker.readiness()

    # Then it names Redis, and carries neither the error nor the address
    assert report == {"ok": False, "down": ["redis"], "reason": "redis is down"}


def test_a_campaign_paused_for_long_is_listed_but_does_not_make_health_fail(
    db, settings, redis_client
):
    # Given a campaign paused two days ago, one paused just now, and a live worker
    db.execute_sql("INSERT INTO shop (domain, name) VALUES ('p.example', 'P')")
    db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text, status, updated_at)"
        " SELECT id, 'old', 't', 'paused', now() - interval '2 days' FROM shop"
    )
    db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text, status)"
        " SELECT id, 'new', 't', 'paused' FROM shop"
    )
    workers.register(redis_client, entry(queues=dispatch.QUEUES))
    checker = HealthChecker(settings, redis_client)

    # When full health is read (PAUSED_CAMPAIGN_ALERT_MS: a day by default)
    report = checker.full()

    # Then the old one is listed with how long it has been paused, and no problem is added
    (old,) = report["campaigns"]["long_paused"]
    assert old["paused_ms"] >= 2 * 86_400_000 and old["shop_id"] == 1
    assert report["campaigns"]["long_paused_count"] == 1
    assert report["campaigns"]["paused_alert_after_ms"] == settings.paused_campaign_alert_ms
    assert not [problem for problem in report["problems"] if "pause" in problem]
