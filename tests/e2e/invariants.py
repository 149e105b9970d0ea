"""The invariants of SPEC 4, checked against the database and the simulator's records."""

from __future__ import annotations

from collections import Counter


def rows(db, sql: str, *params) -> list[tuple]:
    return db.execute_sql(sql, params).fetchall()


def assert_invariants(
    db, stack, shop_id: int, campaign_id: int, others: tuple[int, ...] = ()
) -> dict[str, int]:
    """Check every promise a finished campaign makes; return its recipient counts. `others`:
    campaigns whose messages the same simulator received (to other numbers)."""
    # At most one provider message per recipient: by reference (/sms) and by number.
    messages = stack.sim_messages()["messages"]
    per_number = Counter(m["to"] for m in messages)
    assert not [n for n, c in per_number.items() if c > 1], "a recipient got two messages"
    for other in others:
        for (phone,) in rows(
            db, "SELECT phone FROM campaign_recipient WHERE campaign_id = %s", other
        ):
            per_number.pop(phone, None)

    # Every recipient of the finished campaign is sent, failed or skipped.
    status = dict(
        rows(
            db,
            "SELECT status, count(*) FROM campaign_recipient"
            " WHERE campaign_id = %s GROUP BY status",
            campaign_id,
        )
    )
    assert set(status) <= {"sent", "failed", "skipped"}, status
    campaign = rows(db, "SELECT status, finished_at FROM campaign WHERE id = %s", campaign_id)[0]
    assert campaign[0] in ("completed", "failed", "cancelled") and campaign[1] is not None

    # What the provider accepted is exactly what is recorded as sent.
    sent_numbers = {
        r[0]
        for r in rows(
            db,
            "SELECT phone FROM campaign_recipient WHERE campaign_id = %s AND status = 'sent'",
            campaign_id,
        )
    }
    assert sent_numbers == set(per_number), "sent recipients differ from what the provider got"

    # One debit per accepted message, of its segment count; the balance is the ledger's sum.
    debits = rows(
        db,
        "SELECT t.recipient_id, -t.amount, m.segments FROM credit_transaction t"
        " LEFT JOIN message_log m ON m.recipient_id = t.recipient_id"
        " WHERE t.campaign_id = %s AND t.kind = 'debit'",
        campaign_id,
    )
    assert len(debits) == status.get("sent", 0)
    assert all(amount == segments for _, amount, segments in debits)
    balance, ledger = rows(
        db,
        "SELECT s.credit_balance, (SELECT coalesce(sum(amount), 0)"
        " FROM credit_transaction WHERE shop_id = s.id) FROM shop s"
        " WHERE s.id = %s",
        shop_id,
    )[0]
    assert balance == ledger >= 0

    # No active reservation outlives its campaign; it consumed exactly what was debited. What
    # it still holds, if anything, is for messages of unknown outcome (late evidence).
    reservation = rows(
        db,
        "SELECT status, consumed, amount - consumed - released"
        " FROM credit_reservation WHERE campaign_id = %s",
        campaign_id,
    )
    if reservation:
        state, consumed, held = reservation[0]
        unknown = rows(
            db,
            "SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s"
            " AND status = 'failed' AND error = 'unknown_outcome'",
            campaign_id,
        )[0][0]
        assert state == ("held" if unknown else "released"), (state, unknown)
        assert not unknown or held >= unknown  # at least a segment each
        assert consumed <= sum(amount for _, amount, _ in debits)
    return status
