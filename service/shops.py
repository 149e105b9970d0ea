"""Shops (tenants) and their API keys. Only a SHA-256 of a key is stored."""
from __future__ import annotations

import hashlib
import secrets

import peewee as pw

from models import ApiKey, Shop
from models.database import db
from service.errors import InvalidInput

KEY_PREFIX = "ak_"


def hash_key(key: str) -> str:
    # Keys are 256-bit random: a plain SHA-256 cannot be brute-forced, and it is indexable.
    return hashlib.sha256(key.encode()).hexdigest()


def create_shop(domain: str, name: str, sender: str | None = None,
                timezone: str = "UTC") -> tuple[Shop, str]:
    """Create a shop and its first API key; return both (the key in clear, shown once)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with db.atomic():
            shop = Shop.create(domain=domain, name=name, sender=sender, timezone=timezone)
            ApiKey.create(shop=shop, key_hash=hash_key(key), prefix=key[:8])
    except pw.IntegrityError:
        raise InvalidInput(f"a shop with domain {domain!r} already exists", "domain") from None
    return shop, key


def shop_for_key(key: str) -> Shop | None:
    """The shop a (non-revoked) API key belongs to, or None."""
    return (
        Shop.select()
        .join(ApiKey)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_null())
        .first()
    )
