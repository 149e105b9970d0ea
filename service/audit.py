"""The audit trail (SPEC 11): every campaign status change, credit movement, API key issued or
revoked and suppression change, with who did it, when and why.

Each event is written by the service that makes the change, inside its transaction, so the
change and its record commit together or not at all. The table is append-only in PostgreSQL
(`models/migrations/0007_audit.sql`). Events hold no personal data: contacts by id, numbers by
their suppression digest (`suppressions.phone_digest`), so erasure never rewrites them.

Who acted is an explicit argument of every service function that changes these things (an
`Actor`), passed down from the API resource, the webhook, the clock job or the worker.

Per-message debits are not events here: the ledger (`credit_transaction`) already has one
append-only row per message, keyed by recipient, with its campaign. The trail records what
brackets them (the reservation made, grown, held and released) and every other movement: top-ups,
refunds and adjustments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import Json

from models import AuditEvent
from models.database import execute_many

KINDS = ("key", "admin", "webhook", "page", "clock", "worker")
SUBJECTS = ("campaign", "credits", "reservation", "api_key", "suppression", "test_send")


@dataclass(frozen=True)
class Actor:
    """Who made a change: `kind` (one of KINDS), its `name` (the API key's id, the webhook's
    sender, the page, the clock's job) and, for a clock job, the leader's fencing `epoch`."""

    kind: str
    name: str | None = None
    epoch: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown actor kind {self.kind!r}")

    @classmethod
    def key(cls, key_id: int) -> Actor:
        """A shop's API key."""
        return cls("key", str(key_id))

    @classmethod
    def clock(cls, job: str, epoch: int) -> Actor:
        """A clock job, run under the leadership of `epoch`."""
        return cls("clock", job, epoch)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "epoch": self.epoch}


ADMIN = Actor("admin")
WORKER = Actor("worker")
PROVIDER_WEBHOOK = Actor("webhook", "provider")
SHOPIFY_WEBHOOK = Actor("webhook", "shopify")
UNSUBSCRIBE_PAGE = Actor("page", "unsubscribe")


@dataclass(frozen=True)
class Event:
    """One change to record (`subject`: one of SUBJECTS)."""

    shop_id: int
    subject: str
    action: str
    reason: str
    campaign_id: int | None = None
    subject_id: int | None = None
    from_status: str | None = None
    to_status: str | None = None
    amount: int | None = None
    detail: Mapping[str, Any] | None = None


def record(actor: Actor, *events: Event) -> int:
    """Append `events` by `actor`; call it inside the transaction of the change."""
    return record_all(actor, events)


def record_all(actor: Actor, events: Iterable[Event]) -> int:
    """Append every event by `actor` in few INSERTs (inside the transaction of the change).

    SQL (`execute_values`): an erasure of a shop records an event per number, 50,000 for a
    shop of 50,000 contacts, which Peewee's insert_many took seconds of Python to build."""
    rows = [
        (
            event.shop_id,
            event.campaign_id,
            actor.kind,
            actor.name,
            actor.epoch,
            event.subject,
            event.subject_id,
            event.action,
            event.from_status,
            event.to_status,
            event.amount,
            Json(dict(event.detail)) if event.detail is not None else None,
            event.reason,
        )
        for event in events
    ]
    execute_many(
        "INSERT INTO audit_event (shop_id, campaign_id, actor_kind, actor_name, actor_epoch,"
        " subject, subject_id, action, from_status, to_status, amount, detail, reason)"
        " VALUES %s",
        rows,
    )
    return len(rows)


def campaign_status(
    shop_id: int, campaign_id: int, from_status: str | None, to_status: str, reason: str
) -> Event:
    """A campaign moved from `from_status` to `to_status`."""
    return Event(
        shop_id,
        "campaign",
        "status",
        reason,
        campaign_id=campaign_id,
        subject_id=campaign_id,
        from_status=from_status,
        to_status=to_status,
    )


def _as_answer(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "shop_id": row["shop"],
        "campaign_id": row["campaign_id"],
        "at": row["at"],
        "actor": {
            "kind": row["actor_kind"],
            "name": row["actor_name"],
            "epoch": row["actor_epoch"],
        },
        "subject": row["subject"],
        "subject_id": row["subject_id"],
        "action": row["action"],
        "from_status": row["from_status"],
        "to_status": row["to_status"],
        "amount": row["amount"],
        "detail": row["detail"],
        "reason": row["reason"],
    }


def _page(where: Any, limit: int, after: int | None) -> list[dict[str, Any]]:
    query = AuditEvent.select().where(where)
    if after is not None:
        query = query.where(AuditEvent.id > after)
    return [_as_answer(row) for row in query.order_by(AuditEvent.id).limit(limit).dicts()]


def campaign_events(campaign_id: int, limit: int, after: int | None) -> list[dict[str, Any]]:
    """One keyset page of a campaign's events, in the order they were recorded (the caller
    checks the campaign is the shop's)."""
    return _page(AuditEvent.campaign_id == campaign_id, limit, after)


def shop_events(shop_id: int | None, limit: int, after: int | None) -> list[dict[str, Any]]:
    """One keyset page of the events of a shop (None: of every shop), in recording order."""
    where = AuditEvent.shop == shop_id if shop_id is not None else AuditEvent.id.is_null(False)
    return _page(where, limit, after)
