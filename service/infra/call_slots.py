"""SEND_CONCURRENCY: the provider calls one worker process makes at once, shared by its batches.

A batch takes slots for one window right before claiming that window's recipients, and gives
them back once the window's answers are persisted. The recipients a process holds claimed are
then never more than the calls it can make at once, so after a crash, a kill or a time limit,
at most those are of unknown outcome. While several batches send, each takes at most its fair
share of the slots: a small campaign's batch starts its first window as soon as calls end,
not after a large campaign's batches have sent everything.

A slot count is only ever changed by one assignment under the lock (`Lease.held`), and a
lease ends in a `finally`: an exception raised into the thread asynchronously (Dramatiq's
time limit) cannot leak slots.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CallSlots:
    """`size` slots; `lease()` while a batch sends, `Lease.take()` per window."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._leases: list[Lease] = []
        self._changed = threading.Condition()

    @property
    def free(self) -> int:
        """Slots no window holds (read under the lock to act on it)."""
        return self.size - sum(lease.held for lease in self._leases)

    @property
    def batches(self) -> int:
        """Batches sending now, each with its lease."""
        return len(self._leases)

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """A batch's share of the slots while it sends; whatever it holds at the end is free."""
        lease = Lease(self)
        with self._changed:
            self._leases.append(lease)
        try:
            yield lease
        finally:
            with self._changed:
                self._leases.remove(lease)
                self._changed.notify_all()


class Lease:
    """One batch's slots: `take` before a window's claim, `give_back` after its persist."""

    def __init__(self, slots: CallSlots) -> None:
        self.slots = slots
        self.held = 0

    def take(self, wanted: int, timeout_s: float) -> int:
        """Take up to `wanted` slots, at most a fair share (the slots over the batches
        sending), waiting up to `timeout_s` for one to be free. Returns how many it holds
        now: 0 when none was free in time."""
        slots = self.slots
        give_up = slots.clock() + timeout_s
        with slots._changed:
            while slots.free <= 0:
                left = give_up - slots.clock()
                if left <= 0:
                    return 0
                slots._changed.wait(left)
            share = max(1, slots.size // max(1, slots.batches))
            self.held = max(0, min(wanted, slots.free, share))
            return self.held

    def give_back(self) -> None:
        """The window's calls are answered and persisted: its slots are free again."""
        with self.slots._changed:
            self.held = 0
            self.slots._changed.notify_all()
