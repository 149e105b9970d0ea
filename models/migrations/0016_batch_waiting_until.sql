-- Progress said quiet-hours recipients would all have gone by `until`, the latest of each
-- batch's earliest opening (`not_before`): a batch waiting for Athens (06:00 UTC) and London
-- (08:00 UTC) said 06:00, and London's were sent two hours after the `until` shown. Each batch
-- now also keeps the latest opening of its waiting recipients.
ALTER TABLE send_batch ADD COLUMN waiting_until timestamptz;
