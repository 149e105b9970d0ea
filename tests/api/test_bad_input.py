"""Bad input to every endpoint of SPEC 5 that takes input: the answer is the documented status
with a JSON `{"title", "description"}` naming the field, nothing is written, and never a 500.
Every request goes through `CheckedClient`, which fails any 5xx or non-JSON error on its own."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import falcon.testing
import pytest

from api import import_processes
from api.body import MAX_BODY
from models.database import execute
from service import links
from tests.api.conftest import (
    ADMIN,
    assert_error,
    auth,
    contact_ids,
    create_campaign,
    create_shop,
    import_contacts,
    top_up,
)
from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, SECRET_KEY

MISSING_ID = 987654
WEBHOOK = {"X-Webhook-Token": DLR_WEBHOOK_SECRET}
TABLES = (
    "shop",
    "api_key",
    "contact",
    "suppression",
    "campaign",
    "campaign_recipient",
    "send_batch",
    "credit_transaction",
    "credit_reservation",
    "delivery_report",
)


# --- helpers ---------------------------------------------------------------------------------


def count(db, table: str) -> int:
    return db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]


def snapshot(db) -> dict:
    """Everything a rejected request could have written."""
    rows = {table: count(db, table) for table in TABLES}
    rows["campaigns"] = db.execute_sql(
        "SELECT id, name, text, status, scheduled_at, started_at FROM campaign ORDER BY id"
    ).fetchall()
    rows["balances"] = db.execute_sql("SELECT id, credit_balance FROM shop ORDER BY id").fetchall()
    return rows


def future(days: int = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


# Every endpoint with a body: (method, path template, who authenticates).
ENDPOINTS = {
    "create shop": ("POST", "/admin/shops", "admin"),
    "top up": ("POST", "/admin/shops/{shop_id}/credits", "admin"),
    "adjust credits": ("POST", "/admin/shops/{shop_id}/adjustments", "admin"),
    "import contacts": ("POST", "/contacts", "shop"),
    "create campaign": ("POST", "/campaigns", "shop"),
    "edit campaign": ("PATCH", "/campaigns/{campaign_id}", "shop"),
    "schedule campaign": ("POST", "/campaigns/{campaign_id}/schedule", "shop"),
    "delivery report": ("POST", "/webhooks/mitto/dlr", "webhook"),
}

# A valid body for each, used as the base of wrong and unknown fields.
VALID = {
    "create shop": {"domain": "new-shop.example", "name": "New"},
    "top up": {"amount": 10, "reference": "order-1"},
    "adjust credits": {"amount": -10, "reason": "chargeback", "reference": "ticket-1"},
    "import contacts": {"contacts": [{"phone": "+14155552671", "first_name": "Ann"}]},
    "create campaign": {"name": "Autumn", "text": "Autumn sale"},
    "edit campaign": {"name": "Renamed"},
    "schedule campaign": {"scheduled_at": future()},
    "delivery report": {"id": "msg-1", "deliveryStatus": "Delivered"},
}


@pytest.fixture
def draft(client, shops) -> int:
    """A draft campaign of the shop under test."""
    return create_campaign(client, shops.key)["id"]


@pytest.fixture
def send(client, shops, draft):
    """send(endpoint name, json=... | body=...): the request with the endpoint's credentials."""

    def request(name: str, **kwargs):
        method, template, who = ENDPOINTS[name]
        path = template.format(shop_id=shops.id, campaign_id=draft)
        headers = {"admin": ADMIN, "shop": auth(shops.key), "webhook": WEBHOOK}[who]
        return client.simulate_request(method, path, headers=headers, **kwargs)

    return request


# --- framework errors and authentication -----------------------------------------------------


def test_unknown_route_is_a_json_404(client, shops):
    # Given an authenticated shop
    # When it asks for a route that does not exist
    result = client.simulate_get("/no-such-thing", headers=auth(shops.key))
    # Then Falcon's 404 is JSON with title and description
    assert_error(result, 404)


def test_a_method_the_route_lacks_is_a_json_405(client, shops, draft):
    # Given a campaign
    # When it is DELETEd (no such method) or the list is PUT
    deleted = client.simulate_delete(f"/campaigns/{draft}", headers=auth(shops.key))
    put = client.simulate_put("/campaigns", headers=auth(shops.key), json={})
    # Then both are JSON 405s that say which methods are allowed
    assert_error(deleted, 405)
    assert_error(put, 405)
    assert set(deleted.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH"}


@pytest.mark.parametrize("accept", ["application/xml", "text/html", "image/png"])
def test_errors_are_json_whatever_the_client_accepts(client, shops, accept):
    # When a client that prefers another type gets an error (Falcon would answer XML, or nothing)
    missing = client.simulate_get("/no-such-thing", headers={**auth(shops.key), "Accept": accept})
    invalid = client.simulate_get(
        "/contacts", headers={**auth(shops.key), "Accept": accept}, query_string="limit=0"
    )
    # Then they are JSON all the same
    assert_error(missing, 404)
    assert_error(invalid, 422, "limit")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ak_not-a-real-key"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer caf\u00e9"},  # not ASCII: must not crash the comparison
    ],
    ids=["none", "empty", "wrong", "basic", "latin-1"],
)
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/credits"),
        ("GET", "/credits/transactions"),
        ("POST", "/contacts"),
        ("GET", "/contacts"),
        ("POST", "/campaigns"),
        ("GET", "/campaigns"),
        ("GET", "/campaigns/1"),
        ("PATCH", "/campaigns/1"),
        ("POST", "/campaigns/1/enqueue"),
        ("POST", "/campaigns/1/schedule"),
        ("POST", "/campaigns/1/pause"),
        ("POST", "/campaigns/1/resume"),
        ("POST", "/campaigns/1/cancel"),
        ("GET", "/campaigns/1/progress"),
        ("GET", "/campaigns/1/recipients"),
    ],
)
def test_a_shop_route_without_a_valid_key_is_401(client, db, shops, headers, method, path):
    # Given a shop with data
    before = snapshot(db)
    # When a route is called without a valid API key
    result = client.simulate_request(method, path, headers=headers, json={"name": "x"})
    # Then 401 with a Bearer challenge, and nothing changed
    assert_error(result, 401)
    assert result.headers.get("www-authenticate") == "Bearer"
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}-but-longer"},
        {"Authorization": "Bearer caf\u00e9"},
    ],
    ids=["none", "wrong", "prefix", "latin-1"],
)
def test_an_admin_route_without_the_admin_token_is_401(client, db, shops, headers):
    # Given shops
    before = snapshot(db)
    # When the admin routes are called without the admin token
    created = client.simulate_post(
        "/admin/shops", headers=headers, json={"domain": "x.example", "name": "x"}
    )
    topped = client.simulate_post(
        f"/admin/shops/{shops.id}/credits", headers=headers, json={"amount": 5, "reference": "r"}
    )
    # Then both are 401 and no shop or credit was added
    assert_error(created, 401)
    assert_error(topped, 401)
    assert snapshot(db) == before


def test_an_admin_route_with_a_shop_key_is_401(client, db, shops):
    # Given a shop's valid API key
    before = snapshot(db)
    # When it is used on the admin routes
    created = client.simulate_post(
        "/admin/shops", headers=auth(shops.key), json={"domain": "x.example", "name": "x"}
    )
    topped = client.simulate_post(
        f"/admin/shops/{shops.id}/credits",
        headers=auth(shops.key),
        json={"amount": 5, "reference": "r"},
    )
    # Then 401: a shop cannot create shops or credit itself
    assert_error(created, 401)
    assert_error(topped, 401)
    assert snapshot(db) == before


def test_the_admin_token_is_not_a_shop_key(client, shops):
    # When the admin token is used on a shop route
    result = client.simulate_get("/credits", headers=ADMIN)
    # Then 401: it names no shop
    assert_error(result, 401)


# --- bodies: the same malformations on every endpoint ----------------------------------------


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": "x",}',
        b"{'name': 'x'}",
        b"nul",
        b"\xff\xfe\x00",
        b'{"a": 1} trailing',
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
        # Python's parser takes these; JSON has no NaN nor infinity
        b'{"name": NaN, "amount": NaN}',
        b'{"name": "x", "amount": -Infinity}',
        b'{"name": "x", "amount": 1e999}',
    ],
    ids=[
        "unclosed",
        "trailing-comma",
        "single-quotes",
        "bad-literal",
        "not-utf8",
        "trailing",
        "deep",
        "nan",
        "infinity",
        "overflowing-number",
    ],
)
def test_malformed_json_is_400(send, db, name, raw):
    # Given everything as it is
    before = snapshot(db)
    # When the endpoint gets a body that is not JSON
    result = send(name, body=raw)
    # Then 400, nothing written
    assert_error(result, 400)
    assert snapshot(db) == before


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("raw", [b"", b"   \n"], ids=["empty", "whitespace"])
def test_an_empty_body_is_400(send, db, name, raw):
    before = snapshot(db)
    # When the endpoint gets no body at all
    result = send(name, body=raw)
    # Then 400 saying the body is empty
    assert_error(result, 400)
    assert snapshot(db) == before


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize(
    "document",
    [[], [1, 2], "text", 42, None, True],
    ids=["empty-array", "array", "string", "number", "null", "bool"],
)
def test_a_body_that_is_not_an_object_is_422(send, db, name, document):
    # (the delivery-report webhook takes an array of reports, but not of numbers, nor empty)
    before = snapshot(db)
    # When the endpoint gets JSON that is not an object
    result = send(name, body=json.dumps(document))
    # Then 422, nothing written
    assert_error(result, 422)
    assert snapshot(db) == before


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_body_over_5_mib_is_413(send, db, name):
    # Given a real, well-formed JSON document of 5 MiB + 1 byte
    head, tail = b'{"name": "', b'"}'
    raw = head + b"x" * (MAX_BODY + 1 - len(head) - len(tail)) + tail
    assert len(raw) == MAX_BODY + 1
    before = snapshot(db)
    # When it is sent
    result = send(name, body=raw)
    # Then 413, nothing written, and the client is told the connection closes (the rest of
    # the body is not read)
    assert_error(result, 413)
    assert result.headers["connection"] == "close"
    assert snapshot(db) == before


def test_a_declared_length_over_5_mib_is_413_before_reading(send, db):
    before = snapshot(db)
    # When the Content-Length says more than 5 MiB (whatever the body is)
    result = send(
        "edit campaign", body=b'{"name": "x"}', extras={"CONTENT_LENGTH": str(MAX_BODY + 1)}
    )
    # Then 413 without reading it, and nothing was applied
    assert_error(result, 413)
    assert result.headers["connection"] == "close"
    assert snapshot(db) == before


def test_a_body_of_exactly_5_mib_is_read(send, db):
    # Given a JSON document of exactly 5 MiB (a name far too long)
    head, tail = b'{"name": "', b'"}'
    raw = head + b"x" * (MAX_BODY - len(head) - len(tail)) + tail
    # When it is sent
    result = send("edit campaign", body=raw)
    # Then it was read and validated (422 for the name), not refused as too large
    assert_error(result, 422, "name")


UNKNOWN = {
    "create shop": ({**VALID["create shop"], "credit_balance": 10**6}, "credit_balance"),
    "top up": ({**VALID["top up"], "shop_id": 2}, "shop_id"),
    "adjust credits": ({**VALID["adjust credits"], "kind": "top-up"}, "kind"),
    "import contacts": ({**VALID["import contacts"], "tags": ["vip"]}, "tags"),
    "create campaign": ({**VALID["create campaign"], "status": "sending"}, "status"),
    "edit campaign": ({"name": "x", "status": "completed"}, "status"),
    "schedule campaign": ({**VALID["schedule campaign"], "timezone": "UTC"}, "timezone"),
}


@pytest.mark.parametrize("name", UNKNOWN)
def test_an_unknown_field_is_422_and_nothing_is_written(send, db, name):
    # Given a valid body with one field the API does not know
    body, field = UNKNOWN[name]
    before = snapshot(db)
    # When it is sent
    result = send(name, json=body)
    # Then 422 naming the field, and not even the known fields were written
    assert_error(result, 422, field)
    assert snapshot(db) == before


# One bad row of an import: reported by its index, naming the row's field (None: the row
# itself), while the other rows are imported (SPEC 5). These were whole-body 422s before.
BAD_ROWS = [
    ({"phone": "+447911123457", "email": "a@b.example"}, "email"),
    ({"phone": 447911123457}, "phone"),
    ({"phone": None}, "phone"),
    ({"first_name": "Ann"}, "phone"),
    ({"phone": ""}, "phone"),
    ({"phone": "   "}, "phone"),
    ({"phone": "not a phone"}, "phone"),
    ({"phone": "+44" + "7" * 38}, "phone"),
    ({"phone": "+447911123457", "first_name": 3}, "first_name"),
    ({"phone": "+447911123457", "first_name": "x" * 101}, "first_name"),
    ({"phone": "+447911123457", "first_name": "a\u0000b"}, "first_name"),
    ({"phone": "+447911123457", "first_name": "a\ud800b"}, "first_name"),
    ("+447911123457", None),
    (None, None),
    ([{"phone": "+447911123457"}], None),
]


@pytest.mark.parametrize("row, field", BAD_ROWS, ids=[repr(row)[:40] for row, _ in BAD_ROWS])
def test_a_bad_row_is_reported_by_index_and_the_other_rows_imported(send, db, row, field):
    before = count(db, "contact")
    # When one row of an import is wrong (sent escaped: "\ud800" is valid JSON, not UTF-8)
    result = send(
        "import contacts",
        body=json.dumps(
            {
                "contacts": [
                    {"phone": "+14155552671"},
                    row,
                    {"phone": "+447911123456", "first_name": "Bo"},
                ]
            }
        ),
    )
    # Then 200: that row is reported at index 1 naming its field, the other two are imported
    assert result.status_code == 200, result.text
    assert result.json["created"] == 2
    [invalid] = result.json["invalid"]
    assert (invalid["index"], invalid["field"]) == (1, field), invalid
    assert isinstance(invalid["error"], str) and invalid["error"]
    assert count(db, "contact") == before + 2


WRONG_TYPES = [
    ("create shop", {"domain": 5, "name": "x"}, "domain"),
    ("create shop", {"domain": "not a domain", "name": "x"}, "domain"),
    ("create shop", {"domain": "a.example", "name": ""}, "name"),
    ("create shop", {"domain": "a.example", "name": "x", "sender": "x" * 16}, "sender"),
    # Not a sender SMS can carry (a probe's was taken)
    ("create shop", {"domain": "a.example", "name": "x", "sender": "\u2603"}, "sender"),
    ("create shop", {"domain": "a.example", "name": "x", "sender": " Shop"}, "sender"),
    ("create shop", {"domain": "a.example", "name": "x", "sender": "ACME\n"}, "sender"),
    ("create shop", {"domain": "a.example\n", "name": "x"}, "domain"),
    (
        "create shop",
        {"domain": "a.example", "name": "x", "quiet_hours": {"start": "21:00\n", "end": "08:00"}},
        "quiet_hours.start",
    ),
    ("import contacts", {"contacts": [], "default_country": "GR\n"}, "default_country"),
    ("create shop", {"domain": "a.example", "name": "   "}, "name"),
    ("create shop", {"domain": "a.example", "name": "x", "timezone": "Mars/Olympus"}, "timezone"),
    (
        "create shop",
        {"domain": "a.example", "name": "x", "timezone": "../../etc/passwd"},
        "timezone",
    ),
    # A folder of the zone database: ZoneInfo raised IsADirectoryError, answered 500
    ("create shop", {"domain": "a.example", "name": "x", "timezone": "America"}, "timezone"),
    ("create shop", {"domain": "a.example", "name": "x", "timezone": "Etc"}, "timezone"),
    # Files of the zone database that are no zone: `localtime` is the machine's own
    ("create shop", {"domain": "a.example", "name": "x", "timezone": "localtime"}, "timezone"),
    ("create shop", {"domain": "a.example", "name": "x", "timezone": "Factory"}, "timezone"),
    # zoneinfo reads a `right/` zone with its summer offset all year (quiet hours an hour early
    # every winter); `posix/` names are copies of the real ones
    (
        "create shop",
        {"domain": "a.example", "name": "x", "timezone": "right/America/New_York"},
        "timezone",
    ),
    (
        "create shop",
        {"domain": "a.example", "name": "x", "timezone": "posix/Europe/Athens"},
        "timezone",
    ),
    ("create shop", {"domain": "shop-one.example", "name": "taken"}, "domain"),
    # Errors inside a oneOf (quiet hours: an object or null) name the field from the body
    ("create shop", {"domain": "a.example", "name": "x", "quiet_hours": "off"}, "quiet_hours"),
    (
        "create shop",
        {"domain": "a.example", "name": "x", "quiet_hours": {"start": "24:00", "end": "08:00"}},
        "quiet_hours.start",
    ),
    ("create shop", {"domain": "SHOP-ONE.example", "name": "taken, in capitals"}, "domain"),
    ("top up", {"amount": "10", "reference": "r"}, "amount"),
    ("top up", {"amount": 0, "reference": "r"}, "amount"),
    ("top up", {"amount": -5, "reference": "r"}, "amount"),
    ("top up", {"amount": 1.5, "reference": "r"}, "amount"),
    ("top up", {"amount": 10**30, "reference": "r"}, "amount"),
    ("top up", {"amount": 10, "reference": 7}, "reference"),
    ("import contacts", {"contacts": {"phone": "+14155552671"}}, "contacts"),
    ("import contacts", {"contacts": [], "default_country": "gr"}, "default_country"),
    ("import contacts", {"contacts": [{"phone": "1"}] * 10_001}, "contacts"),
    ("create campaign", {"name": 1, "text": "t"}, "name"),
    # Spaces alone are blank, as "" is (a probe's was created)
    ("create campaign", {"name": "   ", "text": "t"}, "name"),
    ("create campaign", {"name": "\t\n", "text": "t"}, "name"),
    ("create campaign", {"name": "n", "text": ""}, "text"),
    ("create campaign", {"name": "n", "text": "x" * 1601}, "text"),
    # Empty for a contact without a first name: a test send of it answered 500, and each such
    # recipient's call was refused by the provider
    ("create campaign", {"name": "n", "text": "{first_name}"}, "text"),
    ("create campaign", {"name": "n", "text": " {first_name} \n"}, "text"),
    ("create campaign", {"name": "n", "text": "   "}, "text"),
    ("create campaign", {"name": "n", "text": "t", "contact_ids": ["1"]}, "contact_ids.0"),
    ("create campaign", {"name": "n", "text": "t", "contact_ids": [0]}, "contact_ids.0"),
    ("create campaign", {"name": "n", "text": "t", "contact_ids": [2**63]}, "contact_ids.0"),
    ("create campaign", {"name": "n", "text": "t", "contact_ids": [2**63 - 1]}, "contact_ids"),
    ("create campaign", {"name": "n", "text": "t", "contact_ids": []}, "contact_ids"),
    ("create campaign", {"name": "n", "text": "t", "contact_ids": 1}, "contact_ids"),
    (
        "create campaign",
        {"name": "n", "text": "t", "append_unsubscribe": "yes"},
        "append_unsubscribe",
    ),
    ("edit campaign", {"name": None}, "name"),
    ("edit campaign", {"name": "  "}, "name"),
    ("edit campaign", {"text": ["a"]}, "text"),
    ("edit campaign", {"text": "{first_name} "}, "text"),
    ("schedule campaign", {"scheduled_at": 1767225600}, "scheduled_at"),
    ("schedule campaign", {"scheduled_at": "tomorrow"}, "scheduled_at"),
    ("schedule campaign", {"scheduled_at": "2030-02-30T10:00:00+00:00"}, "scheduled_at"),
    # ISO 8601 that is not RFC 3339 (Python's fromisoformat takes them all)
    ("schedule campaign", {"scheduled_at": "2030-W01-1T10:00:00+00:00"}, "scheduled_at"),
    ("schedule campaign", {"scheduled_at": "20300101T100000Z"}, "scheduled_at"),
    ("schedule campaign", {"scheduled_at": "2030-01-01T10Z"}, "scheduled_at"),
    ("schedule campaign", {"scheduled_at": "2030-01-01T10:00:00+05:30:15"}, "scheduled_at"),
    ("schedule campaign", {"scheduled_at": "2030-01-01T10:00:00,5Z"}, "scheduled_at"),
    ("delivery report", {"id": -5, "deliveryStatus": "Delivered"}, "id"),
    ("delivery report", {"id": "m", "deliveryStatus": "Delivered?"}, "deliveryStatus"),
    ("delivery report", [{"id": "m", "deliveryStatus": 3}, {"id": "n"}], "0.deliveryStatus"),
]


@pytest.mark.parametrize(
    "name, body, field", WRONG_TYPES, ids=[f"{n}:{f}" for n, _, f in WRONG_TYPES]
)
def test_a_wrong_type_or_value_is_422_naming_the_field(send, db, name, body, field):
    before = snapshot(db)
    # When a field has the wrong type or is out of range
    result = send(name, json=body)
    # Then 422 naming the field, nothing written
    assert_error(result, 422, field)
    assert snapshot(db) == before


MISSING = [
    ("create shop", {"name": "x"}, "domain"),
    ("create shop", {"domain": "a.example"}, "name"),
    ("top up", {"amount": 5}, "reference"),
    ("top up", {"reference": "r"}, "amount"),
    ("import contacts", {}, "contacts"),
    ("create campaign", {"name": "n"}, "text"),
    ("create campaign", {"text": "t"}, "name"),
    ("edit campaign", {}, "body"),
    ("schedule campaign", {}, "scheduled_at"),
    ("delivery report", {"id": "m"}, "deliveryStatus"),
    ("delivery report", {"deliveryStatus": "Delivered"}, "id"),
]


@pytest.mark.parametrize("name, body, field", MISSING, ids=[f"{n}:{f}" for n, _, f in MISSING])
def test_a_missing_required_field_is_422_naming_it(send, db, name, body, field):
    before = snapshot(db)
    # When a required field is left out
    result = send(name, json=body)
    # Then 422 naming it, nothing written
    assert_error(result, 422, field)
    assert snapshot(db) == before


TEXT_FIELDS = [
    ("create shop", {"domain": "a.example", "name": "{}"}, "name"),
    ("top up", {"amount": 5, "reference": "{}"}, "reference"),
    ("create campaign", {"name": "n", "text": "{}"}, "text"),
    ("edit campaign", {"name": "{}"}, "name"),
    ("delivery report", {"id": "{}", "deliveryStatus": "Delivered"}, "id"),
]


@pytest.mark.parametrize("character", ["\u0000", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    "name, template, field", TEXT_FIELDS, ids=[f"{n}:{f}" for n, _, f in TEXT_FIELDS]
)
def test_text_postgresql_cannot_store_is_422(send, db, name, template, field, character):
    # Given a string JSON allows but PostgreSQL text does not (NUL, an unpaired surrogate)
    body = json.loads(json.dumps(template).replace("{}", json.dumps(f"a{character}b")[1:-1]))
    before = snapshot(db)
    # When it is sent (escaped: "\ud800" is valid JSON text, not valid UTF-8)
    result = send(name, body=json.dumps(body))
    # Then 422 naming the field rather than a database error
    assert_error(result, 422, field)
    assert snapshot(db) == before


# --- contact import --------------------------------------------------------------------------


def test_invalid_phones_are_reported_by_index_and_valid_rows_still_imported(client, db, shops):
    before = count(db, "contact")
    # When an import mixes valid and invalid numbers
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={
            "contacts": [
                {"phone": "+14155552671", "first_name": "Ann"},
                {"phone": "not a phone"},
                {"phone": "+3069123"},
                {"phone": "+447911123456"},
                {"phone": "6912345677"},  # national, and no default country
            ]
        },
    )
    # Then 200: the two valid ones are created, the others reported by index with a reason
    assert result.status_code == 200, result.text
    assert result.json["created"] == 2 and result.json["updated"] == 0
    assert [row["index"] for row in result.json["invalid"]] == [1, 2, 4]
    assert all(isinstance(row["error"], str) and row["error"] for row in result.json["invalid"])
    assert count(db, "contact") == before + 2


def test_a_default_country_reads_national_numbers(client, shops):
    # When national numbers come with their country
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={"contacts": [{"phone": "6912345670"}], "default_country": "GR"},
    )
    # Then they are valid
    assert result.status_code == 200, result.text
    assert (result.json["created"], result.json["invalid"]) == (1, [])


def test_an_unknown_default_country_makes_national_numbers_invalid_not_an_error(client, shops):
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={
            "contacts": [{"phone": "6912345670"}, {"phone": "+14155552671"}],
            "default_country": "ZZ",
        },
    )
    assert result.status_code == 200, result.text
    assert result.json["created"] == 1
    assert [row["index"] for row in result.json["invalid"]] == [0]


def test_duplicates_in_one_import_are_merged(client, db, shops):
    before = count(db, "contact")
    # When one number appears three times in different spellings
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={
            "contacts": [
                {"phone": "+1 415 555 2671", "first_name": "Ann"},
                {"phone": "+14155552671"},
                {"phone": "+1 (415) 555-2671", "first_name": "Anna"},
                {"phone": "+447911123458"},
            ]
        },
    )
    # Then it is created once (with the last first name given)
    assert result.status_code == 200, result.text
    assert (result.json["created"], result.json["updated"]) == (2, 0)
    assert count(db, "contact") == before + 2
    names = db.execute_sql("SELECT first_name FROM contact WHERE phone = '+14155552671'")
    assert names.fetchall() == [("Anna",)]


def test_a_reimport_updates_instead_of_creating(client, shops):
    # Given a shop's existing contact, when it is imported again
    result = client.simulate_post(
        "/contacts", headers=auth(shops.key), json={"contacts": [{"phone": "+306912345678"}]}
    )
    # Then it is counted as updated
    assert (result.json["created"], result.json["updated"]) == (0, 1)


def test_an_empty_import_creates_nothing(client, shops):
    result = client.simulate_post("/contacts", headers=auth(shops.key), json={"contacts": []})
    assert result.status_code == 200, result.text
    assert result.json == {"created": 0, "updated": 0, "invalid": []}


# --- another shop's ids are missing ids ------------------------------------------------------

CAMPAIGN_ROUTES = [
    ("GET", "", None),
    ("PATCH", "", {"name": "mine now"}),
    ("POST", "/enqueue", None),
    ("POST", "/schedule", "future"),
    ("POST", "/pause", None),
    ("POST", "/resume", None),
    ("POST", "/cancel", None),
    ("GET", "/progress", None),
    ("GET", "/recipients", None),
]


@pytest.mark.parametrize(
    "method, suffix, body", CAMPAIGN_ROUTES, ids=[f"{m} {s or '/'}" for m, s, _ in CAMPAIGN_ROUTES]
)
def test_another_shops_campaign_is_404_exactly_like_a_missing_one(
    client, db, shops, method, suffix, body
):
    # Given another shop's campaign id and an id that does not exist
    body = {"scheduled_at": future()} if body == "future" else body
    before = snapshot(db)

    def call(campaign_id: int):
        return client.simulate_request(
            method, f"/campaigns/{campaign_id}{suffix}", headers=auth(shops.key), json=body
        )

    # When the shop uses each
    other, missing = call(shops.other_campaign_id), call(MISSING_ID)
    # Then both are 404, with the same words, and the other shop's campaign is untouched
    assert_error(other, 404)
    assert_error(missing, 404)
    assert other.json["title"] == missing.json["title"]
    assert other.json["description"] == missing.json["description"].replace(
        str(MISSING_ID), str(shops.other_campaign_id)
    )
    assert snapshot(db) == before


def test_another_shops_contact_ids_in_a_campaign_are_422_like_missing_ones(client, db, shops):
    before = count(db, "campaign")
    own = contact_ids(client, shops.key)
    # When a campaign names another shop's contact, or one that does not exist
    other = client.simulate_post(
        "/campaigns",
        headers=auth(shops.key),
        json={"name": "n", "text": "t", "contact_ids": [*own, shops.other_contact_id]},
    )
    missing = client.simulate_post(
        "/campaigns",
        headers=auth(shops.key),
        json={"name": "n", "text": "t", "contact_ids": [*own, MISSING_ID]},
    )
    # Then both are 422 naming contact_ids, and no campaign was created
    assert_error(other, 422, "contact_ids")
    assert_error(missing, 422, "contact_ids")
    assert other.json["description"] == missing.json["description"].replace(
        str(MISSING_ID), str(shops.other_contact_id)
    )
    assert count(db, "campaign") == before


def test_another_shops_list_data_is_not_listed(client, shops):
    # When the shop lists its contacts and campaigns
    contacts = client.simulate_get("/contacts", headers=auth(shops.key)).json["items"]
    campaigns = client.simulate_get("/campaigns", headers=auth(shops.key)).json["items"]
    # Then none of the other shop's appear
    assert shops.other_contact_id not in [c["id"] for c in contacts]
    assert shops.other_campaign_id not in [c["id"] for c in campaigns]


def test_a_top_up_for_a_missing_shop_is_404(client, db, shops):
    before = snapshot(db)
    result = client.simulate_post(
        f"/admin/shops/{MISSING_ID}/credits", headers=ADMIN, json={"amount": 5, "reference": "r"}
    )
    assert_error(result, 404)
    assert snapshot(db) == before


# --- query parameters and path ids -----------------------------------------------------------

LISTS = ["/credits/transactions", "/contacts", "/campaigns", "/campaigns/{campaign}/recipients"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "query, name",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("limit=-1", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("after=99999999999999999999", "after"),
        ("limit=10&limit=1000", "limit"),
    ],
)
def test_query_params_out_of_range_are_422_naming_them(client, shops, draft, path, query, name):
    # When a list is asked for with a bad limit or cursor
    result = client.simulate_get(
        path.format(campaign=draft), headers=auth(shops.key), query_string=query
    )
    # Then 422 whose `field` is the parameter
    assert assert_error(result, 422)["field"] == name


@pytest.mark.parametrize(
    "path, query",
    [
        ("/campaigns", "status=bogus"),
        ("/campaigns", "status="),
        ("/campaigns/{campaign}/recipients", "status=bogus"),
        ("/campaigns/{campaign}/recipients", "status=SENT"),
        ("/contacts", "opted_out=maybe"),
    ],
)
def test_a_filter_outside_its_choices_is_422(client, shops, draft, path, query):
    result = client.simulate_get(
        path.format(campaign=draft), headers=auth(shops.key), query_string=query
    )
    assert assert_error(result, 422)["field"] == query.split("=")[0]


@pytest.mark.parametrize(
    "path, query",
    [
        ("/credits/transactions", "limit=1&after=0"),
        ("/contacts", "limit=100&opted_out=false"),
        ("/campaigns", "limit=1&status=draft"),
        ("/campaigns/{campaign}/recipients", "status=sent"),
    ],
)
def test_query_params_in_range_are_accepted(client, shops, draft, path, query):
    # (the control: the bounds above are not rejecting everything)
    result = client.simulate_get(
        path.format(campaign=draft), headers=auth(shops.key), query_string=query
    )
    assert result.status_code == 200, result.text
    assert set(result.json) == {"items", "next"}


def documented_query_parameters(client) -> list[tuple[str, str, str]]:
    """(method, path template, name) of every query parameter `/openapi.json` documents."""
    document = client.simulate_get("/openapi.json").json
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for parameter in operation.get("parameters", []) + item.get("parameters", []):
                if parameter["in"] == "query":
                    found.append((method.upper(), path, parameter["name"]))
    return found


def test_every_bad_query_parameter_is_422_with_field_naming_it(client, shops, draft):
    # Given every query parameter of the document (routes added later included), each sent
    # with a value no integer, enum, boolean or country accepts
    import_contacts(client, shops.key, ["+14155552671"])
    ids = {"campaign_id": draft, "contact_id": contact_ids(client, shops.key)[0]}
    parameters = documented_query_parameters(client)
    assert len(parameters) >= 14, parameters  # the seven lists' and the CSV import's
    for method, template, name in parameters:
        csv = {"body": "phone\n+14155552671\n", "headers": {"Content-Type": "text/csv"}}
        extra = csv if method == "POST" else {}
        result = client.simulate_request(
            method,
            template.format(**ids),
            headers={
                **auth(ADMIN_TOKEN if template.startswith("/admin/") else shops.key),
                **extra.get("headers", {}),
            },
            query_string=f"{name}=abc",
            body=extra.get("body"),
        )
        # Then 422 whose `field` is the parameter, exactly as for a body field
        assert result.status_code == 422, (method, template, name, result.text)
        assert result.json.get("field") == name, (method, template, result.json)
        assert name in result.json["description"], result.json


NOT_IDS = [
    "abc",
    "1.5",
    "1e3",
    "%201",
    "0x1",
    "0",
    "-1",
    "99999999999999999999999",
    "9223372036854775808",
]


@pytest.mark.parametrize("not_id", NOT_IDS)
@pytest.mark.parametrize(
    "method, template",
    [
        ("GET", "/campaigns/{}"),
        ("PATCH", "/campaigns/{}"),
        ("POST", "/campaigns/{}/enqueue"),
        ("POST", "/campaigns/{}/schedule"),
        ("POST", "/campaigns/{}/cancel"),
        ("GET", "/campaigns/{}/progress"),
        ("GET", "/campaigns/{}/recipients"),
        ("POST", "/admin/shops/{}/credits"),
    ],
)
def test_path_ids_that_are_not_ids_are_404(client, db, shops, not_id, method, template):
    before = snapshot(db)
    headers = ADMIN if template.startswith("/admin") else auth(shops.key)
    # When an id in the path is not an integer, or not one PostgreSQL can hold
    result = client.simulate_request(
        method, template.format(not_id), headers=headers, json={"amount": 5, "reference": "r"}
    )
    # Then 404 like a missing id, before the body is even read, and nothing changed
    assert_error(result, 404)
    assert snapshot(db) == before


@pytest.mark.parametrize("spelling", ["0{}", "00{}", "+{}", "%2B{}", "{}%00"])
def test_an_id_spelled_otherwise_than_its_digits_is_404(client, db, shops, spelling):
    # Given the shop's campaign, found at its id
    campaign_id = create_campaign(client, shops.key)["id"]
    found = client.simulate_get(f"/campaigns/{campaign_id}", headers=auth(shops.key))
    assert found.status_code == 200, found.text
    # When the id is spelled with a leading zero or a sign
    result = client.simulate_get(
        "/campaigns/" + spelling.format(campaign_id), headers=auth(shops.key)
    )
    # Then it is 404, as any path not in its one spelling (one resource, one path: an
    # Idempotency-Key replayed on another spelling would be read as another request)
    assert_error(result, 404)


# --- state transitions -----------------------------------------------------------------------


def campaign_row(db, campaign_id: int) -> tuple:
    return db.execute_sql(
        "SELECT status, started_at FROM campaign WHERE id = %s", (campaign_id,)
    ).fetchone()


def test_patch_on_a_sending_campaign_is_409_and_changes_nothing(client, db, shops, draft):
    # Given a campaign that is sending
    enqueued = client.simulate_post(f"/campaigns/{draft}/enqueue", headers=auth(shops.key))
    assert enqueued.status_code == 202, enqueued.text
    before = snapshot(db)
    # When it is edited
    result = client.simulate_patch(
        f"/campaigns/{draft}", headers=auth(shops.key), json={"text": "changed"}
    )
    # Then 409 and its text is what is being sent
    assert_error(result, 409)
    assert snapshot(db) == before


def test_enqueue_twice_is_409_the_second_time(client, db, shops, draft):
    # Given an enqueued campaign
    first = client.simulate_post(f"/campaigns/{draft}/enqueue", headers=auth(shops.key))
    assert first.status_code == 202, first.text
    assert first.json["status"] == "sending" and first.json["recipients"] == 2
    before = snapshot(db)
    # When it is enqueued again
    second = client.simulate_post(f"/campaigns/{draft}/enqueue", headers=auth(shops.key))
    # Then 409, no second set of recipients or reservation
    assert_error(second, 409)
    assert snapshot(db) == before


def test_enqueue_with_no_eligible_contact_is_422_and_changes_nothing(client, db, shops):
    # Given a shop whose only contact opted out, and a campaign for everyone
    _, key = create_shop(client, "lonely.example", credits=100)
    import_contacts(client, key, ["+14155552671"])
    token = links.unsubscribe_token(
        SECRET_KEY,
        *db.execute_sql("SELECT shop_id, id FROM contact WHERE phone = '+14155552671'").fetchone(),
    )
    assert client.simulate_post(f"/u/{token}").status_code == 200
    campaign = create_campaign(client, key)
    before = snapshot(db)
    # When it is enqueued
    result = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    # Then 422 and the campaign is still a draft with nothing reserved
    assert_error(result, 422)
    assert snapshot(db) == before
    assert campaign_row(db, campaign["id"]) == ("draft", None)


def test_enqueue_with_no_contacts_at_all_is_422(client, db):
    _, key = create_shop(client, "empty.example", credits=100)
    campaign = create_campaign(client, key)
    result = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    assert_error(result, 422)
    assert campaign_row(db, campaign["id"]) == ("draft", None)


def test_enqueue_without_credits_is_402_and_nothing_changed(client, db, redis_client):
    # Given a shop with contacts and a draft campaign but no credits
    shop_id, key = create_shop(client, "broke.example")
    import_contacts(client, key, ["+14155552671", "+447911123456"])
    campaign = create_campaign(client, key)
    before = snapshot(db)
    # When the campaign is enqueued
    result = client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key))
    # Then 402...
    assert_error(result, 402)
    # ...and nothing changed: still a draft, no recipients, no reservation, no batches, no
    # message published
    assert snapshot(db) == before
    assert campaign_row(db, campaign["id"]) == ("draft", None)
    for table in ("campaign_recipient", "credit_reservation", "send_batch"):
        assert count(db, table) == 0, table
    assert not redis_client.keys("dramatiq:*sms-send*")
    assert client.simulate_get("/credits", headers=auth(key)).json == {
        "balance": 0,
        "reserved": 0,
        "available": 0,
    }
    # ...so once topped up it can be enqueued
    top_up(client, shop_id, 100, "late")
    assert (
        client.simulate_post(f"/campaigns/{campaign['id']}/enqueue", headers=auth(key)).status_code
        == 202
    )


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_or_resume_of_a_draft_is_409(client, db, shops, draft, action):
    before = snapshot(db)
    result = client.simulate_post(f"/campaigns/{draft}/{action}", headers=auth(shops.key))
    assert_error(result, 409)
    assert snapshot(db) == before


def test_cancel_twice_is_409_the_second_time(client, shops, draft):
    first = client.simulate_post(f"/campaigns/{draft}/cancel", headers=auth(shops.key))
    assert first.status_code == 200 and first.json["status"] == "cancelled"
    second = client.simulate_post(f"/campaigns/{draft}/cancel", headers=auth(shops.key))
    assert_error(second, 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"reason": "too early"}', "reason"), (b"{not json", "body"), (b"[1]", "body")],
)
def test_a_body_sent_to_a_bodiless_action_is_422_naming_it(client, db, shops, draft, body, field):
    # Given a draft campaign; enqueue, pause, resume and cancel take no body
    before = snapshot(db)
    # When cancel is sent a body (a caller believing its reason is recorded)
    result = client.simulate_post(f"/campaigns/{draft}/cancel", headers=auth(shops.key), body=body)
    # Then 422 naming what was not read (it was 200 and the reason silently dropped), nothing
    # changed
    assert_error(result, 422, field)
    assert snapshot(db) == before


@pytest.mark.parametrize("body", [b"", b"{}", b" {} \n", b"null"])
def test_a_bodiless_action_takes_an_empty_body_or_an_empty_object(client, shops, draft, body):
    result = client.simulate_post(f"/campaigns/{draft}/cancel", headers=auth(shops.key), body=body)
    assert result.status_code == 200, result.text


@pytest.mark.parametrize(
    ("path", "param"),
    [("/contacts", "first_name"), ("/credits/transactions", "foo"), ("/campaigns", "shop_id")],
)
def test_an_undeclared_query_parameter_is_422_naming_it(client, shops, path, param):
    # (a filter the route does not have was ignored: `?first_name=Al` listed every contact)
    result = client.simulate_get(path, headers=auth(shops.key), params={param: "1"})
    assert_error(result, 422, param)


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/contacts", "limit=1&limit=2", "limit"),
        ("/contacts", "opted_out=true&opted_out=false", "opted_out"),
        ("/campaigns", "=1", "query"),
    ],
)
def test_a_query_parameter_given_twice_or_without_a_name_is_422_naming_it(
    client, shops, path, query, field
):
    # (the last of two was taken: `?limit=1&limit=2` listed 2; a nameless one had no field)
    result = client.simulate_get(path, headers=auth(shops.key), query_string=query)
    body = assert_error(result, 422)
    assert body["field"] == field, body


def test_a_body_sent_with_a_get_is_422_and_an_empty_one_is_fine(client, shops):
    refused = client.simulate_get("/contacts", headers=auth(shops.key), body=b'{"phone": "+1"}')
    assert assert_error(refused, 422)["field"] == "phone"
    assert client.simulate_get("/contacts", headers=auth(shops.key), body=b"{}").status_code == 200


# --- scheduling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "2001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
    ],
    ids=["a-minute-ago", "2001", "year-1"],
)
def test_schedule_in_the_past_is_422(client, db, shops, draft, when):
    before = snapshot(db)
    result = client.simulate_post(
        f"/campaigns/{draft}/schedule", headers=auth(shops.key), json={"scheduled_at": when}
    )
    assert_error(result, 422, "scheduled_at")
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "when",
    [
        (datetime.now() + timedelta(days=1)).replace(microsecond=0).isoformat(),
        (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d"),
    ],
    ids=["naive", "date-only"],
)
def test_schedule_with_a_naive_timestamp_is_422(client, db, shops, draft, when):
    before = snapshot(db)
    result = client.simulate_post(
        f"/campaigns/{draft}/schedule", headers=auth(shops.key), json={"scheduled_at": when}
    )
    assert_error(result, 422, "scheduled_at")
    assert snapshot(db) == before


def test_schedule_beyond_what_a_timestamp_can_hold_is_422(client, db, shops, draft):
    before = snapshot(db)
    # When the time is valid on its face but past year 9999 once read in UTC
    result = client.simulate_post(
        f"/campaigns/{draft}/schedule",
        headers=auth(shops.key),
        json={"scheduled_at": "9999-12-31T23:59:59-05:00"},
    )
    # Then 422, not a campaign that can no longer be read back
    assert_error(result, 422, "scheduled_at")
    assert snapshot(db) == before
    assert client.simulate_get(f"/campaigns/{draft}", headers=auth(shops.key)).status_code == 200


def test_schedule_in_the_future_with_an_offset_is_accepted(client, shops, draft):
    # (the control)
    result = client.simulate_post(
        f"/campaigns/{draft}/schedule", headers=auth(shops.key), json={"scheduled_at": future()}
    )
    assert result.status_code == 200, result.text
    assert result.json["status"] == "scheduled"


def test_schedule_in_rfc_3339s_lower_case_spelling_is_accepted(client, shops, draft):
    # RFC 3339 allows `t` and `z` (section 5.6)
    when = future().replace("T", "t").replace("+00:00", "z")
    result = client.simulate_post(
        f"/campaigns/{draft}/schedule", headers=auth(shops.key), json={"scheduled_at": when}
    )
    assert result.status_code == 200, result.text


def test_schedule_of_a_sending_campaign_is_409(client, shops, draft):
    client.simulate_post(f"/campaigns/{draft}/enqueue", headers=auth(shops.key))
    result = client.simulate_post(
        f"/campaigns/{draft}/schedule", headers=auth(shops.key), json={"scheduled_at": future()}
    )
    assert_error(result, 409)


# --- delivery-report webhook -----------------------------------------------------------------

REPORT = {
    "id": "msg-1",
    "to": "+14155552671",
    "reference": "r-1",
    "deliveryStatus": "Delivered",
    "statusCode": 0,
    "timestamp": "2025-01-01T00:00:00Z",
}


@pytest.mark.parametrize(
    "headers, query",
    [
        ({}, None),
        ({"X-Webhook-Token": "wrong"}, None),
        ({}, "token=wrong"),
        ({"X-Webhook-Token": "caf\u00e9"}, None),
        ({"X-Webhook-Token": ""}, "token="),
    ],
    ids=["none", "wrong-header", "wrong-query", "latin-1", "empty"],
)
def test_the_dlr_webhook_without_the_token_is_401(client, db, headers, query):
    before = count(db, "delivery_report")
    result = client.simulate_post(
        "/webhooks/mitto/dlr", headers=headers, query_string=query, json=REPORT
    )
    assert_error(result, 401)
    assert count(db, "delivery_report") == before


def test_the_dlr_webhook_token_may_come_in_the_query(client, db):
    # (the control: the right token is accepted either way)
    result = client.simulate_post(
        "/webhooks/mitto/dlr",
        query_string=f"token={DLR_WEBHOOK_SECRET}",
        json=[REPORT, {**REPORT, "id": "msg-2"}],
    )
    assert result.status_code == 200, result.text
    assert result.json["received"] == 2
    assert count(db, "delivery_report") == 2


@pytest.mark.parametrize("status", ["Bogus", "", None, 3])
def test_a_dlr_with_a_bad_delivery_status_is_listed_and_the_rest_stored(client, db, status):
    before = count(db, "delivery_report")
    # When one report of a batch has a status outside the provider's list
    result = client.simulate_post(
        "/webhooks/mitto/dlr", headers=WEBHOOK, json=[REPORT, {**REPORT, "deliveryStatus": status}]
    )
    # Then the other is stored (a provider posts nothing again after a 4xx) and it is listed
    assert result.status_code == 200, result.text
    assert result.json["invalid"][0]["field"] == "1.deliveryStatus"
    assert count(db, "delivery_report") == before + 1
    # And alone it is 422 naming it, nothing stored
    alone = client.simulate_post(
        "/webhooks/mitto/dlr", headers=WEBHOOK, json={**REPORT, "deliveryStatus": status}
    )
    assert_error(alone, 422, "deliveryStatus")
    assert count(db, "delivery_report") == before + 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("statusCode", 2**31),
        ("statusCode", -(2**31) - 1),
        ("statusCode", 10**20),
        ("statusCode", "n/a"),
        ("timestamp", "9999-12-31T23:59:59-05:00"),
        ("timestamp", "yesterday"),
    ],
)
def test_a_dlr_field_postgresql_cannot_hold_is_kept_empty(client, db, field, value):
    # (informational: the report is evidence of the send, never refused for these)
    before = count(db, "delivery_report")
    result = client.simulate_post(
        "/webhooks/mitto/dlr", headers=WEBHOOK, json={**REPORT, field: value}
    )
    assert result.status_code == 200, result.text
    column = {"statusCode": "status_code", "timestamp": "reported_at"}[field]
    assert db.execute_sql(
        f"SELECT {column} FROM delivery_report ORDER BY id DESC LIMIT 1"
    ).fetchone() == (None,)
    assert count(db, "delivery_report") == before + 1


def test_a_dlr_with_extra_provider_fields_is_accepted(client, db):
    # (SPEC 7: providers add fields over time; a report is not lost for one)
    result = client.simulate_post(
        "/webhooks/mitto/dlr", headers=WEBHOOK, json={**REPORT, "networkCode": "20201"}
    )
    assert result.status_code == 200, result.text


# --- public link pages -----------------------------------------------------------------------


def assert_html_page(result, status: int) -> None:
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("text/html")
    assert "<h1>" in result.text


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "token",
    [
        "forged",
        "A" * 43,
        "x" * 500,
        "%00",
        "%ff%fe",
        "caf%C3%A9",
        "====",
        "a.b",
        "AAAAAAAAAAEAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAA",  # right length, payload (1, 1), no valid MAC
    ],
)
def test_unsubscribe_with_a_forged_token_is_a_404_page(client, db, shops, token, method):
    before = snapshot(db)
    result = client.simulate_request(method, f"/u/{token}")
    assert_html_page(result, 404)
    assert snapshot(db) == before


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unsubscribe_with_a_genuine_token_for_a_missing_contact_is_a_404_page(
    client, shops, method
):
    token = links.unsubscribe_token(SECRET_KEY, shops.id, MISSING_ID)
    assert_html_page(client.simulate_request(method, f"/u/{token}"), 404)


def test_unsubscribe_with_a_genuine_token_opts_out_on_post(client, db, shops):
    # (the control; GET only shows the confirmation page, see tests/api/test_links.py)
    contact = contact_ids(client, shops.key)[0]
    token = links.unsubscribe_token(SECRET_KEY, shops.id, contact)
    result = client.simulate_post(f"/u/{token}")
    assert_html_page(result, 200)
    assert count(db, "suppression") == 1


@pytest.mark.parametrize("code", ["unknown", "x" * 10, "x" * 2000, "%00", "%ff", "a%20b"])
def test_an_unknown_short_link_is_a_404_page(client, code):
    assert_html_page(client.simulate_get(f"/r/{code}"), 404)


def test_a_real_short_link_redirects_and_counts_the_click(client, db, shops):
    # (the control: the check on the code's alphabet lets real codes through)
    short = links.shorten(
        shops.other_id, shops.other_campaign_id, ["https://shop.example/sale"], "http://localhost"
    )["https://shop.example/sale"]
    result = client.simulate_get(short.removeprefix("http://localhost"))
    assert result.status_code == 302
    assert result.headers["location"] == "https://shop.example/sale"
    assert db.execute_sql("SELECT clicks FROM short_link").fetchone() == (1,)


def test_a_short_link_with_a_trailing_slash_is_the_same_link(client, shops):
    # (strip_url_path_trailing_slash: "/r/x/" is "/r/x", still unknown, still a page)
    assert_html_page(client.simulate_get("/r/unknown/"), 404)


# --- credits ---------------------------------------------------------------------------------


def test_a_top_up_with_the_same_reference_twice_adds_credits_once(client, db, shops):
    # Given a shop with 1000 credits
    # When the same top-up is posted twice (a retried admin call)
    first = top_up(client, shops.id, 250, "invoice-42")
    second = top_up(client, shops.id, 250, "invoice-42")
    # Then it counted once, in the balance and in the ledger
    assert first == second == 1250
    assert client.simulate_get("/credits", headers=auth(shops.key)).json["balance"] == 1250
    rows = db.execute_sql(
        "SELECT count(*) FROM credit_transaction WHERE shop_id = %s AND note = 'invoice-42'",
        (shops.id,),
    ).fetchone()[0]
    assert rows == 1


def test_the_same_reference_for_another_shop_is_its_own_top_up(client, shops):
    top_up(client, shops.id, 250, "invoice-42")
    # When another shop is credited with the same reference
    balance = top_up(client, shops.other_id, 250, "invoice-42")
    # Then it is credited: references are per shop
    assert balance == 1250


# A contact row that loses a deadlock each time it is written (a trigger of the database's:
# the import runs in a child process of the web's, which no monkeypatch of this one reaches).
ALWAYS_LOSES = (
    "CREATE FUNCTION always_lose() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = 'deadlock_detected'; END $$;"
    " CREATE TRIGGER always_lose BEFORE INSERT ON contact FOR EACH ROW"
    " WHEN (NEW.phone = '+306912345670') EXECUTE FUNCTION always_lose()"
)


@pytest.mark.parametrize("children", [1, 0], ids=["in a child", "in the request"])
def test_a_conflict_that_keeps_losing_is_a_503_conflict(client, settings, db, children):
    # A transaction that loses a deadlock each time it is run (after `retry_conflicts`' tries)
    # is not a lost database: 503 "Conflict", retry after 1 s; the same when the import runs
    # in a child process, whose error crosses back pickled
    import_processes.configure(children, settings)
    child = import_processes.run(os.getpid)
    execute(ALWAYS_LOSES)
    try:
        shop = client.simulate_post(
            "/admin/shops", headers=ADMIN, json={"domain": "conflict.example", "name": "C"}
        ).json
        answer = falcon.testing.TestClient(client.app).simulate_post(  # 503 is under test
            "/contacts",
            headers=auth(shop["api_key"]),
            json={"contacts": [{"phone": "+306912345678"}, {"phone": "+306912345670"}]},
        )
        # (and with a child, the same child answered: the error crossed back, the import was
        # not run again in the request)
        assert import_processes.run(os.getpid) == child
    finally:
        execute("DROP TRIGGER always_lose ON contact; DROP FUNCTION always_lose()")
        import_processes.configure(settings.import_processes, settings)
    assert answer.status_code == 503 and answer.json["title"] == "Conflict", answer.text
    assert answer.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("headers", "title"),
    [
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, "Encoding"),
        ({"Content-Type": "application/xml"}, "Type"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, "Type"),
    ],
    ids=["gzip", "xml", "multipart"],
)
def test_a_body_that_says_it_is_not_json_is_415_naming_the_header(client, shops, headers, title):
    # (a gzip body was "Malformed JSON: 'utf-8' codec can't decode byte 0x8b"; XML was read)
    result = client.simulate_post(
        "/campaigns",
        headers={**auth(shops.key), **headers},
        body=b'{"name": "n", "text": "t"}',
    )
    assert assert_error(result, 415)["title"] == f"Unsupported Content-{title}"


def test_a_json_body_without_a_content_type_or_as_json_plus_is_read(client, shops):
    for content_type in (
        None,
        "application/vnd.api+json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",  # what `curl -d` says of any body
    ):
        headers = {**auth(shops.key), **({"Content-Type": content_type} if content_type else {})}
        result = client.simulate_post(
            "/campaigns", headers=headers, body=b'{"name": "n", "text": "t"}'
        )
        assert result.status_code == 201, (content_type, result.text)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"name": "a", "name": "b", "text": "t"}', "the key 'name' appears twice"),
        (b'{"name": "a", "text": "t", "x": ' + b"9" * 4400 + b"}", "4400 digits is out of range"),
    ],
    ids=["duplicate-key", "huge-integer"],
)
def test_an_ambiguous_or_oversized_json_body_is_400_in_words(client, db, shops, body, says):
    # (a key given twice was read as its last value; 4,301 digits answered with Python's
    # advice to call sys.set_int_max_str_digits())
    before = count(db, "campaign")
    result = client.simulate_post(
        "/campaigns", headers={**auth(shops.key), "Content-Type": "application/json"}, body=body
    )
    assert says in assert_error(result, 400)["description"]
    assert count(db, "campaign") == before


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("POST", "/u/not-a-token", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("POST", "/ops/login", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("POST", "/ops/logout", {}),
        ("GET", "/health", {}),
    ],
)
def test_a_body_declared_over_the_cap_is_413_on_public_routes_too(client, method, path, headers):
    # When a public route is sent a Content-Length over 5 MiB (the body itself never read)
    result = client.simulate_request(
        method,
        path,
        headers={**headers, "Content-Length": str(MAX_BODY + 1)},
        body=b"x",
    )
    # Then 413, as on every other route (a 6 MiB unsubscribe POST was answered 200)
    assert result.status_code == 413, (path, result.status_code, result.text[:200])


def chunked(size: int):
    """A body sent chunked (no Content-Length), `size` bytes in 64 KiB chunks."""
    sent = 0
    while sent < size:
        part = min(65536, size - sent)
        sent += part
        yield b"x" * part


def test_a_chunked_body_over_the_cap_is_413_on_a_route_that_never_reads_it(client):
    # When an unsubscribe POST (whose body is never read) comes chunked, over 5 MiB
    result = client.simulate_request(
        "POST",
        "/u/not-a-token",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Transfer-Encoding": "chunked",
        },
        body=b"".join(chunked(MAX_BODY + 1)),
        extras={"CONTENT_LENGTH": ""},  # as gunicorn passes a chunked request: no length
    )
    # Then 413 as with a declared length (it was answered as if nothing was sent)
    assert result.status_code == 413, (result.status_code, result.text[:200])
