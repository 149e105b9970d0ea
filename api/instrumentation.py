"""Falcon middleware that times each request into `astronote_http_request_seconds`, labelled by
route template (`/campaigns/{campaign_id}`), never by the concrete path (ids are unbounded).

Each answer also says where its time went (`Server-Timing`, milliseconds): `app` from the
first middleware to the last, of which `cpu` on this thread's CPU and `runq` waiting for a core
(Linux's schedstat of the thread); the rest of `app` is waiting for PostgreSQL, Redis or the
GIL. What a client measures beyond `app` is the network and gunicorn's queue (a free thread,
the request read and parsed). `bench/api_fairness.py` reads it to tell one shop's latency apart.
"""

from __future__ import annotations

import re
import threading
import time

import falcon

from service.infra import metrics

# Any token is a valid method on the wire: unknown ones share one label value.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# `{campaign_id:id}` -> `{campaign_id}`: the label names the route, briefly.
_CONVERTER = re.compile(r"\{(\w+):[^}]*\}")


def run_queue_s() -> float | None:
    """Seconds this thread has waited for a core since it started (None off Linux)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class RequestMetrics:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.began = time.perf_counter()
        req.context.cpu_began = time.thread_time()
        req.context.runq_began = run_queue_s()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool
    ) -> None:
        began = getattr(req.context, "began", None)
        if began is None:
            return
        route = _CONVERTER.sub(r"{\1}", req.uri_template) if req.uri_template else "unmatched"
        status = f"{resp.status_code // 100}xx"
        method = req.method if req.method in METHODS else "other"
        took = time.perf_counter() - began
        metrics.observe_http(method, route, status, took)
        cpu = time.thread_time() - req.context.cpu_began
        timing = f"app;dur={took * 1000:.2f}, cpu;dur={cpu * 1000:.2f}"
        runq_began, runq = req.context.runq_began, run_queue_s()
        if runq_began is not None and runq is not None:
            timing += f", runq;dur={(runq - runq_began) * 1000:.2f}"
        resp.set_header("Server-Timing", timing)
