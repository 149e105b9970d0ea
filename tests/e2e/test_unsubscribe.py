"""Unsubscribing over real gunicorn (SPEC 5, 6): opening the link changes nothing, confirming
it opts the contact out, and the next campaign leaves the contact out."""

from __future__ import annotations

import requests

from tests.e2e.invariants import rows
from tests.e2e.stack import wait_for


def launch(stack, key: str, text: str) -> dict:
    campaign = stack.call("POST", "/campaigns", key, json={"name": "c", "text": text}).json()
    enqueued = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert enqueued.status_code == 202, enqueued.text
    return enqueued.json()


def opted_out(stack, key: str) -> list[str]:
    answer = stack.call("GET", "/contacts?opted_out=true", key)
    assert answer.status_code == 200, answer.text
    return [item["phone"] for item in answer.json()["items"]]


def test_opening_the_link_changes_nothing_and_confirming_it_opts_out(stack, db):
    # Given a campaign delivered to three contacts, each message ending in its unsubscribe link
    _, key = stack.create_shop("unsubscribe.example", credits=1000)
    stack.import_contacts(key, 3)
    first = launch(stack, key, "Hi {first_name}, the summer sale starts today")
    stack.wait_finished(key, first["id"], timeout=60)
    message = stack.sim_messages()["messages"][0]
    phone, link = message["to"], message["text"].split()[-1]
    assert "/u/" in link

    # When the link is opened (as a person, a link scanner or a message previewer opens it)
    for user_agent in ("Mozilla/5.0 (iPhone) Safari/604.1", "facebookexternalhit/1.1"):
        page = requests.get(link, headers={"User-Agent": user_agent}, timeout=10)
        # Then it is a page naming the shop with a confirm button, and nothing changed
        assert page.status_code == 200 and "unsubscribe.example" in page.text
        assert '<form method="post">' in page.text
    assert opted_out(stack, key) == []
    assert rows(db, "SELECT count(*) FROM suppression") == [(0,)]

    # When the contact confirms (the form posts RFC 8058's one-click body), twice
    for _ in range(2):
        done = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert done.status_code == 200 and "You are unsubscribed" in done.text

    # Then the contact is listed as opted out, once, and suppressed
    assert opted_out(stack, key) == [phone]
    assert rows(db, "SELECT phone, source FROM suppression") == [(phone, "link")]

    # And a new campaign for everyone leaves it out: two recipients, nothing sent to it
    second = launch(stack, key, "Hi {first_name}, last day of the sale")
    assert second["recipients"] == 2
    stack.wait_finished(key, second["id"], timeout=60)
    wait_for(lambda: stack.sim_messages(summary="1")["count"] == 5, 10, "the second campaign")
    assert stack.sim_messages(to=phone)["count"] == 1  # the first campaign's message only
    assert rows(
        db,
        "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s AND phone = %s",
        second["id"],
        phone,
    ) == [(0,)]
