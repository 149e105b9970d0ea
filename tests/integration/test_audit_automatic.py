"""The audit trail of what no merchant asked for (SPEC 11): a scheduled launch, a scheduled
campaign failing or expiring, a campaign finished by the worker, a reservation settled by the
reconciler, each recorded with its actor (the clock's job and epoch, or the worker). On real
PostgreSQL, with the real `BatchSender` and a fake provider."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from models import AuditEvent
from service import audit, campaigns, contacts, delivery, reconcile, scheduling, shops
from service.infra.call_slots import CallSlots
from service.sending import claim_recipients
from service.windows import BatchSender
from tests.integration.ledger import FakeProvider, enqueue_campaign, shop_with_contacts
from tests.integration.test_reservations import accept, send_all

LAUNCHER = audit.Actor.clock("launch_scheduled", 42)
RECONCILER = audit.Actor.clock("reconcile", 43)


def trail(campaign_id: int) -> list[tuple]:
    """(subject, from, to, actor kind, actor name, epoch) of each event of the campaign."""
    return list(
        AuditEvent.select(
            AuditEvent.subject,
            AuditEvent.from_status,
            AuditEvent.to_status,
            AuditEvent.actor_kind,
            AuditEvent.actor_name,
            AuditEvent.actor_epoch,
        )
        .where(AuditEvent.campaign_id == campaign_id)
        .order_by(AuditEvent.id)
        .tuples()
    )


def scheduled(shop_id: int, when, contact_ids=None) -> int:
    campaign = campaigns.create(shop_id, "c", "Sale today", contact_ids, append_unsubscribe=False)
    campaigns.schedule(shop_id, campaign.id, when, when - timedelta(days=1), audit.Actor.key(1))
    return campaign.id


@pytest.fixture
def calls():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown()


def test_the_clock_launches_fails_and_expires_scheduled_campaigns_under_its_epoch(db, settings):
    # Given a due campaign, one of a shop without credits, and one long overdue
    now = scheduling.database_now()
    shop_id, contact_ids = shop_with_contacts("clock.example", 10, 2)
    poor, _ = shops.create_shop("poor.example", "poor", require_consent=False)
    contacts.import_contacts(poor.id, [{"phone": "+306900000009"}], actor=audit.ADMIN)
    due = scheduled(shop_id, now - timedelta(seconds=1))
    unpaid = scheduled(poor.id, now - timedelta(seconds=1))
    overdue = scheduled(shop_id, now - timedelta(milliseconds=settings.schedule_grace_ms + 60_000))

    # When the clock's launch job runs
    report = scheduling.launch_due_campaigns(settings, LAUNCHER, now=now)

    # Then each change after the merchant's scheduling is the clock's, with its epoch
    assert (report.launched, list(report.failed), report.expired) == ([due], [unpaid], [overdue])
    merchant = ("key", "1", None)
    clock = ("clock", "launch_scheduled", 42)
    assert trail(due) == [
        ("campaign", "draft", "scheduled", *merchant),
        ("campaign", "scheduled", "sending", *clock),
        ("reservation", None, "active", *clock),
    ]
    assert trail(unpaid) == [
        ("campaign", "draft", "scheduled", *merchant),
        ("campaign", "scheduled", "failed", *clock),
    ]
    assert trail(overdue) == [
        ("campaign", "draft", "scheduled", *merchant),
        ("campaign", "scheduled", "failed", *clock),
    ]
    # ... and its reason is the one the campaign shows
    for campaign_id in (unpaid, overdue):
        recorded = (
            AuditEvent.select(AuditEvent.reason)
            .where((AuditEvent.campaign_id == campaign_id) & (AuditEvent.to_status == "failed"))
            .scalar()
        )
        assert (
            recorded
            == campaigns.get(
                shop_id if campaign_id == overdue else poor.id, campaign_id
            ).status_reason
        )
        assert recorded.startswith("not sent: ")


def test_the_worker_finishes_a_campaign_and_releases_its_reservation(db, settings, calls):
    # Given a campaign whose every message was sent
    shop_id, contact_ids = shop_with_contacts("worker.example", 10, 3)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    send_all(
        BatchSender(settings, FakeProvider(), calls, CallSlots(4)), sending.campaign_id, shop_id
    )

    # When the worker refreshes its status
    assert delivery.refresh_campaign(sending.campaign_id, settings, audit.WORKER) == "completed"

    # Then completion and the release are the worker's; the debits are in the ledger only
    assert trail(sending.campaign_id)[2:] == [
        ("campaign", "sending", "completed", "worker", None, None),
        ("reservation", "active", "released", "worker", None, None),
    ]
    credit_events = AuditEvent.select(AuditEvent.action).where(AuditEvent.subject == "credits")
    assert [e.action for e in credit_events] == ["top_up"]


def test_the_reconciler_settles_a_cancelled_campaign_under_its_epoch(db, settings):
    # Given a cancelled campaign whose 2 calls in flight were answered after the cancel
    shop_id, contact_ids = shop_with_contacts("reconcile.example", 10, 5)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    claim_recipients(sending.campaign_id, sending.recipients[:2], sending.key)
    campaigns.cancel(shop_id, sending.campaign_id, settings, audit.Actor.key(7))
    accept(shop_id, sending.campaign_id, sending.recipients[:2])

    # When the clock's reconcile job runs (twice: the second finds nothing to do)
    reconcile.reconcile(settings, RECONCILER)
    reconcile.reconcile(settings, RECONCILER)

    # Then the merchant cancelled and released the unsent part; the clock released the rest
    events = (
        AuditEvent.select()
        .where(AuditEvent.campaign_id == sending.campaign_id)
        .order_by(AuditEvent.id)
    )
    assert [
        (e.subject, e.from_status, e.to_status, e.amount, e.actor_kind, e.actor_epoch)
        for e in events
    ] == [
        ("campaign", "draft", "sending", None, "admin", None),
        ("reservation", None, "active", 5, "admin", None),
        ("campaign", "sending", "cancelled", None, "key", None),
        ("reservation", "active", "active", 3, "key", None),
        ("reservation", "active", "released", 0, "clock", 43),
    ]
