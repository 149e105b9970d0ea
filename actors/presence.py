"""Dramatiq middleware that makes a worker process visible: it logs what the process really
consumes once its threads run, and keeps it registered in Redis
(`service.observability.workers`) while they are alive. The seed logged "workers started" on
a process that had started none."""

from __future__ import annotations

import logging
import os
import socket
import sys
from datetime import UTC, datetime

import redis
from dramatiq import Middleware
from dramatiq.common import q_name

from service.observability import workers

log = logging.getLogger("astronote.worker")


def cli_processes(argv: list[str] | None = None) -> int | None:
    """`--processes` as the `dramatiq` command that started us parsed it (the children of the
    dramatiq CLI inherit its argv); None when not started by that command."""
    argv = sys.argv if argv is None else argv
    if not argv or "dramatiq" not in argv[0]:
        return None
    from dramatiq.cli import make_argument_parser

    try:
        args, _ = make_argument_parser().parse_known_args(argv[1:])
    except SystemExit:
        return None
    return args.processes


class WorkerPresence(Middleware):
    """`after_worker_boot`: log and register; `before_worker_shutdown`: unregister at once."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.presence: workers.Presence | None = None

    def after_worker_boot(self, broker, worker) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        holder = f"{socket.gethostname()}:{os.getpid()}"
        started_at = datetime.now(UTC)
        processes = cli_processes()

        def entry() -> workers.WorkerEntry | None:
            # Only what is really running counts: a queue whose consumer thread died is not
            # consumed, and a process whose worker threads all died consumes nothing.
            queues = sorted(
                {
                    q_name(name)
                    for name, thread in list(worker.consumers.items())
                    if thread.is_alive()
                }
            )
            threads = sum(1 for thread in list(worker.workers) if thread.is_alive())
            if not queues or not threads:
                return None
            # Only Dramatiq's Redis broker has an id (its heartbeats' key); RabbitMQ has none.
            return workers.WorkerEntry(
                holder, queues, threads, processes, getattr(broker, "broker_id", None), started_at
            )

        first = entry()
        log.info(
            "worker consuming" if first else "worker started but consumes nothing",
            extra={
                "holder": holder,
                "queues": first.queues if first else [],
                "threads": first.threads if first else 0,
                "processes": processes,
                "broker": type(broker).__name__,
                "broker_id": getattr(broker, "broker_id", None),
            },
        )
        self.presence = workers.Presence(client, entry)
        self.presence.start()

    def before_worker_shutdown(self, broker, worker) -> None:
        if self.presence is not None:
            self.presence.stop()
            log.info("worker stopping: unregistered", extra={"pid": os.getpid()})
