"""Short links (`/r/{code}`) and signed unsubscribe tokens (`/u/{token}`). SPEC 6."""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import struct
from typing import Iterable

from models.database import db, execute_many, fetchall, fetchone

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
    Best effort: on any database error the caller gets no mapping and keeps the long URLs."""
    urls = sorted(set(urls))
    if not urls:
        return {}
    try:
        with db.atomic():
            execute_many(
                "INSERT INTO short_link (shop_id, campaign_id, code, url) VALUES %s"
                " ON CONFLICT (campaign_id, url) DO NOTHING",
                [(shop_id, campaign_id, secrets.token_urlsafe(8)[:CODE_LENGTH], url)
                 for url in urls],
            )
            rows = fetchall("SELECT url, code FROM short_link WHERE campaign_id = %s"
                            " AND url = ANY(%s)", (campaign_id, urls))
    except Exception:  # noqa: BLE001 - shortening is best effort by contract
        log.warning("url shortening failed; sending long urls", exc_info=True,
                    extra={"campaign_id": campaign_id, "shop_id": shop_id})
        return {}
    return {url: short_url(base_url, code) for url, code in rows}


def follow(code: str) -> str | None:
    """Count a click and return the long URL (None for an unknown code)."""
    row = fetchone("UPDATE short_link SET clicks = clicks + 1 WHERE code = %s RETURNING url",
                   (code,))
    return row[0] if row else None


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), b"unsubscribe:" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


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
    payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size:]
    if len(raw) != _PAYLOAD.size + _MAC_BYTES or not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    return _PAYLOAD.unpack(payload)
