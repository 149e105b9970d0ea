"""`astronote migrate` is idempotent: a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import peewee as pw
import pytest

from models import Shop
from models.migrate import available, migrate
from service import shops
from service.errors import InvalidInput


def test_migrate_twice_applies_nothing_the_second_time(db, settings):
    # Given the schema the session fixture migrated
    applied = {row[0] for row in db.execute_sql("SELECT version FROM schema_migration")}
    assert applied == {version for version, _ in available()}

    # When migrations run again, in-process and as the release process does
    assert migrate() == []
    release = subprocess.run(
        [sys.executable, "-m", "astronote", "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": settings.database_url},
    )

    # Then nothing was applied and the schema is unchanged
    assert release.returncode == 0, release.stderr
    assert "none (schema up to date)" in release.stdout
    assert {row[0] for row in db.execute_sql("SELECT version FROM schema_migration")} == applied


def test_shop_domains_that_differ_only_in_case_stop_the_migration_naming_them(db):
    # Given two shops whose domains differ only in case, as the schema before 0013 allowed
    migration = dict(available())["0013_shop_domain_case"].read_text()
    with db.atomic() as transaction:
        db.execute_sql("DROP INDEX shop_domain_lower_key")
        first, _ = shops.create_shop("case.example", "lower")
        second, _ = shops.create_shop("other.example", "upper")
        db.execute_sql("UPDATE shop SET domain = 'Case.Example' WHERE id = %s", (second.id,))

        # When 0013 runs, then it refuses, naming both shops, and changes nothing
        with pytest.raises(pw.DatabaseError) as refused:
            with db.atomic():
                db.execute_sql(migration)
        assert f"case.example (shop {first.id}), Case.Example (shop {second.id})" in str(
            refused.value
        )

        # And without the clash it lowers the domains the old schema kept as written
        db.execute_sql("UPDATE shop SET domain = 'gone.example' WHERE id = %s", (first.id,))
        db.execute_sql(migration)
        assert shops.by_domain("CASE.EXAMPLE").id == second.id
        assert Shop.get_by_id(second.id).domain == "case.example"
        transaction.rollback()


def test_a_domain_is_one_shop_whatever_its_case(db):
    shop, _ = shops.create_shop("Mixed.MyShopify.com", "mixed")
    assert shop.domain == "mixed.myshopify.com"
    with pytest.raises(InvalidInput) as refused:
        shops.create_shop("MIXED.myshopify.com", "again")
    assert refused.value.field == "domain"
    assert shops.by_domain(" MIXED.MYSHOPIFY.COM ").id == shop.id
