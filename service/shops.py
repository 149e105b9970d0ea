"""Shops (tenants). A new shop gets its first API key (`service/api_keys.py`)."""

from __future__ import annotations

import peewee as pw

from models import ApiKey, Shop
from models.database import db
from service import api_keys, audit
from service.audit import Actor
from service.errors import InvalidInput


def create_shop(
    domain: str,
    name: str,
    sender: str | None = None,
    timezone: str = "UTC",
    help_text: str | None = None,
    require_consent: bool = True,
    actor: Actor = audit.ADMIN,
) -> tuple[Shop, str]:
    """Create a shop and its first API key; return both (the key in clear, shown once).
    Without `help_text` the shop answers HELP with `default_help_text`; with
    `require_consent` (the default for new shops) its campaigns reach only contacts with
    consent. The key's issue is recorded for `actor`: the operator, who alone creates shops
    (the admin API, the demo)."""
    key = api_keys.new_key()
    try:
        with db.atomic():
            shop = Shop.create(
                domain=domain,
                name=name,
                sender=sender,
                timezone=timezone,
                help_text=help_text,
                require_consent=require_consent,
            )
            record = ApiKey.create(
                shop=shop,
                key_hash=api_keys.hash_key(key),
                prefix=key[: api_keys.SHOWN_PREFIX_LENGTH],
            )
            audit.record(
                actor,
                audit.Event(
                    shop.id,
                    "api_key",
                    "issued",
                    "the shop's first key",
                    subject_id=record.id,
                    detail={"prefix": record.prefix},
                ),
            )
    except pw.IntegrityError:
        raise InvalidInput(f"a shop with domain {domain!r} already exists", "domain") from None
    return shop, key


def default_help_text(name: str) -> str:
    """What a shop that wrote no help text answers to HELP: who is writing, and how to stop."""
    return f"{name}: marketing messages. Msg & data rates may apply. Reply STOP to unsubscribe."


def help_text(shop: Shop) -> str:
    """The shop's answer to HELP."""
    return shop.help_text or default_help_text(shop.name)


def by_domain(domain: str) -> Shop | None:
    """The shop of a Shopify shop domain (`example.myshopify.com`), case aside."""
    return Shop.select().where(pw.fn.lower(Shop.domain) == domain.strip().lower()).first()
