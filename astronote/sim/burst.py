"""Reports posted as a burst: a new connection per post, at once, without any bound.

The posts run in a child process of the simulator, on one event loop (uvloop): each post is a
task that opens its own connection (`Connection: close`) as soon as it arrives, however many
are already open. A thread per post, as this once was, made the simulator's own cost the
measurement: 13,000 runnable threads on two cores starved every process on the machine, the
receiver under test included, and their GIL convoy made the child itself crawl. An event loop
opens the same connections for a fraction of the CPU; on asyncio's own loop and streams the
child still took a whole core and was what limited a burst of 20,000, its 5 s timeouts turning
into retries (about 80,000; `bench/RESULTS.md`). A post that fails is retried as a
provider does (`astronote.sim.retry`).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import queue
import resource
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop

from astronote.sim.retry import Retries


class BurstPoster:
    """Posts submitted from any thread, each at once on its own connection in the child
    process; `on_done(ok, retries)` is called when a post succeeded or gave up."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._callbacks: dict[int, Callable[[bool, int], None]] = {}
        self._jobs: Any = None
        self._child: Any = None

    def submit(
        self, url: str, body: bytes, timeout: float, on_done: Callable[[bool, int], None]
    ) -> None:
        self._ensure_child()
        job_id = next(self._ids)
        with self._lock:
            self._callbacks[job_id] = on_done
        self._jobs.put((job_id, url, body, timeout))

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            self._jobs.put(None)
            child.join(timeout=2)
            if child.is_alive():
                child.terminate()

    def _ensure_child(self) -> None:
        with self._lock:
            if self._child is not None or self._stopping.is_set():
                return
            context = multiprocessing.get_context("spawn")
            self._jobs, results = context.Queue(), context.Queue()
            self._child = context.Process(
                target=run_child, args=(self._jobs, results, os.getpid()), daemon=True
            )
            self._child.start()
        threading.Thread(
            target=self._collect, args=(results,), name="provider-sim-dlr-burst", daemon=True
        ).start()

    def _collect(self, results: Any) -> None:
        while not self._stopping.is_set():
            try:
                job_id, ok, retries = results.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                on_done = self._callbacks.pop(job_id, None)
            if on_done is not None:
                on_done(ok, retries)


def run_child(jobs: Any, results: Any, parent: int) -> None:
    """The child process: an event loop starting a task per post as soon as the post arrives;
    a thread hands it the jobs from the parent."""
    # As many connections at once as the machine lets this process have.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # uvloop: the receiver's own loop, so that this client is not the slower side of the test.
    loop = uvloop.new_event_loop()

    def feed() -> None:
        try:
            while os.getppid() == parent:
                try:
                    job = jobs.get(timeout=1)
                except queue.Empty:
                    continue
                if job is None:
                    break
                loop.call_soon_threadsafe(_start, loop, job, results)
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # the loop already closed: the process is exiting
            pass

    threading.Thread(target=feed, name="burst-feed", daemon=True).start()
    loop.run_forever()


_tasks: set[asyncio.Task[None]] = set()  # held until done: the loop keeps weak references


def _start(
    loop: asyncio.AbstractEventLoop, job: tuple[int, str, bytes, float], results: Any
) -> None:
    task = loop.create_task(_post_job(job, results))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _post_job(job: tuple[int, str, bytes, float], results: Any) -> None:
    job_id, url, body, timeout = job
    retries = Retries()
    while True:
        status, retry_after = await post_new_connection(url, body, timeout)
        wait = retries.after(status, retry_after)
        if wait is None:
            break
        await asyncio.sleep(wait)
    ok = status is not None and 200 <= status < 300
    results.put((job_id, ok, retries.attempts - 1))


async def post_new_connection(
    url: str, body: bytes, timeout: float = 5.0
) -> tuple[int | None, str | None]:
    """POST `body` (JSON) on a new connection closed after the answer; the status and its
    Retry-After, or None when it failed without one."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    request = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: _Exchange(request, answer),
                parts.hostname,
                port,
                ssl=True if parts.scheme == "https" else None,
            )
            return _status(await answer)
    except (TimeoutError, OSError, ValueError, IndexError):
        return None, None
    finally:
        if transport is not None:
            transport.close()


class _Exchange(asyncio.Protocol):
    """One request written as the connection opens; the answer is everything read until the
    server closes (`Connection: close`). A protocol rather than asyncio's streams: at 20,000
    connections the streams' own cost made this process, not the receiver, the bottleneck."""

    def __init__(self, request: bytes, answer: asyncio.Future[bytes]) -> None:
        self._request = request
        self._answer = answer
        self._chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_result(b"".join(self._chunks))


def _status(answer: bytes) -> tuple[int | None, str | None]:
    """The status and Retry-After of an answer read to the close; None for one cut short."""
    head, found, _ = answer.partition(b"\r\n\r\n")
    if not found:
        return None, None  # reset or closed before the whole head arrived
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    retry_after = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "retry-after":
            retry_after = value.strip()
    return status, retry_after
