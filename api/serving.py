"""gunicorn hooks (loaded by `api/gunicorn_conf.py`): JSON logs from the master too, and a start
line that says what really serves: the bound addresses, once they are bound."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

log = logging.getLogger("astronote.web")

_JSON_HANDLER = {
    "class": "logging.StreamHandler",
    "formatter": "json",
    "stream": "ext://sys.stderr",
}

# gunicorn merges this over its defaults (shallow), so each section replaces its own.
LOGCONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.infra.logs.JsonFormatter", "process_role": "web"}},
    "handlers": {"console": _JSON_HANDLER, "error_console": _JSON_HANDLER},
    "root": {"level": os.environ.get("LOG_LEVEL", "INFO").upper(), "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {
            "level": "INFO",
            "handlers": ["error_console"],
            "propagate": False,
            "qualname": "gunicorn.error",
        },
        "gunicorn.access": {
            "level": "INFO",
            "handlers": ["console"],
            "propagate": False,
            "qualname": "gunicorn.access",
        },
    },
}


def on_starting(server: Any) -> None:
    """Check the configuration in the master, before any worker: a worker that exited on it
    would only be replaced by gunicorn, again and again, instead of the server stopping."""
    from service.infra import config, runtime

    runtime.check()
    if server.cfg.workers < 1:
        # gunicorn starts, says it listens, and answers nothing (a probe's WEB_CONCURRENCY=0).
        config.exit_with_error(
            f"the web needs at least one worker process (WEB_CONCURRENCY / gunicorn --workers"
            f" is {server.cfg.workers})"
        )


def when_ready(server: Any) -> None:
    """The master has bound its sockets and is about to start the workers."""
    log.info(
        "web listening",
        extra={
            "bind": [str(listener) for listener in server.LISTENERS],
            "workers": server.num_workers,
            "worker_class": server.cfg.worker_class_str,
            "threads": server.cfg.threads,
            "master_pid": os.getpid(),
        },
    )


def post_worker_init(worker: Any) -> None:
    """A gunicorn worker has loaded the app (settings, database, broker) and now serves."""
    # Everything loaded so far lives as long as the process: out of the collector's sight, a
    # full collection no longer walks it. Walking it took 45-49 ms, every thread of the process
    # stopped, a few times a minute under load: another shop's slowest requests were the ones
    # caught in it (bench/RESULTS.md, "The collector's pauses").
    gc.freeze()
    log.info(
        "web worker serving",
        extra={
            "bind": [str(listener) for listener in worker.sockets],
            "threads": worker.cfg.threads,
            "master_pid": worker.ppid,
        },
    )
