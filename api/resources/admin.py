"""`/admin/*`: shops, credit top-ups, refunds and adjustments, short links, data exports
(ADMIN_TOKEN)."""

from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import int_param, page, page_after, page_limit, read_json
from api.docs import AFTER, LIMIT, Answer, Operation, Param, id_links
from models import Shop
from service import api_keys, audit, credits, exports, links, shops
from service.errors import NotFound
from service.infra.config import Settings
from service.quiet_hours import QuietHours

SHOP_LINKS = id_links(
    "shop_id",
    "$response.body#/id",
    ("POST", "/admin/shops/{shop_id}/credits"),
    ("POST", "/admin/shops/{shop_id}/keys"),
    ("GET", "/admin/shops/{shop_id}/keys"),
)


def _quiet_hours_given(body: dict, default: QuietHours | None) -> QuietHours | None:
    """The body's quiet hours: absent is the configured default, null is none."""
    if "quiet_hours" not in body:
        return default
    return shops.quiet_hours_from(body["quiet_hours"])


class ShopsResource:
    auth = Access.ADMIN
    docs = {
        "POST": Operation(
            "Create a shop and its first API key",
            {
                201: Answer(
                    "The shop, with its API key (shown once)",
                    schemas.SHOP_CREATED,
                    links=SHOP_LINKS,
                )
            },
            body=schemas.SHOP_CREATE,
            description="A domain that already has a shop is a 422 naming `domain`. Without"
            " `quiet_hours` the shop gets the default (21:00-08:00 unless QUIET_HOURS_DEFAULT"
            " says otherwise); null is none. `frequency_cap` is off unless given.",
        )
    }

    def __init__(self, settings: Settings) -> None:
        default = settings.quiet_hours_default
        self.default_quiet_hours = QuietHours(*default) if default else None

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.SHOP_CREATE)
        shop, key = shops.create_shop(
            body["domain"],
            body["name"],
            body.get("sender"),
            body.get("timezone", "UTC"),
            body.get("help_text"),
            body.get("require_consent", True),
            _quiet_hours_given(body, self.default_quiet_hours),
            body.get("frequency_cap"),
            audit.ADMIN,
        )
        resp.status = falcon.HTTP_201
        resp.media = {
            "id": shop.id,
            "domain": shop.domain,
            "name": shop.name,
            "sender": shop.sender,
            "timezone": shop.timezone,
            "help_text": shops.help_text(shop),
            "require_consent": shop.require_consent,
            **shops.compliance_settings(shop),
            "api_key": key,
        }


class ShopResource:
    """`PATCH /admin/shops/{id}`: the shop's timezone, quiet hours and frequency cap."""

    auth = Access.ADMIN
    docs = {
        "PATCH": Operation(
            "Change a shop's timezone, quiet hours or frequency cap",
            {200: Answer("The shop's settings after the change", schemas.SHOP_SETTINGS)},
            body=schemas.SHOP_UPDATE,
            description="Only the fields given change; `quiet_hours` or `frequency_cap` null"
            " turns it off. Batches already queued apply it at their next delivery.",
        )
    }

    def on_patch(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        body = read_json(req, schemas.SHOP_UPDATE)
        changes = {name: body[name] for name in ("timezone", "frequency_cap") if name in body}
        if "quiet_hours" in body:
            changes["quiet_hours"] = shops.quiet_hours_from(body["quiet_hours"])
        shop = shops.update_settings(shop_id, **changes)
        resp.media = {
            "id": shop.id,
            "domain": shop.domain,
            "timezone": shop.timezone,
            **shops.compliance_settings(shop),
        }


class ShopCreditsResource:
    auth = Access.ADMIN
    docs = {
        "POST": Operation(
            "Top up a shop's credits",
            {201: Answer("The balance after the top-up", schemas.BALANCE)},
            body=schemas.TOP_UP,
            description="The same `reference` for the same shop again adds nothing (the"
            " same amount: the balance is answered again); with another amount it is 422.",
        )
    }

    def on_post(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        body = read_json(req, schemas.TOP_UP)
        if not Shop.select().where(Shop.id == shop_id).exists():
            raise NotFound(f"shop {shop_id} does not exist")
        balance = credits.top_up(shop_id, body["amount"], body["reference"], audit.ADMIN)
        resp.status = falcon.HTTP_201
        resp.media = {"balance": balance}


class ShopAdjustmentsResource:
    """`POST /admin/shops/{id}/adjustments`: a refund (amount > 0) or an adjustment (amount < 0)
    in the ledger, once per reference; 402 when a negative one exceeds the available credits."""

    auth = Access.ADMIN
    docs = {
        "POST": Operation(
            "Refund (amount > 0) or adjust (amount < 0) a shop's credits",
            {201: Answer("The shop's credits after it", schemas.CREDITS)},
            body=schemas.ADJUSTMENT,
            errors=(402,),
            description="The same `reference` for the same shop again adds nothing (with"
            " another amount it is 422); a negative adjustment may take only available"
            " credits (402).",
        )
    }

    def on_post(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        body = read_json(req, schemas.ADJUSTMENT)
        after = credits.adjust(
            shop_id, body["amount"], body["reason"], body["reference"], audit.ADMIN
        )
        resp.status = falcon.HTTP_201
        resp.media = {
            "balance": after.balance,
            "reserved": after.reserved,
            "available": after.available,
        }


class ShortLinkDisableResource:
    """`POST /admin/links/{code}/disable`: the link answers 410 from now on (idempotent)."""

    auth = Access.ADMIN
    docs = {
        "POST": Operation(
            "Disable a short link: it answers 410 from now on (idempotent)",
            {200: Answer("The link", schemas.SHORT_LINK_DISABLED)},
        )
    }

    def on_post(self, req: falcon.Request, resp: falcon.Response, code: str) -> None:
        link = links.disable(code) if schemas.SHORT_CODE.fullmatch(code) else None
        if link is None:
            raise NotFound(f"no short link has the code {code!r}")
        resp.media = {
            "code": link.code,
            "url": link.url,
            "clicks": link.clicks,
            "disabled_at": link.disabled_at,
        }


def _require_shop(shop_id: int) -> None:
    if not Shop.select().where(Shop.id == shop_id).exists():
        raise NotFound(f"shop {shop_id} does not exist")


class ShopKeysResource:
    """`POST /admin/shops/{id}/keys` issues a key (shown once); `GET` lists them (prefix,
    created, last used, revoked), never anything that could authenticate."""

    auth = Access.ADMIN
    docs = {
        "POST": Operation(
            "Issue an API key for a shop",
            {201: Answer("The key (shown once)", schemas.KEY_ISSUED)},
            body_required=False,
        ),
        "GET": Operation(
            "A shop's API keys (no secret)", {200: Answer("The keys, newest first", schemas.KEYS)}
        ),
    }

    def on_post(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        _require_shop(shop_id)
        record, key = api_keys.issue_key(shop_id, audit.ADMIN)
        resp.status = falcon.HTTP_201
        resp.media = {"id": record.id, "prefix": record.prefix, "api_key": key}

    def on_get(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        _require_shop(shop_id)
        resp.media = {"items": api_keys.list_keys(shop_id)}


class ShopKeyResource:
    """`DELETE /admin/shops/{id}/keys/{key_id}`: the key stops working at once, in every web
    process (every admitted request looks its key up in PostgreSQL; Redis only maps a key to its
    shop for the API limits, which cannot authenticate anything)."""

    auth = Access.ADMIN
    docs = {
        "DELETE": Operation(
            "Revoke a shop's API key (at once, in every web process)",
            {200: Answer("When it was revoked", schemas.KEY_REVOKED)},
        )
    }

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, shop_id: int, key_id: int
    ) -> None:
        revoked_at = api_keys.revoke_key(shop_id, key_id, audit.ADMIN)
        resp.media = {"id": key_id, "revoked_at": revoked_at}


class ExportResource:
    """`GET /admin/exports/{id}`: a customer's data export (Shopify's customers/data_request),
    to hand over to the shop."""

    auth = Access.ADMIN
    docs = {
        "GET": Operation(
            "A customer's data export", {200: Answer("The export", schemas.COMPLIANCE_ANSWER)}
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, export_id: int) -> None:
        export = exports.get_export(export_id)
        if export is None:
            raise NotFound(f"export {export_id} does not exist")
        resp.media = export


class AuditResource:
    """`GET /admin/audit?shop_id=`: the audit trail of one shop (or of every shop), oldest
    first, for the operator."""

    auth = Access.ADMIN
    docs = {
        "GET": Operation(
            "The audit trail: campaign status changes, credit movements, API keys and"
            " suppressions, with their actors, oldest first",
            {200: Answer("A page of events", schemas.page_of(schemas.AUDIT_EVENT))},
            query=(
                LIMIT,
                AFTER,
                Param("shop_id", schemas.PAGE_AFTER, "only this shop's events"),
            ),
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = page_limit(req)
        shop_id = int_param(req, "shop_id", None, 0)
        resp.media = page(audit.shop_events(shop_id, limit, page_after(req)), limit)
