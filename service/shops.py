"""Shops (tenants). A new shop gets its first API key (`service/api_keys.py`)."""
from __future__ import annotations

import peewee as pw

from models import ApiKey, Shop
from models.database import db
from service import api_keys
from service.errors import InvalidInput


def create_shop(domain: str, name: str, sender: str | None = None,
                timezone: str = "UTC") -> tuple[Shop, str]:
    """Create a shop and its first API key; return both (the key in clear, shown once)."""
    key = api_keys.new_key()
    try:
        with db.atomic():
            shop = Shop.create(domain=domain, name=name, sender=sender, timezone=timezone)
            ApiKey.create(shop=shop, key_hash=api_keys.hash_key(key),
                          prefix=key[:api_keys.SHOWN_PREFIX_LENGTH])
    except pw.IntegrityError:
        raise InvalidInput(f"a shop with domain {domain!r} already exists", "domain") from None
    return shop, key
