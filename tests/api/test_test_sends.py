"""`POST /campaigns/{id}/test` through the app: a test send queued on the priority queue with
its cost held, replayed by its Idempotency-Key (one message, one hold), refused with a 422
naming `phone` for an opted-out number, a 402 without credits, a 404 for another shop's
campaign; `GET /campaigns/{id}/test/{test_send_id}` reads it back."""

from __future__ import annotations

from tests.api.conftest import (
    assert_error,
    auth,
    create_campaign,
    create_shop,
    import_contacts,
)


def test_a_test_send_is_queued_on_the_priority_queue_once_per_idempotency_key(client, redis_client):
    # Given a shop with a contact and a draft campaign
    shop_id, key = create_shop(client, "tests.example", credits=5)
    import_contacts(client, key, ["+306912345678"])
    campaign = create_campaign(client, key, append_unsubscribe=False)
    path = f"/campaigns/{campaign['id']}/test"
    headers = {**auth(key), "Idempotency-Key": "test-1"}

    # When the merchant asks twice with one Idempotency-Key
    first = client.simulate_post(path, headers=headers, json={"phone": "+306912345678"})
    again = client.simulate_post(path, headers=headers, json={"phone": "+306912345678"})

    # Then one test send is queued, on the priority queue, and one credit held
    assert first.status_code == again.status_code == 202 and first.json == again.json
    assert first.json["status"] == "queued" and first.json["segments"] == 1
    assert redis_client.llen("dramatiq:sms-priority") == 1
    assert redis_client.llen("dramatiq:sms-send") == 0
    credits = client.simulate_get("/credits", headers=auth(key)).json
    assert (credits["balance"], credits["reserved"], credits["available"]) == (5, 1, 4)
    # And it reads back
    read = client.simulate_get(f"{path}/{first.json['id']}", headers=auth(key))
    assert read.status_code == 200 and read.json == first.json


def test_an_opted_out_number_is_refused_with_a_422_naming_the_phone(client, redis_client):
    # Given a contact who replied STOP (suppressed)
    _, key = create_shop(client, "stop.example", credits=5)
    import_contacts(client, key, ["+306912345678"])
    contact = client.simulate_get("/contacts", headers=auth(key)).json["items"][0]
    client.simulate_delete(f"/contacts/{contact['id']}", headers=auth(key))  # erased: suppressed
    campaign = create_campaign(client, key)

    # Then a test send to the number is refused, naming the field, and nothing is queued
    refused = client.simulate_post(
        f"/campaigns/{campaign['id']}/test", headers=auth(key), json={"phone": "+306912345678"}
    )
    body = assert_error(refused, 422, "phone")
    assert "suppressed" in body["description"]
    assert redis_client.llen("dramatiq:sms-priority") == 0


def test_bad_bodies_no_credits_and_another_shops_campaign(client):
    _, key = create_shop(client, "poor.example")
    _, other_key = create_shop(client, "other.example", credits=5)
    campaign = create_campaign(client, key)
    others = create_campaign(client, other_key)
    path = f"/campaigns/{campaign['id']}/test"
    assert_error(client.simulate_post(path, headers=auth(key), json={}), 422, "phone")
    assert_error(client.simulate_post(path, headers=auth(key), json={"phone": "x"}), 422, "phone")
    assert_error(
        client.simulate_post(path, headers=auth(key), json={"phone": "+306912345678", "x": 1}),
        422,
    )
    # A shop without credits: 402 (for a contact with consent: new shops require it)
    import_contacts(client, key, ["+306912345678"])
    assert_error(
        client.simulate_post(path, headers=auth(key), json={"phone": "+306912345678"}), 402
    )
    # Another shop's campaign is a 404
    assert_error(
        client.simulate_post(
            f"/campaigns/{others['id']}/test", headers=auth(key), json={"phone": "+306912345678"}
        ),
        404,
    )
