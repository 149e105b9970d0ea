"""Dramatiq on RabbitMQ (BROKER_URL) against a real RabbitMQ: queue counts read from RabbitMQ,
publishing from many threads at once, a connection that died, and a RabbitMQ that is down."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest

from service import audit, campaigns, contacts, credits, shops
from service.enqueue import enqueue
from service.errors import BrokerUnavailable, DependencyUnavailable
from service.infra import dispatch
from service.infra.rabbitmq import RabbitmqQueueCounter, connection_url
from service.observability.health import HealthChecker
from tests.conftest import using_broker
from tests.e2e.stack import free_port, wait_for

pytestmark = pytest.mark.brokers("rabbitmq")


def test_queue_counts_come_from_rabbitmq(db, settings, redis_client, broker_url):
    # Given 4 messages published to sms-send and 2 delayed ones
    for n in range(4):
        dispatch.publish_batch(n, 1, [n])
    for n in range(2):
        dispatch.publish(dispatch.SEND_QUEUE, "sendBulkSMS", n, 1, [n], delay_ms=600_000)
    counter = RabbitmqQueueCounter(dramatiq.get_broker())
    assert counter.counts(dispatch.QUEUES)["sms-send"] == {
        "waiting": 4,
        "active": None,
        "delayed": 2,
        "failed": 0,
        "consumers": 0,
    }

    # When a consumer takes two of them and dead-letters one
    consumer = dramatiq.get_broker().consume(dispatch.SEND_QUEUE, prefetch=2, timeout=1000)
    taken = [next(consumer), next(consumer)]
    consumer.nack(taken[0])

    def dead_lettered() -> bool:
        consumer.connection.process_data_events(time_limit=0.1)  # the nack leaves the thread
        return counter.counts(dispatch.QUEUES)["sms-send"]["failed"] == 1

    wait_for(dead_lettered, 5, "RabbitMQ to dead-letter the message")

    # Then one failed, and what the consumer holds is not counted as waiting: it holds two
    # again (its prefetch took a third message), so one waits; how many are active is unknown
    counts = counter.counts(dispatch.QUEUES)
    assert counts["sms-send"] == {
        "waiting": 1,
        "active": None,
        "delayed": 2,
        "failed": 1,
        "consumers": 1,
    }
    assert counts["delivery-status-update"] == {
        "waiting": 0,
        "active": None,
        "delayed": 0,
        "failed": 0,
        "consumers": 0,
    }
    consumer.close()

    # ...and once the consumer is gone, /health/full counts what it held as waiting again,
    # with RabbitMQ as a dependency of its own
    checker = HealthChecker(dataclasses.replace(settings, broker_url=broker_url), redis_client)
    report = wait_for(
        lambda: (lambda r: r if r["queues"]["sms-send"]["waiting"] == 3 else None)(checker.full()),
        5,
        "the message the consumer held to come back",
    )
    assert report["dependencies"]["rabbitmq"] == "ok"


def test_workers_that_cannot_reach_rabbitmq_make_full_health_fail(
    db, settings, redis_client, broker_url
):
    # Given a worker registered for every queue (it announces itself in Redis) that has no
    # consumer at RabbitMQ (its BROKER_URL has a wrong password), and a batch waiting
    from service.observability import workers
    from tests.integration.test_observability import entry

    dispatch.publish_batch(1, 1, [1])
    checker = HealthChecker(dataclasses.replace(settings, broker_url=broker_url), redis_client)
    # (a worker just started: its consumers may still be connecting, no problem yet)
    workers.register(redis_client, entry(queues=dispatch.QUEUES))
    assert not any("no consumer is attached" in p for p in checker.full()["problems"])
    # When it has been up for a minute, and health is read
    workers.register(
        redis_client,
        dataclasses.replace(
            entry(queues=dispatch.QUEUES), started_at=datetime.now(UTC) - timedelta(minutes=1)
        ),
    )
    report = checker.full()
    # Then it is not ok, naming the queue with no consumer (it was ok: a live worker serves it)
    assert report["ok"] is False
    assert any(
        p.startswith("no consumer is attached to queue sms-send at the broker")
        for p in report["problems"]
    ), report["problems"]


def test_many_threads_publishing_at_once_each_get_a_connection_and_lose_nothing(db, broker_url):
    # Given 16 threads, as many as a web process's and a worker's threads together
    threads, each = 16, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def publish_many(offset: int) -> None:
        start.wait()
        try:
            for n in range(each):
                dispatch.publish_batch(offset * each + n, 1, [n])
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    # When they all publish at the same moment
    workers = [threading.Thread(target=publish_many, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    # Then every publish was confirmed and every message is in the queue, once
    assert errors == []
    counts = RabbitmqQueueCounter(dramatiq.get_broker()).counts([dispatch.SEND_QUEUE])
    assert counts[dispatch.SEND_QUEUE]["waiting"] == threads * each
    # ...because each thread published on a connection of its own (pika's is not thread-safe)
    assert len(dramatiq.get_broker().connections) >= threads


def test_a_connection_that_died_is_replaced_on_the_next_publish(db, broker_url):
    # Given this thread's connection, closed under the broker's feet (RabbitMQ restarted, or
    # dropped it for missed heartbeats while the thread was idle)
    broker = dramatiq.get_broker()
    dispatch.publish_status_update(1)
    broker.connection.close()

    # When the thread publishes again, and asks whether RabbitMQ answers
    dispatch.publish_status_update(2)

    # Then both messages are queued and RabbitMQ is reachable
    assert dispatch.broker_reachable()
    counts = RabbitmqQueueCounter(broker).counts([dispatch.STATUS_QUEUE])
    assert counts[dispatch.STATUS_QUEUE]["waiting"] == 2


def test_a_rabbitmq_that_is_down_is_named_and_nothing_is_started(db, settings, redis_client):
    # Given BROKER_URL naming a RabbitMQ that does not answer, and a draft campaign
    shop, _ = shops.create_shop("down.example", "Down")
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": "+306900000001"}], actor=audit.ADMIN)
    campaign = campaigns.create(shop.id, "c", "Hello there", append_unsubscribe=False)
    port = free_port()
    with using_broker(settings, f"amqp://guest:secret-pw@127.0.0.1:{port}/") as down:
        checker = HealthChecker(down, redis_client)

        # Then readiness names RabbitMQ, and only RabbitMQ, without its address
        assert checker.readiness() == {
            "ok": False,
            "down": ["rabbitmq"],
            "reason": "rabbitmq is down",
        }
        # ...health says why, with Redis still read
        report = checker.full()
        assert report["ok"] is False and report["dependencies"]["redis"] == "ok"
        assert report["queues"] == {"error": report["dependencies"]["rabbitmq"]}
        assert any(p.startswith("rabbitmq is down") for p in report["problems"])
        assert "secret-pw" not in str(report)
        # ...a publish is a 503's error, and launching a campaign changes nothing
        with pytest.raises(BrokerUnavailable):
            dispatch.publish_status_update(campaign.id)
        with pytest.raises(DependencyUnavailable, match="RabbitMQ is unreachable"):
            enqueue(shop.id, campaign.id, down, audit.ADMIN)
    assert campaigns.get(shop.id, campaign.id).status == "draft"


def test_the_connection_url_gets_timeouts_unless_it_sets_its_own():
    assert connection_url("amqp://u:p@h:5672/%2Fv") == (
        "amqp://u:p@h:5672/%2Fv?socket_timeout=5&blocked_connection_timeout=10"
    )
    assert connection_url("amqp://h/?socket_timeout=1") == (
        "amqp://h/?socket_timeout=1&blocked_connection_timeout=10"
    )
