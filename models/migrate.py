"""Versioned migrations: `models/migrations/NNNN_name.sql`, each applied once, in order.

An advisory lock serialises concurrent `astronote migrate` runs (two release phases at once);
the `schema_migration` table records what was applied, so running it twice changes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.database import db

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_ID = 7_202_611  # arbitrary, constant: the advisory lock all migrators agree on

log = logging.getLogger("astronote.migrate")


def available() -> list[tuple[str, Path]]:
    return sorted((path.stem, path) for path in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate() -> list[str]:
    """Apply every migration not yet applied; return the versions applied now."""
    applied_now: list[str] = []
    with db.atomic():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        db.execute_sql(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in db.execute_sql("SELECT version FROM schema_migration")}
        for version, path in available():
            if version in done:
                continue
            db.execute_sql(path.read_text())
            db.execute_sql("INSERT INTO schema_migration (version) VALUES (%s)", (version,))
            applied_now.append(version)
    log.info("migrations applied", extra={"applied": applied_now})
    return applied_now
