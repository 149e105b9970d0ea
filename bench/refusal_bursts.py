"""Where another shop's slowest requests fall while one shop sends light requests past its
limit (bench/RESULTS.md, "A shop's refusals in step"). Not a test: it prints the figures.

    .venv/bin/python bench/refusal_bursts.py [--seconds 40] [--threads 24]

On real processes, as `bench/api_fairness.py` sets them up (its database, Redis and web
settings: the defaults): shop A's `--threads` threads send `GET /campaigns?limit=100` back to
back, ignoring `Retry-After` (a process of its own, niced 10); shop B polls its campaign's
progress 10 times a second. Printed: B's p50 and p99, A's answers, and for B's eight slowest
requests their parts (as in `api_fairness.py`) and how many of A's requests started within
them and the 50 ms before (about 5 at A's average rate); then how A's request starts spread
over 10 ms slots.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import api_fairness as fairness  # noqa: E402


def hammer(web: str, key: str, threads: int, new_connections: bool, pipe) -> None:
    """Shop A: each request's (start, end, status), sent back when told to stop. With
    `new_connections`, a connection per request (`Connection: close`), as a client without a
    pool of kept-alive connections sends them."""
    os.nice(10)
    stop, lock = threading.Event(), threading.Lock()
    events: list[tuple[float, float, int]] = []

    def connect() -> requests.Session:
        client = fairness.session(key)
        if new_connections:
            client.headers["Connection"] = "close"
        return client

    def run() -> None:
        client = connect()
        while not stop.is_set():
            began = time.time()
            try:
                status = client.get(f"{web}/campaigns?limit=100", timeout=60).status_code
            except requests.ConnectionError:
                status, client = 0, connect()
            with lock:
                events.append((began, time.time(), status))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    pipe.recv()
    stop.set()
    for worker in workers:
        worker.join()
    pipe.send(events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--threads", type=int, default=24)
    parser.add_argument(
        "--new-connections", action="store_true", help="shop A opens a connection per request"
    )
    args = parser.parse_args()
    fairness.reset()
    stack = fairness.start("after")
    try:
        key_a = fairness.shop(stack.web, "hammer.example")
        key_b = fairness.shop(stack.web, "victim.example")
        victim, hammering = fairness.session(key_b), fairness.session(key_a)
        victim.post(f"{stack.web}/contacts", json={"contacts": [{"phone": "+306912345678"}]})
        campaign = victim.post(f"{stack.web}/campaigns", json={"name": "b", "text": "Hi"})
        for n in range(100):
            hammering.post(f"{stack.web}/campaigns", json={"name": f"a{n}", "text": "Hello"})
        ours, theirs = multiprocessing.Pipe()
        process = multiprocessing.get_context("fork").Process(
            target=hammer, args=(stack.web, key_a, args.threads, args.new_connections, theirs)
        )
        process.start()
        time.sleep(1.0)
        samples = []
        url = f"{stack.web}/campaigns/{campaign.json()['id']}/progress"
        deadline, next_at = time.monotonic() + args.seconds, time.monotonic()
        while time.monotonic() < deadline:
            began = time.time()
            answer = victim.get(url, timeout=30)
            total = (time.time() - began) * 1000
            parts = fairness.server_timing(answer.headers["Server-Timing"])
            runq = parts.get("runq", 0.0)
            samples.append(
                (began, total, total - parts["app"], parts["cpu"], runq,
                 parts["app"] - parts["cpu"] - runq)
            )  # fmt: skip
            next_at += fairness.VICTIM_INTERVAL_S
            time.sleep(max(0.0, next_at - time.monotonic()))
        ours.send("stop")
        events = ours.recv()
        process.join()
    finally:
        stack.close()
    totals = [sample[1] for sample in samples]
    statuses = collections.Counter(status for _, _, status in events)
    print(
        f"B: {len(samples)} requests, p50 {fairness.percentile(totals, 0.5):.1f} ms,"
        f" p99 {fairness.percentile(totals, 0.99):.1f} ms; A: {len(events)} requests"
        f" in {args.seconds:.0f} s, {dict(statuses)}"
    )
    first = samples[0][0]
    for began, total, queue, cpu, runq, wait in sorted(samples, key=lambda s: -s[1])[:8]:
        ended = began + total / 1000
        started = sum(1 for start, _, _ in events if began - 0.05 <= start <= ended)
        print(
            f"B at {began - first:6.2f} s: {total:5.1f} ms (queue {queue:.1f}, cpu {cpu:.1f},"
            f" runq {runq:.1f}, wait {wait:.1f}); A's requests started within it and the"
            f" 50 ms before: {started}"
        )
    slots = sorted(
        collections.Counter(int((start - first) * 100) for start, _, _ in events).values()
    )
    print(
        f"A's request starts per 10 ms slot with any: p50 {slots[len(slots) // 2]},"
        f" p99 {slots[int(len(slots) * 0.99)]}, max {slots[-1]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
