"""`/contacts`: bulk import (JSON or CSV) and listing; one contact's consent log and erasure."""

from __future__ import annotations

from datetime import UTC, datetime

import falcon

from api import contact_import, import_processes, schemas
from api.access import Access
from api.body import bool_param, int_param, page, page_after, page_limit
from api.docs import AFTER, LIMIT, Answer, Operation, Param
from service import consent, contacts, erasure
from service.audit import Actor
from service.errors import NotFound
from service.infra.config import Settings

# How a CSV import is read: `api/contact_import.py`.
CSV_IMPORT = {
    "type": "string",
    "description": (
        "UTF-8 (with or without BOM) with a header row naming `phone` (or Shopify's `Phone`, else"
        " `Default Address Phone`) and optionally `first_name` (`First Name`), in any case; other"
        " columns are ignored. `?default_country=GR` reads national numbers."
    ),
}


class ContactsResource:
    auth = Access.SHOP
    # An import of 10,000 rows holds a core for a second or so (JSON, row schemas, phone
    # parsing, its writes), and PostgreSQL for a third of one: a shop has at most
    # API_SHOP_HEAVY_CONCURRENCY of them in flight.
    heavy = frozenset({"POST"})
    docs = {
        "POST": Operation(
            "Import contacts (JSON or CSV), up to 10,000 rows",
            {
                200: Answer(
                    "What was imported; each bad row is reported by its index",
                    schemas.CONTACTS_IMPORTED,
                )
            },
            body=schemas.CONTACTS_IMPORT,
            other_bodies={"text/csv": CSV_IMPORT},
            query=(
                Param(
                    "default_country",
                    schemas.COUNTRY,
                    "CSV only (a JSON import takes it in the body): the country of"
                    " national numbers, ISO 3166 alpha-2",
                ),
            ),
            description="Only the body's shape or size refuses an import whole; a row that"
            " does not match the row schema is reported in `invalid` and the"
            " other rows are imported. A number given twice is one contact. A CSV body"
            " may also be labelled `application/csv`, `text/comma-separated-values`,"
            " `text/x-csv` or `application/vnd.ms-excel` (what browsers send for a"
            " `.csv` file on Windows); any other media type is read as JSON.",
        ),
        "GET": Operation(
            "List the shop's contacts",
            {200: Answer("A page of contacts", schemas.page_of(schemas.CONTACT_LISTED))},
            query=(
                LIMIT,
                AFTER,
                Param(
                    "opted_out",
                    {"type": "boolean"},
                    "true: only opted-out contacts; false: only subscribed ones",
                ),
            ),
        ),
    }

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        upload = contact_import.read_upload(req)
        result = import_processes.run(
            contact_import.imported,
            req.context.shop_id,
            upload,
            datetime.now(UTC),
            self.secret,
            Actor.key(req.context.api_key_id),
        )
        resp.media = {
            "created": result.created,
            "updated": result.updated,
            "invalid": result.invalid,
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = page_limit(req)
        opted_out = bool_param(req, "opted_out")
        items = contacts.list_contacts(req.context.shop_id, limit, page_after(req), opted_out)
        resp.media = page(items, limit)


class ContactResource:
    """`DELETE /contacts/{id}`: erase the contact (its number stays suppressed); 204, also
    when it was erased already."""

    auth = Access.SHOP
    docs = {
        "DELETE": Operation(
            "Erase a contact (its number stays suppressed)", {204: Answer("Erased")}
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_delete(self, req: falcon.Request, resp: falcon.Response, contact_id: int) -> None:
        if (
            erasure.erase_contact(
                req.context.shop_id, contact_id, self.secret, Actor.key(req.context.api_key_id)
            )
            is None
        ):
            raise NotFound(f"contact {contact_id} does not exist")
        resp.status = falcon.HTTP_204


class ConsentResource:
    """`GET /contacts/{id}/consent`: the consent in force and the log, `?limit&after`."""

    auth = Access.SHOP
    docs = {
        "GET": Operation(
            "A contact's consent in force and its consent log",
            {200: Answer("Consent", schemas.COMPLIANCE_ANSWER)},
            query=(LIMIT, AFTER),
        )
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, contact_id: int) -> None:
        limit = int_param(req, "limit", 50, 1, 100)
        found = consent.history(
            req.context.shop_id, contact_id, limit, int_param(req, "after", None, 0)
        )
        if found is None:
            raise NotFound(f"contact {contact_id} does not exist")
        resp.media = {**found, "next": page(found["items"], limit)["next"]}
