"""The web's gunicorn worker (the Procfile's `--worker-class`): gunicorn's threaded worker,
telling the application how long each request waited for one of its threads, answering a
refused client only after a while, and closing connections without waiting on their clients.

gthread accepts up to `worker_connections` connections and queues their requests for its
threads. Under a burst that queue grows until its requests have waited longer than their
clients do: the worker then spends its time storing reports nobody waits for, while the
clients time out and post them again (a congestion collapse, measured in `bench/RESULTS.md`).
Knowing each request's wait lets the delivery-report webhook answer a stale one 503 at once
(`api/report_ingest.py`, `REPORT_INGEST_MAX_WAIT_MS`).

A shop that ignores `Retry-After` asks again the moment it is refused: refusals are cheap
(one Redis round trip) but each still costs parsing, a thread and an answer, and a client
with many threads turns that into hundreds of refusals a second on the cores another shop's
requests need. A 429 (`hold_connection`) is therefore answered only when its hold is over: the
thread hands its answer over unwritten (`HeldAnswer`), and the connection waits with it, off
the poller, until the hold is over; then the answer is written and the connection goes back to
the poller (or is closed). No thread waits. A client waits for its refusal whether it asks
again on the same connection or opens a new one per request (`requests.get`, `curl` in a
loop): holding only the connection after an answer sent at once slowed the first kind and not
the second, which was refused 400 times a second (`bench/RESULTS.md`, "A connection per
request"). This is the tarpit a front proxy's per-client rate limit would give (nginx's
`limit_req` with `delay`). Held connections are capped at a quarter of `worker_connections`,
so that they never stop the process accepting others; past that a 429 is answered at once.

A connection that is not kept is closed as gunicorn closes it (our FIN, then what the client
still sends read until it closes), but on the poller: gunicorn does it on its main thread,
waiting up to 2 s for each client to close, accepting and dispatching nothing meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.http.errors import ParseException
from gunicorn.workers.gthread import ThreadWorker

_current = threading.local()
# At most worker_connections // HELD_SHARE connections are held at once per process.
HELD_SHARE = 4
# A connection that is not kept waits at most this long for its client to close after the
# answer, reading at most this much of what it still sends (gunicorn's `close_graceful`).
LINGER_S = 2.0
LINGER_DRAIN = 65536
# How long a thread drains a body the application left unread (a 401, a 404, a GET with a
# body) before its connection is kept alive; past it the connection is closed instead, and
# what the client still sends is read on the poller (`_linger`). gunicorn drains on the thread
# for up to 5 s: a client without a key that declared a body and sent none of it held a
# thread 5 s a request (a probe: 40 such connections took another shop's median to 4.4 s).
DRAIN_WITHIN_S = 0.01


def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own answer to a request it refuses before the application sees it (a bad
    request line or header, 414, 431, a bad chunk), as the API answers (`api/errors.py`):
    JSON `{title, description}` with the security headers of every other answer, where
    gunicorn writes an HTML page without them."""
    body = json.dumps({"title": reason, "description": mesg or reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "X-Frame-Options: DENY\r\n"
        "Content-Security-Policy: frame-ancestors 'none'\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class TimedThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        # gunicorn's handle_error picks the status and logs; only the page it writes is
        # replaced. It calls `gunicorn.util.write_error` by name at each error, so setting that
        # name in this worker process is enough (gunicorn has no hook for it).
        gunicorn_util.write_error = write_error
        # In the worker process, before gunicorn's loop starts (init_process runs it).
        self._held: list[tuple[float, int, Any, Any, HeldAnswer | None]] = []
        self._held_order = itertools.count()
        self._held_changed = threading.Condition()
        self._lingering_until: dict[Any, float] = {}
        threading.Thread(target=self._release_held, name="refusal-hold", daemon=True).start()
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        application: Any = self.wsgi  # type: ignore[has-type]

        def closing(environ: dict[str, Any], start_response: Any) -> Any:
            # gunicorn drops a `Connection` header the application sets (hop-by-hop): a
            # request that asked for the close (`close_connection`) has its response told to.
            _current.close = False
            result = application(environ, start_response)
            response = getattr(start_response, "__self__", None)  # gunicorn's Response
            if _current.close and response is not None:
                response.force_close()
            if getattr(_current, "hold_s", 0) > 0 and response is not None:
                # Nothing is written yet (gunicorn writes as it iterates the result): the
                # answer is kept, and written when the hold is over (`finish_request`).
                _current.answer = response.sock = HeldAnswer(response.sock)
            return result

        self.wsgi = closing

    def enqueue_req(self, conn: Any) -> None:
        # Every request reaches a thread through here: a new connection's, a kept-alive one's.
        conn.astronote_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        _current.queued_at = getattr(conn, "astronote_queued_at", None)
        _current.hold_s = 0.0
        _current.answer = None
        _current.unreader = req.unreader
        try:
            return super().handle_request(req, conn)
        finally:
            _current.unreader = None
            if _current.hold_s > 0:
                conn.astronote_hold_until = time.monotonic() + _current.hold_s
            conn.astronote_answer = _current.answer
            _current.queued_at = None
            _current.hold_s = 0.0
            _current.answer = None

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Whether the connection is kept: only if what the application left of the body has
        arrived already (read and dropped within DRAIN_WITHIN_S); else it is closed, on the
        poller (`_answer_and_finish`), not waited for on this thread."""
        if not keepalive:
            return False
        # gunicorn's deadline is checked between reads of 1 KiB, each of which may wait that
        # long for every byte (a client trickling a byte every 9 ms held the thread 9 s; a
        # chunked body's trailers longer): no receive waits past it here.
        deadline = time.monotonic() + DRAIN_WITHIN_S
        try:
            # The deadline is the socket's (`_Receiving`), not gunicorn's, which would give up
            # on a body that had arrived when this thread waited past it for the GIL.
            with _receiving(conn.parser.unreader, lambda _received: deadline):
                return bool(conn.parser.finish_body(max_bytes=LINGER_DRAIN))
        except (ParseException, OSError):
            # A malformed chunk in the body left unread: gunicorn answered it a second time
            # (its 400 after the application's answer). Where the next request starts is
            # unknown: the connection is closed.
            return False

    def finish_request(self, conn: Any, fs: Any) -> None:
        """On the main thread, when a request is done: a connection answered 429 is held
        until its hold is over, then its answer is written and the connection handed to
        gunicorn's own path as if the request had just finished: back to the poller if kept
        alive, else closed. A closed one is held too: a refused import's connection is closed
        with its body unread (gunicorn drains 64 KiB at most), and its client, still sending,
        waits on its full socket buffer meanwhile."""
        until = getattr(conn, "astronote_hold_until", 0.0)
        answer = getattr(conn, "astronote_answer", None)
        conn.astronote_hold_until, conn.astronote_answer = 0.0, None
        if (
            until > time.monotonic()
            and self.alive
            # Held connections still count against `worker_connections`, past which gunicorn
            # stops accepting: beyond a quarter of it, refusals are answered at once.
            and len(self._held) < self.worker_connections // HELD_SHARE
            and not fs.cancelled()
            and fs.exception() is None
            and isinstance(fs.result(), bool)  # not gunicorn's "deferred, no data yet"
        ):
            with self._held_changed:
                heapq.heappush(self._held, (until, next(self._held_order), conn, fs, answer))
                self._held_changed.notify()
            return
        self._answer_and_finish(conn, fs, answer)

    def _answer_and_finish(self, conn: Any, fs: Any, answer: HeldAnswer | None) -> None:
        """On the main thread: write a held answer, then end the request as gunicorn does. A
        client that cannot take the few hundred bytes of a 429 at once (its socket's buffer
        full, or gone) has its connection closed, as gunicorn closes a failed one. A
        connection that is not kept ends as gunicorn ends it (`util.close_graceful`: our FIN,
        then its data read until the client closes), but on the poller: gunicorn waits for the
        client there, on the main thread, a round trip to the client (up to 2 s) for every
        connection it does not keep, the process accepting and dispatching nothing meanwhile;
        with a held answer written just before, for every refusal of a client opening a
        connection per request."""
        if answer is not None and answer.data:
            try:
                gunicorn_util.write_nonblock(conn.sock, bytes(answer.data))
            except OSError:
                self.nr_conns -= 1
                conn.close()
                return
        if fs.cancelled() or (fs.exception() is None and fs.result() is False):
            self._linger(conn)
            return
        ThreadWorker.finish_request(self, conn, fs)  # kept, deferred, or failed: gunicorn's

    def _linger(self, conn: Any) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, functools.partial(self._lingering, conn)
            )
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            conn.close()
            return
        conn.astronote_drained = 0
        self._lingering_until[conn] = time.monotonic() + LINGER_S

    def _lingering(self, conn: Any, sock: Any) -> None:
        """The poller's callback: what the client still sends is read and dropped until it
        closes (or `LINGER_DRAIN` bytes, as gunicorn's cap)."""
        try:
            data = sock.recv(8192)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        conn.astronote_drained += len(data)
        if not data or conn.astronote_drained >= LINGER_DRAIN:
            self._end_linger(conn)

    def _end_linger(self, conn: Any) -> None:
        if self._lingering_until.pop(conn, None) is None:
            return
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self, force: bool = False) -> None:
        # gunicorn's sweep of its idle connections, once a loop and at shutdown (`force`):
        # the lingering ones too.
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn, until in list(self._lingering_until.items()):
            if force or until <= now:
                self._end_linger(conn)

    def _release_held(self) -> None:
        """One thread per process: hands each held connection back to the main loop (through
        gunicorn's own queue of callbacks) when its hold is over."""
        while True:
            with self._held_changed:
                while not self._held or self._held[0][0] > time.monotonic():
                    wait = self._held[0][0] - time.monotonic() if self._held else None
                    self._held_changed.wait(wait)
                _, _, conn, fs, answer = heapq.heappop(self._held)
            try:
                self.method_queue.defer(self._answer_and_finish, conn, fs, answer)
            except Exception:  # noqa: BLE001 - the others must still be released
                self.log.exception("a held connection could not be released")


class HeldAnswer:
    """Stands for a refused request's socket while gunicorn writes the answer: the bytes are
    kept, to be written when the request's hold is over. Anything but writing goes to the
    socket."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.data = bytearray()

    def sendall(self, data: bytes) -> None:
        self.data += data

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> None:
        file.seek(offset)
        self.data += file.read() if count is None else file.read(count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def queued_for(now: float) -> float:
    """Seconds the request this thread serves waited for it (0 outside this worker)."""
    queued_at = getattr(_current, "queued_at", None)
    return 0.0 if queued_at is None else now - queued_at


def receiving_until(deadline_of: Callable[[int], float]) -> contextlib.AbstractContextManager:
    """While a request's body is read: each receive from its client waits at most until
    `deadline_of(bytes received so far)` (a `time.monotonic()`), and past it raises
    TimeoutError. A socket timeout set once per read of the body bounds only each receive: a
    client sending a byte now and then kept one read, and its thread, for as long as it
    liked. Nothing outside this worker (the tests' in-process app)."""
    return _receiving(getattr(_current, "unreader", None), deadline_of)


@contextlib.contextmanager
def _receiving(unreader: Any, deadline_of: Callable[[int], float]) -> Iterator[None]:
    """gunicorn's reader of a connection (`unreader`) receives through `_Receiving` meanwhile."""
    sock = getattr(unreader, "sock", None)
    if sock is None:
        yield
        return
    unreader.sock = _Receiving(sock, deadline_of)
    try:
        yield
    finally:
        unreader.sock = sock
        with contextlib.suppress(OSError):
            sock.settimeout(None)  # gunicorn's threads block on their sockets


class _Receiving:
    """The client's socket while a body is read (`receiving_until`)."""

    def __init__(self, sock: Any, deadline_of: Callable[[int], float]) -> None:
        self.sock = sock
        self.deadline_of = deadline_of
        self.received = 0

    def recv(self, size: int) -> bytes:
        # Past the deadline, what has arrived already is still read (0: without waiting; a
        # thread that waited for the GIL past a 10 ms drain found the body there), nothing
        # more is waited for.
        left = self.deadline_of(self.received) - time.monotonic()
        self.sock.settimeout(max(left, 0.0))
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            raise TimeoutError("the body's deadline has passed") from None
        self.received += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def close_connection() -> None:
    """Close this request's connection after its answer (`Connection: close`): the rest of
    its body is left unread (a 413, a malformed chunk), so what follows on the connection is
    not a request. Nothing outside this worker (the tests' in-process app)."""
    if hasattr(_current, "close"):
        _current.close = True


def hold_connection(seconds: float) -> None:
    """Answer this request (a 429) only in `seconds`, its connection left unread until then
    (see the module's docstring). Nothing outside this worker (the tests' in-process app)."""
    if hasattr(_current, "hold_s"):
        _current.hold_s = max(_current.hold_s, seconds)
