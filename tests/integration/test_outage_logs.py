"""Which database errors a log writes in one line (an outage) and which in full (a bug), on
real PostgreSQL: peewee raises both as OperationalError."""

from __future__ import annotations

import peewee
import pytest

from models.database import db
from service.infra import logs
from tests.unit.test_logs import line_for


def raised(statement: str) -> BaseException:
    with pytest.raises(peewee.DatabaseError) as caught:
        with db.atomic():
            db.execute_sql(statement)
    return caught.value


def test_a_statement_timeout_is_logged_in_full_not_as_an_outage(db):
    # A statement's own error (a timeout, a deadlock) names its cause in the detail, which the
    # one-line form dropped (a deadlock's processes and relation)
    error = raised("SET LOCAL statement_timeout = 1; SELECT pg_sleep(1)")
    assert isinstance(error, peewee.OperationalError)
    assert not logs.is_outage(error)
    entry = line_for(error)
    assert "canceling statement" in entry["exc"] and "error" not in entry, entry


def test_a_terminated_session_is_an_outage_in_one_line(db):
    # (PostgreSQL restarted, or the session terminated by an operator: 57P01)
    (pid,) = db.execute_sql("SELECT pg_backend_pid()").fetchone()
    with pytest.raises(peewee.OperationalError) as caught:
        db.execute_sql(f"SELECT pg_terminate_backend({pid})")
    error = caught.value
    assert logs.is_outage(error)
    entry = line_for(error)
    assert "exc" not in entry and entry["error"].startswith("OperationalError"), entry
