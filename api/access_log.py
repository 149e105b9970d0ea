"""gunicorn's access log without secrets (SPEC 8), installed by `api/gunicorn_conf.py`.

Query strings carry them: `/ops?token=` ADMIN_TOKEN, the delivery-report callback
`?token=` DLR_WEBHOOK_SECRET; a browser's Referer repeats the page's URL, and `/u/{token}` is
a contact's unsubscribe capability. So request targets and referers are printed redacted, and no
format (`access_log_format`) can print a credential header or the WSGI environment. A shop's
API key is redacted wherever a client put it (path, Referer, User-Agent, a plain parameter).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

from api.paths import DELIVERY_REPORTS
from service.infra import logs

REDACTED = "[redacted]"
# Query parameters whose values are plain (pagination and filters). Every other parameter's
# value is redacted, so a parameter added later is secret until someone says otherwise.
PLAIN_PARAMETERS = frozenset({"limit", "after", "status", "opted_out"})
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-webhook-token",
        "x-mitto-api-key",
    }
)
# Any spelling a client may send (`/U/...`, `//u/...`): each is refused 404, but its line
# still carries the token.
_UNSUBSCRIBE_TOKEN = re.compile(r"(/u/+)[^/?#\s]+", re.IGNORECASE)
# ... and those the rule above cannot see (`/%75/T`, `/u%2FT`, `/u/./T`, `/u\T`): a token is
# 43 base64url characters, which some may send percent-encoded. No route of ours has a path
# segment of 20 such characters, so any such run is printed redacted.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_%-]{20,}")
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_HEADER_ATOM = re.compile(r"\{(.+)\}[io]")


def redact_query(query: str) -> str:
    """`query` with the value of every parameter but the plain ones replaced by [redacted]."""

    def redact(pair: str) -> str:
        name, equals, _ = pair.partition("=")
        if unquote_plus(name) in PLAIN_PARAMETERS:
            return pair
        return f"{name}={REDACTED}" if equals else REDACTED

    return "&".join(redact(pair) if pair else pair for pair in query.split("&"))


def redact_target(target: str) -> str:
    """A request target or URL as it may be logged: its query redacted, and the token of an
    unsubscribe link too."""
    path, question, query = target.partition("?")
    # A URL's scheme and host (a Referer's) are not a path: a long shop domain stays readable.
    authority = _AUTHORITY.match(path)
    origin, path = (authority[0], path[authority.end() :]) if authority else ("", path)
    path = origin + _TOKEN_LIKE.sub(REDACTED, _UNSUBSCRIBE_TOKEN.sub(rf"\g<1>{REDACTED}", path))
    return f"{path}?{redact_query(query)}" if question else path


def _printable(atom: str) -> bool:
    if atom.endswith("}e"):
        return False  # the WSGI environment holds the raw query and the Authorization header
    header = _HEADER_ATOM.fullmatch(atom)
    return header is None or header[1] not in SECRET_HEADERS


class AccessLogger(Logger):
    """gunicorn's logger, whose access lines print no secret. (Its error lines, like every
    line, go through `JsonFormatter`, which hides the configured secrets.)

    A delivery report stored (`POST /webhooks/mitto/dlr` answered 200) is not logged: the
    provider posts one per message at the send rate, and its line cost the web process about
    a third of a report's CPU (`bench/RESULTS.md`); `/metrics` counts them
    (`astronote_http_request_seconds{route="/webhooks/mitto/dlr"}`). Every other answer of
    that route (a refusal, a 503) is logged like any request."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if (
            environ.get("PATH_INFO") == DELIVERY_REPORTS
            and getattr(resp, "status_code", None) == 200
            and environ.get("REQUEST_METHOD") == "POST"
        ):
            return
        super().access(resp, req, environ, request_time)

    def atoms(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
    ) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        atoms.update(
            {
                "r": f"{environ['REQUEST_METHOD']} {redact_target(environ['RAW_URI'])}"
                f" {environ['SERVER_PROTOCOL']}",
                "U": redact_target(atoms["U"] or ""),
                "q": redact_query(atoms["q"] or ""),
                "f": redact_target(atoms["f"]),
                # The user name of Basic authentication is half a credential (often an API key).
                "u": "-",
            }
        )
        return {
            atom: logs.redact(value) if isinstance(value, str) else value
            for atom, value in atoms.items()
            if _printable(atom)
        }
