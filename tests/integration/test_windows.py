"""A batch sent window by window on real PostgreSQL and Redis, with a fake provider: claims
no larger than the calls in flight, pause and opt-out at the next window, the deadline and
a shutdown putting the rest back on the queue, and a time limit that loses no answer."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from dramatiq.middleware.threading import raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded

from models.database import connection, execute, fetchall
from service import audit, campaigns, contacts, credits, shops
from service.consent import Consent
from service.creation import batch_key
from service.enqueue import enqueue
from service.infra import faults
from service.infra.call_slots import CallSlots
from service.infra.ratelimit import SendLimiter
from service.provider import Outcome, SendResult, Sms
from service.sending import Accepted, claim_recipients, persist_results
from service.windows import BatchSender


class FakeProvider:
    """Accepts every message, unless `answer` says otherwise; `during_call(sms)` runs inside
    each `/sms` call (a test looks at the database there, or pauses the campaign)."""

    def __init__(
        self,
        during_call: Callable[[Sms], None] | None = None,
        answer: Callable[[Sms], SendResult] | None = None,
    ) -> None:
        self.during_call, self.answer = during_call, answer
        self.sent: list[str] = []
        self.bulk_calls = 0
        self.lock = threading.Lock()

    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        if self.during_call:
            self.during_call(sms)
        result = (
            self.answer(sms)
            if self.answer
            else SendResult(Outcome.ACCEPTED, provider_id=f"p-{sms.reference}")
        )
        if result.outcome is Outcome.ACCEPTED:
            with self.lock:
                self.sent.append(sms.to)
        return result

    def send_bulk(
        self, sender: str, to: list[str], text: str, reference: str, callback: str | None
    ) -> list[SendResult]:
        with self.lock:
            self.bulk_calls += 1
            self.sent += to
        return [SendResult(Outcome.ACCEPTED, provider_id=f"b-{number}") for number in to]


class HeldCalls(Executor):
    """A pool whose first `running` calls start at once and wait for `release`; the others
    never start, as on a pool busy with other batches' calls."""

    def __init__(self, running: int) -> None:
        self.running, self.started = running, 0
        self.released = threading.Event()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        if self.started < self.running:
            self.started += 1
            future.set_running_or_notify_cancel()

            def run() -> None:
                self.released.wait(60)
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as error:  # noqa: BLE001 - handed to the future
                    future.set_exception(error)

            threading.Thread(target=run, daemon=True).start()
        return future


class Clock:
    """Monotonic seconds that a test moves on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def batch(db, settings):
    """A sending campaign of twelve personalised messages in one batch:
    (shop id, campaign id, recipient ids, batch key)."""
    shop, _ = shops.create_shop("windows.example", "Windows", require_consent=False)
    credits.top_up(shop.id, 1000, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id,
        [{"phone": f"+30690000{i:04d}", "first_name": f"N{i}"} for i in range(12)],
        actor=audit.ADMIN,
    )
    campaign = campaigns.create(
        shop.id, "c", "Hi {first_name}, new in today", append_unsubscribe=False
    )
    enqueue(shop.id, campaign.id, dataclasses.replace(settings, send_batch_size=12), audit.ADMIN)
    ids = [
        row[0]
        for row in fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s ORDER BY id", (campaign.id,)
        )
    ]
    return shop.id, campaign.id, ids, batch_key(campaign.id, ids)


def statuses(campaign_id: int) -> dict[str, int]:
    return dict(
        fetchall(
            "SELECT status, count(*) FROM campaign_recipient"
            " WHERE campaign_id = %s GROUP BY status",
            (campaign_id,),
        )
    )


def in_flight(campaign_id: int) -> int:
    with connection():  # the provider's calls run on pool threads, each with its connection
        return statuses(campaign_id).get("sending", 0)


def batch_state(key: str) -> tuple[str, int]:
    return fetchall("SELECT state, publish_count FROM send_batch WHERE key = %s", (key,))[0]


def sender(settings, provider, slots: int = 4, **options) -> BatchSender:
    calls = options.pop("calls", None) or ThreadPoolExecutor(slots)
    return BatchSender(settings, provider, calls, CallSlots(slots), **options)


def test_a_batch_claims_no_more_recipients_than_the_calls_it_makes_at_once(batch, settings):
    # Given a batch of twelve and a process that makes four calls at once
    shop_id, campaign_id, ids, key = batch
    seen: list[int] = []
    provider = FakeProvider(during_call=lambda sms: seen.append(in_flight(campaign_id)))

    # When the batch is sent
    report = sender(settings, provider, slots=4).send(campaign_id, shop_id, ids, key)

    # Then it went in three windows of four: during every call, exactly its window was
    # claimed, each window persisted before the next was claimed
    assert (report.windows, report.claimed, report.accepted) == (3, 12, 12)
    assert len(seen) == 12 and set(seen) == {4}
    assert statuses(campaign_id) == {"sent": 12}
    assert batch_state(key)[0] == "finished"
    assert fetchall("SELECT count(*) FROM credit_transaction WHERE kind = 'debit'")[0][0] == 12


def test_a_uniform_batch_is_one_bulk_call_however_few_the_slots(db, settings):
    # Given a campaign whose texts are all the same, and a process of two call slots
    shop, _ = shops.create_shop("bulk.example", "Bulk", require_consent=False)
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id, [{"phone": f"+30691000{i:04d}"} for i in range(12)], actor=audit.ADMIN
    )
    campaign = campaigns.create(shop.id, "c", "Sale today", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, settings, audit.ADMIN)
    ids = [row[0] for row in fetchall("SELECT id FROM campaign_recipient ORDER BY id")]
    provider = FakeProvider()

    # When its batch is sent
    report = sender(settings, provider, slots=2).send(
        shop_id=shop.id, campaign_id=campaign.id, recipient_ids=ids, key=batch_key(campaign.id, ids)
    )

    # Then one /smsbulk call carried the whole batch: one call is one window
    assert (provider.bulk_calls, report.windows, report.accepted) == (1, 1, 12)


def pausing_provider(shop_id: int, campaign_id: int) -> FakeProvider:
    """A provider during whose first call the merchant pauses the campaign."""
    paused = threading.Event()

    def pause_once(sms: Sms) -> None:
        if not paused.is_set():
            paused.set()
            with connection():
                campaigns.pause(shop_id, campaign_id, audit.ADMIN)

    return FakeProvider(during_call=pause_once)


def test_a_pause_stops_the_batch_at_its_next_window(batch, settings):
    # Given a batch whose first window's calls are in flight when the merchant pauses
    shop_id, campaign_id, ids, key = batch
    provider = pausing_provider(shop_id, campaign_id)
    send = sender(settings, provider, slots=4)

    # When the batch is sent
    report = send.send(campaign_id, shop_id, ids, key)

    # Then the window in flight was sent and persisted, and nothing more was claimed
    assert (len(provider.sent), report.accepted, report.republished) == (4, 4, False)
    assert statuses(campaign_id) == {"sent": 4, "pending": 8}
    assert batch_state(key)[0] != "finished"  # resume publishes it again

    # When it is resumed and the batch delivered again, Then the rest is sent, each once
    campaigns.resume(shop_id, campaign_id, settings, audit.ADMIN)
    send.send(campaign_id, shop_id, ids, key)
    assert statuses(campaign_id) == {"sent": 12}
    assert len(provider.sent) == len(set(provider.sent)) == 12


def test_a_batch_delivered_again_draws_only_on_what_its_earlier_deliveries_left(batch, settings):
    # Given a batch whose messages (12 credits) turned out to cost twice its part of the
    # reservation (6: contacts renamed while a large audience was being created), and a shop
    # with nothing available beyond that reservation
    shop_id, campaign_id, ids, key = batch
    execute("UPDATE send_batch SET reserved = 6 WHERE key = %s", (key,))
    execute("UPDATE credit_reservation SET amount = 6 WHERE campaign_id = %s", (campaign_id,))
    execute("UPDATE shop SET credit_balance = 6 WHERE id = %s", (shop_id,))
    provider = pausing_provider(shop_id, campaign_id)
    send = sender(settings, provider, slots=4)

    # When its first window is sent (4 credits), the merchant pauses and resumes, and the
    # batch is delivered again
    send.send(campaign_id, shop_id, ids, key)
    campaigns.resume(shop_id, campaign_id, settings, audit.ADMIN)
    send.send(campaign_id, shop_id, ids, key)

    # Then the second delivery had 2 credits left, not 6 again: the next window (4) could not
    # be covered and failed, and no message was sent that the shop was not charged for
    assert len(provider.sent) == 4
    assert statuses(campaign_id) == {"sent": 4, "failed": 8}
    debited = fetchall(
        "SELECT -sum(amount) FROM credit_transaction WHERE kind = 'debit' AND campaign_id = %s",
        (campaign_id,),
    )[0][0]
    assert debited == 4
    assert fetchall("SELECT credit_balance FROM shop WHERE id = %s", (shop_id,))[0][0] == 2


def test_a_batch_delivered_again_keeps_the_bound_of_each_message_in_flight(db, settings):
    # Given a batch of twelve of which one message costs 2 (a long Greek name) and eleven 1:
    # its part of the reservation is 13, and the shop has nothing available beyond it
    shop, _ = shops.create_shop("bounds.example", "Bounds", require_consent=False)
    credits.top_up(shop.id, 13, "initial", audit.ADMIN)
    names = [f"N{i}" for i in range(11)] + ["\u0391" * 60]
    contacts.import_contacts(
        shop.id,
        [{"phone": f"+30690001{i:04d}", "first_name": name} for i, name in enumerate(names)],
        actor=audit.ADMIN,
    )
    campaign = campaigns.create(shop.id, "c", "Hi {first_name}, new in", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, dataclasses.replace(settings, send_batch_size=12), audit.ADMIN)
    ids = [
        row[0]
        for row in fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s ORDER BY id", (campaign.id,)
        )
    ]
    key = batch_key(campaign.id, ids)
    assert fetchall("SELECT reserved FROM send_batch WHERE key = %s", (key,))[0][0] == 13
    # ... whose first delivery sent one cheap message and left another of unknown outcome
    claimed = claim_recipients(campaign.id, ids[:2], key)
    persist_results(shop.id, campaign.id, [Accepted(claimed[0].id, "p-0", "Hi N0", 1, "GR")], [])
    execute(
        "UPDATE campaign_recipient SET status = 'failed', error = 'unknown_outcome' WHERE id = %s",
        (ids[1],),
    )
    provider = FakeProvider()

    # When the batch is delivered again (a 429, a pause: the provider's report not yet in)
    sender(settings, provider, slots=4).send(campaign.id, shop.id, ids, key)

    # Then its budget is 13 - 1 sent - 1 for the cheap one in flight = 11, which covers the
    # other ten (11): all are sent. At the batch's average (13/12, rounded up: 2) it was 10,
    # and the window with the dear message failed insufficient_credits
    assert statuses(campaign.id) == {"sent": 11, "failed": 1}
    assert len(provider.sent) == 10


def test_an_opt_out_during_a_window_skips_the_contact_at_the_next_one(batch, settings):
    # Given a contact of the batch's last window who opts out while the first is in flight
    shop_id, campaign_id, ids, key = batch
    last = fetchall("SELECT contact_id, phone FROM campaign_recipient WHERE id = %s", (ids[-1],))[0]
    opted = threading.Event()

    def opt_out_once(sms: Sms) -> None:
        if not opted.is_set():
            opted.set()
            with connection():
                contacts.opt_out(shop_id, last[0], settings.secret_key, audit.UNSUBSCRIBE_PAGE)

    provider = FakeProvider(during_call=opt_out_once)

    # When the batch is sent
    sender(settings, provider, slots=4).send(campaign_id, shop_id, ids, key)

    # Then that contact got nothing and is skipped; everyone else was sent once
    assert last[1] not in provider.sent
    assert statuses(campaign_id) == {"sent": 11, "skipped": 1}


def test_consent_withdrawn_after_the_enqueue_skips_the_contact_at_its_window(db, settings):
    # Given a shop that requires consent, twelve contacts with Shopify's consent, a campaign
    # enqueued to them in one batch
    shop, _ = shops.create_shop("consent.example", "Consent", require_consent=True)
    credits.top_up(shop.id, 1000, "initial", audit.ADMIN)
    phones = [f"+30690001{i:04d}" for i in range(12)]
    given = Consent("shopify", datetime(2026, 1, 1, tzinfo=UTC))
    contacts.import_contacts(
        shop.id, [{"phone": p, "consent": given} for p in phones], actor=audit.ADMIN
    )
    campaign = campaigns.create(shop.id, "c", "Hi {first_name}", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, dataclasses.replace(settings, send_batch_size=12), audit.ADMIN)
    ids = [r[0] for r in fetchall("SELECT id FROM campaign_recipient ORDER BY id")]
    withdrawn = phones[-4:]
    done = threading.Event()

    def withdraw_once(sms: Sms) -> None:
        # While the first window is in flight, a re-import says "Accepts SMS Marketing: no"
        # for the last four, and an admin opts another one out of the contacts' list
        if not done.is_set():
            done.set()
            with connection():
                contacts.import_contacts(
                    shop.id,
                    [{"phone": p, contacts.WITHDRAWS_SHOPIFY_CONSENT: True} for p in withdrawn],
                    actor=audit.ADMIN,
                )
                execute(
                    "UPDATE contact SET opted_out_at = now() WHERE shop_id = %s AND phone = %s",
                    (shop.id, phones[-5]),
                )

    provider = FakeProvider(during_call=withdraw_once)
    # When the batch is sent four calls at a time
    sender(settings, provider, slots=4).send(campaign.id, shop.id, ids, batch_key(campaign.id, ids))
    # Then the contacts without consent, or opted out, got nothing (before: all twelve were
    # sent, as the claim re-checked suppressions only)
    assert sorted(provider.sent) == phones[:7]
    assert dict(
        fetchall(
            "SELECT coalesce(error, status), count(*) FROM campaign_recipient"
            " WHERE campaign_id = %s GROUP BY 1",
            (campaign.id,),
        )
    ) == {"sent": 7, "no_consent": 4, "opted_out": 1}


@pytest.mark.parametrize("stop", ["deadline", "time slice", "shutdown"])
def test_a_batch_stopped_between_windows_puts_its_rest_back_on_the_queue(
    batch, settings, redis_client, stop
):
    # Given a batch whose first window ends past its deadline, or during a worker shutdown
    shop_id, campaign_id, ids, key = batch
    clock, stopping = Clock(), threading.Event()

    def first_window_ends_late(sms: Sms) -> None:
        if stop == "deadline":
            clock.now += settings.send_time_limit_ms / 1000
        elif stop == "time slice":
            # (far within the time limit: a thread is the batch's for a slice at a time)
            assert settings.batch_time_slice_ms * 2 < settings.send_time_limit_ms
            clock.now += settings.batch_time_slice_ms / 1000 + 0.001
        else:
            stopping.set()

    provider = FakeProvider(during_call=first_window_ends_late)
    queued = redis_client.llen("dramatiq:sms-send")

    # When the batch is sent
    report = sender(settings, provider, slots=4, clock=clock, stopping=stopping).send(
        campaign_id, shop_id, ids, key
    )

    # Then one window was sent and persisted, nothing is left in flight, and the batch is
    # published again (recorded as such) for its next delivery to send the rest
    assert (report.windows, report.accepted, report.republished) == (1, 4, True)
    assert statuses(campaign_id) == {"sent": 4, "pending": 8}
    assert batch_state(key) == ("published", 2)
    assert redis_client.llen("dramatiq:sms-send") == queued + 1


def test_a_batch_throttled_after_some_progress_comes_back_after_retry_after(
    batch, settings, redis_client
):
    # Given a provider that throttles every call after the first window's
    shop_id, campaign_id, ids, key = batch
    calls = iter(range(100))

    def answer(sms: Sms) -> SendResult:
        if next(calls) < 4:
            return SendResult(Outcome.ACCEPTED, provider_id=f"p-{sms.reference}")
        return SendResult(Outcome.NOT_SENT, reason="HTTP 429", retry_after_s=2, throttled=True)

    # When the batch is sent
    report = sender(settings, FakeProvider(answer=answer), slots=4).send(
        campaign_id, shop_id, ids, key
    )

    # Then the throttled window is pending again, no window followed it, and the batch comes
    # back after Retry-After as a new message (its retries are kept for real failures)
    assert (report.windows, report.accepted, report.not_sent) == (2, 4, 4)
    assert report.republished
    assert statuses(campaign_id) == {"sent": 4, "pending": 8}
    assert redis_client.llen("dramatiq:sms-send.DQ") == 1


def delayed_etas_ms(redis_client) -> list[float]:
    """How far in the future each delayed send message is due, in milliseconds."""
    import json

    now = time.time() * 1000
    messages = redis_client.hvals("dramatiq:sms-send.DQ.msgs")
    return sorted(json.loads(m)["options"]["eta"] - now for m in messages)


@pytest.fixture
def bulk_batch(db, settings):
    """A sending campaign of twelve identical texts in one batch."""
    shop, _ = shops.create_shop("bulk-limit.example", "Bulk", require_consent=False)
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id, [{"phone": f"+30692000{i:04d}"} for i in range(12)], actor=audit.ADMIN
    )
    campaign = campaigns.create(shop.id, "c", "Sale today", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, settings, audit.ADMIN)
    ids = [row[0] for row in fetchall("SELECT id FROM campaign_recipient ORDER BY id")]
    return shop.id, campaign.id, ids, batch_key(campaign.id, ids)


def test_a_bulk_batch_beyond_the_rate_goes_out_a_seconds_budget_at_a_time(
    bulk_batch, settings, redis_client
):
    # Given a bulk batch of twelve and an account limited to 8 messages a second
    shop_id, campaign_id, ids, key = bulk_batch
    provider = FakeProvider()
    limits = SendLimiter(redis_client, "acct", "8/second")

    # When its batch is sent
    report = sender(settings, provider, slots=4, limiter=limits).send(
        campaign_id, shop_id, ids, key
    )

    # Then a second's budget went out as four bulk calls of two, nothing more was claimed,
    # and the rest waits on the queue until the budget comes back (about a second), without
    # a retry
    assert (provider.bulk_calls, len(provider.sent), report.windows) == (4, 8, 4)
    assert report.republished and not report.not_sent
    assert statuses(campaign_id) == {"sent": 8, "pending": 4}
    assert batch_state(key) == ("published", 2)
    [eta] = delayed_etas_ms(redis_client)
    assert 500 < eta <= 1001


def test_a_refused_window_claims_nothing_and_gives_its_thread_back(batch, settings, redis_client):
    # Given an account whose budget another worker has just used up
    shop_id, campaign_id, ids, key = batch
    limits = SendLimiter(redis_client, "acct", "10/second")
    assert [limits.acquire("Other", 10).count for _ in range(5)] == [2, 2, 2, 2, 2]
    provider = FakeProvider()

    # When the batch is sent
    began = time.monotonic()
    report = sender(settings, provider, slots=4, limiter=limits).send(
        campaign_id, shop_id, ids, key
    )

    # Then it returned at once, claimed nothing, called nothing, and is on the queue again
    # for as long as the limiter said
    assert time.monotonic() - began < 0.5
    assert (report.claimed, report.windows, report.limited) == (0, 0, "provider")
    assert provider.sent == [] and statuses(campaign_id) == {"pending": 12}
    assert report.republished
    [eta] = delayed_etas_ms(redis_client)
    assert 0 < eta <= 1001


class RacedLimiter(SendLimiter):
    """Another worker's window of 10 goes out between this one's admission and its calls."""

    def acquire(self, sender: str, wanted: int, shop: int | None = None):
        grant = super().acquire(sender, wanted, shop)
        assert SendLimiter(self.client, self.account, "10/second").dispatch("Other", 10).count
        return grant


def test_a_window_too_close_to_the_last_one_when_it_goes_out_gives_its_claims_back(
    batch, settings, redis_client
):
    # Given an account of 10 a second, whose whole second another worker sends while this
    # batch claims its window
    shop_id, campaign_id, ids, key = batch
    limits = RacedLimiter(redis_client, "acct", "10/second")
    provider = FakeProvider()

    # When the batch is sent
    report = sender(settings, provider, slots=4, limiter=limits).send(
        campaign_id, shop_id, ids, key
    )

    # Then its window, admitted and claimed, was refused right before the calls and given
    # back: nothing was sent, and the batch waits on the queue for the budget
    assert (report.claimed, report.limited, report.republished) == (0, "provider", True)
    assert provider.sent == [] and statuses(campaign_id) == {"pending": 12}
    [eta] = delayed_etas_ms(redis_client)
    assert 0 < eta <= 1001
    # ...and its admission too: the account's admission count holds no send that never
    # went out (kept, it refused windows the dispatch count had room for, for a second)
    assert limits.share is not None
    assert redis_client.llen(limits.share.admitted_key) == 0


def test_a_429_cools_the_account_down_for_every_worker_without_spending_a_retry(
    batch, settings, redis_client
):
    # Given a provider answering 429 with Retry-After: 3 to the first window
    shop_id, campaign_id, ids, key = batch

    def throttled(sms: Sms) -> SendResult:
        return SendResult(Outcome.NOT_SENT, reason="HTTP 429", retry_after_s=3, throttled=True)

    limits = SendLimiter(redis_client, "acct")

    # When the batch is sent
    report = sender(settings, FakeProvider(answer=throttled), slots=4, limiter=limits).send(
        campaign_id, shop_id, ids, key
    )

    # Then its claims are pending again and the batch comes back after Retry-After as a new
    # message (no retry spent: the actor raises nothing when `republished`)
    assert (report.claimed, report.throttled, report.republished) == (4, 4, True)
    assert statuses(campaign_id) == {"pending": 12}
    [eta] = delayed_etas_ms(redis_client)
    assert 2500 < eta <= 3001
    # And another worker's batch of the same account starts no window meanwhile
    other = FakeProvider()
    again = sender(settings, other, slots=4, limiter=SendLimiter(redis_client, "acct")).send(
        campaign_id, shop_id, ids, key
    )
    assert (again.claimed, again.limited, other.sent) == (0, "cool_down", [])


def where(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or 0)
    return "".join(traceback.format_stack(frame)) if frame else "(ended)"


def waiting_for_answers(thread: threading.Thread) -> bool:
    """Whether `thread` waits in `WindowCalls.results` for its window's answers."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "results":
            return True
        frame = frame.f_back
    return False


def test_a_window_interrupted_by_the_time_limit_keeps_every_answer(batch, settings):
    # Given a window of four claims: two calls under way, two not started yet
    shop_id, campaign_id, ids, key = batch
    calls, provider = HeldCalls(running=2), FakeProvider()
    send = sender(settings, provider, slots=4, calls=calls)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            send.send(campaign_id, shop_id, ids, key)
        except BaseException as error:  # noqa: BLE001 - the test looks at it
            raised.append(error)

    # A daemon: should the interruption never reach it (it waits in C on a call that never
    # starts), a failure must not keep the test process alive at exit.
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # Interrupted where a time limit meets a window: waiting for its calls' answers. (Not
    # while it starts a call's thread: an asynchronous exception inside Thread.start() left
    # the thread waiting for ever for a thread that never said it started, 1 run in ~10 on a
    # loaded machine; Dramatiq's pool threads are started once, before any window.)
    deadline = time.monotonic() + 30
    while not waiting_for_answers(thread) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (calls.started, statuses(campaign_id).get("sending")) == (2, 4), "window not under way"
    assert waiting_for_answers(thread)

    # When Dramatiq's time limit interrupts the batch's thread, and the calls under way answer
    raise_thread_exception(thread.ident, TimeLimitExceeded)
    calls.released.set()
    thread.join(timeout=30)

    # Then the exception went on, but only after both answers were persisted (sent and
    # debited) and the two claims never called were given back: nothing is left in flight
    assert len(raised) == 1 and isinstance(raised[0], TimeLimitExceeded), where(thread)
    assert statuses(campaign_id) == {"sent": 2, "pending": 10}
    assert len(provider.sent) == 2
    assert fetchall("SELECT count(*) FROM credit_transaction WHERE kind = 'debit'")[0][0] == 2
    assert send.slots.free == 4


def test_an_error_right_after_the_claim_commit_gives_every_claim_back(batch, settings):
    # Given a window interrupted right after its claim was committed, before any call
    shop_id, campaign_id, ids, key = batch
    provider = FakeProvider()
    send = sender(settings, provider, slots=4)
    faults.arm([("after_claim_commit", "raise", 1.0)])
    try:
        # When it is sent, Then the error goes on...
        with pytest.raises(faults.InjectedFault):
            send.send(campaign_id, shop_id, ids, key)
    finally:
        faults.arm(())

    # ...and its four claims are pending again: nothing was called, nothing is in flight
    assert statuses(campaign_id) == {"pending": 12}
    assert provider.sent == [] and send.slots.free == 4


def test_a_batch_over_its_shops_share_waits_briefly_and_leaves_the_rest_to_the_other_shop(
    batch, settings, redis_client
):
    # Given an account of 8 a second whose budget this shop used in the last second, and
    # another shop that asked for it meanwhile (owed half)
    shop_id, campaign_id, ids, key = batch
    limits = SendLimiter(redis_client, "acct", "8/second")
    assert limits.acquire("Shop", 2, shop_id).count == 2
    time.sleep(0.5)
    assert [limits.acquire("Shop", 2, shop_id).count for _ in range(3)] == [2, 2, 2]
    assert limits.precheck(shop_id + 1000).count == 0
    time.sleep(0.55)  # this shop's first window left the second: 2 free, 6 still its own

    # When the batch is sent
    report = sender(settings, FakeProvider(), slots=4, limiter=limits).send(
        campaign_id, shop_id, ids, key
    )

    # Then it claimed nothing (the 2 free are the other shop's), spent no retry, and is back
    # on the queue for a recheck within 50 ms, not for the budget's whole refill
    assert (report.claimed, report.limited, report.republished) == (0, "share", True)
    assert statuses(campaign_id) == {"pending": 12}
    [eta] = delayed_etas_ms(redis_client)
    assert 0 < eta <= 50
    # And the other shop gets the 2
    assert limits.acquire("Other", 4, shop_id + 1000).count == 2


def test_a_batch_whose_connection_is_terminated_mid_window_hands_over_and_finishes(batch, settings):
    # Given a batch whose database session is terminated while its window's calls are out
    # (a PostgreSQL restart, an operator's pg_terminate_backend)
    shop_id, campaign_id, ids, key = batch
    backend = fetchall("SELECT pg_backend_pid()")[0][0]
    terminated = threading.Event()

    def terminate(sms: Sms) -> None:
        if not terminated.is_set():
            terminated.set()
            with connection():
                execute("SELECT pg_terminate_backend(%s)", (backend,))

    # When the batch is sent
    report = sender(settings, FakeProvider(during_call=terminate), slots=12).send(
        campaign_id, shop_id, ids, key
    )

    # Then the window's answers went to persistSmsResults (the provider has the messages)
    # and the batch went on to its end on a new connection, instead of failing on the dead
    # one (its retry would only add a delay and a traceback)
    assert terminated.is_set() and report.accepted == 12
    assert fetchall("SELECT pg_backend_pid()")[0][0] != backend
    assert statuses(campaign_id) == {"sending": 12}  # until persistSmsResults runs


def test_a_long_delivery_keeps_its_batch_from_looking_stale(batch, settings):
    # Given a batch last published an hour ago, and calls that take 5 s each (four at a time)
    shop_id, campaign_id, ids, key = batch
    execute("UPDATE send_batch SET published_at = now() - interval '1 hour' WHERE key = %s", (key,))
    clock = Clock()

    def slow(sms) -> None:
        if clock.now == 1000.0:  # once, after the mark at the delivery's start
            with connection():  # (a pool thread of the provider's calls)
                execute(
                    "UPDATE send_batch SET published_at = now() - interval '1 hour' WHERE key = %s",
                    (key,),
                )
        clock.now += 5

    # When it is sent, 60 s in all, with batches stale after 40 s (a check every 10 s)
    quick = dataclasses.replace(settings, batch_stale_after_ms=40_000)
    sender(quick, FakeProvider(during_call=slow), slots=4, clock=clock).send(
        campaign_id, shop_id, ids, key
    )

    # Then the delivery marked its batch as at work again on the way, not only at its start:
    # the reconciler would not have published it again mid-send for a second delivery to share
    (fresh,) = fetchall(
        "SELECT published_at > now() - interval '1 minute' FROM send_batch WHERE key = %s",
        (key,),
    )[0]
    assert fresh


def test_a_delivery_marks_its_batch_at_work_from_its_start(batch, settings):
    # Given a batch whose message waited in the queue longer than batches stay fresh
    shop_id, campaign_id, ids, key = batch
    execute("UPDATE send_batch SET published_at = now() - interval '1 hour' WHERE key = %s", (key,))
    # When a delivery takes it, however quickly it goes
    sender(settings, FakeProvider(), slots=4, clock=Clock()).send(campaign_id, shop_id, ids, key)
    # Then it was marked at its start: a reconcile in its first seconds would have published
    # the batch again for a second delivery to share
    (fresh,) = fetchall(
        "SELECT published_at > now() - interval '1 minute' FROM send_batch WHERE key = %s",
        (key,),
    )[0]
    assert fresh
