"""Every spelling of every admin and operator route, as raw request lines to real gunicorn
(not `requests`, which would normalise them first): no 2xx without the admin token, no answer
that got past authentication, and nothing changed. The incident: `//admin/shops` with a shop's
API key created shops and minted credits, because authentication compared path strings while
Falcon's router drops the extra slash.

The routes are read from the app's router (every responder whose `Access` is ADMIN or
OPERATOR), so a route added later is attacked too; one whose path has a parameter this test
has no value for fails it until one is added to `path_values`. The requests are pipelined, many
to a connection, to one stack."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time

import pytest

from api.access import Access, access_for, responders
from api.app import create_app
from api.openapi import routed
from tests.e2e.stack import Stack

GUARDED = (Access.ADMIN, Access.OPERATOR)
# Bodies that would do harm if let through; another POST gets `{}` (a 422 past authentication,
# which the control accepts and the attack refuses like any answer past authentication).
BODIES = {
    "/admin/shops": '{{"domain": "minted-{n}.example", "name": "Minted"}}',
    "/admin/shops/{shop_id}/credits": '{{"amount": 1000000, "reference": "mint-{n}"}}',
    "/admin/shops/{shop_id}/adjustments": (
        '{{"amount": 1000000, "reason": "mint", "reference": "mint-{n}"}}'
    ),
    # PATCH: the shop's settings, turning its quiet hours off
    "/admin/shops/{shop_id}": '{{"quiet_hours": null}}',
}
# What a refusal is: gunicorn's 400 for a request line it will not parse, 401 for missing or
# wrong credentials, 404 for a spelling that is not the path, 303 from /ops to its login form.
REFUSED = {303, 400, 401, 404}
_FIELD = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def guarded_routes(settings, redis_client) -> list[tuple[str, str]]:
    """(method, path template without converters) of every admin or operator responder."""
    app = create_app(settings, redis_client)
    return sorted(
        (method, _FIELD.sub(r"{\1}", template))
        for template, resource in routed(app)
        for method in responders(resource)
        if access_for(resource, method) in GUARDED
    )


def fill(template: str, values: dict[str, object]) -> str:
    missing = set(_FIELD.findall(template)) - set(values)
    assert not missing, f"{template}: give path_values a value for {missing}"
    return template.format(**values)


def interior(path: str, replacement: str) -> str:
    """`path` with its slashes after the first replaced (`/a/b/c` -> `/a{r}b{r}c`)."""
    return "/" + path[1:].replace("/", replacement)


def refused_spellings(path: str, origin: str) -> dict[str, str]:
    """Spellings that Falcon's router, a proxy or a lenient server could take for `path`; the
    application must refuse them all (404), whatever the credentials."""
    first, _, rest = path[1:].partition("/")
    spellings = {
        "leading double slash": "/" + path,
        "leading triple slash": "//" + path,
        "dot segment": "/." + path,
        "dot-dot segment": "/x/.." + path,
        "dot-dot from a sibling": f"/{first}/../{path[1:]}",
        "trailing dot": path + "/.",
        "trailing slash": path + "/",
        "trailing double slash": path + "//",
        "encoded dot": "/%2e" + path,
        "encoded dot-dot": "/%2E%2E" + path,
        "half-encoded dot-dot": "/.%2e" + path,
        "encoded first letter": f"/%{ord(path[1]):02x}" + path[2:],
        "encoded leading slash": "/%2F" + path[1:],
        "leading backslash": "/\\" + path[1:],
        "absolute form, double slash": f"{origin}/{path}",
    }
    if rest:
        spellings.update(
            {
                "interior double slash": interior(path, "//"),
                "interior dot segment": interior(path, "/./"),
                "encoded slash": interior(path, "%2F"),
                "encoded slash, lower case": interior(path, "%2f"),
                "double-encoded slash": interior(path, "%252F"),
                "backslash": interior(path, "\\"),
                "encoded backslash": interior(path, "%5C"),
                "path parameter": f"/{first};/{rest}",
            }
        )
    return spellings


def equivalent_spellings(path: str, origin: str, admin_token: str) -> dict[str, str]:
    """Request targets whose path *is* `path`: authentication alone must refuse them."""
    return {
        "canonical": path,
        "absolute form": origin + path,
        "fragment": path + "#x",
        "token in the query": f"{path}?token={admin_token}",
    }


def request_bytes(method: str, target: str, port: int, headers: dict, body: str | None) -> bytes:
    """One request as written, keep-alive (to be pipelined)."""
    payload = (body or "").encode()
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def read_answers(sock: socket.socket, wanted: int) -> list[tuple[int, str]]:
    """Up to `wanted` answers from `sock`, in order, until the server closes it (gunicorn
    closes after a request line it refuses, or when keep-alive ends)."""
    answers: list[tuple[int, str]] = []
    buffer = b""
    while len(answers) < wanted:
        while b"\r\n\r\n" not in buffer:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                chunk = b""
            if not chunk:
                return answers
            buffer += chunk
        raw_head, buffer = buffer.split(b"\r\n\r\n", 1)
        head = raw_head.decode("latin-1")
        length = re.search(r"(?im)^content-length:\s*(\d+)", head)
        remaining = int(length.group(1)) if length else 0
        while len(buffer) < remaining:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        buffer = buffer[remaining:]
        answers.append((int(head.split(" ", 2)[1]), head))
        if re.search(r"(?im)^connection:\s*close", head):
            return answers
    return answers


def exchange(port: int, requests: list[bytes], per_connection: int = 50) -> list[tuple[int, str]]:
    """Every request's (status, head), pipelined `per_connection` at a time; what a closed
    connection left unanswered is sent again on a new one (the server never read it)."""
    answers: list[tuple[int, str]] = []
    while len(answers) < len(requests):
        batch = requests[len(answers) : len(answers) + per_connection]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"".join(batch))
            got = read_answers(sock, len(batch))
        assert got, f"no answer to {batch[0][:120]!r}"
        answers += got
    return answers


def state(db) -> tuple:
    """What a request that got through would have changed: shops, the ledger, balances, API
    keys (issued or revoked), short links (disabled)."""
    return (
        db.execute_sql("SELECT count(*) FROM shop").fetchone(),
        db.execute_sql(
            "SELECT count(*), coalesce(sum(amount), 0) FROM credit_transaction"
        ).fetchone(),
        db.execute_sql("SELECT id, credit_balance FROM shop ORDER BY id").fetchall(),
        db.execute_sql("SELECT id, revoked_at FROM api_key ORDER BY id").fetchall(),
        db.execute_sql("SELECT code, disabled_at FROM short_link ORDER BY code").fetchall(),
    )


def shop_objects(db, shop_id: int, tag: str) -> dict[str, object]:
    """Path values of a shop's own objects: the shop, its first key, an export, a link."""
    key_id = db.execute_sql(
        "SELECT min(id) FROM api_key WHERE shop_id = %s", (shop_id,)
    ).fetchone()[0]
    export_id = db.execute_sql(
        "INSERT INTO data_export (shop_id, request_key, document) VALUES (%s, %s, '{}')"
        " RETURNING id",
        (shop_id, f"request-{tag}"),
    ).fetchone()[0]
    campaign = db.execute_sql(
        "INSERT INTO campaign (shop_id, name, text) VALUES (%s, 'c', 't') RETURNING id",
        (shop_id,),
    ).fetchone()[0]
    code = f"{tag[:4]:x<8}"
    db.execute_sql(
        "INSERT INTO short_link (shop_id, campaign_id, code, url)"
        " VALUES (%s, %s, %s, 'https://shop.example/')",
        (shop_id, campaign, code),
    )
    return {"shop_id": shop_id, "key_id": key_id, "export_id": export_id, "code": code}


@pytest.fixture
def web(make_stack) -> Stack:
    stack = make_stack()
    stack.start_web()
    return stack


def test_no_spelling_of_an_admin_or_operator_route_opens_it_without_the_admin_token(
    web, db, settings, redis_client
):
    # Given every admin and operator route of the router, the known ones among them
    routes = guarded_routes(settings, redis_client)
    assert {
        ("POST", "/admin/shops"),
        ("POST", "/admin/shops/{shop_id}/credits"),
        ("POST", "/admin/shops/{shop_id}/adjustments"),
        ("POST", "/admin/shops/{shop_id}/keys"),
        ("GET", "/admin/shops/{shop_id}/keys"),
        ("DELETE", "/admin/shops/{shop_id}/keys/{key_id}"),
        ("POST", "/admin/links/{code}/disable"),
        ("GET", "/admin/exports/{export_id}"),
        ("GET", "/health/full"),
        ("GET", "/metrics"),
        ("GET", "/ops"),
        ("GET", "/ops/state"),
    } <= set(routes), routes
    # ...a merchant's shop with its API key and objects, and the routes working with the
    # admin token on another shop's (the control: each canonical path gets past
    # authentication, so a refusal below is the spelling's or the credentials')
    shop_id, key = web.create_shop("merchant.example", credits=100)
    control_shop_id, _ = web.create_shop("control.example", credits=0)
    victim, control = shop_objects(db, shop_id, "victim"), shop_objects(db, control_shop_id, "ctrl")
    admin, origin, port = web.env["ADMIN_TOKEN"], web.web, web.web_port
    as_admin = {"Authorization": f"Bearer {admin}"}
    numbers = itertools.count()

    def body(method: str, template: str) -> str | None:
        if method not in ("POST", "PATCH"):
            return None
        return BODIES.get(template, "{{}}").format(n=next(numbers))

    controls = [
        request_bytes(method, fill(template, control), port, as_admin, body(method, template))
        for method, template in routes
    ]
    for (method, template), (status, head) in zip(routes, exchange(port, controls), strict=True):
        assert status not in REFUSED and status != 403, (method, template, head)
        assert status < 500 or (template == "/health/full" and status == 503), (template, head)
    before = state(db)

    # When every spelling of every route is sent with a shop key, a wrong token and none,
    # and the spellings that are not the path itself with the admin token as well
    credentials = {
        "shop key": {"Authorization": f"Bearer {key}"},
        "wrong token": {"Authorization": "Bearer not-the-admin-token"},
        "no token": {},
    }
    cases = []
    for method, template in routes:
        path = fill(template, victim)
        refused = refused_spellings(path, origin)
        cases += [
            (method, template, name, target, who, headers)
            for name, target in {**refused, **equivalent_spellings(path, origin, admin)}.items()
            for who, headers in credentials.items()
        ]
        cases += [
            (method, template, name, target, "admin token", as_admin)
            for name, target in refused.items()
        ]
    started = time.monotonic()
    raw = [
        request_bytes(method, target, port, headers, body(method, template))
        for method, template, _, target, _, headers in cases
    ]
    answers = [
        (status, case, "set-cookie" in head.lower())
        for (status, head), case in zip(exchange(port, raw), cases, strict=True)
    ]
    elapsed = time.monotonic() - started

    # Then every answer is a refusal (none a 2xx, none past authentication), none opened an
    # operator session, and nothing changed
    assert len(answers) == len(cases) > 80 * len(routes)
    wrong = [(status, case[:5]) for status, case, _ in answers if status not in REFUSED]
    assert wrong == [], wrong[:20]
    assert [case for _, case, cookie in answers if cookie] == []
    # ...the spellings were refused as spellings (404, or gunicorn's 400), not merely as
    # wrong credentials: even the admin token gets no further
    by_admin = {status for status, case, _ in answers if case[4] == "admin token"}
    assert by_admin <= {400, 404}, by_admin
    assert state(db) == before
    # ...the shop still sees only its own 100 credits, and its key still works
    credits = web.call("GET", "/credits", key).json()
    assert credits["balance"] == 100, json.dumps(credits)
    print(f"{len(answers)} requests over {len(routes)} routes in {elapsed:.1f} s")
