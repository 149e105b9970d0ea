"""`GET /inbound`: the messages customers sent the shop (SPEC 11), keyword ones included."""

from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import int_param, page
from api.docs import AFTER, LIMIT, Answer, Operation
from service import inbound


class InboundMessagesResource:
    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "The messages customers sent the shop",
            {200: Answer("A page of inbound messages", schemas.COMPLIANCE_ANSWER)},
            query=(LIMIT, AFTER),
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        items = inbound.list_inbound(req.context.shop_id, limit, int_param(req, "after", None, 0))
        resp.media = page(items, limit)
