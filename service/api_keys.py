"""API keys (SPEC 3, 5): issued per shop, shown once, stored as a SHA-256, revocable.

Every request the API limits admit looks its key up in PostgreSQL (one index probe on
`key_hash`), so a revoked key stops working at once in every web process: there is no cache to
expire. (Redis maps a key's hash to its shop for the limits only, `service/infra/api_rate_limit`;
that mapping authenticates nothing.) `last_used_at` is
written at most once a minute per key (a conditional update), so a busy key costs no write per
request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import peewee as pw

from models import ApiKey
from models.database import db
from service import audit
from service.audit import Actor
from service.errors import NotFound

KEY_PREFIX = "ak_"
SHOWN_PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = "1 minute"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the shop and the key it used."""

    shop_id: int
    key_id: int


def hash_key(key: str) -> str:
    # Keys are 256-bit random: a plain SHA-256 cannot be brute-forced, and it is indexable.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def issue_key(shop_id: int, actor: Actor, reason: str = "issued") -> tuple[ApiKey, str]:
    """A new key for the shop, recorded for `actor`; the clear key is returned once and
    never stored."""
    key = new_key()
    with db.atomic():
        record = ApiKey.create(
            shop=shop_id, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX_LENGTH]
        )
        audit.record(
            actor,
            audit.Event(
                shop_id,
                "api_key",
                "issued",
                reason,
                subject_id=record.id,
                detail={"prefix": record.prefix},
            ),
        )
    return record, key


def list_keys(shop_id: int) -> list[dict[str, object]]:
    """Every key of the shop, newest first, without anything that could authenticate."""
    rows = (
        ApiKey.select(
            ApiKey.id, ApiKey.prefix, ApiKey.created_at, ApiKey.last_used_at, ApiKey.revoked_at
        )
        .where(ApiKey.shop == shop_id)
        .order_by(ApiKey.id.desc())
        .dicts()
    )
    return list(rows)


def revoke_key(shop_id: int, key_id: int, actor: Actor) -> datetime:
    """Revoke one key of the shop (idempotent: revoking again keeps the first time, and
    records nothing)."""
    with db.atomic():
        revoked = (
            ApiKey.update(revoked_at=pw.fn.now())
            .where(ApiKey.id == key_id, ApiKey.shop == shop_id, ApiKey.revoked_at.is_null())
            .execute()
        )
        if revoked:
            audit.record(
                actor, audit.Event(shop_id, "api_key", "revoked", "revoked", subject_id=key_id)
            )
        revoked_at = (
            ApiKey.select(ApiKey.revoked_at)
            .where(ApiKey.id == key_id, ApiKey.shop == shop_id)
            .scalar()
        )
    if revoked_at is None:
        raise NotFound(f"key {key_id} does not exist")
    return revoked_at


def authenticate(key: str) -> Principal | None:
    """The shop and key a valid (not revoked) API key names, or None."""
    row = (
        ApiKey.select(
            ApiKey.id,
            ApiKey.shop,
            ApiKey.last_used_at,
            pw.SQL(f"now() - interval '{LAST_USED_RESOLUTION}'"),
        )
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_null())
        .tuples()
        .first()
    )
    if row is None:
        return None
    key_id, shop_id, last_used_at, stale_before = row
    if last_used_at is None or last_used_at < stale_before:
        (ApiKey.update(last_used_at=pw.fn.now()).where(ApiKey.id == key_id).execute())
    return Principal(shop_id=shop_id, key_id=key_id)
