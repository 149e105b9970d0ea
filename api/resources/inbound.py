"""`GET /inbound`: the messages customers sent the shop (SPEC 11), keyword ones included."""
from __future__ import annotations

import falcon

from api.access import Access
from api.body import int_param, page
from service import inbound


class InboundMessagesResource:
    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        items = inbound.list_inbound(req.context.shop_id, limit,
                                     int_param(req, "after", None, 0))
        resp.media = page(items, limit)
