"""Pause, resume and cancel while a campaign is sending."""

from __future__ import annotations

import time

import pytest

from tests.e2e.invariants import assert_invariants, rows
from tests.e2e.stack import wait_for


def slow_stack(make_stack):
    stack = make_stack(SEND_BATCH_SIZE="10", SEND_CONCURRENCY="2")
    stack.start_sim("--latency-ms", "50", "--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker(threads=1)
    return stack


def start(stack, key: str) -> int:
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "c", "text": "Hi {first_name}, 2 for 1 today"}
    ).json()
    assert stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key).status_code == 202
    wait_for(lambda: stack.sim_messages(summary="1")["count"] >= 10, 30, "the first batch")
    return campaign["id"]


@pytest.mark.brokers("redis", "rabbitmq")
def test_a_paused_campaign_sends_nothing_until_resumed(make_stack, db):
    # Given a campaign sending slowly
    stack = slow_stack(make_stack)
    shop_id, key = stack.create_shop("pause.example", credits=1000)
    stack.import_contacts(key, 120)
    campaign_id = start(stack, key)

    # When the merchant pauses it
    paused = stack.call("POST", f"/campaigns/{campaign_id}/pause", key)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    time.sleep(1.5)  # let calls already in flight land
    frozen = stack.sim_messages(summary="1")["count"]
    time.sleep(1.5)

    # Then nothing more is sent while it is paused, and it is not finalised
    assert stack.sim_messages(summary="1")["count"] == frozen < 120
    assert stack.progress(key, campaign_id)["status"] == "paused"
    assert stack.call("POST", f"/campaigns/{campaign_id}/pause", key).status_code == 409

    # When it is resumed, Then it completes with every recipient sent once
    assert stack.call("POST", f"/campaigns/{campaign_id}/resume", key).json()["status"] == "sending"
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert (progress["status"], progress["sent"]) == ("completed", 120)
    assert_invariants(db, stack, shop_id, campaign_id)


def test_a_cancelled_campaign_skips_the_rest_and_releases_its_credits(make_stack, db):
    stack = slow_stack(make_stack)
    shop_id, key = stack.create_shop("cancel.example", credits=1000)
    stack.import_contacts(key, 120)
    campaign_id = start(stack, key)

    cancelled = stack.call("POST", f"/campaigns/{campaign_id}/cancel", key)

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(
        lambda: (
            rows(
                db,
                "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s"
                " AND status = 'sending'",
                campaign_id,
            )[0][0]
            == 0
        ),
        30,
        "calls in flight to land",
    )
    progress = stack.progress(key, campaign_id)
    assert progress["skipped"] > 0 and progress["sent"] + progress["skipped"] == 120
    # The part its calls in flight held is released once they have resolved (the worker's
    # status update after them settles the reservation).
    wait_for(
        lambda: stack.progress(key, campaign_id)["credits"]["reservation"] == "released",
        30,
        "the reservation to be released",
    )
    assert stack.call("GET", "/credits", key).json()["reserved"] == 0
    assert_invariants(db, stack, shop_id, campaign_id)


@pytest.mark.brokers("redis", "rabbitmq")
def test_a_cancel_of_more_than_a_chunk_answers_at_once_and_the_worker_skips_the_rest(
    make_stack, db
):
    # Given a campaign created in chunks of 20, paused while sending (its audience is still
    # created meanwhile), so that more than a chunk is pending
    stack = make_stack(SEND_BATCH_SIZE="10", SEND_CONCURRENCY="2", RECIPIENT_CHUNK_SIZE="20")
    stack.start_sim("--latency-ms", "50", "--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker(threads=1)
    shop_id, key = stack.create_shop("cancel-chunks.example", credits=1000)
    stack.import_contacts(key, 120)
    campaign_id = start(stack, key)
    assert stack.call("POST", f"/campaigns/{campaign_id}/pause", key).status_code == 200
    wait_for(lambda: stack.progress(key, campaign_id)["recipients_created"], 30, "every recipient")
    wait_for(
        lambda: stack.progress(key, campaign_id)["sending"] == 0, 30, "calls in flight to land"
    )
    before = stack.progress(key, campaign_id)
    assert before["pending"] > 20

    # When the merchant cancels it
    cancelled = stack.call("POST", f"/campaigns/{campaign_id}/cancel", key)

    # Then it answers cancelled, and the worker skips the pending recipients chunk by chunk
    # and settles the reservation; nothing more is sent
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(
        lambda: stack.progress(key, campaign_id)["credits"]["reservation"] == "released",
        30,
        "the worker to skip the rest and release the reservation",
    )
    progress = stack.progress(key, campaign_id)
    assert (progress["pending"], progress["sending"]) == (0, 0)
    assert (progress["sent"], progress["skipped"]) == (before["sent"], before["pending"])
    assert stack.sim_messages(summary="1")["count"] == before["sent"]
    assert stack.call("GET", "/credits", key).json()["reserved"] == 0
    assert_invariants(db, stack, shop_id, campaign_id)
