"""Short links (`/r/{code}`) and signed unsubscribe tokens (`/u/{token}`). SPEC 6."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import idna
from peewee import fn

from models import ShortLink
from models.database import db

log = logging.getLogger("astronote.links")

CODE_LENGTH = 10
_PAYLOAD = struct.Struct(">QQ")  # shop id, contact id
_MAC_BYTES = 16


def short_url(base_url: str, code: str) -> str:
    return f"{base_url}/r/{code}"


def sample_short_url(base_url: str) -> str:
    """A string exactly as long as a real short URL (for the reservation's upper bound)."""
    return short_url(base_url, "x" * CODE_LENGTH)


def shorten(shop_id: int, campaign_id: int, urls: Iterable[str], base_url: str) -> dict[str, str]:
    """Short URL of each long URL, one code per (campaign, URL), created on first use.
    A URL that is not an allowed destination (`is_allowed_destination`) gets none and stays
    as it was in the text. Best effort: on any database error the caller gets no mapping and
    keeps the long URLs. One `INSERT ... ON CONFLICT (campaign_id, url) DO NOTHING` for all the
    URLs (a campaign's batches shorten the same URLs concurrently), then one read of the codes."""
    urls = sorted({url for url in urls if is_allowed_destination(url)})
    if not urls:
        return {}
    try:
        with db.atomic():
            insert = (
                ShortLink.insert_many(
                    [
                        {
                            ShortLink.shop: shop_id,
                            ShortLink.campaign: campaign_id,
                            ShortLink.code: secrets.token_urlsafe(8)[:CODE_LENGTH],
                            ShortLink.url: url,
                        }
                        for url in urls
                    ]
                )
                .on_conflict(conflict_target=[ShortLink.campaign, ShortLink.url], action="nothing")
                .as_rowcount()
            )
            insert.execute()
            rows = (
                ShortLink.select(ShortLink.url, ShortLink.code)
                .where(ShortLink.campaign == campaign_id)
                .where(ShortLink.url.in_(urls))
                .tuples()
            )
            mapping = {url: short_url(base_url, code) for url, code in rows}
    except Exception:  # noqa: BLE001 - shortening is best effort by contract
        log.warning(
            "url shortening failed; sending long urls",
            exc_info=True,
            extra={"campaign_id": campaign_id, "shop_id": shop_id},
        )
        return {}
    return mapping


@dataclass(frozen=True)
class Followed:
    """Where a short link leads, or that it no longer does (disabled by an admin, or a
    destination minted before the rules of `is_allowed_destination`)."""

    url: str
    disabled: bool

    @property
    def location(self) -> str:
        """`url` as a Location header can carry it: ASCII, other characters percent-encoded
        (as a browser encodes them), what is already percent-encoded left as it is."""
        return quote(self.url, safe=_PRINTABLE_ASCII)


_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))


def follow(code: str, count: bool = True) -> Followed | None:
    """Where `code` leads (None for an unknown code), counting a click when `count` and the
    link is live. Disabling wins a race with a click: the count is a conditional update, and
    a link disabled in between answers as disabled, uncounted."""
    link = (
        ShortLink.select(ShortLink.url, ShortLink.disabled_at).where(ShortLink.code == code).first()
    )
    if link is None:
        return None
    if link.disabled_at is not None or not is_allowed_destination(link.url):
        return Followed(link.url, disabled=True)
    if count:
        counted = (
            ShortLink.update(clicks=ShortLink.clicks + 1)
            .where(ShortLink.code == code, ShortLink.disabled_at.is_null())
            .execute()
        )
        if not counted:
            return Followed(link.url, disabled=True)
    return Followed(link.url, disabled=False)


def disable(code: str) -> ShortLink | None:
    """Disable a short link for good (idempotent: the first time is kept); None when no link
    has this code. A disabled link answers 410 and counts no click."""
    with db.atomic():
        disabled = list(
            ShortLink.update(disabled_at=fn.coalesce(ShortLink.disabled_at, fn.now()))
            .where(ShortLink.code == code)
            .returning(ShortLink)
            .execute()
        )
    return disabled[0] if disabled else None


# Link previewers fetch every URL of a message to draw a card: a fetch by one is not a click.
# iMessage previews announce themselves as facebookexternalhit and Twitterbot.
_PREVIEWERS = re.compile(
    r"slackbot|facebookexternalhit|twitterbot|whatsapp|telegrambot|discordbot|linkedinbot"
    r"|googlebot|bingbot|applebot|skypeuripreview",
    re.IGNORECASE,
)


def is_link_previewer(user_agent: str | None) -> bool:
    """Whether a request with this User-Agent comes from a known link previewer or crawler."""
    if not user_agent:
        return False
    return _PREVIEWERS.search(user_agent) is not None


# Names that only mean something on the recipient's own machine or network, or nowhere:
# the special-use names of RFC 6761, 6762, 7686, 8375 and 9476, ICANN's reserved `internal`,
# and the private suffixes routers and intranets commonly use.
_LOCAL_NAMES = (
    "localhost",
    "localdomain",
    "local",
    "internal",
    "home.arpa",
    "test",
    "invalid",
    "onion",
    "alt",
    "lan",
    "home",
    "corp",
    "intranet",
)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A browser reads a host whose last label is a number (decimal, 0x hex, octal) as IPv4:
# "http://2130706433", "http://0x7f.1" and "http://127.1" are all 127.0.0.1 (WHATWG URL).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def is_allowed_destination(url: str) -> bool:
    """Whether a short link may lead to `url` (SPEC 6): `http`/`https`, no credentials, and a
    host name with at least two labels: no IP literal in any form, no localhost or other
    local-only name."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not one
        # A browser maps the host by UTS #46 (current Unicode) before anything else, which
        # turns characters newer than the `idna` codec's IDNA 2003 tables into ASCII: the
        # codec alone passes "127.0.0.\U0001fbf1" (a segmented digit one) as a name, which
        # a browser opens as 127.0.0.1.
        mapped = idna.uts46_remap(parts.hostname or "", std3_rules=False, transitional=False)
        host = mapped.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        return False
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc:
        return False
    if "[" in parts.netloc:
        return False  # an IP literal, "[v1.x]" (IPvFuture) too, which urlsplit unbrackets
    labels = host.lower().removesuffix(".").split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return False  # also every IPv6 literal (":"), and "%" (browsers decode it in hosts)
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return False
    name = ".".join(labels)
    return not any(name == local or name.endswith("." + local) for local in _LOCAL_NAMES)


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), b"unsubscribe:" + payload, hashlib.sha256).digest()[
        :_MAC_BYTES
    ]


def unsubscribe_token(secret: str, shop_id: int, contact_id: int) -> str:
    """A fixed-length token that names the contact and cannot be forged without the secret."""
    payload = _PAYLOAD.pack(shop_id, contact_id)
    return base64.urlsafe_b64encode(payload + _mac(secret, payload)).rstrip(b"=").decode()


def unsubscribe_url(base_url: str, secret: str, shop_id: int, contact_id: int) -> str:
    return f"{base_url}/u/{unsubscribe_token(secret, shop_id, contact_id)}"


def sample_unsubscribe_url(base_url: str) -> str:
    return f"{base_url}/u/{'x' * len(unsubscribe_token('x', 1, 1))}"


def read_unsubscribe_token(secret: str, token: str) -> tuple[int, int] | None:
    """(shop id, contact id) of a genuine token, else None."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return None
    # The decoder is lenient ('+' reads as '-', a last character's unused bits are ignored):
    # only the one canonical spelling of a token is that token.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
        return None
    payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if len(raw) != _PAYLOAD.size + _MAC_BYTES or not hmac.compare_digest(
        mac, _mac(secret, payload)
    ):
        return None
    return _PAYLOAD.unpack(payload)
