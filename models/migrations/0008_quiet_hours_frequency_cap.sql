-- Compliance (SPEC 11, part 2): quiet hours and the frequency cap, per shop.

-- Quiet hours in minutes after local midnight, [start, end): 21:00-08:00 is 1260-480 (the
-- window crosses midnight when start > end). Both NULL: no quiet hours. Existing shops get
-- the product's default; a constant default rewrites no row. New shops say what they want
-- (`service/shops.py`, the admin API's default QUIET_HOURS_DEFAULT), hence no default after.
ALTER TABLE shop ADD COLUMN quiet_start smallint DEFAULT 1260
    CHECK (quiet_start BETWEEN 0 AND 1439);
ALTER TABLE shop ADD COLUMN quiet_end smallint DEFAULT 480
    CHECK (quiet_end BETWEEN 0 AND 1439);
ALTER TABLE shop ALTER COLUMN quiet_start DROP DEFAULT;
ALTER TABLE shop ALTER COLUMN quiet_end DROP DEFAULT;
ALTER TABLE shop ADD CONSTRAINT shop_quiet_hours_check
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND quiet_start <> quiet_end);
-- At most this many campaign messages per contact in a rolling 24 h; NULL: no cap (default).
ALTER TABLE shop ADD COLUMN frequency_cap integer CHECK (frequency_cap > 0);

-- A batch whose recipients wait for quiet hours to end: how many waited at its last delivery
-- and the earliest time (the sending processes' clock, `service/infra/clock.py`) one of them
-- may go. The reconciler leaves the batch alone until then; progress shows both.
ALTER TABLE send_batch ADD COLUMN waiting integer NOT NULL DEFAULT 0;
ALTER TABLE send_batch ADD COLUMN not_before timestamptz;

-- The frequency cap counts a contact's messages sent in the last 24 h. Partial on sent_at:
-- a recipient enters it only when its message is persisted (an UPDATE that already writes
-- index entries: it sets the indexed mitto_message_id), so enqueue inserts nothing more and
-- the claim (pending -> sending: status, claimed_at, batch_key) stays a HOT update.
CREATE INDEX campaign_recipient_contact_sent ON campaign_recipient (contact_id, sent_at)
    WHERE sent_at IS NOT NULL;
