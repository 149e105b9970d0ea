"""`/contacts`: bulk import (JSON or CSV) and listing."""
from __future__ import annotations

import falcon

from api.access import Access
from api.body import bool_param, int_param, page
from api.contact_import import read_import
from service import contacts


class ContactsResource:
    auth = Access.SHOP

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        upload = read_import(req)
        result = contacts.import_contacts(req.context.shop_id, upload.rows,
                                          upload.default_country)
        resp.media = {"created": result.created, "updated": result.updated,
                      "invalid": result.invalid}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        opted_out = bool_param(req, "opted_out")
        items = contacts.list_contacts(req.context.shop_id, limit,
                                       int_param(req, "after", None, 0), opted_out)
        resp.media = page(items, limit)
