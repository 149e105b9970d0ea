"""Delivery reports survive crashes: every report the webhook answered 200 is applied, when the
web process is killed while reports stream, and when the worker running the applier is."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import redis
import requests

from models.database import db
from tests.conftest import DLR_WEBHOOK_SECRET
from tests.e2e.invariants import rows
from tests.e2e.stack import lose_queued_messages, wait_for

RECIPIENTS = 1200


class Provider:
    """Posts one Delivered report per message, one per request over keep-alive connections
    from 16 threads (as the simulator's pooled mode does), and remembers which were answered
    200. A post that fails (the web process gone) is simply not answered."""

    def __init__(self, web: str) -> None:
        self.url = f"{web}/webhooks/mitto/dlr?token={DLR_WEBHOOK_SECRET}"
        self.answered: set[str] = set()
        self.failed: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()

    def post_all(self, provider_ids: list[str]) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self._post, provider_ids))

    def _post(self, provider_id: str) -> None:
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        try:
            ok = (
                session.post(
                    self.url, json={"id": provider_id, "deliveryStatus": "Delivered"}, timeout=10
                ).status_code
                == 200
            )
        except requests.RequestException:
            ok = False
            self._local.session = None
        with self._lock:
            (self.answered if ok else self.failed).add(provider_id)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


def sent_campaign(stack, domain: str) -> tuple[int, list[str]]:
    """A completed campaign whose provider sent no report yet: its provider message ids."""
    _, key = stack.create_shop(domain, credits=10_000)
    stack.import_contacts(key, RECIPIENTS)
    campaign = stack.call("POST", "/campaigns", key, json={"name": "c", "text": "Sale"}).json()
    assert stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key).status_code == 202
    assert stack.wait_finished(key, campaign["id"], timeout=60)["sent"] == RECIPIENTS
    return campaign["id"], provider_ids(campaign["id"])


def provider_ids(campaign_id: int, delivered: bool = False) -> list[str]:
    return [
        row[0]
        for row in rows(
            db,
            "SELECT mitto_message_id FROM campaign_recipient WHERE campaign_id = %s"
            + (" AND delivery_status = 'Delivered'" if delivered else "")
            + " ORDER BY id",
            campaign_id,
        )
    ]


def unexamined() -> int:
    return rows(db, "SELECT count(*) FROM delivery_report WHERE examined_at IS NULL")[0][0]


def test_reports_answered_before_the_web_process_is_killed_are_all_applied(make_stack, db):
    # Given a sent campaign and a provider starting to post its reports
    stack = make_stack()
    stack.start_sim("--no-dlr")
    stack.start_web()
    stack.start_worker()
    campaign_id, ids = sent_campaign(stack, "web-killed.example")
    provider = Provider(stack.web)
    posting = threading.Thread(target=provider.post_all, args=(ids,))
    posting.start()

    # When the web process is killed (SIGKILL) while the reports stream
    wait_for(lambda: provider.count() >= RECIPIENTS // 4, 60, "a quarter of the reports")
    stack.kill("web")
    posting.join(timeout=120)
    assert provider.failed, "the kill landed after the stream: nothing was tested"
    assert provider.answered

    # Then every report answered 200 is applied, by the worker's applier alone
    wait_for(
        lambda: provider.answered <= set(provider_ids(campaign_id, delivered=True)),
        30,
        "every answered report applied",
    )
    # And once the web process is back, the reports the provider posts again are applied too
    stack.start_web()
    Provider(stack.web).post_all(sorted(provider.failed))
    wait_for(
        lambda: len(provider_ids(campaign_id, delivered=True)) == RECIPIENTS,
        30,
        "every report applied",
    )


def test_reports_stored_while_the_applier_is_killed_are_applied_after_a_restart(make_stack, db):
    # Given a sent campaign, a clock refreshing statuses every 500 ms, and reports streaming
    stack = make_stack(STATUS_REFRESH_INTERVAL_MS="500")
    stack.start_sim("--no-dlr")
    stack.start_web()
    stack.start_worker()
    campaign_id, ids = sent_campaign(stack, "applier-killed.example")
    provider = Provider(stack.web)
    posting = threading.Thread(target=provider.post_all, args=(ids,))
    posting.start()

    # When the worker running the applier is killed (SIGKILL) mid-stream, the stream goes on,
    # and every applier message published meanwhile is lost with the broker's queues
    wait_for(lambda: provider.count() >= RECIPIENTS // 4, 60, "a quarter of the reports")
    stack.kill("worker")
    posting.join(timeout=120)
    assert provider.answered == set(ids), "the web process answers without the applier"
    assert unexamined() > 0, "the applier was done before the kill: nothing was tested"
    lose_queued_messages(redis.Redis.from_url(stack.env["REDIS_URL"]))

    # Then a restarted worker, signalled by the clock's refresh (no report arrives any more),
    # applies every one of them
    stack.start_worker()
    stack.start_clock()
    wait_for(
        lambda: len(provider_ids(campaign_id, delivered=True)) == RECIPIENTS,
        30,
        "every report applied",
    )
    assert unexamined() == 0
