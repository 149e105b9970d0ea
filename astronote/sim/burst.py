"""Reports posted as a burst: a thread and a new connection per post, at once, without any bound.

The posting threads run in a child process of the simulator: thousands of runnable threads in
the simulator's own process would take its GIL from the API threads (each gets a thousandth of
it), so its `/smsbulk` answers would time out at the caller: the simulator collapsing, not the
receiver under test. In a process of their own they compete for CPU like any other program.
"""

from __future__ import annotations

import http.client
import itertools
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_ATTEMPTS = 4
_BACKOFF_S = (0.1, 0.3, 0.9)
_TIMEOUT_S = 5.0


class BurstPoster:
    """Posts submitted from any thread, each at once on its own thread and connection in the
    child process; `on_done(ok)` is called when a post succeeded or gave up."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._callbacks: dict[int, Callable[[bool], None]] = {}
        self._jobs: Any = None
        self._child: Any = None

    def submit(self, url: str, body: bytes, on_done: Callable[[bool], None]) -> None:
        self._ensure_child()
        job_id = next(self._ids)
        with self._lock:
            self._callbacks[job_id] = on_done
        self._jobs.put((job_id, url, body))

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
                job_id, ok = results.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                on_done = self._callbacks.pop(job_id, None)
            if on_done is not None:
                on_done(ok)


def run_child(jobs: Any, results: Any, parent: int) -> None:
    """The child process: a thread per post, started as soon as the post arrives."""
    while os.getppid() == parent:
        try:
            job = jobs.get(timeout=1)
        except queue.Empty:
            continue
        if job is None:
            return
        threading.Thread(target=_post_job, args=(job, results), daemon=True).start()


def _post_job(job: tuple[int, str, bytes], results: Any) -> None:
    job_id, url, body = job
    ok = False
    for attempt in range(_ATTEMPTS):
        status = post_new_connection(url, body)
        if status is not None:
            if 200 <= status < 300:
                ok = True
                break
            if status < 500 and status != 429:
                break  # the receiver refuses it: retrying cannot help
        if attempt < len(_BACKOFF_S):
            time.sleep(_BACKOFF_S[attempt])
    results.put((job_id, ok))


def post_new_connection(url: str, body: bytes) -> int | None:
    """POST `body` (JSON) on a new connection closed after the answer; the status, or None
    when it failed without one."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.netloc, timeout=_TIMEOUT_S)
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
