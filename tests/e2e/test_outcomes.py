"""What each provider outcome does to a recipient, and what merchants and contacts see."""

from __future__ import annotations

import dataclasses
import time

import pytest
import requests

from service import audit, links, reconcile
from tests.e2e.invariants import assert_invariants, rows
from tests.e2e.stack import LOGS, wait_for


def launch(stack, key: str, text: str, **fields) -> int:
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "c", "text": text, **fields}
    ).json()
    assert stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key).status_code == 202
    return campaign["id"]


def test_a_contact_who_unsubscribes_mid_campaign_gets_nothing_from_later_batches(
    make_stack, db, settings
):
    # Given a slow campaign: batches of 10, one batch at a time, 100 ms per call
    stack = make_stack(SEND_BATCH_SIZE="10", SEND_CONCURRENCY="2")
    stack.start_sim("--latency-ms", "100", "--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker(threads=1)
    shop_id, key = stack.create_shop("optout.example", credits=1000)
    stack.import_contacts(key, 100)
    campaign_id = launch(stack, key, "Hi {first_name}, our sale starts now")
    wait_for(lambda: stack.sim_messages(summary="1")["count"] >= 5, 30, "the first messages")

    # When the last contact confirms the unsubscribe link of an earlier message
    last_contact = rows(db, "SELECT max(id) FROM contact WHERE shop_id = %s", shop_id)[0][0]
    token = links.unsubscribe_token(settings.secret_key, shop_id, last_contact)
    page = requests.post(f"{stack.web}/u/{token}", timeout=10)
    assert page.status_code == 200 and "unsubscribed" in page.text

    # Then the campaign completes without messaging that contact: it is skipped
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert (progress["sent"], progress["skipped"]) == (99, 1)
    phone = rows(db, "SELECT phone FROM contact WHERE id = %s", last_contact)[0][0]
    assert stack.sim_messages(to=phone)["count"] == 0
    assert rows(
        db, "SELECT status, error FROM campaign_recipient WHERE contact_id = %s", last_contact
    ) == [("skipped", "suppressed")]
    assert_invariants(db, stack, shop_id, campaign_id)


def test_messages_carry_working_short_and_unsubscribe_links(stack, db):
    # Given a campaign with a link and the default unsubscribe suffix
    shop_id, key = stack.create_shop("links.example", credits=1000)
    stack.import_contacts(key, 3)
    campaign_id = launch(stack, key, "Hi {first_name}! New in: https://links.example/new-in")
    stack.wait_finished(key, campaign_id, timeout=60)

    # When a contact follows the short link and then confirms the unsubscribe link
    text = stack.sim_messages()["messages"][0]["text"]
    short = next(word for word in text.split() if "/r/" in word)
    unsubscribe = next(word for word in text.split() if "/u/" in word)
    redirect = requests.get(short, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    assert redirect.headers["Location"] == "https://links.example/new-in"
    assert requests.post(unsubscribe, timeout=10).status_code == 200

    # Then the click is counted and the contact is opted out and suppressed
    assert rows(db, "SELECT clicks FROM short_link")[0][0] == 1
    opted = stack.call("GET", "/contacts?opted_out=true", key).json()["items"]
    assert len(opted) == 1
    assert rows(db, "SELECT source FROM suppression") == [("link",)]


@pytest.mark.brokers("redis", "rabbitmq")  # the retry is a delayed message (`.DQ` queue)
def test_throttling_is_retried_after_retry_after_and_rejections_fail_without_debit(stack, db):
    # Given a provider that throttles the first two calls and rejects one number
    stack.sim_config(next=["429", "429"], retry_after_s=1, reject_prefixes=["+306900000007"])
    shop_id, key = stack.create_shop("throttle.example", credits=1000)
    stack.import_contacts(key, 20, named=False)

    # When a bulk campaign is sent
    campaign_id = launch(stack, key, "Clearance: everything must go", append_unsubscribe=False)

    # Then the throttled batch was retried and sent once; the rejected number failed
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert (progress["sent"], progress["failed"]) == (19, 1)
    failed = stack.call("GET", f"/campaigns/{campaign_id}/recipients?status=failed", key).json()
    assert failed["items"][0]["phone"] == "+306900000007"
    assert "Invalid destination" in failed["items"][0]["error"]
    stats = requests.get(f"{stack.sim}/_sim/stats", timeout=5).json()
    assert stats["throttled"] == 2
    assert_invariants(db, stack, shop_id, campaign_id)


def test_a_bulk_answer_out_of_order_gives_each_recipient_its_own_message(stack, db):
    # Given a provider that answers every bulk call out of order and rejects one number
    stack.sim_config(shuffle_bulk=True, reject_prefixes=["+306900000004"])
    shop_id, key = stack.create_shop("shuffled.example", credits=1000)
    stack.import_contacts(key, 12, named=False)

    # When a bulk campaign is sent
    campaign_id = launch(stack, key, "Weekend sale: 20% off", append_unsubscribe=False)

    # Then each recipient holds the id the provider gave its own number; the rejected one failed
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert (progress["sent"], progress["failed"]) == (11, 1)
    recorded = {m["to"]: m["id"] for m in stack.sim_messages()["messages"]}
    assert (
        dict(
            rows(
                db,
                "SELECT phone, mitto_message_id FROM campaign_recipient"
                " WHERE campaign_id = %s AND status = 'sent'",
                campaign_id,
            )
        )
        == recorded
    )
    assert rows(db, "SELECT phone FROM campaign_recipient WHERE status = 'failed'") == [
        ("+306900000004",)
    ]
    assert_invariants(db, stack, shop_id, campaign_id)


def test_an_unknown_outcome_is_never_resent_and_resolved_by_evidence(make_stack, db, settings):
    # Given a provider whose first answer never arrives (read timeout), though it took the message
    stack = make_stack(PROVIDER_READ_TIMEOUT_MS="1000", SEND_CONCURRENCY="1")
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker()
    stack.sim_config(next=["timeout", "ok", "timeout"], timeout_s=3, dlr_enabled=True)
    shop_id, key = stack.create_shop("unknown.example", credits=1000)
    stack.import_contacts(key, 10)

    # When a personalised campaign is sent
    campaign_id = launch(stack, key, "Hi {first_name}, a gift for you")

    # Then the two unanswered calls are never resent: their delivery reports (matched by
    # reference) make them sent, with their debits, as they arrive, with no reconcile run
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert (progress["status"], progress["sent"]) == ("completed", 10)
    assert stack.sim_messages(summary="1")["count"] == 10
    assert (
        reconcile.reconcile(
            dataclasses.replace(settings, claim_timeout_ms=1000), audit.ADMIN
        ).upgraded_by_evidence
        == 0
    )
    worker_log = (LOGS / f"{stack.name}.worker.log").read_text()
    assert worker_log.count("unknown provider outcome") == 2
    assert_invariants(db, stack, shop_id, campaign_id)


def test_an_unknown_outcome_without_evidence_fails_without_debit(make_stack, db, settings):
    stack = make_stack(PROVIDER_READ_TIMEOUT_MS="1000")
    stack.start_sim("--no-dlr")
    stack.start_web()
    stack.start_worker()
    stack.sim_config(next=["500"])  # a 5xx: the provider may or may not have the message
    shop_id, key = stack.create_shop("lost.example", credits=1000)
    stack.import_contacts(key, 5, named=False)
    campaign_id = launch(stack, key, "Last chance today", append_unsubscribe=False)
    wait_for(
        lambda: (
            rows(
                db,
                "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s"
                " AND status = 'sending'",
                campaign_id,
            )[0][0]
            == 5
        ),
        30,
        "the batch to be left in flight",
    )
    time.sleep(1)  # older than the claim timeout below

    reconcile.reconcile(dataclasses.replace(settings, claim_timeout_ms=500), audit.ADMIN)

    progress = stack.wait_finished(key, campaign_id, timeout=30)
    assert (progress["status"], progress["failed"]) == ("failed", 5)
    assert {
        r["error"]
        for r in stack.call("GET", f"/campaigns/{campaign_id}/recipients", key).json()["items"]
    } == {"unknown_outcome"}
    assert rows(db, "SELECT count(*) FROM credit_transaction WHERE kind = 'debit'")[0][0] == 0
    # Their credits stay held for the evidence that may still come (EVIDENCE_WINDOW_MS)
    assert stack.call("GET", "/credits", key).json() == {
        "balance": 1000,
        "reserved": 5,
        "available": 995,
    }
    assert (progress["credits"]["held"], progress["credits"]["reservation"]) == (5, "held")


def test_another_providers_spelling_is_sent_charged_and_delivered(stack, db):
    # Given a provider spelling SPEC 7 its own way: integer ids, a bulk answer whose entries
    # carry no code of their own (the answer's 0), `/sms`'s code as a string; reports with the
    # status in capitals, the code as a string and the time without an offset
    stack.sim_config(terse=True)
    shops = [stack.create_shop(f"terse-{n}.example", credits=1000) for n in (1, 2)]
    for n, (_, key) in enumerate(shops):
        stack.import_contacts(key, 12, start=100 * n)

    # When one shop sends a bulk campaign and the other a personalised one
    campaigns = [
        launch(stack, shops[0][1], "Weekend sale: 20% off", append_unsubscribe=False),
        launch(stack, shops[1][1], "Hi {first_name}, 20% off", append_unsubscribe=False),
    ]

    # Then every message is sent once and charged (not left of unknown outcome, uncharged)
    for (shop_id, key), campaign_id, other in zip(shops, campaigns, reversed(campaigns)):
        progress = stack.wait_finished(key, campaign_id, timeout=60)
        assert (progress["status"], progress["sent"], progress["failed"]) == ("completed", 12, 0)
        assert_invariants(db, stack, shop_id, campaign_id, others=(other,))
    assert stack.sim_messages(summary="1")["count"] == 24
    # And each recipient holds the provider's id as text, and its report was applied
    recorded = [str(int(m["id"], 16)) for m in stack.sim_messages()["messages"]]
    wait_for(
        lambda: (
            rows(
                db,
                "SELECT count(*) FROM campaign_recipient WHERE delivery_status = 'Delivered'"
                " AND mitto_message_id = ANY(%s)",
                recorded,
            )[0][0]
            == 24
        ),
        30,
        "every report applied",
    )
    assert rows(db, "SELECT count(*) FROM delivery_report WHERE status <> 'Delivered'") == [(0,)]
