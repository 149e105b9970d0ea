"""Peewee models mirroring `models/migrations/*.sql` (the SQL files are the schema of record).

One model per table, column for column: `tests/integration/test_models_schema.py` compares
each model's fields with the migrated database (names, types, nullability, primary keys), so a
migration that changes a table fails the tests until its model follows. Every `bigserial`
primary key is a `BigAutoField`, so foreign keys to it are `bigint` like their columns.
"""

from __future__ import annotations

import peewee as pw
from playhouse.postgres_ext import ArrayField, BinaryJSONField, DateTimeTZField

from models.database import db
from models.expressions import IdArrayField


class Base(pw.Model):
    id = pw.BigAutoField()

    class Meta:
        database = db
        legacy_table_names = False


class Shop(Base):
    domain = pw.TextField(unique=True)
    name = pw.TextField()
    sender = pw.TextField(null=True)
    timezone = pw.TextField(default="UTC")
    credit_balance = pw.BigIntegerField(default=0)
    created_at = DateTimeTZField()
    help_text = pw.TextField(null=True)
    require_consent = pw.BooleanField(default=True)
    # Quiet hours, minutes after local midnight, [start, end); None: none (`service.quiet_hours`).
    quiet_start = pw.SmallIntegerField(null=True)
    quiet_end = pw.SmallIntegerField(null=True)
    frequency_cap = pw.IntegerField(null=True)  # messages per contact per 24 h; None: no cap


class ApiKey(Base):
    shop = pw.ForeignKeyField(Shop, backref="api_keys")
    key_hash = pw.TextField(unique=True)
    prefix = pw.TextField()
    created_at = DateTimeTZField()
    last_used_at = DateTimeTZField(null=True)
    revoked_at = DateTimeTZField(null=True)


class Contact(Base):
    shop = pw.ForeignKeyField(Shop)
    phone = pw.TextField(null=True)  # None once erased
    country = pw.TextField(null=True)
    first_name = pw.TextField(null=True)
    opted_out_at = DateTimeTZField(null=True)
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()
    consent_source = pw.TextField(null=True)
    consent_collected_at = DateTimeTZField(null=True)
    erased_at = DateTimeTZField(null=True)
    shopify_customer_id = pw.TextField(null=True)  # Shopify's customer id, when imported


class Suppression(Base):
    shop = pw.ForeignKeyField(Shop)
    phone = pw.TextField(null=True)  # None once erased: then only `phone_hash` names it
    source = pw.TextField()
    created_at = DateTimeTZField()
    phone_hash = pw.TextField(null=True)


class Campaign(Base):
    shop = pw.ForeignKeyField(Shop)
    name = pw.TextField()
    text = pw.TextField()
    contact_ids = IdArrayField(null=True, index=False)
    append_unsubscribe = pw.BooleanField(default=True)
    status = pw.TextField(default="draft")
    status_reason = pw.TextField(null=True)
    scheduled_at = DateTimeTZField(null=True)
    started_at = DateTimeTZField(null=True)
    finished_at = DateTimeTZField(null=True)
    last_progress_at = DateTimeTZField(null=True)
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()
    # Recipients created in chunks after the enqueue (`service.creation`; migration 0010).
    creation_cursor = pw.BigIntegerField(null=True)
    creation_until = pw.BigIntegerField(null=True)
    creation_reserve = pw.BigIntegerField(default=0)
    recipients_created_at = DateTimeTZField(null=True)
    creation_progress_at = DateTimeTZField(null=True)


class SendBatch(Base):
    campaign = pw.ForeignKeyField(Campaign)
    key = pw.TextField(unique=True)
    recipient_ids = ArrayField(pw.BigIntegerField, index=False)
    reserved = pw.IntegerField()
    state = pw.TextField(default="pending")
    publish_count = pw.IntegerField(default=0)
    created_at = DateTimeTZField()
    published_at = DateTimeTZField(null=True)
    finished_at = DateTimeTZField(null=True)
    waiting = pw.IntegerField(default=0)  # recipients waiting for quiet hours to end
    not_before = DateTimeTZField(null=True)  # the earliest of their openings
    waiting_until = DateTimeTZField(null=True)  # the latest of their openings


class CampaignRecipient(Base):
    campaign = pw.ForeignKeyField(Campaign)
    shop_id = pw.BigIntegerField()
    contact_id = pw.BigIntegerField()
    phone = pw.TextField(null=True)  # None once erased
    country = pw.TextField(null=True)
    first_name = pw.TextField(null=True)
    status = pw.TextField(default="pending")
    batch_key = pw.TextField(null=True)
    mitto_message_id = pw.TextField(null=True)
    delivery_status = pw.TextField(null=True)
    error = pw.TextField(null=True)
    claimed_at = DateTimeTZField(null=True)
    sent_at = DateTimeTZField(null=True)
    delivery_at = DateTimeTZField(null=True)
    updated_at = DateTimeTZField()


class CampaignRecipientDelta(Base):
    """What one statement changed in one campaign's recipient counts, by status and by
    delivery status (written by triggers only; migration 0011)."""

    campaign_id = pw.BigIntegerField()
    pending = pw.BigIntegerField(default=0)
    sending = pw.BigIntegerField(default=0)
    sent = pw.BigIntegerField(default=0)
    failed = pw.BigIntegerField(default=0)
    skipped = pw.BigIntegerField(default=0)
    queued = pw.BigIntegerField(default=0)  # by delivery status: Queued
    delivery_sent = pw.BigIntegerField(default=0)  # Sent
    delivered = pw.BigIntegerField(default=0)
    undelivered = pw.BigIntegerField(default=0)
    delivery_failed = pw.BigIntegerField(default=0)  # Failed
    expired = pw.BigIntegerField(default=0)


class CampaignRecipientTotal(Base):
    """The deltas folded so far, one row per campaign (`service.recipient_counts`)."""

    id = None
    campaign_id = pw.BigIntegerField(primary_key=True)
    pending = pw.BigIntegerField(default=0)
    sending = pw.BigIntegerField(default=0)
    sent = pw.BigIntegerField(default=0)
    failed = pw.BigIntegerField(default=0)
    skipped = pw.BigIntegerField(default=0)
    queued = pw.BigIntegerField(default=0)  # by delivery status: Queued
    delivery_sent = pw.BigIntegerField(default=0)  # Sent
    delivered = pw.BigIntegerField(default=0)
    undelivered = pw.BigIntegerField(default=0)
    delivery_failed = pw.BigIntegerField(default=0)  # Failed
    expired = pw.BigIntegerField(default=0)


class DeliveryReport(Base):
    provider_id = pw.TextField(null=True)
    reference = pw.TextField(null=True)
    to = pw.TextField(null=True)
    status = pw.TextField()
    status_code = pw.IntegerField(null=True)
    reported_at = DateTimeTZField(null=True)
    received_at = DateTimeTZField()
    applied_at = DateTimeTZField(null=True)
    examined_at = DateTimeTZField(null=True)


class CreditTransaction(Base):
    shop = pw.ForeignKeyField(Shop)
    kind = pw.TextField()
    amount = pw.BigIntegerField()
    idempotency_key = pw.TextField(unique=True)
    campaign_id = pw.BigIntegerField(null=True)
    recipient_id = pw.BigIntegerField(null=True)
    note = pw.TextField(null=True)
    created_at = DateTimeTZField()


class CreditReservation(Base):
    shop = pw.ForeignKeyField(Shop)
    campaign = pw.ForeignKeyField(Campaign, unique=True)
    key = pw.TextField(unique=True)
    amount = pw.BigIntegerField()
    consumed = pw.BigIntegerField(default=0)
    status = pw.TextField(default="active")  # active | held | released (0005)
    created_at = DateTimeTZField()
    released_at = DateTimeTZField(null=True)
    released = pw.BigIntegerField(default=0)


class MessageLog(Base):
    recipient_id = pw.BigIntegerField(primary_key=True)
    shop_id = pw.BigIntegerField()
    campaign_id = pw.BigIntegerField()
    provider_id = pw.TextField()
    text = pw.TextField(null=True)  # None once erased
    segments = pw.IntegerField()
    country = pw.TextField(null=True)
    created_at = DateTimeTZField()


class ShortLink(Base):
    shop = pw.ForeignKeyField(Shop)
    campaign = pw.ForeignKeyField(Campaign)
    code = pw.TextField(unique=True)
    url = pw.TextField()
    clicks = pw.BigIntegerField(default=0)
    created_at = DateTimeTZField()
    disabled_at = DateTimeTZField(null=True)


class JobRun(Base):
    """One run of a clock job per (job, slot); `scheduler/runs.py` claims and records it."""

    job = pw.TextField()
    slot = pw.BigIntegerField()
    epoch = pw.BigIntegerField()
    holder = pw.TextField()
    started_at = DateTimeTZField()
    finished_at = DateTimeTZField(null=True)
    ok = pw.BooleanField(null=True)
    result = BinaryJSONField(null=True, index=False)

    class Meta:
        primary_key = pw.CompositeKey("job", "slot")


class IdempotencyKey(Base):
    shop = pw.ForeignKeyField(Shop)
    key = pw.TextField()
    fingerprint = pw.TextField()
    state = pw.TextField(default="in_flight")
    response_status = pw.IntegerField(null=True)
    response_body = pw.BlobField(null=True)
    response_type = pw.TextField(null=True)
    created_at = DateTimeTZField()
    finished_at = DateTimeTZField(null=True)

    class Meta:
        primary_key = pw.CompositeKey("shop", "key")


class ConsentEvent(Base):
    """One opt-in or opt-out of a contact; append-only (a trigger refuses other changes)."""

    shop = pw.ForeignKeyField(Shop)
    contact = pw.ForeignKeyField(Contact)
    kind = pw.TextField()
    source = pw.TextField()
    consent_source = pw.TextField(null=True)
    collected_at = DateTimeTZField()
    proof = pw.TextField(null=True)
    created_at = DateTimeTZField()


class InboundMessage(Base):
    shop = pw.ForeignKeyField(Shop)
    message_key = pw.TextField()
    provider_id = pw.TextField(null=True)
    phone = pw.TextField(null=True)  # None once erased
    sender = pw.TextField()
    text = pw.TextField(null=True)  # None once erased
    keyword = pw.TextField(null=True)
    received_at = DateTimeTZField()
    created_at = DateTimeTZField()


class InboundReply(Base):
    """The one answer to an inbound STOP, START or HELP; its row is the claim to send it."""

    message_key = pw.TextField(primary_key=True)
    sender = pw.TextField()
    text = pw.TextField()
    segments = pw.IntegerField()
    state = pw.TextField(default="sending")
    provider_id = pw.TextField(null=True)
    created_at = DateTimeTZField()
    finished_at = DateTimeTZField(null=True)


class DataExport(Base):
    shop = pw.ForeignKeyField(Shop)
    request_key = pw.TextField()
    phone_hash = pw.TextField(null=True)
    shopify_customer_id = pw.TextField(null=True)
    document = BinaryJSONField(index=False)
    created_at = DateTimeTZField()


class AuditEvent(Base):
    """One recorded change and its actor; append-only (triggers refuse UPDATE, DELETE and
    TRUNCATE). No personal data: contacts by id, numbers by their suppression digest."""

    shop = pw.ForeignKeyField(Shop)
    campaign_id = pw.BigIntegerField(null=True)
    at = DateTimeTZField()
    actor_kind = pw.TextField()
    actor_name = pw.TextField(null=True)
    actor_epoch = pw.BigIntegerField(null=True)
    subject = pw.TextField()
    subject_id = pw.BigIntegerField(null=True)
    action = pw.TextField()
    from_status = pw.TextField(null=True)
    to_status = pw.TextField(null=True)
    amount = pw.BigIntegerField(null=True)
    detail = BinaryJSONField(null=True, index=False)
    reason = pw.TextField()


class TestSend(Base):
    """One message of a campaign's text to one number (`service.test_sends`)."""

    __test__ = False  # not a pytest class, whatever its name

    shop = pw.ForeignKeyField(Shop)
    campaign = pw.ForeignKeyField(Campaign)
    contact_id = pw.BigIntegerField(null=True)
    phone = pw.TextField(null=True)  # None once erased
    sender = pw.TextField()
    text = pw.TextField(null=True)  # None once erased
    segments = pw.IntegerField()
    status = pw.TextField(default="queued")
    error = pw.TextField(null=True)
    provider_id = pw.TextField(null=True)
    attempts = pw.IntegerField(default=0)
    created_at = DateTimeTZField()
    claimed_at = DateTimeTZField(null=True)
    finished_at = DateTimeTZField(null=True)


ALL = (
    Shop,
    ApiKey,
    Contact,
    Suppression,
    Campaign,
    SendBatch,
    CampaignRecipient,
    CampaignRecipientDelta,
    CampaignRecipientTotal,
    DeliveryReport,
    CreditTransaction,
    CreditReservation,
    MessageLog,
    ShortLink,
    JobRun,
    IdempotencyKey,
    ConsentEvent,
    InboundMessage,
    InboundReply,
    DataExport,
    AuditEvent,
    TestSend,
)
