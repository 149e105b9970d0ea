"""`astronote up` as a developer runs it: the stack in the foreground (started by
`astronote.stack.StackProcesses`, like the demo's and the tests'), every process's output on the
terminal as `label | line`, and Ctrl-C stopping all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

from astronote.launcher import free_port, wait_for
from tests.conftest import ROOT, process_environment

LABELS = ("web", "worker", "sim", "clock")


def session_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_up_shows_every_process_output_and_ctrl_c_stops_them_all(db, service_urls):
    # Given `astronote up` on the tests' PostgreSQL and Redis
    port = free_port()
    env = process_environment(service_urls, PORT=str(port))
    up = subprocess.Popen(
        [sys.executable, "-m", "astronote", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout or []), daemon=True)
    reader.start()
    started: list[int] = []
    try:
        # When the API answers and every process has written a line
        wait_for(
            lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok,
            60,
            "the API of astronote up",
            interval=0.2,
        )
        wait_for(
            lambda: all(any(line.startswith(f"{label} ") for line in lines) for label in LABELS),
            30,
            f"a line from each of {LABELS}",
            interval=0.2,
        )
        started = children(up.pid)
        assert len(started) == len(LABELS), started
        # No secret on any process's command line, which every user of the machine can read
        # (the simulator's inbound URL carried DLR_WEBHOOK_SECRET there); the simulator has
        # the URL in its environment
        secrets = [env[name] for name in ("DLR_WEBHOOK_SECRET", "ADMIN_TOKEN", "SECRET_KEY")]
        environs = []
        family = [*started, *(grandchild for child in started for grandchild in children(child))]
        for pid in family:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                environs.append(Path(f"/proc/{pid}/environ").read_bytes())
            except OSError:
                continue
            assert not [secret for secret in secrets if secret in cmdline], cmdline
        assert any(b"SIM_INBOUND_URL=http://" in environ for environ in environs)

        # And the developer presses Ctrl-C (the terminal's SIGINT reaches `up` only: each
        # child leads its own session)
        up.send_signal(signal.SIGINT)
        status = up.wait(timeout=40)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for pid in started:
            if session_alive(pid):
                os.killpg(pid, signal.SIGKILL)
    reader.join(timeout=5)
    output = "".join(lines)

    # Then `up` ends cleanly, and every process and its children are gone
    assert status == 0, output[-3000:]
    assert "stopping everything" in output, output[-3000:]
    # ...and the admin token the operator set is not printed back (a generated one would be)
    assert env["ADMIN_TOKEN"] not in output and "the one in ADMIN_TOKEN" in output
    assert [pid for pid in started if session_alive(pid)] == []
    # ...and the lines were prefixed by their process (gunicorn's own start line included)
    assert any(line.startswith("web ") and "gunicorn" in line.lower() for line in lines), output
