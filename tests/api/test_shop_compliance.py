"""A shop's quiet hours and frequency cap (SPEC 11): set at creation (quiet hours default to
QUIET_HOURS_DEFAULT, 21:00-08:00 unless configured; no cap) and changed by the operator."""

from __future__ import annotations

import dataclasses

import pytest

from api.app import create_app
from tests.api.conftest import ADMIN, CheckedClient, assert_error


@pytest.fixture
def product_client(settings, redis_client, db, provider) -> CheckedClient:
    """The app with the product's default quiet hours (the test suite's are off)."""
    product = dataclasses.replace(settings, quiet_hours_default=(21 * 60, 8 * 60))
    return CheckedClient(create_app(product, redis_client, provider))


def create(client, domain: str, **fields):
    return client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": domain, "name": "Shop", **fields}
    )


def test_a_new_shop_gets_the_default_quiet_hours_and_no_cap(product_client):
    created = create(product_client, "default.example")
    assert created.status_code == 201
    assert created.json["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    assert created.json["frequency_cap"] is None


def test_a_shop_created_with_its_own_settings(product_client):
    created = create(
        product_client,
        "own.example",
        timezone="America/New_York",
        quiet_hours={"start": "22:30", "end": "07:00"},
        frequency_cap=2,
    )
    assert created.status_code == 201
    assert created.json["quiet_hours"] == {"start": "22:30", "end": "07:00"}
    assert created.json["frequency_cap"] == 2
    # null: no quiet hours at all
    assert create(product_client, "none.example", quiet_hours=None).json["quiet_hours"] is None


def test_the_operator_changes_them(product_client):
    shop_id = create(product_client, "change.example").json["id"]
    changed = product_client.simulate_patch(
        f"/admin/shops/{shop_id}",
        headers=ADMIN,
        json={"quiet_hours": {"start": "20:00", "end": "09:00"}, "frequency_cap": 3},
    )
    assert changed.status_code == 200
    assert changed.json["quiet_hours"] == {"start": "20:00", "end": "09:00"}
    assert changed.json["frequency_cap"] == 3
    # only what is given changes; null turns a setting off
    off = product_client.simulate_patch(
        f"/admin/shops/{shop_id}", headers=ADMIN, json={"frequency_cap": None}
    )
    assert off.json["frequency_cap"] is None
    assert off.json["quiet_hours"] == {"start": "20:00", "end": "09:00"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quiet_hours": {"start": "21:00", "end": "21:00"}}, "quiet_hours"),
        # the schema names the part of quiet_hours at fault
        ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "start"),
        ({"quiet_hours": {"start": "21:00"}}, "end"),
        ({"frequency_cap": 0}, "frequency_cap"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({}, None),
    ],
)
def test_bad_settings_are_refused_naming_the_field(product_client, body, field):
    shop_id = create(product_client, "bad.example").json["id"]
    answer = product_client.simulate_patch(f"/admin/shops/{shop_id}", headers=ADMIN, json=body)
    assert_error(answer, 422, field)
    if body:
        assert_error(create(product_client, "bad2.example", **body), 422, field)


def test_an_unknown_shop_is_a_404(product_client):
    answer = product_client.simulate_patch(
        "/admin/shops/999999", headers=ADMIN, json={"frequency_cap": 1}
    )
    assert_error(answer, 404)


def test_only_the_operator_may_change_them(product_client):
    created = create(product_client, "keyed.example").json
    answer = product_client.simulate_patch(
        f"/admin/shops/{created['id']}",
        headers={"Authorization": f"Bearer {created['api_key']}"},
        json={"quiet_hours": None},
    )
    assert answer.status_code in (401, 403)
