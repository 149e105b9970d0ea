"""Reservations follow the money on real processes, with a slow provider: a cancel keeps the
credits of the calls in flight until they resolve, so a campaign accepted for exactly what is
available is sent in full; calls throttled after a cancel are skipped, never left pending; and
an operator's refunds and adjustments over HTTP."""

from __future__ import annotations

from tests.e2e.invariants import assert_invariants, rows
from tests.e2e.stack import wait_for


def slow_stack(make_stack):
    """Batches of 10, 5 calls in flight at a time, each answered after 3 s."""
    stack = make_stack(SEND_BATCH_SIZE="10", SEND_CONCURRENCY="5")
    stack.start_sim("--latency-ms", "3000", "--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker(threads=1)
    return stack


def count(db, campaign_id: int, status: str) -> int:
    return rows(
        db,
        "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s AND status = %s",
        campaign_id,
        status,
    )[0][0]


def launch(stack, key: str, text: str, **fields) -> int:
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "c", "text": text, **fields}
    ).json()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert answer.status_code == 202, answer.text
    return campaign["id"]


def test_a_cancel_holds_the_credits_of_calls_in_flight_until_they_resolve(make_stack, db):
    # Given a slow personalised campaign whose first window (5 calls, the process's
    # SEND_CONCURRENCY) is in flight: 3 of its calls will be accepted and 2 throttled
    stack = slow_stack(make_stack)
    stack.sim_config(next=["ok"] * 3 + ["429"] * 2, retry_after_s=1)
    shop_id, key = stack.create_shop("inflight.example", credits=1000)
    stack.import_contacts(key, 100)
    campaign_id = launch(stack, key, "Hi {first_name}, 2 for 1 today")
    wait_for(lambda: count(db, campaign_id, "sending") == 5, 30, "the first window's claims")

    # When it is cancelled with those calls in flight
    assert stack.call("POST", f"/campaigns/{campaign_id}/cancel", key).status_code == 200

    # Then the 95 never sent are skipped at once, and the credits of the 5 in flight stay
    # reserved: available does not count what those calls may still take
    progress = stack.progress(key, campaign_id)
    held = progress["credits"]["held"]
    assert (progress["status"], progress["skipped"], progress["sending"]) == ("cancelled", 95, 5)
    assert held >= 5 and progress["credits"]["reservation"] == "active"
    assert stack.call("GET", "/credits", key).json() == {
        "balance": 1000,
        "reserved": held,
        "available": 1000 - held,
    }

    # ...and once the calls resolve, the throttled ones are skipped (none left pending), the
    # accepted ones debited, and the reservation is released
    wait_for(lambda: count(db, campaign_id, "sending") == 0, 30, "the calls in flight")
    wait_for(
        lambda: stack.progress(key, campaign_id)["credits"]["reservation"] == "released",
        30,
        "the reservation to be released",
    )
    progress = stack.progress(key, campaign_id)
    assert (progress["pending"], progress["sent"], progress["skipped"]) == (0, 3, 97)
    assert stack.call("GET", "/credits", key).json() == {
        "balance": 997,
        "reserved": 0,
        "available": 997,
    }
    assert_invariants(db, stack, shop_id, campaign_id)


def test_a_campaign_for_exactly_what_a_cancel_left_available_is_sent_in_full(make_stack, db):
    # Given a cancelled campaign whose first batch of 10 is still in its provider call
    stack = slow_stack(make_stack)
    shop_id, key = stack.create_shop("exact.example", credits=150)
    stack.import_contacts(key, 300)
    contacts = [
        cid for (cid,) in rows(db, "SELECT id FROM contact WHERE shop_id = %s ORDER BY id", shop_id)
    ]
    text = {"text": "Flash sale today", "append_unsubscribe": False}  # one segment each
    cancelled = launch(stack, key, contact_ids=contacts[:100], **text)
    wait_for(lambda: count(db, cancelled, "sending") == 10, 30, "the first batch's claims")
    assert stack.call("POST", f"/campaigns/{cancelled}/cancel", key).status_code == 200

    # When a second campaign is enqueued for exactly the credits then available (accepted)
    available = stack.call("GET", "/credits", key).json()["available"]
    second = launch(stack, key, contact_ids=contacts[100 : 100 + available], **text)
    stack.sim_config(latency_ms=0)

    # Then every one of its recipients is sent, none failed for lack of credits, and the
    # first campaign's calls in flight were debited too
    progress = stack.wait_finished(key, second, timeout=90)
    assert (progress["status"], progress["sent"], progress["failed"]) == ("completed", 140, 0)
    wait_for(
        lambda: stack.progress(key, cancelled)["credits"]["reservation"] == "released",
        30,
        "the cancelled campaign's reservation to be released",
    )
    assert stack.progress(key, cancelled)["sent"] == 10
    assert available == 140  # 150 less the 10 credits the calls in flight held
    assert stack.call("GET", "/credits", key).json() == {
        "balance": 0,
        "reserved": 0,
        "available": 0,
    }
    assert_invariants(db, stack, shop_id, cancelled, others=(second,))
    assert_invariants(db, stack, shop_id, second, others=(cancelled,))


def test_an_operator_refunds_and_adjusts_credits_over_http(stack, db):
    # Given a shop with 100 credits
    shop_id, key = stack.create_shop("adjust.example", credits=100)
    admin = stack.env["ADMIN_TOKEN"]
    path = f"/admin/shops/{shop_id}/adjustments"

    # When an operator refunds 25 (sent twice), takes away 40, and tries to take away 500
    refund = {"amount": 25, "reason": "undelivered messages", "reference": "ticket-1"}
    first = stack.call("POST", path, admin, json=refund)
    again = stack.call("POST", path, admin, json=refund)
    taken = stack.call(
        "POST", path, admin, json={"amount": -40, "reason": "goodwill reversed", "reference": "t-2"}
    )
    refused = stack.call(
        "POST", path, admin, json={"amount": -500, "reason": "error", "reference": "ticket-3"}
    )
    by_shop = stack.call("POST", path, key, json=refund)

    # Then the refund counts once, the adjustment is applied, the overdraw refused with 402,
    # and a shop's key cannot do any of it
    assert (first.status_code, again.status_code, taken.status_code) == (201, 201, 201)
    assert first.json()["balance"] == again.json()["balance"] == 125
    assert taken.json() == {"balance": 85, "reserved": 0, "available": 85}
    assert refused.status_code == 402 and refused.json()["title"] == "Insufficient credits"
    assert by_shop.status_code == 401
    ledger = stack.call("GET", "/credits/transactions", key).json()["items"]
    assert [(row["kind"], row["amount"]) for row in ledger] == [
        ("top-up", 100),
        ("refund", 25),
        ("adjustment", -40),
    ]
    assert rows(db, "SELECT credit_balance FROM shop WHERE id = %s", shop_id) == [(85,)]
