"""API fixtures: the Falcon app in process (`falcon.testing.TestClient`) over the real
PostgreSQL and Redis of `tests/conftest.py`, shops made through the admin API, a fake provider
for the answers to inbound replies, and one assertion helper every answer goes through."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import falcon
import falcon.testing
import pytest

from api.app import create_wsgi
from service.provider import Outcome, SendResult, Sms
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# What the helpers import with: a consent, so campaigns of shops that require it (every shop
# made here, as every new shop) reach the contacts, as they did before consent existed.
CONSENT = {"source": "checkout", "collected_at": "2024-01-01T00:00:00Z"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_answer(result: falcon.testing.Result) -> None:
    """What every answer must be: never a 5xx for bad input, and every error JSON
    `{"title", "description"}` (the HTML link pages are checked by their own tests)."""
    assert result.status_code < 500, f"{result.status_code}: {result.text[:500]}"
    if result.status_code >= 400 and not result.headers.get("content-type", "").startswith(
        "text/html"
    ):
        assert result.headers.get("content-type", "").startswith("application/json"), result.text
        body = result.json
        assert isinstance(body, dict), body
        assert isinstance(body.get("title"), str) and body["title"], body
        assert isinstance(body.get("description"), str) and body["description"], body


def assert_error(result: falcon.testing.Result, status: int, field: str | None = None) -> dict:
    """An error answer with `status`; with `field`, the answer names that field."""
    assert_answer(result)
    assert result.status_code == status, f"{result.status_code} != {status}: {result.text[:500]}"
    body = result.json
    if field is not None:
        assert body.get("field") == field or field in body["description"], body
    return body


class CheckedClient(falcon.testing.TestClient):
    """A TestClient that runs `assert_answer` on every answer, so no test can let a 500 or a
    non-JSON error through unnoticed."""

    def simulate_request(self, *args: Any, **kwargs: Any) -> falcon.testing.Result:
        result = super().simulate_request(*args, **kwargs)
        assert_answer(result)
        return result


@dataclass
class FakeProvider:
    """Records every message the app sends (the answers to STOP, START and HELP) and answers
    each call with the next of `outcomes` (accepted once they run out)."""

    sent: list[tuple[str, Sms]] = field(default_factory=list)
    outcomes: list[SendResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        with self.lock:
            self.sent.append((sender, sms))
            if self.outcomes:
                return self.outcomes.pop(0)
            return SendResult(Outcome.ACCEPTED, provider_id=f"reply-{len(self.sent)}")

    def send_bulk(
        self, sender: str, to: Sequence[str], text: str, reference: str, callback: str | None
    ) -> list[SendResult]:
        raise AssertionError("the API sends no bulk messages")

    def to(self, phone: str) -> list[str]:
        return [sms.text for _, sms in self.sent if sms.to == phone]


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(settings, redis_client, db, provider) -> CheckedClient:
    return CheckedClient(create_wsgi(settings, redis_client, provider))


def create_shop(client: CheckedClient, domain: str, credits: int = 0) -> tuple[int, str]:
    """A shop made through the admin API (and topped up when `credits`): (id, API key)."""
    created = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": domain, "name": domain.split(".")[0]}
    )
    assert created.status_code == 201, created.text
    shop_id, key = created.json["id"], created.json["api_key"]
    if credits:
        top_up(client, shop_id, credits, f"initial-{domain}")
    return shop_id, key


def top_up(client: CheckedClient, shop_id: int, amount: int, reference: str) -> int:
    answer = client.simulate_post(
        f"/admin/shops/{shop_id}/credits",
        headers=ADMIN,
        json={"amount": amount, "reference": reference},
    )
    assert answer.status_code == 201, answer.text
    return answer.json["balance"]


def import_contacts(client: CheckedClient, key: str, phones: list[str]) -> dict:
    answer = client.simulate_post(
        "/contacts",
        headers=auth(key),
        json={"contacts": [{"phone": p, "consent": CONSENT} for p in phones]},
    )
    assert answer.status_code == 200, answer.text
    return answer.json


def create_campaign(client: CheckedClient, key: str, **fields: Any) -> dict:
    body = {"name": "Spring", "text": "Hi {first_name}, spring sale!", **fields}
    answer = client.simulate_post("/campaigns", headers=auth(key), json=body)
    assert answer.status_code == 201, answer.text
    return answer.json


def contact_ids(client: CheckedClient, key: str) -> list[int]:
    answer = client.simulate_get("/contacts", headers=auth(key), params={"limit": 100})
    return [item["id"] for item in answer.json["items"]]


@dataclass(frozen=True)
class Shops:
    """A shop under test (`key`, with credits and two contacts) and another shop (`other_key`,
    with a contact and a draft campaign of its own) whose ids must look missing."""

    id: int
    key: str
    other_id: int
    other_key: str
    other_contact_id: int
    other_campaign_id: int


@pytest.fixture
def shops(client) -> Shops:
    shop_id, key = create_shop(client, "shop-one.example", credits=1000)
    other_id, other_key = create_shop(client, "shop-two.example", credits=1000)
    import_contacts(client, key, ["+306912345678", "+306912345679"])
    import_contacts(client, other_key, ["+447911123456"])
    other_campaign = create_campaign(client, other_key)
    return Shops(
        shop_id, key, other_id, other_key, contact_ids(client, other_key)[0], other_campaign["id"]
    )
