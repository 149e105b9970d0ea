"""The webhook's own PostgreSQL connection (`OwnConnection`): reports committed on return, and a
connection that died is replaced at the next write instead of failing every write after it."""

from __future__ import annotations

import psycopg2
import pytest

from models.database import fetchall
from service.report_writer import OwnConnection


def report(provider_id: str) -> dict:
    return {"id": provider_id, "deliveryStatus": "Delivered"}


def test_a_dead_connection_fails_one_write_and_the_next_connects_again(settings, db):
    # Given a writer that has written once
    writer = OwnConnection(settings.database_url)
    assert len(writer.write([report("a")])) == 1
    backend = writer._connection.get_backend_pid()

    # When PostgreSQL ends its connection (a restart, an idle timeout)
    fetchall("SELECT pg_terminate_backend(%s)", (backend,))

    # Then the next write fails (the webhook answers it 503) ...
    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
        writer.write([report("b")])
    # ... and the one after is written on a new connection, committed at once
    assert len(writer.write([report("c")])) == 1
    assert writer._connection.get_backend_pid() != backend
    assert [row[0] for row in fetchall("SELECT provider_id FROM delivery_report ORDER BY id")] == [
        "a",
        "c",
    ]
    writer.close()
