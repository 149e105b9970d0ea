"""Erasure and export (SPEC 11): `DELETE /contacts/{id}` and Shopify's customers/redact erase a
customer's number, name and message texts from every table, keep the number suppressed (as a
digest) and leave the ledger as it was; customers/data_request writes an export the admin
fetches; shop/redact erases a whole shop. Shopify's calls are checked by their signature."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json

import pytest

from api import schemas
from api.access import Access
from api.app import create_app
from service import contacts
from service.creation import batch_key
from service.sending import Accepted, claim_recipients, persist_results, unclaim
from tests.api.conftest import (
    ADMIN,
    CONSENT,
    CheckedClient,
    assert_error,
    auth,
    top_up,
)
from tests.api.test_access import routed_resources
from tests.conftest import DLR_WEBHOOK_SECRET, SHOPIFY_API_SECRET
from tests.scan import places_holding

DOMAIN = "erasure.myshopify.com"
PHONE, OTHER = "+306912345678", "+306912345679"
DIGITS = PHONE.lstrip("+")


def signed(body: dict, secret: str = SHOPIFY_API_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest())
    return raw, {"X-Shopify-Hmac-Sha256": signature.decode(), "Content-Type": "application/json"}


def shopify(client, topic: str, body: dict, secret: str = SHOPIFY_API_SECRET):
    raw, headers = signed(body, secret)
    return client.simulate_post(f"/webhooks/shopify/{topic}", body=raw, headers=headers)


def redact_body(phone: str | None = PHONE, domain: str = DOMAIN) -> dict:
    return {
        "shop_id": 954889,
        "shop_domain": domain,
        "orders_to_redact": [299938],
        "customer": {"id": 191167, "email": "ann@example.com", "phone": phone},
    }


def ledger(db, shop_id: int) -> tuple:
    return db.execute_sql(
        "SELECT s.credit_balance, (SELECT count(*) FROM credit_transaction t"
        " WHERE t.shop_id = s.id), (SELECT sum(amount) FROM credit_transaction"
        " t WHERE t.shop_id = s.id) FROM shop s WHERE s.id = %s",
        (shop_id,),
    ).fetchone()


def sent_campaign(client, db, key: str) -> int:
    """A campaign sent to the shop's contacts (claimed and persisted as a worker would, with
    a delivery report naming each number); returns its id."""
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Hi {first_name}, sale today"}
    ).json
    enqueued = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert enqueued.status_code == 202, enqueued.text
    shop_id = campaign_shop(db, campaign["id"])
    ids = [
        rid
        for (rid,) in db.execute_sql(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s ORDER BY id",
            (campaign["id"],),
        )
    ]
    claimed = claim_recipients(campaign["id"], ids, batch_key(campaign["id"], ids))
    persist_results(
        shop_id,
        campaign["id"],
        [
            Accepted(r.id, f"m-{r.id}", f"Hi {r.first_name}, sale today", 1, r.country)
            for r in claimed
        ],
        [],
    )
    reports = [
        {
            "id": f"m-{r.id}",
            "to": r.phone.lstrip("+"),
            "reference": str(r.id),
            "deliveryStatus": "Delivered",
        }
        for r in claimed
    ]
    assert (
        client.simulate_post(
            f"/webhooks/mitto/dlr?token={DLR_WEBHOOK_SECRET}", json=reports
        ).status_code
        == 200
    )
    return campaign["id"]


def campaign_shop(db, campaign_id: int) -> int:
    return db.execute_sql("SELECT shop_id FROM campaign WHERE id = %s", (campaign_id,)).fetchone()[
        0
    ]


@pytest.fixture
def shop(client, db) -> tuple[int, str]:
    """A shop with two contacts that were sent a campaign, and a reply from one of them."""
    created = client.simulate_post(
        "/admin/shops",
        headers=ADMIN,
        json={"domain": DOMAIN, "name": "Erasure", "sender": "306999000001"},
    )
    shop_id, key = created.json["id"], created.json["api_key"]
    top_up(client, shop_id, 100, "initial")
    client.simulate_post(
        "/contacts",
        headers=auth(key),
        json={
            "contacts": [
                {"phone": PHONE, "first_name": "Annabel", "consent": {**CONSENT, "proof": PHONE}},
                {"phone": OTHER, "first_name": "Bob", "consent": CONSENT},
            ]
        },
    )
    sent_campaign(client, db, key)
    answer = client.simulate_post(
        f"/webhooks/mitto/inbound?token={DLR_WEBHOOK_SECRET}",
        json={"from": DIGITS, "to": "306999000001", "text": "Thanks Annabel here", "id": "in-1"},
    )
    assert answer.status_code == 200
    return shop_id, key


def contact_of(db, phone: str) -> int:
    return db.execute_sql("SELECT id FROM contact WHERE phone = %s", (phone,)).fetchone()[0]


def assert_erased(db, shop_id: int) -> None:
    """The number and the name are nowhere; the number is suppressed as a digest."""
    assert places_holding(db, DIGITS) == []
    assert places_holding(db, "Annabel") == []
    assert db.execute_sql(
        "SELECT phone, source FROM suppression WHERE shop_id = %s AND phone_hash IS NOT NULL",
        (shop_id,),
    ).fetchall() == [(None, "erasure")]


# --- DELETE /contacts/{id} -------------------------------------------------------------------


def test_deleting_a_contact_erases_it_everywhere_and_keeps_it_suppressed(client, db, shop):
    shop_id, key = shop
    before = ledger(db, shop_id)
    assert {table for table, _, _ in places_holding(db, DIGITS)} >= {
        "contact",
        "campaign_recipient",
        "delivery_report",
        "inbound_message",
        "consent_event",
    }
    contact = contact_of(db, PHONE)
    # When the merchant deletes the contact, twice
    first = client.simulate_delete(f"/contacts/{contact}", headers=auth(key))
    second = client.simulate_delete(f"/contacts/{contact}", headers=auth(key))
    # Then both are 204, and the number and name are gone from every table
    assert (first.status_code, second.status_code) == (204, 204)
    assert_erased(db, shop_id)
    # And the ledger, the other contact and the campaign's counts are as they were
    assert ledger(db, shop_id) == before
    assert places_holding(db, OTHER.lstrip("+")) != []
    assert db.execute_sql(
        "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM campaign_recipient"
    ).fetchone() == (2, 2)
    # And the contact is gone from the list; its consent log ends with the erasure
    listed = client.simulate_get("/contacts", headers=auth(key)).json["items"]
    assert [item["phone"] for item in listed] == [OTHER]
    log = client.simulate_get(f"/contacts/{contact}/consent", headers=auth(key)).json
    assert [(e["kind"], e["source"], e["proof"]) for e in log["items"]] == [
        ("opt_in", "import", None),
        ("opt_out", "erasure", None),
    ]
    assert log["erased_at"] is not None
    # And the campaign's recipients still answer as documented, the erased one without number
    (campaign,) = db.execute_sql("SELECT DISTINCT campaign_id FROM campaign_recipient").fetchone()
    recipients = client.simulate_get(f"/campaigns/{campaign}/recipients", headers=auth(key)).json
    schemas.validate(recipients, schemas.page_of(schemas.RECIPIENT))
    erased = [r for r in recipients["items"] if r["contact_id"] == contact]
    assert [(r["phone"], r["first_name"]) for r in erased] == [(None, None)]


def test_an_erased_number_imported_again_is_still_never_messaged(client, db, shop):
    shop_id, key = shop
    client.simulate_delete(f"/contacts/{contact_of(db, PHONE)}", headers=auth(key))
    # When the merchant imports the number again, with consent
    again = client.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": PHONE, "consent": CONSENT}]}
    ).json
    # Then it is a new contact, opted out and suppressed as before
    assert again["created"] == 1
    assert db.execute_sql(
        "SELECT opted_out_at IS NOT NULL FROM contact WHERE phone = %s", (PHONE,)
    ).fetchone() == (True,)
    assert db.execute_sql(
        "SELECT source FROM suppression WHERE phone = %s", (PHONE,)
    ).fetchall() == [("erasure",)]
    # And a new campaign leaves it out
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Again"}
    ).json
    enqueued = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert enqueued.json["recipients"] == 1
    assert db.execute_sql(
        "SELECT phone FROM campaign_recipient WHERE campaign_id = %s", (campaign["id"],)
    ).fetchall() == [(OTHER,)]


def test_erasing_a_number_skips_its_pending_recipient_in_a_campaign_already_sending(
    client, db, shop
):
    shop_id, key = shop
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Second"}
    ).json
    client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    # When the number is erased before its batch is claimed
    client.simulate_delete(f"/contacts/{contact_of(db, PHONE)}", headers=auth(key))
    ids = [
        rid
        for (rid,) in db.execute_sql(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s", (campaign["id"],)
        )
    ]
    claimed = claim_recipients(campaign["id"], ids, batch_key(campaign["id"], ids))
    # Then the claim has only the other number; the erased one is skipped, with no number
    assert [r.phone for r in claimed] == [OTHER]
    assert db.execute_sql(
        "SELECT phone, status, error FROM campaign_recipient WHERE"
        " campaign_id = %s AND status = 'skipped'",
        (campaign["id"],),
    ).fetchall() == [(None, "skipped", "erased")]


def test_a_claim_given_back_after_the_erasure_does_not_make_the_recipient_pending(client, db, shop):
    _, key = shop
    # Given a recipient claimed by a worker, its provider call in flight
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Second"}
    ).json
    client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    ids = [
        rid
        for (rid,) in db.execute_sql(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s", (campaign["id"],)
        )
    ]
    key_of_batch = batch_key(campaign["id"], ids)
    assert len(claim_recipients(campaign["id"], ids, key_of_batch)) == 2
    # When the number is erased meanwhile, and the call surely did not reach the provider
    client.simulate_delete(f"/contacts/{contact_of(db, PHONE)}", headers=auth(key))
    unclaim(ids, key_of_batch)
    # Then the other recipient is pending again, and the erased one is skipped: no number
    assert set(
        db.execute_sql(
            "SELECT phone, status, error FROM campaign_recipient WHERE campaign_id = %s",
            (campaign["id"],),
        ).fetchall()
    ) == {(None, "skipped", "erased"), (OTHER, "pending", None)}
    assert [r.phone for r in claim_recipients(campaign["id"], ids, key_of_batch)] == [OTHER]


def test_another_shops_contact_cannot_be_deleted(client, db, shop):
    created = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": "other.example", "name": "Other"}
    ).json
    contact = contact_of(db, PHONE)
    assert_error(
        client.simulate_delete(f"/contacts/{contact}", headers=auth(created["api_key"])), 404
    )
    assert_error(client.simulate_delete("/contacts/424242", headers=auth(shop[1])), 404)
    assert places_holding(db, DIGITS) != []


# --- Shopify's privacy webhooks ---------------------------------------------------------------


def test_the_compliance_routes_declare_who_may_call_them(settings, redis_client):
    routes = {
        template: resource.auth
        for template, resource in routed_resources(create_app(settings, redis_client))
    }
    assert {
        template: access
        for template, access in routes.items()
        if "shopify" in template
        or "inbound" in template
        or "exports" in template
        or template.startswith("/contacts/")
    } == {
        "/webhooks/shopify/customers/redact": Access.SHOPIFY,
        "/webhooks/shopify/customers/data_request": Access.SHOPIFY,
        "/webhooks/shopify/shop/redact": Access.SHOPIFY,
        "/webhooks/mitto/inbound": Access.WEBHOOK,
        "/inbound": Access.SHOP,
        "/admin/exports/{export_id:id}": Access.ADMIN,
        "/contacts/{contact_id:id}": Access.SHOP,
        "/contacts/{contact_id:id}/consent": Access.SHOP,
    }


@pytest.mark.parametrize(
    "headers", [{}, {"X-Shopify-Hmac-Sha256": "bm90IGl0"}, {"X-Shopify-Hmac-Sha256": "é"}]
)
def test_a_redact_call_without_a_good_signature_is_refused_and_changes_nothing(
    client, db, shop, headers
):
    where = places_holding(db, DIGITS)
    answer = client.simulate_post(
        "/webhooks/shopify/customers/redact",
        body=json.dumps(redact_body()).encode(),
        headers=headers,
    )
    assert_error(answer, 401)
    # Signed with another secret, or the body changed after signing: refused the same
    assert_error(shopify(client, "customers/redact", redact_body(), "x" * 40), 401)
    raw, good = signed(redact_body(OTHER))
    assert_error(
        client.simulate_post(
            "/webhooks/shopify/customers/redact",
            body=json.dumps(redact_body()).encode(),
            headers=good,
        ),
        401,
    )
    assert places_holding(db, DIGITS) == where


def test_customers_redact_erases_the_customer_once(client, db, shop):
    shop_id, _ = shop
    before = ledger(db, shop_id)
    first = shopify(client, "customers/redact", redact_body("+30 691 234 5678"))
    again = shopify(client, "customers/redact", redact_body())
    assert first.status_code == again.status_code == 200, first.text
    assert first.json["erased"] == {
        "contacts": 1,
        "recipients": 1,
        "messages": 1,
        "reports": 1,
        "inbound": 1,
    }
    assert again.json["erased"] == {
        "contacts": 0,
        "recipients": 0,
        "messages": 0,
        "reports": 0,
        "inbound": 0,
    }
    assert_erased(db, shop_id)
    assert ledger(db, shop_id) == before


@pytest.mark.parametrize("written", ["6912345678", "691 234 5678", "691-234-5678"])
def test_customers_redact_reads_a_phone_without_its_country_in_the_shops_country(
    client, db, shop, written
):
    # Given a Greek shop (its time zone Athens) with the contact +30 691 234 5678, and a
    # German contact whose national number has the same digits
    shop_id, key = shop
    db.execute_sql("UPDATE shop SET timezone = 'Europe/Athens' WHERE id = %s", (shop_id,))
    german = "+496912345678"
    imported = client.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": german}]}
    )
    assert imported.status_code == 200 and imported.json["created"] == 1, imported.text
    # When Shopify names the customer's phone without its country, as its example payloads do
    answer = shopify(client, "customers/redact", redact_body(written))
    # Then the Greek number is erased (a probe: {"erased": null}, the data kept; Shopify does
    # not post a redaction again after a 200), and no other
    assert answer.status_code == 200 and answer.json["erased"]["contacts"] == 1, answer.text
    assert_erased(db, shop_id)
    phones = db.execute_sql("SELECT phone FROM contact WHERE shop_id = %s", (shop_id,)).fetchall()
    assert (OTHER,) in phones and (german,) in phones


def test_a_phone_without_its_country_in_a_shop_of_no_country_erases_nothing(client, db, shop):
    # Given a shop whose time zone is UTC (no country): the digits are not guessed at
    shop_id, key = shop
    where = places_holding(db, DIGITS)
    answer = shopify(client, "customers/redact", redact_body("6912345678"))
    assert answer.status_code == 200 and answer.json == {"erased": None}
    assert places_holding(db, DIGITS) == where


def test_the_time_zones_country_is_the_tz_databases():
    assert contacts.region_of_timezone("Europe/Athens") == "GR"
    assert contacts.region_of_timezone("America/New_York") == "US"
    assert contacts.region_of_timezone("UTC") is None


@pytest.mark.parametrize(
    "body",
    [
        redact_body(domain="unknown.myshopify.com"),
        redact_body(phone=None),
        redact_body(phone="not a phone"),
    ],
)
def test_a_redact_that_matches_nothing_is_200_and_changes_nothing(client, db, shop, body):
    where = places_holding(db, DIGITS)
    answer = shopify(client, "customers/redact", body)
    assert answer.status_code == 200 and answer.json == {"erased": None}
    assert places_holding(db, DIGITS) == where


def test_without_the_app_secret_the_shopify_webhooks_are_off(settings, redis_client, db):
    off = CheckedClient(
        create_app(dataclasses.replace(settings, shopify_api_secret=None), redis_client)
    )
    for topic in ("customers/redact", "customers/data_request", "shop/redact"):
        raw, headers = signed(redact_body())
        assert_error(
            off.simulate_post(f"/webhooks/shopify/{topic}", body=raw, headers=headers), 404
        )


def test_a_data_request_writes_an_export_the_admin_fetches(client, db, shop):
    shop_id, _ = shop
    body = {**redact_body(), "data_request": {"id": 9999}}
    # Given also a test send the merchant made to the number
    (campaign_id,) = db.execute_sql(
        "SELECT min(id) FROM campaign WHERE shop_id = %s", (shop_id,)
    ).fetchone()
    db.execute_sql(
        "INSERT INTO test_send (shop_id, campaign_id, phone, sender, text, segments, status)"
        " VALUES (%s, %s, %s, 'Shop', 'Hi Annabel, test', 1, 'sent')",
        (shop_id, campaign_id, PHONE),
    )
    # When Shopify asks for the customer's data, twice (a retry)
    first = shopify(client, "customers/data_request", body)
    again = shopify(client, "customers/data_request", body)
    # Then one export is written, and the admin can read everything held about the number
    assert first.status_code == 200 and first.json == again.json
    export = client.simulate_get(f"/admin/exports/{first.json['export_id']}", headers=ADMIN)
    assert export.status_code == 200
    data = export.json["document"]["data"]
    assert export.json["shop_id"] == shop_id and export.json["document"]["shop"] == DOMAIN
    assert [c["first_name"] for c in data["contacts"]] == ["Annabel"]
    assert [(e["kind"], e["source"]) for e in data["consent_events"]] == [("opt_in", "import")]
    assert [m["text"] for m in data["messages"]] == ["Hi Annabel, sale today"]
    assert [m["text"] for m in data["inbound"]] == ["Thanks Annabel here"]
    assert [(t["text"], t["status"]) for t in data["test_sends"]] == [("Hi Annabel, test", "sent")]
    assert data["suppressed"] is False
    # And only with the admin token
    assert_error(client.simulate_get(f"/admin/exports/{first.json['export_id']}"), 401)
    assert_error(client.simulate_get("/admin/exports/424242", headers=ADMIN), 404)
    # And erasing the customer deletes the export too
    shopify(client, "customers/redact", redact_body())
    assert_error(
        client.simulate_get(f"/admin/exports/{first.json['export_id']}", headers=ADMIN), 404
    )


def test_shop_redact_erases_every_customer_of_that_shop_only(client, db, shop):
    shop_id, key = shop
    # Given another shop with the same number, and a number this shop suppressed by link
    other = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": "keep.example", "name": "Keep"}
    ).json
    client.simulate_post(
        "/contacts",
        headers=auth(other["api_key"]),
        json={"contacts": [{"phone": PHONE, "first_name": "Annabel"}]},
    )
    db.execute_sql(
        "INSERT INTO suppression (shop_id, phone, source) VALUES (%s, %s, 'link')", (shop_id, OTHER)
    )
    before = ledger(db, shop_id)
    # When Shopify asks to erase the shop's data
    answer = shopify(client, "shop/redact", {"shop_id": 1, "shop_domain": DOMAIN})
    # Then none of its contacts' numbers or names remain with it; the other shop keeps its own
    assert answer.status_code == 200 and answer.json["erased"]["contacts"] == 2
    assert places_holding(db, OTHER.lstrip("+")) == []
    assert places_holding(db, "Bob") == []
    assert {table for table, _, _ in places_holding(db, DIGITS)} == {"contact"}
    assert db.execute_sql(
        "SELECT count(*) FROM contact WHERE shop_id = %s AND phone IS NOT NULL", (shop_id,)
    ).fetchone() == (0,)
    # And its suppressions are digests, its ledger unchanged; a second call changes nothing
    assert db.execute_sql(
        "SELECT source FROM suppression WHERE shop_id = %s AND phone IS NULL ORDER BY source",
        (shop_id,),
    ).fetchall() == [("erasure",), ("link",)]
    assert ledger(db, shop_id) == before
    again = shopify(client, "shop/redact", {"shop_id": 1, "shop_domain": DOMAIN})
    assert again.json["erased"]["contacts"] == 0
    # And a number of the erased shop imported again (the app installed again) is opted out
    client.simulate_post("/contacts", headers=auth(key), json={"contacts": [{"phone": PHONE}]})
    assert db.execute_sql(
        "SELECT opted_out_at IS NOT NULL FROM contact WHERE shop_id = %s AND phone = %s",
        (shop_id, PHONE),
    ).fetchone() == (True,)


SHOPIFY_EXPORT = (
    "Customer ID,First Name,Last Name,Email,Default Address Phone,Phone,Accepts SMS Marketing\n"
    "'7001,Dora,Addr,dora@example.com,+306955500002,,yes\n"
    # a Customer ID that is no id: ignored, the row imported all the same
    "n/a,Eve,Addr,eve@example.com,+306955500003,,yes\n"
    "gid://shopify/Customer/7003,Fay,Addr,fay@example.com,+306955500004,,yes\n"
)


def test_a_customer_imported_by_its_address_phone_is_found_by_its_shopify_id(client, db, shop):
    shop_id, key = shop
    # Given a customer imported from Shopify's export by its Default Address Phone (its own
    # Phone blank), whom Shopify's webhooks then name by id only
    imported = client.simulate_post(
        "/contacts",
        headers={**auth(key), "Content-Type": "text/csv"},
        body=SHOPIFY_EXPORT.encode(),
    )
    assert imported.json["created"] == 3 and imported.json["invalid"] == [], imported.text
    assert db.execute_sql(
        "SELECT phone, shopify_customer_id FROM contact WHERE phone LIKE '+3069555000%%'"
        " ORDER BY phone"
    ).fetchall() == [
        ("+306955500002", "7001"),
        ("+306955500003", None),
        ("+306955500004", "7003"),
    ]
    customer = {"shop_domain": DOMAIN, "customer": {"id": 7001, "email": "d@x", "phone": None}}
    # When Shopify asks for the customer's data, and then to erase the customer
    request = shopify(client, "customers/data_request", {**customer, "data_request": {"id": 5}})
    export = client.simulate_get(f"/admin/exports/{request.json['export_id']}", headers=ADMIN)
    erased = shopify(client, "customers/redact", customer)
    # Then the export holds the contact, and the erasure removed it and the export
    assert [c["first_name"] for c in export.json["document"]["data"]["contacts"]] == ["Dora"]
    assert erased.status_code == 200 and erased.json["erased"]["contacts"] == 1, erased.text
    assert places_holding(db, "955500002") == [] and places_holding(db, "Dora") == []
    assert_error(
        client.simulate_get(f"/admin/exports/{request.json['export_id']}", headers=ADMIN), 404
    )


def test_a_data_request_exports_every_number_the_redact_would_erase(client, db, shop):
    _, key = shop
    # Given a customer imported twice with one Shopify id: an old number and a new one
    for phone, name in (("+306955500011", "Olga"), ("+306955500012", "Olga")):
        client.simulate_post(
            "/contacts",
            headers=auth(key),
            json={"contacts": [{"phone": phone, "first_name": name, "shopify_customer_id": 7002}]},
        )
    customer = {"shop_domain": DOMAIN, "customer": {"id": 7002, "phone": "+306955500012"}}
    # When Shopify asks for the customer's data
    request = shopify(client, "customers/data_request", {**customer, "data_request": {"id": 6}})
    data = client.simulate_get(f"/admin/exports/{request.json['export_id']}", headers=ADMIN).json[
        "document"
    ]["data"]
    # Then both numbers' records are in it, as both would be erased
    assert data["phones"] == ["+306955500012", "+306955500011"]
    assert sorted(c["phone"] for c in data["contacts"]) == ["+306955500011", "+306955500012"]
    assert shopify(client, "customers/redact", customer).json["erased"]["contacts"] == 2


def test_erasing_any_number_of_an_export_erases_the_export(client, db, shop):
    _, key = shop
    # Given a customer imported with two numbers under one Shopify id, and its export (hashed
    # under the first number, holding both)
    for phone, name in (("+306955500011", "Olga"), ("+306955500012", "Zelda")):
        client.simulate_post(
            "/contacts",
            headers=auth(key),
            json={"contacts": [{"phone": phone, "first_name": name, "shopify_customer_id": 7002}]},
        )
    customer = {"shop_domain": DOMAIN, "customer": {"id": 7002, "phone": "+306955500011"}}
    request = shopify(client, "customers/data_request", {**customer, "data_request": {"id": 6}})
    export_id = request.json["export_id"]
    # When the merchant erases the second number's contact
    (contact_id,) = db.execute_sql(
        "SELECT id FROM contact WHERE phone = '+306955500012'"
    ).fetchone()
    assert client.simulate_delete(f"/contacts/{contact_id}", headers=auth(key)).status_code == 204
    # Then the export is gone, and nothing anywhere holds that number or its name
    assert_error(client.simulate_get(f"/admin/exports/{export_id}", headers=ADMIN), 404)
    assert places_holding(db, "955500012") == [] and places_holding(db, "Zelda") == []


def test_an_export_of_a_number_that_is_not_e164_goes_with_the_customers_erasure(client, db, shop):
    # Given an export Shopify asked for with a national spelling of the number
    customer = {"id": 77, "phone": "6912345678"}
    request = shopify(
        client,
        "customers/data_request",
        {"shop_domain": DOMAIN, "customer": customer, "data_request": {"id": 9002}},
    )
    export_id = request.json["export_id"]
    assert client.simulate_get(f"/admin/exports/{export_id}", headers=ADMIN).status_code == 200
    # When the same customer is erased (by the E.164 number)
    shopify(client, "customers/redact", redact_body() | {"customer": {**customer, "phone": PHONE}})
    # Then that export is gone too
    assert_error(client.simulate_get(f"/admin/exports/{export_id}", headers=ADMIN), 404)


def test_a_replayed_request_whose_answer_held_the_erased_number_answers_410(client, db, shop):
    shop_id, key = shop
    # Given a test send to the customer, made with an Idempotency-Key (its answer, stored for
    # replays, holds the number and the text naming the customer)
    (campaign_id,) = db.execute_sql(
        "SELECT min(id) FROM campaign WHERE shop_id = %s", (shop_id,)
    ).fetchone()
    path, headers = f"/campaigns/{campaign_id}/test", {**auth(key), "Idempotency-Key": "t-1"}
    first = client.simulate_post(path, headers=headers, json={"phone": PHONE})
    assert first.status_code == 202 and first.json["phone"] == PHONE, first.text
    # When the customer is erased
    shopify(client, "customers/redact", redact_body())
    # Then the stored answer is gone from the database, and a replay of the request neither
    # shows it nor sends again
    assert_erased(db, shop_id)
    replay = client.simulate_post(path, headers=headers, json={"phone": PHONE})
    assert_error(replay, 410)
    assert PHONE not in replay.text and DIGITS not in replay.text
    assert db.execute_sql(
        "SELECT count(*) FROM test_send WHERE shop_id = %s", (shop_id,)
    ).fetchone() == (1,)


@pytest.mark.parametrize("children", [0, 1], ids=["in the request", "in a child"])
def test_a_write_waiting_for_an_erasure_gives_up_with_a_503_and_other_shops_are_served(
    client, db, monkeypatch, settings, request, children
):
    # Given two shops, and an erasure of shop A in flight (its lock held on another
    # connection), with writers waiting at most 300 ms for it (in the request, where that wait
    # is set; a child waits its own 2 s, and its lock timeout crosses back pickled)
    import threading

    import falcon.testing

    from api import import_processes
    from models.database import db as database
    from service import erasure_lock
    from tests.api.conftest import create_shop

    monkeypatch.setattr(erasure_lock, "WRITER_WAIT_MS", 300)
    import_processes.configure(children, settings)
    request.addfinalizer(lambda: import_processes.configure(settings.import_processes, settings))
    shop_a, key_a = create_shop(client, "erasing-a.example")
    _, key_b = create_shop(client, "erasing-b.example")
    held, release = threading.Event(), threading.Event()

    def erasure() -> None:
        with database.connection_context(), database.atomic():
            erasure_lock.erasing(shop_a)
            held.set()
            release.wait(10)

    thread = threading.Thread(target=erasure, daemon=True)
    thread.start()
    assert held.wait(10)
    try:
        # When shop A imports, Then it gets a 503 saying why, with Retry-After, in well under
        # the erasure's time (its thread and connection free for others)
        rows = {"contacts": [{"phone": PHONE}]}
        # (the plain TestClient: the checked one refuses every 5xx)
        answer = falcon.testing.simulate_post(
            client.app, "/contacts", headers=auth(key_a), json=rows
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2" and "erasure" in answer.json["description"]
        # And shop B imports meanwhile as usual
        assert client.simulate_post("/contacts", headers=auth(key_b), json=rows).status_code == 200
    finally:
        release.set()
        thread.join(10)
    # And once the erasure is over, shop A's retry goes through
    assert client.simulate_post("/contacts", headers=auth(key_a), json=rows).status_code == 200
