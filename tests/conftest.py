"""Fixtures: real PostgreSQL and Redis (TEST_DATABASE_URL / TEST_REDIS_URL, else embedded
servers under ./var/test), a clean schema per session and clean tables per test.

Brokers: by default every process, the test process included, runs on the session's broker:
Redis, or TEST_BROKER_URL=amqp://... (RabbitMQ; its queues are purged with each test). A test
marked `@pytest.mark.brokers("redis", "rabbitmq")` runs once on each, whatever TEST_BROKER_URL
says; `@pytest.mark.brokers("redis")` pins a test that is about the Redis broker itself. The
`broker_url` fixture gives the test's BROKER_URL and, for the test's duration, makes the test
process publish through that broker too (the reconciler run in process, a batch published by
hand). Its RabbitMQ is TEST_BROKER_URL when that is amqp://, else TEST_RABBITMQ_URL (default:
the local guest account). When it does not answer, the RabbitMQ runs are skipped with the
reason; under CI (CI=true: .ci/run starts RabbitMQ) they fail instead."""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from api import import_processes
from models import database
from models.migrate import migrate
from service.infra import broker, config, dispatch

ROOT = Path(__file__).resolve().parent.parent
# The processes' secrets, as long as the configuration requires (SECRET_KEY 32 characters,
# ADMIN_TOKEN and DLR_WEBHOOK_SECRET 24) and unlike anything else a log could hold.
SECRET_KEY = "test-secret-key-5d1f0c2b9e8a4f7b6c3d2e1f0a9b8c7d"
ADMIN_TOKEN = "test-admin-token-8c4e2a7f1b9d3e6a"
DLR_WEBHOOK_SECRET = "test-dlr-secret-3b7e9a1c5d2f8e4b"
MITTO_API_KEY = "test-mitto-api-key-6f2a8d4c1e9b"
SHOPIFY_API_SECRET = "test-shopify-secret-9d4b7e2a6c1f8e3b5a0d"
TABLES = (
    "job_run",
    "message_log",
    "credit_transaction",
    "credit_reservation",
    "delivery_report",
    "campaign_recipient",
    "test_send",
    "campaign_recipient_delta",
    "campaign_recipient_total",
    "send_batch",
    "short_link",
    "campaign",
    "suppression",
    "consent_event",
    "inbound_message",
    "inbound_reply",
    "data_export",
    "audit_event",
    "contact",
    "api_key",
    "shop",
)


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
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "BROKER_URL": os.environ.get("TEST_BROKER_URL", ""),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET,
        "SECRET_KEY": SECRET_KEY,
        "MITTO_API_KEY": MITTO_API_KEY,
        "MITTO_SENDER": "Astronote",
        "SHOPIFY_API_SECRET": SHOPIFY_API_SECRET,
        # On (the code path runs in every test) but out of the way of tests that send
        # hundreds of requests a second; tests/api/test_keys_limits.py sets a low one.
        "API_RATE_LIMIT": "5000/second",
        # Shops created through the API get no quiet hours: a test must not depend on the
        # time of day it runs at. Quiet hours' own tests set them, with an injected clock.
        "QUIET_HOURS_DEFAULT": "off",
        # The tests send up to 8 requests of one shop at once (the default cap is 4).
        "API_SHOP_CONCURRENCY": "8",
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


def purge_queues(current: dramatiq.Broker) -> None:
    """Drop every message of our queues on RabbitMQ (waiting, delayed and dead-lettered);
    on Redis, FLUSHDB has already done it."""
    if not isinstance(current, RedisBroker):
        from service.infra import rabbitmq

        rabbitmq.ping(current)  # the test thread's connection may have gone stale while idle
        for queue in dispatch.QUEUES:
            current.flush(queue)


# Tables whose statement trigger `{table}_no_truncate` refuses TRUNCATE.
APPEND_ONLY = ("audit_event", "consent_event")


def truncate_tables(database: Any) -> None:
    """Empty every table. The audit trail and the consent log refuse TRUNCATE (statement
    triggers): the tests disable them inside this one transaction, so they are never off for
    anyone else."""
    with database.atomic():
        for table in APPEND_ONLY:
            database.execute_sql(f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_truncate")
        database.execute_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        for table in APPEND_ONLY:
            database.execute_sql(f"ALTER TABLE {table} ENABLE TRIGGER {table}_no_truncate")


@pytest.fixture
def db(schema, redis_client):
    """A clean database, an empty Redis and empty queues for each test."""
    truncate_tables(schema)
    redis_client.flushdb()
    purge_queues(dramatiq.get_broker())
    yield schema
    if not schema.is_closed():
        schema.close()


DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test left running (not a daemon) would keep the process alive after the
    summary: Python joins such threads at exit, and one waiting in C for ever hung a CI run
    until its time ran out. Name them with their stacks and leave, failing, instead. (The
    import children's manager thread, which Python stops at exit, is stopped here first.)"""
    import_processes.shutdown()
    stuck = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon
    ]
    for thread in stuck:
        thread.join(timeout=5)
    stuck = [thread for thread in stuck if thread.is_alive()]
    if not stuck:
        return
    print(f"\ntests left {len(stuck)} thread(s) running: {[t.name for t in stuck]}", flush=True)
    faulthandler.dump_traceback(all_threads=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker and "broker_url" in metafunc.fixturenames:
        metafunc.parametrize("broker_url", marker.args, indirect=True)


def rabbitmq_url() -> str:
    chosen = os.environ.get("TEST_BROKER_URL", "")
    if chosen.startswith("amqp"):
        return chosen
    return os.environ.get("TEST_RABBITMQ_URL") or DEFAULT_RABBITMQ_URL


def require_rabbitmq(candidate: dramatiq.Broker, url: str) -> None:
    from service.infra import rabbitmq

    if rabbitmq.reachable(candidate):
        return
    reason = (
        f"RabbitMQ does not answer at {url.split('@')[-1]} (set TEST_RABBITMQ_URL, or"
        " start it: rabbitmq-server -detached)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must run the RabbitMQ tests", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def using_broker(settings: config.Settings, url: str | None) -> Iterator[config.Settings]:
    """Meanwhile the test process publishes through the broker of `url` (None: Redis)."""
    own = dramatiq.get_broker()
    switched = dataclasses.replace(settings, broker_url=url)
    current = broker.setup_broker(switched)
    config.override(switched)
    try:
        yield switched
    finally:
        current.close()
        dramatiq.set_broker(own)
        config.override(settings)


@pytest.fixture
def broker_url(request, db, settings):
    """BROKER_URL of this test's processes ("" for Redis), its queues empty; the test process
    publishes through the same broker meanwhile."""
    if hasattr(request, "param"):
        wanted = rabbitmq_url() if request.param == "rabbitmq" else None
    else:
        wanted = settings.broker_url
    if wanted == settings.broker_url:
        yield wanted or ""
        return
    with using_broker(settings, wanted):
        if wanted:
            require_rabbitmq(dramatiq.get_broker(), wanted)
        purge_queues(dramatiq.get_broker())
        yield wanted or ""
