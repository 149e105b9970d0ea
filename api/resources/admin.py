"""`/admin/*`: shops, credit top-ups and short links (ADMIN_TOKEN)."""
from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import read_json
from api.docs import Answer, Operation, id_links
from models import Shop
from service import credits, links, shops
from service.errors import NotFound

SHOP_LINKS = id_links("shop_id", "$response.body#/id",
                      ("POST", "/admin/shops/{shop_id}/credits"),
                      ("POST", "/admin/shops/{shop_id}/keys"),
                      ("GET", "/admin/shops/{shop_id}/keys"))


class ShopsResource:
    auth = Access.ADMIN
    docs = {"POST": Operation(
        "Create a shop and its first API key",
        {201: Answer("The shop, with its API key (shown once)", schemas.SHOP_CREATED,
                     links=SHOP_LINKS)},
        body=schemas.SHOP_CREATE,
        description="A domain that already has a shop is a 422 naming `domain`.")}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.SHOP_CREATE)
        shop, key = shops.create_shop(body["domain"], body["name"], body.get("sender"),
                                      body.get("timezone", "UTC"))
        resp.status = falcon.HTTP_201
        resp.media = {"id": shop.id, "domain": shop.domain, "name": shop.name,
                      "sender": shop.sender, "timezone": shop.timezone, "api_key": key}


class ShopCreditsResource:
    auth = Access.ADMIN
    docs = {"POST": Operation(
        "Top up a shop's credits",
        {201: Answer("The balance after the top-up", schemas.BALANCE)},
        body=schemas.TOP_UP,
        description="The same `reference` for the same shop again adds nothing.")}

    def on_post(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        body = read_json(req, schemas.TOP_UP)
        if not Shop.select().where(Shop.id == shop_id).exists():
            raise NotFound(f"shop {shop_id} does not exist")
        balance = credits.top_up(shop_id, body["amount"], body["reference"])
        resp.status = falcon.HTTP_201
        resp.media = {"balance": balance}


class ShortLinkDisableResource:
    """`POST /admin/links/{code}/disable`: the link answers 410 from now on (idempotent)."""

    auth = Access.ADMIN
    docs = {"POST": Operation(
        "Disable a short link: it answers 410 from now on (idempotent)",
        {200: Answer("The link", schemas.SHORT_LINK_DISABLED)})}

    def on_post(self, req: falcon.Request, resp: falcon.Response, code: str) -> None:
        link = links.disable(code) if schemas.SHORT_CODE.fullmatch(code) else None
        if link is None:
            raise NotFound(f"no short link has the code {code!r}")
        resp.media = {"code": link.code, "url": link.url, "clicks": link.clicks,
                      "disabled_at": link.disabled_at}
