"""`/health` (the process runs) and `/readiness` (PostgreSQL and Redis answer)."""
from __future__ import annotations

import falcon
import redis

from models.database import db


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


class ReadinessResource:
    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        down = {}
        try:
            db.execute_sql("SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            down["postgresql"] = f"{type(error).__name__}: {str(error).strip()[:200]}"
        try:
            self.redis.ping()
        except Exception as error:  # noqa: BLE001
            down["redis"] = f"{type(error).__name__}: {str(error).strip()[:200]}"
        resp.status = falcon.HTTP_503 if down else falcon.HTTP_200
        resp.media = {"ok": not down, "down": down}
