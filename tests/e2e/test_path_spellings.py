"""Every spelling of every admin and operator path, as raw request lines to real gunicorn (not
`requests`, which would normalise them first): no 2xx without the admin token, and nothing
changed. The incident: `//admin/shops` with a shop's API key created shops and minted credits,
because authentication compared path strings while Falcon's router drops the extra slash."""

from __future__ import annotations

import itertools
import json
import socket

import pytest

from tests.e2e.stack import Stack

# (method, path template, body template): every route that only the admin token opens.
ROUTES = [
    ("POST", "/admin/shops", '{{"domain": "minted-{n}.example", "name": "Minted"}}'),
    ("POST", "/admin/shops/{shop_id}/credits", '{{"amount": 1000000, "reference": "mint-{n}"}}'),
    ("GET", "/ops", None),
    ("GET", "/ops/state", None),
    ("GET", "/health/full", None),
    ("GET", "/metrics", None),
]


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


def send_raw(
    port: int, method: str, target: str, headers: dict[str, str], body: str | None
) -> tuple[int, str]:
    """Send one request line as written; (status, raw head of the answer)."""
    payload = (body or "").encode()
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head


def state(db) -> tuple:
    """What a request that got through would have changed: shops, the ledger, balances."""
    return (
        db.execute_sql("SELECT count(*) FROM shop").fetchone(),
        db.execute_sql(
            "SELECT count(*), coalesce(sum(amount), 0) FROM credit_transaction"
        ).fetchone(),
        db.execute_sql("SELECT id, credit_balance FROM shop ORDER BY id").fetchall(),
    )


@pytest.fixture
def web(make_stack) -> Stack:
    stack = make_stack()
    stack.start_web()
    return stack


def test_no_spelling_of_an_admin_or_operator_path_opens_it_without_the_admin_token(web, db):
    # Given a shop with its API key, and the routes working with the admin token (the control,
    # on another shop: each answers the canonical path, so a refusal below is the spelling's)
    shop_id, key = web.create_shop("merchant.example", credits=100)
    control_shop_id, _ = web.create_shop("control.example", credits=0)
    admin, origin = web.env["ADMIN_TOKEN"], web.web
    numbers = itertools.count()
    for method, template, body in ROUTES:
        path = template.format(shop_id=control_shop_id)
        status, head = send_raw(
            web.web_port,
            method,
            path,
            {"Authorization": f"Bearer {admin}"},
            body and body.format(n=f"control-{next(numbers)}"),
        )
        assert 200 <= status < 300 or (path == "/health/full" and status == 503), (path, head)
    before = state(db)

    # When every spelling of every route is sent with a shop key, a wrong token and none,
    # and the spellings that are not the path itself with the admin token as well
    credentials = {
        "shop key": {"Authorization": f"Bearer {key}"},
        "wrong token": {"Authorization": "Bearer not-the-admin-token"},
        "no token": {},
    }
    answers, sent = [], 0
    for method, template, body in ROUTES:
        path = template.format(shop_id=shop_id)
        refused = refused_spellings(path, origin)
        cases = [
            (name, target, who, headers)
            for name, target in {**refused, **equivalent_spellings(path, origin, admin)}.items()
            for who, headers in credentials.items()
        ]
        cases += [
            (name, target, "admin token", {"Authorization": f"Bearer {admin}"})
            for name, target in refused.items()
        ]
        for name, target, who, headers in cases:
            status, head = send_raw(
                web.web_port, method, target, headers, body and body.format(n=next(numbers))
            )
            sent += 1
            answers.append((status, name, target, who, "set-cookie" in head.lower()))

    # Then none got a 2xx, no answer opened an operator session, and nothing changed
    assert sent > 500
    opened = [answer for answer in answers if 200 <= answer[0] < 300]
    assert opened == []
    assert [answer for answer in answers if answer[4]] == []
    # ...the spellings were refused as spellings (404, or gunicorn's 400), not merely as
    # wrong credentials: even the admin token gets no further
    assert {answer[0] for answer in answers if answer[3] == "admin token"} <= {400, 404}
    assert state(db) == before
    # ...and the shop still sees only its own 100 credits
    credits = web.call("GET", "/credits", key).json()
    assert credits["balance"] == 100, json.dumps(credits)
