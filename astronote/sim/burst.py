"""Reports posted as a burst: a new connection per post, at once, without any bound.

The posts run in a child process of the simulator, on one asyncio event loop: each post is a
task that opens its own connection (`Connection: close`) as soon as it arrives, however many
are already open. A thread per post, as this once was, made the simulator's own cost the
measurement: 13,000 runnable threads on two cores starved every process on the machine, the
receiver under test included, and their GIL convoy made the child itself crawl. An event loop
opens the same connections for a fraction of the CPU. A post that fails is retried as a
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
    loop = asyncio.new_event_loop()

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
    try:
        return await asyncio.wait_for(_exchange(url, body), timeout)
    except (TimeoutError, OSError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError):
        return None, None


async def _exchange(url: str, body: bytes) -> tuple[int | None, str | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=True if parts.scheme == "https" else None
    )
    try:
        target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        retry_after = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "retry-after":
                retry_after = value.strip()
        await reader.read()  # the body, to the close
        return status, retry_after
    finally:
        writer.close()
