"""Latency of the health endpoints with 100,000 messages waiting (SPEC 8: p95 under 50 ms over
200 requests). Not a test: it prints the figures, and appends them to bench/RESULTS.md under
"Health endpoints" with `--record`.

    .venv/bin/python bench/health.py [--messages 100000] [--requests 200] [--record]

Set-up, on real processes: gunicorn as the Procfile runs it (2 gthread workers, 8 threads), a
leading clock, and no worker consuming `sms-send`, so that:
- a 100,000-recipient campaign is enqueued through the API (200 batches of 500 wait);
- `--messages` more `sendBulkSMS` messages are pushed through the Dramatiq broker, so
  100,000 messages wait in `sms-send` (they name no campaign: a worker would claim nothing);
- 5,000 more campaigns in every status fill the table; the big one is reported stuck
  (STUCK_CAMPAIGN_AFTER_MS=1000), so the stuck query returns a row.
Then each endpoint gets `--requests` sequential requests on one keep-alive connection.

Runs against BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the local PostgreSQL database
`astronote_health_bench`, created if missing, and Redis db 6), which it wipes first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.e2e.stack import Stack, wait_for  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_health_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
ENDPOINTS = ("/health", "/readiness", "/health/full", "/metrics", "/ops/state")
RESULTS = ROOT / "bench" / "RESULTS.md"


def reset() -> None:
    common.reset(DB_URL, REDIS_URL)


def push_messages(count: int) -> float:
    """`count` sendBulkSMS messages through the real broker; seconds taken."""
    import dramatiq

    from service.infra import broker, config, dispatch

    settings = config.load({"DATABASE_URL": DB_URL, "REDIS_URL": REDIS_URL})
    broker.setup_broker(settings)
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: dispatch.publish_batch(0, 0, []), range(count)))
    dramatiq.get_broker().close()
    return time.perf_counter() - started


def fill_campaigns(shop_id: int) -> None:
    """5,000 more campaigns across the other statuses, so counting by status has rows to read."""
    with psycopg2.connect(DB_URL) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO campaign (shop_id, name, text, status, started_at, finished_at,"
            " last_progress_at)"
            " SELECT %s, 'filler ' || n, 'Hello', (ARRAY['draft', 'scheduled', 'paused',"
            "   'completed', 'failed', 'cancelled'])[1 + n %% 6], now() - interval '1 day',"
            "   CASE WHEN n %% 6 >= 3 THEN now() - interval '1 day' END, now() - interval '1 day'"
            " FROM generate_series(1, 5000) AS n",
            (shop_id,),
        )
        cursor.execute("ANALYZE")


def measure(url: str, count: int, headers: dict[str, str]) -> dict[str, float]:
    session = requests.Session()
    session.trust_env = False
    session.get(url, headers=headers, timeout=10)  # warm the connection and the script cache
    timings, statuses = [], set()
    for _ in range(count):
        began = time.perf_counter()
        answer = session.get(url, headers=headers, timeout=10)
        timings.append((time.perf_counter() - began) * 1000)
        statuses.add(answer.status_code)
    timings.sort()
    return {
        "p50": statistics.median(timings),
        "p95": timings[int(0.95 * count) - 1],
        "max": timings[-1],
        "statuses": sorted(statuses),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    reset()
    stack = Stack(
        {
            "DATABASE_URL": DB_URL,
            "REDIS_URL": REDIS_URL,
            "ADMIN_TOKEN": "bench-admin-token-0123456789",
            "SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "MITTO_API_KEY": "bench",
            "LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(ROOT / "var" / "bench-metrics"),
            # The big campaign, with no worker, is stuck at once: health lists it.
            "STUCK_CAMPAIGN_AFTER_MS": "1000",
        },
        f"bench-health-{int(time.time())}",
    )
    (ROOT / "var" / "bench-metrics").mkdir(parents=True, exist_ok=True)
    try:
        stack.start_web(workers=2)
        stack.start_clock()
        shop_id, key = stack.create_shop("bench-health.example", credits=1_000_000)
        stack.import_contacts(key, args.recipients)
        campaign = stack.call("POST", "/campaigns", key, json={"name": "big", "text": "Sale"})
        enqueued = stack.call("POST", f"/campaigns/{campaign.json()['id']}/enqueue", key)
        assert enqueued.status_code == 202, enqueued.text
        fill_campaigns(shop_id)
        pushed_s = push_messages(args.messages)
        full = wait_for(
            lambda: (lambda b: b if b["scheduler"]["lock"]["exists"] else None)(
                stack.call("GET", "/health/full", "bench-admin").json()
            ),
            30,
            "a leader",
        )
        waiting = full["queues"]["sms-send"]["waiting"]
        print(
            f"pushed {args.messages} messages in {pushed_s:.1f}s; sms-send waiting: {waiting};"
            f" stuck campaigns: {full['campaigns']['stuck_count']}; problems: "
            f"{full['problems']}"
        )
        figures = {
            path: measure(
                f"{stack.web}{path}", args.requests, {"Authorization": "Bearer bench-admin"}
            )
            for path in ENDPOINTS
        }
    finally:
        stack.close()
    lines = [
        f"| `{path}` | {f['p50']:.1f} | {f['p95']:.1f} | {f['max']:.1f} |"
        f" {', '.join(map(str, f['statuses']))} |"
        for path, f in figures.items()
    ]
    table = [
        "| endpoint | p50 ms | p95 ms | max ms | HTTP status |",
        "|---|---|---|---|---|",
        *lines,
    ]
    print("\n".join(table))
    if args.record:
        record(args, waiting, table)
    return 0 if all(f["p95"] < 50 for path, f in figures.items() if path != "/ops/state") else 1


def record(args: argparse.Namespace, waiting: int, table: list[str]) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    section = [
        "",
        "## Health endpoints",
        "",
        f"{date.today().isoformat()}, {os.cpu_count()} CPUs ({platform.machine()}), local"
        " PostgreSQL and Redis. Command:",
        "",
        "    .venv/bin/python bench/health.py --record",
        "",
        f"{waiting:,} messages waiting in `sms-send` ({args.messages:,} pushed through the"
        f" broker plus the {args.recipients // 500} batches of a {args.recipients:,}-recipient"
        " campaign enqueued with no worker running, reported stuck), 5,001 campaigns, a"
        " leading clock (its reconciler running meanwhile); gunicorn with 2 gthread workers. "
        f"{args.requests} sequential requests per endpoint on one keep-alive connection"
        " (the status is 503 because no worker runs: that is what health must say).",
        "",
        *table,
        "",
    ]
    RESULTS.write_text(text.rstrip("\n") + "\n" + "\n".join(section))


if __name__ == "__main__":
    sys.exit(main())
