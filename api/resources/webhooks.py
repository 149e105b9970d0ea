"""`POST /webhooks/mitto/dlr`: delivery reports from the provider (one object or an array),
authenticated with DLR_WEBHOOK_SECRET by `Authentication` (`Access.WEBHOOK`)."""
from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import read_json
from service import delivery
from service.infra.config import Settings


class DeliveryReportResource:
    auth = Access.WEBHOOK

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.DELIVERY_REPORTS)
        reports = body if isinstance(body, list) else [body]
        for report in reports:
            if report.get("timestamp"):
                report["timestamp"] = schemas.parse_datetime(report["timestamp"])
        applied = delivery.record_reports(reports, self.settings)
        resp.media = {"received": len(reports), "applied": applied}
