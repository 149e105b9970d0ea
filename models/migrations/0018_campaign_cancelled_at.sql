-- The reconcile looks for campaigns cancelled lately whose recipients are still pending
-- (service/reconcile.finalize_cancelled_campaigns): through this index, not a walk of every
-- campaign ever cancelled.
CREATE INDEX campaign_cancelled_at ON campaign (finished_at) WHERE status = 'cancelled';
