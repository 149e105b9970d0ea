"""Dramatiq middleware: each message gets a pooled database connection for its duration, and
batches learn that their worker is shutting down."""

from __future__ import annotations

import threading

from dramatiq import Middleware

from models.database import db


class DatabaseConnection(Middleware):
    def before_process_message(self, broker, message) -> None:
        db.connect(reuse_if_open=True)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if not db.is_closed():
            db.close()

    after_skip_message = after_process_message


class WorkerStopping(Middleware):
    """Sets `stopping` when the worker shuts down (SIGTERM): a batch then stops after the
    window in flight and puts its rest back on the queue, rather than holding the shutdown
    for a whole batch or being cut off by it."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def before_worker_shutdown(self, broker, worker) -> None:
        self.stopping.set()
