-- Test sends (issue 11, the priority lane): one message of a campaign's text to one number,
-- asked by the merchant (`POST /campaigns/{id}/test`) and sent by the worker's priority queue,
-- never behind any shop's bulk backlog. Its cost is held from the shop's available credits
-- while it is `queued` or `sending` (counted with the reservations), and debited once, keyed
-- `test-send:{id}`, when the provider accepts it.
CREATE TABLE test_send (
    id           bigserial PRIMARY KEY,
    shop_id      bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    campaign_id  bigint NOT NULL REFERENCES campaign (id) ON DELETE CASCADE,
    contact_id   bigint,
    -- The number and text are personal data: erasure of the number's contact clears them.
    phone        text,
    sender       text NOT NULL,
    text         text,
    segments     integer NOT NULL CHECK (segments > 0),
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    error        text,
    provider_id  text,
    attempts     integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX test_send_campaign ON test_send (campaign_id, id);
-- What holds credits, summed with the reservations on every credit decision.
CREATE INDEX test_send_holding ON test_send (shop_id) WHERE status IN ('queued', 'sending');

ALTER TABLE audit_event DROP CONSTRAINT audit_event_subject_check;
ALTER TABLE audit_event ADD CONSTRAINT audit_event_subject_check
    CHECK (subject IN ('campaign', 'credits', 'reservation', 'api_key', 'suppression', 'test_send'));
