"""Contact imports read and written in a child process of the web's (`api/import_processes.py`):
on real processes, the work off the web process's GIL and at a lower priority, what refuses a
body whole arriving as it was raised, and a child that dies or stops costing only time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import falcon
import pytest

from api import contact_import, import_processes
from api.contact_import import Upload, merged
from models import database
from models.database import execute, fetchall
from service import contacts, shops
from service.audit import Actor
from service.errors import InvalidInput
from tests.conftest import SECRET_KEY

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def children():
    import_processes.configure(1)
    yield
    import_processes.shutdown()
    import_processes.configure(0)


def json_upload(body: bytes) -> Upload:
    return Upload(False, body, None, None)


def test_an_import_is_read_in_a_child_at_a_lower_priority(children):
    # When an import is read, and the child is asked its pid and niceness
    rows = import_processes.run(
        merged,
        json_upload(b'{"contacts": [{"phone": "+306912345678"}, {"phone": "12"}, {}]}'),
        NOW,
    )
    child = import_processes.run(os.getpid)
    niceness = import_processes.run(os.nice, 0)

    # Then the rows come back merged, the bad ones by index, from another process, niced
    assert [row[0] for row in rows.contacts] == ["+306912345678"]
    assert [(index, field) for index, field, _ in rows.invalid] == [(1, "phone"), (2, "phone")]
    assert child != os.getpid()
    assert niceness == min(os.nice(0) + import_processes.NICENESS, 19)  # the kernel's cap


def test_what_refuses_a_body_whole_arrives_as_it_was_raised(children):
    # A malformed body: falcon's error, with its title and description (which falcon's errors
    # lose when pickled as they are)
    with pytest.raises(falcon.HTTPError) as malformed:
        import_processes.run(merged, json_upload(b'{"contacts": [}'), NOW)
    assert malformed.value.status == falcon.HTTP_400
    assert malformed.value.title == "Malformed JSON"
    assert malformed.value.description
    # A body of the wrong shape, and a CSV without a phone column: the domain's 422, its field
    with pytest.raises(InvalidInput) as shape:
        import_processes.run(merged, json_upload(b'{"contacts": {}}'), NOW)
    assert shape.value.field == "contacts"
    with pytest.raises(InvalidInput, match="phone"):
        import_processes.run(merged, Upload(True, b"name\nAnn\n", None, None), NOW)


def test_a_child_that_dies_costs_the_import_nothing_and_the_next_gets_a_new_child(children, caplog):
    # Given a child that has read an import
    first = import_processes.run(os.getpid)
    # When it is killed (the kernel's OOM killer, an operator)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(first, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    # Then the next import is still read (in the request, this once), and the one after in a
    # new child
    rows = import_processes.run(
        merged, json_upload(b'{"contacts": [{"phone": "+306912345678"}]}'), NOW
    )
    assert [row[0] for row in rows.contacts] == ["+306912345678"]
    # (the log names the work run in the request: an import, or a campaign's large body)
    assert "died; running merged in the request" in caplog.text
    second = import_processes.run(os.getpid)
    assert second not in (first, os.getpid())


def test_with_none_configured_an_import_is_read_in_the_request():
    import_processes.configure(0)
    assert import_processes.run(os.getpid) == os.getpid()


def test_a_child_that_does_not_answer_is_killed_and_the_import_read_in_the_request(
    children, monkeypatch, caplog
):
    # Given a child stopped (SIGSTOP: it neither answers nor dies), and a short wait for it
    stopped = started_child(monkeypatch, 1.0)
    os.kill(stopped, signal.SIGSTOP)
    try:
        # When imports are read, more than the children's queue holds
        began = time.monotonic()
        answers = in_threads(
            lambda n: import_processes.run(
                merged, json_upload(b'{"contacts": [{"phone": "+30691234567%d"}]}' % n), NOW
            ),
            4,
        )
        # Then each is answered once the wait is over, read in the request (none lost with
        # the children's queue, which is cancelled)
        assert sorted(row[0] for rows in answers for row in rows.contacts) == [
            f"+30691234567{n}" for n in range(4)
        ]
        assert time.monotonic() - began < 10
        assert "(stopped or stuck); running merged in the request" in caplog.text
        # And the stopped child is killed, and the next import gets a new one (given the
        # usual wait: a new child takes about a second to start)
        assert wait_gone(stopped)
        monkeypatch.setattr(import_processes, "CHILD_WAIT_S", 60.0)
        assert import_processes.run(os.getpid) not in (stopped, os.getpid())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)


def started_child(monkeypatch, wait_s: float) -> int:
    """The children's pid, once started (which may take seconds on a busy machine: the wait
    for them is shortened only after), and a wait of `wait_s` for them from then on."""
    child = import_processes.run(os.getpid)
    assert child != os.getpid()
    monkeypatch.setattr(import_processes, "CHILD_WAIT_S", wait_s)
    return child


def in_threads(call, count: int) -> list:
    """`call(n)` for each n < `count`, at once on threads of their own (each an importing
    request): their values, or the first error raised."""
    values: list = [None] * count
    errors: list = []

    def one(n: int) -> None:
        try:
            values[n] = call(n)
        except BaseException as error:
            errors.append(error)
        finally:
            if database.db.obj is not None:  # a request's connection, when it ran in one
                database.db.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    return values


def wait_gone(pid: int, seconds: float = 10) -> bool:
    """Whether `pid` is dead (gone, or a zombie not yet reaped) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def writing_children(settings, db):
    import_processes.configure(1, settings)
    yield
    import_processes.shutdown()
    import_processes.configure(0)


def import_in_child(shop_id: int, body: str | bytes):
    upload = json_upload(body.encode() if isinstance(body, str) else body)
    return import_processes.run(
        contact_import.imported, shop_id, upload, NOW, SECRET_KEY, Actor.key(1)
    )


def test_an_import_is_written_by_its_child(writing_children, monkeypatch):
    # Given a shop, and this process's own writing of imports broken
    shop, _ = shops.create_shop("child-writes.example", "C")

    def not_here(*args, **kwargs):
        raise AssertionError("the import was written in the web process")

    monkeypatch.setattr(contacts, "store_merged", not_here)
    monkeypatch.setattr(contact_import, "store_merged", not_here)
    # When an import runs through the children
    result = import_in_child(
        shop.id, b'{"contacts": [{"phone": "+306912345678"}, {"phone": "+306912345679"}, {}]}'
    )
    # Then the child wrote it, and answered what it did
    assert (result.created, result.updated) == (2, 0)
    assert [row["index"] for row in result.invalid] == [2]
    stored = fetchall("SELECT phone FROM contact WHERE shop_id = %s ORDER BY phone", (shop.id,))
    assert stored == [("+306912345678",), ("+306912345679",)]
    # And the second time, the same rows are updated
    again = import_in_child(shop.id, b'{"contacts": [{"phone": "+306912345678"}]}')
    assert (again.created, again.updated) == (0, 1)


# The numbers of `SLOW_NUMBER`'s import wait 1.5 s in the database each time they are written.
SLOW_NUMBER = "+306912345670"
SLOW_WRITE = (
    "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$;"
    " CREATE TRIGGER slow_write BEFORE INSERT ON contact FOR EACH ROW"
    f" WHEN (NEW.phone = '{SLOW_NUMBER}') EXECUTE FUNCTION slow_write()"
)


def test_a_child_stopped_in_its_transaction_is_killed_and_the_import_written_once(
    writing_children, monkeypatch
):
    # Given a shop whose import waits in the database (a trigger), and a short wait for children
    shop, _ = shops.create_shop("child-stopped.example", "C")
    child = started_child(monkeypatch, 3.0)
    execute(SLOW_WRITE)
    body = json.dumps({"contacts": [{"phone": SLOW_NUMBER}, {"phone": "+306912345671"}]})
    try:
        began = time.monotonic()
        importing = threading.Thread(
            target=lambda: answers.extend(in_threads(lambda _: import_in_child(shop.id, body), 1))
        )
        answers: list = []
        importing.start()
        # When the child is stopped inside its transaction (its rows written, locked and not
        # committed: the trigger holds the statement)
        assert wait_until(lambda: sleeping_in_the_database() == 1)
        os.kill(child, signal.SIGSTOP)
        importing.join(30)
        # Then the import is answered once the wait is over, run again in the request: the
        # killed child's transaction rolled back, its locks released, the rows written once
        assert not importing.is_alive()
        assert time.monotonic() - began < 15
        assert wait_gone(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)
        execute("DROP TRIGGER slow_write ON contact; DROP FUNCTION slow_write()")
    (result,) = answers
    assert (result.created, result.updated) == (2, 0)
    count = fetchall("SELECT count(*) FROM contact WHERE shop_id = %s", (shop.id,))
    assert count == [(2,)]


def test_imports_queued_behind_slow_ones_do_not_get_their_child_killed(
    writing_children, monkeypatch
):
    # Given imports that take 1.5 s each in the database (a trigger), children that may go
    # 2.5 s without answering, and three shops importing at once (each waits for the others)
    child = started_child(monkeypatch, 2.5)
    shop_ids = [shops.create_shop(f"queued-{n}.example", "Q")[0].id for n in range(3)]
    execute(SLOW_WRITE)
    try:
        # When they import
        results = in_threads(
            lambda n: import_in_child(
                shop_ids[n], json.dumps({"contacts": [{"phone": SLOW_NUMBER}]})
            ),
            3,
        )
    finally:
        execute("DROP TRIGGER slow_write ON contact; DROP FUNCTION slow_write()")
    # Then each is written, by the same child: the last waited 4.5 s, but the child answered
    # every 1.5 s, so it was not taken for stuck
    assert [(result.created, result.updated) for result in results] == [(1, 0)] * 3
    assert import_processes.run(os.getpid) == child


def sleeping_in_the_database() -> int:
    return fetchall(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        " AND datname = current_database()"
    )[0][0]


def wait_until(condition, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def raises_timeout() -> None:
    raise TimeoutError("the child's own")


def test_a_timeout_raised_in_the_child_is_its_error_not_a_stuck_child(children):
    child = import_processes.run(os.getpid)
    with pytest.raises(TimeoutError, match="the child's own"):
        import_processes.run(raises_timeout)
    assert import_processes.run(os.getpid) == child


def pid_after(noted: str, seconds: float) -> int:
    """In a child: its pid, written to `noted` at once (whole: renamed into place) and
    answered after `seconds`."""
    Path(f"{noted}.{os.getpid()}").write_text(str(os.getpid()))
    os.replace(f"{noted}.{os.getpid()}", noted)
    time.sleep(seconds)
    return os.getpid()


def test_a_child_stopped_with_an_import_while_its_sibling_answers_others_is_killed(
    monkeypatch, tmp_path
):
    # Given two children, both started, and a short wait for them
    import_processes.configure(2)
    try:
        noted = tmp_path / "pid"
        # (each busy long enough for the other to start: a second or so)
        first = in_threads(lambda n: import_processes.run(pid_after, str(noted), 2.5), 2)
        assert len(set(first)) == 2 and os.getpid() not in first
        monkeypatch.setattr(import_processes, "CHILD_WAIT_S", 2.0)
        # When one child takes an import and is stopped, while the other answers imports of
        # other shops every 0.1 s
        slow: list = []
        importing = threading.Thread(
            target=lambda: slow.append(import_processes.run(pid_after, str(noted), 3.0))
        )
        noted.unlink()
        importing.start()
        assert wait_until(noted.exists)
        stopped = int(noted.read_text())
        os.kill(stopped, signal.SIGSTOP)
        try:
            began, answered = time.monotonic(), 0
            while importing.is_alive() and time.monotonic() - began < 15:
                import_processes.run(os.getpid)
                answered += 1
                time.sleep(0.1)
            # Then the stopped child's import is answered once its wait is over (run in the
            # request), though the children answered meanwhile
            assert not importing.is_alive(), f"still waiting after {answered} other answers"
            assert slow == [os.getpid()]
            assert wait_gone(stopped)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
            importing.join(10)
    finally:
        import_processes.shutdown()
        import_processes.configure(0)
