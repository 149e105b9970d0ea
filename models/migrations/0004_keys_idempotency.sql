-- API keys (SPEC 5): when each key was last used, shown to the admin with its prefix.
ALTER TABLE api_key ADD COLUMN last_used_at timestamptz;

-- Idempotency keys (SPEC 5, Stripe's rules): one row per (shop, key) while it is kept (24 h).
-- The row is inserted before the request runs (state 'in_flight'), so a concurrent duplicate
-- finds it and gets 409; when the answer is known it is stored ('done') and replayed to a
-- retry with the same body. `fingerprint` is a SHA-256 of method, route and body: the same key
-- with another body is refused (422).
CREATE TABLE idempotency_key (
    shop_id          bigint NOT NULL REFERENCES shop (id) ON DELETE CASCADE,
    key              text NOT NULL,
    fingerprint      text NOT NULL,
    state            text NOT NULL DEFAULT 'in_flight' CHECK (state IN ('in_flight', 'done')),
    response_status  integer,
    response_body    bytea,
    response_type    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (shop_id, key)
);
CREATE INDEX idempotency_key_created ON idempotency_key (created_at);
