"""Compliance on the real processes (SPEC 11): a STOP replied in the middle of a campaign stops
that number at once with one answer and START subscribes it again; Shopify's customers/redact
erases a customer from every table, is refused without a good signature, and the erased number
is never messaged again. The simulator plays the customer (`POST /_sim/inbound`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import requests

from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, SHOPIFY_API_SECRET
from tests.e2e.invariants import rows
from tests.e2e.stack import CONSENT, WEB_THREADS, Stack, wait_for
from tests.scan import places_holding

SENDER = "306999000001"


def start(stack: Stack, *sim_options: str, web_threads: int = WEB_THREADS) -> None:
    stack.start_sim("--dlr-delay-ms", "50", *sim_options)
    stack.start_web(threads=web_threads)
    stack.start_worker()
    stack.sim_config(inbound_url=f"{stack.web}/webhooks/mitto/inbound?token={DLR_WEBHOOK_SECRET}")


def create_shop(stack: Stack, domain: str, credits: int) -> tuple[int, str]:
    shop = stack.call(
        "POST",
        "/admin/shops",
        ADMIN_TOKEN,
        json={"domain": domain, "name": "Compliance", "sender": SENDER},
    ).json()
    assert (
        stack.call(
            "POST",
            f"/admin/shops/{shop['id']}/credits",
            ADMIN_TOKEN,
            json={"amount": credits, "reference": "initial"},
        ).status_code
        == 201
    )
    return shop["id"], shop["api_key"]


def launch(stack: Stack, key: str, text: str, **fields) -> dict:
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "c", "text": text, **fields}
    ).json()
    enqueued = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert enqueued.status_code == 202, enqueued.text
    return enqueued.json()


def customer_writes(stack: Stack, phone: str, text: str, repeat: int = 1) -> list[dict]:
    """The customer's message as the provider forwards it (digits, no `+`); the app's answers."""
    answer = requests.post(
        f"{stack.sim}/_sim/inbound",
        timeout=60,
        json={"from": phone.lstrip("+"), "to": SENDER, "text": text, "repeat": repeat},
    )
    assert answer.status_code == 200, answer.text
    answers = answer.json()["answers"]
    assert [a["status"] for a in answers] == [200] * repeat, answers
    return [a["body"] for a in answers]


def books(db, shop_id: int) -> tuple:
    """(balance, ledger rows, ledger sum, debits) of the shop."""
    return rows(
        db,
        "SELECT s.credit_balance, count(t.id), coalesce(sum(t.amount), 0),"
        " count(t.id) FILTER (WHERE t.kind = 'debit') FROM shop s"
        " LEFT JOIN credit_transaction t ON t.shop_id = s.id WHERE s.id = %s"
        " GROUP BY s.id",
        shop_id,
    )[0]


def test_a_stop_in_the_middle_of_a_campaign_stops_that_number_and_start_resumes_it(make_stack, db):
    # Given a campaign of 300 messages in batches of 10, each provider call taking 400 ms
    stack = make_stack(SEND_BATCH_SIZE="10")
    start(stack, "--latency-ms", "400")
    shop_id, key = create_shop(stack, "stop.example", credits=1000)
    stack.import_contacts(key, 300, named=False)
    target = "+306900000299"  # the last contact: in the last batch
    first = launch(stack, key, "Summer sale today", append_unsubscribe=False)
    wait_for(lambda: stack.sim_messages(summary="1")["count"] > 0, 30, "the first messages")
    assert rows(db, "SELECT status FROM campaign_recipient WHERE phone = %s", target) == [
        ("pending",)
    ], "the campaign reached the number before its STOP: nothing to prove"

    # When its customer replies STOP while the campaign sends, delivered twice by the provider
    answers = customer_writes(stack, target, "Stop!", repeat=2)

    # Then the second delivery is recognised, and the campaign finishes without the number
    assert [(a["keyword"], a["duplicate"], a["reply"]) for a in answers] == [
        ("stop", False, "queued"),
        ("stop", True, None),
    ]
    progress = stack.wait_finished(key, first["id"], timeout=120)
    assert (progress["status"], progress["sent"], progress["skipped"]) == ("completed", 299, 1)
    assert rows(db, "SELECT status, error FROM campaign_recipient WHERE phone = %s", target) == [
        ("skipped", "suppressed")
    ]
    # And the number got exactly one message, the answer, from the number it wrote to
    to_target = stack.sim_messages(to=target)["messages"]
    assert [(m["from"], m["endpoint"]) for m in to_target] == [(SENDER, "sms")]
    assert "unsubscribed" in to_target[0]["text"]
    # And every other number got the campaign once; only campaign messages were charged
    summary = stack.sim_messages(summary="1")
    assert (summary["count"], summary["duplicate_messages"]) == (300, 0)
    balance, _, ledger_sum, debits = books(db, shop_id)
    assert (balance, debits) == (ledger_sum, 299) and balance == 1000 - 299

    # When the customer replies START
    (started,) = customer_writes(stack, target, "START")
    # Then the next campaign reaches the number again
    assert (started["keyword"], started["reply"]) == ("start", "queued")
    wait_for(lambda: stack.sim_messages(to=target)["count"] == 2, 30, "the START answer")
    second = launch(stack, key, "Last day of the sale", append_unsubscribe=False)
    assert second["recipients"] == 300
    stack.wait_finished(key, second["id"], timeout=120)
    wait_for(lambda: stack.sim_messages(to=target)["count"] == 3, 30, "the second campaign")
    texts = [m["text"] for m in stack.sim_messages(to=target)["messages"]]
    assert "subscribed again" in texts[1] and texts[2] == "Last day of the sale"


def sign(body: bytes, secret: str = SHOPIFY_API_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_a_redact_webhook_erases_the_customer_everywhere_and_only_with_its_signature(
    make_stack, db
):
    # Given a shop whose five customers got a personalised campaign, delivered, and one of
    # whom (Zenobia) replied
    stack = make_stack()
    start(stack)
    domain = "redact-e2e.myshopify.com"
    shop_id, key = create_shop(stack, domain, credits=1000)
    people = [
        (f"+30690000100{n}", name)
        for n, name in enumerate(("Alexia", "Zenobia", "Chrysa", "Danae", "Ermis"))
    ]
    phone, digits = people[1][0], people[1][0].lstrip("+")
    contacts = [{"phone": p, "first_name": name, "consent": CONSENT} for p, name in people]
    assert stack.call("POST", "/contacts", key, json={"contacts": contacts}).status_code == 200
    first = launch(stack, key, "Hi {first_name}, your summer offer is ready")
    stack.wait_finished(key, first["id"], timeout=60)
    wait_for(
        lambda: stack.progress(key, first["id"])["delivery"] == {"Delivered": 5},
        30,
        "the delivery reports",
    )
    customer_writes(stack, phone, "Thanks, Zenobia here")
    held = {table for table, _, _ in places_holding(db, digits)}
    assert {"contact", "campaign_recipient", "delivery_report", "inbound_message"} <= held
    assert {table for table, _, _ in places_holding(db, "Zenobia")} >= {"message_log"}
    before, where = books(db, shop_id), places_holding(db, digits)
    body = json.dumps(
        {
            "shop_id": 1,
            "shop_domain": domain,
            "orders_to_redact": [],
            "customer": {"id": 7, "email": "z@example.com", "phone": phone},
        }
    ).encode()
    url = f"{stack.web}/webhooks/shopify/customers/redact"

    # When Shopify's redact arrives with a bad signature
    forged = requests.post(
        url,
        data=body,
        timeout=30,
        headers={"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": sign(body, "x" * 40)},
    )
    # Then it is refused and nothing changed
    assert forged.status_code == 401
    assert places_holding(db, digits) == where

    # When it arrives signed
    redacted = requests.post(
        url,
        data=body,
        timeout=30,
        headers={"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": sign(body)},
    )
    # Then the number and the name are in no column of any table, the balances are unchanged,
    # and the number is suppressed by its digest
    assert redacted.status_code == 200, redacted.text
    assert places_holding(db, digits) == []
    assert places_holding(db, "Zenobia") == []
    assert books(db, shop_id) == before
    assert rows(
        db, "SELECT source FROM suppression WHERE shop_id = %s AND phone IS NULL", shop_id
    ) == [("erasure",)]

    # When the merchant imports every customer again and sends a new campaign
    assert stack.call("POST", "/contacts", key, json={"contacts": contacts}).status_code == 200
    second = launch(stack, key, "Hi {first_name}, one more offer")
    # Then it is for the four others only, and the erased number gets nothing
    assert second["recipients"] == 4
    stack.wait_finished(key, second["id"], timeout=60)
    wait_for(lambda: stack.sim_messages(summary="1")["count"] == 9, 30, "the second campaign")
    assert stack.sim_messages(to=phone)["count"] == 1  # the first campaign's message only


def test_a_slow_provider_holds_no_web_thread_for_the_answers_to_stop(make_stack, db):
    # Given a provider taking 3 s per call, and a web of one thread (a wave of STOPs after a
    # large send once held one web thread per reply for the provider's answer)
    stack = make_stack()
    start(stack, web_threads=1)
    _, key = create_shop(stack, "slow.example", 10)
    phones = [f"+30690000040{n}" for n in range(3)]
    imported = stack.call(
        "POST",
        "/contacts",
        key,
        json={"contacts": [{"phone": phone, "consent": CONSENT} for phone in phones]},
    )
    assert imported.status_code == 200, imported.text
    stack.sim_config(latency_ms=3000)

    # When three customers write STOP one after the other
    began = time.monotonic()
    answers = [customer_writes(stack, phone, "STOP")[0] for phone in phones]

    # Then each was answered at once, its confirmation queued, and the worker sends them
    assert time.monotonic() - began < 3, answers
    assert [answer["reply"] for answer in answers] == ["queued"] * 3
    wait_for(
        lambda: rows(db, "SELECT count(*) FROM inbound_reply WHERE state = 'sent'") == [(3,)],
        30,
        "the three confirmations",
    )


def test_a_wave_of_answers_takes_at_most_reply_concurrency_worker_threads(make_stack, db):
    # Given a worker process of 4 threads that tries one answer at a time, a provider taking
    # 1.5 s per call, and a shop's campaign to send beside the answers
    stack = make_stack(REPLY_CONCURRENCY="1")
    start(stack)
    _, key = create_shop(stack, "wave.example", 100)
    phones = [f"+30690000050{n}" for n in range(4)]
    imported = stack.call(
        "POST",
        "/contacts",
        key,
        json={"contacts": [{"phone": phone, "consent": CONSENT} for phone in phones]},
    )
    assert imported.status_code == 200, imported.text
    stack.sim_config(latency_ms=1500)

    # When four customers write HELP at once
    with ThreadPoolExecutor(4) as posting:
        answers = list(posting.map(lambda phone: customer_writes(stack, phone, "HELP")[0], phones))
    assert [answer["reply"] for answer in answers] == ["queued"] * 4

    # Then the answers reach the provider one after the other (a wave of them once took every
    # thread of the worker, and delivery reports waited 200 s), each once
    wait_for(
        lambda: rows(db, "SELECT count(*) FROM inbound_reply WHERE state = 'sent'") == [(4,)],
        60,
        "the four answers",
    )
    arrivals = sorted(
        datetime.fromisoformat(message["received_at"].replace("Z", "+00:00"))
        for message in stack.sim_messages()["messages"]
        if message["to"] in phones
    )
    assert len(arrivals) == 4
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= 1.2, gaps


def test_a_stop_confirmation_the_provider_refused_is_sent_by_the_worker_once_it_takes_it(
    make_stack, db
):
    # Given a provider answering every call 503 (nothing sent), and a subscribed customer
    stack = make_stack()
    start(stack)
    shop_id, key = create_shop(stack, "refused.example", 10)
    phone = "+306900000321"
    imported = stack.call(
        "POST", "/contacts", key, json={"contacts": [{"phone": phone, "consent": CONSENT}]}
    )
    assert imported.status_code == 200, imported.text
    stack.sim_config(fail_rate_503=1.0)

    # When the customer writes STOP (the webhook answers 200: the provider never retries it)
    [answer] = customer_writes(stack, phone, "STOP")

    # Then the number is opted out at once, and the confirmation waits for the worker
    assert answer["reply"] == "queued"
    assert rows(db, "SELECT count(*) FROM suppression WHERE shop_id = %s", shop_id) == [(1,)]

    # When the provider takes messages again, Then the worker sends the confirmation, once
    stack.sim_config(fail_rate_503=0.0)
    wait_for(
        lambda: [m for m in stack.sim_messages()["messages"] if m["to"] == phone],
        20,
        "the STOP confirmation",
    )
    time.sleep(1)
    [confirmation] = [m for m in stack.sim_messages()["messages"] if m["to"] == phone]
    assert "unsubscribed" in confirmation["text"]
    assert rows(db, "SELECT state FROM inbound_reply") == [("sent",)]
