"""The provider's webhooks, authenticated with DLR_WEBHOOK_SECRET by `Authentication`
(`Access.WEBHOOK`): `POST /webhooks/mitto/dlr`, delivery reports (one object or an array), and
`POST /webhooks/mitto/inbound`, a message a customer sent (SPEC 11)."""

from __future__ import annotations

import logging

import falcon

from api import schemas
from api.access import Access
from api.body import read_bytes, read_json
from api.docs import Answer, Operation
from api.report_ingest import SHED_RETRY_AFTER_S, Refused, ReportIngest, parse_reports, shed
from service import audit, inbound
from service.contacts import normalise_phone
from service.errors import InvalidInput
from service.infra.config import Settings
from service.infra.ratelimit import SendLimiter
from service.provider import Provider, message_id, whole_number_text

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
            description=(
                "Answered before the rest of the API (`api/report_ingest.py`). A web process"
                " holding REPORT_INGEST_MAX_PENDING reports waiting to be stored answers 503"
                f" with `Retry-After: {SHED_RETRY_AFTER_S}` at once: those reports were not"
                " stored, post them again."
            ),
        )
    }

    def __init__(self, ingest: ReportIngest) -> None:
        self.ingest = ingest

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # In production `ReportRoute` answers this route before Falcon; this responder is the
        # same intake (one parse, one writer, one bound) for whatever reaches it here.
        if self.ingest.full():
            raise _http(shed())
        try:
            parsed = parse_reports(read_bytes(req))
            self.ingest.store(parsed.reports)
        except Refused as refused:
            raise _http(refused) from None
        resp.media = parsed.answer()


def _http(refused: Refused) -> falcon.HTTPError:
    return falcon.HTTPError(
        refused.status,
        title=refused.body["title"],
        description=refused.body["description"],
        headers=dict(refused.headers),
    )


def whole_text(value: str | int | float) -> str:
    """A field the schema lets be a string or a whole number (`306912345678`, `306912345678.0`)
    as text."""
    return value if isinstance(value, str) else whole_number_text(value, 40) or str(value)


def inbound_number(raw: str) -> str:
    """The customer's number in E.164; providers write it with or without the `+`, or with the
    international `00` in its place (E.164's digits never start with 0)."""
    digits = raw.strip()
    if digits.startswith("00"):
        digits = "+" + digits[2:]
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

    def __init__(
        self, settings: Settings, provider: Provider, limiter: SendLimiter | None = None
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.limiter = limiter

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.INBOUND_MESSAGE, provider=True)
        message = inbound.Inbound(
            phone=inbound_number(whole_text(body["from"])),
            sender=whole_text(body["to"]).strip(),
            text=body["text"],
            provider_id=message_id(body.get("id")),
            received_at=schemas.provider_time(body.get("timestamp")),
        )
        received = inbound.receive(
            message, self.settings, self.provider, audit.PROVIDER_WEBHOOK, self.limiter
        )
        if not received.shop_ids:
            log.warning("inbound message for no shop", extra={"keyword": received.keyword})
        resp.media = {
            "keyword": received.keyword,
            "shops": len(received.shop_ids),
            "duplicate": received.duplicate,
            "reply": received.reply,
        }
