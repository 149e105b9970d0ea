-- Delivery reports applied in bulk (issue 11): the webhook only stores a report; an applier
-- takes stored reports it has not examined yet in chunks (FOR UPDATE SKIP LOCKED, so several
-- appliers share the work), applies those whose message is known, resolves recipients of
-- unknown outcome they name, and marks the whole chunk examined. A report whose message is not
-- persisted yet stays unapplied (examined) and is applied by its campaign's status refresh once
-- the message id is known, as before.
-- A constant default is metadata-only (no table rewrite): reports stored before this migration
-- count as examined, except those still unapplied, which the applier looks at once more.
ALTER TABLE delivery_report ADD COLUMN examined_at timestamptz DEFAULT '-infinity';
ALTER TABLE delivery_report ALTER COLUMN examined_at DROP DEFAULT;
UPDATE delivery_report SET examined_at = NULL WHERE applied_at IS NULL;
CREATE INDEX delivery_report_unexamined ON delivery_report (id) WHERE examined_at IS NULL;
