-- An answer to STOP, START or HELP that the provider surely did not take (a 429, a 503, a
-- refused connection) waits in `retrying` for the worker's next attempt (`sendInboundReply`),
-- its row still the claim: one attempt at a time takes it back to `sending`. It was given up
-- (the claim deleted, waiting for a provider retry of the inbound message that never came,
-- since the webhook had answered 200), so one throttled moment lost a STOP's confirmation.
ALTER TABLE inbound_reply DROP CONSTRAINT inbound_reply_state_check;
ALTER TABLE inbound_reply ADD CONSTRAINT inbound_reply_state_check
    CHECK (state IN ('sending', 'retrying', 'sent', 'failed', 'unknown'));
