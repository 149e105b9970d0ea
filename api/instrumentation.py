"""Falcon middleware that times each request into `astronote_http_request_seconds`, labelled by
route template (`/campaigns/{campaign_id}`), never by the concrete path (ids are unbounded)."""

from __future__ import annotations

import re
import time

import falcon

from service.infra import metrics

# Any token is a valid method on the wire: unknown ones share one label value.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# `{campaign_id:int(min=1, ...)}` -> `{campaign_id}`: the label names the route, briefly.
_CONVERTER = re.compile(r"\{(\w+):[^}]*\}")


class RequestMetrics:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.began = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool
    ) -> None:
        began = getattr(req.context, "began", None)
        if began is None:
            return
        route = _CONVERTER.sub(r"{\1}", req.uri_template) if req.uri_template else "unmatched"
        status = f"{resp.status_code // 100}xx"
        method = req.method if req.method in METHODS else "other"
        metrics.observe_http(method, route, status, time.perf_counter() - began)
