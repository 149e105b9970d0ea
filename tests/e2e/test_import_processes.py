"""A contact import read in a child of the web process (`api/import_processes.py`), over real
gunicorn: the child exists, runs at a lower priority, and killing it (kill -9) costs the next
import nothing."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.stack import CONSENT, Stack, wait_for


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def import_children(worker: int) -> list[int]:
    """The worker's children reading imports (not multiprocessing's resource tracker)."""
    return [
        child
        for child in children_of(worker)
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.fixture
def web(make_stack) -> Stack:
    stack = make_stack()
    stack.start_web(workers=1)
    return stack


def test_an_import_is_read_in_a_niced_child_and_a_killed_child_costs_nothing(web, db):
    _, key = web.create_shop("children.example", 0)
    rows = [{"phone": f"+30690{i:07d}", "consent": CONSENT} for i in range(5_000)]
    body = json.dumps({"contacts": [*rows, {"phone": "not a number"}]})

    def post() -> dict:
        answer = web.call(
            "POST", "/contacts", key, data=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 200, answer.text[:300]
        return answer.json()

    # When a shop imports, Then the rows are read and written as always
    first = post()
    assert (first["created"], first["updated"]) == (5_000, 0)
    assert [row["index"] for row in first["invalid"]] == [5_000]
    # And the gunicorn worker has a child that read them, at a lower priority
    (worker,) = children_of(web.processes["web"].pid)
    (child,) = import_children(worker)
    assert niceness(child) == min(niceness(worker) + 10, 19)  # the kernel's cap

    # When that child is killed, Then the next import is answered as the first was
    os.kill(child, signal.SIGKILL)
    again = post()
    assert (again["created"], again["updated"], len(again["invalid"])) == (0, 5_000, 1)
    # And the one after is read in a new child
    post()
    wait_for(lambda: import_children(worker) not in ([], [child]), 10, "a new child")
    (second,) = import_children(worker)
    assert second != child

    # When the worker itself is killed (gunicorn's timeout, the OOM killer), Then its child
    # does not outlive it, and the worker gunicorn starts instead reads imports as before
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{second}").exists(), 10, "the orphaned child gone")
    wait_for(lambda: children_of(web.processes["web"].pid) not in ([], [worker]), 30, "a worker")
    assert post()["updated"] == 5_000
