"""The database handle: one pooled PostgreSQL connection per thread, bound at process start."""

from __future__ import annotations

import functools
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import peewee
import psycopg2
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extensions import parse_dsn
from psycopg2.extras import execute_values

db = peewee.DatabaseProxy()

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost to another
# one and was rolled back whole; run again, it normally goes through.
CONFLICTS = frozenset({"40P01", "40001"})
CONFLICT_ATTEMPTS = 3
LOCK_NOT_AVAILABLE = "55P03"
# A session left idle inside a transaction this long is ended by PostgreSQL, its locks with it:
# a frozen or vanished process (a host cut off mid-persist) otherwise held its rows until TCP
# noticed, about 2 h, and every claim, persist and clock job that met them waited as long.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 300_000
# TCP keepalives, so that a connection to a vanished peer is noticed in about a minute, and a
# connection attempt to an unreachable host given up after 10 s (libpq waits without end by
# default: the clock's check that the database answers would hold its election loop). A DSN's
# own values win.
CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    # Data sent and not acknowledged for 30 s (a peer gone silent mid-statement) fails the
    # connection; keepalives alone do not fire while data waits (about 15 minutes).
    "tcp_user_timeout": "30000",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
T = TypeVar("T")


def pgcode(error: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of `error` (psycopg2's, or Peewee's wrapping of it), if any."""
    seen: BaseException | None = error
    for _ in range(3):
        if seen is None:
            return None
        code = getattr(seen, "pgcode", None)
        if code:
            return code
        # Peewee's wrapper keeps psycopg2's error as `orig`, the one link that survives
        # pickling (an import's error, raised in its child process: `api/import_processes.py`);
        # otherwise the error being handled when this one was raised.
        first = getattr(seen, "orig", None) or (seen.args[0] if seen.args else None)
        seen = first if isinstance(first, BaseException) else seen.__context__
    return None


def is_conflict(error: BaseException) -> bool:
    """Whether `error` is a deadlock or a serialization failure."""
    return pgcode(error) in CONFLICTS


def is_lock_timeout(error: BaseException) -> bool:
    """Whether `error` is a lock not granted within `lock_timeout` (the clock's sessions)."""
    return pgcode(error) == LOCK_NOT_AVAILABLE


def retry_conflicts(run: Callable[..., T]) -> Callable[..., T]:
    """Run `run` (which opens its own transaction) again when PostgreSQL rolled it back for a
    deadlock or a serialization failure, up to CONFLICT_ATTEMPTS times, after a short random
    pause. Only as the outermost transaction: inside another, the rollback was the caller's."""

    @functools.wraps(run)
    def retried(*args: Any, **kwargs: Any) -> T:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return run(*args, **kwargs)
            except (peewee.DatabaseError, psycopg2.Error) as error:
                if attempt == CONFLICT_ATTEMPTS or db.in_transaction() or not is_conflict(error):
                    raise
            # Apart, so the two sides do not meet again at once (the web thread's request
            # waits: no worker thread runs this).
            time.sleep(random.uniform(0.02, 0.1) * attempt)
        raise AssertionError("unreachable")

    return retried


def connect_params(url: str) -> dict[str, Any]:
    """psycopg2 keyword arguments for a PostgreSQL URL or key=value DSN, as libpq reads it
    (socket directories and options allowed), with a connect timeout and TCP keepalives
    unless it sets its own."""
    given = parse_dsn(url)
    # The DSN itself, so that libpq reads it whole (a `service=`, a missing dbname defaulting
    # to the user's); `dbname=None` keeps Peewee from adding its own (psycopg2 drops a None).
    return {
        "dsn": url,
        "dbname": None,
        **{name: value for name, value in CONNECTION_DEFAULTS.items() if name not in given},
    }


class SessionPool(PooledPostgresqlDatabase):
    """The pool, each new connection given the session's settings once (`SET`, not a startup
    option, which a connection pooler in front of PostgreSQL may refuse)."""

    def __init__(self, database: str, session: dict[str, str], **kwargs: Any) -> None:
        self.session = session
        self.prepared: weakref.WeakSet = weakref.WeakSet()
        self.preparing = threading.Lock()
        super().__init__(database, **kwargs)

    def _initialize_connection(self, conn: Any) -> None:
        with self.preparing:
            if conn in self.prepared:
                return
        with conn.cursor() as cursor:  # Peewee's connections are in autocommit
            for name, value in self.session.items():
                cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
        with self.preparing:
            self.prepared.add(conn)


def bind(
    url: str, max_connections: int = 20, lock_timeout_ms: int | None = None
) -> PooledPostgresqlDatabase:
    """Point the shared proxy at `url`. Connections are pooled and recycled after 5 minutes.
    `lock_timeout_ms`: a statement waiting longer for a lock fails (the clock's jobs: one
    shop's rows held must not stop every shop's launch)."""
    params = connect_params(url)
    # Peewee's name for the database: shown, never used to connect (the DSN is).
    shown = parse_dsn(url).get("dbname") or "(libpq's default)"
    session = {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS)}
    if lock_timeout_ms:
        session["lock_timeout"] = str(lock_timeout_ms)
    database = SessionPool(
        shown,
        session,
        max_connections=max_connections,
        stale_timeout=300,
        timeout=30,
        autoconnect=True,
        **params,
    )
    db.initialize(database)
    return database


@contextmanager
def planned_on_indexes() -> Iterator[None]:
    """Inside a transaction: plan the statements run here without sequential scans
    (`SET LOCAL enable_seqscan = off`, back to the default after them; a failure rolls the
    transaction and the setting back together). For per-batch statements keyed by primary key
    whose plan must not depend on the table's statistics: on a young table never analysed, the
    planner estimated one matching row and joined a whole-table scan with the batch's 500 ids
    as a nested loop, about 1 s per statement at 12,000 rows (bench/RESULTS.md)."""
    execute("SET LOCAL enable_seqscan = off")
    yield
    execute("SET LOCAL enable_seqscan TO DEFAULT")


@contextmanager
def planned_for_a_long_list() -> Iterator[None]:
    """Plan the statements run here as hash joins and hash aggregates, with room to hash a long
    list in memory; the session's own settings after them. For statements joining a stored list
    of ids (`unnest(contact_ids)`): the planner estimates any `unnest` of a stored array at 10
    rows, and for a list of 1,000,000 ids chose a nested loop of index lookups (1.6 s), sorted
    1,000,000 rows on disk to group them, and split a hash of them into 8 batches
    (bench/RESULTS.md, "A counted list, joined in PostgreSQL"). In a parallel plan each process
    hashes the list: up to three hashes of `work_mem` x `hash_mem_multiplier` for one count."""
    with db.atomic():  # SET LOCAL does nothing outside a transaction
        settings = {"enable_nestloop": "off", "enable_sort": "off", "work_mem": "64MB"}
        before = {name: fetchall("SELECT current_setting(%s)", (name,))[0][0] for name in settings}
        for name, value in settings.items():
            execute("SELECT set_config(%s, %s, true)", (name, value))
        yield
        for name, value in before.items():
            execute("SELECT set_config(%s, %s, true)", (name, value))


@contextmanager
def connection() -> Iterator[None]:
    """Hold a pooled connection for the duration (middleware for web requests and actors)."""
    db.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if not db.is_closed() and not db.in_transaction():
            db.close()


def fetchall(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
    """Run raw SQL (bulk statements Peewee cannot express) and return every row."""
    cursor = db.execute_sql(sql, params)
    return cursor.fetchall() if cursor.description else []


def fetchone(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple | None:
    cursor = db.execute_sql(sql, params)
    return cursor.fetchone() if cursor.description else None


def execute(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
    """Run raw SQL and return the number of rows it touched."""
    return db.execute_sql(sql, params).rowcount


def execute_many(
    sql: str,
    rows: Sequence[Sequence[Any]],
    template: str | None = None,
    fetch: bool = False,
    page_size: int = 1000,
) -> list[tuple]:
    """`INSERT/UPDATE ... VALUES %s` over many rows in few round trips (psycopg2 execute_values)."""
    if not rows:
        return []
    cursor = db.cursor()
    # Errors as Peewee raises them for every other statement (IntegrityError, ...).
    with peewee.__exception_wrapper__:
        return (
            execute_values(cursor, sql, rows, template=template, page_size=page_size, fetch=fetch)
            or []
        )
