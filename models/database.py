"""The database handle: one pooled PostgreSQL connection per thread, bound at process start."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extras import execute_values

db = peewee.DatabaseProxy()


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
    return (
        execute_values(cursor, sql, rows, template=template, page_size=page_size, fetch=fetch) or []
    )
