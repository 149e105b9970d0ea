"""`POST /webhooks/mitto/dlr`: delivery reports from the provider (one object or an array)."""
from __future__ import annotations

import hmac

import falcon

from api import schemas
from api.body import read_json
from service import delivery
from service.errors import NotFound, Unauthorized
from service.infra.config import Settings


class DeliveryReportResource:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.dlr_webhook_secret

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.secret:
            raise NotFound("the delivery-report webhook is disabled (DLR_WEBHOOK_SECRET unset)")
        token = req.get_header("X-Webhook-Token") or req.get_param("token") or ""
        if not hmac.compare_digest(token.encode(), self.secret.encode()):
            raise Unauthorized("a valid webhook token is required")
        body = read_json(req, schemas.DELIVERY_REPORTS)
        reports = body if isinstance(body, list) else [body]
        for report in reports:
            if report.get("timestamp"):
                report["timestamp"] = schemas.parse_datetime(report["timestamp"])
        applied = delivery.record_reports(reports)
        resp.media = {"received": len(reports), "applied": applied}
