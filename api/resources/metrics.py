"""`/metrics` (admin token): Prometheus text format, every process's events plus the system's
state."""

from __future__ import annotations

import falcon

from api.access import Access
from api.docs import Answer, Operation
from service.infra import metrics
from service.infra.metrics import SystemCollector


class MetricsResource:
    auth = Access.ADMIN
    docs = {
        "GET": Operation(
            "Prometheus metrics, aggregated across web and worker processes",
            {200: Answer("The Prometheus text format", {"type": "string"}, "text/plain")},
        )
    }

    def __init__(self, collector: SystemCollector) -> None:
        self.collector = collector

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = metrics.exposition(self.collector)
