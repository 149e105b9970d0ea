"""Quiet hours on the real processes (SPEC 11): a campaign crossing the start of quiet hours
sends nothing inside them, waits without a sleeping thread, and sends everything once they
end, with exact credits. Time is injected, never slept through: every process reads a clock
offset from Redis (TEST_CLOCK_OFFSET_KEY, a test-only hook) that the test moves. And the
frequency cap with two campaigns sending to the same contacts at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from service.infra.clock import set_offset
from tests.conftest import ADMIN_TOKEN
from tests.e2e.invariants import assert_invariants, rows
from tests.e2e.stack import wait_for

CLOCK_KEY = "astronote:test:clock_offset_ms"
RECIPIENTS = 20
# Athens is UTC+2 in January: 20:00, 21:00 (quiet hours start) and 08:00 next morning.
EVENING = datetime(2099, 1, 15, 18, 0, tzinfo=UTC)
NINE_PM = datetime(2099, 1, 15, 19, 0, tzinfo=UTC)
MORNING = datetime(2099, 1, 16, 6, 0, tzinfo=UTC)


# Waiting batches come back as delayed messages: Redis's and RabbitMQ's delays differ.
@pytest.mark.brokers("redis", "rabbitmq")
def test_a_campaign_crossing_the_start_of_quiet_hours_waits_for_the_morning(
    make_stack, db, redis_client
):
    # Given the stack on a clock the test moves, a provider slow enough (150 ms a message,
    # one at a time) for the campaign to last past 21:00, and a shop in Athens with quiet
    # hours 21:00-08:00 whose contacts are Greek numbers; it is 20:00 in Athens
    stack = make_stack(
        TEST_CLOCK_OFFSET_KEY=CLOCK_KEY,
        QUIET_HOURS_RECHECK_MS="300",
        SEND_BATCH_SIZE="5",
        RECONCILE_INTERVAL_MS="300",
        BATCH_STALE_AFTER_MS="500",
    )
    set_offset(redis_client, CLOCK_KEY, EVENING)
    stack.start_sim("--dlr-delay-ms", "50", "--latency-ms", "150")
    stack.start_web()
    stack.start_worker(SEND_CONCURRENCY="1")
    stack.start_clock()
    shop = stack.call(
        "POST",
        "/admin/shops",
        ADMIN_TOKEN,
        json={
            "domain": "quiet.example",
            "name": "Quiet",
            "timezone": "Europe/Athens",
            "quiet_hours": {"start": "21:00", "end": "08:00"},
        },
    ).json()
    shop_id, key = shop["id"], shop["api_key"]
    assert stack.call(
        "POST",
        f"/admin/shops/{shop_id}/credits",
        ADMIN_TOKEN,
        json={"amount": 1000, "reference": "initial"},
    ).ok
    stack.import_contacts(key, RECIPIENTS)
    campaign = stack.call("POST", "/campaigns", key, json={"name": "c", "text": "Sale at 9"})
    campaign_id = campaign.json()["id"]
    assert stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key).status_code == 202

    # When 21:00 comes in Athens while the campaign is sending
    wait_for(lambda: len(stack.sim_messages()["messages"]) >= 3, 20, "the first messages")
    set_offset(redis_client, CLOCK_KEY, NINE_PM)
    at_nine = len(stack.sim_messages()["messages"])

    # Then at most the one call already in flight lands, and nothing more for seconds (many
    # redeliveries of the waiting batches and runs of the reconciler)
    time.sleep(0.6)  # the test waits, not a worker: the call in flight lands
    sent_by_nine = len(stack.sim_messages()["messages"])
    assert sent_by_nine <= at_nine + 1
    assert sent_by_nine < RECIPIENTS, "the campaign ended before 21:00: nothing was tested"
    time.sleep(2)
    assert len(stack.sim_messages()["messages"]) == sent_by_nine
    # and the rest waits, shown by progress, the campaign still sending
    progress = stack.progress(key, campaign_id)
    assert progress["status"] == "sending"
    assert progress["pending"] == RECIPIENTS - sent_by_nine
    assert progress["quiet_hours"]["waiting"] == RECIPIENTS - sent_by_nine
    assert datetime.fromisoformat(progress["quiet_hours"]["until"]) == MORNING
    assert progress["credits"]["reservation"] == "active"

    # When it is 08:00 in Athens
    set_offset(redis_client, CLOCK_KEY, MORNING)

    # Then everything is sent, once each, and the credits are exact
    finished = stack.wait_finished(key, campaign_id, 30)
    assert finished["status"] == "completed"
    assert len(stack.sim_messages()["messages"]) == RECIPIENTS
    counts = assert_invariants(db, stack, shop_id, campaign_id)
    assert counts == {"sent": RECIPIENTS}
    (balance, debited) = rows(
        db,
        "SELECT s.credit_balance, (SELECT -sum(amount) FROM credit_transaction"
        " WHERE campaign_id = %s AND kind = 'debit') FROM shop s WHERE s.id = %s",
        campaign_id,
        shop_id,
    )[0]
    assert balance == 1000 - debited and debited >= RECIPIENTS
    assert finished["credits"]["consumed"] == debited
    assert finished["quiet_hours"]["waiting"] == 0


def test_two_campaigns_at_once_under_a_cap_of_one_send_each_contact_one_message(make_stack, db):
    # Given a shop capped at one message per contact a day, 30 contacts, a slow provider and
    # a worker sending both campaigns' one batch each at once, a call or two per window, so
    # both go through the same contacts in the same order at the same time
    stack = make_stack(SEND_BATCH_SIZE="30")
    stack.start_sim("--latency-ms", "100")
    stack.start_web()
    stack.start_worker(threads=2, SEND_CONCURRENCY="2")
    shop_id, key = stack.create_shop("capped.example", 1000)
    assert stack.call("PATCH", f"/admin/shops/{shop_id}", ADMIN_TOKEN, json={"frequency_cap": 1}).ok
    stack.import_contacts(key, 30)

    # When two personalised campaigns to all of them are launched one right after the other
    ids = []
    for text in ("First {first_name}", "Second {first_name}"):
        created = stack.call("POST", "/campaigns", key, json={"name": text, "text": text})
        ids.append(created.json()["id"])
    for campaign_id in ids:
        assert stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key).status_code == 202

    # Then each contact got one message in all, and what the second skipped the first sent
    finished = [stack.wait_finished(key, campaign_id, 60) for campaign_id in ids]
    assert [f["status"] for f in finished] == ["completed", "completed"]
    messages = stack.sim_messages()["messages"]
    assert len(messages) == 30 and len({m["to"] for m in messages}) == 30
    counts = dict(
        rows(
            db,
            "SELECT coalesce(error, status), count(*) FROM campaign_recipient"
            " WHERE shop_id = %s GROUP BY 1",
            shop_id,
        )
    )
    assert counts == {"sent": 30, "frequency_cap": 30}
    debited = rows(
        db,
        "SELECT -sum(amount) FROM credit_transaction WHERE kind = 'debit' AND shop_id = %s",
        shop_id,
    )[0][0]
    assert debited == 30
