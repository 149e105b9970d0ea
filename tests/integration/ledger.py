"""The money invariants of SPEC 3 and 4, checked against the database, and the small campaign
set-ups the reservation tests share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.database import fetchall
from service import audit, campaigns, contacts, credits, shops
from service.creation import batch_key
from service.enqueue import enqueue
from service.provider import Outcome, SendResult, Sms


def assert_books_balance(shop_id: int) -> dict[str, int]:
    """balance == top-ups - debits + refunds + adjustments, exactly, and never below zero;
    no reservation is active once its campaign can send no more; `available` is what the
    balance leaves after every reservation's outstanding part. Returns the totals by kind."""
    by_kind = dict(
        fetchall(
            "SELECT kind, sum(amount) FROM credit_transaction WHERE shop_id = %s GROUP BY kind",
            (shop_id,),
        )
    )
    totals = {
        kind: int(by_kind.get(kind, 0)) for kind in ("top-up", "debit", "refund", "adjustment")
    }
    balance = credits.summary(shop_id).balance
    assert balance == (
        totals["top-up"] + totals["debit"] + totals["refund"] + totals["adjustment"]
    )  # debits are negative rows
    assert balance >= 0
    # A cancelled campaign's reservation stays active while a call of it is in flight.
    outliving = fetchall(
        "SELECT c.id, c.status FROM credit_reservation r"
        " JOIN campaign c ON c.id = r.campaign_id"
        " WHERE r.shop_id = %s AND r.status = 'active'"
        "   AND c.status IN ('completed', 'failed', 'cancelled')"
        "   AND NOT EXISTS (SELECT 1 FROM campaign_recipient x"
        "                   WHERE x.campaign_id = c.id"
        "                     AND x.status = 'sending')",
        (shop_id,),
    )
    assert outliving == [], "an active reservation outlived its campaign"
    summary = credits.summary(shop_id)
    assert summary.available == summary.balance - summary.reserved >= 0
    return {**totals, "balance": balance}


def recipient_ids(campaign_id: int) -> list[int]:
    return [
        row[0]
        for row in fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s ORDER BY id", (campaign_id,)
        )
    ]


def statuses(campaign_id: int) -> dict[str, int]:
    return dict(
        fetchall(
            "SELECT status, count(*) FROM campaign_recipient WHERE campaign_id = %s"
            " GROUP BY status",
            (campaign_id,),
        )
    )


def reservation(campaign_id: int) -> tuple:
    """(status, amount, consumed, released) of the campaign's reservation."""
    return fetchall(
        "SELECT status, amount, consumed, released FROM credit_reservation WHERE campaign_id = %s",
        (campaign_id,),
    )[0]


def shop_with_contacts(domain: str, balance: int, count: int) -> tuple[int, list[int]]:
    """A shop with `balance` credits and `count` contacts: (shop id, contact ids)."""
    shop, _ = shops.create_shop(domain, domain, require_consent=False)
    credits.top_up(shop.id, balance, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id, [{"phone": f"+3069{i:08d}"} for i in range(count)], actor=audit.ADMIN
    )
    ids = [
        row[0]
        for row in fetchall("SELECT id FROM contact WHERE shop_id = %s ORDER BY id", (shop.id,))
    ]
    return shop.id, ids


@dataclass(frozen=True)
class Enqueued:
    shop_id: int
    campaign_id: int
    recipients: list[int]
    key: str  # the batch key of all its recipients (one batch of up to SEND_BATCH_SIZE)


def enqueue_campaign(
    settings, shop_id: int, contact_ids: Sequence[int], text: str = "Flash sale today"
) -> Enqueued:
    """A campaign of one-segment texts (no unsubscribe link) to `contact_ids`, enqueued."""
    campaign = campaigns.create(shop_id, "c", text, list(contact_ids), append_unsubscribe=False)
    enqueue(shop_id, campaign.id, settings, audit.ADMIN)
    ids = recipient_ids(campaign.id)
    return Enqueued(shop_id, campaign.id, ids, batch_key(campaign.id, ids))


class FakeProvider:
    """Accepts every message and records it; `during_call` runs while the call is in flight
    (a merchant's pause or cancel), `outcomes` forces the outcome of the first calls."""

    def __init__(self, during_call=None, outcomes: Sequence[Outcome] = ()) -> None:
        self.during_call = during_call
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    def _result(self, to: str, reference: str) -> SendResult:
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.ACCEPTED
        if outcome is Outcome.ACCEPTED:
            self.sent.append(to)
            return SendResult(outcome, provider_id=f"p-{reference}-{to}")
        if outcome is Outcome.NOT_SENT:
            return SendResult(outcome, reason="HTTP 429", retry_after_s=1)
        return SendResult(outcome, reason="read timeout")

    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        if self.during_call:
            self.during_call()
        return self._result(sms.to, sms.reference)

    def send_bulk(
        self, sender: str, to: Sequence[str], text: str, reference: str, callback: str | None
    ) -> list[SendResult]:
        if self.during_call:
            self.during_call()
        return [self._result(number, reference) for number in to]
