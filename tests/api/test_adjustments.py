"""`POST /admin/shops/{id}/adjustments` (SPEC 3, 5): refunds and adjustments in the ledger, once
per reference; a negative one never takes credits reserved for a campaign."""

from __future__ import annotations

from tests.api.conftest import ADMIN, assert_error, auth, create_shop, import_contacts


def adjust(client, shop_id: int, amount: int, reference: str, reason: str = "support ticket"):
    return client.simulate_post(
        f"/admin/shops/{shop_id}/adjustments",
        headers=ADMIN,
        json={"amount": amount, "reason": reason, "reference": reference},
    )


def ledger(client, key: str) -> list[tuple]:
    items = client.simulate_get("/credits/transactions", headers=auth(key)).json["items"]
    return [(item["kind"], item["amount"], item["note"]) for item in items]


def test_a_refund_and_an_adjustment_are_in_the_ledger_once_per_reference(client, db):
    # Given a shop with 100 credits
    shop_id, key = create_shop(client, "refund.example", credits=100)

    # When an operator refunds 7 credits, twice with the same reference, then takes 30 away
    first = adjust(client, shop_id, 7, "ticket-1", "undelivered messages")
    again = adjust(client, shop_id, 7, "ticket-1", "undelivered messages")
    taken = adjust(client, shop_id, -30, "ticket-2", "duplicate top-up")

    # Then each answers 201 with the balance; the repeated reference added nothing
    assert (first.status_code, again.status_code, taken.status_code) == (201, 201, 201)
    assert first.json == again.json == {"balance": 107, "reserved": 0, "available": 107}
    assert taken.json["balance"] == 77
    assert ledger(client, key)[1:] == [
        ("refund", 7, "undelivered messages"),
        ("adjustment", -30, "duplicate top-up"),
    ]
    assert client.simulate_get("/credits", headers=auth(key)).json["balance"] == 77


def test_a_negative_adjustment_cannot_take_reserved_credits(client, db):
    # Given a shop with 10 credits, 2 of them reserved by a sending campaign
    shop_id, key = create_shop(client, "reserved.example", credits=10)
    import_contacts(client, key, ["+306912345678", "+306912345679"])
    campaign = client.simulate_post(
        "/campaigns",
        headers=auth(key),
        json={"name": "c", "text": "Sale today", "append_unsubscribe": False},
    ).json
    assert (
        client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key)).status_code
        == 202
    )

    # When an operator takes away more than is available, then exactly what is
    refused = adjust(client, shop_id, -9, "ticket-3")
    allowed = adjust(client, shop_id, -8, "ticket-4")

    # Then the first is 402 and changes nothing; the second leaves only the reserved credits
    assert_error(refused, 402)
    assert allowed.status_code == 201, allowed.text
    assert allowed.json == {"balance": 2, "reserved": 2, "available": 0}
    assert [kind for kind, _, _ in ledger(client, key)] == ["top-up", "adjustment"]


def test_an_adjustment_of_zero_or_for_a_missing_shop_is_refused(client, db):
    shop_id, _ = create_shop(client, "zero.example", credits=5)
    assert_error(adjust(client, shop_id, 0, "ticket-5"), 422, "amount")
    assert_error(adjust(client, 987654, 5, "ticket-6"), 404)
    assert_error(
        client.simulate_post(
            f"/admin/shops/{shop_id}/adjustments",
            headers=ADMIN,
            json={"amount": 5, "reference": "ticket-7"},
        ),
        422,
        "reason",
    )
    assert db.execute_sql("SELECT count(*) FROM credit_transaction").fetchone()[0] == 1


def test_a_reference_used_again_with_another_amount_is_refused_not_answered_as_done(client, db):
    # Given a shop topped up with 100 (its first reference) and refunded 5 ("ticket-9")
    shop_id, key = create_shop(client, "reused.example", credits=100)
    assert adjust(client, shop_id, 5, "ticket-9").status_code == 201

    # When an operator reuses each reference with another amount
    top_up = client.simulate_post(
        f"/admin/shops/{shop_id}/credits",
        headers=ADMIN,
        json={"amount": 500, "reference": "initial-reused.example"},
    )
    adjusted = adjust(client, shop_id, -7, "ticket-9")

    # Then both are 422 naming the reference and saying what it was used for; nothing changed
    assert_error(top_up, 422, "reference")
    assert "a top-up of 100 credits" in top_up.json["description"]
    assert top_up.json["description"].endswith("another top-up needs another reference")
    assert_error(adjusted, 422, "reference")
    assert "an adjustment of 5 credits" in adjusted.json["description"]
    assert adjusted.json["description"].endswith("another adjustment needs another reference")
    assert client.simulate_get("/credits", headers=auth(key)).json["balance"] == 105
    # And the same request again is still answered as done
    again = client.simulate_post(
        f"/admin/shops/{shop_id}/credits",
        headers=ADMIN,
        json={"amount": 100, "reference": "initial-reused.example"},
    )
    assert (again.status_code, again.json) == (201, {"balance": 105})
