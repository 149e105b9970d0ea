"""API keys over HTTP (issue, list, revoke), the per-shop rate limit, idempotency keys."""

from __future__ import annotations

import dataclasses
import time

import pytest

from api.app import create_app
from service import idempotency
from service.infra.api_rate_limit import ShopConcurrency, ShopLimits
from tests.api.conftest import (
    ADMIN,
    CheckedClient,
    assert_error,
    auth,
    create_campaign,
    create_shop,
    import_contacts,
)


def test_an_issued_key_works_is_listed_without_secrets_and_stops_at_once_when_revoked(client):
    # Given a shop and a second key issued by the admin
    shop_id, first = create_shop(client, "keys.example")
    issued = client.simulate_post(f"/admin/shops/{shop_id}/keys", headers=ADMIN)
    assert issued.status_code == 201
    second = issued.json["api_key"]
    assert second.startswith(issued.json["prefix"]) and second != first
    assert client.simulate_get("/credits", headers=auth(second)).status_code == 200

    # When the admin lists the keys: prefixes and times, never a key or its hash
    listed = client.simulate_get(f"/admin/shops/{shop_id}/keys", headers=ADMIN).json["items"]
    assert [item["id"] for item in listed][0] == issued.json["id"] and len(listed) == 2
    assert first not in str(listed) and second not in str(listed)
    assert all(
        set(item) == {"id", "prefix", "created_at", "last_used_at", "revoked_at"} for item in listed
    )

    # When the second key is revoked
    revoked = client.simulate_delete(
        f"/admin/shops/{shop_id}/keys/{issued.json['id']}", headers=ADMIN
    )
    assert revoked.status_code == 200 and revoked.json["revoked_at"]

    # Then it is refused on the very next request, and the first key still works
    assert_error(client.simulate_get("/credits", headers=auth(second)), 401)
    assert client.simulate_get("/credits", headers=auth(first)).status_code == 200


def test_key_routes_need_the_admin_token_and_hide_other_shops(client):
    shop_a, key_a = create_shop(client, "ka.example")
    shop_b, _ = create_shop(client, "kb.example")
    key_b_id = client.simulate_get(f"/admin/shops/{shop_b}/keys", headers=ADMIN).json["items"][0][
        "id"
    ]
    # A shop's own key cannot manage keys
    assert_error(client.simulate_post(f"/admin/shops/{shop_a}/keys", headers=auth(key_a)), 401)
    assert_error(client.simulate_get(f"/admin/shops/{shop_a}/keys", headers=auth(key_a)), 401)
    # Shop B's key id under shop A is not found, and a missing shop is not found
    assert_error(
        client.simulate_delete(f"/admin/shops/{shop_a}/keys/{key_b_id}", headers=ADMIN), 404
    )
    assert_error(client.simulate_post("/admin/shops/999999/keys", headers=ADMIN), 404)


@pytest.fixture
def limited(settings, redis_client, db):
    """The app with a low per-shop limit: 5 requests a second."""
    return CheckedClient(
        create_app(dataclasses.replace(settings, api_rate_limit="5/second"), redis_client)
    )


def test_a_shop_over_its_limit_gets_429_with_retry_after_and_another_shop_does_not(limited):
    # Given two shops under a limit of 5 requests a second
    _, key_a = create_shop(limited, "ra.example")
    _, key_b = create_shop(limited, "rb.example")

    # When shop A makes 6 requests at once
    answers = [limited.simulate_get("/credits", headers=auth(key_a)) for _ in range(6)]

    # Then the sixth is 429 naming the limit, with Retry-After; shop B is served
    assert [a.status_code for a in answers[:5]] == [200] * 5
    body = assert_error(answers[5], 429)
    assert "5 requests per 1 second" in body["description"]
    assert int(answers[5].headers["retry-after"]) >= 1
    assert limited.simulate_get("/credits", headers=auth(key_b)).status_code == 200
    # And the admin API is not counted against any shop
    assert limited.simulate_get("/admin/shops/1/keys", headers=ADMIN).status_code in (200, 404)


def test_a_refused_request_does_no_work(limited, db):
    # Given a shop that used its budget
    _, key = create_shop(limited, "rc.example")
    for _ in range(5):
        limited.simulate_get("/credits", headers=auth(key))
    # When it posts contacts
    answer = limited.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": "+306912345678"}]}
    )
    # Then nothing was imported
    assert_error(answer, 429)
    assert db.execute_sql("SELECT count(*) FROM contact").fetchone()[0] == 0


def test_a_known_key_over_its_budget_is_refused_before_any_database_work(limited, monkeypatch):
    # Given a shop whose key has been used (Redis knows its shop) up to its budget
    _, key = create_shop(limited, "rd.example")
    for _ in range(5):
        assert limited.simulate_get("/credits", headers=auth(key)).status_code == 200

    # When PostgreSQL would fail any key lookup from now on
    def no_database(token):
        raise AssertionError("the key was looked up in PostgreSQL")

    monkeypatch.setattr("service.api_keys.authenticate", no_database)

    # Then its next request is still a 429 with Retry-After: decided in Redis alone
    refused = limited.simulate_get("/credits", headers=auth(key))
    assert_error(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1


def test_a_revoked_key_is_refused_and_stops_counting_against_its_shop(settings, redis_client, db):
    # Given a shop with two keys under 5 requests a minute, the second used once
    client = CheckedClient(
        create_app(dataclasses.replace(settings, api_rate_limit="5/minute"), redis_client)
    )
    shop_id, first = create_shop(client, "rv.example")
    issued = client.simulate_post(f"/admin/shops/{shop_id}/keys", headers=ADMIN).json
    second, second_id = issued["api_key"], issued["id"]
    assert client.simulate_get("/credits", headers=auth(second)).status_code == 200

    # When the second is revoked and then sent 10 times
    revoke = client.simulate_delete(f"/admin/shops/{shop_id}/keys/{second_id}", headers=ADMIN)
    assert revoke.status_code == 200
    after = [client.simulate_get("/credits", headers=auth(second)) for _ in range(10)]

    # Then each is 401 (PostgreSQL decides for every admitted request), and only the first
    # counted against the shop: its Redis mapping is forgotten at that first refusal
    assert [answer.status_code for answer in after] == [401] * 10
    statuses = [client.simulate_get("/credits", headers=auth(first)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_a_retried_create_replays_the_first_answer_and_creates_nothing_twice(client, db):
    # Given a shop with contacts
    _, key = create_shop(client, "idem.example", credits=100)
    import_contacts(client, key, ["+306912345678"])
    headers = {**auth(key), "Idempotency-Key": "create-1"}
    body = {"name": "Spring", "text": "Hi!"}

    # When the same POST is sent twice with the same key
    first = client.simulate_post("/campaigns", headers=headers, json=body)
    second = client.simulate_post("/campaigns", headers=headers, json=body)

    # Then the second is the first answer again, and there is one campaign
    assert first.status_code == second.status_code == 201
    assert second.json == first.json and second.headers.get("idempotent-replayed") == "true"
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 1

    # And another body with the same key is refused, naming the header
    other = client.simulate_post(
        "/campaigns", headers=headers, json={"name": "Other", "text": "Hi!"}
    )
    assert_error(other, 422, "Idempotency-Key")


def test_the_same_fields_in_another_order_or_spacing_are_the_same_request(client, db):
    # Given a campaign created under key "c", its body written one way
    _, key = create_shop(client, "idorder.example", credits=100)
    import_contacts(client, key, ["+306912345678"])
    headers = {**auth(key), "Idempotency-Key": "c", "Content-Type": "application/json"}
    first = client.simulate_post(
        "/campaigns", headers=headers, body='{"name": "Spring", "text": "Hi!"}'
    )
    # When a retry sends the same fields in another order and spacing (a client library
    # serialising its retry again)
    again = client.simulate_post(
        "/campaigns", headers=headers, body='{ "text":"Hi!",\n  "name":"Spring" }'
    )
    # Then it is the first answer again (it was refused 422 as another body), one campaign
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers.get("idempotent-replayed") == "true"
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("first_type", "again_type"),
    [
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        (None, "application/json"),
        ("application/json; charset=utf-8", "application/merge-patch+json"),
    ],
)
def test_a_json_body_under_any_label_read_as_json_is_compared_by_its_content(
    client, db, first_type, again_type
):
    # Given a campaign created under key "j", its body labelled as clients label JSON
    _, key = create_shop(client, "idlabel.example", credits=100)
    headers = {**auth(key), "Idempotency-Key": "j"}

    def post(body: str, content_type: str | None):
        labelled = {**headers, "Content-Type": content_type} if content_type else headers
        return client.simulate_post("/campaigns", headers=labelled, body=body)

    first = post('{"name": "Spring", "text": "Hi!"}', first_type)
    # When the retry sends the same fields in another order, maybe labelled otherwise
    again = post('{"text": "Hi!", "name": "Spring"}', again_type)
    # Then it is the first answer again (a probe: 422 "reused" under text/plain, and between
    # no label and application/json), one campaign
    assert first.status_code == 201, first.text
    assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 1


def test_a_csv_import_sent_again_with_another_charset_is_another_request(client, db):
    # Given a CSV import read as windows-1252 under key "cs" (its UTF-8 name garbled)
    _, key = create_shop(client, "idcharset.example")
    headers = {**auth(key), "Idempotency-Key": "cs"}
    body = "phone,first_name\n+306944400001,Zoé\n".encode()
    first = client.simulate_post(
        "/contacts", headers=headers, body=body, content_type="text/csv; charset=windows-1252"
    )
    assert first.status_code == 200, first.text
    # When the client corrects the charset and retries with the same key
    again = client.simulate_post(
        "/contacts", headers=headers, body=body, content_type="text/csv; charset=utf-8"
    )
    # Then it is not replayed as the garbled import's answer: refused, naming the key
    assert_error(again, 422, "Idempotency-Key")


def test_a_csv_import_refused_for_its_encoding_is_not_replayed_once_its_charset_is_named(
    client, db
):
    # Given a windows-1252 file sent as bare `text/csv` under key "bare": refused, the
    # answer telling the client to name its encoding
    _, key = create_shop(client, "idbare.example")
    headers = {**auth(key), "Idempotency-Key": "bare"}
    body = "phone,first_name\n+306944400002,Zoë\n".encode("cp1252")
    first = client.simulate_post("/contacts", headers=headers, body=body, content_type="text/csv")
    assert first.status_code == 400 and "charset=windows-1252" in first.json["description"]
    # When the client does as told and retries with the same key
    again = client.simulate_post(
        "/contacts", headers=headers, body=body, content_type="text/csv; charset=windows-1252"
    )
    # Then it is another request (before: the first refusal, replayed for 24 h)
    assert again.headers.get("idempotent-replayed") is None
    assert_error(again, 422, "Idempotency-Key")


def test_a_bodiless_post_retried_with_an_empty_object_is_the_same_request(client, db):
    # Given a campaign enqueued with no body under key "e"
    _, key = create_shop(client, "idempty.example", credits=100)
    import_contacts(client, key, ["+306912345678"])
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "S", "text": "Hi!"}
    ).json["id"]
    headers = {**auth(key), "Idempotency-Key": "e", "Content-Type": "application/json"}
    first = client.simulate_post(f"/campaigns/{campaign}/enqueue", headers=headers)
    # When the retry sends `{}` (or `null`), which the route takes as no body
    again = [
        client.simulate_post(f"/campaigns/{campaign}/enqueue", headers=headers, body=body)
        for body in ("{}", "null")
    ]
    # Then each is the first answer again (it was 422: "used for a different request")
    assert first.status_code == 202
    assert [(a.status_code, a.headers.get("idempotent-replayed")) for a in again] == [
        (202, "true"),
        (202, "true"),
    ]


def test_the_same_key_and_body_with_another_query_or_media_type_is_another_request(client, db):
    # Given a CSV import of a national number read as Greek, under key "imp"
    _, key = create_shop(client, "idq.example")
    headers = {**auth(key), "Idempotency-Key": "imp"}

    def post(country: str, content_type: str = "text/csv"):
        return client.simulate_post(
            "/contacts",
            headers=headers,
            body="phone\n6900000555\n",
            content_type=content_type,
            params={"default_country": country},
        )

    first = post("GR")
    assert first.status_code == 200 and first.json["created"] == 1, first.text

    # When the same body is sent with the same key but another default country, or as JSON
    cyprus, as_json = post("CY"), post("GR", "application/json")

    # Then neither is replayed as the Greek import's answer: both are refused, naming the key
    # (the Cypriot import was answered "created 1" without running before)
    assert_error(cyprus, 422, "Idempotency-Key")
    assert_error(as_json, 422, "Idempotency-Key")
    assert db.execute_sql("SELECT count(*) FROM contact").fetchone()[0] == 1


def test_a_retried_enqueue_replays_202_instead_of_409(client, db):
    _, key = create_shop(client, "enq.example", credits=100)
    import_contacts(client, key, ["+306912345678"])
    campaign = create_campaign(client, key)
    headers = {**auth(key), "Idempotency-Key": "enqueue-1"}
    first = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=headers)
    second = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=headers)
    assert first.status_code == second.status_code == 202 and first.json == second.json
    # Without the key a second enqueue is the state error it always was
    assert_error(
        client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key)), 409
    )


def test_a_key_still_in_flight_is_409_and_keys_are_per_shop(client):
    shop_a, key_a = create_shop(client, "fa.example")
    _, key_b = create_shop(client, "fb.example")
    body = b'{"name": "Spring", "text": "Hi!"}'
    # Given shop A's request with key "k" still running
    idempotency.begin(
        shop_a, "k", idempotency.fingerprint("POST", "/campaigns", body, "application/json")
    )
    # Then the same request is 409, while shop B may use the same key for its own request
    busy = client.simulate_post(
        "/campaigns",
        headers={**auth(key_a), "Idempotency-Key": "k"},
        body=body,
        content_type="application/json",
    )
    assert_error(busy, 409)
    own = client.simulate_post(
        "/campaigns",
        headers={**auth(key_b), "Idempotency-Key": "k"},
        body=body,
        content_type="application/json",
    )
    assert own.status_code == 201


def test_an_invalid_idempotency_key_is_422_naming_the_header(client):
    _, key = create_shop(client, "bad-key.example")
    answer = client.simulate_post(
        "/campaigns",
        headers={**auth(key), "Idempotency-Key": "x" * 300},
        json={"name": "Spring", "text": "Hi!"},
    )
    assert_error(answer, 422, "Idempotency-Key")


def test_a_shop_with_its_cap_of_requests_in_flight_gets_429_until_one_is_answered(
    settings, redis_client, db
):
    # Given a cap of 2 requests in flight per shop, and shop A with 2 still running
    app = create_app(dataclasses.replace(settings, api_shop_concurrency=2), redis_client)
    client = CheckedClient(app)
    shop_a, key_a = create_shop(client, "ca.example")
    _, key_b = create_shop(client, "cb.example")
    cap = ShopConcurrency(redis_client, 2)
    assert cap.acquire(shop_a, "running-1") and cap.acquire(shop_a, "running-2")

    # Then a third request of shop A is refused, and shop B is served
    refused = client.simulate_get("/credits", headers=auth(key_a))
    assert "2 requests in flight" in assert_error(refused, 429)["description"]
    assert refused.headers["retry-after"] == "1"
    assert client.simulate_get("/credits", headers=auth(key_b)).status_code == 200

    # When one of them is answered, shop A is served again, and its answered requests
    # release their place (a series of requests never locks the shop out)
    cap.release(shop_a, "running-1")
    assert [client.simulate_get("/credits", headers=auth(key_a)).status_code for _ in range(5)] == [
        200
    ] * 5


def test_a_request_whose_process_died_stops_counting_after_a_while(redis_client, db):
    # Given a shop whose only allowed slot is held by a request that will never be released
    cap = ShopConcurrency(redis_client, 1, forget_after_ms=200)
    assert cap.acquire(7, "died-mid-request")
    assert not cap.acquire(7, "next")
    # Then after forget_after_ms the slot is free again
    time.sleep(0.3)
    assert cap.acquire(7, "next")


def test_a_shop_with_an_import_running_gets_429_naming_the_heavy_cap_for_another(
    settings, redis_client, db
):
    # Given the default of one heavy request per shop in flight, and shop A with an import
    # running (in another web process)
    app = create_app(dataclasses.replace(settings, api_shop_heavy_concurrency=1), redis_client)
    client = CheckedClient(app)
    shop_a, key_a = create_shop(client, "ha.example")
    _, key_b = create_shop(client, "hb.example")
    running = ShopLimits(redis_client, None, 0, heavy_cap=1)
    assert running.admit("import-elsewhere", shop_id=shop_a, heavy=True).refused is None

    # Then shop A's next import is refused whole, naming the limit, before anything is read
    rows = {"contacts": [{"phone": "+306912345001"}]}
    refused = client.simulate_post("/contacts", headers=auth(key_a), json=rows)
    description = assert_error(refused, 429)["description"]
    assert "1 heavy request" in description and "API_SHOP_HEAVY_CONCURRENCY" in description
    assert refused.headers["retry-after"] == "1"
    assert client.simulate_get("/contacts", headers=auth(key_a)).json["items"] == []

    # And shop A's light requests and shop B's imports are served meanwhile
    assert client.simulate_get("/credits", headers=auth(key_a)).status_code == 200
    assert client.simulate_post("/contacts", headers=auth(key_b), json=rows).status_code == 200

    # And a campaign body over HEAVY_BODY (a long list of contact ids) is heavy too, and one
    # of a normal size is not
    from api.access import HEAVY_BODY

    long_list = {"name": "n", "text": "t", "contact_ids": [1] * HEAVY_BODY}
    refused = client.simulate_post("/campaigns", headers=auth(key_a), json=long_list)
    assert "1 heavy request" in assert_error(refused, 429)["description"]
    short = client.simulate_post("/campaigns", headers=auth(key_a), json={"name": "n", "text": "t"})
    assert short.status_code == 201

    # When the running import is answered, shop A imports again, one import after another
    running.release(shop_a, "import-elsewhere")
    for _ in range(3):
        assert client.simulate_post("/contacts", headers=auth(key_a), json=rows).status_code == 200


def test_a_key_stored_by_the_bare_media_type_before_the_deploy_is_still_replayed(client):
    # Given a bodiless enqueue's key stored as the version before body_label fingerprinted
    # it (no Content-Type: the label "")
    shop_id, key = create_shop(client, "legacy-fp.example", credits=100)
    campaign = create_campaign(client, key)
    target = f"/campaigns/{campaign['id']}/enqueue"
    idempotency.begin(shop_id, "old", idempotency.fingerprint("POST", target, b"", ""))
    idempotency.finish(
        shop_id, "old", idempotency.StoredAnswer(202, b'{"was": 1}', "application/json")
    )
    # When the client retries it after the deploy, Then it is the first answer again, not 422
    again = client.simulate_post(target, headers={**auth(key), "Idempotency-Key": "old"})
    assert again.status_code == 202 and again.json == {"was": 1}
    assert again.headers.get("idempotent-replayed") == "true"


def test_refused_connections_are_held_for_between_half_the_hold_and_all_of_it(
    settings, redis_client, db, monkeypatch
):
    # Given a rate of 1 request a second and a hold of 1 s, the holds asked for recorded
    from api import middleware

    holds: list[float] = []
    monkeypatch.setattr(middleware, "hold_connection", holds.append)
    app = create_app(
        dataclasses.replace(settings, api_rate_limit="1/second", api_refusal_hold_ms=1000),
        redis_client,
    )
    client = CheckedClient(app)
    _, key = create_shop(client, "held.example")
    # When the shop is refused 40 times
    while len(holds) < 40:
        client.simulate_get("/credits", headers=auth(key))
    # Then each refusal's connection is held between 0.5 and 1 s, not all alike: refusals that
    # come together do not come back together
    assert all(0.5 <= hold <= 1.0 for hold in holds), holds
    assert max(holds) - min(holds) > 0.2, holds
