"""`/credits`: the shop's balance, reservations and ledger."""
from __future__ import annotations

import falcon

from api.access import Access
from api.body import int_param, page
from service import credits


class CreditsResource:
    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        summary = credits.summary(req.context.shop_id)
        resp.media = {"balance": summary.balance, "reserved": summary.reserved,
                      "available": summary.available}


class TransactionsResource:
    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        items = credits.transactions(req.context.shop_id, limit, int_param(req, "after", None, 0))
        resp.media = page(items, limit)
