"""A transaction PostgreSQL rolls back for a deadlock or a serialization failure is run again
(`models.database.retry_conflicts`). Two imports of the same numbers lock them in one order
and no longer deadlock."""

from __future__ import annotations

import threading

import pytest

from models import database
from models.database import execute, is_conflict, retry_conflicts
from service import audit, contacts, shops

DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = 'deadlock_detected'; END $$"


def test_a_transaction_that_lost_a_deadlock_is_run_again(db):
    attempts: list[int] = []

    @retry_conflicts
    def write() -> str:
        with db.atomic():
            attempts.append(1)
            execute("CREATE TEMP TABLE IF NOT EXISTS conflict_probe (n int)")
            execute("INSERT INTO conflict_probe VALUES (1)")
            if len(attempts) == 1:
                execute(DEADLOCK)
        return "done"

    assert write() == "done" and len(attempts) == 2
    # The first attempt's insert was rolled back with it
    assert db.execute_sql("SELECT count(*) FROM conflict_probe").fetchone() == (1,)


def test_inside_a_callers_transaction_it_is_not_retried_and_other_errors_never_are(db):
    calls: list[int] = []

    @retry_conflicts
    def lose() -> None:
        calls.append(1)
        with db.atomic():
            execute(DEADLOCK)

    with pytest.raises(Exception) as raised, db.atomic():
        lose()
    assert is_conflict(raised.value) and len(calls) == 1

    @retry_conflicts
    def broken() -> None:
        calls.append(1)
        execute("SELECT 1/0")

    with pytest.raises(Exception) as raised:
        broken()
    assert not is_conflict(raised.value) and len(calls) == 2


def test_two_imports_of_the_same_numbers_in_opposite_orders_do_not_deadlock(db, monkeypatch):
    # (one attempt each: a deadlock must not happen, not merely be retried away)
    monkeypatch.setattr(database, "CONFLICT_ATTEMPTS", 1)
    shop, _ = shops.create_shop("orders.example", "Orders")
    phones = [f"+3069123{n:05d}" for n in range(3000)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(order: list[str]) -> None:
        try:
            start.wait()
            with db.connection_context():
                contacts.import_contacts(shop.id, [{"phone": p} for p in order], actor=audit.ADMIN)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(order,)) for order in (phones, phones[::-1])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert db.execute_sql(
        "SELECT count(*) FROM contact WHERE shop_id = %s", (shop.id,)
    ).fetchone() == (3000,)
