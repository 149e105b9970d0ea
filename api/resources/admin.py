"""`/admin/*`: shops and credit top-ups (ADMIN_TOKEN)."""
from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import read_json
from models import Shop
from service import credits, shops
from service.errors import NotFound


class ShopsResource:
    auth = Access.ADMIN

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.SHOP_CREATE)
        shop, key = shops.create_shop(body["domain"], body["name"], body.get("sender"),
                                      body.get("timezone", "UTC"))
        resp.status = falcon.HTTP_201
        resp.media = {"id": shop.id, "domain": shop.domain, "name": shop.name,
                      "sender": shop.sender, "timezone": shop.timezone, "api_key": key}


class ShopCreditsResource:
    auth = Access.ADMIN

    def on_post(self, req: falcon.Request, resp: falcon.Response, shop_id: int) -> None:
        body = read_json(req, schemas.TOP_UP)
        if not Shop.select().where(Shop.id == shop_id).exists():
            raise NotFound(f"shop {shop_id} does not exist")
        balance = credits.top_up(shop_id, body["amount"], body["reference"])
        resp.status = falcon.HTTP_201
        resp.media = {"balance": balance}
