"""The web's gunicorn worker (the Procfile's `--worker-class`): gunicorn's threaded worker,
telling the application how long each request waited for one of its threads.

gthread accepts up to `worker_connections` connections and queues their requests for its
threads. Under a burst that queue grows until its requests have waited longer than their
clients do: the worker then spends its time storing reports nobody waits for, while the
clients time out and post them again (a congestion collapse, measured in `bench/RESULTS.md`).
Knowing each request's wait lets the delivery-report webhook answer a stale one 503 at once
(`api/report_ingest.py`, `REPORT_INGEST_MAX_WAIT_MS`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

_current = threading.local()


class TimedThreadWorker(ThreadWorker):
    def enqueue_req(self, conn: Any) -> None:
        # Every request reaches a thread through here: a new connection's, a kept-alive one's.
        conn.astronote_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        _current.queued_at = getattr(conn, "astronote_queued_at", None)
        try:
            return super().handle_request(req, conn)
        finally:
            _current.queued_at = None


def queued_for(now: float) -> float:
    """Seconds the request this thread serves waited for it (0 outside this worker)."""
    queued_at = getattr(_current, "queued_at", None)
    return 0.0 if queued_at is None else now - queued_at
