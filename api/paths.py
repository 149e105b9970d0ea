"""Only canonical paths reach routing and authentication: every other spelling is a 404.

Falcon's router drops leading slashes (`//admin/shops` routes to `/admin/shops`), gunicorn
passes `//`, `.` and `..` segments through to PATH_INFO as they came, and decodes `%2F` into a
`/` there (the request line as sent is kept in RAW_URI). Normalising once would have to agree
with every layer; refusing is simpler and cannot disagree. Refused, in the path as sent and in
the decoded path:
- an empty segment (`//admin`, `/admin//shops`); a single trailing slash is left to
  `Authentication`, which refuses it on every route that is not public;
- a `.` or `..` segment, however spelled (`/./ops`, `/admin/../ops`, `/%2e%2e/ops`);
- a backslash, and a percent-encoded `/`, `\\`, `%` or unreserved character (letters, digits,
  `-._~`): each has exactly one canonical spelling, itself.
Other percent-encodings (`%20`, `%C3%A9`) are left to the routes, which answer 404 themselves.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from urllib.parse import urlsplit

from falcon.routing.converters import BaseConverter

# The delivery-report webhook, answered in front of Falcon (`api/report_ingest.py`) and left out
# of the access log when it stores reports (`api/access_log.py`).
DELIVERY_REPORTS = "/webhooks/mitto/dlr"

_UNRESERVED = string.ascii_letters + string.digits + "-._~"
# A percent-encoded character that must never be encoded: `/`, `\`, `%` or an unreserved one.
_NON_CANONICAL_ESCAPE = re.compile(
    "%(" + "|".join(f"{ord(c):02X}" for c in "/\\%" + _UNRESERVED) + ")", re.IGNORECASE
)


def sent_path(environ: Mapping[str, object]) -> str:
    """The path of the request line as the client sent it (undecoded), when the server says:
    gunicorn's RAW_URI, uWSGI's REQUEST_URI; else the decoded PATH_INFO."""
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    if not raw:
        return str(environ.get("PATH_INFO") or "/")
    if not raw.startswith("/"):
        # The absolute form `GET http://host/path HTTP/1.1`: its path is what is routed.
        raw = urlsplit(raw).path if "://" in raw else raw
    return raw.split("?", 1)[0].split("#", 1)[0]


def _segments_refused(path: str) -> str | None:
    if not path.startswith("/"):
        return "the path does not start with /"
    if "\\" in path:
        return "the path holds a backslash"
    segments = path[1:].split("/")
    for position, segment in enumerate(segments, 1):
        # The last segment may be empty: `/` itself, or a trailing slash.
        if segment == "" and position < len(segments):
            return "the path has an empty segment"
        if segment in (".", ".."):
            return "the path has a dot segment"
    return None


def refusal(environ: Mapping[str, object]) -> str | None:
    """Why this request's path is not canonical, or None when it is."""
    sent = sent_path(environ)
    if _NON_CANONICAL_ESCAPE.search(sent):
        return "the path percent-encodes a character that is never encoded"
    return _segments_refused(sent) or _segments_refused(str(environ.get("PATH_INFO") or "/"))


def has_trailing_slash(environ: Mapping[str, object]) -> bool:
    path = str(environ.get("PATH_INFO") or "/")
    return len(path) > 1 and path.endswith("/")


# bigserial's largest id.
MAX_ID = 2**63 - 1


class IdConverter(BaseConverter):
    """`{name:id}`: a row id in its one spelling, decimal digits with no sign and no leading
    zero, from 1 to MAX_ID. Falcon's `int` takes `07` and `+7` as 7: two spellings of one
    campaign (a probe saw an Idempotency-Key replayed on `/campaigns/07/enqueue` answer 422 as
    another request), where every other path has one."""

    def convert(self, value: str) -> int | None:
        if not (value.isascii() and value.isdigit()) or value[0] == "0" or len(value) > 19:
            return None
        number = int(value)
        return number if number <= MAX_ID else None
