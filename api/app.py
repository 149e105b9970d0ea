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
        "/admin/shops/{shop_id:int}/credits": admin.ShopCreditsResource(),
        "/credits": credits.CreditsResource(),
        "/credits/transactions": credits.TransactionsResource(),
        "/contacts": contacts.ContactsResource(),
        "/campaigns": campaigns.CampaignsResource(),
        "/campaigns/{campaign_id:int}": campaigns.CampaignResource(),
        "/campaigns/{campaign_id:int}/enqueue": campaigns.EnqueueResource(settings),
        "/campaigns/{campaign_id:int}/schedule": campaigns.ScheduleResource(),
        "/campaigns/{campaign_id:int}/pause": campaigns.ActionResource(campaign_service.pause),
        "/campaigns/{campaign_id:int}/resume": campaigns.ActionResource(campaign_service.resume),
        "/campaigns/{campaign_id:int}/cancel": campaigns.ActionResource(campaign_service.cancel),
        "/campaigns/{campaign_id:int}/progress": campaigns.ProgressResource(),
        "/campaigns/{campaign_id:int}/recipients": campaigns.RecipientsResource(),
        "/webhooks/mitto/dlr": webhooks.DeliveryReportResource(settings),
        "/u/{token}": links.UnsubscribeResource(settings),
        "/r/{code}": links.ShortLinkResource(),
        "/openapi.json": openapi.OpenApiResource(),
    }
    for path, resource in routes.items():
        app.add_route(path, resource)
    return app
