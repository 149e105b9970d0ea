"""`/health` (public: the process runs), `/readiness` (public: PostgreSQL and Redis answer) and
`/health/full` (admin token: the whole system works: workers, leader, queues, stuck campaigns;
SPEC 8)."""

from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.docs import Answer, Operation
from service.observability.health import HealthChecker


class HealthResource:
    auth = Access.PUBLIC
    docs = {
        "GET": Operation(
            "The process runs", {200: Answer("Always", schemas.HEALTH)}, needs_dependencies=False
        ),
        "HEAD": Operation(
            "The process runs (the status of GET, no body)",
            {200: Answer("Always")},
            needs_dependencies=False,
        ),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}

    # Load balancers that check with HEAD (HAProxy's `option httpchk HEAD`) get the status.
    on_head = on_get


class ReadinessResource:
    """503 naming the dependency that is down; never a 500."""

    auth = Access.PUBLIC
    docs = {
        "GET": Operation(
            "PostgreSQL and Redis answer",
            {
                200: Answer("Both answer", schemas.READINESS),
                503: Answer(
                    "`down` names what does not answer (never the error)", schemas.READINESS
                ),
            },
            needs_dependencies=False,
        ),
        "HEAD": Operation(
            "PostgreSQL and Redis answer (the status of GET, no body)",
            {200: Answer("Both answer"), 503: Answer("One does not answer")},
            needs_dependencies=False,
        ),
    }

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = self.checker.readiness()
        resp.status = falcon.HTTP_200 if report["ok"] else falcon.HTTP_503
        resp.media = report

    on_head = on_get


class FullHealthResource:
    """200 with `ok: true`, or 503 with `ok: false` and a reason for each problem."""

    auth = Access.ADMIN
    docs = {
        "GET": Operation(
            "The whole system: workers, clock leader, queues, stuck campaigns",
            {
                200: Answer("`ok`: every check passed", schemas.FULL_HEALTH),
                503: Answer(
                    "`ok` false, with a reason per problem in `problems`", schemas.FULL_HEALTH
                ),
            },
            needs_dependencies=False,
        ),
    }

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = self.checker.full()
        resp.status = falcon.HTTP_200 if report["ok"] else falcon.HTTP_503
        resp.media = report
