"""Throughput benchmark of the send pipeline on real processes (not a test).

    .venv/bin/python bench/pipeline.py [--bulk 100000] [--personal 20000] [--latency-ms 100]

Runs against BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the local PostgreSQL database
`astronote_bench`, created if missing, and Redis db 5). The simulator's delivery reports are
off for the throughput runs; the webhook's ingest rate is measured separately.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.e2e.stack import Stack, wait_for  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
DLR_SECRET = common.DLR_SECRET


def reset_database() -> None:
    common.reset(DB_URL, REDIS_URL)


class PeakRss:
    """Samples VmHWM/VmRSS of every process in a process group (the Dramatiq worker tree)."""

    def __init__(self, pgid: int) -> None:
        self.pgid, self.peak_kb, self.running = pgid, 0, True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while self.running:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.getpgid(int(pid)) != self.pgid:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except (OSError, ProcessLookupError):
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            time.sleep(0.2)

    def stop(self) -> float:
        self.running = False
        return self.peak_kb / 1024


def make_stack(concurrency: int, processes: int, threads: int) -> Stack:
    env = common.stack_env(
        DB_URL,
        REDIS_URL,
        SEND_CONCURRENCY=str(concurrency),
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    )
    return Stack(env, f"bench-{int(time.time())}")


def run_campaign(stack: Stack, key: str, text: str, unsubscribe: bool) -> dict:
    campaign = stack.call(
        "POST",
        "/campaigns",
        key,
        json={"name": "bench", "text": text, "append_unsubscribe": unsubscribe},
    ).json()
    started = time.perf_counter()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    enqueue_s = time.perf_counter() - started
    assert answer.status_code == 202, answer.text
    progress = wait_for(
        lambda: (lambda p: p if p["status"] in ("completed", "failed") else None)(
            stack.progress(key, campaign["id"])
        ),
        1800,
        "campaign",
        interval=1.0,
    )
    total_s = time.perf_counter() - started
    return {
        "recipients": progress["total"],
        "sent": progress["sent"],
        "enqueue_s": round(enqueue_s, 2),
        "total_s": round(total_s, 2),
        "rate_per_s": round(progress["total"] / total_s),
    }


def bare_loop(sim: str, count: int, concurrency: int) -> float:
    """The same /sms calls made by a plain ThreadPool with `requests`: the ceiling to compare."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    session.headers["X-Mitto-API-Key"] = "bench"

    def call(i: int) -> None:
        session.post(
            f"{sim}/sms",
            json={
                "from": "Bench",
                "to": f"+30691{i:07d}",
                "text": f"Hi N{i}, bare loop",
                "reference": str(i),
            },
            timeout=30,
        ).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(call, range(count)))
    return count / (time.perf_counter() - started)


def webhook_ingest(stack: Stack, count: int, batch: int, concurrency: int = 8) -> float:
    """Delivery reports per second the webhook stores and applies (`batch` reports a request)."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    ids = [
        row[0]
        for row in query(
            "SELECT mitto_message_id FROM campaign_recipient"
            " WHERE mitto_message_id IS NOT NULL LIMIT %s",
            count,
        )
    ]
    chunks = [ids[i : i + batch] for i in range(0, len(ids), batch)]

    def post(chunk: list[str]) -> None:
        body = [{"id": pid, "deliveryStatus": "Delivered"} for pid in chunk]
        session.post(
            f"{stack.web}/webhooks/mitto/dlr?token={DLR_SECRET}",
            json=body if batch > 1 else body[0],
            timeout=30,
        ).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, chunks))
    return len(ids) / (time.perf_counter() - started)


def query(sql: str, *params) -> list[tuple]:
    with psycopg2.connect(DB_URL) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--personal", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    results: dict = {"machine": f"{os.cpu_count()} cores", "args": vars(args)}
    reset_database()
    stack = make_stack(args.concurrency, args.processes, args.threads)
    try:
        stack.start_sim("--no-dlr")
        stack.start_web(workers=2)
        worker = stack.start_worker(processes=args.processes, threads=args.threads)
        rss = PeakRss(os.getpgid(worker.pid))
        _, key = stack.create_shop("bench.example", credits=10_000_000)
        started = time.perf_counter()
        stack.import_contacts(key, max(args.bulk, args.personal))
        results["import_contacts_per_s"] = round(
            max(args.bulk, args.personal) / (time.perf_counter() - started)
        )

        if args.bulk:
            results["bulk"] = run_campaign(
                stack, key, "Spring sale: 20% off everything today", unsubscribe=False
            )
            results["worker_peak_rss_mb"] = round(rss.stop(), 1)
        if args.personal:
            contacts_all = args.personal
            # Personalised campaigns go to the first `personal` contacts only.
            ids = [
                row[0] for row in query("SELECT id FROM contact ORDER BY id LIMIT %s", contacts_all)
            ]

            def personal(label: str) -> dict:
                campaign = stack.call(
                    "POST",
                    "/campaigns",
                    key,
                    json={
                        "name": label,
                        "text": "Hi {first_name}, your personal offer is waiting",
                        "contact_ids": ids,
                        "append_unsubscribe": False,
                    },
                ).json()
                started = time.perf_counter()
                assert (
                    stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key).status_code
                    == 202
                )
                wait_for(
                    lambda: stack.progress(key, campaign["id"])["status"] == "completed",
                    1800,
                    label,
                    interval=0.2,
                )
                elapsed = time.perf_counter() - started
                return {
                    "recipients": len(ids),
                    "total_s": round(elapsed, 2),
                    "rate_per_s": round(len(ids) / elapsed),
                }

            results["personal"] = personal("personal")
            bare = bare_loop(stack.sim, len(ids), args.concurrency * args.processes)
            results["bare_loop_rate_per_s"] = round(bare)
            results["personal_vs_bare"] = round(results["personal"]["rate_per_s"] / bare, 2)
            stack.sim_config(latency_ms=args.latency_ms)
            results["personal_latency"] = personal("personal-latency")
            results["latency_vs_zero"] = round(
                results["personal_latency"]["rate_per_s"] / results["personal"]["rate_per_s"], 2
            )
            stack.sim_config(latency_ms=0)
        for batch in (1, 100):
            results[f"webhook_reports_per_s_batch_{batch}"] = round(
                webhook_ingest(stack, 20_000, batch)
            )
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
