"""Consent (SPEC 11): contacts carry consent from their import (JSON, CSV, Shopify's export),
each contact has an append-only consent log (`GET /contacts/{id}/consent`), and a shop that
requires consent sends campaigns only to contacts with it."""

from __future__ import annotations

import peewee
import pytest

from models.migrate import available
from service import links
from tests.api.conftest import ADMIN, assert_error, auth, top_up
from tests.api.test_contacts_import import SHOPIFY_HEADER, post_csv, shopify_row
from tests.conftest import SECRET_KEY

PHONE = "+306912345678"


def make_shop(client, domain: str, **fields) -> tuple[int, str]:
    created = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": domain, "name": "Shop", **fields}
    )
    assert created.status_code == 201, created.text
    top_up(client, created.json["id"], 100, "initial")
    return created.json["id"], created.json["api_key"]


def imported(client, key: str, rows: list[dict]) -> dict:
    answer = client.simulate_post("/contacts", headers=auth(key), json={"contacts": rows})
    assert answer.status_code == 200, answer.text
    return answer.json


def contact_id(db, shop_id: int, phone: str = PHONE) -> int:
    return db.execute_sql(
        "SELECT id FROM contact WHERE shop_id = %s AND phone = %s", (shop_id, phone)
    ).fetchone()[0]


def consent_of(client, key: str, contact: int) -> dict:
    answer = client.simulate_get(f"/contacts/{contact}/consent", headers=auth(key))
    assert answer.status_code == 200, answer.text
    return answer.json


def events(body: dict) -> list[tuple]:
    return [
        (e["kind"], e["source"], e["consent_source"], e["collected_at"], e["proof"])
        for e in body["items"]
    ]


def recipients_of_a_new_campaign(client, key: str) -> int | None:
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Sale today"}
    ).json
    answer = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    return answer.json.get("recipients") if answer.status_code == 202 else None


@pytest.fixture
def shop(client) -> tuple[int, str]:
    return make_shop(client, "consent.example")


# --- consent on import and its log -----------------------------------------------------------


def test_an_imported_consent_is_the_contacts_and_is_logged_once(client, db, shop):
    shop_id, key = shop
    given = {
        "source": "checkout",
        "collected_at": "2025-01-10T09:00:00+02:00",
        "proof": "form v3, box ticked",
    }
    # When a contact is imported with its consent, then imported again as it was
    imported(client, key, [{"phone": PHONE, "consent": given}])
    imported(client, key, [{"phone": PHONE, "consent": given}])
    # Then its consent is the one given, logged once as an import
    body = consent_of(client, key, contact_id(db, shop_id))
    assert body["consent"] == {"source": "checkout", "collected_at": "2025-01-10T07:00:00+00:00"}
    assert body["consented"] is True and body["opted_out_at"] is None
    assert events(body) == [
        ("opt_in", "import", "checkout", "2025-01-10T07:00:00+00:00", "form v3, box ticked")
    ]
    # And the list of contacts shows it
    listed = client.simulate_get("/contacts", headers=auth(key)).json["items"][0]
    assert listed["consent_source"] == "checkout"


def test_the_most_recent_consent_is_in_force_and_every_one_is_logged(client, db, shop):
    shop_id, key = shop
    # Given consents imported out of order: 2025, then 2024 (an old file), then none
    imported(
        client,
        key,
        [{"phone": PHONE, "consent": {"source": "popup", "collected_at": "2025-05-01T00:00:00Z"}}],
    )
    imported(
        client,
        key,
        [{"phone": PHONE, "consent": {"source": "paper", "collected_at": "2024-05-01T00:00:00Z"}}],
    )
    imported(client, key, [{"phone": PHONE, "first_name": "Ann"}])
    # Then the 2025 one is in force, and both are in the log
    body = consent_of(client, key, contact_id(db, shop_id))
    assert body["consent"]["source"] == "popup"
    assert [e[2] for e in events(body)] == ["popup", "paper"]


@pytest.mark.parametrize(
    "consent, field",
    [
        ({"source": "checkout"}, "consent.collected_at"),
        ({"collected_at": "2025-01-01T00:00:00Z"}, "consent.source"),
        ({"source": "checkout", "collected_at": "2025-01-01T00:00:00"}, "consent.collected_at"),
        ({"source": "checkout", "collected_at": "2999-01-01T00:00:00Z"}, "consent.collected_at"),
        ({"source": "", "collected_at": "2025-01-01T00:00:00Z"}, "consent.source"),
        ({"source": "x", "collected_at": "2025-01-01T00:00:00Z", "ip": "1.2.3.4"}, "consent.ip"),
        ("yes", "consent"),
    ],
)
def test_a_row_with_a_bad_consent_is_reported_and_the_others_imported(
    client, db, shop, consent, field
):
    shop_id, key = shop
    result = imported(
        client, key, [{"phone": PHONE, "consent": consent}, {"phone": "+306912345679"}]
    )
    assert result["created"] == 1
    assert [(row["index"], row["field"]) for row in result["invalid"]] == [(0, field)]


def test_csv_consent_columns_and_shopifys_accepts_sms_marketing(client, db, shop):
    shop_id, key = shop
    # Given a CSV with consent columns, and a Shopify export (yes for one customer, no for one)
    csv_text = (
        "phone,first_name,consent_source,consent_collected_at,consent_proof\n"
        "+306900000001,Ann,web_form,2025-02-01T10:00:00Z,https://shop.example/f\n"
        "+306900000002,Bob,,,\n"
        "+306900000003,Cy,web_form,,\n"
    )
    shopify = "\n".join(
        [
            SHOPIFY_HEADER,
            shopify_row("Eva", "", "+306900000004"),
            shopify_row("Dan", "", "+306900000005").replace(",yes,12.50", ",no,12.50"),
        ]
    )
    # When both are imported
    first = post_csv(client, key, csv_text).json
    second = post_csv(client, key, shopify).json
    # Then the row with a source but no time is refused, the others imported
    assert (first["created"], [(r["index"], r["field"]) for r in first["invalid"]]) == (
        2,
        [(2, "consent.collected_at")],
    )
    assert second["created"] == 2 and second["invalid"] == []
    # And consent is what each row said: the form's, none, Shopify's yes, none for no
    rows = dict(
        db.execute_sql(
            "SELECT phone, consent_source FROM contact WHERE shop_id = %s", (shop_id,)
        ).fetchall()
    )
    assert rows == {
        "+306900000001": "web_form",
        "+306900000002": None,
        "+306900000004": "shopify",
        "+306900000005": None,
    }
    shopify_log = events(consent_of(client, key, contact_id(db, shop_id, "+306900000004")))
    assert shopify_log[0][:3] == ("opt_in", "import", "shopify")
    assert "Accepts SMS Marketing" in shopify_log[0][4]


def test_a_later_shopify_export_saying_no_withdraws_shopifys_consent(client, db, shop):
    shop_id, key = shop
    # Given two customers imported from Shopify's export with SMS marketing accepted, and one
    # whose consent the merchant collected on a web form
    post_csv(
        client,
        key,
        "\n".join(
            [
                SHOPIFY_HEADER,
                shopify_row("Kim", "", "+306900000011"),
                shopify_row("Lee", "", "+306900000012"),
            ]
        ),
    )
    form = {"source": "web_form", "collected_at": "2025-02-01T10:00:00Z"}
    client.simulate_post(
        "/contacts",
        headers=auth(key),
        json={"contacts": [{"phone": "+306900000013", "consent": form}]},
    )
    # When a later export says Kim and the form's customer no longer accept SMS marketing
    no = ",no,12.50"
    later = post_csv(
        client,
        key,
        "\n".join(
            [
                SHOPIFY_HEADER,
                shopify_row("Kim", "", "+306900000011").replace(",yes,12.50", no),
                shopify_row("Lee", "", "+306900000012"),
                shopify_row("Max", "", "+306900000013").replace(",yes,12.50", no),
            ]
        ),
    ).json
    assert later["invalid"] == [] and later["updated"] == 3
    # Then Kim's Shopify consent is withdrawn (logged, not suppressed), Lee's kept, and the
    # consent Shopify never gave is not Shopify's to withdraw
    rows = dict(
        db.execute_sql(
            "SELECT phone, consent_source FROM contact WHERE shop_id = %s", (shop_id,)
        ).fetchall()
    )
    assert rows == {
        "+306900000011": None,
        "+306900000012": "shopify",
        "+306900000013": "web_form",
    }
    # And a consent from elsewhere that Shopify's replaced is in force again once Shopify's goes
    checkout = {"source": "checkout", "collected_at": "2024-01-01T00:00:00Z"}
    phone = "+306900000014"
    client.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": phone, "consent": checkout}]}
    )
    for accepts in ("yes", "no"):
        row = shopify_row("Ned", "", phone)
        post_csv(
            client, key, SHOPIFY_HEADER + "\n" + row.replace(",yes,12.50", f",{accepts},12.50")
        )
    assert db.execute_sql(
        "SELECT consent_source FROM contact WHERE phone = %s", (phone,)
    ).fetchone() == ("checkout",)
    kim = events(consent_of(client, key, contact_id(db, shop_id, "+306900000011")))
    assert kim[-1][:2] == ("opt_out", "import") and "= no" in kim[-1][4]
    assert db.execute_sql("SELECT count(*) FROM suppression").fetchone() == (0,)
    # And a campaign of this shop (which requires consent) reaches the two with consent
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Sale today"}
    ).json
    enqueued = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert enqueued.json["recipients"] == 3, enqueued.text


def test_the_unsubscribe_link_logs_an_opt_out(client, db, shop):
    shop_id, key = shop
    imported(
        client,
        key,
        [
            {
                "phone": PHONE,
                "consent": {"source": "checkout", "collected_at": "2025-01-01T00:00:00Z"},
            }
        ],
    )
    contact = contact_id(db, shop_id)
    token = links.unsubscribe_token(SECRET_KEY, shop_id, contact)
    for _ in range(2):
        assert client.simulate_post(f"/u/{token}").status_code == 200
    body = consent_of(client, key, contact)
    assert [e[:2] for e in events(body)] == [("opt_in", "import"), ("opt_out", "link")]
    assert body["consented"] is False and body["opted_out_at"] is not None


def test_another_shops_contact_has_no_consent_to_show(client, db, shop):
    shop_id, key = shop
    _, other_key = make_shop(client, "other.example")
    imported(client, key, [{"phone": PHONE}])
    mine = contact_id(db, shop_id)
    assert_error(client.simulate_get(f"/contacts/{mine}/consent", headers=auth(other_key)), 404)
    assert_error(client.simulate_get("/contacts/999999/consent", headers=auth(key)), 404)
    assert_error(client.simulate_get(f"/contacts/{mine}/consent"), 401)


def test_the_consent_log_is_paginated(client, db, shop):
    shop_id, key = shop
    imported(
        client,
        key,
        [
            {
                "phone": PHONE,
                "consent": {"source": f"s{n}", "collected_at": f"2025-01-0{n + 1}T00:00:00Z"},
            }
            for n in range(3)
        ],
    )
    contact = contact_id(db, shop_id)
    first = client.simulate_get(
        f"/contacts/{contact}/consent", headers=auth(key), params={"limit": 2}
    ).json
    assert len(first["items"]) == 1 and first["next"] is None  # one row per phone per import
    for n in range(3):
        imported(
            client,
            key,
            [
                {
                    "phone": PHONE,
                    "consent": {"source": f"t{n}", "collected_at": f"2025-02-0{n + 1}T00:00:00Z"},
                }
            ],
        )
    page = client.simulate_get(
        f"/contacts/{contact}/consent", headers=auth(key), params={"limit": 2}
    ).json
    rest = client.simulate_get(
        f"/contacts/{contact}/consent",
        headers=auth(key),
        params={"limit": 2, "after": page["next"]},
    ).json
    assert [e["consent_source"] for e in page["items"] + rest["items"]] == ["s2", "t0", "t1", "t2"]


def test_the_consent_log_cannot_be_rewritten(client, db, shop):
    shop_id, key = shop
    imported(
        client,
        key,
        [
            {
                "phone": PHONE,
                "consent": {
                    "source": "checkout",
                    "collected_at": "2025-01-01T00:00:00Z",
                    "proof": "p",
                },
            }
        ],
    )
    for statement in (
        "UPDATE consent_event SET source = 'admin'",
        "DELETE FROM consent_event",
        "UPDATE consent_event SET proof = 'forged'",
        "TRUNCATE consent_event",
        "TRUNCATE contact CASCADE",
    ):
        with pytest.raises(peewee.DatabaseError, match="append-only"):
            with db.atomic():
                db.execute_sql(statement)
    assert db.execute_sql("SELECT source, proof FROM consent_event").fetchall() == [("import", "p")]


# --- require_consent -------------------------------------------------------------------------


def test_a_shop_that_requires_consent_sends_only_to_contacts_with_it(client, db, shop):
    _, key = shop
    # Given three contacts: with consent, without, and with consent but opted out
    imported(
        client,
        key,
        [
            {
                "phone": "+306900000001",
                "consent": {"source": "checkout", "collected_at": "2025-01-01T00:00:00Z"},
            },
            {"phone": "+306900000002"},
            {
                "phone": "+306900000003",
                "consent": {"source": "checkout", "collected_at": "2025-01-01T00:00:00Z"},
            },
        ],
    )
    db.execute_sql("UPDATE contact SET opted_out_at = now() WHERE phone = '+306900000003'")
    # Then a campaign for everyone reaches the one with consent only
    assert recipients_of_a_new_campaign(client, key) == 1
    phones = db.execute_sql("SELECT phone FROM campaign_recipient").fetchall()
    assert phones == [("+306900000001",)]


def test_a_shop_created_without_require_consent_sends_to_every_subscribed_contact(client, db):
    shop_id, key = make_shop(client, "legacy.example", require_consent=False)
    imported(client, key, [{"phone": "+306900000001"}, {"phone": "+306900000002"}])
    assert recipients_of_a_new_campaign(client, key) == 2


def test_a_shop_without_any_consented_contact_has_no_recipients(client, db, shop):
    _, key = shop
    imported(client, key, [{"phone": "+306900000001"}])
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Sale today"}
    ).json
    refused = assert_error(
        client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key)), 422
    )
    assert refused["field"] == "audience"  # SPEC 5: a 422 says which field


def test_existing_shops_keep_sending_without_consent_and_new_ones_require_it(db):
    # Given the schema of before this change, with a shop in it
    with pytest.raises(Rollback):
        with db.atomic():
            db.execute_sql(
                "CREATE SCHEMA before_compliance; SET LOCAL search_path TO before_compliance"
            )
            versions = available()
            for version, path in versions:
                if version.startswith("0005"):
                    db.execute_sql("INSERT INTO shop (domain, name) VALUES ('old.example', 'O')")
                db.execute_sql(path.read_text())
            # When the compliance migration has run
            db.execute_sql("INSERT INTO shop (domain, name) VALUES ('new.example', 'N')")
            # Then the shop that existed does not require consent, and a new one does
            rows = db.execute_sql("SELECT domain, require_consent FROM shop ORDER BY id")
            assert rows.fetchall() == [("old.example", False), ("new.example", True)]
            raise Rollback


class Rollback(Exception):
    """Undo a test's scratch schema."""
