"""Fixtures: real PostgreSQL and Redis (TEST_DATABASE_URL / TEST_REDIS_URL, else embedded
servers under ./var/test), a clean schema per session and clean tables per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from models import database
from models.migrate import migrate
from service.infra import broker, config

ROOT = Path(__file__).resolve().parent.parent
# The processes' secrets, as long as the configuration requires (SECRET_KEY 32 characters,
# ADMIN_TOKEN and DLR_WEBHOOK_SECRET 24) and unlike anything else a log could hold.
SECRET_KEY = "test-secret-key-5d1f0c2b9e8a4f7b6c3d2e1f0a9b8c7d"
ADMIN_TOKEN = "test-admin-token-8c4e2a7f1b9d3e6a"
DLR_WEBHOOK_SECRET = "test-dlr-secret-3b7e9a1c5d2f8e4b"
MITTO_API_KEY = "test-mitto-api-key-6f2a8d4c1e9b"
SHOPIFY_API_SECRET = "test-shopify-secret-9d4b7e2a6c1f8e3b5a0d"
TABLES = ("job_run", "message_log", "credit_transaction", "credit_reservation", "delivery_report",
          "campaign_recipient", "send_batch", "short_link", "campaign", "suppression",
          "consent_event", "inbound_message", "inbound_reply", "data_export",
          "contact", "api_key", "shop")


@pytest.fixture(scope="session")
def service_urls():
    """(database URL, redis URL) the tests and the processes they start share."""
    db_url, redis_url = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    servers = None
    if not db_url or not redis_url:
        from astronote import embedded

        servers = embedded.start(ROOT / "var" / "test", not db_url, not redis_url)
        db_url, redis_url = db_url or servers.database_url, redis_url or servers.redis_url
    yield db_url, redis_url
    if servers:
        servers.close()


def process_environment(service_urls, **overrides: str) -> dict[str, str]:
    """The environment of a process under test (also read by the test process itself)."""
    db_url, redis_url = service_urls
    env = {
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET, "SECRET_KEY": SECRET_KEY,
        "MITTO_API_KEY": MITTO_API_KEY, "MITTO_SENDER": "Astronote",
        "SHOPIFY_API_SECRET": SHOPIFY_API_SECRET,
        # On (the code path runs in every test) but out of the way of tests that send
        # hundreds of requests a second; tests/api/test_keys_limits.py sets a low one.
        "API_RATE_LIMIT": "5000/second",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def settings(service_urls):
    loaded = config.load(process_environment(service_urls))
    config.override(loaded)
    return loaded


@pytest.fixture(scope="session")
def schema(settings):
    database.bind(settings.database_url, 10)
    with database.db.atomic():
        database.db.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    migrate()
    broker.setup_broker(settings)
    return database.db


@pytest.fixture(scope="session")
def redis_client(settings):
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture
def db(schema, redis_client):
    """A clean database and an empty Redis for each test."""
    schema.execute_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    redis_client.flushdb()
    yield schema
    if not schema.is_closed():
        schema.close()
