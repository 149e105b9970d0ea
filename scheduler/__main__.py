"""`python -m scheduler`: the Procfile's clock process."""

from __future__ import annotations

import logging
import os
import socket
import sys

import redis

from scheduler.clock import Clock, next_epoch
from scheduler.jobs import all_jobs
from scheduler.leader import Leadership
from scheduler.shutdown import ShutdownSignal
from service.infra import runtime

CLOCK_LOCK_TIMEOUT_MS = 10_000


def main() -> int:
    # A job that meets rows another process holds (a host frozen mid-persist) gives up after
    # CLOCK_LOCK_TIMEOUT_MS and is run again at its next slot, rather than wait as long as
    # the holder, its later runs skipped meanwhile while this clock keeps the lead.
    settings = runtime.boot("clock", lock_timeout_ms=CLOCK_LOCK_TIMEOUT_MS)
    # Our own lines say what ran and why; APScheduler's would repeat each one twice.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # A Redis call must give up well within the lease, so a hung connection cannot keep the
    # election loop from noticing that its lease ran out.
    timeout_s = min(2.0, max(0.2, settings.scheduler_lock_ttl_ms / 5000))
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    leadership = Leadership(
        client, f"{socket.gethostname()}:{os.getpid()}", settings.scheduler_lock_ttl_ms, next_epoch
    )
    stop = ShutdownSignal()
    return Clock(settings, client, leadership, all_jobs(settings), stop).run()


if __name__ == "__main__":
    sys.exit(main())
