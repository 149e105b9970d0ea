"""`POST /webhooks/mitto/dlr`: delivery reports from the provider (one object or an array),
authenticated with DLR_WEBHOOK_SECRET by `Authentication` (`Access.WEBHOOK`)."""
from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import read_json
from api.docs import Answer, Operation
from service import delivery


class DeliveryReportResource:
    auth = Access.WEBHOOK
    docs = {"POST": Operation(
        "Delivery reports from the provider (one report or an array)",
        {200: Answer("Stored; `applied` of them matched a message already",
                     schemas.REPORTS_RECEIVED)},
        body=schemas.DELIVERY_REPORTS)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.DELIVERY_REPORTS)
        reports = body if isinstance(body, list) else [body]
        for report in reports:
            if report.get("timestamp"):
                report["timestamp"] = schemas.parse_datetime(report["timestamp"])
        applied = delivery.record_reports(reports)
        resp.media = {"received": len(reports), "applied": applied}
