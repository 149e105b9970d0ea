-- The audit trail (SPEC 11, issue 10): who changed a campaign's status, moved credits, issued
-- or revoked a key, or changed a suppression; when, and why. Written in the transaction of the
-- change it records (`service/audit.py`), so neither exists without the other.
--
-- No personal data: contacts by id, numbers by the suppression's keyed digest. Erasure never has
-- to touch this table, which is append-only in the database itself (the triggers below).
--
-- The actor: `key` (the shop's API key, `actor_name` its id), `admin` (ADMIN_TOKEN or the
-- operator's CLI), `webhook` (`provider` or `shopify`), `page` (`unsubscribe`: the link's page),
-- `clock` (`actor_name` the job, `actor_epoch` the leader's fencing epoch), `worker`.
CREATE TABLE audit_event (
    id           bigserial PRIMARY KEY,
    shop_id      bigint NOT NULL REFERENCES shop (id),
    campaign_id  bigint,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_kind   text NOT NULL
                 CHECK (actor_kind IN ('key', 'admin', 'webhook', 'page', 'clock', 'worker')),
    actor_name   text,
    actor_epoch  bigint,
    subject      text NOT NULL
                 CHECK (subject IN ('campaign', 'credits', 'reservation', 'api_key', 'suppression')),
    subject_id   bigint,
    action       text NOT NULL,
    from_status  text,
    to_status    text,
    amount       bigint,
    detail       jsonb,
    reason       text NOT NULL
);
CREATE INDEX audit_event_shop ON audit_event (shop_id, id);
CREATE INDEX audit_event_campaign ON audit_event (campaign_id, id) WHERE campaign_id IS NOT NULL;

-- Append-only: no row is ever changed or removed, by the application or anyone else.
CREATE FUNCTION audit_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- (No percent sign here: the migrator runs this file as a parameterised statement.)
    RAISE EXCEPTION USING MESSAGE = 'audit_event is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
-- TRUNCATE fires no row trigger: a statement trigger refuses it too. (The tests' per-test
-- truncate disables it for the length of its own transaction: tests/conftest.py.)
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();
