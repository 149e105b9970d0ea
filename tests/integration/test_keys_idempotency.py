"""API keys (issue, list, revoke) and idempotency keys, on real PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from service import api_keys, audit, idempotency, shops
from service.errors import NotFound


def test_a_revoked_key_stops_authenticating_and_others_keep_working(db):
    # Given a shop with its first key and a second one issued later
    shop, first = shops.create_shop("keys.example", "Keys")
    record, second = api_keys.issue_key(shop.id, audit.ADMIN)
    assert api_keys.authenticate(first).shop_id == shop.id
    assert api_keys.authenticate(second) == api_keys.Principal(shop.id, record.id)

    # When the second key is revoked (twice: idempotent)
    revoked_at = api_keys.revoke_key(shop.id, record.id, audit.ADMIN)
    assert api_keys.revoke_key(shop.id, record.id, audit.ADMIN) == revoked_at

    # Then it no longer authenticates, the first still does, and the list shows both
    assert api_keys.authenticate(second) is None
    assert api_keys.authenticate(first).shop_id == shop.id
    listed = api_keys.list_keys(shop.id)
    assert [k["id"] for k in listed] == [record.id, listed[1]["id"]]
    assert listed[0]["revoked_at"] == revoked_at and listed[1]["revoked_at"] is None
    assert listed[1]["last_used_at"] is not None
    assert all(
        set(k) == {"id", "prefix", "created_at", "last_used_at", "revoked_at"} for k in listed
    )


def test_another_shops_key_id_cannot_be_revoked(db):
    # Given two shops
    shop_a, _ = shops.create_shop("a.example", "A")
    shop_b, key_b = shops.create_shop("b.example", "B")
    key_id_b = api_keys.authenticate(key_b).key_id

    # When shop A's admin path names shop B's key: not found, and B's key still works
    with pytest.raises(NotFound):
        api_keys.revoke_key(shop_a.id, key_id_b, audit.ADMIN)
    assert api_keys.authenticate(key_b).shop_id == shop_b.id


def test_same_key_same_body_replays_other_body_is_refused(db):
    shop, _ = shops.create_shop("idem.example", "Idem")
    fp = idempotency.fingerprint("POST", "/campaigns", b'{"name": "x"}')

    # Given a first request that claimed the key and stored its answer
    assert idempotency.begin(shop.id, "k-1", fp) is None
    answer = idempotency.StoredAnswer(201, b'{"id": 7}', "application/json")
    idempotency.finish(shop.id, "k-1", answer)

    # Then the same request replays it, and another body with the same key is refused
    assert idempotency.begin(shop.id, "k-1", fp) == answer
    other = idempotency.fingerprint("POST", "/campaigns", b'{"name": "y"}')
    with pytest.raises(idempotency.KeyReused):
        idempotency.begin(shop.id, "k-1", other)


def test_a_key_in_flight_is_409_and_an_abandoned_one_can_be_retried(db):
    shop, _ = shops.create_shop("flight.example", "Flight")
    fp = idempotency.fingerprint("POST", "/campaigns", b"{}")
    assert idempotency.begin(shop.id, "k", fp) is None
    with pytest.raises(idempotency.KeyInFlight):
        idempotency.begin(shop.id, "k", fp)
    # When the first request failed with a 5xx, its key is given back
    idempotency.abandon(shop.id, "k")
    assert idempotency.begin(shop.id, "k", fp) is None


def test_keys_are_per_shop(db):
    shop_a, _ = shops.create_shop("pa.example", "A")
    shop_b, _ = shops.create_shop("pb.example", "B")
    fp_a = idempotency.fingerprint("POST", "/campaigns", b"a")
    fp_b = idempotency.fingerprint("POST", "/campaigns", b"b")
    assert idempotency.begin(shop_a.id, "same", fp_a) is None
    assert idempotency.begin(shop_b.id, "same", fp_b) is None


def test_concurrent_duplicates_run_once(db):
    # Given 8 threads sending the same key at once
    shop, _ = shops.create_shop("race.example", "Race")
    fp = idempotency.fingerprint("POST", "/campaigns", b"{}")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            outcomes.append("run" if idempotency.begin(shop.id, "dup", fp) is None else "replay")
        except idempotency.KeyInFlight:
            outcomes.append("409")
        finally:
            db.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one runs and the others are told it is in flight
    assert sorted(outcomes) == ["409"] * 7 + ["run"]


def test_expired_keys_are_forgotten(db):
    shop, _ = shops.create_shop("old.example", "Old")
    fp = idempotency.fingerprint("POST", "/x", b"")
    assert idempotency.begin(shop.id, "old", fp) is None
    idempotency.finish(shop.id, "old", idempotency.StoredAnswer(200, b"{}", None))
    db.execute_sql("UPDATE idempotency_key SET created_at = now() - interval '25 hours'")
    # The same key with another body is a new request once the first has expired
    assert idempotency.begin(shop.id, "old", idempotency.fingerprint("POST", "/x", b"new")) is None
