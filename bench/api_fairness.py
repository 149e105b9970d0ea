"""Does a shop hammering the API move another shop's latency? (SPEC 5: a per-shop API rate
limit shared by every web process; issue 8.) Not a test: it prints the figures, side by side in
one run.

    .venv/bin/python bench/api_fairness.py [--seconds 10] [--hammer-threads 24] [--importers 4] \
        [--configs before,after,heavy-cap-only,switch-only] [--loads light,heavy,mix,flood] \
        [--hammer-nice 10] [--baseline-tree PATH]

`--baseline-tree`: a checkout of an earlier commit (`git worktree add /tmp/baseline <commit>`),
whose web runs as the configuration `baseline` (its defaults), beside this tree's.

Set-up, on real processes: gunicorn as the Procfile runs it (2 gthread workers, 8 threads each)
against BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the local database
`astronote_api_bench`, created if missing, and Redis db 13), which it wipes first. Shop B
makes sequential `GET /campaigns/{id}/progress` calls on one keep-alive connection, 10 a
second (as a dashboard would). Shop A's threads send, as fast as they can and ignoring
`Retry-After` (in a process of its own at `--hammer-nice`, see `hammer_process`):

- `light`: `--hammer-threads` threads of `GET /campaigns?limit=100` (a page of 100 campaigns);
- `light-new`: the same with a new connection per request (`Connection: close`), as a client
  without a pool of kept-alive connections (`requests.get`, `curl` in a loop) sends them;
- `heavy`: `--importers` threads of `POST /contacts` of 10,000 rows with consent (1 MB, the
  largest import allowed): a shop running several import scripts at once;
- `mix`: `--importers` threads of imports and the rest of `--hammer-threads` light;
- `flood`: `--hammer-threads` threads of imports: mostly refused 1 MB bodies;
- `ids`: `--importers` threads of `POST /campaigns` to 500,000 contact ids (4.5 MB) none of
  which is the shop's (422), as a shop could send them;
- `fresh`: `--importers` threads of imports of numbers never imported before, new ones each
  request (every row an insert: `heavy` updates its own numbers again after its first phase).

Each configuration is a set of web settings (`CONFIGS`); every phase runs on a new gunicorn
over the same database, phases of one load back to back across the configurations, so drift
in the machine's load touches them alike. Per configuration, one more phase: one client
importing 10,000 rows back to back with nothing else running (the legitimate single-shop
workload of bench/pipeline.py and the demo), its rows per second and any 429.

B's latency is split with the `Server-Timing` each answer carries (`api/instrumentation.py`):
`queue` = what B measured minus `app` (the network and gunicorn: a free thread, the poller,
parsing), `cpu` = B's thread on a core, `runq` = B's thread waiting for a core, `wait` = the rest
of `app`: PostgreSQL and Redis answering, and the GIL. Columns are medians over B's requests,
and means over B's slowest 2% (`@p99`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
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
from tests.e2e import stack as stack_module  # noqa: E402
from tests.e2e.stack import CONSENT, Stack  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_api_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VICTIM_INTERVAL_S = 0.1
IMPORT_ROWS = 10_000
# The web's processes (`--web-processes`; the Procfile's 2 by default). With one, B always
# shares a process, and its GIL, with A's admitted requests.
web_processes = 2

# The web settings each configuration runs with (the rate and cap of every one: the defaults).
CONFIGS: dict[str, dict[str, str]] = {
    # The code before issue 8's last change: no heavy cap, Python's 5 ms switch interval.
    "before": {"API_SHOP_HEAVY_CONCURRENCY": "0", "WEB_SWITCH_INTERVAL_US": "5000"},
    "after": {},  # the defaults
    "heavy-cap-only": {"WEB_SWITCH_INTERVAL_US": "5000"},
    "switch-only": {"API_SHOP_HEAVY_CONCURRENCY": "0"},
    "switch-500us": {"WEB_SWITCH_INTERVAL_US": "500"},
    "switch-200us": {"WEB_SWITCH_INTERVAL_US": "200"},
    "switch-1ms": {"WEB_SWITCH_INTERVAL_US": "1000"},  # the default before session 20
    # Imports read in the request's thread (api/import_processes.py), at the switch interval
    # of now, and with the one before too: the defaults before session 20.
    "imports-inline": {"IMPORT_PROCESSES": "0"},
    "before-session-20": {"IMPORT_PROCESSES": "0", "WEB_SWITCH_INTERVAL_US": "1000"},
    "heavy-cap-2": {"API_SHOP_HEAVY_CONCURRENCY": "2"},
    "cap-2": {"API_SHOP_CONCURRENCY": "2"},
    # The refusal hold (api/workers.py) off; the defaults above have it on (1 s).
    "no-hold": {"API_REFUSAL_HOLD_MS": "0"},
    # A smaller budget per shop: the admitted work one shop can ask of the web.
    "rate-50": {"API_RATE_LIMIT": "50/second"},
    "rate-25": {"API_RATE_LIMIT": "25/second"},
    # The defaults of the code at `--baseline-tree`.
    "baseline": {},
}
baseline_tree: Path | None = None


def reset() -> None:
    common.reset(DB_URL, REDIS_URL)


def start(config: str, **extra: str) -> Stack:
    # gunicorn imports the app from its working directory, which the Stack takes from this
    # module global when it is made.
    stack_module.ROOT = baseline_tree if config == "baseline" else ROOT
    stack = Stack(
        {
            "DATABASE_URL": DB_URL,
            "REDIS_URL": REDIS_URL,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET,
            "SECRET_KEY": SECRET_KEY,
            "MITTO_API_KEY": "bench-key",
            **CONFIGS[config],
            **extra,
        },
        f"api-fairness-{config}",
    )
    stack.start_web(workers=web_processes, threads=8)
    return stack


def session(key: str) -> requests.Session:
    client = requests.Session()
    client.trust_env = False
    client.headers["Authorization"] = f"Bearer {key}"
    return client


def shop(web: str, domain: str) -> str:
    answer = requests.post(
        f"{web}/admin/shops", headers=ADMIN, json={"domain": domain, "name": domain}, timeout=10
    )
    answer.raise_for_status()
    return answer.json()["api_key"]


def server_timing(header: str) -> dict[str, float]:
    parts = (item.strip().split(";dur=") for item in header.split(","))
    return {name: float(value) for name, value in parts}


def victim_latencies(web: str, key: str, campaign_id: int, seconds: float) -> list[dict]:
    """B's requests: each one's total as B measured it, and its parts (see the docstring)."""
    client = session(key)
    url = f"{web}/campaigns/{campaign_id}/progress"
    samples: list[dict] = []
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        began = time.perf_counter()
        answer = client.get(url, timeout=30)
        total = (time.perf_counter() - began) * 1000
        assert answer.status_code == 200, answer.text
        parts = server_timing(answer.headers["Server-Timing"])
        runq = parts.get("runq", 0.0)
        samples.append(
            {
                "total": total,
                "queue": total - parts["app"],
                "cpu": parts["cpu"],
                "runq": runq,
                "wait": parts["app"] - parts["cpu"] - runq,
            }
        )
        next_at += VICTIM_INTERVAL_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    return samples


def import_body(thread: int) -> bytes:
    """Each thread imports numbers of its own, as separate clients would: threads upserting the
    same rows could wait on each other's row locks in PostgreSQL (not measured: four importers
    got about one importer's rows/s either way, the cores being the bound)."""
    return numbers_body(thread * IMPORT_ROWS)


def numbers_body(first: int) -> bytes:
    rows = [
        {"phone": f"+3069{n:08d}", "consent": CONSENT} for n in range(first, first + IMPORT_ROWS)
    ]
    return json.dumps({"contacts": rows}).encode()


def ids_body(thread: int) -> bytes:
    """A campaign to `IDS` contact ids (4.5 MB, under the 5 MiB cap), none of them the shop's:
    answered 422 naming them, after the body is read, checked and the ids looked up."""
    first = 2_000_000 + thread * IDS
    return json.dumps(
        {"name": "ids", "text": "Hi", "contact_ids": list(range(first, first + IDS))}
    ).encode()


IDS = 500_000


# `fresh` imports: blocks of numbers never imported before, from a random place (numbers above
# the `heavy` threads' own), one block per request.
FRESH_BLOCKS = itertools.count(random.randrange(100, 9_000))


class Hammer:
    """Shop A's threads; `counts[(kind, status)]` answers, `rows` contacts imported."""

    def __init__(self, web: str, key: str) -> None:
        self.web, self.key = web, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.retry_after: set[str] = set()
        self.refusals: set[str] = set()

    def connect(self, kind: str) -> requests.Session:
        client = session(self.key)
        if kind == "light-new":  # a connection per request, as `requests.get` or `curl` does
            client.headers["Connection"] = "close"
        return client

    def run(self, kind: str, thread: int) -> None:
        client = self.connect(kind)
        body = {"heavy": import_body, "ids": ids_body}.get(kind, lambda _: b"")(thread)
        while not self.stop.is_set():
            if kind == "fresh":
                with self.lock:
                    block = next(FRESH_BLOCKS)
                body = numbers_body(block * IMPORT_ROWS)
            try:
                if kind in ("heavy", "fresh"):
                    answer = client.post(
                        f"{self.web}/contacts",
                        data=body,
                        headers={"Content-Type": "application/json"},
                        timeout=60,
                    )
                elif kind == "ids":
                    answer = client.post(
                        f"{self.web}/campaigns",
                        data=body,
                        headers={"Content-Type": "application/json"},
                        timeout=60,
                    )
                else:
                    answer = client.get(f"{self.web}/campaigns?limit=100", timeout=60)
            except requests.ConnectionError:  # counted as status 0: the answer never came
                with self.lock:
                    self.counts[(kind, 0)] = self.counts.get((kind, 0), 0) + 1
                client = self.connect(kind)
                continue
            with self.lock:
                self.counts[(kind, answer.status_code)] = (
                    self.counts.get((kind, answer.status_code), 0) + 1
                )
                if answer.status_code == 200 and kind in ("heavy", "fresh"):
                    answer_json = answer.json()
                    self.rows += answer_json["created"] + answer_json["updated"]
                if answer.status_code == 429:
                    self.retry_after.add(answer.headers.get("Retry-After", "none"))
                    self.refusals.add(answer.json()["description"].split(";")[0])

    def start(self, kinds: list[str]) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.run, args=(kind, n)) for n, kind in enumerate(kinds)
        ]
        for thread in threads:
            thread.start()
        return threads

    def summary(self, seconds: float) -> str:
        answers = ", ".join(
            f"{kind} {status}: {n / seconds:.1f}/s"
            for (kind, status), n in sorted(self.counts.items())
        )
        rows = f"; {self.rows / seconds:,.0f} rows/s" if self.rows else ""
        return (answers or "-") + rows


def load_kinds(load: str, threads: int, importers: int) -> list[str]:
    """Shop A's threads: `threads` of light requests, `importers` of imports (a shop running
    several import scripts at once), both (`mix`), or `threads` of imports (`flood`); `light-new`
    as `light`, a connection per request."""
    return {
        "light": ["light"] * threads,
        "light-new": ["light-new"] * threads,
        "heavy": ["heavy"] * importers,
        "mix": ["light"] * (threads - importers) + ["heavy"] * importers,
        "flood": ["heavy"] * threads,
        "fresh": ["fresh"] * importers,
        "ids": ["ids"] * importers,
    }[load]


def hammer_process(web: str, key: str, kinds: list[str], nice: int, pipe) -> None:
    """Shop A in a process of its own, at `nice`: on this one machine its client's CPU (24
    threads of Python sending requests) would otherwise be taken from the server, which a
    remote client's is not. It hammers until told to stop, then sends its summary back."""
    os.nice(nice)
    hammer = Hammer(web, key)
    threads = hammer.start(kinds)
    began = time.monotonic()
    pipe.recv()
    hammer.stop.set()
    for thread in threads:
        thread.join()
    pipe.send(hammer.summary(time.monotonic() - began))


def victim_phase(
    config: str, load: str | None, keys: tuple[str, str], campaign_id: int, args
) -> tuple[list[dict], str]:
    stack = start(config)
    try:
        if not load:
            return victim_latencies(stack.web, keys[1], campaign_id, args.seconds), "-"
        ours, theirs = multiprocessing.Pipe()
        hammer = multiprocessing.get_context("fork").Process(
            target=hammer_process,
            args=(
                stack.web,
                keys[0],
                load_kinds(load, args.hammer_threads, args.importers),
                args.hammer_nice,
                theirs,
            ),
        )
        hammer.start()
        try:
            time.sleep(1.0)  # A's requests under way before B measures
            samples = victim_latencies(stack.web, keys[1], campaign_id, args.seconds)
        finally:
            ours.send("stop")
            summary = ours.recv()
            hammer.join()
        return samples, summary
    finally:
        stack.close()


def sequential_imports(config: str, key: str, seconds: float) -> str:
    """One client importing 10,000 rows back to back, alone: rows/s and every status."""
    stack = start(config)
    try:
        hammer = Hammer(stack.web, key)
        thread = hammer.start(["heavy"])[0]
        time.sleep(seconds)
        hammer.stop.set()
        thread.join()
        return hammer.summary(seconds)
    finally:
        stack.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(fraction * len(ordered)) - 1)]


def row(config: str, load: str, samples: list[dict], hammer: str) -> str:
    totals = [s["total"] for s in samples]
    slowest = sorted(samples, key=lambda s: s["total"])[-max(1, len(samples) // 50) :]
    parts = " | ".join(
        f"{statistics.median(s[part] for s in samples):.1f} /"
        f" {statistics.mean(s[part] for s in slowest):.1f}"
        for part in ("queue", "cpu", "runq", "wait")
    )
    return (
        f"| {config} | {load} | {len(samples)} | {statistics.median(totals):.1f} |"
        f" {percentile(totals, 0.99):.1f} | {parts} | {hammer} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--hammer-threads", type=int, default=24)
    parser.add_argument("--configs", default="before,after,heavy-cap-only,switch-only")
    parser.add_argument("--importers", type=int, default=4)
    parser.add_argument("--loads", default="light,heavy,mix,flood")
    parser.add_argument("--import-seconds", type=float, default=10)
    parser.add_argument(
        "--hammer-nice", type=int, default=10, help="shop A's process's niceness (0: as B's)"
    )
    parser.add_argument("--web-processes", type=int, default=2)
    parser.add_argument("--baseline-tree", type=Path)
    args = parser.parse_args()
    global web_processes, baseline_tree
    web_processes, baseline_tree = args.web_processes, args.baseline_tree
    configs = args.configs.split(",")
    loads = args.loads.split(",")
    unknown = [config for config in configs if config not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {sorted(CONFIGS)}")
    if ("baseline" in configs) != (baseline_tree is not None):
        parser.error("the configuration `baseline` runs the web of --baseline-tree: give both")
    reset()
    stack = start("after")
    try:
        keys = (shop(stack.web, "hammer.example"), shop(stack.web, "victim.example"))
        victim, hammer = session(keys[1]), session(keys[0])
        victim.post(f"{stack.web}/contacts", json={"contacts": [{"phone": "+306912345678"}]})
        campaign_id = victim.post(
            f"{stack.web}/campaigns", json={"name": "b", "text": "Hi"}, timeout=10
        ).json()["id"]
        for n in range(100):  # the page A's light requests read
            hammer.post(f"{stack.web}/campaigns", json={"name": f"a{n}", "text": "Hello"})
        hammer.post(
            f"{stack.web}/contacts",
            data=import_body(0),
            headers={"Content-Type": "application/json"},
        )
    finally:
        stack.close()
    rows, imports = [], []
    for load in [None, *loads]:
        for config in configs:
            samples, hammered = victim_phase(config, load, keys, campaign_id, args)
            rows.append(row(config, load or "B alone", samples, hammered))
            print(rows[-1], flush=True)
    for config in configs:
        imports.append(f"| {config} | {sequential_imports(config, keys[0], args.import_seconds)} |")
        print(imports[-1], flush=True)
    print(
        f"\n{args.hammer_threads} threads of shop A (nice {args.hammer_nice});"
        " shop B polling progress 10 times a second;"
        f" {args.seconds:.0f} s per phase; settings per configuration:"
    )
    for config in configs:
        tree = f" of {baseline_tree}" if config == "baseline" else ""
        print(f"- {config}: {CONFIGS[config] or 'the defaults'}{tree}")
    print(
        "\n| config | A's load | B requests | B p50 ms | B p99 ms | queue p50 / @p99 |"
        " cpu p50 / @p99 | runq p50 / @p99 | wait p50 / @p99 | A's answers |"
        "\n|---|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))
    print(
        f"\nOne client importing {IMPORT_ROWS:,} rows back to back, alone,"
        f" {args.import_seconds:.0f} s:\n\n| config | answers |\n|---|---|"
    )
    print("\n".join(imports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
