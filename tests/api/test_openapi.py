"""`GET /openapi.json` (SPEC 5): a valid OpenAPI 3.1 document of every routed operation, its
parameters as the router constrains them, the request schemas that validate, the answers, the
error shape of every error and the security of every operation. `test_schemathesis.py` holds
the application to it."""

from __future__ import annotations

import re

import falcon
import falcon.inspect
import pytest
from openapi_spec_validator import validate

from api import schemas
from api.access import Access, access_for
from api.app import SHOP, add_routes, create_app
from api.docs import Answer, Operation
from api.openapi import SECURITY_SCHEMES, openapi_path, routed
from tests.api.conftest import ADMIN, auth, create_shop

ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
# `{name}` or `{name:converter(...)}` in a route as `falcon.inspect` reports it.
_FIELD = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@pytest.fixture
def app(settings, redis_client, db) -> falcon.App:
    return create_app(settings, redis_client)


@pytest.fixture
def document(app) -> dict:
    answer = falcon.testing.TestClient(app).simulate_get("/openapi.json")
    assert answer.status_code == 200, answer.text
    return answer.json


def operations(document: dict) -> list[tuple[str, str, dict]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def dereferenced(document: dict, value):
    """`value` with every `$ref` into the document's components replaced by what it names."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            name = value["$ref"].removeprefix("#/components/schemas/")
            return dereferenced(document, document["components"]["schemas"][name])
        return {key: dereferenced(document, item) for key, item in value.items()}
    if isinstance(value, list):
        return [dereferenced(document, item) for item in value]
    return value


def routed_operations(app: falcon.App) -> set[tuple[str, str]]:
    """(method, path) of every responder a resource defines, by Falcon's own inspector (the
    document walks the router itself: this test must not share its walk)."""
    return {
        (method.method, _FIELD.sub(r"{\1}", route.path))
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
    }


def test_the_document_is_valid_openapi_3_1(document):
    # When the served document is checked against the OpenAPI 3.1 specification
    # Then it is valid (openapi-spec-validator raises otherwise)
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_routed_operation_is_documented_and_nothing_else(app, document):
    # Given every operation the application routes
    routed_set = routed_operations(app)
    # When it is compared with the document's operations
    documented = {(method, path) for method, path, _ in operations(document)}
    # Then each is documented, and the document holds no operation that is not routed
    assert len(routed_set) >= 25
    assert sorted(routed_set - documented) == [], "routed but not documented: declare `docs`"
    assert sorted(documented - routed_set) == [], "documented but not routed"


def test_path_parameters_are_constrained_as_the_router_constrains_them(
    document, settings, redis_client, db
):
    # Given a client with the admin token and a shop's key
    client = falcon.testing.TestClient(create_app(settings, redis_client))
    _, key = create_shop(client, "params.example")
    for method, path, operation in operations(document):
        declared = re.findall(r"\{(\w+)\}", path)
        parameters = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
        # Then every template field is a required path parameter, and every id is 1..2^63-1
        assert sorted(parameters) == sorted(declared), (method, path)
        assert all(p["required"] for p in parameters.values())
        for name, parameter in parameters.items():
            if name.endswith("_id"):
                assert parameter["schema"] == ID_SCHEMA, (method, path, name)
            else:
                assert parameter["schema"] == {"type": "string", "minLength": 1}
        ids = [name for name in parameters if name.endswith("_id")]
        if not ids or method == "HEAD":
            continue
        # And the router itself refuses what the document refuses, and routes its maximum
        headers = {**ADMIN, **(auth(key) if "shopApiKey" in str(operation["security"]) else {})}
        for value, routed_there in ((0, False), (2**63, False), (2**63 - 1, True)):
            url = path
            for name in ids:
                url = url.replace(f"{{{name}}}", str(value))
            answer = client.simulate_request(method, url, headers=headers, json={})
            routing_miss = answer.json.get("description") == "there is nothing at this path"
            assert routing_miss is not routed_there, (method, url, answer.status_code, answer.text)


def test_security_follows_each_resources_declared_access(app, document):
    # Given the access each routed responder declares
    declared = {}
    for template, resource in routed(app):
        path, _ = openapi_path(template)
        for method in getattr(resource, "docs", {}):
            declared[(method, path)] = access_for(resource, method)
    expected = {
        Access.PUBLIC: [],
        Access.SHOP: [{"shopApiKey": []}],
        Access.ADMIN: [{"adminToken": []}],
        Access.OPERATOR: [{"adminToken": []}, {"operatorSession": []}],
        Access.WEBHOOK: [{"webhookToken": []}, {"webhookTokenQuery": []}],
        Access.SHOPIFY: [{"shopifyHmac": []}],
    }
    # Then every operation requires exactly what its resource declares
    for method, path, operation in operations(document):
        assert operation["security"] == expected[declared[(method, path)]], (method, path)
    schemes = document["components"]["securitySchemes"]
    assert schemes == SECURITY_SCHEMES
    assert schemes["webhookToken"] == {
        **schemes["webhookToken"],
        "in": "header",
        "name": "X-Webhook-Token",
    }
    assert schemes["webhookTokenQuery"]["in"] == "query"
    assert schemes["operatorSession"]["in"] == "cookie"


# Answers for a person's browser: a page, not the API's error shape.
PAGES = {
    ("GET", "/r/{code}", "410"),
    ("HEAD", "/r/{code}", "410"),
    ("POST", "/ops/login", "401"),
    ("POST", "/ops/login", "429"),
}
# Health reports: their 503 is the report of a system that is not ok.
REPORTS = {("GET", "/readiness", "503"), ("GET", "/health/full", "503")}


def test_every_error_answer_has_the_error_shape(document):
    pages = set()
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or (method, path, status) in REPORTS:
                continue
            if method == "HEAD" and "content" not in answer:
                continue  # a health check's HEAD: the status alone
            content = answer["content"]
            if "application/json" not in content:
                pages.add((method, path, status))
                continue
            # Then every other 4xx and 5xx answers JSON {title, description, field?}
            assert content["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, (method, path, status)
            assert dereferenced(document, content["application/json"]["schema"]) == (schemas.ERROR)
    # And the only others are the pages a person's browser is shown
    assert pages == PAGES
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["title", "description"]
    assert set(error["properties"]) == {"title", "description", "field"}


def test_shop_operations_document_the_rate_limit_and_posts_the_idempotency_key(document):
    for method, path, operation in operations(document):
        if operation["security"] != [{"shopApiKey": []}]:
            continue
        # Then a shop's operation may answer 429 with Retry-After, and 401, 404, 503
        responses = operation["responses"]
        assert {"401", "404", "429", "503"} <= set(responses), (method, path)
        assert responses["429"]["headers"]["Retry-After"]["required"] is True
        headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
        # And a POST takes an Idempotency-Key (and may answer 409 and 422 for it)
        assert headers == (["Idempotency-Key"] if method == "POST" else []), (method, path)
        if method == "POST":
            assert {"409", "422"} <= set(responses)


def test_request_bodies_are_the_schemas_that_validate(document):
    bodies = {
        (method, path): operation["requestBody"]
        for method, path, operation in operations(document)
        if "requestBody" in operation
    }
    json_schema = {
        key: dereferenced(document, body["content"]["application/json"]["schema"])
        for key, body in bodies.items()
        if "application/json" in body["content"]
    }
    # Then each JSON body is the very schema its resource validates with
    assert json_schema == {
        ("POST", "/admin/shops"): schemas.SHOP_CREATE,
        ("PATCH", "/admin/shops/{shop_id}"): schemas.SHOP_UPDATE,
        ("POST", "/admin/shops/{shop_id}/credits"): schemas.TOP_UP,
        ("POST", "/contacts"): schemas.CONTACTS_IMPORT,
        ("POST", "/campaigns"): schemas.CAMPAIGN_CREATE,
        ("PATCH", "/campaigns/{campaign_id}"): schemas.CAMPAIGN_PATCH,
        ("POST", "/campaigns/{campaign_id}/schedule"): schemas.CAMPAIGN_SCHEDULE,
        ("POST", "/campaigns/{campaign_id}/test"): schemas.TEST_SEND_CREATE,
        ("POST", "/webhooks/mitto/dlr"): schemas.DELIVERY_REPORTS,
        ("POST", "/admin/shops/{shop_id}/adjustments"): schemas.ADJUSTMENT,
        ("POST", "/webhooks/mitto/inbound"): schemas.INBOUND_MESSAGE,
        ("POST", "/webhooks/shopify/customers/redact"): schemas.SHOPIFY_CUSTOMER_REDACT,
        ("POST", "/webhooks/shopify/customers/data_request"): schemas.SHOPIFY_DATA_REQUEST,
        ("POST", "/webhooks/shopify/shop/redact"): schemas.SHOPIFY_SHOP_REDACT,
    }
    # And a contacts import may also be CSV, with its query parameter
    assert "text/csv" in bodies[("POST", "/contacts")]["content"]
    contacts = document["paths"]["/contacts"]
    assert [p["name"] for p in contacts["post"]["parameters"] if p["in"] == "query"] == [
        "default_country"
    ]
    assert [p["name"] for p in contacts["get"]["parameters"]] == ["limit", "after", "opted_out"]
    limit = next(p for p in contacts["get"]["parameters"] if p["name"] == "limit")
    assert dereferenced(document, limit["schema"]) == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 50,
    }


def test_creating_a_campaign_links_to_the_operations_on_it(document):
    created = document["paths"]["/campaigns"]["post"]["responses"]["201"]
    # Then the stateful tests can go from the new campaign to reading, launching, pausing it
    links = created["links"]
    targets = {link["operationId"] for link in links.values()}
    assert {
        "get_campaigns_campaign_id",
        "post_campaigns_campaign_id_enqueue",
        "post_campaigns_campaign_id_pause",
        "get_campaigns_campaign_id_progress",
    } <= targets
    assert all(
        link["parameters"] == {"campaign_id": "$response.body#/id"} for link in links.values()
    )
    ids = {operation["operationId"] for _, _, operation in operations(document)}
    assert targets <= ids


def test_a_new_route_needs_only_its_docs(settings, redis_client, db):
    # Given a new admin route whose resource declares its access and its docs, nothing more
    class ThingsResource:
        auth = Access.ADMIN
        docs = {
            "POST": Operation(
                "Make a thing", {201: Answer("The thing", schemas.BALANCE)}, body=schemas.TOP_UP
            )
        }

        def on_post(self, req, resp, shop_id):
            resp.status = falcon.HTTP_201

    app = create_app(settings, redis_client)
    add_routes(app, {f"{SHOP}/things": ThingsResource()})
    # When the document is served
    document = falcon.testing.TestClient(app).simulate_get("/openapi.json").json
    # Then the route is there with its path parameter, security and error answers derived
    operation = document["paths"]["/admin/shops/{shop_id}/things"]["post"]
    assert operation["parameters"] == [
        {"name": "shop_id", "in": "path", "required": True, "schema": ID_SCHEMA}
    ]
    assert operation["security"] == [{"adminToken": []}]
    assert sorted(operation["responses"]) == [
        "201",
        "400",
        "401",
        "404",
        "413",
        "415",
        "422",
        "503",
    ]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TopUp"
    }
    validate(document)


def test_the_json_apis_refusals_of_undeclared_input_are_documented_and_the_webhooks_have_no_415(
    client, document
):
    shop_id, key = create_shop(client, "declared-input.example")
    # Given routes that declare no query and no body, which refuse either (DeclaredInput)
    for path, headers in (("/credits", auth(key)), (f"/admin/shops/{shop_id}/keys", ADMIN)):
        assert client.simulate_get(path, params={"zzz": "1"}, headers=headers).status_code == 422
    # Then every shop and admin operation documents 400, 413 and 422 (a probe found 422
    # undocumented on GET /credits, /campaigns/{id}, DELETE /contacts/{id}, ...), each shop
    # POST the 410 of a replay whose answer was erased, and the JSON API alone 415
    for method, path, operation in operations(document):
        responses = set(operation["responses"])
        security = operation.get("security") or []
        json_api = security in ([{"shopApiKey": []}], [{"adminToken": []}])
        if json_api:
            assert {"400", "413", "422"} <= responses, (method, path)
        if security == [{"shopApiKey": []}] and method == "POST":
            assert "410" in responses, (method, path)
        if path.startswith("/webhooks/"):
            assert "415" not in responses, (method, path)
