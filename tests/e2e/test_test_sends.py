"""Test sends on the real processes (issue 11, the priority lane): while another shop's large
campaign holds a capped provider account and the send queue, a shop's test send reaches the
provider within about two seconds, charged exactly one message; a number that replied STOP is
refused with a 422 naming `phone`."""

from __future__ import annotations

import time
from datetime import datetime

import requests

from tests.conftest import DLR_WEBHOOK_SECRET
from tests.e2e.stack import wait_for

SENDER = "306999000002"
BULK = "Clearance: everything must go"


def test_a_test_send_overtakes_another_shops_backlog_and_is_charged_once(make_stack, db):
    # Given an account capped at 100 messages a second, batches of 25, and a big shop whose
    # 3,000-recipient campaign fills the send queue (30 s of sending at the cap)
    stack = make_stack(PROVIDER_RATE_LIMIT="100", SEND_BATCH_SIZE="25")
    stack.start_sim("--no-dlr")
    stack.start_web()
    stack.start_worker(processes=2, threads=4)
    stack.sim_config(inbound_url=f"{stack.web}/webhooks/mitto/inbound?token={DLR_WEBHOOK_SECRET}")
    big_shop, big_key = stack.create_shop("big.example", credits=10_000)
    stack.import_contacts(big_key, 3000)
    admin = stack.env["ADMIN_TOKEN"]
    shop = stack.call(
        "POST",
        "/admin/shops",
        admin,
        json={"domain": "t.example", "name": "T", "sender": SENDER, "quiet_hours": None},
    ).json()
    key = shop["api_key"]
    topped = stack.call(
        "POST", f"/admin/shops/{shop['id']}/credits", admin, json={"amount": 10, "reference": "i"}
    )
    assert topped.status_code == 201
    stack.import_contacts(key, 2, start=100_000)  # +306900100000 (N100000), +306900100001
    draft = stack.call(
        "POST",
        "/campaigns",
        key,
        json={"name": "p", "text": "Hi {first_name}, preview", "append_unsubscribe": False},
    ).json()
    big = stack.call(
        "POST", "/campaigns", big_key, json={"name": "c", "text": BULK, "append_unsubscribe": False}
    ).json()["id"]
    assert stack.call("POST", f"/campaigns/{big}/enqueue", big_key).status_code == 202
    wait_for(lambda: stack.progress(big_key, big)["sent"] >= 200, 30, "the big shop at its cap")

    # When the shop asks for a test send of its draft
    began = time.time()
    asked = stack.call(
        "POST", f"/campaigns/{draft['id']}/test", key, json={"phone": "+306900100000"}
    )
    assert asked.status_code == 202, asked.text
    test_id = asked.json()["id"]

    # Then the provider has it within about two seconds, personalised, while the big
    # campaign still sends
    got = wait_for(
        lambda: stack.sim_messages(reference=f"test-{test_id}")["messages"] or None,
        10,
        "the test send",
        interval=0.02,
    )
    arrived = datetime.fromisoformat(got[0]["received_at"].replace("Z", "+00:00")).timestamp()
    assert arrived - began < 2.0, arrived - began
    assert got[0]["text"] == "Hi N100000, preview" and len(got) == 1
    assert stack.progress(big_key, big)["status"] == "sending"

    # And it is charged exactly one credit, nothing held any more
    path = f"/campaigns/{draft['id']}/test/{test_id}"
    wait_for(lambda: stack.call("GET", path, key).json()["status"] == "sent", 10, "sent")
    credits = stack.call("GET", "/credits", key).json()
    assert (credits["balance"], credits["reserved"], credits["available"]) == (9, 0, 9)

    # When the other contact replies STOP
    stop = requests.post(
        f"{stack.sim}/_sim/inbound",
        timeout=30,
        json={"from": "306900100001", "to": SENDER, "text": "STOP"},
    )
    assert stop.status_code == 200, stop.text

    # Then a test send to that number is refused, naming the field, and costs nothing
    refused = stack.call(
        "POST", f"/campaigns/{draft['id']}/test", key, json={"phone": "+306900100001"}
    )
    assert refused.status_code == 422 and refused.json()["field"] == "phone", refused.text
    assert stack.call("GET", "/credits", key).json()["available"] == 9
    assert stack.sim_messages(summary="1", reference=f"test-{test_id + 1}")["count"] == 0

    # And the big campaign still sends everyone exactly once (the simulator also holds the
    # test send and the answer to STOP, so not assert_invariants' view of it)
    progress = stack.wait_finished(big_key, big, timeout=90)
    assert (progress["status"], progress["sent"]) == ("completed", 3000)
    assert stack.sim_messages(summary="1")["duplicate_messages"] == 0
    assert stack.sim_messages(summary="1")["count"] == 3000 + 1 + 1
