"""Inbound replies (SPEC 11): STOP opts the number out of the shop it wrote to with one
answer, START opts it back in, HELP answers with the shop's help text, and every other reply is
kept for the shop (`GET /inbound`). In process, with a fake provider for the answers."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from api.app import create_app, create_wsgi
from models import InboundReply
from service import messages, replies
from service.creation import batch_key
from service.errors import BrokerUnavailable
from service.infra import dispatch
from service.infra.ratelimit import SendLimiter
from service.provider import Outcome, SendResult
from service.sending import claim_recipients
from tests.api.conftest import ADMIN, CONSENT, CheckedClient, assert_error, auth, top_up
from tests.conftest import DLR_WEBHOOK_SECRET

SENDER = "306999000001"
PHONE = "+306912345678"
INBOUND = f"/webhooks/mitto/inbound?token={DLR_WEBHOOK_SECRET}"


def make_shop(client, domain: str, sender: str | None = SENDER, **fields) -> tuple[int, str]:
    body = {"domain": domain, "name": domain.split(".")[0], **fields}
    if sender:
        body["sender"] = sender
    created = client.simulate_post("/admin/shops", headers=ADMIN, json=body)
    assert created.status_code == 201, created.text
    top_up(client, created.json["id"], 100, "initial")
    return created.json["id"], created.json["api_key"]


def reply(client, text: str, phone: str = PHONE, to: str = SENDER, **fields) -> dict:
    answer = client.simulate_post(
        INBOUND, json={"from": phone.lstrip("+"), "to": to, "text": text, **fields}
    )
    assert answer.status_code == 200, answer.text
    return answer.json


def subscribe(client, key: str, phones: list[str]) -> None:
    answer = client.simulate_post(
        "/contacts",
        headers=auth(key),
        json={"contacts": [{"phone": phone, "consent": CONSENT} for phone in phones]},
    )
    assert answer.status_code == 200 and not answer.json["invalid"], answer.text


def state(db, shop_id: int, phone: str = PHONE) -> dict:
    """The number's suppression, the contact's opt-out and consent, and its consent log."""
    suppression = db.execute_sql(
        "SELECT source FROM suppression WHERE shop_id = %s AND phone = %s", (shop_id, phone)
    ).fetchall()
    contact = db.execute_sql(
        "SELECT id, opted_out_at IS NOT NULL, consent_source FROM contact"
        " WHERE shop_id = %s AND phone = %s",
        (shop_id, phone),
    ).fetchone()
    events = (
        db.execute_sql(
            "SELECT kind, source FROM consent_event WHERE contact_id = %s ORDER BY id",
            (contact[0],),
        ).fetchall()
        if contact
        else []
    )
    return {
        "suppressed": [s for (s,) in suppression],
        "opted_out": contact[1] if contact else None,
        "consent": contact[2] if contact else None,
        "events": events,
    }


@pytest.fixture(autouse=True)
def worker(monkeypatch, provider) -> list[tuple]:
    """The queue of answers, and the worker's first try of each, taken as soon as it is
    queued (here in process: tests/e2e/test_compliance.py runs the real worker). Returns
    every publish as ((message_key, sender, to, text, attempt), delay_ms)."""
    published: list[tuple] = []

    def publish(*args, delay_ms):
        published.append((args, delay_ms))
        if args[-1] == 0 and delay_ms is None:
            replies.resend(*args, provider)

    monkeypatch.setattr(dispatch, "publish_reply", publish)
    return published


@pytest.fixture
def shop(client) -> tuple[int, str]:
    shop_id, key = make_shop(client, "inbound.example")
    subscribe(client, key, [PHONE, "+306912345679"])
    return shop_id, key


# --- STOP ------------------------------------------------------------------------------------


def test_stop_opts_the_number_out_with_one_answer_however_often_it_arrives(
    client, db, provider, shop
):
    shop_id, _ = shop
    # When the customer replies " Stop! ", and the provider delivers it twice (same id)
    first = reply(client, " Stop! ", id="in-1")
    again = reply(client, " Stop! ", id="in-1")
    # Then the number is suppressed (reply), the contact opted out, and its log says so
    assert state(db, shop_id) == {
        "suppressed": ["reply"],
        "opted_out": True,
        "consent": "checkout",
        "events": [("opt_in", "import"), ("opt_out", "reply")],
    }
    # And one answer went out, from the number the customer wrote to, naming the shop
    assert first == {"keyword": "stop", "shops": 1, "duplicate": False, "reply": "queued"}
    assert again == {"keyword": "stop", "shops": 1, "duplicate": True, "reply": None}
    assert [(sender, sms.to) for sender, sms in provider.sent] == [(SENDER, PHONE)]
    assert "inbound: you are unsubscribed" in provider.sent[0][1].text
    assert "START" in provider.sent[0][1].text
    # And the answer is recorded, charged nothing
    assert db.execute_sql("SELECT state, provider_id FROM inbound_reply").fetchall() == [
        ("sent", "reply-1")
    ]
    assert db.execute_sql(
        "SELECT count(*) FROM credit_transaction WHERE kind = 'debit'"
    ).fetchone() == (0,)


@pytest.mark.parametrize(
    "text",
    [
        "stop",
        "STOP.",
        "Stop!",
        "stopall",
        "Unsubscribe",
        "cancel",
        "END",
        "quit",
        "OPTOUT",
        "opt-out",
        "Opt out",
        "revoke",
        "\u00a0STOP\u00a0",
        "ＳＴＯＰ",
        "S.T.O.P",
        "OPT.OUT",
        "opt\u2013out",
        "OPT\u2010OUT",
        "opt\u2011out",
        "S\u00adTOP",
        "ST\u200bOP",
    ],
)
def test_every_stop_word_alone_opts_out(client, db, provider, shop, text):
    reply(client, text)
    assert state(db, shop[0])["suppressed"] == ["reply"]
    assert len(provider.sent) == 1


@pytest.mark.parametrize(
    "text, extra",
    [("STOP\u0000", {}), ("STOP", {"meta": "\u0000"}), ("STOP", {"x": {"y": ["\ud800"]}})],
    ids=["nul-in-text", "nul-in-extra-field", "lone-surrogate-deep"],
)
def test_text_postgresql_cannot_store_does_not_lose_a_stop(client, db, provider, shop, text, extra):
    # Given a STOP whose body holds a NUL or a lone surrogate (escaped, as JSON allows)
    body = json.dumps({"from": "306912345678", "to": SENDER, "text": text, **extra})
    # When it is posted
    answer = client.simulate_post(INBOUND, body=body, headers={"Content-Type": "application/json"})
    # Then it is an opt-out, not a 422 the provider never posts again
    assert answer.status_code == 200, answer.text
    assert state(db, shop[0])["suppressed"] == ["reply"]


@pytest.mark.parametrize("spelling", ["+306912345678", "306912345678", "00306912345678"])
def test_the_number_may_be_written_with_plus_without_or_with_00(client, db, shop, spelling):
    answer = client.simulate_post(INBOUND, json={"from": spelling, "to": SENDER, "text": "STOP"})
    assert answer.status_code == 200, answer.text
    assert state(db, shop[0])["suppressed"] == ["reply"]


@pytest.mark.parametrize(
    "text",
    ["please stop sending", "stop it", "don't stop", "STOPPED", "S-T-O-P-P-E-D", "", "yes please"],
)
def test_a_reply_that_is_not_only_a_keyword_is_kept_and_changes_nothing(
    client, db, provider, shop, text
):
    shop_id, key = shop
    # When the customer writes something that merely contains a keyword
    answer = reply(client, text)
    # Then nothing changes and nothing is answered...
    assert answer["keyword"] is None and answer["reply"] is None
    assert state(db, shop_id)["suppressed"] == [] and provider.sent == []
    # ...and the shop sees the message
    listed = client.simulate_get("/inbound", headers=auth(key)).json
    assert [
        (item["from"], item["to"], item["text"], item["keyword"]) for item in listed["items"]
    ] == [(PHONE, SENDER, text, None)]


def test_a_number_that_wrote_stop_is_not_claimed_by_a_campaign_already_sending(client, db, shop):
    shop_id, key = shop
    # Given a campaign enqueued to both contacts, not sent yet
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Sale today"}
    ).json
    enqueued = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert enqueued.json["recipients"] == 2, enqueued.text
    # When one of them replies STOP before its batch is claimed
    reply(client, "STOP")
    ids = [rid for (rid,) in db.execute_sql("SELECT id FROM campaign_recipient ORDER BY id")]
    claimed = claim_recipients(campaign["id"], ids, batch_key(campaign["id"], ids))
    # Then the claim sends only to the other, and skips the number that stopped
    assert [r.phone for r in claimed] == ["+306912345679"]
    assert db.execute_sql(
        "SELECT status, error FROM campaign_recipient WHERE phone = %s", (PHONE,)
    ).fetchone() == ("skipped", "suppressed")


# --- START and HELP --------------------------------------------------------------------------


def test_start_opts_back_in_with_consent_from_the_reply(client, db, provider, shop):
    shop_id, key = shop
    # Given a number that stopped
    reply(client, "STOP", id="in-1")
    # When it replies START
    answer = reply(client, "Start", id="in-2")
    # Then it is subscribed again, with consent from its reply, and told so once
    assert answer == {"keyword": "start", "shops": 1, "duplicate": False, "reply": "queued"}
    assert state(db, shop_id) == {
        "suppressed": [],
        "opted_out": False,
        "consent": "reply",
        "events": [("opt_in", "import"), ("opt_out", "reply"), ("opt_in", "reply")],
    }
    assert "subscribed again" in provider.to(PHONE)[-1]
    # And the next campaign reaches it
    campaign = client.simulate_post(
        "/campaigns", headers=auth(key), json={"name": "c", "text": "Sale today"}
    ).json
    enqueued = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert enqueued.json["recipients"] == 2


def test_without_id_or_timestamp_a_stop_after_a_start_is_a_new_stop_and_a_retry_is_not(
    client, db, provider, shop
):
    # Given a provider that posts replies with neither an id nor a timestamp (both optional)
    shop_id, _ = shop
    # When the number writes STOP (delivered twice), START, then STOP again
    first = reply(client, "STOP")
    retried = reply(client, "STOP")
    start = reply(client, "START")
    second = reply(client, "STOP")
    # Then the retry is a duplicate, but the second STOP is a new message: the number is
    # opted out again and told so (it was taken for a retry of the first, for ever)
    assert (first["duplicate"], retried["duplicate"]) == (False, True)
    assert (start["duplicate"], second["duplicate"]) == (False, False)
    assert second["reply"] == "queued"
    assert state(db, shop_id)["suppressed"] == ["reply"]
    assert state(db, shop_id)["opted_out"] is True
    assert len(provider.to(PHONE)) == 3


def test_copies_without_id_or_timestamp_posted_at_once_are_one_message(client, db, provider, shop):
    # Given a provider that posts a HELP with neither id nor timestamp several times at once
    # (retrying a request it thinks is slow)
    start, answers = threading.Barrier(8), []

    def post() -> None:
        start.wait()
        answers.append(reply(client, "HELP"))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one is the message, the others its duplicates: stored once, answered once
    assert sorted(answer["duplicate"] for answer in answers) == [False] + [True] * 7
    assert db.execute_sql("SELECT count(*) FROM inbound_message").fetchone() == (1,)
    assert len(provider.to(PHONE)) == 1


def test_start_does_not_lift_an_admin_suppression(client, db, shop):
    shop_id, _ = shop
    db.execute_sql(
        "INSERT INTO suppression (shop_id, phone, source) VALUES (%s, %s, 'admin')",
        (shop_id, PHONE),
    )
    reply(client, "UNSTOP")
    assert state(db, shop_id)["suppressed"] == ["admin"]


def test_help_answers_with_the_shop_help_text_or_a_default_naming_it(client, db, provider):
    # Given a shop with its own help text and one without
    _, _ = make_shop(client, "helpful.example", help_text="Helpful: call 210 000 0000")
    make_shop(client, "plain.example", sender="306999000002")
    # When a customer asks each for help
    first = reply(client, "HELP")
    reply(client, "info?", to="306999000002")
    # Then each answers with its text, and nothing else changes
    assert first["keyword"] == "help" and first["reply"] == "queued"
    assert provider.to(PHONE) == [
        "Helpful: call 210 000 0000",
        "plain: marketing messages. Msg & data rates may apply. Reply STOP to unsubscribe.",
    ]
    assert db.execute_sql("SELECT count(*) FROM suppression").fetchone() == (0,)


def test_the_default_help_text_is_shown_at_shop_creation(client):
    created = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": "new.example", "name": "New Shop"}
    )
    assert created.json["help_text"].startswith("New Shop: ")
    assert "Reply STOP to unsubscribe" in created.json["help_text"]
    assert created.json["require_consent"] is True


# --- which shop a reply is for ---------------------------------------------------------------


def sent_to(db, shop_id: int, phone: str, days_ago: int) -> None:
    """A message of the shop's to `phone`, `days_ago` days ago (a finished campaign)."""
    (contact_id,) = db.execute_sql(
        "SELECT id FROM contact WHERE shop_id = %s AND phone = %s", (shop_id, phone)
    ).fetchone()
    (campaign_id,) = db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text, status, finished_at)"
        " VALUES (%s, 'old', 'x', 'completed', now() - make_interval(days => %s)) RETURNING id",
        (shop_id, days_ago),
    ).fetchone()
    db.execute_sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone,"
        " status, sent_at) VALUES (%s, %s, %s, %s, 'sent',"
        " now() - make_interval(days => %s))",
        (campaign_id, shop_id, contact_id, phone, days_ago),
    )


def test_a_reply_to_the_shared_sender_is_for_the_shops_that_messaged_the_number(
    client, db, provider
):
    # Given three shops on the shared MITTO_SENDER, all with the number: one messaged it
    # yesterday, one 40 days ago (INBOUND_MATCH_DAYS is 30), one never
    shops = {
        name: make_shop(client, f"{name}.example", sender=None)
        for name in ("recent", "old", "never")
    }
    for _, key in shops.values():
        subscribe(client, key, [PHONE])
    sent_to(db, shops["recent"][0], PHONE, 1)
    sent_to(db, shops["old"][0], PHONE, 40)
    # When the number replies STOP to the shared sender
    answer = reply(client, "STOP", to="Astronote")
    # Then only the shop that messaged it lately loses it, and one answer names that shop
    assert answer["shops"] == 1
    assert {name: state(db, shop_id)["suppressed"] for name, (shop_id, _) in shops.items()} == {
        "recent": ["reply"],
        "old": [],
        "never": [],
    }
    assert [sms.text.split(":")[0] for _, sms in provider.sent] == ["recent"]


def sending_to(db, shop_id: int, status: str, error: str | None, claimed: bool) -> None:
    """A sending campaign of the shop whose recipient PHONE is in `status` (claimed an hour
    ago when `claimed`: its call in flight or of unknown outcome)."""
    (contact_id,) = db.execute_sql(
        "SELECT id FROM contact WHERE shop_id = %s AND phone = %s", (shop_id, PHONE)
    ).fetchone()
    (campaign_id,) = db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text, status) VALUES (%s, 'c', 'x', 'sending')"
        " RETURNING id",
        (shop_id,),
    ).fetchone()
    db.execute_sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status, error,"
        " claimed_at) VALUES (%s, %s, %s, %s, %s, %s,"
        " CASE WHEN %s THEN now() - interval '1 hour' END)",
        (campaign_id, shop_id, contact_id, PHONE, status, error, claimed),
    )


@pytest.mark.parametrize(
    ("status", "error", "for_the_shop"),
    [
        ("sending", None, True),  # its call in flight, or its answer lost: it may have arrived
        ("failed", "unknown_outcome", True),  # never proven either way
        ("failed", "rejected", False),  # the provider refused it: it reached no phone
    ],
)
def test_a_stop_to_the_shared_sender_counts_a_message_that_may_have_arrived(
    client, db, provider, status, error, for_the_shop
):
    # Given a shop on the shared sender whose message to the number was claimed an hour ago
    # and is not known sent (a slow provider, an answer lost to a reset), and another shop
    # on it that messaged the number yesterday
    shop_id, key = make_shop(client, "maybe.example", sender=None)
    subscribe(client, key, [PHONE])
    other_id, other_key = make_shop(client, "sure.example", sender=None)
    subscribe(client, other_key, [PHONE])
    sent_to(db, other_id, PHONE, 1)
    sending_to(db, shop_id, status, error, claimed=True)
    # When the number replies STOP to the shared sender
    answer = reply(client, "STOP", to="Astronote")
    # Then it is for that shop whenever the message may have reached the phone (before, it was
    # for no shop: answered 200, never posted again, and the number kept getting messages)
    assert answer["shops"] == 1 + int(for_the_shop)
    assert state(db, shop_id)["suppressed"] == (["reply"] if for_the_shop else [])
    assert state(db, other_id)["suppressed"] == ["reply"]


@pytest.mark.parametrize(
    ("text", "keyword", "for_the_holders"),
    [("STOP", "stop", True), ("Help", "help", False), ("START", "start", False)],
)
def test_a_stop_to_the_shared_sender_that_no_shop_messaged_is_for_the_shops_holding_the_number(
    client, db, provider, text, keyword, for_the_holders
):
    # Given three shops on the shared sender: two hold the number as a contact, one of them
    # with a campaign whose message to it is still pending (not claimed, not sent), the
    # other messaged it 40 days ago (INBOUND_MATCH_DAYS is 30); the third does not hold it
    shops = {
        name: make_shop(client, f"{name}.example", sender=None)
        for name in ("pending", "old", "stranger")
    }
    subscribe(client, shops["pending"][1], [PHONE])
    subscribe(client, shops["old"][1], [PHONE])
    sent_to(db, shops["old"][0], PHONE, 40)
    shop_id = shops["pending"][0]
    sending_to(db, shop_id, "pending", None, claimed=False)
    # When the number writes to the shared sender
    answer = reply(client, text, to="Astronote")
    # Then a STOP is for both shops holding it (before: for no shop, answered 200, never posted
    # again, and the pending message went out); a START or HELP is not widened (it would lift
    # what the number never asked to lift; answer with every holding shop's help text)
    assert answer["keyword"] == keyword
    assert answer["shops"] == (2 if for_the_holders else 0)
    assert answer["reply"] == ("queued" if for_the_holders else None)
    suppressed = {name: state(db, sid)["suppressed"] for name, (sid, _) in shops.items()}
    expected = ["reply"] if keyword == "stop" else []
    assert suppressed == {"pending": expected, "old": expected, "stranger": []}


@pytest.mark.parametrize("status", ["sending", "failed"])
def test_a_stop_to_the_shared_sender_after_a_test_send_of_unknown_outcome_is_for_its_shop(
    client, db, provider, status
):
    shop_id, _ = make_shop(client, "tester.example", sender=None)
    (campaign_id,) = db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text) VALUES (%s, 'c', 'x') RETURNING id",
        (shop_id,),
    ).fetchone()
    db.execute_sql(
        "INSERT INTO test_send (shop_id, campaign_id, phone, sender, text, segments, status,"
        " error, claimed_at) VALUES (%s, %s, %s, 'Astronote', 'x', 1, %s, %s, now())",
        (shop_id, campaign_id, PHONE, status, "unknown_outcome" if status == "failed" else None),
    )
    answer = reply(client, "STOP", to="Astronote")
    assert answer["shops"] == 1
    assert state(db, shop_id)["suppressed"] == ["reply"]


def test_a_reply_to_the_shared_sender_after_a_test_send_is_for_the_shop_that_sent_it(
    client, db, provider
):
    # Given a shop on the shared sender that sent a number only a test send, yesterday (the
    # number is not even one of its contacts)
    shop_id, _ = make_shop(client, "tester.example", sender=None)
    (campaign_id,) = db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text) VALUES (%s, 'c', 'x') RETURNING id",
        (shop_id,),
    ).fetchone()
    db.execute_sql(
        "INSERT INTO test_send (shop_id, campaign_id, phone, sender, text, segments, status,"
        " finished_at) VALUES (%s, %s, %s, 'Astronote', 'x', 1, 'sent', now() - interval '1 day')",
        (shop_id, campaign_id, PHONE),
    )
    # When the number replies STOP to the shared sender
    answer = reply(client, "STOP", to="Astronote")
    # Then it is for that shop: suppressed there, and answered (it was for no shop)
    assert (answer["shops"], answer["reply"]) == (1, "queued")
    assert state(db, shop_id)["suppressed"] == ["reply"]


def test_without_mitto_sender_a_reply_to_the_sender_used_instead_is_for_its_shops(
    settings, redis_client, db, provider
):
    # Given MITTO_SENDER unset (its default): a shop without a sender of its own sends from
    # the fallback sender, and messaged the number yesterday
    unset = dataclasses.replace(settings, mitto_sender=None)
    client = CheckedClient(create_wsgi(unset, redis_client, provider))
    shop_id, key = make_shop(client, "nosender.example", sender=None)
    subscribe(client, key, [PHONE])
    sent_to(db, shop_id, PHONE, 1)
    (campaign_id,) = db.execute_sql(
        "SELECT id FROM campaign WHERE shop_id = %s", (shop_id,)
    ).fetchone()
    assert messages.load_context(shop_id, campaign_id, unset).sender == "Astronote"
    # When the number replies STOP to that sender
    answer = reply(client, "STOP", to="Astronote")
    # Then it is for the shop (before: for no shop, and its next campaign reached the number)
    assert answer["shops"] == 1
    assert state(db, shop_id)["suppressed"] == ["reply"]


def test_a_sender_two_shops_share_goes_by_who_messaged_the_number(client, db, provider):
    first, second = make_shop(client, "a.example"), make_shop(client, "b.example")
    for _, key in (first, second):
        subscribe(client, key, [PHONE])
    sent_to(db, second[0], PHONE, 2)
    reply(client, "STOP", to=f"+{SENDER[:2]} {SENDER[2:]}")  # the same number, spelt otherwise
    assert (state(db, first[0])["suppressed"], state(db, second[0])["suppressed"]) == (
        [],
        ["reply"],
    )


def test_a_reply_for_no_shop_is_answered_200_and_changes_nothing(client, db, provider, shop):
    answer = reply(client, "STOP", to="306999999999")
    assert answer == {"keyword": "stop", "shops": 0, "duplicate": False, "reply": None}
    assert db.execute_sql("SELECT count(*) FROM inbound_message").fetchone() == (0,)
    assert provider.sent == []


def test_a_stop_from_a_number_that_is_not_a_contact_still_suppresses_it(client, db, shop):
    reply(client, "STOP", phone="+306900000077")
    assert state(db, shop[0], "+306900000077")["suppressed"] == ["reply"]

    # And when the number is imported later, with consent, it is a contact opted out (it
    # showed as subscribed and consented, though no campaign would reach it)
    subscribe(client, shop[1], ["+306900000077"])
    assert state(db, shop[0], "+306900000077") == {
        "suppressed": ["reply"],
        "opted_out": True,
        "consent": "checkout",
        "events": [("opt_in", "import"), ("opt_out", "reply")],
    }
    listed = client.simulate_get(
        "/contacts", headers=auth(shop[1]), params={"opted_out": "false"}
    ).json["items"]
    assert "+306900000077" not in [contact["phone"] for contact in listed]


# --- the answer ------------------------------------------------------------------------------


def test_the_webhook_queues_the_answer_and_never_calls_the_provider_itself(
    client, db, provider, shop, monkeypatch
):
    # Given a worker that has not taken anything yet
    queued: list[tuple] = []
    monkeypatch.setattr(
        dispatch, "publish_reply", lambda *args, delay_ms: queued.append((args, delay_ms))
    )
    # When a customer writes STOP
    answer = reply(client, "STOP", id="in-20")
    # Then the number is opted out and its answer queued for the worker's first try; the
    # provider was not called in the request (a slow provider held a web thread per reply)
    assert answer["reply"] == "queued" and provider.sent == []
    assert state(db, shop[0])["suppressed"] == ["reply"]
    [((key, sender, to, text, attempt), delay_ms)] = queued
    assert (sender, to, attempt, delay_ms) == (SENDER, PHONE, 0, None)
    assert "unsubscribed" in text
    assert InboundReply.get_by_id(key).state == "retrying"


def test_with_the_broker_out_of_reach_the_web_sends_the_answer_itself(
    client, db, provider, shop, monkeypatch
):
    def unreachable(*args, delay_ms):
        raise BrokerUnavailable("RabbitMQ down")

    monkeypatch.setattr(dispatch, "publish_reply", unreachable)
    # One answer rather than none: the webhook answered 200, no retry of the STOP will come
    assert reply(client, "STOP", id="in-21")["reply"] == "sent"
    assert [(sender, sms.to) for sender, sms in provider.sent] == [(SENDER, PHONE)]
    assert InboundReply.get().state == "sent"


def test_with_the_broker_out_of_reach_the_web_sends_every_answer_even_past_the_rate_limit(
    settings, redis_client, db, provider, monkeypatch
):
    # Given an account limited to 1 message a second, and the broker out of reach for the web
    limited = CheckedClient(
        create_wsgi(dataclasses.replace(settings, provider_rate_limit="1"), redis_client, provider)
    )
    make_shop(limited, "limited.example")

    def unreachable(*args, delay_ms):
        raise BrokerUnavailable("RabbitMQ down")

    monkeypatch.setattr(dispatch, "publish_reply", unreachable)
    # When three customers write STOP at once
    answers = [reply(limited, "STOP", phone=f"+30691234500{n}")["reply"] for n in range(3)]
    # Then each gets its answer now: there is no queue for it to wait in (a probe saw 35 of 40
    # left waiting two hours for the reconcile)
    assert answers == ["sent"] * 3
    assert len(provider.sent) == 3


def test_an_answer_that_surely_did_not_reach_the_provider_is_tried_again_by_the_worker(
    client, db, provider, shop, worker
):
    # Given a provider that refuses the first two calls (429, 503: nothing was sent)
    provider.outcomes += [
        SendResult(Outcome.NOT_SENT, reason="HTTP 429", retry_after_s=3, throttled=True),
        SendResult(Outcome.NOT_SENT, reason="HTTP 503"),
    ]

    # When the STOP arrives, and again (a provider retrying though it was answered 200)
    first, again = reply(client, "STOP", id="in-9"), reply(client, "STOP", id="in-9")

    # Then the number was opted out once, and the answer, queued once, waits for the worker's
    # next try after the Retry-After (the webhook answered 200: no provider retry would send it)
    assert (first["reply"], again["reply"]) == ("queued", None)
    assert [(args[-1], delay) for args, delay in worker] == [(0, None), (1, 3000)]
    queued = worker[1:]
    assert state(db, shop[0])["events"] == [("opt_in", "import"), ("opt_out", "reply")]

    # When the worker tries (refused again: 503), then once more, twice (a redelivery)
    assert replies.resend(*queued[0][0], provider) == "retrying"
    assert [(args[-1], delay) for args, delay in worker[2:]] == [(2, replies.RETRY_DELAY_MS * 2)]
    assert replies.resend(*worker[2][0], provider) == "sent"
    assert replies.resend(*worker[2][0], provider) is None

    # Then it went out once, on the third call
    assert len(provider.sent) == 3
    key = queued[0][0][0]
    assert InboundReply.get_by_id(key).state == "sent"


def test_answers_count_against_the_provider_rate_limit_and_wait_for_it_in_the_worker(
    settings, redis_client, db, provider, monkeypatch
):
    # Given an account limited to 2 messages a second, and a shop
    limited_settings = dataclasses.replace(settings, provider_rate_limit="2")
    limited = CheckedClient(create_wsgi(limited_settings, redis_client, provider))
    make_shop(limited, "limited.example")
    limiter = SendLimiter.for_settings(limited_settings, redis_client)
    queued: list[tuple] = []
    monkeypatch.setattr(
        dispatch, "publish_reply", lambda *args, delay_ms: queued.append((args, delay_ms))
    )

    # When four customers write HELP at once (a wave of replies after a large send), and the
    # worker takes each answer
    answers = [reply(limited, "HELP", phone=f"+30691234500{n}")["reply"] for n in range(4)]
    tries = [replies.resend(*args, provider, limiter) for args, _ in list(queued)]

    # Then two answers went out, and two wait in the worker's queue for the budget (about a
    # second), as their first try still: a rate limit costs no try
    assert answers == ["queued"] * 4
    assert tries == ["sent", "sent", "retrying", "retrying"]
    assert len(provider.sent) == 2
    again = queued[4:]
    assert [args[-1] for args, _ in again] == [0, 0]
    assert all(0 < delay <= 1100 for _, delay in again), again


def test_an_answer_never_taken_by_the_provider_fails_after_every_try(
    client, db, provider, shop, monkeypatch
):
    provider.outcomes += [SendResult(Outcome.NOT_SENT, reason="HTTP 503")] * (
        replies.RETRY_ATTEMPTS + 1
    )
    queued: list[tuple] = []
    monkeypatch.setattr(dispatch, "publish_reply", lambda *args, delay_ms: queued.append(args))
    assert reply(client, "STOP", id="in-10")["reply"] == "queued"
    assert replies.resend(*queued[0], provider) == "retrying"  # the worker's first try
    outcomes = [replies.resend(*queued[i], provider) for i in range(1, replies.RETRY_ATTEMPTS + 1)]
    assert outcomes == ["retrying"] * (replies.RETRY_ATTEMPTS - 1) + ["failed"]
    assert InboundReply.get_by_id(queued[0][0]).state == "failed"


def test_an_answer_of_unknown_outcome_is_never_sent_again(client, db, provider, shop):
    provider.outcomes.append(SendResult(Outcome.UNKNOWN, reason="read timeout"))
    assert reply(client, "STOP", id="in-5")["reply"] == "queued"
    assert InboundReply.get().state == "unknown"
    assert reply(client, "STOP", id="in-5")["reply"] is None
    assert len(provider.sent) == 1


def test_without_an_id_a_retry_is_recognised_by_its_content_and_time(client, provider, shop):
    stamp = "2025-03-01T10:00:00Z"
    reply(client, "STOP", timestamp=stamp)
    reply(client, "STOP", timestamp=stamp)
    reply(client, "STOP", timestamp="2025-03-01T10:05:00Z")  # a second STOP, a second answer
    assert len(provider.sent) == 2


# --- the webhook and the list ----------------------------------------------------------------


def test_the_inbound_webhook_needs_the_webhook_token(client, db, shop):
    body = {"from": PHONE, "to": SENDER, "text": "STOP"}
    assert_error(client.simulate_post("/webhooks/mitto/inbound", json=body), 401)
    assert_error(client.simulate_post("/webhooks/mitto/inbound?token=wrong", json=body), 401)
    headers = {"X-Webhook-Token": DLR_WEBHOOK_SECRET}
    assert (
        client.simulate_post("/webhooks/mitto/inbound", json=body, headers=headers).status_code
        == 200
    )
    assert state(db, shop[0])["suppressed"] == ["reply"]


def test_without_the_webhook_secret_the_inbound_webhook_is_off(
    settings, redis_client, db, provider
):
    off = CheckedClient(
        create_app(dataclasses.replace(settings, dlr_webhook_secret=None), redis_client, provider)
    )
    assert_error(off.simulate_post(INBOUND, json={"from": PHONE, "to": SENDER, "text": "x"}), 404)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"to": SENDER, "text": "STOP"}, "from"),
        ({"from": PHONE, "text": "STOP"}, "to"),
        ({"from": PHONE, "to": SENDER}, "text"),
        ({"from": "not a number", "to": SENDER, "text": "STOP"}, "from"),
        ({"from": PHONE, "to": SENDER, "text": "STOP", "id": -1}, "id"),
        ({"from": PHONE, "to": SENDER, "text": "STOP", "id": ""}, "id"),
    ],
)
def test_a_malformed_inbound_message_is_a_422_naming_the_field(client, db, body, field):
    assert_error(client.simulate_post(INBOUND, json=body), 422, field)


def test_a_stop_in_another_providers_spelling_is_honoured_once(client, db, provider, shop):
    # (a provider posts nothing again after a 4xx: a STOP refused for its spelling is lost)
    shop_id, _ = shop
    # When the STOP comes with both numbers and the id as JSON integers and a time without an
    # offset, then again as a retry, and a later reply with a time that cannot be read
    fields = {"from": int(PHONE.lstrip("+")), "to": int(SENDER), "text": "STOP", "id": 4711}
    first = client.simulate_post(INBOUND, json={**fields, "timestamp": "2026-12-03 14:17:51"})
    again = client.simulate_post(INBOUND, json={**fields, "timestamp": "2026-12-03 14:17:51"})
    vague = client.simulate_post(
        INBOUND, json={**fields, "id": "in-9", "text": "thanks", "timestamp": "yesterday"}
    )
    # Then the number is opted out with one answer, the retry recognised by its id
    assert [r.status_code for r in (first, again, vague)] == [200, 200, 200]
    assert (first.json["duplicate"], again.json["duplicate"]) == (False, True)
    assert state(db, shop_id)["suppressed"] == ["reply"]
    assert [(sender, sms.to) for sender, sms in provider.sent] == [(SENDER, PHONE)]
    assert (
        db.execute_sql(
            "SELECT provider_id, received_at FROM inbound_message ORDER BY id"
        ).fetchall()[0][0]
        == "4711"
    )


def test_the_inbound_list_is_paginated_and_only_the_shops_own(client, db, shop):
    shop_id, key = shop
    _, other_key = make_shop(client, "other.example", sender="306999000002")
    for n in range(3):
        reply(client, f"thanks {n}")
    reply(client, "hello other", to="306999000002")
    first = client.simulate_get("/inbound", headers=auth(key), params={"limit": 2}).json
    rest = client.simulate_get(
        "/inbound", headers=auth(key), params={"limit": 2, "after": first["next"]}
    ).json
    assert [item["text"] for item in first["items"] + rest["items"]] == [
        "thanks 0",
        "thanks 1",
        "thanks 2",
    ]
    assert rest["next"] is None
    other = client.simulate_get("/inbound", headers=auth(other_key)).json["items"]
    assert [item["text"] for item in other] == ["hello other"]
    assert_error(client.simulate_get("/inbound"), 401)


def test_an_answer_whose_try_was_lost_is_queued_again_by_the_reconcile(
    client, db, provider, shop, monkeypatch
):
    # Given an answer queued, its message lost (Redis flushed, a worker down for hours), and
    # another whose try died mid-call (a killed worker: it may have gone out)
    queued: list[tuple] = []
    monkeypatch.setattr(dispatch, "publish_reply", lambda *args, delay_ms: queued.append(args))
    assert reply(client, "STOP", id="in-11")["reply"] == "queued"
    assert reply(client, "HELP", id="in-12", phone="+306912345679")["reply"] == "queued"
    lost_key, mid_call_key = queued[0][0], queued[1][0]
    db.execute_sql(
        "UPDATE inbound_reply SET state = 'sending' WHERE message_key = %s", (mid_call_key,)
    )

    # When the reconcile runs: within the tries' time it leaves them; past it, acts
    assert replies.requeue_abandoned() == 0
    db.execute_sql("UPDATE inbound_reply SET created_at = now() - interval '3 hours'")
    assert replies.requeue_abandoned() == 2

    # Then the lost one is queued again for a last try, to the number of its inbound message
    # (the webhook answered 200: no provider retry would ever come), and the worker sends it
    assert [(args[0], args[2], args[-1]) for args in queued[2:]] == [
        (lost_key, PHONE, replies.RETRY_ATTEMPTS)
    ]
    assert replies.resend(*queued[2], provider) == "sent"
    assert [sms.to for _, sms in provider.sent] == [PHONE]
    # And the one lost mid-call is unknown, never sent again
    assert InboundReply.get_by_id(mid_call_key).state == "unknown"
    assert replies.requeue_abandoned() == 0


def test_a_worker_that_cannot_queue_the_next_try_leaves_it_to_dramatiqs_retry(
    client, db, provider, shop, monkeypatch
):
    # Given an answer queued, and a provider refusing its first try (503)
    queued: list[tuple] = []
    monkeypatch.setattr(dispatch, "publish_reply", lambda *args, delay_ms: queued.append(args))
    reply(client, "STOP", id="in-13")
    provider.outcomes.append(SendResult(Outcome.NOT_SENT, reason="HTTP 503"))

    def unreachable(*args, delay_ms):
        raise BrokerUnavailable("RabbitMQ down")

    monkeypatch.setattr(dispatch, "publish_reply", unreachable)
    # When the worker's try cannot queue the next one, Then it raises (Dramatiq retries the
    # message) and the row waits in `retrying` for it: the answer is not given up
    with pytest.raises(BrokerUnavailable):
        replies.resend(*queued[0], provider)
    assert InboundReply.get_by_id(queued[0][0]).state == "retrying"
    monkeypatch.setattr(dispatch, "publish_reply", lambda *args, delay_ms: None)
    assert replies.resend(*queued[0], provider) == "sent"


def test_a_publish_that_failed_after_the_broker_took_it_sends_one_answer(
    client, db, provider, shop, monkeypatch
):
    # Given a publish that reached the broker but whose confirmation was lost, and a worker
    # that took the answer at once
    def taken_then_lost(*args, delay_ms):
        replies.resend(*args, provider)
        raise BrokerUnavailable("connection closed after the publish")

    monkeypatch.setattr(dispatch, "publish_reply", taken_then_lost)
    # When the web falls back, Then it finds the answer taken and sends nothing more
    assert reply(client, "STOP", id="in-14")["reply"] == "queued"
    assert len(provider.sent) == 1


def test_a_stop_labelled_as_text_is_still_read(client, db, provider, shop):
    # (the JSON API's 415 for a body labelled as something else must not reach the
    # provider's webhook: a STOP refused for its label is an opt-out lost)
    shop_id, _ = shop
    answer = client.simulate_post(
        INBOUND,
        headers={"Content-Type": "text/plain"},
        body=json.dumps({"from": PHONE.lstrip("+"), "to": SENDER, "text": "STOP"}).encode(),
    )
    assert answer.status_code == 200, answer.text
    assert state(db, shop_id)["opted_out"] is True


@pytest.mark.parametrize("written", ["alpha shop", "ALPHASHOP", "A L P H A S H O P"])
def test_an_answer_goes_from_the_sender_as_the_shop_registered_it(client, db, provider, written):
    # Given a shop sending as "AlphaShop"
    shop_id, _ = make_shop(client, "alpha.example", sender="AlphaShop")
    # When a number writes STOP to it, spelt otherwise by the customer's phone
    answer = reply(client, "STOP", to=written)
    # Then the answer goes from the registered sender id (a provider refuses an unregistered one)
    assert answer["shops"] == 1
    assert [sender for sender, _ in provider.sent] == ["AlphaShop"]


def test_a_deeply_nested_extra_field_is_ignored_not_a_500(client, db, provider, shop):
    # Given a STOP with an extra field nested far deeper than Python's recursion limit
    # (900 levels: JSON's parser takes them, a recursive walk of them does not)
    nested = "[" * 900 + "1" + "]" * 900
    body = f'{{"from": "306912345678", "to": "{SENDER}", "text": "STOP", "x": {nested}}}'
    answer = client.simulate_post(INBOUND, body=body, headers={"Content-Type": "application/json"})
    # Then it is read (it was a 500 once the text was cleaned recursively)
    assert answer.status_code == 200, answer.text[:300]
    assert state(db, shop[0])["suppressed"] == ["reply"]


def test_a_key_holding_a_nul_is_not_read_as_the_field_it_resembles(client, db, provider, shop):
    # Given a body whose "te\u0000xt" key would read as "text" once cleaned
    body = f'{{"from": "306912345678", "to": "{SENDER}", "text": "hello", "te\\u0000xt": "STOP"}}'
    answer = client.simulate_post(INBOUND, body=body, headers={"Content-Type": "application/json"})
    # Then the text is "hello": no keyword, nothing suppressed
    assert answer.status_code == 200, answer.text
    assert answer.json["keyword"] is None
    assert state(db, shop[0])["suppressed"] == []


def test_an_answer_whose_publish_died_with_the_web_goes_out_at_the_stop_posted_again(
    client, db, provider, shop, monkeypatch, worker
):
    # Given a STOP whose answer row was committed, and the web process died before its
    # publish (so no 200: the provider will post the STOP again)
    def dies(*args, delay_ms):
        raise SystemExit("kill -9")

    monkeypatch.setattr(dispatch, "publish_reply", dies)
    with pytest.raises(SystemExit):
        client.simulate_post(
            INBOUND, json={"from": PHONE.lstrip("+"), "to": SENDER, "text": "STOP", "id": "in-died"}
        )
    assert InboundReply.get().state == "retrying" and provider.sent == []
    monkeypatch.undo()
    monkeypatch.setattr(
        dispatch,
        "publish_reply",
        lambda *args, delay_ms: worker.append((args, delay_ms)) or replies.resend(*args, provider),
    )

    # When the provider posts it again at once, Then nothing more is queued (its first
    # publish may be on its way)
    assert reply(client, "STOP", id="in-died")["reply"] is None

    # When it posts it again later, Then the answer is queued and goes out, once (before:
    # it waited for the reconcile's ABANDONED_AFTER_S, 2 hours)
    db.execute_sql("UPDATE inbound_reply SET created_at = now() - interval '11 seconds'")
    assert reply(client, "STOP", id="in-died")["reply"] == "queued"
    assert reply(client, "STOP", id="in-died")["reply"] is None  # taken: sent
    assert [(sender, sms.to) for sender, sms in provider.sent] == [(SENDER, PHONE)]
    assert InboundReply.get().state == "sent"
