"""Dramatiq middleware: each message gets a pooled database connection for its duration, and
batches learn that their worker is shutting down."""

from __future__ import annotations

import logging
import threading

from dramatiq import Message, Middleware

from models.database import db


class DatabaseConnection(Middleware):
    def before_process_message(self, broker, message) -> None:
        db.connect(reuse_if_open=True)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if not db.is_closed():
            db.close()

    after_skip_message = after_process_message


# How long an idle consumer waits at most before asking the broker again (Dramatiq's default
# is 1000 ms). It also bounds how late a delayed message comes back: a batch put back on the
# queue for the rate limit (service/infra/ratelimit.py) must return when the budget does, or
# the account's rate is lost waiting (20 ms: 94% of a 200/s limit reached, 50 ms: 92%, bench/
# RESULTS.md). About 50 polls a second per idle queue: each a Redis call on the Redis broker.
QUEUE_POLL_MS = 20


class QueuePolling(Middleware):
    """Sets the worker's poll interval (`QUEUE_POLL_MS`) before its consumers start:
    Dramatiq's command line has no option for it."""

    def before_worker_boot(self, broker, worker) -> None:
        worker.worker_timeout = QUEUE_POLL_MS


class WorkerStopping(Middleware):
    """Sets `stopping` when the worker shuts down (SIGTERM): a batch then stops after the
    window in flight and puts its rest back on the queue, rather than holding the shutdown
    for a whole batch or being cut off by it.

    It also keeps the process's Dramatiq worker, so that an exit Dramatiq does not stop the
    worker on (its second SIGTERM) can still stop it the graceful way (`stop_worker`)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.worker = None
        self._stopped = threading.Lock()

    def after_worker_boot(self, broker, worker) -> None:
        self.worker = worker

    def before_worker_shutdown(self, broker, worker) -> None:
        self.stopping.set()

    def stop_worker(self, timeout_ms: int) -> None:
        """Stop the worker as Dramatiq's own shutdown does, once per process: its threads end
        the message in hand (a batch: the window in flight, then its rest back on the
        queue) and are acknowledged, then the messages the consumers had fetched but no
        thread started go back to the broker. Without this, an exit leaves both in the dead
        consumer's hands until the broker's heartbeat timeout gives them to another worker."""
        self.stopping.set()
        if self.worker is None or not self._stopped.acquire(blocking=False):
            return
        try:
            self.worker.stop(timeout=timeout_ms)
        except Exception:  # noqa: BLE001 - the process is exiting; the reconciler repairs
            logging.getLogger("astronote.worker").exception("stopping the worker failed")


class RequeuePrefetched(Middleware):
    """Gives back to the broker, when a consumer thread stops, the messages Dramatiq's Redis
    consumer fetched in its last round but never handed to a worker thread (its
    `message_cache`). Dramatiq requeues what reached the work queue, not these: they stayed
    in the stopped worker's ack set until the broker's heartbeat timeout (a minute by
    default) and a later worker's maintenance gave them out again, so a batch put back on
    the queue at a shutdown could wait that long. RabbitMQ returns unacknowledged messages
    when the channel closes."""

    def before_consumer_thread_shutdown(self, broker, thread) -> None:
        consumer = getattr(thread, "consumer", None)
        cached = getattr(consumer, "message_cache", None)
        if not cached:
            return
        assert consumer is not None
        consumer.message_cache = []
        try:
            consumer.requeue([Message.decode(data) for data in cached if data is not None])
        except Exception:  # noqa: BLE001 - the heartbeat timeout still gives them back
            logging.getLogger("astronote.worker").exception(
                "requeueing prefetched messages failed", extra={"queue": thread.queue_name}
            )
