"""The operator page (`/ops`, ADMIN_TOKEN): one HTML page that polls `/ops/state` and redraws
campaigns, queues, workers, the leader and stuck campaigns without a reload."""
from __future__ import annotations

from pathlib import Path

import falcon

from api import ops_access
from service.infra.config import Settings
from service.observability import board
from service.observability.health import HealthChecker

PAGE = Path(__file__).resolve().parent.parent / "static" / "ops.html"


class OpsPageResource:
    def __init__(self, settings: Settings) -> None:
        self.admin_token = settings.admin_token or ""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if getattr(req.context, "ops_login", False):
            ops_access.start_session(req, resp, self.admin_token)
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-store"]
        resp.data = PAGE.read_bytes()


class OpsStateResource:
    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.cache_control = ["no-store"]
        resp.media = board.operator_state(self.checker)
