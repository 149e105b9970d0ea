-- Reservations follow the money (SPEC 3, 4.8; README "Credits and reservations").
-- `released` is what the reservation has given back so far, so a cancel can release the part
-- for recipients that will never be sent at once and keep the part for calls in flight;
-- outstanding = amount - consumed - released. Status `held`: the campaign is over and the
-- reservation still holds the upper bound of its messages of unknown outcome, which late
-- evidence may prove sent, until EVIDENCE_WINDOW_MS after the campaign finished.
-- The column's constant default rewrites no row; only reservations already released are
-- updated, so their `released` says what they gave back.
ALTER TABLE credit_reservation
    ADD COLUMN released bigint NOT NULL DEFAULT 0 CHECK (released >= 0);
UPDATE credit_reservation SET released = greatest(amount - consumed, 0)
WHERE status = 'released';
ALTER TABLE credit_reservation DROP CONSTRAINT credit_reservation_status_check;
ALTER TABLE credit_reservation ADD CONSTRAINT credit_reservation_status_check
    CHECK (status IN ('active', 'held', 'released'));
-- What `available` subtracts: every reservation not yet released (active or held).
DROP INDEX credit_reservation_active;
CREATE INDEX credit_reservation_open ON credit_reservation (shop_id) WHERE status <> 'released';
