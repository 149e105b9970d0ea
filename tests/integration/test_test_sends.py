"""Test sends on real PostgreSQL and Redis with a fake provider: the campaign's text to one
number, its credits held at the request and debited once when accepted, refused for a number
SPEC 11 forbids, and under the account's rate limit and cool-down like any message."""

from __future__ import annotations

import dataclasses
import time

import peewee
import pytest

from models import TestSend
from models.database import db, fetchall
from service import (
    audit,
    campaigns,
    contacts,
    credits,
    erasure,
    shops,
    suppressions,
    test_sends,
)
from service.errors import InsufficientCredits, InvalidInput
from service.infra import dispatch
from service.infra.ratelimit import SendLimiter
from service.provider import Outcome, SendResult, Sms
from tests.integration.ledger import assert_books_balance, shop_with_contacts

KEY = audit.Actor.key(1)


class Provider:
    def __init__(self, answer: SendResult | None = None) -> None:
        self.answer = answer
        self.sent: list[Sms] = []

    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        if self.answer is not None:
            return self.answer
        self.sent.append(sms)
        return SendResult(Outcome.ACCEPTED, provider_id=f"p-{sms.reference}")

    def send_bulk(self, *args, **kwargs):  # pragma: no cover - a test send is one /sms call
        raise AssertionError("a test send is never a bulk call")


@pytest.fixture
def shop(db):
    shop_id, contact_ids = shop_with_contacts("tests.example", 10, 3)
    contacts.import_contacts(
        shop_id, [{"phone": "+306900000001", "first_name": "Zoe"}], actor=audit.ADMIN
    )
    campaign = campaigns.create(shop_id, "c", "Hi {first_name}, sale today", None, False)
    return shop_id, campaign.id


def test_a_test_send_is_composed_held_sent_and_debited_once(shop, settings, redis_client):
    # Given a campaign with a first-name placeholder and a contact named Zoe
    shop_id, campaign_id = shop

    # When the merchant asks for a test send to Zoe's number
    asked = test_sends.request(shop_id, campaign_id, "+306900000001", settings, KEY)

    # Then its text is Zoe's, and its cost is held from the available credits
    assert asked["status"] == "queued" and asked["text"] == "Hi Zoe, sale today"
    assert credits.summary(shop_id) == credits.CreditSummary(10, 1, 9)

    # When the worker delivers it, twice (a redelivered message)
    provider = Provider()
    limiter = SendLimiter(redis_client, "acct", "100/second")
    first = test_sends.deliver(asked["id"], provider, limiter, settings)
    again = test_sends.deliver(asked["id"], provider, limiter, settings)

    # Then it was sent once and debited once; nothing is held any more
    assert (first.status, again.status) == ("sent", "sent")
    assert [sms.to for sms in provider.sent] == ["+306900000001"]
    assert credits.summary(shop_id) == credits.CreditSummary(9, 0, 9)
    assert assert_books_balance(shop_id)["debit"] == -1
    # And the trail has the merchant's request and the worker's send
    trail = fetchall(
        "SELECT actor_kind, action, to_status FROM audit_event"
        " WHERE subject = 'test_send' ORDER BY id"
    )
    assert trail == [("key", "requested", "queued"), ("worker", "sent", "sent")]


def test_a_number_that_is_no_contact_gets_a_blank_first_name(shop, settings):
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000099", settings, KEY)
    assert asked["text"] == "Hi, sale today"


def test_an_opted_out_or_suppressed_number_is_refused_naming_the_phone(shop, settings):
    # Given one contact opted out (by its link)
    shop_id, campaign_id = shop
    contact_id = fetchall(
        "SELECT id FROM contact WHERE shop_id = %s AND phone = '+306900000001'", (shop_id,)
    )[0][0]
    contacts.opt_out(shop_id, contact_id, settings.secret_key, audit.UNSUBSCRIBE_PAGE)

    # Then a test send to it is refused with a 422 naming the phone, and nothing is held
    with pytest.raises(InvalidInput, match="suppressed") as refused:
        test_sends.request(shop_id, campaign_id, "+306900000001", settings, KEY)
    assert refused.value.field == "phone"
    assert credits.summary(shop_id).reserved == 0
    assert TestSend.select().count() == 0
    # And a number that is not one is a 422 too
    with pytest.raises(InvalidInput) as bad:
        test_sends.request(shop_id, campaign_id, "12", settings, KEY)
    assert bad.value.field == "phone"


def test_a_number_suppressed_after_the_request_is_not_sent(shop, settings, redis_client):
    # Given a queued test send whose number replies STOP before the worker gets to it
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    with db.atomic():
        suppressions.suppress(shop_id, "+306900000002", "reply", settings.secret_key, KEY)

    # When the worker delivers it
    provider = Provider()
    done = test_sends.deliver(asked["id"], provider, None, settings)

    # Then it failed as suppressed, unsent and uncharged
    assert done.status == "failed" and provider.sent == []
    assert credits.summary(shop_id) == credits.CreditSummary(10, 0, 10)


def test_a_shop_requiring_consent_test_sends_only_to_contacts_with_consent(db, settings):
    shop, _ = shops.create_shop("consent.example", "consent.example", require_consent=True)
    credits.top_up(shop.id, 5, "initial", audit.ADMIN)
    campaign = campaigns.create(shop.id, "c", "Hello", None, False)
    with pytest.raises(InvalidInput, match="consent"):
        test_sends.request(shop.id, campaign.id, "+306900000005", settings, KEY)


def test_without_credits_available_it_is_a_402_and_nothing_is_held(shop, settings):
    # Given a shop whose 10 credits are all held by test sends
    shop_id, campaign_id = shop
    for _ in range(10):
        test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)

    # Then one more is refused
    with pytest.raises(InsufficientCredits):
        test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    assert credits.summary(shop_id) == credits.CreditSummary(10, 10, 0)


def test_the_rate_limit_and_the_cool_down_put_it_back_on_its_queue(shop, settings, redis_client):
    # Given an account whose budget another worker used up
    shop_id, campaign_id = shop
    limiter = SendLimiter(redis_client, "acct", "5/second")
    assert limiter.dispatch("Other", 5).count == 5
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)

    # When the worker delivers it
    provider = Provider()
    refused = test_sends.deliver(asked["id"], provider, limiter, settings)

    # Then it is not sent, and goes back on its queue until the budget frees (no sleep)
    assert refused.status == "queued" and 0 < refused.delay_ms <= 1016
    assert provider.sent == [] and credits.summary(shop_id).reserved == 1

    # And a 429 cools the account down for every worker; the test send waits as long
    cooled = SendLimiter(redis_client, "other-acct")
    throttled = SendResult(Outcome.NOT_SENT, reason="HTTP 429", retry_after_s=2, throttled=True)
    waited = test_sends.deliver(asked["id"], Provider(throttled), cooled, settings)
    assert waited.status == "queued" and 1900 <= waited.delay_ms <= 2000
    assert TestSend.get_by_id(asked["id"]).attempts == 0  # no try spent


def test_one_admitted_ahead_but_refused_at_dispatch_gives_its_admission_and_try_back(
    shop, settings, redis_client
):
    # Given an account of 5 a second whose admission looks 600 ms ahead, and its dispatch
    # count full for a second: another worker's five sends
    shop_id, campaign_id = shop
    limiter = SendLimiter(redis_client, "acct", "5/second", lookahead_ms=600)
    assert limiter.dispatch("Other", 5).count == 5
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)

    # When the worker delivers it 500 ms later (admitted: the budget frees within 600 ms),
    # allowed to wait only 50 ms for its departure
    time.sleep(0.5)
    quick = dataclasses.replace(settings, provider_rate_lookahead_ms=25)
    refused = test_sends.deliver(asked["id"], Provider(), limiter, quick)

    # Then it goes back on its queue, and its admission leaves the account's count: it sent
    # nothing (kept, the admission would count a send that never happened for a second)
    assert refused.status == "queued" and refused.limited == "provider"
    assert limiter.share is not None
    assert redis_client.llen(limiter.share.admitted_key) == 0
    # ...and no try spent (before: each such refusal took one of its 5 tries, and a send
    # held back 4 times failed at its first 503)
    assert TestSend.get_by_id(asked["id"]).attempts == 0


def test_a_rejection_or_an_unknown_outcome_charges_nothing(shop, settings):
    shop_id, campaign_id = shop
    rejected = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    unknown = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    no = Provider(SendResult(Outcome.REJECTED, reason="invalid number"))
    assert test_sends.deliver(rejected["id"], no, None, settings).status == "failed"
    maybe = Provider(SendResult(Outcome.UNKNOWN, reason="read timeout"))
    assert test_sends.deliver(unknown["id"], maybe, None, settings).status == "failed"
    assert TestSend.get_by_id(unknown["id"]).error == "unknown_outcome"
    # (the unknown one's cost stays held for the evidence window: its acceptance may still
    # come, and must find its credits)
    assert credits.summary(shop_id) == credits.CreditSummary(10, 1, 9)
    end_evidence_window(unknown["id"], settings)
    assert credits.summary(shop_id) == credits.CreditSummary(10, 0, 10)


def given_up_by_the_reconcile(test_send_id: int, settings) -> None:
    """Claimed by a worker that died before the provider answered, then failed as of unknown
    outcome by the reconcile."""
    db.execute_sql(
        "UPDATE test_send SET status = 'sending', claimed_at = now() - interval '1 hour'"
        " WHERE id = %s",
        (test_send_id,),
    )
    test_sends.repair(settings, audit.ADMIN)


def end_evidence_window(test_send_id: int, settings) -> None:
    db.execute_sql(
        "UPDATE test_send SET finished_at = now() - %s * interval '1 millisecond'"
        " - interval '1 second' WHERE id = %s",
        (settings.evidence_window_ms, test_send_id),
    )


def test_an_acceptance_after_the_reconcile_gave_up_finds_its_credits_held(shop, settings):
    # Given a test send the reconcile failed as of unknown outcome (its claim timed out)
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    given_up_by_the_reconcile(asked["id"], settings)

    # When the merchant tries to spend every credit meanwhile, the hold stands in the way
    with pytest.raises(InsufficientCredits):
        credits.adjust(shop_id, -10, "spend", "spend-all", audit.ADMIN)
    credits.adjust(shop_id, -9, "spend", "spend-rest", audit.ADMIN)

    # Then the provider's late acceptance is persisted and charged (before: the debit broke
    # the balance's check, and persistTestSend failed at every retry)
    assert test_sends.accepted(asked["id"], "p-late") is True
    assert credits.summary(shop_id) == credits.CreditSummary(0, 0, 0)
    assert assert_books_balance(shop_id)["debit"] == -1


def test_an_acceptance_after_the_evidence_window_with_the_credits_spent_is_not_charged(
    shop, settings
):
    # Given a test send of unknown outcome whose evidence window is over, and the shop's
    # credits spent since
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    given_up_by_the_reconcile(asked["id"], settings)
    end_evidence_window(asked["id"], settings)
    credits.adjust(shop_id, -10, "spend", "spend-all", audit.ADMIN)

    # When the provider's acceptance is persisted at last
    assert test_sends.accepted(asked["id"], "p-late") is True

    # Then it is sent, not charged, and the balance never went below zero
    row = TestSend.get_by_id(asked["id"])
    assert (row.status, row.provider_id) == ("sent", "p-late")
    assert credits.summary(shop_id) == credits.CreditSummary(0, 0, 0)


def test_an_acceptance_after_the_evidence_window_never_takes_credits_others_hold(shop, settings):
    # Given a test send of unknown outcome whose evidence window is over, and every credit of
    # the shop held by other test sends since
    shop_id, campaign_id = shop
    late = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    given_up_by_the_reconcile(late["id"], settings)
    end_evidence_window(late["id"], settings)
    for _ in range(10):
        test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    assert credits.summary(shop_id) == credits.CreditSummary(10, 10, 0)

    # When its acceptance is persisted at last
    assert test_sends.accepted(late["id"], "p-late") is True

    # Then it is sent and not charged: the others' credits stay theirs (before: balance 9,
    # reserved 10, available -1)
    assert credits.summary(shop_id) == credits.CreditSummary(10, 10, 0)


def test_erasing_the_number_erases_its_test_sends_and_frees_a_queued_ones_credits(shop, settings):
    # Given a test send queued for Zoe's number
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000001", settings, KEY)

    # When the number is erased (Shopify's customers/redact)
    erasure.erase_number(shop_id, "+306900000001", settings.secret_key, audit.SHOPIFY_WEBHOOK)

    # Then neither the number nor the text is kept, it will not be sent, and frees its credit
    row = TestSend.get_by_id(asked["id"])
    assert (row.phone, row.text, row.status, row.error) == (None, None, "failed", "erased")
    assert test_sends.deliver(row.id, Provider(), None, settings).status == "failed"
    assert credits.summary(shop_id).reserved == 0


def test_the_reconcile_fails_a_claim_its_worker_never_finished_and_frees_its_credits(
    shop, settings, redis_client
):
    # Given a test send claimed by a worker that died before the provider answered
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    db.execute_sql(
        "UPDATE test_send SET status = 'sending', claimed_at = now() - interval '1 hour'"
        " WHERE id = %s",
        (asked["id"],),
    )
    assert credits.summary(shop_id).reserved == 1

    # When the clock reconciles
    assert test_sends.repair(settings, audit.Actor.clock("reconcile", 1)) == 1

    # Then it failed as of unknown outcome, never resent, charging nothing
    row = TestSend.get_by_id(asked["id"])
    assert (row.status, row.error) == ("failed", "unknown_outcome")
    assert credits.summary(shop_id) == credits.CreditSummary(10, 1, 9)  # held, see above
    end_evidence_window(asked["id"], settings)
    assert credits.summary(shop_id) == credits.CreditSummary(10, 0, 10)


def test_a_number_erased_while_its_call_was_in_flight_fails_when_the_call_comes_back_unsent(
    shop, settings
):
    # Given a test send claimed by a worker whose call is in flight
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000001", settings, KEY)
    db.execute_sql(
        "UPDATE test_send SET status = 'sending', claimed_at = now() WHERE id = %s",
        (asked["id"],),
    )

    # When the number is erased meanwhile (the erasure leaves a claimed row to its worker),
    # and the call comes back unsent, so the worker puts it back on its queue
    erasure.erase_number(shop_id, "+306900000001", settings.secret_key, audit.SHOPIFY_WEBHOOK)
    test_sends._unclaim(asked["id"])
    assert TestSend.get_by_id(asked["id"]).status == "queued"

    # Then its next delivery fails it as erased and frees its credits, instead of leaving it
    # queued (and its credits held) for ever
    assert test_sends.deliver(asked["id"], Provider(), None, settings).status == "failed"
    row = TestSend.get_by_id(asked["id"])
    assert (row.phone, row.status, row.error) == (None, "failed", "erased")
    assert credits.summary(shop_id).reserved == 0


def test_a_stale_test_send_is_republished_once_per_staleness_period(shop, settings, monkeypatch):
    # Given a test send queued long ago (its message lost, or waiting out a long cool-down)
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000002", settings, KEY)
    db.execute_sql(
        "UPDATE test_send SET created_at = now() - interval '1 hour' WHERE id = %s",
        (asked["id"],),
    )
    published: list[int] = []
    monkeypatch.setattr(test_sends.dispatch, "publish_test_send", published.append)

    # When the clock reconciles twice in a row
    clock_actor = audit.Actor.clock("reconcile", 1)
    test_sends.repair(settings, clock_actor)
    test_sends.repair(settings, clock_actor)

    # Then it was published again once, not once per reconcile
    assert published == [asked["id"]]


def test_an_acceptance_that_cannot_be_persisted_is_handed_over_and_charged_once(
    shop, settings, redis_client, monkeypatch
):
    # Given a test send whose acceptance cannot be written when the provider answers
    # (PostgreSQL went away mid-call)
    shop_id, campaign_id = shop
    asked = test_sends.request(shop_id, campaign_id, "+306900000001", settings, KEY)
    real, handed = test_sends.accepted, []

    def connection_lost(test_send_id, provider_id):
        raise peewee.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(test_sends, "accepted", connection_lost)
    monkeypatch.setattr(dispatch, "publish_test_send_persist", lambda *args: handed.append(args))

    # When the worker delivers it
    provider = Provider()
    delivered = test_sends.deliver(asked["id"], provider, None, settings)

    # Then the provider's answer is handed to persistTestSend, not lost
    assert delivered.status == "sent" and handed == [(asked["id"], f"p-test-{asked['id']}")]
    monkeypatch.setattr(test_sends, "accepted", real)

    # When the reconcile meanwhile failed it as an unknown outcome (its claim timed out), and
    # then the repair runs, twice (a redelivered message)
    db.execute_sql(
        "UPDATE test_send SET claimed_at = now() - interval '1 hour' WHERE id = %s", (asked["id"],)
    )
    test_sends.repair(settings, audit.ADMIN)
    assert TestSend.get_by_id(asked["id"]).error == "unknown_outcome"
    assert [test_sends.accepted(*handed[0]) for _ in range(2)] == [True, False]

    # Then it is sent and debited once: the provider's acceptance is the evidence
    row = TestSend.get_by_id(asked["id"])
    assert (row.status, row.error, row.provider_id) == ("sent", None, f"p-test-{asked['id']}")
    assert credits.summary(shop_id) == credits.CreditSummary(9, 0, 9)
    assert assert_books_balance(shop_id)["debit"] == -1
