"""Delivery reports at the send rate (issue 11): the same bulk campaign with the simulator's
reports posted to the real webhook and to a no-op gunicorn app, in both simulator modes
(pooled keep-alive connections, and a new connection per report without a bound), and to the
`reports` process (`api/report_server.py`, the same route on an event loop).

    .venv/bin/python bench/reports.py [--recipients 20000] [--dlr-threads 32] [--modes pooled,burst]
        [--targets noop,webhook,server]

Runs against BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the local PostgreSQL database
`astronote_bench_reports`, created if missing, and Redis db 6; both are wiped). For each run:
the campaign's rate (recipients / seconds from the enqueue call to `completed`), the seconds
from its last send (`max(sent_at)`) to its last report applied (`max(applied_at)`), and the
reports the simulator had answered 2xx against the reports applied.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from astronote import processes  # noqa: E402
from astronote.launcher import free_port  # noqa: E402
from bench import common  # noqa: E402
from tests.e2e.stack import Stack, wait_for  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_bench_reports"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
DLR_SECRET = common.DLR_SECRET


def reset_database() -> None:
    common.reset(DB_URL, REDIS_URL)


def query(sql: str, *params) -> list[tuple]:
    with psycopg2.connect(DB_URL) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def sim_stats(stack: Stack) -> dict:
    return requests.get(f"{stack.sim}/_sim/stats", timeout=10).json()


def applied_reports(campaign_id: int) -> tuple[int, float | None]:
    """Messages of the campaign with a report applied (a report stored twice, its sender
    having given up on an answer and posted it again, counts once), and the seconds from its
    last send to its last report applied."""
    count, last_applied, last_sent = query(
        "SELECT count(DISTINCT d.provider_id), max(d.applied_at),"
        " (SELECT max(sent_at) FROM campaign_recipient WHERE campaign_id = %s)"
        " FROM delivery_report d JOIN campaign_recipient r ON r.mitto_message_id = d.provider_id"
        " WHERE r.campaign_id = %s AND d.applied_at IS NOT NULL",
        campaign_id,
        campaign_id,
    )[0]
    lag = (last_applied - last_sent).total_seconds() if last_applied and last_sent else None
    return count, lag


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants (gunicorn and its workers),
    from /proc."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pending.extend(int(child) for child in children)
    return total


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def ingest(url: str, count: int, connections: int = 32) -> int:
    """Reports per second `url` answers 200, posted one per request over keep-alive
    connections by plain threads (no campaign running)."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    numbers = iter(range(count))
    lock = threading.Lock()
    answered = [0]

    def post() -> None:
        connection = http.client.HTTPConnection(parts.netloc, timeout=30)
        while True:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            body = json.dumps({"id": f"ingest-{i}", "deliveryStatus": "Delivered"})
            connection.request("POST", target, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            with lock:
                answered[0] += response.status == 200

    started = time.perf_counter()
    threads = [threading.Thread(target=post) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answered[0] == count, answered
    return round(count / (time.perf_counter() - started))


def run(stack: Stack, key: str, label: str, real: bool) -> dict:
    before = sim_stats(stack)
    campaign = stack.call(
        "POST",
        "/campaigns",
        key,
        json={"name": label, "text": "Spring sale: 20% off today", "append_unsubscribe": False},
    ).json()
    started = time.perf_counter()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert answer.status_code == 202, answer.text
    progress = stack.wait_finished(key, campaign["id"], 900)
    total_s = time.perf_counter() - started
    result = {
        "status": progress["status"],
        "recipients": progress["total"],
        "sent": progress["sent"],
        "total_s": round(total_s, 2),
        "rate_per_s": round(progress["total"] / total_s),
    }
    # Every report posted (answered or given up on), then, with the real webhook, applied.
    wait_for(lambda: sim_stats(stack)["dlr_pending"] == 0, 600, "reports posted", interval=0.5)
    after = sim_stats(stack)
    result["reports_answered_2xx"] = after["dlr_sent"] - before["dlr_sent"]
    result["reports_not_answered"] = after["dlr_failed"] - before["dlr_failed"]
    result["reports_retried"] = after["dlr_retries"] - before["dlr_retries"]
    result["load_average"] = load()
    result["reports_posted_s_after_completion"] = round(time.perf_counter() - started - total_s, 2)
    if real:
        wait_for(
            lambda: applied_reports(campaign["id"])[0] >= result["reports_answered_2xx"],
            120,
            "reports applied",
            interval=0.5,
        )
        time.sleep(1)  # anything applied beyond what was answered would show now
        applied, lag = applied_reports(campaign["id"])
        result["reports_applied"] = applied
        result["report_rows_stored"] = query(
            "SELECT count(*) FROM delivery_report d JOIN campaign_recipient r"
            " ON r.mitto_message_id = d.provider_id WHERE r.campaign_id = %s",
            campaign["id"],
        )[0][0]
        result["last_send_to_last_applied_s"] = round(lag or 0.0, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--dlr-threads", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--web-threads", type=int, default=16, help="gunicorn threads of the web and the no-op"
    )
    parser.add_argument("--modes", default="pooled,burst")
    parser.add_argument(
        "--dlr-timeout-s", type=float, default=5.0, help="the simulator's timeout of one post"
    )
    parser.add_argument(
        "--ingest", type=int, default=10_000, help="reports posted straight to each endpoint"
    )
    parser.add_argument(
        "--targets",
        default="noop,webhook,server",
        help="where reports go: the no-op app, the web's webhook, the `reports` process",
    )
    args = parser.parse_args()
    results: dict = {"machine": f"{os.cpu_count()} cores", "args": vars(args), "runs": []}
    reset_database()
    env = common.stack_env(
        DB_URL, REDIS_URL, LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING")
    )
    stack = Stack(env, f"bench-reports-{int(time.time())}")
    noop_port = free_port()
    noop = f"http://127.0.0.1:{noop_port}/webhooks/mitto/dlr"
    server_port = free_port()
    server = f"http://127.0.0.1:{server_port}/webhooks/mitto/dlr?token={DLR_SECRET}"
    targets = args.targets.split(",")
    try:
        stack.start_sim("--dlr-threads", str(args.dlr_threads))
        stack.start_web(workers=2, threads=args.web_threads)
        stack.launch.start(
            "noop",
            [
                str(ROOT / ".venv/bin/gunicorn"),
                "bench.noop_webhook:app",
                "--config",
                "/dev/null",
                "--bind",
                f"127.0.0.1:{noop_port}",
                "--worker-class",
                "gthread",
                "--workers",
                "2",
                "--threads",
                str(args.web_threads),
            ],
        )
        wait_for(lambda: requests.post(noop, data=b"{}", timeout=1).ok, 20, "no-op webhook")
        if "server" in targets:
            stack.launch.start(
                "server",
                processes.command("reports", stack.env, {"--bind": f"127.0.0.1:{server_port}"}),
            )
            wait_for(
                lambda: requests.get(f"http://127.0.0.1:{server_port}/health", timeout=1).ok,
                20,
                "reports process",
            )
        stack.start_worker(processes=2, threads=4)
        stack.start_clock()
        _, key = stack.create_shop("bench.example", credits=10_000_000)
        stack.import_contacts(key, args.recipients)
        if args.ingest:
            # The endpoints alone: one report per request, 32 keep-alive connections.
            webhook = f"{stack.web}/webhooks/mitto/dlr?token={DLR_SECRET}"
            results["ingest_per_s"], results["ingest_cpu_ms_per_report"] = {}, {}
            urls = {"noop": noop, "webhook": webhook, "server": server}
            for target in targets:
                url = urls[target]
                pid = stack.processes["web" if target == "webhook" else target].pid
                cpu = cpu_seconds(pid)
                results["ingest_per_s"][target] = ingest(url, args.ingest)
                results["ingest_cpu_ms_per_report"][target] = round(
                    (cpu_seconds(pid) - cpu) * 1000 / args.ingest, 3
                )
            results["ingest_load_average"] = load()
            print(
                "ingest",
                json.dumps(results["ingest_per_s"]),
                json.dumps(results["ingest_cpu_ms_per_report"]),
                results["ingest_load_average"],
                file=sys.stderr,
                flush=True,
            )
        for round_ in range(args.rounds):
            for mode in args.modes.split(","):
                pair = {}
                for target in targets:
                    stack.sim_config(
                        dlr_timeout_s=args.dlr_timeout_s,
                        dlr_burst=mode == "burst",
                        dlr_callback_override={"noop": noop, "server": server}.get(target),
                    )
                    pair[target] = run(stack, key, f"{mode}-{target}", real=target != "noop")
                    print(mode, target, json.dumps(pair[target]), file=sys.stderr, flush=True)
                results["runs"].append(
                    {
                        "round": round_,
                        "mode": mode,
                        **pair,
                        **{
                            f"rate_ratio_{target}": round(
                                pair[target]["rate_per_s"] / pair["noop"]["rate_per_s"], 2
                            )
                            for target in targets
                            if target != "noop" and "noop" in targets
                        },
                    }
                )
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
