"""`/credits`: the shop's balance, reservations and ledger."""

from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import page, page_after, page_limit
from api.docs import AFTER, LIMIT, Answer, Operation
from service import credits


class CreditsResource:
    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "The shop's credits: balance, reserved by sending campaigns, available",
            {200: Answer("The credits", schemas.CREDITS)},
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        summary = credits.summary(req.context.shop_id)
        resp.media = {
            "balance": summary.balance,
            "reserved": summary.reserved,
            "available": summary.available,
        }


class TransactionsResource:
    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "The shop's credit ledger (top-ups, debits, refunds, adjustments)",
            {200: Answer("A page of ledger rows", schemas.page_of(schemas.TRANSACTION))},
            query=(LIMIT, AFTER),
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = page_limit(req)
        items = credits.transactions(req.context.shop_id, limit, page_after(req))
        resp.media = page(items, limit)
