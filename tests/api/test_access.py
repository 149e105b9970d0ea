"""Who may call what (SPEC 5 and 8): every route declares its access, a path in any spelling but
the canonical one is refused before routing, `/health/full` and `/metrics` need the admin token,
the operator page needs a login, and every answer carries the security headers. In process
(`falcon.testing`); `tests/e2e/test_path_spellings.py` sends the same spellings to gunicorn."""

from __future__ import annotations

import dataclasses
from urllib.parse import urljoin

import falcon
import psycopg2
import pytest

from api import errors
from api.access import Access, UndeclaredAccess, responders, undeclared
from api.app import add_routes, create_app
from api.ops_access import COOKIE, OperatorSessions
from tests.api.conftest import ADMIN, CheckedClient, assert_error, auth
from tests.conftest import ADMIN_TOKEN

PROTECTED = [
    ("POST", "/admin/shops"),
    ("POST", "/admin/shops/{shop_id}/credits"),
    ("GET", "/ops/state"),
    ("GET", "/health/full"),
    ("GET", "/metrics"),
    ("GET", "/contacts"),
    ("GET", "/credits"),
]


def shop_count(db) -> int:
    return db.execute_sql("SELECT count(*) FROM shop").fetchone()[0]


def balances(db) -> list[tuple]:
    return db.execute_sql("SELECT id, credit_balance FROM shop ORDER BY id").fetchall()


def routed_resources(app: falcon.App) -> list[tuple[str, object]]:
    """Every (uri template, resource) in Falcon's compiled router, however it was added."""
    found, nodes = [], list(app._router._roots)
    while nodes:
        node = nodes.pop()
        if node.resource is not None:
            found.append((node.uri_template, node.resource))
        nodes.extend(node.children)
    return found


# --- every route declares its access ---------------------------------------------------------


def test_every_routed_resource_declares_who_may_call_each_responder(settings, redis_client):
    # Given the application as gunicorn serves it
    app = create_app(settings, redis_client)
    # When its router is walked
    routes = routed_resources(app)
    # Then every resource answers something, and says who may call each of its responders
    assert len(routes) >= 20, [template for template, _ in routes]
    missing = {
        template: undeclared(resource) for template, resource in routes if undeclared(resource)
    }
    assert missing == {}
    assert all(responders(resource) for _, resource in routes)


def test_a_resource_without_a_declaration_cannot_be_routed():
    class Undeclared:
        def on_get(self, req, resp):
            resp.media = {"secret": True}

    class HalfDeclared:
        auth = {"GET": Access.PUBLIC}

        def on_get(self, req, resp):
            pass

        def on_delete(self, req, resp):
            pass

    # When either is registered, the application refuses it, naming the method
    app = falcon.App()
    with pytest.raises(UndeclaredAccess, match="Undeclared at /x declares no access for GET"):
        add_routes(app, {"/x": Undeclared()})
    with pytest.raises(UndeclaredAccess, match="DELETE"):
        add_routes(app, {"/y": HalfDeclared()})
    assert routed_resources(app) == []


def test_the_admin_and_operator_routes_are_declared_as_such(settings, redis_client):
    # (a resource marked public by mistake would pass the walk above: pin the sensitive ones)
    routes = dict(routed_resources(create_app(settings, redis_client)))
    expected = {
        "/admin/shops": Access.ADMIN,
        "/ops": Access.OPERATOR,
        "/ops/state": Access.OPERATOR,
        "/health/full": Access.ADMIN,
        "/metrics": Access.ADMIN,
        "/webhooks/mitto/dlr": Access.WEBHOOK,
        "/contacts": Access.SHOP,
        "/health": Access.PUBLIC,
        "/readiness": Access.PUBLIC,
    }
    assert {path: routes[path].auth for path in expected} == expected
    credits = next(
        resource
        for template, resource in routes.items()
        if template.startswith("/admin/shops/{shop_id") and "credits" in template
    )
    assert credits.auth is Access.ADMIN


# --- only canonical paths --------------------------------------------------------------------

# Other spellings of a path that Falcon's router (or a lenient server) would map to it.
SPELLINGS = {
    "double slash": lambda path: "/" + path,
    "dot segment": lambda path: "/." + path,
    "dot-dot segment": lambda path: "/x/.." + path,
    "trailing dot": lambda path: path + "/.",
    "encoded dot": lambda path: "/%2e" + path,
    "encoded dot-dot": lambda path: "/%2E%2E" + path,
    "trailing slash": lambda path: path + "/",
    "trailing double slash": lambda path: path + "//",
    "encoded letter": lambda path: f"/%{ord(path[1]):02x}" + path[2:],
    "encoded slash": lambda path: path.replace("/", "%2F", 2).replace("%2F", "/", 1),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("credential", ["shop", "wrong", "none"])
def test_a_shop_key_cannot_reach_an_admin_route_by_any_spelling(
    client, db, shops, spelling, credential
):
    # Given a shop's key, a wrong token or none, and the shops as they are
    headers = {"shop": auth(shops.key), "wrong": auth("wrong"), "none": {}}[credential]
    respell = SPELLINGS[spelling]
    before = (shop_count(db), balances(db))
    # When the admin routes are called through another spelling of their path
    created = client.simulate_post(
        respell("/admin/shops"), headers=headers, json={"domain": "evil.example", "name": "e"}
    )
    topped = client.simulate_post(
        respell(f"/admin/shops/{shops.id}/credits"),
        headers=headers,
        json={"amount": 10**6, "reference": "mint"},
    )
    # Then neither succeeds, and no shop or credit was added
    assert created.status_code in (401, 404), created.text
    assert topped.status_code in (401, 404), topped.text
    assert (shop_count(db), balances(db)) == before


@pytest.mark.parametrize(
    "path",
    [
        "//admin/shops",
        "///admin/shops",
        "/admin//shops",
        "/./admin/shops",
        "/admin/./shops",
        "/ops/../admin/shops",
        "/admin/shops/..",
        "/admin%2Fshops",
        "/admin%2fshops",
        "/%2Fadmin/shops",
        "/%2e/admin/shops",
        "/.%2E/admin/shops",
        "/admin%5Cshops",
        "/admin\\shops",
        "/admin/shops/",
        "/%61dmin/shops",
        "/admin%252Fshops",
    ],
)
def test_a_non_canonical_path_is_a_404_even_with_the_admin_token(client, db, path):
    # When the admin token itself is sent to another spelling of /admin/shops
    result = client.simulate_post(path, headers=ADMIN, json={"domain": "x.example", "name": "x"})
    # Then 404: the spelling is refused before any authentication, and nothing was created
    assert_error(result, 404)
    assert shop_count(db) == 0


def test_the_canonical_spelling_with_the_admin_token_is_served(client, db):
    # (the control: the refusals above are about the spelling, not the route)
    result = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": "x.example", "name": "x"}
    )
    assert result.status_code == 201
    assert shop_count(db) == 1


def test_a_public_route_keeps_its_trailing_slash_and_ordinary_escapes(client):
    # Given a short link with a trailing slash, and a code with an escaped space
    # Then both are still the link pages (404 pages: no such code), not refusals
    for path in ("/r/unknown/", "/r/a%20b"):
        result = client.simulate_get(path)
        assert result.status_code == 404 and result.headers["content-type"].startswith(
            "text/html"
        ), path


# --- health and metrics ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health/full", "/metrics"])
def test_full_health_and_metrics_answer_only_to_the_admin_token(client, shops, path):
    # When they are asked without the admin token, with a shop key, or with a wrong one
    for headers in ({}, auth(shops.key), auth(ADMIN_TOKEN + "-but-longer")):
        assert_error(client.simulate_get(path, headers=headers), 401)
    # Then only the admin token gets the answer (/health/full is 503 here: no worker runs, no
    # clock leads; the unchecked client, since CheckedClient fails every 5xx)
    answer = falcon.testing.simulate_get(client.app, path, headers=ADMIN)
    assert answer.status_code == (503 if path == "/health/full" else 200), answer.text
    assert "astronote_health_ok" in answer.text if path == "/metrics" else answer.json["problems"]


def test_health_and_readiness_stay_public_and_minimal(client):
    assert client.simulate_get("/health").json == {"ok": True}
    assert client.simulate_get("/readiness").json == {"ok": True, "down": []}
    # and a load balancer checking with HEAD gets the same status (it was 405)
    for path in ("/health", "/readiness"):
        answer = client.simulate_head(path)
        assert (answer.status_code, answer.content) == (200, b""), path


def test_a_dependency_error_names_the_dependency_not_the_error():
    # Given a PostgreSQL error that names the database host
    error = psycopg2.OperationalError('connection to server at "db-7.internal" (10.0.0.7) failed')
    # When it is mapped to an answer
    with pytest.raises(falcon.HTTPServiceUnavailable) as answer:
        errors.dependency_down(falcon.testing.create_req(), None, error, {})
    # Then the answer says which dependency, and nothing of the error
    assert answer.value.description == "postgresql is unavailable, try again shortly"


# --- security headers ------------------------------------------------------------------------


def test_every_answer_is_nosniff_and_unframeable(client, shops):
    for result in (
        client.simulate_get("/health"),
        client.simulate_get("/no-such-thing"),
        client.simulate_get("//admin/shops"),
        client.simulate_get("/r/unknown"),
        client.simulate_get("/contacts", headers=auth(shops.key)),
    ):
        assert result.headers["x-content-type-options"] == "nosniff"
        assert result.headers["x-frame-options"] == "DENY"
        assert result.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_authenticated_answers_are_not_stored(client, db):
    # When a shop is created (its API key is in the answer) and its contacts are listed
    created = client.simulate_post(
        "/admin/shops", headers=ADMIN, json={"domain": "x.example", "name": "x"}
    )
    key = created.json["api_key"]
    client.simulate_post(
        "/contacts", headers=auth(key), json={"contacts": [{"phone": "+306912345678"}]}
    )
    listed = client.simulate_get("/contacts", headers=auth(key))
    refused = client.simulate_get("/contacts")
    # Then no cache may keep them, nor the refusal
    for result in (created, listed, refused):
        assert result.headers["cache-control"] == "no-store", result.headers
    assert "+306912345678" in listed.text
    # ...while a public answer says nothing about caching
    assert "cache-control" not in client.simulate_get("/health").headers


# --- the operator page: login, session, logout ------------------------------------------------


def session_cookie(result: falcon.testing.Result) -> falcon.testing.Cookie | None:
    return result.cookies.get(COOKIE)


def login(client: CheckedClient, token: str) -> falcon.testing.Result:
    return client.simulate_post(
        "/ops/login",
        body=f"token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_the_operator_page_sends_a_browser_without_a_session_to_the_login_form(client):
    # When the page is opened without a session, or with the token in the URL as it used to be
    for query in ("", f"token={ADMIN_TOKEN}"):
        result = client.simulate_get("/ops", query_string=query)
        # Then it redirects to the login form, and no session is started
        assert result.status_code == 303
        assert resolved("/ops", result) == "/ops/login"
        assert resolved("/sms/ops", result) == "/sms/ops/login"  # behind a path prefix
        assert session_cookie(result) is None
    # ...and the state behind it is 401
    assert_error(client.simulate_get("/ops/state", query_string=f"token={ADMIN_TOKEN}"), 401)
    form = client.simulate_get("/ops/login")
    assert form.status_code == 200 and '<form method="post" action="login">' in form.text


@pytest.mark.parametrize("token", ["wrong", "", ADMIN_TOKEN + "-but-longer", "caf%C3%A9"])
def test_a_wrong_token_on_the_login_form_is_refused_without_a_session(client, token):
    result = login(client, token)
    assert result.status_code == 401 and "not the admin token" in result.text
    assert session_cookie(result) is None


def test_wrong_tokens_from_one_address_are_throttled_and_another_address_is_not(client):
    # When one address posts ten wrong tokens, then an eleventh, then the right one
    wrong = [login(client, f"guess-{n}").status_code for n in range(10)]
    throttled, right = login(client, "guess-10"), login(client, ADMIN_TOKEN)
    # Then the ten are refused 401, and after them even the right token waits (429)
    assert wrong == [401] * 10
    for result in (throttled, right):
        assert result.status_code == 429 and "try again" in result.text
        assert 1 <= int(result.headers["retry-after"]) <= 61
        assert session_cookie(result) is None
    # ...while another address logs in
    other = client.simulate_post(
        "/ops/login",
        body=f"token={ADMIN_TOKEN}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        remote_addr="10.1.2.3",
    )
    assert other.status_code == 303 and session_cookie(other) is not None


def resolved(path: str, answer) -> str:
    """Where a browser at `path` goes with the answer's Location."""
    return urljoin(f"https://shop.example{path}", answer.headers["location"]).removeprefix(
        "https://shop.example"
    )


def test_the_login_form_opens_a_session_that_shows_the_page_until_logout(client, settings):
    # When the operator logs in with the admin token
    result = login(client, ADMIN_TOKEN)

    # Then a session cookie scoped to the login's directory (/ops, or /sms/ops behind a path
    # prefix: no Path), unreadable by scripts, never sent cross-site, expiring with
    # OPS_SESSION_TTL_S, and a redirect to the page, under the prefix too
    assert result.status_code == 303
    assert resolved("/ops/login", result) == "/ops"
    assert resolved("/sms/ops/login", result) == "/sms/ops"
    cookie = session_cookie(result)
    assert cookie.path is None and cookie.http_only and cookie.same_site == "Strict"
    assert cookie.max_age == settings.ops_session_ttl_s == 8 * 3600
    assert not cookie.secure  # PUBLIC_BASE_URL is http here
    assert ADMIN_TOKEN not in cookie.value

    # ...which opens the page (unframeable) and its state
    page = client.simulate_get("/ops", cookies={COOKIE: cookie.value})
    assert page.status_code == 200 and "Astronote operations" in page.text
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    state = client.simulate_get("/ops/state", cookies={COOKIE: cookie.value})
    assert state.status_code == 200 and "health" in state.json

    # When the operator logs out
    out = client.simulate_post("/ops/logout", cookies={COOKIE: cookie.value})
    # Then the browser is told to drop the cookie and sent back to the form
    assert out.status_code == 303 and resolved("/sms/ops/logout", out) == "/sms/ops/login"
    assert session_cookie(out).value == "" and session_cookie(out).path is None


def test_the_session_cookie_is_secure_when_the_public_url_is_https(settings, redis_client, db):
    app = create_app(
        dataclasses.replace(settings, public_base_url="https://ops.example"), redis_client
    )
    cookie = session_cookie(login(CheckedClient(app), ADMIN_TOKEN))
    assert cookie.secure


@pytest.mark.parametrize(
    "value",
    [
        "",
        ADMIN_TOKEN,
        "v1.9999999999.nonce.forged",
        "v1.x.y.z",
        "v1.\u00b2.nonce.mac",
        "v1." + "9" * 5000 + ".n.m",
        "garbage",
    ],
)
def test_a_forged_session_cookie_opens_nothing(client, value):
    assert client.simulate_get("/ops", cookies={COOKIE: value}).status_code == 303
    assert_error(client.simulate_get("/ops/state", cookies={COOKIE: value}), 401)


def test_a_session_is_not_a_bearer_token_for_the_admin_api(client, db):
    # Given a valid operator session
    cookie = session_cookie(login(client, ADMIN_TOKEN))
    # When it is used on the admin API (cookie or bearer)
    for kwargs in ({"cookies": {COOKIE: cookie.value}}, {"headers": auth(cookie.value)}):
        result = client.simulate_post(
            "/admin/shops", json={"domain": "x.example", "name": "x"}, **kwargs
        )
        # Then 401: the session is for the operator page only
        assert_error(result, 401)
    assert shop_count(db) == 0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_its_ttl():
    # Given a session issued with a one-hour lifetime
    clock = FakeClock(1_000_000.0)
    sessions = OperatorSessions("k" * 40, "admin", ttl_s=3600, secure=False, clock=clock)
    value = sessions.issue()
    # Then it is valid until its lifetime ends, and not a second after
    clock.now += 3599
    assert sessions.valid(value)
    clock.now += 1
    assert not sessions.valid(value)


def test_rotating_the_secret_key_or_the_admin_token_ends_every_session():
    clock = FakeClock(1_000_000.0)
    value = OperatorSessions("k" * 40, "admin", 3600, False, clock).issue()
    assert OperatorSessions("k" * 40, "admin", 3600, False, clock).valid(value)
    assert not OperatorSessions("j" * 40, "admin", 3600, False, clock).valid(value)
    assert not OperatorSessions("k" * 40, "admin-2", 3600, False, clock).valid(value)
    # ...and a session cannot be stretched by editing its expiry
    version, expires, nonce, mac = value.split(".")
    stretched = ".".join((version, str(int(expires) + 86400), nonce, mac))
    clock.now += 3600
    assert not OperatorSessions("k" * 40, "admin", 3600, False, clock).valid(stretched)


def test_without_an_admin_token_the_operator_page_and_admin_api_are_disabled(
    settings, redis_client, db
):
    app = create_app(dataclasses.replace(settings, admin_token=None), redis_client)
    client = CheckedClient(app)
    for method, path in [
        ("GET", "/ops"),
        ("GET", "/ops/login"),
        ("GET", "/ops/state"),
        ("GET", "/health/full"),
        ("GET", "/metrics"),
        ("POST", "/admin/shops"),
    ]:
        assert_error(client.simulate_request(method, path, headers=auth("anything")), 404)
    assert login(client, "").status_code == 404


def test_the_operators_login_and_logout_have_one_spelling(client):
    # Their links and redirects are relative, and the session cookie is scoped to the login's
    # directory: `/ops/login/` resolved the form to /ops/login/login and the page to /ops/ops
    # (a review). So a trailing slash is a 404, as on every protected route
    assert client.simulate_get("/ops/login/").status_code == 404
    assert (
        client.simulate_post(
            "/ops/login/",
            body=f"token={ADMIN_TOKEN}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).status_code
        == 404
    )
    assert client.simulate_post("/ops/logout/").status_code == 404
