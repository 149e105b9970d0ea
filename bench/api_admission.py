"""What one shop request costs the web process before its resource runs: database statements,
Redis commands and time, for a request the limits admit and for one they refuse (429).
Deterministic counts, unlike `bench/api_fairness.py`'s latencies on a shared machine.

    BENCH_DATABASE_URL=... BENCH_REDIS_URL=... \
        .venv/bin/python bench/api_admission.py [--requests 2000]

The app in process (Falcon's test client: no HTTP, no gunicorn), on real PostgreSQL and Redis
(the database's schema is dropped and migrated again, the Redis db flushed). `GET /credits`
with a rate no loop reaches and the default cap of 8 in flight for the admitted requests, and
a limit of 1/hour for the refused ones. Medians of `--requests`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.api_fairness import DB_URL, REDIS_URL, reset  # noqa: E402
from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, SECRET_KEY  # noqa: E402

COUNTS = {"sql": 0, "redis": 0}


def count_calls() -> None:
    """Count every SQL statement and every Redis command the process sends."""
    import peewee

    execute_sql = peewee.Database.execute_sql

    def counted_sql(self, *args, **kwargs):
        COUNTS["sql"] += 1
        return execute_sql(self, *args, **kwargs)

    peewee.Database.execute_sql = counted_sql  # type: ignore[method-assign]
    execute_command = redis.Redis.execute_command

    def counted_command(self, *args, **kwargs):
        COUNTS["redis"] += 1
        return execute_command(self, *args, **kwargs)

    redis.Redis.execute_command = counted_command  # type: ignore[method-assign]


def measure(client, key: str, requests: int, status: int) -> dict:
    timings = []
    before = dict(COUNTS)
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.simulate_get("/credits", headers={"Authorization": f"Bearer {key}"})
        timings.append((time.perf_counter() - started) * 1e6)
        assert answer.status_code == status, answer.text
    return {
        "sql_per_request": round((COUNTS["sql"] - before["sql"]) / requests, 2),
        "redis_per_request": round((COUNTS["redis"] - before["redis"]) / requests, 2),
        "median_us": round(statistics.median(timings)),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    reset()
    os.environ.update(
        {
            "DATABASE_URL": DB_URL,
            "REDIS_URL": REDIS_URL,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET,
            "SECRET_KEY": SECRET_KEY,
            "LOG_LEVEL": "WARNING",
        }
    )
    import falcon.testing

    from api.app import create_app
    from models import database
    from service.infra import config

    settings = config.load(os.environ)
    database.bind(settings.database_url, 4)
    count_calls()
    # Admitted: a rate no loop here reaches, and the default cap of requests in flight.
    admitting = dataclasses.replace(settings, api_rate_limit="1000000/second")
    client = falcon.testing.TestClient(create_app(admitting))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    shop = client.simulate_post(
        "/admin/shops", headers=admin, json={"domain": "a.example", "name": "A"}
    ).json
    key = shop["api_key"]
    client.simulate_get("/credits", headers={"Authorization": f"Bearer {key}"})  # first use
    results = {"admitted": measure(client, key, args.requests, 200)}
    refusing = falcon.testing.TestClient(
        create_app(dataclasses.replace(settings, api_rate_limit="1/hour"))
    )
    refusing.simulate_get("/credits", headers={"Authorization": f"Bearer {key}"})
    results["refused"] = measure(refusing, key, args.requests, 429)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
