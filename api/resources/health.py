"""`/health` (the process runs), `/readiness` (PostgreSQL and Redis answer) and `/health/full`
(the whole system works: workers, leader, queues, stuck campaigns; SPEC 8)."""
from __future__ import annotations

import falcon

from service.observability.health import HealthChecker


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


class ReadinessResource:
    """503 naming the dependency that is down; never a 500."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = self.checker.readiness()
        resp.status = falcon.HTTP_200 if report["ok"] else falcon.HTTP_503
        resp.media = report


class FullHealthResource:
    """200 with `ok: true`, or 503 with `ok: false` and a reason for each problem."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = self.checker.full()
        resp.status = falcon.HTTP_200 if report["ok"] else falcon.HTTP_503
        resp.media = report
