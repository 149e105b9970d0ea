"""Shops (tenants). A new shop gets its first API key (`service/api_keys.py`). Its compliance
settings (SPEC 11): quiet hours (`service.quiet_hours`) and the frequency cap
(`service.frequency`), set at creation and changed by the operator."""

from __future__ import annotations

from typing import Any

import peewee as pw

from models import ApiKey, Shop
from models.database import db
from service import api_keys, audit
from service.audit import Actor
from service.errors import InvalidInput, NotFound
from service.infra.config import parse_clock_time
from service.quiet_hours import QuietHours, of_shop

# `update_settings`' "leave as it is": None means "none" there.
UNCHANGED: Any = object()


def create_shop(
    domain: str,
    name: str,
    sender: str | None = None,
    timezone: str = "UTC",
    help_text: str | None = None,
    require_consent: bool = True,
    quiet_hours: QuietHours | None = None,
    frequency_cap: int | None = None,
    actor: Actor = audit.ADMIN,
) -> tuple[Shop, str]:
    """Create a shop and its first API key; return both (the key in clear, shown once).
    Without `help_text` the shop answers HELP with `default_help_text`; with
    `require_consent` (the default for new shops) its campaigns reach only contacts with
    consent. `quiet_hours` and `frequency_cap` are as given (None: none): the product's
    default quiet hours are the admin API's (QUIET_HOURS_DEFAULT), not this function's. The
    key's issue is recorded for `actor`: the operator, who alone creates shops (the admin
    API, the demo)."""
    check_compliance(quiet_hours, frequency_cap)
    key = api_keys.new_key()
    try:
        with db.atomic():
            shop = Shop.create(
                domain=domain.lower(),  # a host name has no case (migration 0013)
                name=name,
                sender=sender,
                timezone=timezone,
                help_text=help_text,
                require_consent=require_consent,
                quiet_start=quiet_hours.start if quiet_hours else None,
                quiet_end=quiet_hours.end if quiet_hours else None,
                frequency_cap=frequency_cap,
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
    """The shop of a Shopify shop domain (`example.myshopify.com`), case aside: at most one,
    as no two shops' domains differ only in case (migration 0013)."""
    return Shop.get_or_none(pw.fn.lower(Shop.domain) == domain.strip().lower())


def quiet_hours_from(body: dict[str, str] | None) -> QuietHours | None:
    """Quiet hours as the API writes them (`{"start": "21:00", "end": "08:00"}`, or null)."""
    if body is None:
        return None
    try:
        return QuietHours(parse_clock_time(body["start"]), parse_clock_time(body["end"]))
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInput(f"quiet_hours: {error}", "quiet_hours") from None


def check_compliance(quiet_hours: QuietHours | None, frequency_cap: int | None) -> None:
    if quiet_hours is not None and quiet_hours.start == quiet_hours.end:
        raise InvalidInput("quiet_hours must start and end at different times", "quiet_hours")
    if frequency_cap is not None and frequency_cap < 1:
        raise InvalidInput("frequency_cap must be at least 1 (null: no cap)", "frequency_cap")


def compliance_settings(shop: Shop) -> dict[str, Any]:
    """The shop's quiet hours and frequency cap as the API shows them."""
    quiet = of_shop(shop.quiet_start, shop.quiet_end)
    return {
        "quiet_hours": quiet.as_dict() if quiet else None,
        "frequency_cap": shop.frequency_cap,
    }


def update_settings(
    shop_id: int,
    timezone: str = UNCHANGED,
    quiet_hours: QuietHours | None = UNCHANGED,
    frequency_cap: int | None = UNCHANGED,
) -> Shop:
    """Change the shop's timezone, quiet hours (None: none) or frequency cap (None: none);
    what is not given stays. Batches already queued apply the change at their next
    delivery. Returns the shop."""
    changes: dict[Any, Any] = {}
    if timezone is not UNCHANGED:
        changes[Shop.timezone] = timezone
    if quiet_hours is not UNCHANGED:
        check_compliance(quiet_hours, None)
        changes[Shop.quiet_start] = quiet_hours.start if quiet_hours else None
        changes[Shop.quiet_end] = quiet_hours.end if quiet_hours else None
    if frequency_cap is not UNCHANGED:
        check_compliance(None, frequency_cap)
        changes[Shop.frequency_cap] = frequency_cap
    if changes and not Shop.update(changes).where(Shop.id == shop_id).execute():
        raise NotFound(f"shop {shop_id} does not exist")
    shop = Shop.get_or_none(Shop.id == shop_id)
    if shop is None:
        raise NotFound(f"shop {shop_id} does not exist")
    return shop
