"""`create_app(settings)`: wires resources, middleware and error mapping. Every route is added
through `add_routes`, which refuses a resource that does not declare who may call it."""
from __future__ import annotations

import json
from datetime import date, datetime
from functools import partial

import falcon
import falcon.media
import redis

from api import errors, openapi
from api.access import require_declared
from api.instrumentation import RequestMetrics
from api.middleware import Authentication, CanonicalPath, DatabaseConnection, SecurityHeaders
from api.ops_access import OperatorSessions
from api.resources import (
    admin,
    campaigns,
    contacts,
    credits,
    health,
    links,
    ops,
    webhooks,
)
from api.resources import metrics as metrics_resource
from service import campaigns as campaign_service
from service.infra import metrics
from service.infra.config import Settings
from service.observability.board import credits_debited
from service.observability.health import HealthChecker

# Only ids PostgreSQL can hold (bigserial) match: any other number in a path is a 404 like a
# missing id, not a query error.
_ID = "int(min=1, max=9223372036854775807)"
SHOP = "/admin/shops/{shop_id:%s}" % _ID
CAMPAIGN = "/campaigns/{campaign_id:%s}" % _ID


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def add_routes(app: falcon.App, routes: dict[str, object]) -> None:
    """The one way a route is added: its resource must declare its `Access` (`api/access.py`)."""
    for path, resource in routes.items():
        require_declared(path, resource)
        app.add_route(path, resource)


def create_app(settings: Settings, redis_client: redis.Redis | None = None) -> falcon.App:
    metrics.configure(settings)
    sessions = OperatorSessions(settings.secret_key, settings.admin_token,
                                settings.ops_session_ttl_s,
                                secure=settings.public_base_url.startswith("https://"))
    # CanonicalPath before routing and everything that reads the path (RequestMetrics only
    # starts a timer, so refused requests are still counted, as "unmatched").
    app = falcon.App(middleware=[RequestMetrics(), CanonicalPath(), SecurityHeaders(),
                                 DatabaseConnection(), Authentication(settings, sessions)])
    handler = falcon.media.JSONHandler(dumps=partial(json.dumps, default=_json_default))
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: handler})
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    redis_client = redis_client or redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                                        socket_connect_timeout=2)
    checker = HealthChecker(settings, redis_client)
    routes = {
        "/health": health.HealthResource(),
        "/readiness": health.ReadinessResource(checker),
        "/health/full": health.FullHealthResource(checker),
        "/metrics": metrics_resource.MetricsResource(
            metrics.SystemCollector(checker.full, credits_debited)),
        "/ops": ops.OpsPageResource(),
        "/ops/state": ops.OpsStateResource(checker),
        "/ops/login": ops.OpsLoginResource(settings, sessions),
        "/ops/logout": ops.OpsLogoutResource(sessions),
        "/admin/shops": admin.ShopsResource(),
        f"{SHOP}/credits": admin.ShopCreditsResource(),
        "/admin/links/{code}/disable": admin.ShortLinkDisableResource(),
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
        "/webhooks/mitto/dlr": webhooks.DeliveryReportResource(),
        "/u/{token}": links.UnsubscribeResource(settings),
        "/r/{code}": links.ShortLinkResource(),
        "/openapi.json": openapi.OpenApiResource(app),
    }
    add_routes(app, routes)
    return app
