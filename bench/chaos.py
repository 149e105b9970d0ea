"""The chaos suite (issue 9): faults against real processes, and what they leave behind.

    .venv/bin/python bench/chaos.py [--only NAME,...] [--list] [--per-shop 300]
                                    [--soak-recipients 10000] [--soak-kills 30]

Each scenario starts its own stack (the provider simulator, gunicorn, Dramatiq workers and the
clock, with short reconcile intervals so that everything settles within seconds), sends
campaigns of several shops, disturbs them (a fault point armed with CHAOS_FAULTS, `kill -9` of
workers, Redis down, PostgreSQL restarted, a provider that hangs, resets, throttles or slows
down, a merchant pausing, cancelling, opting out), restarts every worker or clock that dies,
waits until everything has settled, and prints one row:

- `max sends`: the most messages the simulator received for one recipient (must be 1);
- `left`: recipients still `pending`/`sending` (must be 0);
- `debits/accepted`: debit rows against messages the simulator accepted (must be equal, and
  the recipients `sent` exactly the numbers the simulator got);
- `balance`: every shop's balance equals its ledger, its top-up minus the segments of what the
  simulator accepted for it, and is >= 0;
- `open res.`: reservations still `active` once every campaign finished, and holds smaller
  than their messages of unknown outcome (must be 0);
- `unknown/in flight`: recipients failed as `unknown_outcome` against the calls in flight at
  the faults (recipients `sending` when a process died or an outage began, plus the calls the
  simulator hung up on or reset: an upper bound, it counts the calls of processes that lived);
- `settle s`: seconds from the end of the disruption (the last fault) until settled; `total s`
  from the enqueue.

The bench starts its own Redis (`redis-server` on a free port) and its own PostgreSQL cluster
(`initdb` into a temporary directory, on a free port): Redis is stopped for 30 s and PostgreSQL
restarted, which must never happen to servers that others use. tests/e2e/test_chaos.py runs a
bounded subset against the test servers.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from astronote.launcher import free_port, signal_group, wait_for  # noqa: E402
from service.links import unsubscribe_token  # noqa: E402
from service.segments import segment_count  # noqa: E402
from tests.e2e.stack import LOGS, Stack  # noqa: E402

FINAL = ("completed", "failed", "cancelled")
QUEUES = ("sms-send", "delivery-status-update")
SECRETS = {
    "ADMIN_TOKEN": "chaos-admin-token-0123456789abcdef",
    "DLR_WEBHOOK_SECRET": "chaos-dlr-secret-0123456789abcdef",
    "SECRET_KEY": "chaos-secret-key-0123456789abcdef0123456789",
    "MITTO_API_KEY": "chaos-mitto-key",
    "MITTO_SENDER": "Astronote",
}
# Short but valid timeouts (one window at its worst, 1 + 4 s + 250 ms, fits the 6.4 s time
# limit), a clock that repairs every second, and a broker that hands a dead worker's messages
# to another after 2 s.
STACK_ENV = {
    "SEND_BATCH_SIZE": "100",
    "SEND_CONCURRENCY": "16",
    "PROVIDER_CONNECT_TIMEOUT_MS": "1000",
    "PROVIDER_READ_TIMEOUT_MS": "4000",
    "CLAIM_TIMEOUT_MS": "8000",
    "RECONCILE_INTERVAL_MS": "1000",
    "STATUS_REFRESH_INTERVAL_MS": "1000",
    "BATCH_STALE_AFTER_MS": "10000",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "2000",
    "BROKER_MAINTENANCE_CHANCE": "1000000",
    "SCHEDULER_LOCK_TTL_MS": "3000",
    "SCHEDULER_LOCK_RETRY_MS": "500",
    "API_RATE_LIMIT": "5000/second",
    "LOG_LEVEL": "WARNING",
}
PERSONAL_TEXT = "Hi {first_name}, the chaos sale starts now"
BULK_TEXT = "The chaos sale starts now, everything 20% off"


@dataclass
class Scenario:
    name: str
    what: str
    faults: str = ""  # CHAOS_FAULTS of the workers and the clock
    shops: int = 5
    per_shop: int = 300
    bulk_shops: int = 0  # shops whose campaign has one text for all (`/smsbulk`)
    worker_groups: int = 1  # `dramatiq` commands, each restarted when it dies
    processes: int = 2  # worker processes per group
    latency_ms: int = 50
    dlr_delay_ms: int = 100
    disrupt: Callable[[Run], None] | None = None
    settle_timeout: float = 180
    env: dict[str, str] = field(default_factory=dict)  # over STACK_ENV


@dataclass
class Fault:
    what: str
    at: float
    in_flight: set[int]


@dataclass
class Row:
    scenario: str
    recipients: int = 0
    faults: str = ""
    max_sends: int = 0
    left: int = 0
    debits: int = 0
    accepted: int = 0
    balance_ok: bool = False
    open_reservations: int = 0
    unknown: int = 0
    in_flight: int = 0
    settle_s: float | None = None
    total_s: float | None = None
    problems: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        return [
            self.scenario,
            str(self.recipients),
            self.faults,
            str(self.max_sends),
            str(self.left),
            f"{self.debits}/{self.accepted}",
            "exact, >= 0" if self.balance_ok else "WRONG",
            str(self.open_reservations),
            f"{self.unknown}/{self.in_flight}",
            "-" if self.settle_s is None else f"{self.settle_s:.1f}",
            "-" if self.total_s is None else f"{self.total_s:.1f}",
            "; ".join(self.problems) or "ok",
        ]


HEADER = [
    "scenario",
    "recipients",
    "faults",
    "max sends",
    "left",
    "debits/accepted",
    "balance",
    "open res.",
    "unknown/in flight",
    "settle s",
    "total s",
    "invariants",
]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


class Run:
    """One scenario on one stack: its processes, its campaigns, its faults."""

    def __init__(self, scenario: Scenario, stack: Stack, database_url: str) -> None:
        self.scenario, self.stack, self.database_url = scenario, stack, database_url
        self.faults: list[Fault] = []
        self.live: dict[str, str] = {}  # running label -> its base (worker-0, clock)
        self.restarts: Counter[str] = Counter()
        self.killed_by_bench: set[str] = set()
        self.campaigns: list[tuple[int, str, int]] = []  # (shop id, API key, campaign id)
        self.topups: dict[int, int] = {}
        self.problems: list[str] = []
        self.disrupted_until = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    # --- the database, which may be restarting ---------------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple]:
        deadline = time.monotonic() + 120
        while True:
            try:
                with psycopg2.connect(self.database_url, connect_timeout=5) as conn:
                    with conn.cursor() as cursor:
                        cursor.execute(sql, params)
                        rows = cursor.fetchall() if cursor.description else []
                conn.close()
                return rows
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def snapshot(self, what: str) -> None:
        """Record a fault, with every recipient whose call may have been in flight then."""
        ids = {
            row[0]
            for row in self.query(
                "SELECT id FROM campaign_recipient WHERE status = 'sending'"
                " OR (status = 'failed' AND error = 'unknown_outcome')"
            )
        }
        with self._lock:
            self.faults.append(Fault(what, time.monotonic(), ids))

    # --- processes -------------------------------------------------------------------------
    def start(self) -> None:
        scenario, stack = self.scenario, self.stack
        stack.start_sim(
            "--latency-ms", str(scenario.latency_ms), "--dlr-delay-ms", str(scenario.dlr_delay_ms)
        )
        stack.start_web(workers=2)
        for group in range(scenario.worker_groups):
            self._start(f"worker-{group}")
        self._start("clock")
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _start(self, base: str) -> None:
        self.restarts[base] += 1
        label = f"{base}.{self.restarts[base]}"
        chaos = {"CHAOS_FAULTS": self.scenario.faults}
        if base == "clock":
            self.stack.start_clock(label, **chaos)
        else:
            self.stack.start_worker(label, processes=self.scenario.processes, threads=4, **chaos)
        with self._lock:
            self.live[label] = base

    def _supervise(self) -> None:
        """Restart every worker or clock that exits, recording the fault. A worker process
        that dies (its Dramatiq parent then stops its siblings, and exits) is recorded at
        once, before the calls other processes had in flight resolve."""
        children: dict[str, set[int]] = {}
        while not self._stop.is_set():
            for label, base in list(self.live.items()):
                process = self.stack.processes.get(label)
                if process is None:
                    continue
                now = _children(process.pid)
                gone = children.get(label, set()) - now
                children[label] = now
                if gone and process.poll() is None:
                    try:
                        self.snapshot(f"{label}: worker process {sorted(gone)} gone")
                    except Exception as error:  # noqa: BLE001 - keep supervising
                        self.problems.append(f"snapshot failed: {error}")
                if process.poll() is None:
                    continue
                with self._lock:
                    self.live.pop(label, None)
                how = "killed -9 by the bench" if label in self.killed_by_bench else "exited"
                try:
                    self.snapshot(f"{label} {how} ({process.returncode})")
                except Exception as error:  # noqa: BLE001 - keep supervising
                    self.problems.append(f"snapshot failed: {error}")
                if not self._stop.is_set():
                    self._start(base)
            self._stop.wait(0.1)

    def kill(self, base: str) -> None:
        """`kill -9` of a worker group (its Dramatiq parent and every worker process)."""
        label = next((lb for lb, b in list(self.live.items()) if b == base), None)
        if label is None:
            return
        self.killed_by_bench.add(label)
        signal_group(self.stack.processes[label].pid, signal.SIGKILL)

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor:
            self._supervisor.join(timeout=5)
        self.stack.close()

    # --- the merchants' side -----------------------------------------------------------------
    def launch(self) -> float:
        """Create the shops, import their contacts, create and enqueue one campaign each;
        returns the clock reading of the first enqueue."""
        scenario, stack = self.scenario, self.stack
        drafts = []
        for index in range(scenario.shops):
            credits = scenario.per_shop * 2 + 100
            shop_id, key = stack.create_shop(f"shop{index}.chaos.example", credits=credits)
            self.topups[shop_id] = credits
            stack.import_contacts(key, scenario.per_shop, start=index * 1_000_000)
            text = BULK_TEXT if index < scenario.bulk_shops else PERSONAL_TEXT
            campaign = stack.call(
                "POST",
                "/campaigns",
                key,
                json={"name": f"chaos {index}", "text": text, "append_unsubscribe": False},
            ).json()
            drafts.append((shop_id, key, campaign["id"]))
        started = time.monotonic()
        for shop_id, key, campaign_id in drafts:
            answer = stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key)
            if answer.status_code != 202:
                raise RuntimeError(f"enqueue answered {answer.status_code}: {answer.text}")
            self.campaigns.append((shop_id, key, campaign_id))
        return started

    def sent_to_provider(self) -> int:
        return int(requests.get(f"{self.stack.sim}/_sim/stats", timeout=10).json()["accepted"])

    def wait_sent(self, count: int, timeout: float = 120) -> None:
        wait_for(lambda: self.sent_to_provider() >= count, timeout, f"{count} messages sent")

    # --- settling and measuring ------------------------------------------------------------
    def unsettled(self) -> str | None:
        """What still moves, or None once everything has settled."""
        campaigns, moving, active = self.query(
            "SELECT (SELECT count(*) FROM campaign WHERE status NOT IN %s),"
            " (SELECT count(*) FROM campaign_recipient WHERE status IN ('pending', 'sending')),"
            " (SELECT count(*) FROM credit_reservation WHERE status = 'active')",
            FINAL,
        )[0]
        if campaigns or moving or active:
            return f"{campaigns} campaigns open, {moving} recipients moving, {active} reserving"
        stats = requests.get(f"{self.stack.sim}/_sim/stats", timeout=10).json()
        if stats["dlr_pending"]:
            return f"{stats['dlr_pending']} delivery reports to post"
        queued = self.queued()
        if not queued:
            return None
        # Which they are: a run that does not settle says what it waited for.
        return f"{len(queued)} messages queued: " + "; ".join(queued[:5])

    def queued(self) -> list[str]:
        """Messages the Redis broker still holds (retries, repairs, status updates), each as
        `queue: actor(args) retries=N eta=+S s`."""
        if self.stack.env.get("BROKER_URL"):
            return []
        import redis

        client = redis.Redis.from_url(self.stack.env["REDIS_URL"])
        now_ms = time.time() * 1000
        found = []
        try:
            for queue in QUEUES:
                for suffix in ("", ".DQ"):
                    for body in client.hvals(f"dramatiq:{queue}{suffix}.msgs"):
                        message = json.loads(body)
                        options = message.get("options", {})
                        eta = options.get("eta")
                        found.append(
                            f"{queue}{suffix}: {message.get('actor_name')}"
                            f"{tuple(message.get('args', ()))}"
                            f" retries={options.get('retries', 0)}"
                            + (f" eta={(eta - now_ms) / 1000:+.0f} s" if eta else "")
                        )
            return found
        finally:
            client.close()

    def settle(self) -> float | None:
        deadline = time.monotonic() + self.scenario.settle_timeout
        last = "?"
        while time.monotonic() < deadline:
            try:
                state = self.unsettled()
            except (requests.RequestException, OSError) as error:
                state = f"not answering: {error}"
            if state is None:
                return time.monotonic()
            last = state
            time.sleep(0.5)
        self.problems.append(f"not settled after {self.scenario.settle_timeout:.0f} s: {last}")
        return None

    def fault_log(self) -> list[tuple[float, str]]:
        """(time, point:action) of every fault point that fired, from the processes' logs."""
        fired = []
        for path in glob.glob(str(LOGS / f"{self.stack.name}.*.log")):
            for line in Path(path).read_text(errors="replace").splitlines():
                if '"chaos fault"' not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                at = datetime.fromisoformat(entry["ts"]).timestamp()
                fired.append((at, f"{entry.get('point')}:{entry.get('action')}"))
        return sorted(fired)

    def measure(self, started: float, settled: float | None) -> Row:
        scenario = self.scenario
        row = Row(scenario.name, problems=list(self.problems))
        messages = requests.get(f"{self.stack.sim}/_sim/messages", timeout=60).json()["messages"]
        stats = requests.get(f"{self.stack.sim}/_sim/stats", timeout=10).json()
        phones = {
            phone.lstrip("+"): (shop_id, status)
            for phone, shop_id, status in self.query(
                "SELECT phone, shop_id, status FROM campaign_recipient"
            )
        }
        row.recipients = len(phones)
        per_number = Counter(str(m["to"]).lstrip("+") for m in messages)
        row.max_sends = max(per_number.values(), default=0)
        row.accepted = len(messages)
        row.left = sum(1 for _, status in phones.values() if status in ("pending", "sending"))
        row.debits = self.query("SELECT count(*) FROM credit_transaction WHERE kind = 'debit'")[0][
            0
        ]
        sent = {phone for phone, (_, status) in phones.items() if status == "sent"}
        if row.max_sends > 1:
            row.problems.append(f"{sum(c > 1 for c in per_number.values())} recipients sent twice")
        if row.left:
            row.problems.append(f"{row.left} recipients left pending/sending")
        if row.debits != row.accepted or sent != set(per_number):
            row.problems.append(
                f"sent {len(sent)} vs provider {len(per_number)}"
                f" ({len(sent - set(per_number))} sent not at the provider,"
                f" {len(set(per_number) - sent)} at the provider not sent)"
            )

        # Balances: the ledger, and the top-up minus what the provider accepted for the shop.
        cost: Counter[int] = Counter()
        for message in messages:
            owner = phones.get(str(message["to"]).lstrip("+"))
            if owner is not None:
                cost[owner[0]] += segment_count(message["text"])
        row.balance_ok = True
        for shop_id, balance, ledger in self.query(
            "SELECT s.id, s.credit_balance, (SELECT coalesce(sum(amount), 0)"
            " FROM credit_transaction t WHERE t.shop_id = s.id) FROM shop s"
        ):
            expected = self.topups.get(shop_id, 0) - cost[shop_id]
            if not balance == ledger == expected or balance < 0:
                row.balance_ok = False
                row.problems.append(
                    f"shop {shop_id}: balance {balance}, ledger {ledger}, expected {expected}"
                )

        # Reservations: none active once finished; a hold covers its unknown outcomes.
        row.open_reservations = self.query(
            "SELECT count(*) FROM credit_reservation r JOIN campaign c ON c.id = r.campaign_id"
            " WHERE c.status IN %s AND (r.status = 'active' OR r.amount - r.consumed - r.released"
            " < (SELECT count(*) FROM campaign_recipient x WHERE x.campaign_id = c.id"
            "    AND x.status = 'failed' AND x.error = 'unknown_outcome'))",
            FINAL,
        )[0][0]
        if row.open_reservations:
            row.problems.append(f"{row.open_reservations} reservations open or short")
        # A hold only while something is unknown; a campaign that sent something not `failed`.
        for campaign_id, status, state, unknown_count, sent_count in self.query(
            "SELECT c.id, c.status, r.status,"
            " (SELECT count(*) FROM campaign_recipient x WHERE x.campaign_id = c.id"
            "  AND x.status = 'failed' AND x.error = 'unknown_outcome'),"
            " (SELECT count(*) FROM campaign_recipient x WHERE x.campaign_id = c.id"
            "  AND x.status = 'sent')"
            " FROM campaign c JOIN credit_reservation r ON r.campaign_id = c.id"
            " WHERE c.status IN %s",
            FINAL,
        ):
            if state != ("held" if unknown_count else "released"):
                row.problems.append(
                    f"campaign {campaign_id}: reservation {state} with {unknown_count} unknown"
                )
            if status == "failed" and sent_count:
                row.problems.append(f"campaign {campaign_id} failed with {sent_count} sent")

        # Unknown outcomes against the calls in flight at the faults.
        unknown = {
            rid
            for (rid,) in self.query(
                "SELECT id FROM campaign_recipient"
                " WHERE status = 'failed' AND error = 'unknown_outcome'"
            )
        }
        at_faults: set[int] = set().union(*(f.in_flight for f in self.faults))
        provider_faults = stats.get("hangs", 0) + stats["timeouts"] + stats["resets"]
        row.unknown, row.in_flight = len(unknown), len(at_faults) + provider_faults
        if row.unknown > row.in_flight:
            row.problems.append("more unknown outcomes than calls in flight at the faults")
        if not provider_faults and unknown - at_faults:
            row.problems.append(f"{len(unknown - at_faults)} unknown outcomes not in flight")

        fired = self.fault_log()
        kinds = Counter(kind for _, kind in fired)
        bench_kills = sum("by the bench" in f.what for f in self.faults)
        exits = sum(" exited " in f.what for f in self.faults)
        parts = [f"{n} {kind}" for kind, n in sorted(kinds.items())]
        if bench_kills:
            parts.append(f"{bench_kills} kill -9")
        if exits:
            parts.append(f"{exits} restarts")
        for stat, says in (
            ("hangs", "calls hung"),
            ("timeouts", "answers too late"),
            ("resets", "resets"),
            ("throttled", "429s"),
        ):
            if stats.get(stat):
                parts.append(f"{stats[stat]} {says}")
        row.faults = ", ".join(parts) or "-"
        last_fault = max(
            [self.disrupted_until]
            + [f.at for f in self.faults]
            + [time.monotonic() - (time.time() - at) for at, _ in fired]
        )
        if settled is not None:
            row.total_s = settled - started
            row.settle_s = max(0.0, settled - max(last_fault, started))
        return row


def _children(pid: int) -> set[int]:
    """The child processes of `pid` (Linux), empty when it is gone."""
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


class StartFailed(Exception):
    """The stack did not start (on a machine too busy to boot it in time): nothing was sent."""


def run_scenario(scenario: Scenario, stack: Stack, database_url: str) -> Row:
    """Start the stack, send, disturb, settle, measure; the stack is stopped afterwards."""
    run = Run(scenario, stack, database_url)
    try:
        try:
            run.start()
        except TimeoutError as error:
            raise StartFailed(str(error)) from error
        started = run.launch()
        if scenario.disrupt:
            scenario.disrupt(run)
            run.disrupted_until = time.monotonic()
        settled = run.settle()
        run._stop.set()  # no restart from here on
        return run.measure(started, settled)
    finally:
        run.stop()


# --- disruptions ------------------------------------------------------------------------------


def kill_soak(kills: int, every_s: float) -> Callable[[Run], None]:
    def disrupt(run: Run) -> None:
        run.wait_sent(200)
        groups = [f"worker-{g}" for g in range(run.scenario.worker_groups)]
        done = 0
        while done < kills:
            time.sleep(every_s)
            pending = run.query("SELECT count(*) FROM campaign_recipient WHERE status = 'pending'")[
                0
            ][0]
            if not pending:
                run.problems.append(f"only {done} kills before everything was claimed")
                return
            run.kill(groups[done % len(groups)])
            done += 1

    return disrupt


def provider(config: dict[str, Any], after: int, hold_s: float) -> Callable[[Run], None]:
    """Change the simulator's behaviour once `after` messages went out, for `hold_s`."""

    def disrupt(run: Run) -> None:
        run.wait_sent(after)
        requests.post(f"{run.stack.sim}/_sim/config", json=config, timeout=5).raise_for_status()
        time.sleep(hold_s)
        normal = {name: type(value)() for name, value in config.items() if name != "timeout_s"}
        requests.post(f"{run.stack.sim}/_sim/config", json=normal, timeout=5).raise_for_status()

    return disrupt


class OwnServers:
    """A Redis and a PostgreSQL cluster of the bench's own, on free ports, in a temp dir."""

    def __init__(self) -> None:
        self.redis_port, self.pg_port = free_port(), free_port()
        self.redis: subprocess.Popen | None = None
        # initdb refuses to run as root: the cluster then belongs to the postgres user.
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def pgdata(self) -> Path:
        return self.dir / "pgdata"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/astronote_chaos"

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        wait_for(lambda: redis.Redis.from_url(self.redis_url).ping(), 10, "the bench's Redis")

    def stop_redis(self) -> None:
        """SIGKILL: whatever it held is lost, as in a crash."""
        if self.redis:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    def _pg(self, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, *args], check=True, stdout=subprocess.DEVNULL, cwd=self.dir
        )

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.pg_port} -k {self.dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c max_connections=300"
        )
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.dir / "pg.log"),
            "-o",
            options,
            "-w",
            *extra,
            action,
        )

    def start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="astronote-chaos-"))
        self.start_redis()
        if not self.pgdata.exists():
            if self.as_postgres:
                shutil.chown(self.dir, "postgres")
            self._pg(
                "initdb", "-D", str(self.pgdata), "-A", "trust", "-U", "postgres", "-E", "UTF8"
            )
        self.pg_ctl("start")
        admin = psycopg2.connect(self.database_url.rsplit("/", 1)[0] + "/postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE astronote_chaos")
        admin.close()

    def reset(self) -> None:
        """An empty schema, migrated, and an empty Redis."""
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cursor:
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        subprocess.run(
            [sys.executable, "-m", "astronote", "migrate"],
            check=True,
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url},
            stdout=subprocess.DEVNULL,
        )
        import redis

        redis.Redis.from_url(self.redis_url).flushall()

    def close(self) -> None:
        self.stop_redis()
        try:
            self.pg_ctl("stop", "-m", "fast")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_down(servers: OwnServers, seconds: float) -> Callable[[Run], None]:
    def disrupt(run: Run) -> None:
        run.wait_sent(300)
        run.snapshot("Redis killed")
        servers.stop_redis()
        time.sleep(seconds)
        servers.start_redis()
        run.snapshot("Redis back, empty")

    return disrupt


def postgres_restart(servers: OwnServers, down_s: float) -> Callable[[Run], None]:
    def disrupt(run: Run) -> None:
        run.wait_sent(300)
        run.snapshot("PostgreSQL stopping")
        servers.pg_ctl("stop", "-m", "fast")
        time.sleep(down_s)
        servers.pg_ctl("start")
        run.snapshot("PostgreSQL back")

    return disrupt


def merchant_actions(run: Run) -> None:
    """Shop 0 pauses then resumes, shop 1 cancels, shop 2's customers opt out: none of them
    may get a message more than a second after the action took effect."""
    (shop_p, key_p, paused), (_, key_c, cancelled), (shop_o, key_o, opted) = run.campaigns[:3]
    wait_for(
        lambda: all(
            run.query(
                "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s"
                " AND status = 'sent'",
                cid,
            )[0][0]
            >= 40
            for cid in (paused, cancelled, opted)
        ),
        120,
        "each campaign under way",
    )

    def provider_count(campaign_id: int, only: set[str] | None = None) -> set[str]:
        """The campaign's numbers (of `only`, if given) the provider has a message for."""
        phones = {
            row[0].lstrip("+")
            for row in run.query(
                "SELECT phone FROM campaign_recipient WHERE campaign_id = %s", campaign_id
            )
        }
        if only is not None:
            phones &= only
        messages = requests.get(f"{run.stack.sim}/_sim/messages", timeout=30).json()["messages"]
        return {str(m["to"]).lstrip("+") for m in messages} & phones

    pending = run.query(
        "SELECT contact_id, phone FROM campaign_recipient WHERE campaign_id = %s"
        " AND status = 'pending' ORDER BY id DESC LIMIT 30",
        opted,
    )
    secret = run.stack.env["SECRET_KEY"]
    assert run.stack.call("POST", f"/campaigns/{paused}/pause", key_p).status_code == 200
    assert run.stack.call("POST", f"/campaigns/{cancelled}/cancel", key_c).status_code == 200
    for contact_id, _ in pending:
        token = unsubscribe_token(secret, shop_o, contact_id)
        assert run.stack.call("POST", f"/u/{token}").status_code in (200, 303)
    time.sleep(1.0)
    after_pause, after_cancel = provider_count(paused), provider_count(cancelled)
    opted_phones = {phone.lstrip("+") for _, phone in pending}
    after_opt_out = provider_count(opted, opted_phones)
    time.sleep(3.0)
    late = {
        "pause": len(provider_count(paused) - after_pause),
        "cancel": len(provider_count(cancelled) - after_cancel),
        "opt-out": len(provider_count(opted, opted_phones) - after_opt_out),
    }
    assert run.stack.call("POST", f"/campaigns/{paused}/resume", key_p).status_code == 200
    run.disrupted_until = time.monotonic()
    for action, count in late.items():
        if count:
            run.problems.append(f"{count} sent more than 1 s after the {action}")
    run.problems.append(
        f"late sends: pause {late['pause']}, cancel {late['cancel']},"
        f" opt-out {late['opt-out']} of {len(pending)}"
    )


# --- the table ---------------------------------------------------------------------------------


def fault_point_scenarios(per_shop: int) -> list[Scenario]:
    """Every fault point, killing and raising; one shop of five sends by `/smsbulk`."""
    points = [
        ("after_claim_commit", 0.05, 0.1),
        ("after_provider_answer", 0.05, 0.1),
        ("inside_persist", 0.05, 0.1),
        ("after_persist_before_ack", 0.2, 0.2),
        ("inside_finalisation", 0.5, 0.5),
    ]
    scenarios = []
    for point, kill, fail in points:
        for action, chance in (("kill", kill), ("raise", fail)):
            scenarios.append(
                Scenario(
                    f"{point} {action}",
                    f"CHAOS_FAULTS={point}={action}:{chance}",
                    faults=f"{point}={action}:{chance}",
                    per_shop=per_shop,
                    bulk_shops=1,
                )
            )
    # The repair runs only after a persist failed.
    for action, chance in (("kill", 0.3), ("raise", 0.5)):
        scenarios.append(
            Scenario(
                f"inside_repair {action}",
                f"inside_persist=raise:0.3, inside_repair={action}:{chance}",
                faults=f"inside_persist=raise:0.3,inside_repair={action}:{chance}",
                per_shop=per_shop,
                bulk_shops=1,
            )
        )
    return scenarios


def all_scenarios(args: argparse.Namespace, servers: OwnServers) -> list[Scenario]:
    per_shop = args.per_shop
    return [
        *fault_point_scenarios(per_shop),
        Scenario(
            "kill -9 soak",
            f"{args.soak_kills} kill -9 of 2 worker groups (2 processes each), alternately",
            shops=5,
            per_shop=args.soak_recipients // 5,
            bulk_shops=1,
            worker_groups=2,
            processes=2,
            # Slow enough that the kills fall while recipients are still to be claimed.
            latency_ms=250,
            env={"SEND_CONCURRENCY": "8"},
            disrupt=kill_soak(args.soak_kills, args.kill_every),
            settle_timeout=600,
        ),
        Scenario(
            "Redis down 30 s",
            "the bench's redis-server killed, restarted empty 30 s later",
            per_shop=per_shop * 2,
            latency_ms=100,
            disrupt=redis_down(servers, 30),
            settle_timeout=240,
        ),
        Scenario(
            "PostgreSQL restarted",
            "pg_ctl stop -m fast, 5 s down, start, mid-send",
            per_shop=per_shop * 2,
            latency_ms=100,
            disrupt=postgres_restart(servers, 5),
        ),
        Scenario(
            "provider hangs",
            "every call held 30 s and dropped unanswered (nothing accepted), for 10 s",
            per_shop=per_shop,
            disrupt=provider({"hang_rate": 1.0, "timeout_s": 30}, 200, 10),
        ),
        Scenario(
            "provider accepts, then hangs",
            "every call accepted, answered after 30 s, for 10 s",
            per_shop=per_shop,
            disrupt=provider({"timeout_rate": 1.0, "timeout_s": 30}, 200, 10),
        ),
        Scenario(
            "reset after accepting",
            "20% of calls accepted, then the connection reset, for 10 s",
            per_shop=per_shop,
            disrupt=provider({"reset_rate": 0.2}, 200, 10),
        ),
        Scenario(
            "429 storm",
            "90% of calls answered 429 (Retry-After: 1) for 15 s",
            per_shop=per_shop,
            disrupt=provider({"fail_rate_429": 0.9}, 200, 15),
        ),
        Scenario(
            "latency 3 s",
            "every call answered after 3 s (read timeout 4 s) for 20 s",
            per_shop=per_shop,
            disrupt=provider({"latency_ms": 3000}, 200, 20),
        ),
        Scenario(
            "pause/cancel/opt-out",
            "shop 0 paused 4 s then resumed, shop 1 cancelled, 30 of shop 2 opted out",
            shops=3,
            per_shop=per_shop * 2,
            latency_ms=100,
            disrupt=merchant_actions,
        ),
    ]


def bench_stack(servers: OwnServers, scenario: Scenario) -> Stack:
    env = {
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "BROKER_URL": "",
        **SECRETS,
        **STACK_ENV,
        **scenario.env,
    }
    return Stack(env, f"chaos-{scenario.name.replace(' ', '_').replace('/', '-')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names (prefixes)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--per-shop", type=int, default=300)
    parser.add_argument("--soak-recipients", type=int, default=10_000)
    parser.add_argument("--soak-kills", type=int, default=30)
    parser.add_argument("--kill-every", type=float, default=2.0)
    args = parser.parse_args()
    servers = OwnServers()
    scenarios = all_scenarios(args, servers)
    if args.list:
        for scenario in scenarios:
            print(f"{scenario.name}: {scenario.what}")
        return 0
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    chosen = [s for s in scenarios if not wanted or any(s.name.startswith(w) for w in wanted)]
    rows: list[Row] = []
    servers.start()
    try:
        for scenario in chosen:
            print(f"== {scenario.name}: {scenario.what}", file=sys.stderr, flush=True)
            began = time.monotonic()
            for attempt in range(3):
                servers.reset()
                try:
                    row = run_scenario(
                        scenario, bench_stack(servers, scenario), servers.database_url
                    )
                except StartFailed as error:
                    row = Row(scenario.name, problems=[f"stack did not start: {error}"])
                    print(f"   (start failed, attempt {attempt + 1}: {error})", file=sys.stderr)
                    time.sleep(20)
                    continue
                except Exception as error:  # noqa: BLE001 - report it in the table and go on
                    row = Row(
                        scenario.name, problems=[f"bench error: {type(error).__name__}: {error}"]
                    )
                break
            rows.append(row)
            print(
                "   " + " | ".join(row.cells()) + f"  ({time.monotonic() - began:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        servers.close()
    print(markdown(rows))
    for scenario in chosen:
        print(f"- {scenario.name}: {scenario.what}")
    return 0 if all(not _violations(row) for row in rows) else 1


def _violations(row: Row) -> list[str]:
    return [p for p in row.problems if not p.startswith("late sends:")]


violations = _violations


if __name__ == "__main__":
    raise SystemExit(main())
