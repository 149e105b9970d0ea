"""Crashes and failures in the middle of a send: nothing is sent twice, nothing is lost, and
the ledger still balances."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from service import audit, reconcile
from tests.e2e.invariants import assert_invariants, rows
from tests.e2e.stack import LOGS, wait_for


def launch(stack, key: str, text: str) -> int:
    campaign = stack.call("POST", "/campaigns", key, json={"name": "c", "text": text}).json()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert answer.status_code == 202, answer.text
    return campaign["id"]


def count(db, sql: str, *params) -> int:
    return rows(db, sql, *params)[0][0]


@pytest.mark.brokers("redis", "rabbitmq")
def test_worker_killed_mid_batch_sends_nothing_twice(make_stack, db, settings):
    # Given a personalised campaign sent slowly (100 ms per provider call, 8 in flight)
    stack = make_stack(
        SEND_BATCH_SIZE="50",
        SEND_CONCURRENCY="8",
        BROKER_HEARTBEAT_TIMEOUT_MS="2000",
        BROKER_MAINTENANCE_CHANCE="1000000",
    )
    stack.start_sim("--latency-ms", "100", "--dlr-delay-ms", "100")
    stack.start_web()
    stack.start_worker("worker-1")
    shop_id, key = stack.create_shop("kill.example", credits=2000)
    stack.import_contacts(key, 400)
    campaign_id = launch(stack, key, "Hi {first_name}, new arrivals this week")

    # When the worker is killed with SIGKILL while provider calls are in flight
    wait_for(lambda: stack.sim_messages(summary="1")["count"] >= 60, 30, "some messages sent")
    stack.kill("worker-1")
    killed_at = rows(db, "SELECT now()")[0][0]
    in_flight = count(
        db,
        "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s AND status = 'sending'",
        campaign_id,
    )
    # ...and a new worker takes over (Dramatiq requeues the dead worker's messages; RabbitMQ
    # does it as soon as the dead worker's connection drops)
    stack.start_worker("worker-2")
    wait_for(
        lambda: (
            count(
                db,
                "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s"
                " AND status = 'pending'",
                campaign_id,
            )
            == 0
        ),
        90,
        "every pending recipient to be claimed again",
    )
    wait_for(
        lambda: (
            count(
                db,
                "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s"
                " AND status = 'sending' AND claimed_at > %s",
                campaign_id,
                killed_at,
            )
            == 0
        ),
        60,
        "the new worker to finish its calls",
    )
    time.sleep(1)  # let the last delivery reports land: they are the evidence
    # ...and the reconcile services run with a short claim timeout
    short = dataclasses.replace(settings, claim_timeout_ms=1000, batch_stale_after_ms=1000)
    report = reconcile.reconcile(short, audit.ADMIN)

    # Then the campaign finished, nobody got two messages, and the books balance
    progress = stack.wait_finished(key, campaign_id, timeout=30)
    status = assert_invariants(db, stack, shop_id, campaign_id)
    assert progress["status"] == "completed"
    assert status.get("sent", 0) + status.get("failed", 0) == 400
    # Calls in flight at the kill were accepted by the provider: the evidence made them sent.
    assert report.upgraded_by_evidence <= in_flight
    assert stack.sim_messages(summary="1")["count"] == status["sent"]


class FreezingRedis:
    """A TCP proxy to Redis that stops answering right after its first PONG: the enqueue's
    check that Redis is up passes, then the publish that follows the commit hangs."""

    def __init__(self, redis_url: str) -> None:
        self.target, self.frozen = urlparse(redis_url), threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self.sock.accept()[0]
            except OSError:
                return
            server = self._connect()
            self.open += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _connect(self) -> socket.socket:
        if self.target.scheme == "unix":  # the embedded Redis listens on a socket file
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target.path)
            return server
        return socket.create_connection((self.target.hostname, self.target.port or 6379))

    def url(self) -> str:
        db = self.target.path.strip("/") if self.target.scheme != "unix" else "0"
        return f"redis://127.0.0.1:{self.port}/{db or 0}"

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if not self.frozen.is_set():
                    sink.sendall(data)
                if answers and b"+PONG" in data:
                    self.frozen.set()
        except OSError:
            pass

    def close(self) -> None:
        for conn in [self.sock, *self.open]:
            conn.close()


def enqueue_and_die(stack, key: str, campaign_id: int) -> None:
    try:
        stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key)
    except OSError:
        pass  # the web process is killed while this call waits on its publish


@pytest.mark.brokers("redis")  # the web process hangs on its Redis broker's publish
def test_web_killed_between_commit_and_publish_is_healed_by_the_reconciler(
    make_stack, db, settings
):
    # Given a web process whose Redis hangs after the enqueue checked it, so the web process
    # stops between the enqueue's commit and its publish
    hole = FreezingRedis(settings.redis_url)
    try:
        stack = make_stack()
        stack.start_sim("--dlr-delay-ms", "50")
        stack.env["REDIS_URL"] = hole.url()
        stack.start_web(workers=1)
        shop_id, key = stack.create_shop("publish.example", credits=1000)
        stack.import_contacts(key, 120)
        campaign = stack.call(
            "POST", "/campaigns", key, json={"name": "c", "text": "Flash sale today"}
        ).json()
        threading.Thread(
            target=enqueue_and_die, args=(stack, key, campaign["id"]), daemon=True
        ).start()
        wait_for(
            lambda: count(
                db, "SELECT count(*) FROM send_batch WHERE campaign_id = %s", campaign["id"]
            ),
            20,
            "the enqueue transaction to commit",
        )

        # When the web process is killed before it could publish
        stack.kill("web")
    finally:
        hole.close()
    assert (
        count(
            db,
            "SELECT count(*) FROM send_batch WHERE campaign_id = %s AND state = 'pending'",
            campaign["id"],
        )
        >= 1
    )
    stack.env["REDIS_URL"] = settings.redis_url
    stack.start_worker()
    time.sleep(1)
    assert stack.sim_messages(summary="1")["count"] == 0, "nothing was published"

    # Then the reconciler republishes the durable batches and the campaign completes
    report = reconcile.reconcile(dataclasses.replace(settings, batch_stale_after_ms=0), audit.ADMIN)
    assert report.republished_batches >= 1
    stack.start_web(workers=1)
    progress = stack.wait_finished(key, campaign["id"], timeout=60)
    assert progress["status"] == "completed" and progress["sent"] == 120
    assert_invariants(db, stack, shop_id, campaign["id"])


INJECT_PERSIST_FAILURE = """
CREATE SEQUENCE IF NOT EXISTS injected_failures;
CREATE OR REPLACE FUNCTION fail_first_persist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- nextval is not rolled back with the failing transaction: only the first persist fails.
    IF nextval('injected_failures') = 1 THEN
        RAISE EXCEPTION 'injected failure after provider success';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_first_persist BEFORE INSERT ON message_log
    FOR EACH ROW EXECUTE FUNCTION fail_first_persist();
"""


def test_failed_persist_is_repaired_without_calling_the_provider_again(make_stack, db):
    # Given a provider that sends no delivery reports (a report naming a message still in
    # flight would persist it first, and this is about the worker's own persist)...
    stack = make_stack()
    stack.start_sim("--no-dlr")
    stack.start_web()
    stack.start_worker()
    # ...and the database write after a provider success fails once
    db.execute_sql("DROP SEQUENCE IF EXISTS injected_failures")
    db.execute_sql(INJECT_PERSIST_FAILURE)
    try:
        shop_id, key = stack.create_shop("persist.example", credits=1000)
        stack.import_contacts(key, 200)

        # When a campaign is sent
        campaign_id = launch(stack, key, "Our winter collection is here")
        progress = stack.wait_finished(key, campaign_id, timeout=60)
    finally:
        db.execute_sql("DROP TRIGGER IF EXISTS fail_first_persist ON message_log")

    # Then persistSmsResults wrote the results: every message sent once, debited once
    assert progress["status"] == "completed" and progress["sent"] == 200
    assert rows(db, "SELECT last_value FROM injected_failures")[0][0] >= 2, "the fault fired"
    assert stack.sim_messages(summary="1")["count"] == 200
    assert_invariants(db, stack, shop_id, campaign_id)
    worker_log = (LOGS / f"{stack.name}.worker.log").read_text()
    assert "persisting provider results failed" in worker_log
    assert "provider results persisted by repair" in worker_log
