"""A 100,000- and a 1,000,000-recipient bulk campaign end to end on one stack (not a test).

    flock /tmp/astronote-bench.lock .venv/bin/python bench/million.py [--small 100000]
        [--large 1000000] [--old 0]

Real processes (gunicorn, a Dramatiq worker of 2 processes x 4 threads, the clock, the
simulator without delivery reports) against BENCH_DATABASE_URL / BENCH_REDIS_URL. Contacts are
seeded with one `INSERT ... SELECT generate_series` per shop (consented, named), not through
`POST /contacts`: importing a million contacts through the API is not what this measures.
`--no-counters` disables the progress counters' triggers, to measure what they cost.
`--old N` first writes N finished recipients of an old campaign (with their counters), the
"large old database" of issue 11's deliverable 6.

Measured for each campaign: the enqueue call's latency, the time to `completed`, the rate
(recipients / that time), the longest recipient-creation transaction (the worker's `recipients
created` log lines), and the latency of the progress, `/health/full` and `/ops/state` reads
during the send; for the run, the peak RSS (VmHWM) of every worker and web process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.e2e.stack import LOGS, Stack  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
ADMIN = common.ADMIN_TOKEN


class PeakRss:
    """The largest VmHWM of any process of the given process groups (a worker's tree)."""

    def __init__(self, pgids: list[int]) -> None:
        self.pgids, self.peak_kb, self.running = set(pgids), 0, True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while self.running:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.getpgid(int(pid)) not in self.pgids:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except (OSError, ProcessLookupError):
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            time.sleep(0.5)

    def stop(self) -> float:
        self.running = False
        return round(self.peak_kb / 1024, 1)


def sql(statement: str, *params) -> list[tuple]:
    with psycopg2.connect(DB_URL) as conn, conn.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def seed_contacts(shop_id: int, count: int, prefix: str) -> float:
    started = time.perf_counter()
    sql(
        "INSERT INTO contact (shop_id, phone, country, first_name, consent_source,"
        " consent_collected_at)"
        " SELECT %s, %s || lpad(g::text, 7, '0'), 'GR', 'N' || g, 'bench', now()"
        " FROM generate_series(1, %s) g",
        shop_id,
        prefix,
        count,
    )
    sql("ANALYZE contact")
    return round(time.perf_counter() - started, 1)


def seed_old_recipients(count: int) -> float:
    """`count` finished recipients of an old, completed campaign of a shop of its own."""
    started = time.perf_counter()
    shop = sql(
        "INSERT INTO shop (domain, name, require_consent) VALUES ('old.example', 'old', false)"
        " RETURNING id"
    )[0][0]
    campaign = sql(
        "INSERT INTO campaign (shop_id, name, text, status, started_at, finished_at,"
        " recipients_created_at) VALUES (%s, 'old', 'old', 'completed', now(), now(), now())"
        " RETURNING id",
        shop,
    )[0][0]
    sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status,"
        " mitto_message_id, delivery_status, sent_at)"
        " SELECT %s, %s, g, '+3068' || lpad(g::text, 8, '0'), 'sent', 'old-' || g,"
        " 'Delivered', now() - interval '2 days' FROM generate_series(1, %s) g",
        campaign,
        shop,
        count,
    )
    sql("ANALYZE campaign_recipient")  # statistics that know the old rows
    return round(time.perf_counter() - started, 1)


def timed_get(url: str, headers: dict) -> float:
    started = time.perf_counter()
    answer = requests.get(url, headers=headers, timeout=30)
    # /health/full answers 503 with its reasons when something is wrong: still a read.
    assert answer.status_code in (200, 503), (url, answer.status_code)
    return (time.perf_counter() - started) * 1000


def creation_transactions(stack: Stack, campaign_id: int) -> list[float]:
    """transaction_ms of every `recipients created` line of the campaign in the worker log."""
    found = []
    for path in LOGS.glob(f"{stack.name}.worker*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"recipients created"' not in line:
                continue
            try:
                entry = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            if entry.get("campaign_id") == campaign_id:
                found.append(float(entry["transaction_ms"]))
    return found


def run_campaign(stack: Stack, key: str, label: str) -> dict:
    campaign = stack.call(
        "POST",
        "/campaigns",
        key,
        # Bulk: one text for everyone, one /smsbulk call per window (as bench/pipeline.py's).
        json={
            "name": label,
            "text": "Spring sale: 20% off everything today",
            "append_unsubscribe": False,
        },
    ).json()
    auth = {"Authorization": f"Bearer {key}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    started = time.perf_counter()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    enqueue_ms = (time.perf_counter() - started) * 1000
    assert answer.status_code == 202, answer.text
    reads: dict[str, list[float]] = {"progress": [], "health_full": [], "ops_state": []}
    progress: dict = {}
    polls = 0
    while True:
        reads["progress"].append(
            timed_get(f"{stack.web}/campaigns/{campaign['id']}/progress", auth)
        )
        progress = stack.progress(key, campaign["id"])
        if progress["status"] in ("completed", "failed", "cancelled"):
            break
        polls += 1
        if polls % 4 == 0:  # the operator's reads once a second, as /ops refreshes
            reads["health_full"].append(timed_get(f"{stack.web}/health/full", admin))
            reads["ops_state"].append(timed_get(f"{stack.web}/ops/state", admin))
        time.sleep(0.25)
    total_s = time.perf_counter() - started
    chunks = creation_transactions(stack, campaign["id"])
    # The send path alone: first to last message sent (their `sent_at`), without the fixed
    # second or so around it (the first windows' claims, the last status update, this
    # script's 250 ms poll) that weighs on a 10,000 campaign and not on a 1,000,000 one.
    sent, span_s = sql(
        "SELECT count(*), extract(epoch FROM max(sent_at) - min(sent_at))::float"
        " FROM campaign_recipient WHERE campaign_id = %s AND status = 'sent'",
        campaign["id"],
    )[0]
    # The campaign's own span, from its start at the enqueue to its `finished_at`: without
    # this script's 250 ms poll, which is a quarter of a 10,000 campaign's time.
    ((campaign_s,),) = sql(
        "SELECT extract(epoch FROM finished_at - started_at)::float FROM campaign WHERE id = %s",
        campaign["id"],
    )
    return {
        "recipients": progress["total"],
        "sent": progress["sent"],
        "status": progress["status"],
        "enqueue_ms": round(enqueue_ms),
        "enqueue_answer": answer.json(),
        "total_s": round(total_s, 1),
        # The audience the enqueue counted (progress counts nothing with --no-counters).
        "rate_per_s": round(answer.json()["recipients"] / total_s),
        "campaign_rate_per_s": round(answer.json()["recipients"] / campaign_s),
        "send_span_s": round(span_s or 0, 2),
        "send_rate_per_s": round(sent / span_s) if span_s else None,
        "creation_chunks": len(chunks),
        "longest_creation_transaction_ms": round(max(chunks), 1) if chunks else None,
        "reads_ms": {
            name: {"median": round(statistics.median(v), 1), "max": round(max(v), 1)}
            for name, v in reads.items()
            if v
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--old", type=int, default=0, help="old finished recipients first")
    parser.add_argument(
        "--no-counters",
        action="store_true",
        help="disable the progress counters' triggers (their cost, side by side)",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    results: dict = {"machine": f"{os.cpu_count()} cores", "args": vars(args)}
    common.reset(DB_URL, REDIS_URL)
    if args.no_counters:
        for event in ("insert", "update", "delete"):
            sql(
                f"ALTER TABLE campaign_recipient DISABLE TRIGGER campaign_recipient_counted_{event}"
            )
    if args.old:
        results["seed_old_s"] = seed_old_recipients(args.old)
    env = common.stack_env(DB_URL, REDIS_URL, LOG_LEVEL="INFO")
    stack = Stack(env, f"million-{int(time.time())}")
    try:
        stack.start_sim("--no-dlr")
        stack.start_web(workers=2)
        worker = stack.start_worker(processes=args.processes, threads=args.threads)
        stack.start_clock()
        worker_rss = PeakRss([os.getpgid(worker.pid)])
        web_rss = PeakRss([os.getpgid(stack.processes["web"].pid)])
        for label, size in (("small", args.small), ("large", args.large)):
            if not size:
                continue
            shop_id, key = stack.create_shop(f"{label}.example", credits=10_000_000)
            results[f"seed_{label}_s"] = seed_contacts(shop_id, size, f"+3069{len(label)}")
            results[label] = run_campaign(stack, key, label)
        results["worker_peak_rss_mb"] = worker_rss.stop()
        results["web_peak_rss_mb"] = web_rss.stop()
        if args.small and args.large:
            results["large_rate_vs_small"] = round(
                results["large"]["rate_per_s"] / results["small"]["rate_per_s"], 2
            )
        results["load_average"] = os.getloadavg()
    finally:
        stack.close()
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
