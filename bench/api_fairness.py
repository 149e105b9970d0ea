"""Does a shop hammering the API move another shop's latency? (SPEC 5: a per-shop API rate
limit shared by every web process.) Not a test: it prints the figures, side by side in one run.

    .venv/bin/python bench/api_fairness.py [--seconds 15] [--hammer-threads 16]

Set-up, on real processes: gunicorn as the Procfile runs it (2 gthread workers, 8 threads each)
against BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the local database
`astronote_api_bench`, created if missing, and Redis db 13), which it wipes first. Shop B
makes sequential `GET /campaigns/{id}/progress` calls on one keep-alive connection; shop A
runs `--hammer-threads` threads of `POST /contacts` (100 rows each) as fast as it can.
B polls 10 times a second (under any limit set here, as a dashboard would). Four phases,
each `--seconds` long, each on a new gunicorn over the same database: B alone;
B with A hammering and no limits at all (API_RATE_LIMIT=0, API_SHOP_CONCURRENCY=0); the same
with the limits 100/second and 8 in flight (the default until 2026-12-02); and with strict ones
(20/second, 4). `--limits RATE:CAP,...` runs other phases instead (e.g. the default since then,
`100/second:4`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, SECRET_KEY  # noqa: E402
from tests.e2e.stack import Stack  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_api_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VICTIM_INTERVAL_S = 0.1


def reset() -> None:
    common.reset(DB_URL, REDIS_URL)


def start(rate: str, concurrency: str) -> Stack:
    stack = Stack(
        {
            "DATABASE_URL": DB_URL,
            "REDIS_URL": REDIS_URL,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET,
            "SECRET_KEY": SECRET_KEY,
            "MITTO_API_KEY": "bench-key",
            "API_RATE_LIMIT": rate,
            "API_SHOP_CONCURRENCY": concurrency,
        },
        f"api-fairness-{rate.replace('/', '-')}-{concurrency}",
    )
    stack.start_web(workers=2, threads=8)
    return stack


def shop(web: str, domain: str) -> str:
    answer = requests.post(
        f"{web}/admin/shops", headers=ADMIN, json={"domain": domain, "name": domain}, timeout=10
    )
    answer.raise_for_status()
    return answer.json()["api_key"]


def victim_latencies(web: str, key: str, campaign_id: int, seconds: float) -> list[float]:
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{web}/campaigns/{campaign_id}/progress"
    timings: list[float] = []
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        began = time.perf_counter()
        answer = session.get(url, headers=headers, timeout=30)
        timings.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.text
        next_at += VICTIM_INTERVAL_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    return timings


def hammer(web: str, key: str, stop: threading.Event, counts: dict[int, int]) -> None:
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": f"Bearer {key}"}
    rows = [{"phone": f"+3069{n:08d}"} for n in range(100)]
    while not stop.is_set():
        status = session.post(
            f"{web}/contacts", headers=headers, json={"contacts": rows}, timeout=30
        ).status_code
        counts[status] = counts.get(status, 0) + 1


def phase(
    web: str, keys: tuple[str, str], campaign_id: int, seconds: float, threads: int
) -> tuple[list[float], dict[int, int]]:
    stop, counts = threading.Event(), {}
    workers = [
        threading.Thread(target=hammer, args=(web, keys[0], stop, counts)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        return victim_latencies(web, keys[1], campaign_id, seconds), counts
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def summary(label: str, timings: list[float], counts: dict[int, int], seconds: float) -> str:
    timings = sorted(timings)
    p99 = timings[max(0, int(0.99 * len(timings)) - 1)]
    hammer = ", ".join(f"{status}: {n / seconds:.0f}/s" for status, n in sorted(counts.items()))
    return (
        f"| {label} | {len(timings)} | {statistics.median(timings):.1f} | {p99:.1f} |"
        f" {hammer or '-'} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--hammer-threads", type=int, default=16)
    parser.add_argument(
        "--limits",
        help="other phases instead of the three: RATE:CAP,... (e.g. 100/second:2,0:1)",
    )
    args = parser.parse_args()
    reset()
    rows = []
    phases: tuple[tuple[str, str, str], ...] = (
        ("no limits (API_RATE_LIMIT=0, API_SHOP_CONCURRENCY=0)", "0", "0"),
        ("limits 100/second, 8 in flight", "100/second", "8"),
        ("strict limits (20/second, 4 in flight)", "20/second", "4"),
    )
    if args.limits:
        phases = tuple(
            (f"API_RATE_LIMIT={rate}, API_SHOP_CONCURRENCY={cap}", rate, cap)
            for rate, cap in (pair.split(":") for pair in args.limits.split(","))
        )
    stack = start("100/second", "8")
    try:
        keys = (shop(stack.web, "hammer.example"), shop(stack.web, "victim.example"))
        victim = {"Authorization": f"Bearer {keys[1]}"}
        requests.post(
            f"{stack.web}/contacts",
            headers=victim,
            json={"contacts": [{"phone": "+306912345678"}]},
            timeout=10,
        )
        campaign_id = requests.post(
            f"{stack.web}/campaigns", headers=victim, json={"name": "b", "text": "Hi"}, timeout=10
        ).json()["id"]
        rows.append(
            summary(
                "B alone",
                victim_latencies(stack.web, keys[1], campaign_id, args.seconds),
                {},
                args.seconds,
            )
        )
    finally:
        stack.close()
    for label, rate, concurrency in phases:
        stack = start(rate, concurrency)
        try:
            timings, counts = phase(stack.web, keys, campaign_id, args.seconds, args.hammer_threads)
            rows.append(summary(f"B while A hammers, {label}", timings, counts, args.seconds))
        finally:
            stack.close()
    print(
        f"\n{args.hammer_threads} threads of shop A posting 100 contacts per request;"
        f" shop B polling progress 10 times a second; {args.seconds:.0f} s per phase\n"
    )
    print("| phase | B requests | B p50 ms | B p99 ms | A answers |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
