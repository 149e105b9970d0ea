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


ADMIN_TOKEN = "bench-admin-token-0123456789"
DLR_SECRET = "bench-dlr-secret-0123456789"


def stack_env(db_url: str, redis_url: str, **settings: str) -> dict[str, str]:
    """The environment every benchmark's stack shares (its database and Redis, the secrets, a
    stand-in provider key, 64 provider calls in flight per worker process), with `settings`
    added or overriding."""
    return {
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLR_WEBHOOK_SECRET": DLR_SECRET,
        "SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "MITTO_API_KEY": "bench",
        "SEND_CONCURRENCY": "64",
        "LOG_LEVEL": "WARNING",
        **settings,
    }
