"""What every benchmark shares: a fresh schema in its own database and an empty Redis db."""

from __future__ import annotations

import psycopg2
import redis


def reset(db_url: str, redis_url: str) -> None:
    """Create the benchmark's database if missing, migrate a fresh schema, empty its Redis db."""
    from models import database
    from models.migrate import migrate

    name = db_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(db_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    database.bind(db_url, 2)
    database.db.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    migrate()
    database.db.close()
    redis.Redis.from_url(redis_url).flushdb()
