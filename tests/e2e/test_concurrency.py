"""Credits and concurrency: exact reservations, racing enqueues, duplicate publishes."""

from __future__ import annotations

import threading

from service.infra import dispatch
from tests.e2e.invariants import assert_invariants, rows


def create_campaign(stack, key: str, text: str = "Weekend offer, reply STOP to opt out") -> int:
    answer = stack.call(
        "POST", "/campaigns", key, json={"name": "c", "text": text, "append_unsubscribe": False}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def at_once(*calls):
    """Run the calls concurrently, released together by a barrier; return their answers."""
    barrier, answers = threading.Barrier(len(calls)), [None] * len(calls)

    def run(index, call):
        barrier.wait()
        answers[index] = call()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_a_balance_that_covers_exactly_the_reservation_sends_every_message(stack, db):
    # Given a shop whose balance is exactly the campaign's cost (1 segment x 300)
    shop_id, key = stack.create_shop("exact.example", credits=300)
    stack.import_contacts(key, 300, named=False)
    campaign_id = create_campaign(stack, key)

    # When it is enqueued, its own reservation counts as available to its own send
    answer = stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key)
    assert answer.status_code == 202 and answer.json()["reserved_credits"] == 300

    # Then every message is sent and the balance is exactly spent
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert (progress["status"], progress["sent"]) == ("completed", 300)
    assert stack.call("GET", "/credits", key).json() == {
        "balance": 0,
        "reserved": 0,
        "available": 0,
    }
    assert_invariants(db, stack, shop_id, campaign_id)


def test_a_campaign_that_cannot_be_covered_gets_402_and_nothing_changes(stack, db):
    # Given one credit too few
    shop_id, key = stack.create_shop("short.example", credits=299)
    stack.import_contacts(key, 300, named=False)
    campaign_id = create_campaign(stack, key)

    # When it is enqueued
    answer = stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key)

    # Then 402, and nothing was written
    assert answer.status_code == 402, answer.text
    assert "299" in answer.json()["description"]
    assert stack.call("GET", f"/campaigns/{campaign_id}", key).json()["status"] == "draft"
    for table in ("campaign_recipient", "send_batch", "credit_reservation"):
        assert rows(db, f"SELECT count(*) FROM {table}")[0][0] == 0, table
    assert stack.call("GET", "/credits", key).json()["balance"] == 299


def test_two_concurrent_enqueues_of_one_campaign_one_wins(stack, db):
    shop_id, key = stack.create_shop("race.example", credits=1000)
    stack.import_contacts(key, 200, named=False)
    campaign_id = create_campaign(stack, key)

    answers = at_once(*[lambda: stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key)] * 2)

    assert sorted(a.status_code for a in answers) == [202, 409]
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert progress["sent"] == 200
    assert rows(db, "SELECT count(*) FROM credit_reservation")[0][0] == 1
    assert_invariants(db, stack, shop_id, campaign_id)


def test_two_campaigns_that_together_exceed_the_credits_one_is_refused(stack, db):
    # Given credits for one of two 300-message campaigns, not both
    shop_id, key = stack.create_shop("two.example", credits=500)
    stack.import_contacts(key, 300, named=False)
    first, second = create_campaign(stack, key), create_campaign(stack, key)

    # When both are enqueued at the same moment
    answers = at_once(
        lambda: stack.call("POST", f"/campaigns/{first}/enqueue", key),
        lambda: stack.call("POST", f"/campaigns/{second}/enqueue", key),
    )

    # Then exactly one is accepted and the other gets 402, with nothing of it written
    assert sorted(a.status_code for a in answers) == [202, 402]
    winner = first if answers[0].status_code == 202 else second
    loser = second if winner == first else first
    assert stack.wait_finished(key, winner, timeout=60)["sent"] == 300
    assert stack.call("GET", f"/campaigns/{loser}", key).json()["status"] == "draft"
    assert (
        rows(db, "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s", loser)[0][0] == 0
    )
    assert stack.call("GET", "/credits", key).json()["balance"] == 200
    assert_invariants(db, stack, shop_id, winner)


def test_a_batch_published_twice_sends_nothing_twice(make_stack, db):
    # Given a campaign enqueued while no worker runs, and every batch published a second time
    stack = make_stack(SEND_BATCH_SIZE="50")
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web()
    shop_id, key = stack.create_shop("twice.example", credits=1000)
    stack.import_contacts(key, 200, named=False)
    campaign_id = create_campaign(stack, key)
    assert stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key).status_code == 202
    batches = rows(db, "SELECT recipient_ids FROM send_batch WHERE campaign_id = %s", campaign_id)
    assert len(batches) == 4
    for (recipient_ids,) in batches:
        dispatch.publish_batch(campaign_id, shop_id, recipient_ids)

    # When two workers consume the eight messages
    stack.start_worker("worker-a", threads=2)
    stack.start_worker("worker-b", threads=2)

    # Then each recipient got exactly one message
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert progress["sent"] == 200
    assert stack.sim_messages(summary="1")["count"] == 200
    assert_invariants(db, stack, shop_id, campaign_id)
