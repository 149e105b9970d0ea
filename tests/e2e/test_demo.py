"""`astronote demo` as a user runs it: its own stack (gunicorn, Dramatiq, clock, simulator)
against the tests' PostgreSQL and Redis, and a report that says the books balance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import ROOT

TIMEOUT_S = 180


def run_demo(service_urls, *args: str) -> tuple[int, str]:
    db_url, redis_url = service_urls
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    for name in ("PORT", "ADMIN_TOKEN", "MITTO_API_KEY", "MITTO_API_BASE", "PUBLIC_BASE_URL"):
        env.pop(name, None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "astronote", "demo", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = demo.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the demo stop its own children before it goes.
        demo.send_signal(signal.SIGTERM)
        output, _ = demo.communicate(timeout=30)
        raise AssertionError(f"demo still running after {TIMEOUT_S} s:\n{output}") from None
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    return demo.returncode, output


def test_the_demo_sends_a_campaign_and_reports_balanced_books(db, service_urls):
    # Given a clean database and Redis
    # When a user runs the demo with 300 recipients
    status, output = run_demo(service_urls, "--recipients", "300")

    # Then it succeeds and its report says so, line by line
    assert status == 0, output
    assert "campaign:   #1 completed" in output, output
    assert "sent 300, failed 0, skipped 0, pending 0, sending 0" in output, output
    assert "ledger: OK" in output, output
    assert "300 messages accepted by the simulator, 0 duplicates" in output, output
    assert "result: OK" in output, output
