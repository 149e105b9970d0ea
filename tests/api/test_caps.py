"""Abuse caps (a 4xx naming the limit and the field, before the heavy work) and the campaign
answer's `audience`, which says who a campaign goes to without echoing its contact ids."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from api.app import create_app
from service.campaigns import MAX_CONTACT_IDS
from service.contacts import MAX_IMPORT
from tests.api.conftest import (
    CheckedClient,
    assert_error,
    auth,
    contact_ids,
    create_campaign,
    create_shop,
    import_contacts,
)


def count(db, table: str) -> int:
    return db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- caps ------------------------------------------------------------------------------------


def test_more_contact_ids_than_the_cap_are_422_naming_the_field_and_the_limit(client, db, shops):
    # Given a campaign body listing one contact id more than a campaign may hold
    body = {"name": "n", "text": "t", "contact_ids": [1] * (MAX_CONTACT_IDS + 1)}
    # When it is posted
    started = time.perf_counter()
    result = client.simulate_post("/campaigns", headers=auth(shops.key), json=body)
    # Then 422 naming contact_ids and the limit, answered without validating a million items,
    # and no campaign was created
    error = assert_error(result, 422, "contact_ids")
    assert error["field"] == "contact_ids"
    assert f"at most {MAX_CONTACT_IDS} items" in error["description"]
    assert time.perf_counter() - started < 5
    assert count(db, "campaign") == 1  # the other shop's, from the fixture


def test_a_json_import_over_the_cap_is_422_naming_the_field_and_the_limit(client, db, shops):
    # Given an import of one contact more than an import takes
    rows = [{"phone": f"+30690{i:07d}"} for i in range(MAX_IMPORT + 1)]
    # When it is posted
    result = client.simulate_post("/contacts", headers=auth(shops.key), json={"contacts": rows})
    # Then 422 naming contacts and the limit, and nothing was imported
    error = assert_error(result, 422, "contacts")
    assert error["field"] == "contacts"
    assert f"at most {MAX_IMPORT} items (it has {MAX_IMPORT + 1})" in error["description"]
    assert count(db, "contact") == 3  # the fixture's


def test_a_csv_import_over_the_cap_names_the_limit(client, db, shops):
    text = "phone\n" + "".join(f"+30690{i:07d}\n" for i in range(MAX_IMPORT + 1))
    result = client.simulate_post(
        "/contacts", headers=auth(shops.key), body=text, content_type="text/csv"
    )
    error = assert_error(result, 422, "body")
    assert f"at most {MAX_IMPORT} rows" in error["description"]
    assert count(db, "contact") == 3


@pytest.fixture
def capped(settings, redis_client, db) -> CheckedClient:
    """The API with MAX_CAMPAIGN_RECIPIENTS=2."""
    return CheckedClient(
        create_app(dataclasses.replace(settings, max_campaign_recipients=2), redis_client)
    )


def test_enqueue_over_the_recipient_cap_is_422_naming_it_and_writes_nothing(capped, db):
    # Given a shop with credits, three subscribed contacts, and a campaign to all of them,
    # under a cap of two recipients per campaign
    _, key = create_shop(capped, "capped.example", credits=100)
    import_contacts(capped, key, ["+306912345671", "+306912345672", "+306912345673"])
    campaign = create_campaign(capped, key)
    # When it is enqueued
    result = capped.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    # Then 422 naming the audience and the limit, and nothing was written
    error = assert_error(result, 422, "audience")
    assert error["field"] == "audience"
    assert "3 recipients" in error["description"] and "at most 2" in error["description"]
    assert (
        capped.simulate_get(f"/campaigns/{campaign['id']}", headers=auth(key)).json["status"]
        == "draft"
    )
    for table in ("campaign_recipient", "send_batch", "credit_reservation"):
        assert count(db, table) == 0, table


def test_an_audience_of_exactly_the_cap_is_enqueued(capped, db):
    # Given the same shop and a campaign listing two of its three contacts
    _, key = create_shop(capped, "at-cap.example", credits=100)
    import_contacts(capped, key, ["+306912345671", "+306912345672", "+306912345673"])
    campaign = create_campaign(capped, key, contact_ids=contact_ids(capped, key)[:2])
    # When it is enqueued, Then it is accepted with its two recipients
    result = capped.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert result.status_code == 202, result.text
    assert result.json["recipients"] == 2


# --- the audience in campaign answers --------------------------------------------------------


def test_a_campaign_to_everyone_answers_all_subscribed(client, shops):
    created = create_campaign(client, shops.key)
    assert created["audience"] == {"kind": "all_subscribed"}
    assert "contact_ids" not in created


def test_every_campaign_answer_counts_a_list_audience_instead_of_echoing_it(client, shops):
    # Given a campaign created with a list of contacts, one of them given twice
    first, second = contact_ids(client, shops.key)
    headers = auth(shops.key)
    created = create_campaign(client, shops.key, contact_ids=[first, second, first])
    path = f"/campaigns/{created['id']}"
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    # When it is read, listed, edited, scheduled and cancelled
    answers = {
        "create": created,
        "get": client.simulate_get(path, headers=headers).json,
        "list": client.simulate_get("/campaigns", headers=headers).json["items"][0],
        "patch": client.simulate_patch(path, headers=headers, json={"name": "Renamed"}).json,
        "schedule": client.simulate_post(
            f"{path}/schedule", headers=headers, json={"scheduled_at": when}
        ).json,
        "cancel": client.simulate_post(f"{path}/cancel", headers=headers).json,
    }
    # Then each says it goes to two contacts, and none carries their ids
    for name, answer in answers.items():
        assert answer["id"] == created["id"], name
        assert answer["audience"] == {"kind": "contacts", "count": 2}, name
        assert "contact_ids" not in answer, name


def test_an_audience_empty_for_lack_of_consent_says_so(client, db):
    # Given a shop that requires consent, whose one subscribed contact has none
    _, key = create_shop(client, "consent-empty.example", credits=100)
    imported = client.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": "+306912345679"}]}
    )
    assert imported.status_code == 200 and imported.json["created"] == 1
    campaign = create_campaign(client, key)
    # When it is enqueued
    result = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    # Then the 422 names consent (before: "no subscribed contact", of a subscribed contact)
    error = assert_error(result, 422, "audience")
    assert "with consent" in error["description"]
    assert "require_consent" in error["description"]


# --- a long list of contact ids, read where an import is --------------------------------------


@dataclasses.dataclass(frozen=True)
class Reading:
    """Where a body over `HEAVY_BODY` is read: in the web process's child (`children` 1, see
    `api/import_processes.py`) or in the request's thread (0)."""

    children: int

    def answered(self, at_least: int = 0) -> int:
        """How many answers the children have given, waiting up to a second for `at_least`
        (an answer is counted by a callback, which may run after its request has it)."""
        from api import import_processes

        deadline = time.monotonic() + 1
        while import_processes._answers < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        return import_processes._answers


@pytest.fixture(params=[0, 1], ids=["in the request", "in a child"])
def reading(request, settings):
    from api import import_processes

    import_processes.configure(request.param, settings)
    yield Reading(request.param)
    import_processes.configure(settings.import_processes, settings)


def long_list(ids: list[int], *extra: object) -> dict:
    """A campaign body over `HEAVY_BODY`: `ids` again and again, then `extra`."""
    from api.access import HEAVY_BODY

    repeated = ids * (HEAVY_BODY // len(ids) + 1)  # each at least 3 bytes: `1, `
    return {"name": "n", "text": "t", "contact_ids": [*repeated, *extra]}


def test_a_long_list_of_contact_ids_makes_a_campaign_to_each_once(client, db, shops, reading):
    # Given a body over HEAVY_BODY listing the shop's two contacts over and over
    own = contact_ids(client, shops.key)
    answered = reading.answered()

    # When it is posted
    result = client.simulate_post("/campaigns", headers=auth(shops.key), json=long_list(own))

    # Then the campaign goes to each contact once, its list read by the child if there is one
    assert result.status_code == 201, result.text
    assert result.json["audience"] == {"kind": "contacts", "count": 2}
    expected = answered + reading.children
    assert reading.answered(at_least=expected) == expected
    stored = db.execute_sql(
        "SELECT contact_ids FROM campaign WHERE id = %s", (result.json["id"],)
    ).fetchone()[0]
    assert stored == sorted(own)


def test_a_long_list_names_its_unknown_ids_and_its_first_bad_item(client, db, shops, reading):
    own = contact_ids(client, shops.key)
    before = count(db, "campaign")

    # Given a long list holding another shop's contact and ids no shop has, When it is posted
    missing = [10**12 + n for n in range(25)]
    body = long_list(own, *reversed(missing), shops.other_contact_id)
    result = client.simulate_post("/campaigns", headers=auth(shops.key), json=body)

    # Then 422 naming the first 20 of them in order, the other shop's among them (it is
    # smaller than ids no shop has), and nothing created
    assert_error(result, 422, "contact_ids")
    named = [shops.other_contact_id, *missing][:20]
    assert f"unknown contact ids: {named}" in result.json["description"]

    # And a long list with one item that is no id is 422 naming that item by its index
    body = long_list(own, "7")
    result = client.simulate_post("/campaigns", headers=auth(shops.key), json=body)
    assert_error(result, 422, f"contact_ids.{len(body['contact_ids']) - 1}")
    assert count(db, "campaign") == before
