-- Astronote schema, version 1. Semantics: SPEC section 3.

CREATE TABLE shop (
    id              bigserial PRIMARY KEY,
    domain          text NOT NULL UNIQUE,
    name            text NOT NULL,
    sender          text,
    timezone        text NOT NULL DEFAULT 'UTC',
    -- Cached sum of the ledger, updated in the same transaction as every ledger row.
    credit_balance  bigint NOT NULL DEFAULT 0 CHECK (credit_balance >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_key (
    id          bigserial PRIMARY KEY,
    shop_id     bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    key_hash    text NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_key_shop ON api_key (shop_id);

CREATE TABLE contact (
    id            bigserial PRIMARY KEY,
    shop_id       bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    phone         text NOT NULL,
    -- ISO region of the number, known when it is parsed at import (for message reporting).
    country       text,
    first_name    text,
    opted_out_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, phone)
);
CREATE INDEX contact_shop_id ON contact (shop_id, id);

CREATE TABLE suppression (
    id          bigserial PRIMARY KEY,
    shop_id     bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    phone       text NOT NULL,
    source      text NOT NULL CHECK (source IN ('link', 'reply', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, phone)
);

CREATE TABLE campaign (
    id                  bigserial PRIMARY KEY,
    shop_id             bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    name                text NOT NULL,
    text                text NOT NULL,
    contact_ids         bigint[],
    append_unsubscribe  boolean NOT NULL DEFAULT true,
    status              text NOT NULL DEFAULT 'draft' CHECK (status IN
                        ('draft', 'scheduled', 'sending', 'paused', 'completed', 'failed', 'cancelled')),
    status_reason       text,
    scheduled_at        timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    last_progress_at    timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_shop_id ON campaign (shop_id, id);
CREATE INDEX campaign_status ON campaign (status) WHERE status IN ('scheduled', 'sending', 'paused');

CREATE TABLE send_batch (
    id             bigserial PRIMARY KEY,
    campaign_id    bigint NOT NULL REFERENCES campaign (id) ON DELETE CASCADE,
    key            text NOT NULL UNIQUE,
    recipient_ids  bigint[] NOT NULL,
    -- Upper bound of this batch's cost, its part of the campaign's reservation.
    reserved       integer NOT NULL,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'published', 'finished')),
    publish_count  integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    finished_at    timestamptz
);
CREATE INDEX send_batch_unfinished ON send_batch (campaign_id) WHERE state <> 'finished';

CREATE TABLE campaign_recipient (
    id                bigserial PRIMARY KEY,
    -- No foreign key: its check is a trigger per row, 1.1 s of the 2.9 s it took to insert
    -- 100,000 recipients (measured). Rows are only ever inserted by INSERT ... SELECT for a
    -- campaign the same transaction has just locked, and campaigns are never deleted.
    campaign_id       bigint NOT NULL,
    shop_id           bigint NOT NULL,
    contact_id        bigint NOT NULL,
    -- Snapshot at enqueue: the reservation was computed from these, so the send uses them.
    phone             text NOT NULL,
    country           text,
    first_name        text,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN
                      ('pending', 'sending', 'sent', 'failed', 'skipped')),
    batch_key         text,
    mitto_message_id  text,
    delivery_status   text,
    error             text,
    claimed_at        timestamptz,
    sent_at           timestamptz,
    delivery_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, contact_id)
) WITH (fillfactor = 60);
-- No index covers status: the claim (pending -> sending) then changes no indexed column and,
-- with the free space fillfactor leaves, is a HOT update that writes no index entry. Queries
-- by status scan one campaign's rows through (campaign_id, contact_id). PostgreSQL did
-- ~0.4 ms of work per recipient on the 100,000-recipient benchmark before this; see
-- bench/RESULTS.md. Nor is there a partial index on status = 'sending': every recipient
-- passes through it, it fills with dead entries during a send, and the planner then prefers
-- it to the primary key in the per-batch updates (measured: 175 ms instead of 4 ms).
CREATE UNIQUE INDEX campaign_recipient_message ON campaign_recipient (mitto_message_id)
    WHERE mitto_message_id IS NOT NULL;

CREATE TABLE delivery_report (
    id           bigserial PRIMARY KEY,
    provider_id  text,
    reference    text,
    "to"         text,
    status       text NOT NULL,
    status_code  integer,
    reported_at  timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz
);
CREATE INDEX delivery_report_unapplied ON delivery_report (id) WHERE applied_at IS NULL;
CREATE INDEX delivery_report_provider ON delivery_report (provider_id);
CREATE INDEX delivery_report_reference ON delivery_report (reference, "to");

CREATE TABLE credit_transaction (
    id               bigserial PRIMARY KEY,
    shop_id          bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('top-up', 'debit', 'refund', 'adjustment')),
    amount           bigint NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    campaign_id      bigint,
    recipient_id     bigint,
    note             text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_transaction_shop ON credit_transaction (shop_id, id);

CREATE TABLE credit_reservation (
    id           bigserial PRIMARY KEY,
    shop_id      bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    campaign_id  bigint NOT NULL UNIQUE REFERENCES campaign (id) ON DELETE CASCADE,
    key          text NOT NULL UNIQUE,
    amount       bigint NOT NULL CHECK (amount >= 0),
    consumed     bigint NOT NULL DEFAULT 0 CHECK (consumed >= 0),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'released')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz
);
CREATE INDEX credit_reservation_active ON credit_reservation (shop_id) WHERE status = 'active';

CREATE TABLE message_log (
    -- One row per accepted message, keyed by its recipient: one index fewer to write per
    -- message than a surrogate id would cost.
    recipient_id  bigint PRIMARY KEY,
    shop_id       bigint NOT NULL,
    campaign_id   bigint NOT NULL,
    provider_id   text NOT NULL,
    text          text NOT NULL,
    segments      integer NOT NULL,
    country       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_log_campaign ON message_log (campaign_id);

CREATE TABLE short_link (
    id           bigserial PRIMARY KEY,
    shop_id      bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    campaign_id  bigint NOT NULL REFERENCES campaign (id) ON DELETE CASCADE,
    code         text NOT NULL UNIQUE,
    url          text NOT NULL,
    clicks       bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, url)
);

-- Order of delivery statuses: a status only ever moves to a higher rank. All terminal
-- statuses share the top rank, so a terminal status is never replaced.
CREATE FUNCTION delivery_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status
        WHEN 'Queued' THEN 1
        WHEN 'Sent' THEN 2
        WHEN 'Delivered' THEN 3
        WHEN 'Undelivered' THEN 3
        WHEN 'Failed' THEN 3
        WHEN 'Expired' THEN 3
        ELSE 0
    END
$$;
