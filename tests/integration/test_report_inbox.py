"""The webhook's signal to the report applier (debounced in Redis) and the clock's fallback."""

from __future__ import annotations

import dataclasses
import json

import psycopg2
import redis

from models.database import execute, fetchall
from scheduler import jobs
from service import audit, delivery, report_inbox
from service.infra import logs
from tests.e2e.stack import queued_messages

DELAYED = "delivery-status-update.DQ"  # where the Redis broker keeps delayed messages


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_reports_publishes_one_applier_message_per_window(db, redis_client, settings):
    # Given the webhook's signal with a 10 s window (so this test cannot outrun it)
    slow = dataclasses.replace(settings, report_apply_delay_ms=10_000)
    clock = Clock()
    signal = report_inbox.ApplierSignal(redis_client, slow, clock=clock)
    other_process = report_inbox.ApplierSignal(redis_client, slow, clock=clock)

    # When reports arrive in two web processes within the window
    published = [signal.after_commit(), signal.after_commit(), other_process.after_commit()]

    # Then one applier message was published, delayed by the window
    assert published == [True, False, False]
    assert queued_messages(DELAYED) == 1
    assert 9_000 < redis_client.pttl(report_inbox.APPLY_SIGNAL_KEY) <= 10_000

    # When the window is over (the key gone) and a report arrives, Then another is published
    redis_client.delete(report_inbox.APPLY_SIGNAL_KEY)
    clock.now += 10.001
    assert signal.after_commit() is True
    assert queued_messages(DELAYED) == 2


def test_a_process_skips_redis_while_a_run_is_known_to_be_due(db, redis_client, settings):
    # Given a signal that has just published (the key lives 10 s)
    slow = dataclasses.replace(settings, report_apply_delay_ms=10_000)
    clock = Clock()
    signal = report_inbox.ApplierSignal(redis_client, slow, clock=clock)
    assert signal.after_commit()

    # When the key is gone early (as after a FLUSHDB) but this process's window is not over
    redis_client.delete(report_inbox.APPLY_SIGNAL_KEY)
    clock.now += 5

    # Then it sends nothing to Redis (the run it published starts after its window anyway)
    assert signal.after_commit() is False
    assert not redis_client.exists(report_inbox.APPLY_SIGNAL_KEY)


def test_a_signal_with_redis_down_is_logged_not_raised(db, settings, caplog):
    # Given Redis unreachable
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    signal = report_inbox.ApplierSignal(dead, settings)

    # When a report's signal is sent, Then the webhook goes on (the clock's refresh applies it)
    assert signal.after_commit() is False
    assert "signalling the report applier failed" in caplog.text
    # And in one line naming the error: an outage is no bug, a traceback per report would
    # flood the log while it lasts
    (record,) = [r for r in caplog.records if "signalling" in r.getMessage()]
    line = json.loads(logs.JsonFormatter("web").format(record))
    assert "exc" not in line and line["error"].startswith("ConnectionError"), line


def test_the_clock_publishes_the_applier_only_while_reports_wait(db, settings):
    # Given no stored report, Then the refresh publishes no applier
    assert jobs.refresh_statuses(settings, audit.ADMIN)["applier"] is False
    assert queued_messages("delivery-status-update") == 0

    # Given a stored report nobody examined (its webhook's signal lost)
    report_inbox.store_reports([{"id": "lost-1", "deliveryStatus": "Delivered"}])

    # Then the refresh publishes the applier, and once it ran, no more
    assert jobs.refresh_statuses(settings, audit.ADMIN)["applier"] is True
    assert queued_messages("delivery-status-update") == 1
    run = report_inbox.apply_stored_reports(settings)
    assert (run.examined, run.applied) == (1, 0)  # no message has that id (yet)
    assert jobs.refresh_statuses(settings, audit.ADMIN)["applier"] is False


def test_the_applier_works_in_chunks_and_skips_what_another_applier_holds(db, settings):
    # Given five stored reports, two of them held by another applier's open transaction
    report_inbox.store_reports([{"id": f"p-{i}", "deliveryStatus": "Sent"} for i in range(5)])
    other = psycopg2.connect(settings.database_url)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM delivery_report WHERE id IN (1, 2) FOR UPDATE")

            # When this applier runs in chunks of two
            run = report_inbox.apply_stored_reports(settings, chunk=2)

            # Then it examined the three nobody held, and left the two held ones
            assert run.examined == 3
            assert unexamined_ids() == [1, 2]
        other.rollback()  # the other applier dies: its chunk is rolled back
    finally:
        other.close()

    # And the next run examines what the dead one left
    assert report_inbox.apply_stored_reports(settings, chunk=2).examined == 2
    assert unexamined_ids() == []


def unexamined_ids() -> list[int]:
    return [
        row[0]
        for row in fetchall("SELECT id FROM delivery_report WHERE examined_at IS NULL ORDER BY id")
    ]


def test_a_run_bounded_in_chunks_says_when_reports_may_remain(db, settings):
    report_inbox.store_reports([{"id": f"p-{i}", "deliveryStatus": "Sent"} for i in range(4)])
    first = report_inbox.apply_stored_reports(settings, chunk=2, max_chunks=1)
    assert (first.examined, first.more) == (2, True)
    second = report_inbox.apply_stored_reports(settings, chunk=3, max_chunks=1)
    assert (second.examined, second.more) == (2, False)


def test_a_chunk_rolled_back_for_a_deadlock_is_applied_again_and_counted_once(
    db, settings, monkeypatch
):
    # Given three stored reports, and an applier whose first try of the chunk loses a
    # deadlock (as against another applier on a neighbouring chunk)
    report_inbox.store_reports([{"id": f"p-{i}", "deliveryStatus": "Sent"} for i in range(3)])
    real = delivery.apply_reports
    tries = []

    def deadlocking_once(**kwargs):
        tries.append(kwargs)
        if len(tries) == 1:
            execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$")
        return real(**kwargs)

    monkeypatch.setattr(delivery, "apply_reports", deadlocking_once)

    # When it runs, Then the chunk is run again (before: the run failed, the chunk waiting
    # for the actor's retry) and counted once
    run = report_inbox.apply_stored_reports(settings)
    assert run.examined == 3 and len(tries) == 2
    assert unexamined_ids() == []
