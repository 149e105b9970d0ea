"""SIGTERM/SIGINT as something the election loop can sleep on and wake from at once.

The kernel may deliver a signal to any thread (APScheduler's, a job's). CPython then runs the
Python handler only when the main thread next executes bytecode, so a main thread asleep in
`Event.wait(5)` would notice a SIGTERM only when its wait times out, and a standby would take
over that much later. CPython's C-level handler, though, writes the signal number to the
wakeup fd whatever thread received it, so `select()` on that fd wakes the loop at once.
"""

from __future__ import annotations

import os
import select
import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignal:
    """Install once, from the main thread, before any other thread starts."""

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)
        self._requested = False
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True as soon as a stop signal has arrived."""
        if self._requested:
            return True
        ready, _, _ = select.select([self._read], [], [], timeout)
        if ready:
            try:
                received = os.read(self._read, 64)
            except BlockingIOError:
                received = b""
            # The bytes are signal numbers; the Python handler may not have run yet.
            if any(byte in STOP_SIGNALS for byte in received):
                self._requested = True
        return self._requested
