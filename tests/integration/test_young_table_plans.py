"""The persist's `UPDATE ... FROM unnest` is planned on the primary key whatever the table's
statistics say (`models.database.planned_on_indexes`): on a young `campaign_recipient` never
analysed, PostgreSQL planned it as a whole-table scan joined to the batch's ids in a nested
loop, about 1 s per batch of 500 at 12,000 rows (bench/RESULTS.md, "Plans that do not depend
on luck")."""

from __future__ import annotations

from models.database import fetchall, planned_on_indexes
from service.sending import MARK_SENT


def plan(ids: list[int]) -> str:
    rows = fetchall("EXPLAIN " + MARK_SENT, (ids, [f"p{i}" for i in ids]))
    return "\n".join(row[0] for row in rows)


def test_the_persist_is_planned_on_the_primary_key_on_a_young_table(db):
    # Given 12,000 recipients in flight, written just now (no ANALYZE has seen them)
    db.execute_sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status)"
        " SELECT 1, 1, g, '+3069' || g, 'sending' FROM generate_series(1, 12000) g"
    )
    ids = list(range(5001, 5501))

    # When a batch of 500 is persisted, in the persist's planning
    with db.atomic():
        with planned_on_indexes():
            planned = plan(ids)
        after = fetchall("SHOW enable_seqscan")[0][0]

    # Then each id is looked up by the primary key, the table is never scanned whole, and the
    # setting is back to its default for the rest of the transaction
    assert "campaign_recipient_pkey" in planned, planned
    assert "Seq Scan on campaign_recipient" not in planned, planned
    assert after == "on"
