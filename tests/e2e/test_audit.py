"""The audit trail on the real processes (SPEC 11): a campaign launched, paused, resumed and
cancelled over HTTP, and one the clock launches and the worker finishes; each one's events name
every change with its actor (the merchant's key, the clock's job and epoch, the worker), and
another shop cannot read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.stack import Stack, wait_for

CLOCK = {
    "SCHEDULER_LOCK_TTL_MS": "1500",
    "SCHEDULER_LOCK_RETRY_MS": "500",
    "SCHEDULE_INTERVAL_MS": "500",
    "RECONCILE_INTERVAL_MS": "1000",
    "STATUS_REFRESH_INTERVAL_MS": "1000",
}


def events(stack: Stack, key: str, campaign_id: int) -> list[dict]:
    answer = stack.call("GET", f"/campaigns/{campaign_id}/events", key, params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def actor(event: dict) -> tuple:
    return event["actor"]["kind"], event["actor"]["name"], event["actor"]["epoch"]


def changes(items: list[dict]) -> list[tuple]:
    return [
        (e["from_status"], e["to_status"], actor(e)) for e in items if e["subject"] == "campaign"
    ]


def settled(items: list[dict]) -> bool:
    """Whether the campaign's reservation no longer holds anything for calls in flight."""
    reservation = [e for e in items if e["subject"] == "reservation"]
    return bool(reservation) and reservation[-1]["to_status"] in ("held", "released")


def automatic(who: tuple) -> bool:
    """The worker, or a clock job with its epoch."""
    kind, name, epoch = who
    return kind == "worker" or (kind == "clock" and bool(name) and epoch is not None)


def test_each_change_of_a_campaign_is_an_event_of_whoever_made_it(make_stack, db):
    # Given the whole stack (a slow provider, small batches, a clock) and a shop of 120 contacts
    stack = make_stack(SEND_BATCH_SIZE="10", SEND_CONCURRENCY="2", **CLOCK)
    stack.start_sim("--latency-ms", "50", "--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker(threads=1)
    stack.start_clock()
    shop_id, key = stack.create_shop("audit.example", credits=1000)
    _, other_key = stack.create_shop("other.example", credits=0)
    stack.import_contacts(key, 120)
    keys = stack.call("GET", f"/admin/shops/{shop_id}/keys", stack.env["ADMIN_TOKEN"]).json()
    merchant = ("key", str(keys["items"][0]["id"]), None)

    # When the merchant launches a campaign, pauses, resumes and cancels it over HTTP
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "live", "text": "Hi {first_name}, sale"}
    ).json()
    path = f"/campaigns/{campaign['id']}"
    assert stack.call("POST", f"{path}/enqueue", key).status_code == 202
    wait_for(lambda: stack.sim_messages(summary="1")["count"] >= 10, 30, "the first batch")
    for action in ("pause", "resume", "cancel"):
        answer = stack.call("POST", f"{path}/{action}", key)
        assert answer.status_code == 200, answer.text
    # ... and schedules another, which the clock launches and the worker (or clock) finishes
    ten = [
        c["id"] for c in stack.call("GET", "/contacts", key, params={"limit": 10}).json()["items"]
    ]
    later = stack.call(
        "POST",
        "/campaigns",
        key,
        json={"name": "later", "text": "Sale today", "contact_ids": ten},
    ).json()
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    scheduled = stack.call(
        "POST", f"/campaigns/{later['id']}/schedule", key, json={"scheduled_at": when}
    )
    assert scheduled.status_code == 200, scheduled.text
    assert stack.wait_finished(key, later["id"], timeout=30)["status"] == "completed"
    live = wait_for(
        lambda: (lambda items: items if settled(items) else None)(
            events(stack, key, campaign["id"])
        ),
        30,
        "the cancelled campaign's reservation to settle",
    )

    # Then the first campaign's events are each of the merchant's actions, by its key, in order
    assert changes(live) == [
        ("draft", "sending", merchant),
        ("sending", "paused", merchant),
        ("paused", "sending", merchant),
        ("sending", "cancelled", merchant),
    ]
    reservation = [e for e in live if e["subject"] == "reservation"]
    assert (reservation[0]["to_status"], actor(reservation[0])) == ("active", merchant)
    # ... what the cancel could not release at once (calls in flight) was released later by
    # the worker or the clock
    assert all(actor(e) == merchant or automatic(actor(e)) for e in reservation[1:])
    assert [e["id"] for e in live] == sorted(e["id"] for e in live)

    # And the scheduled one was launched by the clock's job under its epoch, finished by the
    # worker (or the clock's reconcile), its reservation released with it
    trail = events(stack, key, later["id"])
    scheduling, launch, finish = changes(trail)
    assert scheduling == ("draft", "scheduled", merchant)
    assert launch[:2] == ("scheduled", "sending")
    assert launch[2][:2] == ("clock", "launch_scheduled") and launch[2][2] >= 1
    assert finish[:2] == ("sending", "completed") and automatic(finish[2])
    assert trail[-1]["subject"] == "reservation" and trail[-1]["to_status"] == "released"

    # And another shop cannot read either campaign's events
    for campaign_id in (campaign["id"], later["id"]):
        assert stack.call("GET", f"/campaigns/{campaign_id}/events", other_key).status_code == 404
