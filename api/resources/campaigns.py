"""`/campaigns`: create, read, edit, and the merchant's actions on a campaign."""

from __future__ import annotations

from datetime import UTC, datetime

import falcon

from api import import_processes, schemas
from api.access import HEAVY_BODY, Access
from api.body import (
    check_json_media,
    choice_param,
    json_document,
    page,
    page_after,
    page_limit,
    read_bytes,
    read_json,
)
from api.docs import AFTER, LIMIT, Answer, Link, Operation, Param, id_links, operation_id
from models.expressions import IdArray
from service import audit, campaigns, test_sends
from service.audit import Actor
from service.enqueue import enqueue
from service.infra import clock
from service.infra.config import Settings

STATUSES = schemas.CAMPAIGN_STATUSES
RECIPIENT_STATUSES = schemas.RECIPIENT_STATUSES

CAMPAIGN_PATH = "/campaigns/{campaign_id}"
# Where a campaign's id leads (schemathesis' stateful tests follow these links).
CAMPAIGN_LINKS = id_links(
    "campaign_id",
    "$response.body#/id",
    ("GET", CAMPAIGN_PATH),
    ("PATCH", CAMPAIGN_PATH),
    *(
        ("POST", f"{CAMPAIGN_PATH}/{action}")
        for action in ("enqueue", "schedule", "pause", "resume", "cancel")
    ),
    ("GET", f"{CAMPAIGN_PATH}/progress"),
    ("GET", f"{CAMPAIGN_PATH}/recipients"),
    ("GET", f"{CAMPAIGN_PATH}/events"),
    ("POST", f"{CAMPAIGN_PATH}/test"),
)
CAMPAIGN_ANSWER = Answer("The campaign", schemas.CAMPAIGN, links=CAMPAIGN_LINKS)


def key_actor(req: falcon.Request) -> Actor:
    """The API key the request authenticated with, as the actor of what it changes."""
    return Actor.key(req.context.api_key_id)


class CampaignsResource:
    auth = Access.SHOP
    docs = {
        "POST": Operation(
            "Create a draft campaign",
            {201: Answer("The draft", schemas.CAMPAIGN, links=CAMPAIGN_LINKS)},
            body=schemas.CAMPAIGN_CREATE,
            description="Without `contact_ids` the audience is every subscribed contact; an"
            " id that is not one of the shop's contacts is a 422.",
        ),
        "GET": Operation(
            "List the shop's campaigns",
            {
                200: Answer(
                    "A page of campaigns",
                    schemas.page_of(schemas.CAMPAIGN),
                    links=id_links(
                        "campaign_id", "$response.body#/items/0/id", ("GET", CAMPAIGN_PATH)
                    ),
                )
            },
            query=(
                LIMIT,
                AFTER,
                Param("status", {"enum": list(STATUSES)}, "only campaigns in this status"),
            ),
        ),
    }

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_json_media(req)
        raw = read_bytes(req)
        # A large list of contact ids is read in the web process's child, as an import is: its
        # parsing and checking held this process's GIL (500,000 ids, 4.5 MB: 0.16 s of Python,
        # a 50-100 ms call of the parser among it) from every other request of the process.
        body = (
            import_processes.run(campaign_draft, raw)
            if len(raw) > HEAVY_BODY
            else campaign_draft(raw)
        )
        campaign = campaigns.create(
            req.context.shop_id,
            body["name"],
            body["text"],
            body.get("contact_ids"),
            body.get("append_unsubscribe", True),
        )
        resp.status = falcon.HTTP_201
        resp.media = campaigns.as_dict(campaign)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = page_limit(req)
        found = campaigns.list_for_shop(
            req.context.shop_id, limit, page_after(req), choice_param(req, "status", STATUSES)
        )
        resp.media = page([campaigns.as_dict(c) for c in found], limit)


def campaign_draft(raw: bytes) -> dict:
    """A campaign's body, checked, its contact ids (if any) as `IdArray`: one string."""
    body = json_document(raw, schemas.CAMPAIGN_CREATE)
    if body.get("contact_ids") is not None:
        body["contact_ids"] = IdArray.of(body["contact_ids"])
    return body


class CampaignResource:
    auth = Access.SHOP
    docs = {
        "GET": Operation("Read a campaign", {200: CAMPAIGN_ANSWER}),
        "PATCH": Operation(
            "Edit a draft or scheduled campaign's name or text",
            {200: CAMPAIGN_ANSWER},
            body=schemas.CAMPAIGN_PATCH,
            errors=(409,),
        ),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        resp.media = campaigns.as_dict(campaigns.get(req.context.shop_id, campaign_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        body = read_json(req, schemas.CAMPAIGN_PATCH)
        resp.media = campaigns.as_dict(campaigns.update(req.context.shop_id, campaign_id, body))


class EnqueueResource:
    auth = Access.SHOP
    docs = {
        "POST": Operation(
            "Launch a draft or scheduled campaign",
            {
                202: Answer(
                    "Sending: credits reserved for the audience counted (`recipients`);"
                    " `creating`: its recipients and batches are still being created in"
                    " chunks (else all were, `batches` of them, and queued)",
                    schemas.ENQUEUED,
                    links=id_links(
                        "campaign_id",
                        "$response.body#/id",
                        ("GET", f"{CAMPAIGN_PATH}/progress"),
                        ("POST", f"{CAMPAIGN_PATH}/pause"),
                        ("POST", f"{CAMPAIGN_PATH}/cancel"),
                    ),
                )
            },
            errors=(402, 409, 422),
            description="402: the shop's available credits do not cover the campaign's upper"
            " bound; 409: not a draft or scheduled; 422: no eligible recipient; 503:"
            " Redis is down (nothing was written).",
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        result = enqueue(req.context.shop_id, campaign_id, self.settings, key_actor(req))
        resp.status = falcon.HTTP_202
        resp.media = {
            "id": result.campaign_id,
            "status": "sending",
            "recipients": result.recipients,
            "reserved_credits": result.reserved_credits,
            "batches": result.batches,
            "creating": result.creating,
        }


class ScheduleResource:
    auth = Access.SHOP
    docs = {
        "POST": Operation(
            "Schedule (or reschedule) a draft or scheduled campaign",
            {200: CAMPAIGN_ANSWER},
            body=schemas.CAMPAIGN_SCHEDULE,
            errors=(409,),
        )
    }

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        body = read_json(req, schemas.CAMPAIGN_SCHEDULE)
        when = schemas.parse_datetime(body["scheduled_at"])
        campaign = campaigns.schedule(
            req.context.shop_id, campaign_id, when, datetime.now(UTC), key_actor(req)
        )
        resp.media = campaigns.as_dict(campaign)


class ActionResource:
    """pause, resume, cancel: bodiless POSTs mapped to one service function each."""

    auth = Access.SHOP

    def __init__(self, action) -> None:
        self.action = action
        # One class, three routes: each instance documents its own action (cancel comes
        # bound to the settings by functools.partial).
        function = getattr(action, "func", action)
        self.docs = {
            "POST": Operation(
                f"{function.__name__.capitalize()} the campaign",
                {200: CAMPAIGN_ANSWER},
                errors=(409,),
                description=function.__doc__,
            )
        }

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        campaign = self.action(req.context.shop_id, campaign_id, actor=key_actor(req))
        resp.media = campaigns.as_dict(campaign)


class ProgressResource:
    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "A campaign's progress: recipients by status, delivery, credits",
            {200: Answer("The progress", schemas.PROGRESS)},
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.clock = clock.for_settings(settings)

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        resp.media = campaigns.progress(req.context.shop_id, campaign_id, self.clock.now())


class RecipientsResource:
    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "List a campaign's recipients",
            {200: Answer("A page of recipients", schemas.page_of(schemas.RECIPIENT))},
            query=(
                LIMIT,
                AFTER,
                Param(
                    "status", {"enum": list(RECIPIENT_STATUSES)}, "only recipients in this status"
                ),
            ),
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        limit = page_limit(req)
        items = campaigns.recipients(
            req.context.shop_id,
            campaign_id,
            limit,
            page_after(req),
            choice_param(req, "status", RECIPIENT_STATUSES),
        )
        resp.media = page(items, limit)


class EventsResource:
    """`GET /campaigns/{id}/events`: the campaign's audit trail (status changes, its
    reservation), oldest first; another shop's campaign is a 404."""

    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "A campaign's audit trail: status changes and reservation events, oldest first",
            {200: Answer("A page of events", schemas.page_of(schemas.AUDIT_EVENT))},
            query=(LIMIT, AFTER),
            description="Each event names its actor: `key` (the API key's id), `clock` (the"
            " job and the leader's epoch), `worker`, `webhook`, `page` or `admin`.",
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        limit = page_limit(req)
        campaigns.get(req.context.shop_id, campaign_id)  # 404 unless it is the shop's
        resp.media = page(audit.campaign_events(campaign_id, limit, page_after(req)), limit)


TEST_SEND_PATH = f"{CAMPAIGN_PATH}/test/{{test_send_id}}"
TEST_SEND_ANSWER = Answer("The test send", schemas.TEST_SEND)


class TestSendsResource:
    """`POST /campaigns/{id}/test`: one message of the campaign's text to one number, sent
    from the priority queue (service/test_sends.py)."""

    __test__ = False  # not a pytest class, whatever its name
    auth = Access.SHOP
    docs = {
        "POST": Operation(
            "Send the campaign's text to one number now (a test send)",
            {
                202: Answer(
                    "Queued on the priority queue, its cost held from the available credits",
                    schemas.TEST_SEND,
                    links={
                        operation_id("GET", TEST_SEND_PATH): Link(
                            "GET",
                            TEST_SEND_PATH,
                            {
                                "campaign_id": "$response.body#/campaign_id",
                                "test_send_id": "$response.body#/id",
                            },
                        )
                    },
                )
            },
            body=schemas.TEST_SEND_CREATE,
            errors=(402, 422),
            description="The first name comes from the number's contact (blank without one)."
            " 422 `phone`: not a valid number, or SPEC 11 forbids messaging it (suppressed,"
            " opted out, or no consent where the shop requires it); 402: the available credits"
            " do not cover its cost. Any status of the campaign; quiet hours do not apply."
            " Charged once, when the provider accepts it. 503: the broker is down (nothing"
            " is held).",
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        body = read_json(req, schemas.TEST_SEND_CREATE)
        campaigns.get(req.context.shop_id, campaign_id)  # 404 unless it is the shop's
        resp.status = falcon.HTTP_202
        resp.media = test_sends.request(
            req.context.shop_id, campaign_id, body["phone"], self.settings, key_actor(req)
        )


class TestSendResource:
    __test__ = False
    auth = Access.SHOP
    docs = {"GET": Operation("Read a test send: its status and text", {200: TEST_SEND_ANSWER})}

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, campaign_id: int, test_send_id: int
    ) -> None:
        resp.media = test_sends.get(req.context.shop_id, campaign_id, test_send_id)
