"""The provider's webhooks, authenticated with DLR_WEBHOOK_SECRET by `Authentication`
(`Access.WEBHOOK`): `POST /webhooks/mitto/dlr`, delivery reports (one object or an array), and
`POST /webhooks/mitto/inbound`, a message a customer sent (SPEC 11)."""

from __future__ import annotations

import logging

import falcon
import redis

from api import schemas
from api.access import Access
from api.body import read_json
from api.docs import Answer, Operation
from service import audit, inbound, report_inbox
from service.contacts import normalise_phone
from service.errors import InvalidInput
from service.infra.config import Settings
from service.provider import Provider
from service.report_writer import ReportWriter

log = logging.getLogger("astronote.api.webhooks")


class DeliveryReportResource:
    auth = Access.WEBHOOK
    docs = {
        "POST": Operation(
            "Delivery reports from the provider (one report or an array)",
            {
                200: Answer(
                    "Stored (committed); the applier applies them REPORT_APPLY_DELAY_MS (150 ms)"
                    " later",
                    schemas.REPORTS_RECEIVED,
                )
            },
            body=schemas.DELIVERY_REPORTS,
        )
    }

    def __init__(self, settings: Settings, signals: redis.Redis) -> None:
        self.applier = report_inbox.ApplierSignal(signals, settings)
        self.writer = ReportWriter()

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.DELIVERY_REPORTS)
        reports = body if isinstance(body, list) else [body]
        for report in reports:
            if report.get("timestamp"):
                report["timestamp"] = schemas.parse_datetime(report["timestamp"])
        # Committed before the answer: a report answered 200 is on disk. Applying is the
        # applier's, signalled after the commit (at most one Redis round trip, and a publish
        # once per REPORT_APPLY_DELAY_MS across every web process).
        self.writer.store(reports)
        self.applier.after_commit()
        resp.media = {"received": len(reports)}


def inbound_number(raw: str) -> str:
    """The customer's number in E.164; providers write it with or without the `+`."""
    digits = raw.strip()
    try:
        return normalise_phone(digits if digits.startswith("+") else f"+{digits}")[0]
    except ValueError as error:
        raise InvalidInput(f"'from' is not a phone number: {error}", "from") from None


class InboundResource:
    """`{from, to, text, id?, timestamp?}` (`schemas.INBOUND_MESSAGE`); 200 whether or not a
    shop was found for it, so the provider does not retry what cannot succeed later."""

    auth = Access.WEBHOOK
    docs = {
        "POST": Operation(
            "An inbound message from a customer (STOP, START, HELP, ...)",
            {200: Answer("What it did", schemas.COMPLIANCE_ANSWER)},
            body=schemas.INBOUND_MESSAGE,
        )
    }

    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.settings = settings
        self.provider = provider

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.INBOUND_MESSAGE)
        message = inbound.Inbound(
            phone=inbound_number(body["from"]),
            sender=body["to"].strip(),
            text=body["text"],
            provider_id=body.get("id"),
            received_at=schemas.parse_datetime(body["timestamp"])
            if body.get("timestamp")
            else None,
        )
        received = inbound.receive(message, self.settings, self.provider, audit.PROVIDER_WEBHOOK)
        if not received.shop_ids:
            log.warning("inbound message for no shop", extra={"keyword": received.keyword})
        resp.media = {
            "keyword": received.keyword,
            "shops": len(received.shop_ids),
            "duplicate": received.duplicate,
            "reply": received.reply,
        }
