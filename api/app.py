"""`create_app(settings)`: wires resources, middleware and error mapping."""
from __future__ import annotations

import json
from datetime import date, datetime
from functools import partial

import falcon
import falcon.media
import redis

from api import errors, openapi
from api.middleware import Authentication, DatabaseConnection
from api.resources import admin, campaigns, contacts, credits, health, links, webhooks
from service import campaigns as campaign_service
from service.config import Settings

# Only ids PostgreSQL can hold (bigserial) match: any other number in a path is a 404 like a
# missing id, not a query error.
_ID = "int(min=1, max=9223372036854775807)"
SHOP = "/admin/shops/{shop_id:%s}" % _ID
CAMPAIGN = "/campaigns/{campaign_id:%s}" % _ID


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def create_app(settings: Settings, redis_client: redis.Redis | None = None) -> falcon.App:
    app = falcon.App(middleware=[DatabaseConnection(), Authentication(settings)])
    handler = falcon.media.JSONHandler(dumps=partial(json.dumps, default=_json_default))
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: handler})
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    redis_client = redis_client or redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                                        socket_connect_timeout=2)
    routes = {
        "/health": health.HealthResource(),
        "/readiness": health.ReadinessResource(redis_client),
        "/admin/shops": admin.ShopsResource(),
        f"{SHOP}/credits": admin.ShopCreditsResource(),
        "/credits": credits.CreditsResource(),
        "/credits/transactions": credits.TransactionsResource(),
        "/contacts": contacts.ContactsResource(),
        "/campaigns": campaigns.CampaignsResource(),
        CAMPAIGN: campaigns.CampaignResource(),
        f"{CAMPAIGN}/enqueue": campaigns.EnqueueResource(settings),
        f"{CAMPAIGN}/schedule": campaigns.ScheduleResource(),
        f"{CAMPAIGN}/pause": campaigns.ActionResource(campaign_service.pause),
        f"{CAMPAIGN}/resume": campaigns.ActionResource(campaign_service.resume),
        f"{CAMPAIGN}/cancel": campaigns.ActionResource(campaign_service.cancel),
        f"{CAMPAIGN}/progress": campaigns.ProgressResource(),
        f"{CAMPAIGN}/recipients": campaigns.RecipientsResource(),
        "/webhooks/mitto/dlr": webhooks.DeliveryReportResource(settings),
        "/u/{token}": links.UnsubscribeResource(settings),
        "/r/{code}": links.ShortLinkResource(),
        "/openapi.json": openapi.OpenApiResource(),
    }
    for path, resource in routes.items():
        app.add_route(path, resource)
    return app
