"""No token, secret or API key is ever written to a log (SPEC 8), read off the log files of a
real stack (simulator, gunicorn, a Dramatiq worker, a clock) after a campaign was sent with
its delivery reports posted back to `?token=`, and an operator used the ops page, health and
metrics with the admin token."""

from __future__ import annotations

import re

import requests

from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, MITTO_API_KEY, SECRET_KEY
from tests.e2e.stack import LOGS, Stack, wait_for

RECIPIENTS = 20


def send_campaign_with_delivery_reports(stack: Stack, key: str) -> int:
    stack.import_contacts(key, RECIPIENTS)
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "Logs", "text": "Hi {first_name}, 20% off today"}
    ).json()
    enqueued = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert enqueued.status_code == 202, enqueued.text
    assert stack.wait_finished(key, campaign["id"], timeout=120)["status"] == "completed"
    # Every recipient's report came back through the callback (`?token=DLR_WEBHOOK_SECRET`).
    wait_for(
        lambda: stack.progress(key, campaign["id"])["delivery"] == {"Delivered": RECIPIENTS},
        60,
        "every delivery report",
    )
    # Stored reports are not access-logged (one per message); a refused one is, with the
    # token in its URL: the line the redaction must cover.
    refused = requests.post(
        f"{stack.web}/webhooks/mitto/dlr?token={DLR_WEBHOOK_SECRET}",
        json={"id": "not-ours", "deliveryStatus": "Bogus"},
        timeout=30,
    )
    assert refused.status_code == 422, refused.text
    return campaign["id"]


def operate(stack: Stack) -> None:
    """What an operator does with the admin token: the ops page opened with the token in its
    URL, as a browser does (whose next requests repeat that URL as Referer), health, metrics."""
    opened_with_token = f"{stack.web}/ops?token={ADMIN_TOKEN}"
    with requests.Session() as browser:
        browser.get(opened_with_token, timeout=30)
        browser.get(f"{stack.web}/ops/state", headers={"Referer": opened_with_token}, timeout=30)
    for path in ("/health/full", "/metrics"):
        assert stack.call("GET", path, ADMIN_TOKEN).status_code in (200, 503), path


def read_logs(stack: Stack) -> dict[str, str]:
    """Each process's whole log, by process label."""
    return {
        path.name.removeprefix(f"{stack.name}.").removesuffix(".log"): path.read_text()
        for path in LOGS.glob(f"{stack.name}.*.log")
    }


def test_no_secret_token_or_api_key_reaches_any_process_log(make_stack):
    # Given a whole stack
    stack = make_stack()
    stack.start_sim("--dlr-delay-ms", "50")
    stack.start_web()
    stack.start_worker()
    stack.start_clock()
    # When a shop (with its API key) sends a campaign whose delivery reports come back...
    _, api_key = stack.create_shop("secrets.example", credits=1000)
    campaign_id = send_campaign_with_delivery_reports(stack, api_key)
    # ...a contact opens its unsubscribe link (a token in the path)...
    text = stack.sim_messages()["messages"][0]["text"]
    unsubscribe_token = re.search(r"/u/([A-Za-z0-9_-]+)", text)[1]
    assert stack.call("GET", f"/u/{unsubscribe_token}").status_code == 200
    # ...and an operator uses the admin token
    operate(stack)
    stack.close()

    # Then every process wrote a log...
    logs = read_logs(stack)
    assert set(logs) == {"sim", "web", "worker", "clock"}, sorted(logs)
    assert all(logs.values()), [label for label, log in logs.items() if not log]
    # ...and none of them holds a secret, a token or an API key...
    secrets = {
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET,
        "MITTO_API_KEY": MITTO_API_KEY,
        "the shop's API key": api_key,
        "the unsubscribe token": unsubscribe_token,
    }
    leaks = [
        f"{name} in the {label} log, line {number}"
        for label, log in logs.items()
        for number, line in enumerate(log.splitlines(), 1)
        for name, secret in secrets.items()
        if secret in line
    ]
    assert not leaks, leaks
    # ...though the requests and the work are all there, redacted where they carried one
    web = logs["web"]
    for seen in (
        "POST /admin/shops",
        "POST /contacts",
        f"POST /campaigns/{campaign_id}/enqueue",
        'POST /webhooks/mitto/dlr?token=[redacted] HTTP/1.1\\" 422',
        "GET /u/[redacted]",
        "GET /ops?token=[redacted]",
        "GET /ops/state",
        "GET /health/full",
        "GET /metrics",
    ):
        assert seen in web, f"{seen!r} is not in the web log"
    assert '"batch sent"' in logs["worker"] and '"clock started"' in logs["clock"]
    assert "provider_sim.started" in logs["sim"]
    # (the worker does not even name the callback it hands the provider)
    assert "/webhooks/mitto/dlr" not in logs["worker"]
