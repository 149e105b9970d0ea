"""`create_app(settings)`: wires resources, middleware and error mapping. Every route is added
through `add_routes`, which refuses a resource that does not declare who may call it."""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import partial
from typing import Any

import falcon
import falcon.media
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api import errors, import_processes, openapi
from api.access import require_declared
from api.idempotency import Idempotency
from api.instrumentation import RequestMetrics
from api.middleware import (
    Authentication,
    CanonicalPath,
    DatabaseConnection,
    DeclaredInput,
    SecurityHeaders,
)
from api.ops_access import LoginThrottle, OperatorSessions
from api.paths import IdConverter
from api.report_ingest import ReportIngest, ReportRoute
from api.resources import (
    admin,
    campaigns,
    contacts,
    credits,
    health,
    inbound,
    links,
    ops,
    shopify,
    webhooks,
)
from api.resources import metrics as metrics_resource
from service import campaigns as campaign_service
from service.infra import metrics
from service.infra.api_rate_limit import ShopLimits
from service.infra.config import Settings
from service.infra.ratelimit import SendLimiter
from service.observability.board import credits_debited
from service.observability.health import HealthChecker
from service.provider import MittoClient, Provider

# Only ids PostgreSQL can hold (bigserial), in their one spelling, match: any other number in
# a path is a 404 like a missing id, not a query error (`api/paths.IdConverter`).
_ID = "id"
SHOP = f"/admin/shops/{{shop_id:{_ID}}}"
CAMPAIGN = f"/campaigns/{{campaign_id:{_ID}}}"
CONTACT = f"/contacts/{{contact_id:{_ID}}}"


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _limiter_client(settings: Settings) -> redis.Redis:
    """A client that fails at once: the API limit lets requests through when Redis is down,
    and must not make each of them wait for redis-py's retries and timeouts."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


def add_routes(app: falcon.App, routes: dict[str, object]) -> None:
    """The one way a route is added: its resource must declare its `Access` (`api/access.py`)."""
    for path, resource in routes.items():
        require_declared(path, resource)
        app.add_route(path, resource)


def reply_provider(settings: Settings) -> MittoClient:
    """The provider the web process answers STOP, START and HELP through: a few calls at a
    time at most, one per inbound keyword message."""
    return MittoClient(
        settings.mitto_api_base,
        settings.mitto_api_key,
        settings.provider_connect_timeout_ms / 1000,
        settings.provider_read_timeout_ms / 1000,
        pool_size=4,
    )


def create_wsgi(
    settings: Settings, redis_client: redis.Redis | None = None, provider: Provider | None = None
) -> ReportRoute:
    """What gunicorn serves: the delivery-report webhook's own path (`api/report_ingest.py`)
    in front of the Falcon app, both sharing one `ReportIngest`."""
    ingest = ReportIngest(settings, _limiter_client(settings))
    return ReportRoute(create_app(settings, redis_client, provider, ingest), ingest, settings)


def create_app(
    settings: Settings,
    redis_client: redis.Redis | None = None,
    provider: Provider | None = None,
    ingest: ReportIngest | None = None,
) -> falcon.App:
    metrics.configure(settings)
    import_processes.configure(settings.import_processes, settings)
    sessions = OperatorSessions(
        settings.secret_key,
        settings.admin_token,
        settings.ops_session_ttl_s,
        secure=settings.public_base_url.startswith("https://"),
    )
    # CanonicalPath before routing and everything that reads the path (RequestMetrics only
    # starts a timer, so refused requests are still counted, as "unmatched").
    redis_client = redis_client or redis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2
    )
    limiter_client = _limiter_client(settings)
    limits = (
        ShopLimits(
            limiter_client,
            settings.api_rate_limit,
            settings.api_shop_concurrency,
            heavy_cap=settings.api_shop_heavy_concurrency,
        )
        if settings.api_rate_limit
        or settings.api_shop_concurrency
        or settings.api_shop_heavy_concurrency
        else None
    )
    # Idempotency after Authentication: a key is scoped to the shop the request authenticated.
    middleware: list[Any] = [
        RequestMetrics(),
        CanonicalPath(),
        SecurityHeaders(),
        DatabaseConnection(),
        Authentication(settings, sessions, limits),
        # Before Idempotency: a request refused for what it sends claims no key.
        DeclaredInput(),
        Idempotency(),
    ]
    app = falcon.App(middleware=middleware)
    app.router_options.converters["id"] = IdConverter
    handler = falcon.media.JSONHandler(dumps=partial(json.dumps, default=_json_default))
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: handler})
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    checker = HealthChecker(settings, redis_client)
    routes = {
        "/health": health.HealthResource(),
        "/readiness": health.ReadinessResource(checker),
        "/health/full": health.FullHealthResource(checker),
        "/metrics": metrics_resource.MetricsResource(
            metrics.SystemCollector(checker.full, credits_debited)
        ),
        "/ops": ops.OpsPageResource(),
        "/ops/state": ops.OpsStateResource(checker),
        "/ops/login": ops.OpsLoginResource(settings, sessions, LoginThrottle(limiter_client)),
        "/ops/logout": ops.OpsLogoutResource(sessions),
        "/admin/shops": admin.ShopsResource(settings),
        SHOP: admin.ShopResource(),
        f"{SHOP}/credits": admin.ShopCreditsResource(),
        f"{SHOP}/keys": admin.ShopKeysResource(),
        f"{SHOP}/keys/{{key_id:{_ID}}}": admin.ShopKeyResource(),
        f"{SHOP}/adjustments": admin.ShopAdjustmentsResource(),
        "/admin/links/{code}/disable": admin.ShortLinkDisableResource(),
        "/credits": credits.CreditsResource(),
        "/credits/transactions": credits.TransactionsResource(),
        "/contacts": contacts.ContactsResource(settings),
        CONTACT: contacts.ContactResource(settings),
        f"{CONTACT}/consent": contacts.ConsentResource(),
        "/inbound": inbound.InboundMessagesResource(),
        f"/admin/exports/{{export_id:{_ID}}}": admin.ExportResource(),
        "/campaigns": campaigns.CampaignsResource(),
        CAMPAIGN: campaigns.CampaignResource(),
        f"{CAMPAIGN}/enqueue": campaigns.EnqueueResource(settings),
        f"{CAMPAIGN}/schedule": campaigns.ScheduleResource(),
        f"{CAMPAIGN}/pause": campaigns.ActionResource(campaign_service.pause),
        f"{CAMPAIGN}/resume": campaigns.ActionResource(
            partial(campaign_service.resume, settings=settings)
        ),
        f"{CAMPAIGN}/cancel": campaigns.ActionResource(
            partial(campaign_service.cancel, settings=settings)
        ),
        f"{CAMPAIGN}/progress": campaigns.ProgressResource(settings),
        f"{CAMPAIGN}/recipients": campaigns.RecipientsResource(),
        f"{CAMPAIGN}/events": campaigns.EventsResource(),
        f"{CAMPAIGN}/test": campaigns.TestSendsResource(settings),
        f"{CAMPAIGN}/test/{{test_send_id:{_ID}}}": campaigns.TestSendResource(),
        "/admin/audit": admin.AuditResource(),
        "/webhooks/mitto/dlr": webhooks.DeliveryReportResource(
            ingest or ReportIngest(settings, limiter_client)
        ),
        "/webhooks/mitto/inbound": webhooks.InboundResource(
            settings,
            provider or reply_provider(settings),
            # The answers count against the provider account's limits like every message.
            SendLimiter.for_settings(settings, limiter_client),
        ),
        "/webhooks/shopify/customers/redact": shopify.CustomerRedactResource(settings),
        "/webhooks/shopify/customers/data_request": shopify.DataRequestResource(settings),
        "/webhooks/shopify/shop/redact": shopify.ShopRedactResource(settings),
        "/u/{token}": links.UnsubscribeResource(settings),
        "/r/{code}": links.ShortLinkResource(),
        "/openapi.json": openapi.OpenApiResource(app),
    }
    add_routes(app, routes)
    return app
