"""Named fault points for the chaos suite (`bench/chaos.py`, tests/e2e/test_chaos.py).

The send path calls `fault_point("name")` at the places where a crash or an error is the most
dangerous: right after a window's claim is committed, after the provider answered and before
the answers are persisted, inside the persist transaction, after a batch is persisted and
before its message is acknowledged, inside the repair (`persistSmsResults`) and inside a
campaign's finalisation. Nothing happens unless CHAOS_FAULTS (read in `config`) arms some of
them, e.g. `after_claim_commit=kill:0.05,inside_persist=raise:0.1`: at an armed point the
process kills itself with SIGKILL (`kill`) or raises `InjectedFault` (`raise`) with the given
probability. Unarmed, a fault point is one dictionary truth test.

Each fault that fires is logged first (`chaos fault`, with the point and the action), so a
run can count them from the processes' logs.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Iterable

log = logging.getLogger("astronote.faults")

POINTS = (
    "after_claim_commit",
    "after_provider_answer",
    "inside_persist",
    "after_persist_before_ack",
    "inside_repair",
    "inside_finalisation",
    "inside_recipient_creation",
)
ACTIONS = ("kill", "raise")


class InjectedFault(RuntimeError):
    """The error a `raise` fault point raises."""


# point -> (action, probability); empty unless CHAOS_FAULTS armed some.
_armed: dict[str, tuple[str, float]] = {}
_random = random.Random()


def arm(faults: Iterable[tuple[str, str, float]]) -> None:
    """Arm the given (point, action, probability) faults in this process, replacing any."""
    _armed.clear()
    for point, action, probability in faults:
        _armed[point] = (action, probability)
    # A forked worker process would otherwise draw the same numbers as its siblings.
    _random.seed(os.urandom(16))


def armed() -> dict[str, tuple[str, float]]:
    return dict(_armed)


def fault_point(name: str) -> None:
    """Kill this process or raise here, if CHAOS_FAULTS armed `name` and the draw says so."""
    if not _armed:
        return
    fault = _armed.get(name)
    if fault is None:
        return
    action, probability = fault
    if _random.random() >= probability:
        return
    log.warning("chaos fault", extra={"point": name, "action": action, "pid": os.getpid()})
    if action == "kill":
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"chaos fault at {name}")
