"""Shopify's mandatory privacy webhooks (SPEC 11), signed with SHOPIFY_API_SECRET and checked
by `Authentication` (`Access.SHOPIFY`) before anything is read. The shop is found by its
`shop_domain`, the customer by `customer.phone` and by `customer.id` (the contacts imported
with that Shopify customer id: a customer imported by its `Default Address Phone` has no
`phone` in the webhook). Every answer is 200 once the signature is good, also when there is
nothing to erase or export: Shopify retries anything else, and a retry would find nothing
more. Each call changes nothing the second time."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import falcon

from api import schemas
from api.access import Access
from api.body import read_bytes, read_json
from api.docs import Answer, Operation
from models import Shop
from service import audit, contacts, erasure, exports, shops
from service.contacts import normalise_phone
from service.infra.config import Settings

log = logging.getLogger("astronote.api.shopify")


def customer_phone(body: dict[str, Any], region: str | None = None) -> str | None:
    """The customer's number in E.164, or None when Shopify gave none we can read. One written
    without its country ("6981111111", as Shopify's example payloads write a phone) is read in
    `region`, the shop's own country (a probe saw such a redaction erase nothing, and Shopify
    does not post it again after a 200). Never matched against contacts by national number:
    the customer need not be a contact, and another country's contact with the same digits
    would be erased instead."""
    raw = (body.get("customer") or {}).get("phone")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return normalise_phone(raw, region)[0]
    except ValueError:
        return None


def customer_id(body: dict[str, Any]) -> str | None:
    """Shopify's customer id as the import stores it (digits), or None."""
    raw = (body.get("customer") or {}).get("id")
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        return None
    text = str(raw).strip()
    return str(int(text)) if text.isascii() and text.isdigit() and len(text) <= 19 else None


def customer_phones(shop: Shop, body: dict[str, Any]) -> list[str]:
    """Every number of the customer: its own `phone`, then those imported with its id."""
    phone = customer_phone(body, contacts.region_of_timezone(shop.timezone))
    found = customer_id(body)
    by_id = contacts.phones_of_customer(shop.id, found) if found else []
    return ([phone] if phone else []) + [known for known in by_id if known != phone]


class CustomerRedactResource:
    """`POST /webhooks/shopify/customers/redact`: erase the customer's number everywhere."""

    auth = Access.SHOPIFY
    docs = {
        "POST": Operation(
            "Shopify customers/redact: erase a customer",
            {200: Answer("What was done", schemas.COMPLIANCE_ANSWER)},
            body=schemas.SHOPIFY_CUSTOMER_REDACT,
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.SHOPIFY_CUSTOMER_REDACT)
        shop = shops.by_domain(body["shop_domain"])
        phones = customer_phones(shop, body) if shop is not None else []
        if shop is not None:  # no number: its exports by customer id are still deleted
            erased = erasure.erase_customer(
                shop.id, phones, customer_id(body), self.secret, audit.SHOPIFY_WEBHOOK
            )
        if shop is None or not phones:
            log.warning(
                "customers/redact matched nothing",
                extra={"shop_found": shop is not None, "phone_given": bool(phones)},
            )
            resp.media = {"erased": None}
            return
        log.info("customer erased", extra={"shop_id": shop.id, **erased.as_dict()})
        resp.media = {"erased": erased.as_dict()}


class DataRequestResource:
    """`POST /webhooks/shopify/customers/data_request`: write the customer's export, which the
    admin fetches with `GET /admin/exports/{id}`."""

    auth = Access.SHOPIFY
    docs = {
        "POST": Operation(
            "Shopify customers/data_request: export a customer's data",
            {200: Answer("What was done", schemas.COMPLIANCE_ANSWER)},
            body=schemas.SHOPIFY_DATA_REQUEST,
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.SHOPIFY_DATA_REQUEST)
        shop = shops.by_domain(body["shop_domain"])
        if shop is None:
            log.warning("customers/data_request for an unknown shop")
            resp.media = {"export_id": None}
            return
        request_id = (body.get("data_request") or {}).get("id")
        # Without Shopify's request id, the body itself names the request (a retry is equal).
        request_key = (
            f"shopify:{request_id}"
            if request_id is not None
            else "body:" + hashlib.sha256(read_bytes(req)).hexdigest()
        )
        customer = {"id": body["customer"].get("id"), "phone": body["customer"].get("phone")}
        # Every number of the customer, as customers/redact erases them: its own, and those the
        # shop imported with its customer id (its `Default Address Phone`, an older number).
        export_id = exports.export_customer(
            shop.id,
            request_key,
            customer_phones(shop, body),
            customer,
            self.secret,
            customer_id(body),
        )
        log.info("customer data exported", extra={"shop_id": shop.id, "export_id": export_id})
        resp.media = {"export_id": export_id}


class ShopRedactResource:
    """`POST /webhooks/shopify/shop/redact`: erase every customer's data of the shop."""

    auth = Access.SHOPIFY
    docs = {
        "POST": Operation(
            "Shopify shop/redact: erase a shop's personal data",
            {200: Answer("What was done", schemas.COMPLIANCE_ANSWER)},
            body=schemas.SHOPIFY_SHOP_REDACT,
        )
    }

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.SHOPIFY_SHOP_REDACT)
        shop = shops.by_domain(body["shop_domain"])
        if shop is None:
            log.warning("shop/redact for an unknown shop")
            resp.media = {"erased": None}
            return
        erased = erasure.erase_shop(shop.id, self.secret, audit.SHOPIFY_WEBHOOK)
        log.info("shop erased", extra={"shop_id": shop.id, **erased.as_dict()})
        resp.media = {"erased": erased.as_dict()}
