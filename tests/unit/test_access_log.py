"""gunicorn's access log prints no secret (SPEC 8): the logger of `gunicorn.conf.py`, writing a
real access log file, fed what gunicorn hands it for a request."""

from __future__ import annotations

import base64
import datetime
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from api.access_log import AccessLogger, redact_target
from service import api_keys
from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET

EVERYTHING = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s'
    " %({authorization}i)s %({cookie}i)s %({x-webhook-token}i)s %({set-cookie}o)s"
    " %({http_authorization}e)s %({query_string}e)s %({raw_uri}e)s"
    " %({user-agent}i)s"
)


def access_line(
    tmp_path, target: str, headers: dict[str, str] | None = None, log_format: str | None = None
) -> str:
    """The line the web process's logger writes for `GET target` answered 200."""
    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    if log_format:
        cfg.set("access_log_format", log_format)
    headers = {"User-Agent": "curl/8", **(headers or {})}
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": target,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.1",
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()},
    }
    request = SimpleNamespace(headers=[(name.upper(), value) for name, value in headers.items()])
    response = SimpleNamespace(
        status="200 OK", sent=2, headers=[("Set-Cookie", f"astronote_ops={ADMIN_TOKEN}")]
    )
    AccessLogger(cfg).access(response, request, environ, datetime.timedelta(milliseconds=3))
    return (tmp_path / "access.log").read_text()


def test_a_token_in_the_query_string_is_not_logged_whatever_the_format_asks_for(tmp_path):
    # Given the ops page opened with the admin token, its Referer, and every credential header
    target = f"/ops?token={ADMIN_TOKEN}"
    headers = {
        "Referer": f"http://astronote.example{target}",
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "Cookie": f"astronote_ops={ADMIN_TOKEN}",
        "X-Webhook-Token": ADMIN_TOKEN,
    }
    # When gunicorn logs the request in a format that prints every atom it has
    line = access_line(tmp_path, target, headers, EVERYTHING)
    # Then the token appears nowhere, and the request still does, with its query redacted
    assert ADMIN_TOKEN not in line, line
    assert '"GET /ops?token=[redacted] HTTP/1.1" 200' in line, line
    assert '"http://astronote.example/ops?token=[redacted]"' in line, line
    assert "curl/8" in line, line


def test_the_default_format_logs_the_path_and_plain_parameters(tmp_path):
    # When the delivery-report callback and a paginated list are logged the default way
    callback = access_line(tmp_path, f"/webhooks/mitto/dlr?token={DLR_WEBHOOK_SECRET}")
    listing = access_line(tmp_path, "/campaigns/7/recipients?status=sent&limit=100&after=42")
    # Then the secret is redacted and the pagination kept
    assert DLR_WEBHOOK_SECRET not in callback
    assert '"GET /webhooks/mitto/dlr?token=[redacted] HTTP/1.1" 200' in callback, callback
    assert '"GET /campaigns/7/recipients?status=sent&limit=100&after=42 HTTP/1.1"' in listing


def test_the_user_of_basic_authentication_is_not_logged(tmp_path):
    # Given a client that sends its API key as the user name of Basic authentication
    credentials = base64.b64encode(f"{ADMIN_TOKEN}:".encode()).decode()
    # When the request is logged
    line = access_line(tmp_path, "/credits", {"Authorization": f"Basic {credentials}"})
    # Then neither the key nor its encoded form appears
    assert ADMIN_TOKEN not in line and credentials not in line, line
    assert line.startswith("10.0.0.1 - - ["), line


@pytest.mark.parametrize(
    "target, logged",
    [
        ("/u/AAAAAAAAAAEAAAAAAAAAAQ", "/u/[redacted]"),
        ("/ops?token=a&token=b", "/ops?token=[redacted]&token=[redacted]"),
        ("/contacts?opted_out=true&api%5Fkey=k", "/contacts?opted_out=true&api%5Fkey=[redacted]"),
        ("/ops?s3cr3t", "/ops?[redacted]"),
        ("/health/full", "/health/full"),
        ("http://h.example/u/tok?limit=5", "http://h.example/u/[redacted]?limit=5"),
        # Spellings that are refused 404 still carry the token
        ("/U/AAAAAAAAAAEAAAAAAAAAAQ", "/U/[redacted]"),
        ("//u//AAAAAAAAAAEAAAAAAAAAAQ?x=1", "//u//[redacted]?x=[redacted]"),
        ("/%75/AAAAAAAAAAMAAAAAAAAAA8W_l6wG2MzcvGu4_6OmsH0", "/%75/[redacted]"),
        ("/u%2FAAAAAAAAAAMAAAAAAAAAA8W_l6wG2MzcvGu4_6OmsH0", "/[redacted]"),
        ("/u/./AAAAAAAAAAMAAAAAAAAAA8W_l6wG2MzcvGu4_6OmsH0", "/u/[redacted]/[redacted]"),
        ("/u/%2e/AAAAAAAAAAMAAAAAAAAAA8W_l6wG2MzcvGu4_6OmsH0", "/u/[redacted]/[redacted]"),
        ("/u\\AAAAAAAAAAMAAAAAAAAAA8W_l6wG2MzcvGu4_6OmsH0", "/u\\[redacted]"),
        ("/x/%41%41%41%41%41%41%41%41", "/x/[redacted]"),
        ("/webhooks/shopify/customers/data_request", "/webhooks/shopify/customers/data_request"),
        (
            "https://my-very-long-shop-name-here.myshopify.com/products/x",
            "https://my-very-long-shop-name-here.myshopify.com/products/x",
        ),
    ],
)
def test_redacted_targets(target, logged):
    assert redact_target(target) == logged


def test_a_shop_api_key_is_not_logged_wherever_the_client_put_it(tmp_path):
    key = api_keys.new_key()
    for target, headers in [
        (f"/{key}", {}),
        (f"/contacts?limit={key}", {}),
        ("/contacts", {"Referer": f"https://shop.example/settings?k={key}"}),
        ("/contacts", {"User-Agent": f"integration/1.0 ({key})"}),
    ]:
        line = access_line(tmp_path, target, headers)
        assert key not in line and key[3:] not in line, line
        assert "ak_[redacted]" in line or "[redacted]" in line, line
