"""`/campaigns`: create, read, edit, and the merchant's actions on a campaign."""
from __future__ import annotations

from datetime import datetime, timezone

import falcon

from api import schemas
from api.access import Access
from api.body import choice_param, int_param, page, read_json
from service import campaigns
from service.enqueue import enqueue
from service.infra.config import Settings

STATUSES = ("draft", "scheduled", "sending", "paused", "completed", "failed", "cancelled")
RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "skipped")


class CampaignsResource:
    auth = Access.SHOP

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.CAMPAIGN_CREATE)
        campaign = campaigns.create(req.context.shop_id, body["name"], body["text"],
                                    body.get("contact_ids"), body.get("append_unsubscribe", True))
        resp.status = falcon.HTTP_201
        resp.media = campaigns.as_dict(campaign)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        found = campaigns.list_for_shop(req.context.shop_id, limit,
                                        int_param(req, "after", None, 0),
                                        choice_param(req, "status", STATUSES))
        resp.media = page([campaigns.as_dict(c) for c in found], limit)


class CampaignResource:
    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        resp.media = campaigns.as_dict(campaigns.get(req.context.shop_id, campaign_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        body = read_json(req, schemas.CAMPAIGN_PATCH)
        resp.media = campaigns.as_dict(campaigns.update(req.context.shop_id, campaign_id, body))


class EnqueueResource:
    auth = Access.SHOP

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        result = enqueue(req.context.shop_id, campaign_id, self.settings)
        resp.status = falcon.HTTP_202
        resp.media = {"id": result.campaign_id, "status": "sending",
                      "recipients": result.recipients,
                      "reserved_credits": result.reserved_credits, "batches": result.batches}


class ScheduleResource:
    auth = Access.SHOP

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        body = read_json(req, schemas.CAMPAIGN_SCHEDULE)
        when = schemas.parse_datetime(body["scheduled_at"])
        campaign = campaigns.schedule(req.context.shop_id, campaign_id, when,
                                      datetime.now(timezone.utc))
        resp.media = campaigns.as_dict(campaign)


class ActionResource:
    """pause, resume, cancel: bodiless POSTs mapped to one service function each."""

    auth = Access.SHOP

    def __init__(self, action) -> None:
        self.action = action

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        resp.media = campaigns.as_dict(self.action(req.context.shop_id, campaign_id))


class ProgressResource:
    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        resp.media = campaigns.progress(req.context.shop_id, campaign_id)


class RecipientsResource:
    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: int) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        items = campaigns.recipients(req.context.shop_id, campaign_id, limit,
                                     int_param(req, "after", None, 0),
                                     choice_param(req, "status", RECIPIENT_STATUSES))
        resp.media = page(items, limit)
