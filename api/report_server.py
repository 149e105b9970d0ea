"""`python -m api.report_server`: the Procfile's `reports` process, a server of the
delivery-report webhook alone, on an event loop (uvicorn with httptools and uvloop).

The provider posts one report per message, at the send rate. In the web process each report
is a gunicorn request: its pure-Python parsing and thread hand-offs cost more CPU than the
route itself (`bench/RESULTS.md`), and that per-request cost is what made reports trail the
sends. An event loop with a C parser costs a fraction of it,
and holds thousands of connections (a provider flushing a backlog opens one per report)
without a thread each.

The route is the web's, not a copy: the same token check, size bound and hand-written
validation (`api/report_ingest.py`), the same storing (`write_together` on a connection of the
process's own: one INSERT per group of concurrent requests, committed before any of them is
answered; the applier signalled after). The requests wait on the loop, not on threads: the one
write under way runs on a thread of its own, and the requests that arrive meanwhile form the
next group.

Running it is optional: with `REPORTS_BASE_URL` unset the provider is given the web's URL
(`PUBLIC_BASE_URL`), and the web answers the route as before. Set it to where this process is
reached (a separate host name, or a path your router sends here) and the callbacks of every
message sent from then on name it; the web keeps answering reports posted to it (those of
messages sent before, and a provider configured by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import redis
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.body import MAX_BODY
from api.report_ingest import (
    ROUTE,
    Answer,
    Refused,
    check_token,
    declared_length,
    parse_reports,
    refusal,
    shed,
    too_large,
)
from service import report_inbox
from service.infra import runtime
from service.infra.config import Settings
from service.report_writer import OwnConnection, write_together

log = logging.getLogger("astronote.reports")

# A body past this size is parsed on a thread rather than on the loop: an array of 10,000
# reports takes tens of milliseconds, which would stall every other connection meanwhile.
PARSE_ON_LOOP_MAX = 64 * 1024

_HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]
_ROUTE = ROUTE.encode()
_HEALTH = b"/health"

Scope = dict[str, Any]

# What one request's head may hold, and how long it may take to arrive: uvicorn with httptools
# bounds neither (a review: 64 MiB of header lines read without an answer; a half-sent request
# kept past every timeout), and both come before the token is checked. As gunicorn's limits
# for the web, a little wider.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# Bytes received while a head is incomplete (a chunk may also hold the end of the previous
# request's body, hence the margin).
MAX_HEAD_RAW_BYTES = 512 * 1024
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded in size and in time: over
    MAX_HEAD_BYTES or MAX_HEADERS the request is answered 400 and the connection closed, and a
    head not complete within HEAD_TIMEOUT_S of the connection (or of its first byte, for the
    next request of a kept-alive one) is closed."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._head_bytes = self._head_count = self._head_raw = 0
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            HEAD_TIMEOUT_S, self._head_too_slow
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and not self.transport.is_closing():
            # Still in a head after this data: httptools holds a header line until it ends,
            # so its bytes are counted here too (a 1 MiB header line with no end).
            self._head_raw += len(data)
            if self._head_raw > MAX_HEAD_RAW_BYTES:
                self.send_400_response("The request head is too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_count = self._head_raw = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value), 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def _count_head(self, size: int, headers: int) -> None:
        self._head_bytes += size
        self._head_count += headers
        if self._head_bytes > MAX_HEAD_BYTES or self._head_count > MAX_HEADERS:
            # Raised in a parser callback: httptools stops, uvicorn answers 400 and closes.
            raise ValueError("the request head is too large")

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


class GroupWriter:
    """`await store(reports)` returns once the reports are committed, or raises why not.
    One write at a time, on a thread of its own; requests arriving meanwhile wait on the loop
    and are written together next (up to `max_group` reports). Used from the loop only."""

    def __init__(
        self,
        write: Callable[[list[dict[str, Any]]], object],
        after_commit: Callable[[], object],
        max_group: int = 10_000,
    ) -> None:
        self.write = write
        self.after_commit = after_commit
        self.max_group = max_group
        self.pending = 0  # reports waiting for, or in, their write
        self._waiting: deque[tuple[list[dict[str, Any]], asyncio.Future[None]]] = deque()
        self._writing = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="report-write")

    async def store(self, reports: list[dict[str, Any]]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((reports, done))
        self.pending += len(reports)
        if not self._writing:
            self._writing = True
            asyncio.ensure_future(self._drain())
        try:
            await asyncio.shield(done)  # a client gone does not unmake its write
        finally:
            self.pending -= len(reports)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                group = [self._waiting.popleft()]
                count = len(group[0][0])
                while self._waiting and count + len(self._waiting[0][0]) <= self.max_group:
                    count += len(self._waiting[0][0])
                    group.append(self._waiting.popleft())
                batches = [reports for reports, _ in group]
                try:
                    errors = await loop.run_in_executor(self._thread, self._write, batches)
                except Exception as error:  # noqa: BLE001 - the executor is shut down
                    errors = [error] * len(group)
                for (_, done), outcome in zip(group, errors):
                    if outcome is None:
                        done.set_result(None)
                    else:
                        done.set_exception(outcome)
        finally:
            self._writing = False

    def _write(self, batches: list[list[dict[str, Any]]]) -> list[BaseException | None]:
        errors = write_together(self.write, batches)
        if any(error is None for error in errors):
            # After the commit (at most one Redis round trip per REPORT_APPLY_DELAY_MS).
            self.after_commit()
        return errors

    def close(self) -> None:
        self._thread.shutdown(wait=True)


class ReportServer:
    """The ASGI application: `POST /webhooks/mitto/dlr` (exactly that spelling) stores
    reports; `GET /health` answers the platform's check; anything else is 404 or 405."""

    def __init__(self, settings: Settings, signals: redis.Redis) -> None:
        self.secret = settings.dlr_webhook_secret.encode() if settings.dlr_webhook_secret else None
        # The path of REPORTS_BASE_URL (`https://x/reports`): a router that sends that prefix
        # here unchanged finds the route under it as well as without it.
        base_path = urlsplit(settings.reports_base_url or "").path.rstrip("/")
        self.prefix = quote(base_path).encode() if base_path else b""
        self.max_pending = settings.report_ingest_max_pending
        self.reading = 0  # requests admitted, their body being read or parsed
        self.connection = OwnConnection(settings.database_url)
        applier = report_inbox.ApplierSignal(signals, settings)
        self.writer = GroupWriter(self.connection.write, applier.after_commit)
        self.parsers = ThreadPoolExecutor(2, thread_name_prefix="report-parse")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("raw_path") or scope["path"].encode()
        if self.prefix and path.startswith(self.prefix + b"/"):
            path = path[len(self.prefix) :]  # REPORTS_BASE_URL's path, kept by the router
        method = scope["method"]
        if path == _ROUTE and method == "POST":
            try:
                answer = await self._store(scope, receive)
            except Disconnected:
                return
            except Exception as error:  # noqa: BLE001 - every failure has its answer
                answer = refusal(error)
        elif path == _HEALTH and method in ("GET", "HEAD"):
            answer = "200 OK", {"status": "ok"}, ()
        elif path in (_ROUTE, _HEALTH):
            allowed = "POST" if path == _ROUTE else "GET, HEAD"
            answer = (
                "405 Method Not Allowed",
                {"title": "Method not allowed", "description": f"this path takes {allowed}"},
                (("Allow", allowed),),
            )
        else:
            answer = (
                "404 Not Found",
                {
                    "title": "Not found",
                    "description": f"this process answers POST {ROUTE} and GET /health only",
                },
                (),
            )
        await _respond(send, answer, head=method == "HEAD")

    async def _store(self, scope: Scope, receive: Any) -> Answer:
        headers = dict(scope["headers"])
        token = headers.get(b"x-webhook-token")
        check_token(
            self.secret,
            token.decode("latin-1") if token is not None else None,
            scope.get("query_string", b"").decode("latin-1"),
        )
        length = declared_length(headers.get(b"content-length"))
        # Requests still reading or parsing their body count as one report each: the bound
        # holds for them too (a review: 40 requests whose bodies arrived together all passed
        # a bound of 5 counting only the reports already parsed).
        if self.writer.pending + self.reading >= self.max_pending:
            raise shed()  # before the body is read or parsed
        self.reading += 1
        try:
            try:
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    raw = await _body(receive, length)
            except TimeoutError:
                raise Refused(
                    "408 Request Timeout",
                    "Request timeout",
                    f"the body did not arrive within {BODY_TIMEOUT_S:g} s",
                    headers=(("Connection", "close"),),
                ) from None
            if len(raw) > PARSE_ON_LOOP_MAX:
                loop = asyncio.get_running_loop()
                parsed = await loop.run_in_executor(self.parsers, parse_reports, raw)
            else:
                parsed = parse_reports(raw)
        finally:
            self.reading -= 1
        await self.writer.store(parsed.reports)
        return "200 OK", parsed.answer(), ()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Requests in flight have been answered (uvicorn waits for them first).
                self.writer.close()
                self.parsers.shutdown(wait=True)
                self.connection.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(receive: Any, length: int | None) -> bytes:
    """The whole body, or 413 as soon as it passes MAX_BODY (a chunked one has no declared
    length); `Disconnected` when the client left first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if length is not None and size < length:  # the server's parser already refuses this
        raise Refused("400 Bad Request", "Incomplete body", "the body ended early")
    return b"".join(chunks)


async def _respond(send: Any, answer: Answer, head: bool = False) -> None:
    status, body, extra = answer
    data = json.dumps(body).encode()
    headers = [
        *_HEADERS,
        (b"content-length", str(len(data)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in extra),
    ]
    await send({"type": "http.response.start", "status": int(status[:3]), "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else data})


def create_asgi(settings: Settings) -> ReportServer:
    from api.app import _limiter_client

    return ReportServer(settings, _limiter_client(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.report_server")
    parser.add_argument(
        "--bind",
        default=f"0.0.0.0:{os.environ.get('PORT', '8001')}",
        help="host:port to listen on (default 0.0.0.0:$PORT, else 8001)",
    )
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"--bind must be host:port, not {args.bind!r}")
    settings = runtime.boot("reports", needs_secret_key=False)  # it signs and checks nothing
    # Without DLR_WEBHOOK_SECRET the route answers 404, as the web's does: the provider's
    # webhooks are off (a process that exited instead would be restarted for ever).

    log.info("reports listening", extra={"bind": args.bind})
    uvicorn.run(
        create_asgi(settings),
        host=host.strip("[]"),
        port=int(port),
        loop="uvloop",
        http=BoundedHttpTools,
        # No `limit_concurrency`: uvicorn counts open connections against it, so under a burst
        # of 20,000 new connections every request was answered 503, those on connections it
        # had accepted included (263 of 20,000 reports answered, measured). Load is shed by
        # the pending bound instead, and a connection costs little until its head arrives.
        lifespan="on",
        access_log=False,  # a stored report is counted, not logged (as in the web)
        log_config=None,  # our JSON logs (runtime.boot), uvicorn's lines included
        server_header=False,
        timeout_keep_alive=75,  # longer than a provider's pool keeps a connection idle
        timeout_graceful_shutdown=20,
        # The listen queue a burst of new connections waits in (the kernel caps it at
        # net.core.somaxconn): at uvicorn's 2,048, a burst of 20,000 overflowed it and
        # 105-3,154 posts were retried; none at the cap (4,096 here; bench/RESULTS.md).
        backlog=65535,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
