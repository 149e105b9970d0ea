"""Real processes for end-to-end tests: the provider simulator, gunicorn and Dramatiq workers."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import dramatiq
import redis
import requests
from dramatiq.brokers.redis import RedisBroker

from astronote import processes as procfile
from astronote.launcher import ProcessGroup, free_port, wait_for
from astronote.stack import StackProcesses, pointed_environment
from service.infra.dispatch import QUEUES
from tests.conftest import purge_queues

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "var" / "test-logs"
# The tests have always run gunicorn with 4 threads, not the Procfile's 8.
WEB_THREADS = 4
CONSENT = {"source": "checkout", "collected_at": "2024-01-01T00:00:00Z"}


def queued_messages(queue: str) -> int:
    """Messages of `queue` the broker holds, on the broker the test process publishes to (the
    test's processes use the same): on Redis every message not yet acknowledged, on RabbitMQ
    those waiting and delayed (RabbitMQ does not count what a consumer holds)."""
    current = dramatiq.get_broker()
    if isinstance(current, RedisBroker):
        return int(current.client.hlen(f"dramatiq:{queue}.msgs"))
    from service.infra.rabbitmq import RabbitmqQueueCounter

    counts = RabbitmqQueueCounter(current).counts([queue])[queue]
    return counts["waiting"] + counts["delayed"]


def held_by_consumers(queue: str) -> int:
    """Messages of `queue` that a consumer fetched and did not acknowledge (Redis: its ack
    set). With no worker running, each is stuck until the broker's heartbeat timeout hands
    it to another worker."""
    current = dramatiq.get_broker()
    assert isinstance(current, RedisBroker), "only Dramatiq's Redis broker keeps ack sets"
    client = current.client
    return sum(
        int(client.scard(key))
        for key in client.scan_iter(match=f"{current.namespace}:__acks__.*.{queue}")
    )


def lose_queued_messages(redis_client: redis.Redis) -> None:
    """The broker loses every message: on Redis a FLUSHDB, which also takes the leader lock
    and the clock registry (FLUSHALL would also hit other test runs on the host); on RabbitMQ
    every queue purged (its Redis holds no message)."""
    current = dramatiq.get_broker()
    if isinstance(current, RedisBroker):
        redis_client.flushdb()
    else:
        purge_queues(current)


class Stack:
    """Starts and stops the processes of one test; everything is killed at `close()`. The
    processes are started by `astronote.stack.StackProcesses`, as `astronote up` and the demo
    start theirs; this adds free ports, a log per test and the API calls the tests make."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.sim_port, self.web_port = free_port(), free_port()
        # No quiet hours unless `env` says: a benchmark run at night (bench/ builds its stacks
        # here) would otherwise see every batch deferred to the morning, and measure nothing.
        defaults = {"QUIET_HOURS_DEFAULT": "off"}
        self.env = pointed_environment(
            {**defaults, **os.environ, **env}, self.web_port, self.sim_port
        )
        self.name = name
        self.group = ProcessGroup(LOGS, prefix=f"{name}.", cwd=ROOT)
        self.launch = StackProcesses(self.env, self.web_port, self.sim_port, self.group)
        self.processes: dict[str, subprocess.Popen] = self.group.processes

    @property
    def web(self) -> str:
        return self.launch.web_url

    @property
    def sim(self) -> str:
        return self.launch.sim_url

    def start_sim(self, *options: str) -> None:
        self.launch.start_sim(options)

    def start_web(self, workers: int = 2, threads: int = WEB_THREADS) -> None:
        self.launch.start_web(workers, threads)

    def start_worker(
        self,
        label: str = "worker",
        processes: int = 1,
        threads: int = 4,
        queues: tuple[str, ...] = QUEUES,
        **env: str,
    ) -> subprocess.Popen:
        return self.launch.start(
            label, self.launch.worker_command(processes, threads, queues), **env
        )

    def start_clock(self, label: str = "clock", **env: str) -> subprocess.Popen:
        return self.launch.start(label, procfile.command("clock"), **env)

    def start_reports(self, port: int, label: str = "reports") -> subprocess.Popen:
        """The Procfile's `reports` process (api/report_server.py) on `port`, once it answers."""
        process = self.launch.start(
            label, procfile.command("reports", self.env, {"--bind": f"127.0.0.1:{port}"})
        )

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(healthy, 30, f"{label} answering")
        return process

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        self.group.kill(label, sig)

    def close(self) -> None:
        self.group.stop_all(grace=10)

    # --- the API, as a merchant and an operator use it -------------------------------------
    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any):
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, f"{self.web}{path}", headers=headers, timeout=30, **kwargs)

    def create_shop(self, domain: str, credits: int) -> tuple[int, str]:
        admin = self.env["ADMIN_TOKEN"]
        # No quiet hours: tests and benchmarks (bench/) send at whatever hour they run.
        answer = self.call(
            "POST",
            "/admin/shops",
            admin,
            json={"domain": domain, "name": domain, "sender": "Shop", "quiet_hours": None},
        )
        assert answer.status_code == 201, answer.text
        shop = answer.json()
        if credits:
            top_up = self.call(
                "POST",
                f"/admin/shops/{shop['id']}/credits",
                admin,
                json={"amount": credits, "reference": "initial"},
            )
            assert top_up.status_code == 201, top_up.text
        return shop["id"], shop["api_key"]

    def import_contacts(self, key: str, count: int, start: int = 0, named: bool = True) -> None:
        for offset in range(0, count, 10_000):
            # With consent: every new shop requires it, and these tests are about sending.
            chunk = [
                {
                    "phone": f"+30690{start + i:07d}",
                    "consent": CONSENT,
                    **({"first_name": f"N{start + i}"} if named else {}),
                }
                for i in range(offset, min(count, offset + 10_000))
            ]
            answer = self.call("POST", "/contacts", key, json={"contacts": chunk})
            assert answer.status_code == 200 and not answer.json()["invalid"], answer.text[:500]

    def progress(self, key: str, campaign_id: int) -> dict:
        return self.call("GET", f"/campaigns/{campaign_id}/progress", key).json()

    def wait_finished(self, key: str, campaign_id: int, timeout: float) -> dict:
        return wait_for(
            lambda: (lambda p: p if p["status"] in ("completed", "failed", "cancelled") else None)(
                self.progress(key, campaign_id)
            ),
            timeout,
            f"campaign {campaign_id} to finish",
            interval=0.25,
        )

    def sim_messages(self, **params: str) -> dict:
        return requests.get(f"{self.sim}/_sim/messages", params=params, timeout=30).json()

    def sim_config(self, **config: Any) -> None:
        requests.post(f"{self.sim}/_sim/config", json=config, timeout=5).raise_for_status()
