"""The webhook's own PostgreSQL connection (`OwnConnection`): reports committed on return, and a
connection that died is replaced within the write that finds it, and a write stuck behind a lock
fails rather than hold its thread."""

from __future__ import annotations

import time

import psycopg2
import pytest

from models.database import fetchall
from service.report_writer import OwnConnection


def report(provider_id: str) -> dict:
    return {"id": provider_id, "deliveryStatus": "Delivered"}


def test_a_dead_connection_is_replaced_within_the_write_that_finds_it(settings, db):
    # Given a writer that has written once
    writer = OwnConnection(settings.database_url)
    assert len(writer.write([report("a")])) == 1
    backend = writer._connection.get_backend_pid()

    # When PostgreSQL ends its connection (a restart, a failover, an idle timeout)
    fetchall("SELECT pg_terminate_backend(%s)", (backend,))

    # Then the next write is not failed (no 503 for a database that is up): it is written
    # on a new connection, committed at once, once
    assert len(writer.write([report("b")])) == 1
    assert writer._connection.get_backend_pid() != backend
    assert len(writer.write([report("c")])) == 1
    assert [row[0] for row in fetchall("SELECT provider_id FROM delivery_report ORDER BY id")] == [
        "a",
        "b",
        "c",
    ]
    writer.close()


def test_a_write_stuck_behind_a_lock_fails_instead_of_holding_the_thread(settings, db, monkeypatch):
    # Given a writer whose statements may take 300 ms at most
    monkeypatch.setattr("service.report_writer.WRITE_TIMEOUT_MS", 300)
    writer = OwnConnection(settings.database_url)

    # When another transaction holds the reports' table locked
    started = time.monotonic()
    with db.atomic():
        db.execute_sql("LOCK TABLE delivery_report IN ACCESS EXCLUSIVE MODE")
        # Then the write fails after its timeout (the webhook answers 503, the provider
        # posts again), not when the lock is released
        with pytest.raises(psycopg2.errors.QueryCanceled):
            writer.write([report("a")])
        assert time.monotonic() - started < 3
    # And the next write goes through
    assert len(writer.write([report("b")])) == 1
    writer.close()
