"""A campaign whose recipients are created in chunks after the enqueue answered (SPEC 12), on
real processes, with a chunk of 50 recipients standing in for the 20,000 of a million-recipient
campaign: a worker killed inside a chunk's transaction and Redis flushed (every message lost)
still end with every recipient sent exactly once and the credits exact."""

from __future__ import annotations

import dataclasses
import time

from service import audit, reconcile
from tests.e2e.invariants import assert_invariants, rows
from tests.e2e.stack import LOGS, wait_for


def test_a_worker_killed_mid_creation_and_a_flushed_redis_still_send_everyone_once(
    make_stack, db, redis_client, settings
):
    # Given chunks of 50 recipients, a worker that kills itself (SIGKILL) inside a chunk's
    # transaction at random, and a clock that repairs quickly
    stack = make_stack(
        RECIPIENT_CHUNK_SIZE="50",
        SEND_BATCH_SIZE="25",
        BATCH_STALE_AFTER_MS="2000",
        RECONCILE_INTERVAL_MS="500",
        STATUS_REFRESH_INTERVAL_MS="1000",
    )
    stack.start_sim("--latency-ms", "20", "--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_clock()
    killing = stack.start_worker("worker-1", CHAOS_FAULTS="inside_recipient_creation=kill:0.3")
    shop_id, key = stack.create_shop("million.example", credits=1500)
    stack.import_contacts(key, 1000)

    # When a 1,000-recipient campaign is enqueued
    campaign = stack.call(
        "POST",
        "/campaigns",
        key,
        json={"name": "c", "text": "Sale today", "append_unsubscribe": False},
    ).json()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)

    # Then it answers with the audience counted and reserved, its creation still to come
    assert answer.status_code == 202, answer.text
    assert {k: answer.json()[k] for k in ("recipients", "reserved_credits", "creating")} == {
        "recipients": 1000,
        "reserved_credits": 1000,
        "creating": True,
    }

    # When the worker dies inside a chunk, and Redis then loses every message
    worker_log = LOGS / f"{stack.name}.worker-1.log"
    # (its line may never reach the log: a child killed in its first chunk takes Dramatiq's
    # master with it, which may exit before forwarding the child's output; then the worker
    # has exited)
    wait_for(
        lambda: (
            (worker_log.exists() and "chaos fault" in worker_log.read_text())
            or killing.poll() is not None
        ),
        60,
        "the worker to kill itself inside a chunk",
    )
    stack.kill("worker-1")
    created, done = rows(
        db,
        "SELECT (SELECT count(*) FROM campaign_recipient WHERE campaign_id = c.id),"
        " recipients_created_at IS NOT NULL FROM campaign c WHERE id = %s",
        campaign["id"],
    )[0]
    assert created < 1000 and not done
    redis_client.flushdb()
    stack.start_worker("worker-2")

    # Then the clock resumes the creation and republishes the lost batches: every contact
    # becomes a recipient once and none is left pending
    wait_for(
        lambda: rows(
            db,
            "SELECT recipients_created_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
            " campaign_recipient r WHERE r.campaign_id = c.id AND r.status = 'pending')"
            " FROM campaign c WHERE id = %s",
            campaign["id"],
        )[0][0],
        90,
        "the audience to be created and claimed",
    )
    assert rows(
        db,
        "SELECT count(*), count(DISTINCT contact_id) FROM campaign_recipient"
        " WHERE campaign_id = %s",
        campaign["id"],
    ) == [(1000, 1000)]
    # ...and once the calls the killed worker had in flight are resolved (by their delivery
    # reports, or as unknown outcomes after a claim timeout shortened here, as in
    # test_crashes), the campaign completes: nobody got two messages, each message sent is
    # charged once, and nothing stays reserved but the bound of unknown outcomes
    time.sleep(1)
    short = dataclasses.replace(settings, claim_timeout_ms=1000, batch_stale_after_ms=1000)
    reconcile.reconcile(short, audit.ADMIN)
    progress = stack.wait_finished(key, campaign["id"], timeout=60)
    status = assert_invariants(db, stack, shop_id, campaign["id"])
    assert progress["status"] == "completed"
    assert status.get("sent", 0) + status.get("failed", 0) == 1000
    assert status.get("sent", 0) >= 950  # at most the calls in flight at the kill are unknown
    assert (progress["total"], progress["sent"], progress["recipients_created"]) == (
        1000,
        status["sent"],
        True,
    )
    assert stack.sim_messages(summary="1")["count"] == status["sent"]
    assert rows(db, "SELECT credit_balance FROM shop WHERE id = %s", shop_id) == [
        (1500 - status["sent"],)
    ]
