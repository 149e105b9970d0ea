"""`Idempotency-Key` on the shop's POSTs (SPEC 5): the rules are `service/idempotency.py`'s;
this middleware only reads the header and the body, and stores or replays the answer.

It runs after authentication (the key is scoped to the calling shop) and before the resource,
so a replayed answer runs nothing. Admin routes are idempotent by their own means instead
(`reference` for top-ups and adjustments, the unique domain for a new shop): their answers can
carry a clear API key, which must never be stored.
"""

from __future__ import annotations

import falcon

from api.access import Access
from api.body import READ_AS_JSON, media_type, read_bytes
from service import idempotency

REPLAYED_HEADER = "Idempotent-Replayed"


def body_label(req: falcon.Request) -> str:
    """The body's label as the fingerprint counts it: every label the API reads as JSON is
    one (`READ_AS_JSON`; a probe: the same fields in another order under `text/plain` were 422,
    and the same bytes without a Content-Type and as `application/json` too), so a JSON body
    is compared by its content. Any other keeps its parameters: a CSV sent again as
    `charset=utf-8` after `windows-1252` is another import, not a replay of the garbled one."""
    kind = media_type(req)
    if kind in READ_AS_JSON or kind.endswith("+json"):
        return "application/json"
    return ";".join(part.strip() for part in (req.content_type or "").lower().split(";"))


class Idempotency:
    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource, params: dict
    ) -> None:
        key = req.get_header(idempotency.HEADER)
        if key is None or req.method != "POST":
            return
        if getattr(req.context, "access", None) is not Access.SHOP:
            return
        shop_id = req.context.shop_id
        # The query is part of the request: `POST /contacts?default_country=CY` after the same
        # body with `GR` under the same key was replayed as the GR import's answer. So is the
        # media type (the same bytes as CSV or as JSON are different imports).
        target = f"{req.path}?{req.query_string}" if req.query_string else req.path
        body = read_bytes(req)
        # Keys stored before body_label (by the bare media type) stay valid for their 24 h: a
        # retry across the deploy is still a replay, not a 422. Removable after 2026-12-06.
        # Only for a body read as JSON, whose label now never is a bare media type: for any
        # other, the bare type is also how a label without parameters is stored today, so a
        # CSV sent again with a `charset` was the replay of the first (a probe).
        label = body_label(req)
        before = idempotency.fingerprint(req.method, target, body, media_type(req))
        request = idempotency.fingerprint(req.method, target, body, label)
        also = (before,) if label == "application/json" else ()
        stored = idempotency.begin(shop_id, key, request, also=also)
        if stored is None:
            req.context.idempotency = (shop_id, key)
            return
        resp.status = stored.status
        resp.data = stored.body
        if stored.content_type:
            resp.content_type = stored.content_type
        resp.set_header(REPLAYED_HEADER, "true")
        resp.complete = True

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool
    ) -> None:
        claimed = getattr(req.context, "idempotency", None)
        if claimed is None:
            return
        shop_id, key = claimed
        status = resp.status_code
        if status >= 500:
            idempotency.abandon(shop_id, key)  # the client may retry what we failed to do
            return
        idempotency.finish(
            shop_id,
            key,
            idempotency.StoredAnswer(status, resp.render_body() or b"", resp.content_type),
        )
