"""`astronote migrate` is idempotent: a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from models.migrate import available, migrate


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
