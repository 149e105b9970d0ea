-- The consent log refused UPDATE and DELETE row by row (0006), but TRUNCATE fires no row
-- trigger: `TRUNCATE consent_event` emptied the log the README says the database refuses to
-- change (a probe). A statement trigger refuses it, as 0007 does for audit_event. (The tests'
-- per-test truncate disables it inside its own transaction: tests/conftest.py.)
CREATE FUNCTION consent_event_no_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_event is append-only (erasure may only clear a proof)';
END
$$;
CREATE TRIGGER consent_event_no_truncate BEFORE TRUNCATE ON consent_event
    FOR EACH STATEMENT EXECUTE FUNCTION consent_event_no_truncate();
