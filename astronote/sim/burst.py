"""Reports posted as a burst: every post on a new connection at once, without any bound.

One event loop thread holds every post in flight, however many: a thread per post would take
the simulator's own GIL from its API threads (thousands of runnable threads leave each a
thousandth of it), so its `/smsbulk` answers would time out at the caller, which is the
simulator collapsing, not the receiver under test. The HTTP is the least a provider sends: a
POST with `Connection: close`, the status line read, the connection closed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

_ATTEMPTS = 4
_BACKOFF_S = (0.1, 0.3, 0.9)
_TIMEOUT_S = 5.0


class BurstPoster:
    """Posts submitted from any thread, each at once on its own connection; `on_done(ok)` is
    called (on the loop's thread) when a post succeeded or gave up."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def submit(self, url: str, body: bytes, on_done: Callable[[bool], None]) -> None:
        loop = self._ensure_loop()
        asyncio.run_coroutine_threadsafe(self._post(url, body, on_done), loop)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="provider-sim-dlr-burst", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    async def _post(self, url: str, body: bytes, on_done: Callable[[bool], None]) -> None:
        ok = False
        for attempt in range(_ATTEMPTS):
            if self._stopping.is_set():
                break
            try:
                status = await asyncio.wait_for(post_new_connection(url, body), _TIMEOUT_S)
            except (TimeoutError, OSError, ValueError):
                status = None
            if status is not None:
                if 200 <= status < 300:
                    ok = True
                    break
                if status < 500 and status != 429:
                    break  # the receiver refuses it: retrying cannot help
            if attempt < len(_BACKOFF_S):
                await asyncio.sleep(_BACKOFF_S[attempt])
        on_done(ok)


async def post_new_connection(url: str, body: bytes) -> int:
    """POST `body` (JSON) on a new connection; the answer's status code."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    host = parts.hostname or "localhost"
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    reader, writer = await asyncio.open_connection(host, port, ssl=https or None)
    try:
        writer.write(
            (
                f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        _, status, _ = status_line.decode("latin-1").split(" ", 2)
        return int(status)
    finally:
        writer.close()
