"""The audit trail (SPEC 11): each campaign status change, credit movement, API key issued or
revoked and suppression change is recorded with its actor, time and reason, in the transaction
of the change; the database refuses to change or remove a record. `GET /campaigns/{id}/events`
for the shop, `GET /admin/audit?shop_id=` for the operator. In process, on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import peewee
import pytest

from models import Campaign
from service import audit, campaigns, links, suppressions
from tests.api.conftest import (
    ADMIN,
    CONSENT,
    assert_error,
    auth,
    contact_ids,
    create_campaign,
    create_shop,
    import_contacts,
)
from tests.api.test_erasure import DOMAIN, OTHER, redact_body, shopify
from tests.conftest import DLR_WEBHOOK_SECRET, SECRET_KEY

PHONE = "+306912345678"
SENDER = "306999000002"


def key_id(client, shop_id: int) -> str:
    """The id of the shop's (only) API key, as events name it."""
    keys = client.simulate_get(f"/admin/shops/{shop_id}/keys", headers=ADMIN).json["items"]
    assert len(keys) == 1
    return str(keys[0]["id"])


def campaign_events(client, key: str, campaign_id: int, **params) -> list[dict]:
    answer = client.simulate_get(
        f"/campaigns/{campaign_id}/events", headers=auth(key), params=params
    )
    assert answer.status_code == 200, answer.text
    return answer.json["items"]


def shop_events(client, shop_id: int, subject: str | None = None) -> list[dict]:
    answer = client.simulate_get(
        "/admin/audit", headers=ADMIN, params={"shop_id": shop_id, "limit": 100}
    )
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json["items"] if subject is None or e["subject"] == subject]


def actor(event: dict) -> tuple:
    return event["actor"]["kind"], event["actor"]["name"], event["actor"]["epoch"]


def test_each_merchant_action_on_a_campaign_is_an_event_of_its_key(client, db):
    # Given a shop with two contacts and a draft campaign
    shop_id, key = create_shop(client, "events.example", credits=100)
    import_contacts(client, key, [PHONE, "+306912345679"])
    campaign = create_campaign(client, key, text="Sale today", append_unsubscribe=False)
    path = f"/campaigns/{campaign['id']}"
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    # When the merchant schedules, launches, pauses, resumes and cancels it
    for action, body in (
        ("schedule", {"scheduled_at": soon}),
        ("enqueue", None),
        ("pause", None),
        ("resume", None),
        ("cancel", None),
    ):
        answer = client.simulate_post(f"{path}/{action}", headers=auth(key), json=body)
        assert answer.status_code in (200, 202), answer.text

    # Then its events name each change, in order, with the key that made it
    events = campaign_events(client, key, campaign["id"])
    merchant = ("key", key_id(client, shop_id), None)
    assert [(e["subject"], e["from_status"], e["to_status"]) for e in events] == [
        ("campaign", "draft", "scheduled"),
        ("campaign", "scheduled", "sending"),
        ("reservation", None, "active"),
        ("campaign", "sending", "paused"),
        ("campaign", "paused", "sending"),
        ("campaign", "sending", "cancelled"),
        ("reservation", "active", "released"),
    ]
    assert {actor(e) for e in events} == {merchant}
    assert events[2]["amount"] == 2 and events[-1]["amount"] == 2  # reserved, then given back
    assert all(e["reason"] and e["at"] for e in events)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # ... one page at a time like every list
    first = client.simulate_get(f"{path}/events", headers=auth(key), params={"limit": 4}).json
    rest = campaign_events(client, key, campaign["id"], after=first["next"])
    assert first["items"] + rest == events


def test_a_refused_change_records_nothing(client, db):
    # Given a shop without credits and a campaign of two recipients
    shop_id, key = create_shop(client, "refused.example")
    import_contacts(client, key, [PHONE, "+306912345679"])
    campaign = create_campaign(client, key, text="Sale today")

    # When it is launched (402) and paused while a draft (409)
    enqueued = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    paused = client.simulate_post(f"/campaigns/{campaign['id']}/pause", headers=auth(key))

    # Then neither changed anything, and neither is an event
    assert_error(enqueued, 402)
    assert_error(paused, 409)
    assert campaign_events(client, key, campaign["id"]) == []


def test_an_event_that_cannot_be_written_undoes_its_change(client, db):
    # Given a sending campaign
    shop_id, key = create_shop(client, "atomic.example", credits=100)
    import_contacts(client, key, [PHONE])
    campaign = create_campaign(client, key, text="Sale today")
    client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    # ... and an actor the audit table refuses (its CHECK), built past Actor's own check
    bogus = object.__new__(audit.Actor)
    object.__setattr__(bogus, "kind", "intruder")
    object.__setattr__(bogus, "name", None)
    object.__setattr__(bogus, "epoch", None)

    # When pausing it fails to write its event
    with pytest.raises(peewee.IntegrityError):
        campaigns.pause(shop_id, campaign["id"], bogus)

    # Then the pause did not happen either
    assert Campaign.get_by_id(campaign["id"]).status == "sending"
    assert [e["to_status"] for e in campaign_events(client, key, campaign["id"])] == [
        "sending",
        "active",
    ]


def test_another_shops_campaign_has_no_events_to_read(client, shops):
    # Given another shop's campaign, which has events of its own
    client.simulate_post(
        f"/campaigns/{shops.other_campaign_id}/cancel", headers=auth(shops.other_key)
    )

    # When the shop asks for its events, or for a campaign that does not exist
    theirs = client.simulate_get(
        f"/campaigns/{shops.other_campaign_id}/events", headers=auth(shops.key)
    )
    missing = client.simulate_get("/campaigns/424242/events", headers=auth(shops.key))

    # Then both are 404, and the owner sees its event
    assert_error(theirs, 404)
    assert_error(missing, 404)
    assert len(campaign_events(client, shops.other_key, shops.other_campaign_id)) == 1


def test_credit_movements_are_events_of_the_admin(client, db):
    # Given a shop (and another one, whose events are not this shop's)
    shop_id, _ = create_shop(client, "credits.example")
    create_shop(client, "unrelated.example", credits=50)

    # When the operator tops it up (twice with one reference), refunds and adjusts it
    for reference in ("invoice-1", "invoice-1"):
        client.simulate_post(
            f"/admin/shops/{shop_id}/credits",
            headers=ADMIN,
            json={"amount": 100, "reference": reference},
        )
    for amount, reference, reason in ((7, "t-1", "undelivered"), (-30, "t-2", "double top-up")):
        client.simulate_post(
            f"/admin/shops/{shop_id}/adjustments",
            headers=ADMIN,
            json={"amount": amount, "reason": reason, "reference": reference},
        )

    # Then the shop's trail has each movement once, by the admin, with its reason
    events = shop_events(client, shop_id, "credits")
    assert [(e["action"], e["amount"], e["reason"], actor(e)) for e in events] == [
        ("top_up", 100, "top-up invoice-1", ("admin", None, None)),
        ("refund", 7, "undelivered", ("admin", None, None)),
        ("adjustment", -30, "double top-up", ("admin", None, None)),
    ]
    assert {e["shop_id"] for e in shop_events(client, shop_id)} == {shop_id}
    everyone = client.simulate_get("/admin/audit", headers=ADMIN, params={"limit": 100}).json
    assert len({e["shop_id"] for e in everyone["items"]}) == 2


def test_keys_issued_and_revoked_are_events_of_the_admin(client, db):
    # Given a shop (its first key is issued with it)
    shop_id, _ = create_shop(client, "keys.example")
    first = key_id(client, shop_id)

    # When the operator issues a second key and revokes it twice
    second = client.simulate_post(f"/admin/shops/{shop_id}/keys", headers=ADMIN).json["id"]
    for _ in range(2):
        client.simulate_delete(f"/admin/shops/{shop_id}/keys/{second}", headers=ADMIN)

    # Then the trail has both issues and one revocation, never the key itself
    events = shop_events(client, shop_id, "api_key")
    assert [(e["action"], str(e["subject_id"]), actor(e)) for e in events] == [
        ("issued", first, ("admin", None, None)),
        ("issued", str(second), ("admin", None, None)),
        ("revoked", str(second), ("admin", None, None)),
    ]
    assert all(set(e["detail"] or {}) <= {"prefix"} for e in events)


def test_suppression_changes_are_events_naming_the_number_by_its_digest(client, db):
    # Given a shop with its own sender and a contact
    created = client.simulate_post(
        "/admin/shops",
        headers=ADMIN,
        json={"domain": "stop.example", "name": "stop", "sender": SENDER},
    ).json
    shop_id, key = created["id"], created["api_key"]
    client.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": PHONE, "consent": CONSENT}]}
    )
    contact = contact_ids(client, key)[0]
    inbound = f"/webhooks/mitto/inbound?token={DLR_WEBHOOK_SECRET}"

    # When the number unsubscribes by link, writes START, then STOP, and the merchant erases it
    client.simulate_post(f"/u/{links.unsubscribe_token(SECRET_KEY, shop_id, contact)}")
    for text in ("START", "STOP"):
        sent = client.simulate_post(
            inbound, json={"from": PHONE.lstrip("+"), "to": SENDER, "text": text}
        )
        assert sent.status_code == 200, sent.text
    client.simulate_delete(f"/contacts/{contact}", headers=auth(key))

    # Then each change is an event of whoever made it, with the number's digest only
    events = shop_events(client, shop_id, "suppression")
    digest = suppressions.phone_digest(SECRET_KEY, PHONE)
    merchant = ("key", key_id(client, shop_id), None)
    assert [(e["action"], e["detail"]["source"], actor(e)) for e in events] == [
        ("suppressed", "link", ("page", "unsubscribe", None)),
        ("lifted", "link", ("webhook", "provider", None)),
        ("suppressed", "reply", ("webhook", "provider", None)),
        ("erased", "reply", merchant),
    ]
    assert {e["detail"]["phone_digest"] for e in events} == {digest}
    assert events[0]["detail"]["contact_id"] == contact
    # ... and no row of the trail holds the number, in any spelling
    rows = db.execute_sql("SELECT row_to_json(a)::text FROM audit_event a").fetchall()
    assert not [row for (row,) in rows if PHONE.lstrip("+") in row]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET reason = 'rewritten'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ],
)
def test_the_database_refuses_to_change_or_remove_an_event(client, db, statement):
    # Given a shop, whose first key's issue is an event
    shop_id, _ = create_shop(client, "append-only.example")
    before = shop_events(client, shop_id)
    assert before

    # When anyone updates, deletes or truncates the trail, even outside the application
    with pytest.raises(peewee.DatabaseError, match="append-only"):
        with db.atomic():
            db.execute_sql(statement)

    # Then the database refused it and every event is as it was
    assert shop_events(client, shop_id) == before


def test_shopify_redaction_is_an_event_of_the_shopify_webhook(client, db):
    # Given a shop with two subscribed contacts, one of whom unsubscribed by link
    created = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": DOMAIN, "name": "erasure"}
    ).json
    shop_id, key = created["id"], created["api_key"]
    import_contacts(client, key, [PHONE, OTHER])
    unsubscribed = contact_ids(client, key)[1]
    client.simulate_post(f"/u/{links.unsubscribe_token(SECRET_KEY, shop_id, unsubscribed)}")

    # When Shopify asks to redact the first customer, then the whole shop
    assert shopify(client, "customers/redact", redact_body(PHONE)).status_code == 200
    assert shopify(client, "shop/redact", {"shop_domain": DOMAIN}).status_code == 200

    # Then each number's suppression changed by Shopify's webhook, named by its digest
    events = shop_events(client, shop_id, "suppression")
    shopify_webhook = ("webhook", "shopify", None)
    assert [(e["action"], e["detail"]["phone_digest"], actor(e)) for e in events[1:]] == [
        ("suppressed", suppressions.phone_digest(SECRET_KEY, PHONE), shopify_webhook),
        ("erased", suppressions.phone_digest(SECRET_KEY, OTHER), shopify_webhook),
    ]
