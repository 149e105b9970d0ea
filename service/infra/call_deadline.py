"""A whole provider call bounded in time, not each socket read.

`requests` (urllib3) applies its read timeout to each read: a provider that answers one byte
every half second, each read well inside the timeout, kept a window's call, its worker thread
and its claims for as long as it liked (a probe held one for 86 s against a 5 s read timeout:
the actor's time limit passed, the reconciler failed the claims as unknown and finalised the
campaign while the answer was still coming, and another shop's batch waited behind it).

So each call has a deadline (`DeadlineAdapter`, `deadline`): when it passes, one watchdog
thread shuts the call's socket down, the read under way ends at once, and the call ends
with an error its caller classifies (the provider may have the message: an unknown
outcome, resolved by a delivery report or the claim timeout, never resent). The connection a
call goes over is known from urllib3's own `request`, made on the calling thread.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# While a call's deadline passes before its connection has a socket (connecting, bounded by
# the connect timeout), the watchdog looks again this often.
RECHECK_S = 0.05

_calling = threading.local()


class Deadline:
    """One call's deadline. `passed` says whether it cut the call."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.over = False
        self.passed = False

    def cut(self) -> bool:
        """Shut the call's socket down; False if it has none yet (look again later)."""
        with self.lock:
            if self.over:
                return True
            self.passed = True
            if self.sock is None:
                return False
            _shut(self.sock)
            return True

    def sent_over(self, sock: socket.socket | None) -> None:
        """The call's request went out over `sock`; its answer comes back over it."""
        with self.lock:
            self.sock = sock
            if self.passed and not self.over and sock is not None:
                _shut(sock)  # it passed while connecting or sending

    def end(self) -> None:
        with self.lock:
            self.over = True


class Watchdog:
    """One thread that cuts the calls whose deadline passed, in deadline order."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Deadline]] = []
        self.order = itertools.count()
        self.wake = threading.Condition()
        self.thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        with self.wake:
            heapq.heappush(self.heap, (deadline.at, next(self.order), deadline))
            if self.thread is None or not self.thread.is_alive():
                # Started lazily, and again in a forked child (threads do not survive a fork).
                self.thread = threading.Thread(target=self._run, name="call-deadlines", daemon=True)
                self.thread.start()
            elif self.heap[0][2] is deadline:
                self.wake.notify()

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.heap or self.heap[0][0] > time.monotonic():
                    timeout = self.heap[0][0] - time.monotonic() if self.heap else None
                    self.wake.wait(timeout)
                _, _, deadline = heapq.heappop(self.heap)
            if not deadline.cut():
                deadline.at = time.monotonic() + RECHECK_S
                self.watch(deadline)


_watchdog = Watchdog()


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """The `DeadlineAdapter` calls this thread makes inside the block end by `seconds`."""
    bound = Deadline(time.monotonic() + seconds)
    _calling.deadline = bound
    _watchdog.watch(bound)
    try:
        yield bound
    finally:
        bound.end()
        _calling.deadline = None


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the call is ending anyway


class _Watched:
    """Mixed into urllib3's connections: the socket a call's answer comes back over, for its
    deadline (taken once the request is sent: http.client hands the socket to the response
    and forgets it when the answer says `Connection: close`)."""

    sock: socket.socket | None

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]
        bound: Deadline | None = getattr(_calling, "deadline", None)
        if bound is not None:
            bound.sent_over(self.sock)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """`requests`' adapter whose connections a `deadline` can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
