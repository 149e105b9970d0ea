-- Compliance (SPEC 11, part 1): inbound replies (STOP/START/HELP), consent, erasure, exports.

-- Shops: the answer to HELP (NULL: a default naming the shop, `service/shops.py`), and whether
-- contacts need consent to be messaged. Existing shops keep sending as they did (false); every
-- shop created from now on requires consent unless it says otherwise. Both are metadata-only
-- changes (a constant default rewrites no row).
ALTER TABLE shop ADD COLUMN help_text text;
ALTER TABLE shop ADD COLUMN require_consent boolean NOT NULL DEFAULT false;
ALTER TABLE shop ALTER COLUMN require_consent SET DEFAULT true;

-- Contacts: the consent in force (the most recent opt-in; its history is `consent_event`), and
-- erasure. An erased contact stays as a tombstone (its id is in recipients, ledger rows and
-- the consent log) with no phone and no name; several per shop may exist, so phone is nullable.
ALTER TABLE contact ADD COLUMN consent_source text;
ALTER TABLE contact ADD COLUMN consent_collected_at timestamptz;
ALTER TABLE contact ADD COLUMN erased_at timestamptz;
ALTER TABLE contact ALTER COLUMN phone DROP NOT NULL;
-- An inbound reply names a number, not a shop: which shops have it is looked up by phone.
CREATE INDEX contact_phone ON contact (phone);

-- Erased recipients and message texts keep their rows (counts, debits and the ledger refer to
-- them) without the personal data. Dropping NOT NULL rewrites nothing.
ALTER TABLE campaign_recipient ALTER COLUMN phone DROP NOT NULL;
ALTER TABLE message_log ALTER COLUMN text DROP NOT NULL;

-- An erased recipient has no number left to send to, so it is never `pending`: erasure skips
-- the pending ones, and a claim given back after the erasure (its call surely did not reach
-- the provider) makes the row skipped instead of pending again. The WHEN clause is evaluated
-- without calling the function, so other updates of this hot table pay next to nothing.
CREATE FUNCTION campaign_recipient_erased_is_skipped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.status := 'skipped';
    NEW.error := 'erased';
    RETURN NEW;
END
$$;
CREATE TRIGGER campaign_recipient_erased_is_skipped BEFORE UPDATE ON campaign_recipient
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.phone IS NULL)
    EXECUTE FUNCTION campaign_recipient_erased_is_skipped();

-- Suppressions survive erasure as a keyed digest of the number (HMAC-SHA256 under SECRET_KEY,
-- `service/suppressions.py`) with no number in clear: an import that brings the number back
-- finds the digest and suppresses it again. Source `erasure`: suppressed because it was erased.
ALTER TABLE suppression ALTER COLUMN phone DROP NOT NULL;
ALTER TABLE suppression ADD COLUMN phone_hash text;
ALTER TABLE suppression DROP CONSTRAINT suppression_source_check;
ALTER TABLE suppression ADD CONSTRAINT suppression_source_check
    CHECK (source IN ('link', 'reply', 'admin', 'erasure'));
ALTER TABLE suppression ADD CONSTRAINT suppression_number_check
    CHECK (phone IS NOT NULL OR phone_hash IS NOT NULL);
CREATE UNIQUE INDEX suppression_hashed ON suppression (shop_id, phone_hash)
    WHERE phone_hash IS NOT NULL;

-- The consent log: append-only (the trigger below), one row per opt-in or opt-out of a contact.
-- `source` is how it reached us; `consent_source` is what the merchant says about an imported
-- consent (`shopify`, `checkout`, ...); `collected_at` is when it was given.
CREATE TABLE consent_event (
    id              bigserial PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    contact_id      bigint NOT NULL REFERENCES contact (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('opt_in', 'opt_out')),
    source          text NOT NULL CHECK (source IN ('import', 'link', 'reply', 'admin', 'erasure')),
    consent_source  text,
    collected_at    timestamptz NOT NULL,
    proof           text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_event_contact ON consent_event (contact_id, id);
-- The same imported consent imported again is the same event, recorded once.
CREATE UNIQUE INDEX consent_event_imported
    ON consent_event (contact_id, collected_at, consent_source)
    WHERE kind = 'opt_in' AND source = 'import';

-- Append-only in the database itself: the one change allowed is erasure clearing a proof.
CREATE FUNCTION consent_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.proof IS NULL
       AND (NEW.id, NEW.shop_id, NEW.contact_id, NEW.kind, NEW.source, NEW.consent_source,
            NEW.collected_at, NEW.created_at)
           IS NOT DISTINCT FROM (OLD.id, OLD.shop_id, OLD.contact_id, OLD.kind, OLD.source,
                                 OLD.consent_source, OLD.collected_at, OLD.created_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'consent_event is append-only (erasure may only clear a proof)';
END
$$;
CREATE TRIGGER consent_event_append_only BEFORE UPDATE OR DELETE ON consent_event
    FOR EACH ROW EXECUTE FUNCTION consent_event_append_only();

-- Inbound messages, one row per shop they were for (a reply to the shared MITTO_SENDER can be
-- for several). `message_key` is the provider's id, else a keyed digest of the message: a
-- provider retry of the same message is the same row.
CREATE TABLE inbound_message (
    id           bigserial PRIMARY KEY,
    shop_id      bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    message_key  text NOT NULL,
    provider_id  text,
    phone        text,
    sender       text NOT NULL,
    text         text,
    keyword      text CHECK (keyword IN ('stop', 'start', 'help')),
    received_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, message_key)
);
CREATE INDEX inbound_message_shop ON inbound_message (shop_id, id);
CREATE INDEX inbound_message_phone ON inbound_message (phone);

-- The answer to a STOP, START or HELP: one per inbound message. Inserting the row is how a
-- process claims the right to send it, so a retried or concurrent duplicate sends nothing.
-- No number in it: `message_key` and the answer's text (shop names, help texts) only.
CREATE TABLE inbound_reply (
    message_key  text PRIMARY KEY,
    sender       text NOT NULL,
    text         text NOT NULL,
    segments     integer NOT NULL,
    state        text NOT NULL DEFAULT 'sending' CHECK (state IN
                 ('sending', 'sent', 'failed', 'unknown')),
    provider_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

-- Shopify's customers/data_request: what we hold about a customer, for the admin to fetch.
-- One per (shop, Shopify request); deleted when the customer is erased.
CREATE TABLE data_export (
    id           bigserial PRIMARY KEY,
    shop_id      bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    request_key  text NOT NULL,
    phone_hash   text,
    document     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, request_key)
);
CREATE INDEX data_export_phone ON data_export (shop_id, phone_hash);
