"""`TimedThreadWorker._keepalive_after`: a body the application left unread is drained only as
far as it has arrived, within DRAIN_WITHIN_S, on gunicorn's own parser over a socket pair
(the e2e side is tests/e2e/test_slow_bodies.py)."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from api.workers import TimedThreadWorker


def parsed(request: bytes) -> tuple[SimpleNamespace, socket.socket]:
    """A connection whose request (`request`, its body unread) gunicorn has parsed."""
    server, client = socket.socketpair()
    client.sendall(request)
    parser = RequestParser(Config(), server, ("127.0.0.1", 1))
    next(parser)
    return SimpleNamespace(parser=parser), client


def kept(conn: SimpleNamespace) -> tuple[bool, float]:
    started = time.monotonic()
    result = TimedThreadWorker._keepalive_after(None, conn, True)  # type: ignore[arg-type]
    return result, time.monotonic() - started


def test_a_body_that_has_arrived_is_drained_and_the_connection_kept():
    conn, _client = parsed(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert kept(conn)[0] is True


def test_a_trickled_chunked_trailer_is_not_waited_for():
    # Given a chunked body whose trailer comes a byte every 4 ms (each receive well within
    # any timeout of its own: gunicorn's deadline between reads of 1 KiB held the thread 3 s)
    conn, client = parsed(
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n"
    )
    stop = threading.Event()

    def trickle() -> None:
        client.sendall(b"X-T: ")
        while not stop.wait(0.004):
            client.sendall(b"a")

    threading.Thread(target=trickle, daemon=True).start()
    try:
        result, took = kept(conn)
    finally:
        stop.set()
    # Then the connection is given up (closed on the poller) within the drain's bound
    assert result is False
    assert took < 0.5, took


def test_a_malformed_chunk_left_unread_closes_the_connection_without_a_second_answer():
    # gunicorn let the error out of its drain, and answered 400 after the application's answer
    conn, _client = parsed(
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    assert kept(conn)[0] is False
