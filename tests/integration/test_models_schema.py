"""The Peewee models match the migrated schema (the migrations are the schema of record).

A migration that adds, drops, retypes or changes the nullability of a column, or creates a table,
fails here until `models/__init__.py` follows; the last test shows the comparison catches each
kind of drift.
"""

from __future__ import annotations

from collections import Counter

import peewee as pw
import pytest
from playhouse.postgres_ext import ArrayField, DateTimeTZField

import models
from models import database
from models.database import fetchone

# information_schema.columns.data_type of each Peewee field type (`Field.field_type`, which for
# a foreign key is its target's type and for an array its element's).
COLUMN_TYPES = {
    "AUTO": "integer",
    "BIGAUTO": "bigint",
    "INT": "integer",
    "BIGINT": "bigint",
    "SMALLINT": "smallint",
    "BOOL": "boolean",
    "TEXT": "text",
    "VARCHAR": "character varying",
    "TIMESTAMPTZ": "timestamp with time zone",
    "DATETIME": "timestamp without time zone",
    "JSON": "json",
    "JSONB": "jsonb",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "DECIMAL": "numeric",
    "UUID": "uuid",
    "BLOB": "bytea",
    "DATE": "date",
}
BOOKKEEPING = {"schema_migration"}  # models/migrate.py's own table


def model_columns(model: type[pw.Model]) -> dict[str, tuple[str, bool]]:
    """{column: (data type, nullable)} as the model declares them."""
    columns = {}
    for field in model._meta.sorted_fields:
        data_type = COLUMN_TYPES.get(field.field_type, f"unmapped {field.field_type}")
        if isinstance(field, ArrayField):
            data_type += "[]" * field.dimensions
        columns[field.column_name] = (data_type, bool(field.null))
    return columns


def model_primary_key(model: type[pw.Model]) -> list[str]:
    key = model._meta.primary_key
    if isinstance(key, pw.CompositeKey):
        return [model._meta.fields[name].column_name for name in key.field_names]
    return [key.column_name] if key else []


def table_columns(db: pw.Database, table: str) -> dict[str, tuple[str, bool]]:
    """{column: (data type, nullable)} of the table in the database; arrays as `element[]`."""
    rows = db.execute_sql(
        "SELECT c.column_name,"
        "       CASE WHEN c.data_type = 'ARRAY' THEN e.data_type || '[]' ELSE c.data_type END,"
        "       c.is_nullable = 'YES'"
        " FROM information_schema.columns c"
        " LEFT JOIN information_schema.element_types e"
        "   ON e.object_catalog = c.table_catalog AND e.object_schema = c.table_schema"
        "  AND e.object_name = c.table_name AND e.object_type = 'TABLE'"
        "  AND e.collection_type_identifier = c.dtd_identifier"
        " WHERE c.table_schema = 'public' AND c.table_name = %s",
        (table,),
    )
    return {name: (data_type, nullable) for name, data_type, nullable in rows}


def table_primary_key(db: pw.Database, table: str) -> list[str]:
    rows = db.execute_sql(
        "SELECT k.column_name FROM information_schema.table_constraints t"
        " JOIN information_schema.key_column_usage k"
        "   ON k.constraint_schema = t.constraint_schema AND k.constraint_name = t.constraint_name"
        " WHERE t.table_schema = 'public' AND t.table_name = %s"
        "   AND t.constraint_type = 'PRIMARY KEY'"
        " ORDER BY k.ordinal_position",
        (table,),
    )
    return [row[0] for row in rows]


def schema_differences(db: pw.Database, model: type[pw.Model]) -> list[str]:
    """Every way `model` disagrees with its table in the database (empty when they match)."""
    table = model._meta.table_name
    declared, actual = model_columns(model), table_columns(db, table)
    if not actual:
        return [f"{table}: no such table"]
    differences = [
        f"{table}.{name}: in the model, not in the table"
        for name in sorted(declared.keys() - actual.keys())
    ]
    differences += [
        f"{table}.{name}: in the table, not in the model"
        for name in sorted(actual.keys() - declared.keys())
    ]
    for name in sorted(declared.keys() & actual.keys()):
        (model_type, model_null), (table_type, table_null) = declared[name], actual[name]
        if model_type != table_type:
            differences.append(f"{table}.{name}: model type {model_type}, table {table_type}")
        if model_null != table_null:
            differences.append(f"{table}.{name}: model null={model_null}, table {table_null}")
    if model_primary_key(model) != table_primary_key(db, table):
        differences.append(
            f"{table}: model primary key {model_primary_key(model)},"
            f" table {table_primary_key(db, table)}"
        )
    return differences


@pytest.mark.parametrize("model", models.ALL, ids=lambda model: model.__name__)
def test_each_model_matches_its_migrated_table(db, model):
    # Given the schema the migrations created
    # When the model's fields are compared with information_schema
    differences = schema_differences(db, model)

    # Then they agree column for column
    assert differences == []


def test_every_table_has_exactly_one_model(db):
    # Given the tables the migrations created
    tables = {
        row[0]
        for row in db.execute_sql(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    } - BOOKKEEPING

    # When they are matched with the models (every model is listed in models.ALL)
    declared = Counter(model._meta.table_name for model in models.ALL)
    assert set(models.Base.__subclasses__()) == set(models.ALL)

    # Then each table has one model and each model a table
    assert sorted(declared) == sorted(tables)
    assert [table for table, count in declared.items() if count > 1] == []


def test_a_model_that_disagrees_with_its_migration_is_reported(db):
    # Given a model of `shop` that drifted every way a model can
    class DriftedShop(pw.Model):
        domain = pw.TextField(unique=True)
        name = pw.TextField(null=True)  # NOT NULL in the table
        credit_balance = pw.IntegerField()  # bigint in the table
        timezone = pw.TextField()
        created_at = DateTimeTZField()
        logo_url = pw.TextField(null=True)  # no such column
        contact_ids = ArrayField(pw.IntegerField, index=False)  # no such column either
        help_text = pw.TextField(null=True)
        require_consent = pw.BooleanField()
        quiet_start = pw.SmallIntegerField(null=True)
        quiet_end = pw.SmallIntegerField(null=True)
        frequency_cap = pw.IntegerField(null=True)
        # `id` is an AutoField (integer, the table's is bigint); `sender` is missing

        class Meta:
            database = models.db
            table_name = "shop"

    class KeylessJobRun(pw.Model):
        job = pw.TextField()
        slot = pw.BigIntegerField()
        epoch = pw.BigIntegerField()
        holder = pw.TextField()
        started_at = DateTimeTZField()
        finished_at = DateTimeTZField(null=True)
        ok = pw.BooleanField(null=True)
        result = pw.TextField(null=True)  # jsonb in the table
        # the primary key is (job, slot), not a surrogate `id`

        class Meta:
            database = models.db
            table_name = "job_run"

    class MissingTable(pw.Model):
        class Meta:
            database = models.db
            table_name = "no_such_table"

    # When it is compared with the table
    differences = schema_differences(db, DriftedShop)

    # Then each disagreement is named, and a table that does not exist is too
    assert differences == [
        "shop.contact_ids: in the model, not in the table",
        "shop.logo_url: in the model, not in the table",
        "shop.sender: in the table, not in the model",
        "shop.credit_balance: model type integer, table bigint",
        "shop.id: model type integer, table bigint",
        "shop.name: model null=True, table False",
    ]
    assert schema_differences(db, KeylessJobRun) == [
        "job_run.id: in the model, not in the table",
        "job_run.result: model type text, table jsonb",
        "job_run: model primary key ['id'], table ['job', 'slot']",
    ]
    assert schema_differences(db, MissingTable) == ["no_such_table: no such table"]


def test_pooled_sessions_end_when_left_idle_in_a_transaction_and_the_clock_waits_for_no_lock(
    settings,
):
    # Given the pool every process binds, and the clock's, bound with its lock timeout
    for lock_timeout_ms, expected_lock_timeout in ((None, "0"), (10_000, "10s")):
        pool = database.bind(settings.database_url, 2, lock_timeout_ms)
        try:
            with pool.connection_context():
                # Then a session idle in a transaction (a frozen process) is ended in 5
                # minutes, its locks released, and the clock's statements wait 10 s at most
                # for a lock (one shop's held rows stopped every shop's launch)
                assert fetchone("SHOW idle_in_transaction_session_timeout") == ("5min",)
                assert fetchone("SHOW lock_timeout") == (expected_lock_timeout,)
        finally:
            pool.close_all()
    database.bind(settings.database_url, 10)
