"""The persist's `UPDATE ... FROM unnest` is planned on the primary key whatever the table's
statistics say (`models.database.planned_on_indexes`): on a young `campaign_recipient` never
analysed, PostgreSQL planned it as a whole-table scan joined to the batch's ids in a nested
loop, about 1 s per batch of 500 at 12,000 rows (bench/RESULTS.md, "Plans that do not depend
on luck").

The report applier's statement (`service.delivery._APPLY`) needs no such setting: on the same
young table it is planned on the message-id index (checked here, so that a change to it or to
the indexes that walks the table fails)."""

from __future__ import annotations

from models.database import fetchall, planned_on_indexes
from service.delivery import _APPLY
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


def test_the_report_applier_finds_recipients_by_message_id_on_a_young_table(db):
    # Given 12,000 sent recipients and 5,000 reports for them, all written just now (no
    # ANALYZE has seen either table)
    db.execute_sql(
        "INSERT INTO campaign_recipient"
        " (campaign_id, shop_id, contact_id, phone, status, mitto_message_id)"
        " SELECT 1, 1, g, '+3069' || g, 'sent', 'm' || g FROM generate_series(1, 12000) g"
    )
    db.execute_sql(
        "INSERT INTO delivery_report (provider_id, status)"
        " SELECT 'm' || g, 'Delivered' FROM generate_series(5001, 10000) g"
    )
    ids = [row[0] for row in fetchall("SELECT id FROM delivery_report")]

    # When the applier's statement for that chunk is planned (without running it)
    rows = fetchall(
        "EXPLAIN " + _APPLY.format(scope=" AND d.id = ANY(%(ids)s)"),
        {
            "limit": 50_000,
            "ids": ids,
        },
    )
    planned = "\n".join(row[0] for row in rows)

    # Then recipients are found through the message-id index, never by walking the table
    assert "campaign_recipient_message" in planned, planned
    assert "Seq Scan on campaign_recipient" not in planned, planned
