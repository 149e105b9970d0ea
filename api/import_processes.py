"""Contact imports read and written in processes of the web process's own (`IMPORT_PROCESSES`
each).

An import is CPU: for 10,000 rows about 0.55 s of Python to read (each row's schema check, its
number parsed and validated) and 0.25-0.3 s more to write (the statements' parameters, the
rows they answer, the erased numbers' digests). In the web process that time holds the GIL,
which every other request of the process needs back at each PostgreSQL or Redis answer, and
which a thread keeps while the kernel has it waiting for a core. With one web process, another
shop's requests beside one shop's imports took 21-22 ms at the median against 6.5 ms alone;
with the reading in a child, 5.8 ms at the median but 26-56 ms at the 99th percentile; with the
writing there too, 14-22 ms (bench/RESULTS.md, "An import written by its child"). In a child
process, at a lower priority, an import competes for a core, which the kernel shares out by
priority, instead of for the GIL.

The child is given the body's bytes and the request's shop, and answers what the import did
(`contacts.ImportResult`); it writes on a database connection of its own (one per child, on top
of the web process's pool). One child runs its web process's imports one after another (a
shop has one in flight at a time: API_SHOP_HEAVY_CONCURRENCY).

A campaign's body over `api.access.HEAVY_BODY` (a long list of contact ids) is read by the same
child, for the same reason: 500,000 ids are 4.5 MB of JSON, 0.16 s of Python and a 50-100 ms
call of the parser holding the GIL (`api/resources/campaigns.campaign_draft`).

A child that dies (killed, out of memory) costs nothing but time: that import runs again in
the request's thread and the next one starts a new child. An import is written in one
transaction and writing it again changes nothing (an upsert; each consent logged once), so a
child killed after its commit leaves the import written once, the request's run answering its
new contacts as updated. A child that does not answer an import within `CHILD_WAIT_S` of taking
it, or children that answer nothing for that long while an import waits its turn, are killed
(all of the web process's: which one is stuck is not known), which rolls back what they had not
committed, and the import runs in the request; a child whose web process is killed exits. A
child is started at the first import (about a second here), not at the web process's start.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import falcon

from models import database
from service.infra import config, logs
from service.infra.config import Settings

log = logging.getLogger("astronote.imports")

# Added to the child's niceness: the web's own requests win a core from an import.
NICENESS = 10
# How long an import's child may take with it, and how long the children may go without
# answering anything while it waits its turn, before they are killed and the import runs in the
# request: a child stopped (SIGSTOP, a debugger) held every importing thread of its web process
# until it was continued (a probe). Not counted from each import's submission: imports queued
# behind others (an import that waits for a shop's erasure waits up to 2 s) are no sign of a
# stuck child. An import of 10,000 rows takes about 1 s.
CHILD_WAIT_S = 60.0

T = TypeVar("T")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_processes = 0
_settings: Settings | None = None
# In a child: whether it has a database (its web process's settings were given).
_writes = False


def configure(processes: int, settings: Settings | None = None) -> None:
    """How many children each web process runs imports in (0: in the request's thread), and
    the settings they connect to the database with (None: children that only read)."""
    global _processes, _settings
    if (processes, settings) != (_processes, _settings):
        _processes, _settings = processes, settings
        shutdown(wait=False)  # children started with other settings (tests)


def run(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in a child process (or here, see `configure`): its value, or what it
    raised. `call` and its arguments must be picklable (a module's function, plain data), and
    running it twice must do what running it once does (see the module's docstring)."""
    if not _processes:
        return call(*args)
    pool = _the_pool()
    try:
        return _result(_submit(pool, call, args))
    except _Refused as refused:
        status, title, description = refused.args
        raise falcon.HTTPError(status, title=title, description=description) from None
    except (BrokenProcessPool, CancelledError):
        # Its child died, or another import's discarded the children with this one queued.
        _discard(pool)
        log.warning("a reading child process died; running %s in the request", _what(call))
        return call(*args)
    except _Stalled:
        _discard(pool, kill=True)
        log.warning(
            "a reading child did not answer in %s s (stopped or stuck); running %s in the request",
            CHILD_WAIT_S,
            _what(call),
        )
        return call(*args)


def _what(call: Callable[..., Any]) -> str:
    """The work a log line names: the function (an import, or a campaign's large body), not
    "this import" whatever it was."""
    return getattr(call, "__qualname__", repr(call))


class _Stalled(Exception):
    """The children answered nothing for CHILD_WAIT_S while an import waited, or the child
    that took it did not answer it in that time."""


# Imports given to the children and not answered yet, how many the children have answered,
# and when they last showed progress: an answer, or work given to them when they had none.
_pending = 0
_answers = 0
_progress = 0.0


@dataclass(frozen=True)
class _Import:
    """An import given to the children. `ahead`: how many answers (`_answers` past
    `answers_then`) must come before a child has surely taken it: the imports not answered
    when it was given, but one per child (the children take them in order)."""

    future: Future
    submitted: float
    ahead: int
    answers_then: int


def _submit(pool: ProcessPoolExecutor, call: Callable[..., T], args: tuple) -> _Import:
    global _pending, _progress
    with _lock:
        # Counted and given in one step, so that the imports ahead of it are those given
        # before it. (The executor calls no callback of ours under its own lock.)
        now = time.monotonic()
        try:
            future = pool.submit(_in_child, call, args)
        except (RuntimeError, BrokenProcessPool):  # broken, or replaced, since `_the_pool`
            raise BrokenProcessPool("the import children were replaced") from None
        if not _pending:
            _progress = now
        item = _Import(future, now, max(0, _pending - _processes + 1), _answers)
        _pending += 1
    future.add_done_callback(_answered)
    return item


def _answered(_future: Future) -> None:
    global _pending, _answers, _progress
    with _lock:
        _pending -= 1
        _answers += 1
        _progress = time.monotonic()


def _result(item: _Import) -> Any:
    """The import's answer, waited for while its children answer something at least every
    CHILD_WAIT_S and, once one of them has taken it, for at most CHILD_WAIT_S after (one
    child stopped with it while its siblings answer others: the probe's import waited 80 s,
    until continued); else `_Stalled`."""
    future = item.future
    taken_at = item.submitted if not item.ahead else None
    while True:
        with _lock:
            now = time.monotonic()
            if taken_at is None and _answers - item.answers_then >= item.ahead:
                taken_at = _progress  # (when it was taken, or later: the later, the more time)
            deadline = _progress + CHILD_WAIT_S
            if taken_at is not None:
                deadline = min(deadline, taken_at + CHILD_WAIT_S)
        left = deadline - now
        if left <= 0 and not future.done():
            raise _Stalled()
        try:
            # (Not `wait()`: it takes a future cancelled with the children's queue for one
            # still running, and a loop on it spun for ever.) A second at most: when a child
            # takes it is seen within a second.
            return future.result(timeout=min(max(left, 0), 1.0))
        except TimeoutError:
            if future.done():  # the child's own TimeoutError, or answered just now
                return future.result()


class _Refused(Exception):
    """A falcon.HTTPError raised in the child: its title and description do not survive
    pickling (falcon's errors take them as keywords), these arguments do."""


def _in_child(call: Callable[..., T], args: tuple) -> T:
    try:
        return call(*args)
    except falcon.HTTPError as error:
        raise _Refused(error.status, error.title, error.description) from None
    finally:
        if _writes and not database.db.is_closed():
            database.db.close()  # back to the child's pool, as the web's requests do


def _start_child(settings: Settings | None) -> None:
    global _writes
    os.nice(NICENESS)
    if settings is not None:
        # The web process's own start (`service.infra.runtime.boot`), for what an import does:
        # its settings, its log lines (secrets hidden), one connection.
        config.override(settings)
        logs.configure("web-import")
        logs.hide_secrets(*settings.secret_values)
        database.bind(settings.database_url, 1)
        _writes = True
    # A Ctrl-C in a terminal reaches the whole process group: the web process stops its
    # children itself when it exits, without a traceback from each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A web process killed (gunicorn's timeout or graceful timeout, the OOM killer: SIGKILL)
    # stops nothing: its child, waiting on a queue it holds both ends of, would live on.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(0)


def _the_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # `spawn`: a fork of a threaded web process could copy a lock another thread
            # holds (the logging module's, a connection pool's) into the child, held forever.
            _pool = ProcessPoolExecutor(
                _processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
                initargs=(_settings,),
            )
        return _pool


def _discard(pool: ProcessPoolExecutor, kill: bool = False) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    if kill:
        # The executor has no public way to stop a child that does not answer (Python 3.14
        # adds `kill_workers`); the imports it held fail over to their requests.
        for process in list((pool._processes or {}).values()):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown(wait: bool = True) -> None:
    """Stop this process's children (the web worker's exit; tests)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)
