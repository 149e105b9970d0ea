"""The database handle: one pooled PostgreSQL connection per thread, bound at process start."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import peewee
import psycopg2
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extras import execute_values

db = peewee.DatabaseProxy()

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost to another
# one and was rolled back whole; run again, it normally goes through.
CONFLICTS = frozenset({"40P01", "40001"})
CONFLICT_ATTEMPTS = 3
T = TypeVar("T")


def is_conflict(error: BaseException) -> bool:
    """Whether `error` (psycopg2's, or Peewee's wrapping of it) is a deadlock or a
    serialization failure."""
    seen: BaseException | None = error
    for _ in range(3):  # Peewee's wrapper holds psycopg2's error as its first argument
        if seen is None:
            return False
        if getattr(seen, "pgcode", None) in CONFLICTS:
            return True
        first = seen.args[0] if seen.args else None
        seen = first if isinstance(first, BaseException) else seen.__context__
    return False


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
    """psycopg2 keyword arguments for a postgresql:// URL (socket directories allowed)."""
    parsed = urlparse(url)
    params: dict[str, Any] = {"database": unquote(parsed.path.lstrip("/")) or "postgres"}
    if parsed.hostname:
        params["host"] = parsed.hostname
    if parsed.port:
        params["port"] = parsed.port
    if parsed.username:
        params["user"] = unquote(parsed.username)
    if parsed.password:
        params["password"] = unquote(parsed.password)
    for pair in filter(None, parsed.query.split("&")):
        key, _, value = pair.partition("=")
        params[key] = unquote(value)
    return params


def bind(url: str, max_connections: int = 20) -> PooledPostgresqlDatabase:
    """Point the shared proxy at `url`. Connections are pooled and recycled after 5 minutes."""
    params = connect_params(url)
    database = PooledPostgresqlDatabase(
        params.pop("database"),
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
