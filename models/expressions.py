"""SQL expressions the services' Peewee queries share, where Peewee has no word for them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peewee import SQL, ColumnBase, NodeList, Value, fn


def any_of(ids: Iterable[int]) -> ColumnBase:
    """`= ANY(%s::bigint[])` with the ids bound as one array: a list of any length is one
    parameter (a campaign's contact ids come by the hundred thousand), not one placeholder per
    value. The list is bound as it is: the compared field's converter would turn it into one
    scalar. The cast matters: psycopg2 writes small integers as an `integer[]`, and `bigint =
    ANY(integer[])` was read as a filter over every row of the shop, not an index probe per
    id (a probe: 20,000 contact ids on a shop of 150,000 contacts took 27-64 s to check, 45 ms
    cast)."""
    return fn.ANY(
        NodeList((Value(list(ids), converter=False, unpack=False), SQL("::bigint[]")), glue="")
    )


def epoch_seconds(moment: Any) -> ColumnBase:
    """`extract(epoch FROM moment)`: seconds since 1970 of a timestamp, or in an interval."""
    return fn.EXTRACT(NodeList((SQL("epoch FROM"), moment)))


def milliseconds_ago(milliseconds: int) -> ColumnBase:
    """Database time (`now()`, the transaction's start) minus `milliseconds`: thresholds are
    measured on the database's clock, never this process's."""
    return fn.now() - Value(milliseconds) * SQL("interval '1 millisecond'")


def audience_created() -> ColumnBase:
    """A campaign whose recipients all exist, so it may be finalised: its last creation chunk
    was written, or it was never created in chunks (`creation_until` NULL: enqueued by a
    process older than migration 0010, during a rolling deploy, which created every recipient
    in its enqueue and set neither column; without this it would stay `sending` for ever)."""
    from models import Campaign

    return Campaign.recipients_created_at.is_null(False) | Campaign.creation_until.is_null()
