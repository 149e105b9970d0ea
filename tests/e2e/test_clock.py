"""The clock through real processes: `python -m scheduler` clocks electing a leader in Redis,
running their jobs against PostgreSQL, dying, pausing, and a Redis flush mid-campaign.

Clocks run with a 1.5 s lock TTL, a 0.5 s retry and 1 s job intervals, so every failover
happens within a few seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service import audit, campaigns, contacts, credits, scheduling, shops
from service.infra.dispatch import SEND_QUEUE
from service.observability import clocks as clock_registry
from service.observability import scheduler_state
from service.observability.scheduler_state import JOB_NAMES, LEADER_KEY, read_lock
from tests.e2e.stack import LOGS, Stack, lose_queued_messages, queued_messages, wait_for

TTL_MS, RETRY_MS, INTERVAL_MS = 1500, 500, 1000
FAST = {
    "SCHEDULER_LOCK_TTL_MS": str(TTL_MS),
    "SCHEDULER_LOCK_RETRY_MS": str(RETRY_MS),
    "SCHEDULE_INTERVAL_MS": str(INTERVAL_MS),
    "RECONCILE_INTERVAL_MS": str(INTERVAL_MS),
    "STATUS_REFRESH_INTERVAL_MS": str(INTERVAL_MS),
}
TTL_S, RETRY_S, INTERVAL_S = TTL_MS / 1000, RETRY_MS / 1000, INTERVAL_MS / 1000
# Polling, process scheduling and a database round trip on a busy CI machine.
SLACK_S = 0.5


# --- the clock processes and what an operator can see of them --------------------------------
def start_clock(stack: Stack, label: str, **env: str) -> subprocess.Popen:
    return stack.start_clock(label, **env)


def holder_of(process: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{process.pid}"


def log_entries(stack: Stack, label: str) -> list[dict[str, Any]]:
    entries = []
    for line in (LOGS / f"{stack.name}.{label}.log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass  # a traceback printed before logging was configured
    return entries


def messages(stack: Stack, label: str) -> list[str]:
    return [entry["msg"] for entry in log_entries(stack, label)]


def job_runs(db, holder: str | None = None) -> list[dict[str, Any]]:
    keys = ("job", "slot", "epoch", "holder", "started_at", "finished_at", "ok", "result")
    rows = db.execute_sql(
        f"SELECT {', '.join(keys)} FROM job_run WHERE %s::text IS NULL OR holder = %s"
        " ORDER BY started_at",
        (holder, holder),
    ).fetchall()
    return [dict(zip(keys, row)) for row in rows]


def database_now(db) -> datetime:
    return db.execute_sql("SELECT now()").fetchone()[0]


def wait_for_leader(
    redis_client, clocks: dict[str, subprocess.Popen], db, timeout: float = 15
) -> str:
    """The label of the clock that holds the lock and has run a job."""
    by_holder = {holder_of(process): label for label, process in clocks.items()}
    holder = wait_for(
        lambda: (lambda h: h if h in by_holder and job_runs(db, h) else None)(
            read_lock(redis_client)["holder"]
        ),
        timeout,
        "a clock to lead and run a job",
    )
    return by_holder[holder]


def assert_one_leader_at_a_time(rows: list[dict[str, Any]], allow_overrun: bool = False) -> None:
    """The job runs of one tenure (epoch) never overlap another's, and tenures follow each
    other in the order of their epochs. `allow_overrun`: a run the old leader had started may
    end after its successor began (Redis lost the lock: the old leader learns it only at its
    next renewal), but it starts nothing once the successor has run a job."""
    spans: dict[int, list[datetime]] = {}
    for run in rows:
        end = run["finished_at"] or run["started_at"]
        span = spans.setdefault(run["epoch"], [run["started_at"], end])
        span[0], span[1] = min(span[0], run["started_at"]), max(span[1], end)
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    assert [epoch for epoch, _ in ordered] == sorted(spans), "an older epoch ran after a newer"
    if not allow_overrun:
        for (before, (_, end)), (after, (start, _)) in zip(ordered, ordered[1:]):
            assert end <= start, f"epoch {before} still ran jobs after epoch {after} started"
    # Fencing, always: no run of an older epoch starts after a newer epoch's first run.
    starts = {epoch: min(r["started_at"] for r in rows if r["epoch"] == epoch) for epoch in spans}
    for run in rows:
        newer = [starts[e] for e in spans if e > run["epoch"]]
        assert not newer or run["started_at"] <= min(newer), (
            f"epoch {run['epoch']} started {run['job']} after a newer epoch ran"
        )


def first_run_after(db, holder: str, since: float, timeout: float) -> float:
    """Seconds from `since` (monotonic) until `holder` has run a job."""
    wait_for(lambda: job_runs(db, holder), timeout, f"{holder} to run a job", interval=0.05)
    return time.monotonic() - since


def lock_taken_after(redis_client, holders: set[str], since: float, timeout: float) -> str:
    holder = wait_for(
        lambda: (lambda h: h if h in holders else None)(read_lock(redis_client)["holder"]),
        timeout,
        f"one of {holders} to take the lock",
        interval=0.02,
    )
    print(f"lock taken by {holder} after {time.monotonic() - since:.2f}s")
    return holder


@pytest.fixture(autouse=True)
def no_job_runs(db):
    db.execute_sql("TRUNCATE job_run")


# --- campaigns, set up the way the API would ---------------------------------------------------
def scheduled_campaign(
    db, domain: str, recipients: int, credits_amount: int, due_in: timedelta
) -> tuple[int, int]:
    """A shop with `recipients` contacts and a campaign scheduled `due_in` from database time."""
    # (about the clock, not consent: a shop that does not require it)
    shop, _ = shops.create_shop(domain, domain, "Shop", require_consent=False)
    if credits_amount:
        credits.top_up(shop.id, credits_amount, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id,
        [{"phone": f"+30690{n:07d}", "first_name": f"N{n}"} for n in range(recipients)],
        actor=audit.ADMIN,
    )
    campaign = campaigns.create(shop.id, "Scheduled", "Hi {first_name}, our sale starts now")
    db.execute_sql(
        "UPDATE campaign SET status = 'scheduled', scheduled_at = now() + %s WHERE id = %s",
        (due_in, campaign.id),
    )
    return shop.id, campaign.id


def campaign_row(db, campaign_id: int) -> dict[str, Any]:
    keys = ("status", "status_reason", "scheduled_at", "started_at")
    row = db.execute_sql(
        f"SELECT {', '.join(keys)} FROM campaign WHERE id = %s", (campaign_id,)
    ).fetchone()
    return dict(zip(keys, row))


def batches(db, campaign_id: int) -> list[tuple[str, int]]:
    return db.execute_sql(
        "SELECT key, publish_count FROM send_batch WHERE campaign_id = %s", (campaign_id,)
    ).fetchall()


# --- leader election ----------------------------------------------------------------------------
def test_of_three_clocks_one_runs_jobs_and_standbys_take_over_when_it_dies_or_stops(
    make_stack, db, redis_client
):
    # Given three clocks
    stack = make_stack(**FAST)
    clocks = {label: start_clock(stack, label) for label in ("clock-a", "clock-b", "clock-c")}
    first = wait_for_leader(redis_client, clocks, db)
    time.sleep(2 * INTERVAL_S)

    # Then exactly one of them runs jobs, and each says at start whether it leads
    assert {run["holder"] for run in job_runs(db)} == {holder_of(clocks[first])}
    for label in clocks:
        entries = log_entries(stack, label)
        assert entries[0]["msg"] == "clock started" and entries[0]["leading"] is False
        state = next(e for e in entries if e["msg"].startswith(("leading", "standby")))
        if label == first:
            assert state["msg"] == "leading: this clock now runs the jobs"
        else:
            assert state["msg"] == "standby: this clock runs no job"
            assert state["why"].startswith(f"another clock leads: {holder_of(clocks[first])}")

    # ...and health can tell who leads, on which epoch, every clock's RUN_SCHEDULER, and
    # when each job last ran (from Redis, and from PostgreSQL should Redis be flushed)
    leader_holder = holder_of(clocks[first])
    state = wait_for(
        lambda: (lambda st: st if len(st["clocks"]) == 3 else None)(
            scheduler_state.snapshot(redis_client)
        ),
        5,
        "three clocks to register",
    )
    assert state["lock"]["holder"] == leader_holder and 0 < state["lock"]["ttl_ms"] <= TTL_MS
    assert state["run_scheduler"] == {holder_of(p): True for p in clocks.values()}
    assert [c["holder"] for c in state["clocks"] if c["leading"]] == [leader_holder]
    assert {name: run["holder"] for name, run in state["jobs"].items()} == dict.fromkeys(
        JOB_NAMES, leader_holder
    )
    recorded = scheduler_state.latest_from_database(JOB_NAMES)
    assert {name: run["epoch"] for name, run in recorded.items()} == dict.fromkeys(
        JOB_NAMES, state["lock"]["epoch"]
    )
    assert scheduler_state.problems(state) == []

    # When the leader is killed with SIGKILL (no chance to release its lock)
    standbys = {holder_of(clocks[label]) for label in clocks if label != first}
    killed_at = time.monotonic()
    stack.kill(first)

    # Then a standby runs jobs within TTL + retry period
    second_holder = lock_taken_after(redis_client, standbys, killed_at, TTL_S + RETRY_S + SLACK_S)
    kill_takeover = first_run_after(db, second_holder, killed_at, TTL_S + RETRY_S + SLACK_S)
    print(f"SIGKILL: standby ran jobs {kill_takeover:.2f}s after the leader died")
    assert kill_takeover <= TTL_S + RETRY_S + SLACK_S
    second = next(label for label in clocks if holder_of(clocks[label]) == second_holder)
    time.sleep(INTERVAL_S)

    # When that leader gets SIGTERM (a deploy, a scale-down)
    last_standby = standbys - {second_holder}
    before = {
        job: max(r["slot"] for r in job_runs(db, second_holder) if r["job"] == job)
        for job in JOB_NAMES
    }
    terminated_at = time.monotonic()
    os.killpg(clocks[second].pid, signal.SIGTERM)

    # Then the last clock leads within the retry period + 1 s, the old leader exits cleanly
    # after releasing the lock, and not one slot of any job is skipped across the handover
    third_holder = lock_taken_after(redis_client, last_standby, terminated_at, RETRY_S + 1)
    term_takeover = time.monotonic() - terminated_at
    print(f"SIGTERM: standby took the lock {term_takeover:.2f}s after the signal")
    assert clocks[second].wait(10) == 0
    assert "released the leader lock" in messages(stack, second)
    wait_for(
        lambda: {r["job"] for r in job_runs(db, third_holder)} == set(JOB_NAMES),
        RETRY_S + 1 + INTERVAL_S,
        "the last clock to run every job",
    )
    for job in JOB_NAMES:
        after = min(r["slot"] for r in job_runs(db, third_holder) if r["job"] == job)
        assert after <= before[job] + 1, f"{job}: slots {before[job]} -> {after}"

    # And over the whole test, never did two clocks run jobs at the same time, and no leader
    # had to be demoted: each one left by dying or by handing over
    assert_one_leader_at_a_time(job_runs(db))
    for label in clocks:
        assert "stepped down: this clock no longer runs jobs" not in messages(stack, label)


def test_the_lock_ttl_in_force_is_the_configured_one_renewed_every_third(
    make_stack, db, redis_client
):
    # Given a clock with a 4 s TTL (renewed every min(TTL/3, retry) = 0.5 s)
    ttl_ms = 4000
    stack = make_stack(**{**FAST, "SCHEDULER_LOCK_TTL_MS": str(ttl_ms)})
    clock = start_clock(stack, "clock")
    wait_for_leader(redis_client, {"clock": clock}, db)

    # When the lock's PTTL is sampled over several renewals
    samples = []
    for _ in range(40):
        samples.append(redis_client.pttl(LEADER_KEY))
        time.sleep(0.05)

    # Then it always lies between TTL - renew period - 1 s and TTL (never the 15 s default)
    print(f"PTTL samples: min {min(samples)} max {max(samples)}")
    assert all(ttl_ms - RETRY_MS - 1000 <= pttl <= ttl_ms for pttl in samples), samples


def test_a_leader_paused_past_its_ttl_repeats_nothing_and_steps_down(make_stack, db, redis_client):
    # Given two clocks, and a campaign that falls due while the leader will be paused
    stack = make_stack(**FAST)
    clocks = {label: start_clock(stack, label) for label in ("clock-a", "clock-b")}
    leader = wait_for_leader(redis_client, clocks, db)
    standby = next(label for label in clocks if label != leader)
    _, campaign_id = scheduled_campaign(db, "paused.example", 30, 1000, timedelta(seconds=1))

    # When the leader is stopped (SIGSTOP) for longer than its TTL
    clocks[leader].send_signal(signal.SIGSTOP)
    stopped_at = database_now(db)
    paused = time.monotonic()
    lock_taken_after(redis_client, {holder_of(clocks[standby])}, paused, TTL_S + RETRY_S + SLACK_S)
    wait_for(
        lambda: campaign_row(db, campaign_id)["status"] == "sending",
        2 * INTERVAL_S + 1,
        "the standby to launch the campaign",
    )
    time.sleep(max(0.0, TTL_S + 2 - (time.monotonic() - paused)))
    # ...and then continues (SIGCONT), waking up with jobs overdue on its timers
    clocks[leader].send_signal(signal.SIGCONT)

    # Then it steps down at its first renewal, and runs nothing after waking
    wait_for(
        lambda: "stepped down: this clock no longer runs jobs" in messages(stack, leader),
        RETRY_S + 2,
        "the woken leader to step down",
    )
    time.sleep(2 * INTERVAL_S)
    late = [r for r in job_runs(db, holder_of(clocks[leader])) if r["started_at"] >= stopped_at]
    assert late == []
    assert read_lock(redis_client)["holder"] == holder_of(clocks[standby])
    entry = next(
        c
        for c in clock_registry.live_clocks(redis_client)
        if c["holder"] == holder_of(clocks[leader])
    )
    assert entry["leading"] is False

    # And the campaign was launched once: each batch published once, queued once
    assert campaign_row(db, campaign_id)["status"] == "sending"
    published = batches(db, campaign_id)
    assert published and all(count == 1 for _, count in published)
    assert queued_messages(SEND_QUEUE) == len(published)
    # A job the leader was running when it was stopped ends after it wakes, past the standby's
    # first run (CI once stopped it inside the reconcile): an overrun, which the fencing
    # check still bounds (nothing of its epoch starts after the standby's first run).
    assert_one_leader_at_a_time(job_runs(db), allow_overrun=True)


def test_clocks_with_run_scheduler_false_stay_up_run_nothing_and_say_why(
    make_stack, db, redis_client
):
    # Given a campaign due now, and only clocks with RUN_SCHEDULER=false
    _, campaign_id = scheduled_campaign(db, "idle.example", 5, 100, timedelta(seconds=-1))
    stack = make_stack(**FAST, RUN_SCHEDULER="false")
    clocks = {label: start_clock(stack, label) for label in ("clock-a", "clock-b")}

    # When several retry periods and job intervals go by
    wait_for(
        lambda: len(clock_registry.live_clocks(redis_client)) == 2, 15, "both clocks to report"
    )
    time.sleep(3 * INTERVAL_S)

    # Then both are still running, nobody took the lock, no job ran, the campaign waits...
    assert all(process.poll() is None for process in clocks.values())
    assert not redis_client.exists(LEADER_KEY)
    assert job_runs(db) == []
    assert campaign_row(db, campaign_id)["status"] == "scheduled"
    # ...health lists both clocks as idle and says why nothing leads...
    state = scheduler_state.snapshot(redis_client)
    assert state["run_scheduler"] == {holder_of(p): False for p in clocks.values()}
    assert not any(c["leading"] for c in state["clocks"])
    assert scheduler_state.problems(state) == [
        "no scheduler leader: every live clock has RUN_SCHEDULER=false"
    ]
    # ...and each clock's log says so at start
    for label in clocks:
        warning = next(e for e in log_entries(stack, label) if e["level"] == "warning")
        assert warning["msg"].startswith(
            "RUN_SCHEDULER=false: this clock will never take the leader lock nor run any job"
        )
        assert warning["lock"]["exists"] is False


# --- the jobs ------------------------------------------------------------------------------------
def test_launching_due_campaigns_twice_launches_each_once_and_fails_the_unsendable(db, settings):
    # Given two due campaigns: one with contacts, one whose only contact opted out
    _, sendable = scheduled_campaign(db, "due.example", 3, 100, timedelta(seconds=-5))
    shop_id, unsendable = scheduled_campaign(db, "gone.example", 1, 100, timedelta(seconds=-5))
    db.execute_sql("UPDATE contact SET opted_out_at = now() WHERE shop_id = %s", (shop_id,))

    # When the launch job runs, and runs again (a second clock, the next slot)
    first = scheduling.launch_due_campaigns(settings, audit.Actor.clock("launch_scheduled", 1))
    second = scheduling.launch_due_campaigns(settings, audit.Actor.clock("launch_scheduled", 1))

    # Then the sendable one was launched once, the other failed with the reason
    assert (first.launched, second.launched) == ([sendable], [])
    assert campaign_row(db, sendable)["status"] == "sending"
    assert len(batches(db, sendable)) == 1
    failed = campaign_row(db, unsendable)
    assert failed["status"] == "failed"
    assert failed["status_reason"].startswith("not sent: no eligible recipients:")
    assert first.failed == {unsendable: failed["status_reason"]}


# --- the jobs, through the whole stack ---------------------------------------------------------
def test_a_scheduled_campaign_launches_on_time_once_with_two_clocks(make_stack, db, redis_client):
    # Given the whole stack with two clocks, and three scheduled campaigns: one that can be
    # sent, one whose shop has no credits, one found long after its time (an outage)
    stack = make_stack(**FAST)
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker()
    clocks = {label: start_clock(stack, label) for label in ("clock-a", "clock-b")}
    wait_for_leader(redis_client, clocks, db)
    _, key = stack.create_shop("on-time.example", credits=1000)
    _, broke_key = stack.create_shop("broke.example", credits=0)
    stack.import_contacts(key, 50)
    stack.import_contacts(broke_key, 5, start=100)
    due = datetime.now(UTC) + timedelta(seconds=2.5)
    ids = {}
    for name, shop_key in (("on-time", key), ("broke", broke_key), ("missed", key)):
        created = stack.call(
            "POST",
            "/campaigns",
            shop_key,
            json={"name": name, "text": "Hi {first_name}, sale today"},
        )
        ids[name] = created.json()["id"]
        scheduled = stack.call(
            "POST",
            f"/campaigns/{ids[name]}/schedule",
            shop_key,
            json={"scheduled_at": due.isoformat()},
        )
        assert scheduled.status_code == 200, scheduled.text
    db.execute_sql(
        "UPDATE campaign SET scheduled_at = now() - interval '2 hours' WHERE id = %s",
        (ids["missed"],),
    )

    # When its time comes
    progress = stack.wait_finished(key, ids["on-time"], timeout=30)

    # Then it started within one job interval of its time and was sent once to each contact
    started = datetime.fromisoformat(progress["started_at"])
    late = (started - due).total_seconds()
    print(f"scheduled campaign launched {late:.3f}s after its time")
    assert 0 <= late <= INTERVAL_S + 0.3
    assert progress["status"] == "completed" and progress["sent"] == 50
    sent = stack.sim_messages()
    assert sent["count"] == 50 and len({m["to"] for m in sent["messages"]}) == 50
    assert all(count == 1 for _, count in batches(db, ids["on-time"]))
    launches = [
        r
        for r in job_runs(db)
        if r["job"] == "launch_scheduled" and ids["on-time"] in r["result"]["launched"]
    ]
    assert len(launches) == 1

    # And the other two failed, saying why, with nothing reserved
    broke = stack.call("GET", f"/campaigns/{ids['broke']}", broke_key).json()
    assert broke["status"] == "failed"
    assert broke["status_reason"].startswith("not sent: insufficient credits:")
    assert stack.call("GET", "/credits", broke_key).json()["reserved"] == 0
    missed = stack.call("GET", f"/campaigns/{ids['missed']}", key).json()
    assert missed["status"] == "failed"
    assert "beyond the 3600 s grace" in missed["status_reason"]
    assert_one_leader_at_a_time(job_runs(db))


@pytest.mark.brokers("redis", "rabbitmq")
def test_a_campaign_survives_a_redis_flush_and_sends_each_message_once(
    make_stack, db, redis_client
):
    # Given the whole stack with two clocks and a slow provider, and a 600-recipient campaign
    # in batches of 20 that is still sending
    stack = make_stack(**FAST, BATCH_STALE_AFTER_MS="2000", SEND_BATCH_SIZE="20")
    stack.start_sim("--dlr-delay-ms", "50")
    stack.sim_config(latency_ms=400)
    stack.start_web()
    stack.start_worker()
    clocks = {label: start_clock(stack, label) for label in ("clock-a", "clock-b")}
    wait_for_leader(redis_client, clocks, db)
    _, key = stack.create_shop("flushed.example", credits=5000)
    stack.import_contacts(key, 600)
    campaign_id = stack.call(
        "POST", "/campaigns", key, json={"name": "Flush", "text": "Hi {first_name}!"}
    ).json()["id"]
    assert stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key).status_code == 202
    at_flush = wait_for(
        lambda: (lambda p: p if p["sent"] >= 40 else None)(stack.progress(key, campaign_id)),
        30,
        "the first 40 messages",
        interval=0.05,
    )

    # When the broker loses every queued batch: on Redis a flush, which also takes the leader
    # lock and the clock registry; on RabbitMQ its queues purged
    lose_queued_messages(redis_client)
    flushed_at = database_now(db)
    assert at_flush["pending"] > 0, "the campaign finished before the flush"

    # Then the campaign still completes, every recipient sent exactly once
    progress = stack.wait_finished(key, campaign_id, timeout=60)
    assert progress["status"] == "completed"
    assert (progress["sent"], progress["pending"], progress["sending"]) == (600, 0, 0)
    sent = stack.sim_messages()
    assert sent["count"] == 600
    assert len({m["reference"] for m in sent["messages"]}) == 600
    # ...because the leader (re-)took the lock and republished the lost batches from PostgreSQL
    assert read_lock(redis_client)["exists"]
    # (a run still under way has no result yet: the leader keeps running jobs)
    republished = sum(
        (r["result"] or {}).get("republished_batches", 0)
        for r in job_runs(db)
        if r["job"] == "reconcile" and r["started_at"] > flushed_at
    )
    assert republished > 0
    assert_one_leader_at_a_time(job_runs(db), allow_overrun=True)


def test_one_shops_campaign_over_the_audience_cap_holds_back_no_other_shops_launch(make_stack, db):
    # Given a clock with an audience cap of 25, shop X's campaign of 30 due first and shop
    # Y's of 10 due a second later
    _, big = scheduled_campaign(db, "big.example", 30, 1000, timedelta(seconds=1))
    _, small = scheduled_campaign(db, "small.example", 10, 1000, timedelta(seconds=2))
    stack = make_stack(**FAST, MAX_CAMPAIGN_RECIPIENTS="25")
    start_clock(stack, "clock")

    # When their time comes, Then X's fails naming the cap and Y's is launched (the launch job
    # used to stop at X's at every tick, until both expired)
    wait_for(
        lambda: campaign_row(db, small)["status"] == "sending",
        2 + 3 * INTERVAL_S + TTL_S,
        "the other shop's campaign to be launched",
    )
    row = campaign_row(db, big)
    assert row["status"] == "failed" and "at most 25" in row["status_reason"]
