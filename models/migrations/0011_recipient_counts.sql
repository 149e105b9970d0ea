-- O(1) progress (issue 11): a campaign's recipients counted by status and delivery status
-- without reading its recipients. Every statement that inserts, updates or deletes
-- campaign_recipient rows appends, through statement-level triggers with transition tables,
-- one row per campaign it touched holding the change of each count
-- (`campaign_recipient_delta`); the clock's reconcile folds those rows into one row per
-- campaign (`campaign_recipient_total`). A reader sums the campaign's total and the deltas
-- not folded yet: a number of rows bounded by the statements of one reconcile interval,
-- whatever the audience's size.
-- Appended rows, not counters updated in place: a counter row per campaign is written by
-- every batch transaction of the campaign and held until its commit, and the persist takes
-- it before the campaign row while a cancel or a creation chunk takes the campaign row first,
-- so updating it in place serialises a campaign's batches and can deadlock. An insert locks
-- no existing row.
-- Delivery statuses outside the six of `delivery_rank()` are not counted (none is ever
-- written: a report moves a recipient only to a status of higher rank).
CREATE TABLE campaign_recipient_delta (
    id               bigserial PRIMARY KEY,
    campaign_id      bigint NOT NULL,
    pending          bigint NOT NULL DEFAULT 0,
    sending          bigint NOT NULL DEFAULT 0,
    sent             bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    skipped          bigint NOT NULL DEFAULT 0,
    queued           bigint NOT NULL DEFAULT 0,
    delivery_sent    bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    undelivered      bigint NOT NULL DEFAULT 0,
    delivery_failed  bigint NOT NULL DEFAULT 0,
    expired          bigint NOT NULL DEFAULT 0
);
CREATE INDEX campaign_recipient_delta_campaign ON campaign_recipient_delta (campaign_id);

CREATE TABLE campaign_recipient_total (
    campaign_id      bigint PRIMARY KEY,
    pending          bigint NOT NULL DEFAULT 0,
    sending          bigint NOT NULL DEFAULT 0,
    sent             bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    skipped          bigint NOT NULL DEFAULT 0,
    queued           bigint NOT NULL DEFAULT 0,
    delivery_sent    bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    undelivered      bigint NOT NULL DEFAULT 0,
    delivery_failed  bigint NOT NULL DEFAULT 0,
    expired          bigint NOT NULL DEFAULT 0
);

-- One row per campaign touched, `n` = +1 for a new row image and -1 for an old one; a
-- campaign whose counts did not move adds nothing (an update of claimed_at, an erasure's).
-- Three triggers, one per event: PostgreSQL allows transition tables on single-event
-- triggers only.
CREATE FUNCTION count_recipient_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO campaign_recipient_delta (campaign_id, pending, sending, sent, failed, skipped, queued, delivery_sent, delivered, undelivered, delivery_failed, expired)
        SELECT campaign_id,
               coalesce(sum(n) FILTER (WHERE status = 'pending'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'sending'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'sent'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'failed'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Queued'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Sent'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Delivered'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Undelivered'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Failed'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Expired'), 0)
        FROM (SELECT campaign_id, status, delivery_status, 1 AS n FROM new_rows) c
        GROUP BY campaign_id
        HAVING coalesce(sum(n) FILTER (WHERE status = 'pending'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'sending'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'sent'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'failed'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Queued'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Sent'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Delivered'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Undelivered'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Failed'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Expired'), 0) <> 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO campaign_recipient_delta (campaign_id, pending, sending, sent, failed, skipped, queued, delivery_sent, delivered, undelivered, delivery_failed, expired)
        SELECT campaign_id,
               coalesce(sum(n) FILTER (WHERE status = 'pending'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'sending'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'sent'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'failed'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Queued'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Sent'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Delivered'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Undelivered'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Failed'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Expired'), 0)
        FROM (SELECT campaign_id, status, delivery_status, 1 AS n FROM new_rows UNION ALL SELECT campaign_id, status, delivery_status, -1 AS n FROM old_rows) c
        GROUP BY campaign_id
        HAVING coalesce(sum(n) FILTER (WHERE status = 'pending'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'sending'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'sent'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'failed'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Queued'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Sent'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Delivered'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Undelivered'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Failed'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Expired'), 0) <> 0;
    ELSE
        INSERT INTO campaign_recipient_delta (campaign_id, pending, sending, sent, failed, skipped, queued, delivery_sent, delivered, undelivered, delivery_failed, expired)
        SELECT campaign_id,
               coalesce(sum(n) FILTER (WHERE status = 'pending'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'sending'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'sent'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'failed'), 0),
               coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Queued'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Sent'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Delivered'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Undelivered'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Failed'), 0),
               coalesce(sum(n) FILTER (WHERE delivery_status = 'Expired'), 0)
        FROM (SELECT campaign_id, status, delivery_status, -1 AS n FROM old_rows) c
        GROUP BY campaign_id
        HAVING coalesce(sum(n) FILTER (WHERE status = 'pending'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'sending'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'sent'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'failed'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE status = 'skipped'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Queued'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Sent'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Delivered'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Undelivered'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Failed'), 0) <> 0
            OR coalesce(sum(n) FILTER (WHERE delivery_status = 'Expired'), 0) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER campaign_recipient_counted_insert AFTER INSERT ON campaign_recipient
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_recipient_changes();
CREATE TRIGGER campaign_recipient_counted_update AFTER UPDATE ON campaign_recipient
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_recipient_changes();
CREATE TRIGGER campaign_recipient_counted_delete AFTER DELETE ON campaign_recipient
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_recipient_changes();

-- Recipients that exist already are counted once, with writers held off meanwhile (the
-- release phase runs before the other processes anyway).
LOCK TABLE campaign_recipient IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO campaign_recipient_total (campaign_id, pending, sending, sent, failed, skipped, queued, delivery_sent, delivered, undelivered, delivery_failed, expired)
SELECT campaign_id,
               coalesce(count(*) FILTER (WHERE status = 'pending'), 0),
               coalesce(count(*) FILTER (WHERE status = 'sending'), 0),
               coalesce(count(*) FILTER (WHERE status = 'sent'), 0),
               coalesce(count(*) FILTER (WHERE status = 'failed'), 0),
               coalesce(count(*) FILTER (WHERE status = 'skipped'), 0),
               coalesce(count(*) FILTER (WHERE delivery_status = 'Queued'), 0),
               coalesce(count(*) FILTER (WHERE delivery_status = 'Sent'), 0),
               coalesce(count(*) FILTER (WHERE delivery_status = 'Delivered'), 0),
               coalesce(count(*) FILTER (WHERE delivery_status = 'Undelivered'), 0),
               coalesce(count(*) FILTER (WHERE delivery_status = 'Failed'), 0),
               coalesce(count(*) FILTER (WHERE delivery_status = 'Expired'), 0)
FROM campaign_recipient
GROUP BY campaign_id;
