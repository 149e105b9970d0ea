"""`/contacts`: bulk import (JSON or CSV) and listing; one contact's consent log and erasure."""
from __future__ import annotations

import falcon

from api.access import Access
from api.body import bool_param, int_param, page
from api.contact_import import read_import
from service import consent, contacts, erasure
from service.errors import NotFound
from service.infra.config import Settings


class ContactsResource:
    auth = Access.SHOP

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        upload = read_import(req)
        result = contacts.import_contacts(req.context.shop_id, upload.rows,
                                          upload.default_country, self.secret)
        resp.media = {"created": result.created, "updated": result.updated,
                      "invalid": result.invalid}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        opted_out = bool_param(req, "opted_out")
        items = contacts.list_contacts(req.context.shop_id, limit,
                                       int_param(req, "after", None, 0), opted_out)
        resp.media = page(items, limit)


class ContactResource:
    """`DELETE /contacts/{id}`: erase the contact (its number stays suppressed); 204, also
    when it was erased already."""

    auth = Access.SHOP

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_delete(self, req: falcon.Request, resp: falcon.Response, contact_id: int) -> None:
        if erasure.erase_contact(req.context.shop_id, contact_id, self.secret) is None:
            raise NotFound(f"contact {contact_id} does not exist")
        resp.status = falcon.HTTP_204


class ConsentResource:
    """`GET /contacts/{id}/consent`: the consent in force and the log, `?limit&after`."""

    auth = Access.SHOP

    def on_get(self, req: falcon.Request, resp: falcon.Response, contact_id: int) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        found = consent.history(req.context.shop_id, contact_id, limit,
                                int_param(req, "after", None, 0))
        if found is None:
            raise NotFound(f"contact {contact_id} does not exist")
        resp.media = {**found, "next": page(found["items"], limit)["next"]}
