-- Million-recipient campaigns (issue 11): the enqueue answers at once and a campaign's
-- recipients are created afterwards in bounded chunks (service/creation.py), each chunk one
-- transaction that advances a cursor on the campaign row under its lock.
--   creation_cursor: how far creation got: the last contact id done (an audience of every
--     subscribed contact) or the number of list positions done (a `contact_ids` audience).
--   creation_until: the audience's snapshot bound, fixed at enqueue: the shop's largest
--     contact id then (contacts imported later are not swept in), or the list's length.
--   creation_reserve: the part of the reservation (reserved whole at enqueue) not yet handed
--     to a `send_batch`; what is left when the last chunk is written is released.
--   recipients_created_at: when the last chunk was written; NULL while recipients are still
--     being created, and a campaign is never finalised before it is set.
--   creation_progress_at: the last chunk's time; the reconciler republishes a creation that
--     made no progress for BATCH_STALE_AFTER_MS.
-- Campaigns enqueued before this migration created every recipient in their enqueue.
ALTER TABLE campaign ADD COLUMN creation_cursor bigint;
ALTER TABLE campaign ADD COLUMN creation_until bigint;
ALTER TABLE campaign ADD COLUMN creation_reserve bigint NOT NULL DEFAULT 0
    CHECK (creation_reserve >= 0);
ALTER TABLE campaign ADD COLUMN recipients_created_at timestamptz;
ALTER TABLE campaign ADD COLUMN creation_progress_at timestamptz;
UPDATE campaign SET recipients_created_at = coalesce(started_at, now())
WHERE status NOT IN ('draft', 'scheduled');
-- The reconciler's look for creations to heal: few rows (campaigns still creating).
CREATE INDEX campaign_creating ON campaign (creation_progress_at)
    WHERE recipients_created_at IS NULL AND status IN ('sending', 'paused');
