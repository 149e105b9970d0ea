"""`/contacts`: bulk import and listing."""
from __future__ import annotations

import falcon

from api import schemas
from api.access import Access
from api.body import bool_param, int_param, page, read_json
from service import contacts


class ContactsResource:
    auth = Access.SHOP

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.CONTACTS_IMPORT)
        result = contacts.import_contacts(req.context.shop_id, body["contacts"],
                                          body.get("default_country"))
        resp.media = {"created": result.created, "updated": result.updated,
                      "invalid": result.invalid}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        opted_out = bool_param(req, "opted_out")
        items = contacts.list_contacts(req.context.shop_id, limit,
                                       int_param(req, "after", None, 0), opted_out)
        resp.media = page(items, limit)
