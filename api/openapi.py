"""The OpenAPI document, built from the same schemas that validate requests."""
from __future__ import annotations

import falcon

from api import schemas
from api.access import Access

BODIES = {
    ("post", "/admin/shops"): schemas.SHOP_CREATE,
    ("post", "/admin/shops/{shop_id}/credits"): schemas.TOP_UP,
    ("post", "/admin/shops/{shop_id}/adjustments"): schemas.ADJUSTMENT,
    ("post", "/contacts"): schemas.CONTACTS_IMPORT,
    ("post", "/campaigns"): schemas.CAMPAIGN_CREATE,
    ("patch", "/campaigns/{campaign_id}"): schemas.CAMPAIGN_PATCH,
    ("post", "/campaigns/{campaign_id}/schedule"): schemas.CAMPAIGN_SCHEDULE,
    ("post", "/webhooks/mitto/dlr"): schemas.DELIVERY_REPORTS,
}
# Bodies that may also come as CSV (the columns are described in `api/contact_import.py`).
CSV_BODIES = {("post", "/contacts"): {"type": "string", "description": (
    "a header row naming phone (or Shopify's Phone / Default Address Phone) and optionally"
    " first_name (First Name); other columns are ignored; ?default_country=GR for national"
    " numbers")}}
BODILESS = [("get", "/credits"), ("get", "/credits/transactions"), ("get", "/contacts"),
            ("get", "/campaigns"), ("get", "/campaigns/{campaign_id}"),
            ("post", "/campaigns/{campaign_id}/enqueue"), ("post", "/campaigns/{campaign_id}/pause"),
            ("post", "/campaigns/{campaign_id}/resume"), ("post", "/campaigns/{campaign_id}/cancel"),
            ("get", "/campaigns/{campaign_id}/progress"),
            ("get", "/campaigns/{campaign_id}/recipients"), ("get", "/u/{token}"),
            ("post", "/u/{token}"), ("get", "/r/{code}"), ("head", "/r/{code}"),
            ("post", "/admin/links/{code}/disable"), ("get", "/health"), ("get", "/readiness")]


def document() -> dict:
    paths: dict[str, dict] = {}
    for (method, path), schema in BODIES.items():
        paths.setdefault(path, {})[method] = {"requestBody": {"required": True, "content": {
            "application/json": {"schema": schema}}}, "responses": {"default": {
                "description": "JSON; errors are {title, description}"}}}
        if (method, path) in CSV_BODIES:
            paths[path][method]["requestBody"]["content"]["text/csv"] = {
                "schema": CSV_BODIES[(method, path)]}
    for method, path in BODILESS:
        paths.setdefault(path, {})[method] = {"responses": {"default": {"description": "JSON"}}}
    return {"openapi": "3.1.0", "info": {"title": "Astronote", "version": "1"},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}], "paths": paths}


class OpenApiResource:
    auth = Access.PUBLIC

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = document()
