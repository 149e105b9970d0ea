"""Schemathesis attacks the real application through its own document (SPEC 5): every operation
of `/openapi.json`, with generated valid and invalid input, in process (Falcon's WSGI app on the
real PostgreSQL and Redis of `tests/conftest.py`), then as call sequences that follow the
document's links (`POST /campaigns` -> `GET /campaigns/{id}` -> enqueue, pause, ...).

Every answer must be no 5xx, have a documented status, content type, headers and body, and
what shop B's key reads must hold nothing of shop A's: shop A's contacts, campaigns, recipients
and ledger exist first, their ids are recorded, and shop B's ids start far above them so that
any of A's ids in an id field of B's answers is a leak, not a coincidence.

Bounded for CI on two cores: `MAX_EXAMPLES` per operation and the stateful steps keep both
tests well under two minutes together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st

from api.app import create_app
from api.ops_access import OperatorSessions
from models import ApiKey
from service import api_keys, links
from tests.api.conftest import (
    CheckedClient,
    auth,
    create_campaign,
    create_shop,
    import_contacts,
)
from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, truncate_tables

MAX_EXAMPLES = 25
STATEFUL_SCENARIOS = 30
STATEFUL_STEPS = 10
# Shop A's campaign text: it must never reach an answer shop B reads.
MARKER = "shop-a-private-9c41f"
# Shop B's rows start here in every table, far above anything shop A made.
B_IDS_FROM = 1_000_000
SEQUENCES = (
    "shop_id_seq",
    "api_key_id_seq",
    "contact_id_seq",
    "campaign_id_seq",
    "campaign_recipient_id_seq",
    "credit_transaction_id_seq",
    "credit_reservation_id_seq",
    "send_batch_id_seq",
    "short_link_id_seq",
    "audit_event_id_seq",
)
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    # Not "use_after_free": an erased contact's consent log stays readable by design
    # (`GET /contacts/{id}/consent` after `DELETE /contacts/{id}`: the proof of the erasure).
    "ensure_resource_availability",
)

# Shop creation takes an IANA zone: generated strings are almost never one.
schemathesis.openapi.format(
    "timezone", st.sampled_from(["UTC", "Europe/Athens", "America/New_York"])
)


@schemathesis.serializer("text/csv")
def csv_body(ctx: Any, value: Any) -> bytes:
    """A generated CSV import is a string (the document's schema for `text/csv`)."""
    # Invalid input (negative mode) may be any JSON value: sent as its text, still not CSV.
    return (value if isinstance(value, str) else repr(value)).encode("utf-8", "surrogatepass")


def id_values(document: Any) -> Iterator[int]:
    """Every integer under an id-like key (`id`, `*_id`, `*_ids`, the page cursor `next`)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("id", "next") or key.endswith(("_id", "_ids")):
                    items = item if isinstance(item, list) else [item]
                    yield from (i for i in items if isinstance(i, int) and not isinstance(i, bool))
                pending.append(item)
        elif isinstance(value, list):
            pending.extend(value)


@dataclass
class Tenants:
    """Shop A (its data made first, its ids recorded) and shop B, whose key schemathesis uses.
    `reset` builds both from an empty database, the same way every time."""

    app: Any
    db: Any
    redis_client: Any
    b_key: str = field(default_factory=api_keys.new_key)
    a_ids: frozenset[int] = frozenset()
    b_id: int = 0
    b_campaign_id: int = 0

    def reset(self) -> None:
        truncate_tables(self.db)
        self.redis_client.flushdb()
        client = CheckedClient(self.app)
        # Shop A with contacts, a draft and a launched campaign (recipients, a reservation,
        # ledger rows)
        a_id, a_key = create_shop(client, "shop-a.example", credits=1000)
        import_contacts(client, a_key, ["+306912345601", "+306912345602", "+306912345603"])
        create_campaign(client, a_key, name="A draft", text=f"Draft {MARKER}")
        launched = create_campaign(client, a_key, name="A launched", text=f"Sale {MARKER}")
        enqueued = client.simulate_post(f"/campaigns/{launched['id']}/enqueue", headers=auth(a_key))
        assert enqueued.status_code == 202, enqueued.text
        self.a_ids = self.shop_ids(a_id)
        # Shop B, whose rows all get ids above shop A's, with a contact and a campaign; its
        # key is the same after every reset (the schema's configuration holds it)
        for sequence in SEQUENCES:
            self.db.execute_sql("SELECT setval(%s, %s)", (sequence, B_IDS_FROM))
        self.b_id, _ = create_shop(client, "shop-b.example", credits=1000)
        (
            ApiKey.update(key_hash=api_keys.hash_key(self.b_key))
            .where(ApiKey.shop == self.b_id)
            .execute()
        )
        import_contacts(client, self.b_key, ["+447911123401", "+447911123402"])
        self.b_campaign_id = create_campaign(client, self.b_key, name="B draft")["id"]
        assert min(self.shop_ids(self.b_id)) > max(self.a_ids)

    def shop_ids(self, shop_id: int) -> frozenset[int]:
        """The ids of every row the shop owns, whatever the table."""
        rows = self.db.execute_sql(
            "SELECT id FROM contact WHERE shop_id = %(shop)s"
            " UNION SELECT id FROM campaign WHERE shop_id = %(shop)s"
            " UNION SELECT id FROM campaign_recipient WHERE shop_id = %(shop)s"
            " UNION SELECT id FROM credit_transaction WHERE shop_id = %(shop)s"
            " UNION SELECT id FROM api_key WHERE shop_id = %(shop)s"
            " UNION SELECT %(shop)s",
            {"shop": shop_id},
        ).fetchall()
        return frozenset(row[0] for row in rows)

    def with_shop_a_ids(self, path_parameters: dict[str, Any] | None) -> Any:
        """Besides the generated ids, shop A's own ids in every id of a path (a random bigint
        is hardly ever one of them)."""
        ids = [
            name
            for name, value in (path_parameters or {}).items()
            if name.endswith("_id") and isinstance(value, int)
        ]
        if not ids:
            return st.just(path_parameters)
        return st.one_of(
            st.just(path_parameters),
            st.sampled_from(sorted(self.a_ids)).map(
                lambda a_id: {**path_parameters, **dict.fromkeys(ids, a_id)}
            ),
        )

    def no_cross_shop_read(self, ctx: Any, response: Any, case: Any) -> None:
        """Custom check: an answer read with shop B's key holds none of shop A's ids or text."""
        if case.operation.definition.raw.get("security") != [{"shopApiKey": []}]:
            return
        text = response.text or ""
        assert MARKER not in text, f"shop B read shop A's campaign text: {text[:300]}"
        if "json" not in (response.headers.get("content-type") or [""])[0] or not text:
            return
        leaked = sorted(set(id_values(response.json())) & self.a_ids)
        assert not leaked, f"shop B's answer holds shop A's ids {leaked}: {text[:300]}"


@pytest.fixture
def tenants(settings, redis_client, db) -> Tenants:
    made = Tenants(create_app(settings, redis_client), db, redis_client)
    made.reset()
    return made


def load_schema(tenants: Tenants, settings, mode: str) -> Any:
    """The document as the application serves it, with shop B's key as the shops' credential,
    the admin token for admin and operator routes, and the webhook secret."""
    session = OperatorSessions(settings.secret_key, settings.admin_token, 3600, secure=False)
    config = schemathesis.Config.from_dict(
        {
            "generation": {"mode": mode, "max-examples": MAX_EXAMPLES},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            # Their 503 is the documented report of a system that is not ok (here: no worker and
            # no clock run), not a server error.
            "operations": [
                {
                    "include-path": ["/health/full", "/readiness"],
                    "checks": {
                        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}
                    },
                },
                # A contacts import reports each row that breaks the row schema in `invalid` and
                # imports the others (SPEC 5, issue 8): a body whose rows are invalid is answered
                # 200 by design, which this check calls accepting negative data (it fails on
                # `{"contacts": [{"phone": ""}]}`, checked 2026-12-02). Only the
                # body's shape refuses an import, and test_contacts_import covers that. Every
                # other POST (campaigns included) is held to the check.
                # The report webhook's array is any items but at least one report (`contains`):
                # its coverage phase drew arbitrary JSON for 354 s before the first call
                # (measured alone, 2026-12-03), most of the suite's time budget. The fuzzing
                # phase still sends it 25 valid and invalid bodies, arrays among them.
                {
                    "include-path": "/webhooks/mitto/dlr",
                    "phases": {"coverage": {"enabled": False}},
                },
                {
                    "include-method": "POST",
                    "include-path": "/contacts",
                    "checks": {"negative_data_rejection": {"enabled": False}},
                },
            ],
            "auth": {
                "auto-signup": False,
                "openapi": {
                    "shopApiKey": {"bearer": tenants.b_key},
                    "adminToken": {"bearer": ADMIN_TOKEN},
                    "webhookToken": {"api_key": DLR_WEBHOOK_SECRET},
                    "webhookTokenQuery": {"api_key": DLR_WEBHOOK_SECRET},
                    "operatorSession": {"api_key": session.issue()},
                },
            },
        }
    )
    return schemathesis.openapi.from_wsgi("/openapi.json", tenants.app, config=config)


@pytest.fixture
def api_schema(tenants, settings):
    """Valid and invalid input; every id of a path is also tried with shop A's ids."""
    loaded = load_schema(tenants, settings, "all")

    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        return tenants.with_shop_a_ids(path_parameters)

    loaded.hook(flatmap_path_parameters)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_answers_as_its_document_says(case, tenants):
    # When schemathesis sends an operation valid and invalid input
    # Then the answer is no 5xx, conforms to the document, and leaks nothing across shops
    case.call_and_validate(additional_checks=[tenants.no_cross_shop_read])


def test_call_sequences_along_the_links_answer_as_documented(tenants, settings):
    # Given the state machine schemathesis derives from the document's links, valid input only
    # (the test above sends the invalid), each scenario starting from the same two shops
    class Workflow(load_schema(tenants, settings, "positive").as_state_machine()):
        def setup(self) -> None:
            # Scenarios replay each other's first steps: the same steps must meet the same data
            tenants.reset()

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            super().validate_response(
                response, case, additional_checks=[tenants.no_cross_shop_read], **kwargs
            )

    # When it runs sequences of calls (create, read, edit, launch, pause, ...) as shop B
    # Then every answer conforms, and none holds shop A's data
    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )


def test_answers_random_input_cannot_reach_conform_too(api_schema, tenants, settings):
    """The answers no generated value reaches (a real token, link or report), sent through
    schemathesis so that they are checked the same way."""
    contact_id = tenants.db.execute_sql(
        "SELECT min(id) FROM contact WHERE shop_id = %s", (tenants.b_id,)
    ).fetchone()[0]
    url = links.shorten(
        tenants.b_id,
        tenants.b_campaign_id,
        ["https://shop-b.example/sale"],
        settings.public_base_url,
    )["https://shop-b.example/sale"]
    code = url.rsplit("/", 1)[1]
    token = links.unsubscribe_token(settings.secret_key, tenants.b_id, contact_id)
    campaign = {"campaign_id": tenants.b_campaign_id}
    form = "application/x-www-form-urlencoded"
    steps = [
        # Given shop B's campaign, launched, watched, paused, resumed and cancelled
        ("POST", "/campaigns/{campaign_id}/enqueue", {"path_parameters": campaign}, 202),
        ("GET", "/campaigns/{campaign_id}/progress", {"path_parameters": campaign}, 200),
        ("GET", "/campaigns/{campaign_id}/recipients", {"path_parameters": campaign}, 200),
        ("POST", "/campaigns/{campaign_id}/pause", {"path_parameters": campaign}, 200),
        ("POST", "/campaigns/{campaign_id}/resume", {"path_parameters": campaign}, 200),
        ("POST", "/campaigns/{campaign_id}/cancel", {"path_parameters": campaign}, 200),
        ("GET", "/credits/transactions", {}, 200),
        (
            "POST",
            "/contacts",
            {"body": "Phone,First Name\n+447911123409,Ann\n", "media_type": "text/csv"},
            200,
        ),
        # And a delivery report, a short link followed, checked and disabled
        (
            "POST",
            "/webhooks/mitto/dlr",
            {"body": {"id": "m-1", "deliveryStatus": "Delivered"}},
            200,
        ),
        ("GET", "/r/{code}", {"path_parameters": {"code": code}}, 302),
        ("HEAD", "/r/{code}", {"path_parameters": {"code": code}}, 302),
        ("POST", "/admin/links/{code}/disable", {"path_parameters": {"code": code}}, 200),
        ("GET", "/r/{code}", {"path_parameters": {"code": code}}, 410),
        # And a contact's unsubscribe page, confirmed, and the operator's login and logout
        ("GET", "/u/{token}", {"path_parameters": {"token": token}}, 200),
        (
            "POST",
            "/u/{token}",
            {
                "path_parameters": {"token": token},
                "body": {"List-Unsubscribe": "One-Click"},
                "media_type": form,
            },
            200,
        ),
        ("POST", "/ops/login", {"body": {"token": ADMIN_TOKEN}, "media_type": form}, 303),
        ("POST", "/ops/login", {"body": {"token": "not-the-token"}, "media_type": form}, 401),
        ("POST", "/ops/logout", {}, 303),
    ]
    # (a case made by hand carries no credentials: each gets those its operation requires)
    credentials = {
        "shopApiKey": {"Authorization": f"Bearer {tenants.b_key}"},
        "adminToken": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        "webhookToken": {"X-Webhook-Token": DLR_WEBHOOK_SECRET},
    }
    for method, path, given, status in steps:
        # When each is sent
        case = api_schema[path][method].Case(**given)
        security = case.operation.definition.raw["security"]
        headers = credentials[next(iter(security[0]))] if security else {}
        response = case.call_and_validate(
            headers=headers, additional_checks=[tenants.no_cross_shop_read]
        )
        # Then it answers as expected, and as documented
        assert response.status_code == status, (method, path, response.text[:300])
