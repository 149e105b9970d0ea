"""What the statements that stay SQL cost next to their Peewee or naive alternatives (issue 7).

    BENCH_DATABASE_URL=... .venv/bin/python bench/sql_choices.py [--contacts 100000] [--runs 20]

Its schema is dropped and migrated again (like `bench/pipeline.py`). Seeds, in SQL, one shop with
`--contacts` subscribed contacts (every tenth suppressed), a campaign with a recipient per
contact (`sending`, its outcome unknown) in batches of 500, and 200 unapplied delivery reports:
100 naming a recipient by its id (`/sms`), 100 by batch key and phone (`/smsbulk`). Then times,
median of `--runs`:
- `audience.count` (SQL over `ELIGIBLE_CONTACTS`) against the same count as a Peewee chain;
- `evidence._NAMED` for the 200 reports against the naive join on `r.id::text = reference`;
- `sending.MARK_SENT` for a batch of 500 (in a transaction rolled back, after half the
  recipients got provider ids), with and without its check that no other recipient holds the
  id, the two alternating;
- the check of a campaign's `contact_ids` (`campaigns.create`: 20,000 of the shop's ids through
  `any_of`, bound as `bigint[]`) against the same ids bound as psycopg2 writes them
  (`integer[]`);
and prints each plan's top node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import DB_URL, reset_database  # noqa: E402

NAIVE_NAMED = """
SELECT DISTINCT ON (r.id) r.id, n.provider_id
FROM delivery_report n
JOIN campaign_recipient r ON r.id::text = n.reference
WHERE n.id = ANY(%(ids)s) AND n.applied_at IS NULL
ORDER BY r.id, n.id
"""


def seed(db, contacts: int) -> tuple[int, list[int]]:
    sql = db.execute_sql
    shop = sql(
        "INSERT INTO shop (domain, name, require_consent) VALUES ('b.example', 'B', false)"
        " RETURNING id"
    ).fetchone()[0]
    sql(
        "INSERT INTO contact (shop_id, phone, first_name)"
        " SELECT %s, '+1415' || lpad(i::text, 7, '0'), 'N' || i FROM generate_series(1, %s) i",
        (shop, contacts),
    )
    sql(
        "INSERT INTO suppression (shop_id, phone, source)"
        " SELECT %s, phone, 'reply' FROM contact WHERE id %% 10 = 0",
        (shop,),
    )
    campaign = sql(
        "INSERT INTO campaign (shop_id, name, text, status) VALUES (%s, 'c', 't', 'sending')"
        " RETURNING id",
        (shop,),
    ).fetchone()[0]
    sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status)"
        " SELECT %s, shop_id, id, phone, 'sending' FROM contact",
        (campaign,),
    )
    sql(
        "INSERT INTO send_batch (campaign_id, key, recipient_ids, reserved)"
        " SELECT %s, 'b' || (id / 500), array_agg(id ORDER BY id), count(*)"
        " FROM campaign_recipient GROUP BY id / 500",
        (campaign,),
    )
    sql(
        'INSERT INTO delivery_report (provider_id, reference, "to", status)'
        " SELECT 'p' || id, id::text, phone, 'Delivered' FROM campaign_recipient"
        " WHERE id %% 997 = 1 LIMIT 100",
    )
    sql(
        'INSERT INTO delivery_report (provider_id, reference, "to", status)'
        " SELECT 'q' || r.id, b.key, r.phone, 'Delivered' FROM campaign_recipient r"
        " JOIN send_batch b ON r.id = ANY(b.recipient_ids) WHERE r.id %% 991 = 2 LIMIT 100",
    )
    sql("ANALYZE")
    reports = [row[0] for row in sql("SELECT id FROM delivery_report").fetchall()]
    return shop, reports


def timed(call, runs: int) -> tuple[float, object]:
    timings, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 2), result


def peewee_count(shop_id: int) -> int:
    from peewee import fn

    from models import Contact, Shop, Suppression

    suppressed = Suppression.select().where(
        (Suppression.shop == Contact.shop) & (Suppression.phone == Contact.phone)
    )
    consent = Shop.select(Shop.require_consent).where(Shop.id == Contact.shop)
    return (
        Contact.select()
        .where(Contact.shop == shop_id)
        .where(Contact.opted_out_at.is_null())
        .where(~fn.EXISTS(suppressed))
        .where(Contact.consent_collected_at.is_null(False) | ~fn.COALESCE(consent, True))
        .count()
    )


def mark_sent_cost(db, runs: int) -> dict:
    """MARK_SENT on 500 recipients with and without the held-id check (`NOT EXISTS` on the
    unique index of provider ids), alternating, each in a transaction rolled back."""
    from service import sending

    check = (
        "   AND NOT EXISTS (SELECT 1 FROM campaign_recipient o WHERE o.mitto_message_id = v.pid)"
    )
    variants = {
        "with_check": sending.MARK_SENT,
        "without_check": sending.MARK_SENT.replace(check, ""),
    }
    assert variants["without_check"] != variants["with_check"]
    db.execute_sql("UPDATE campaign_recipient SET mitto_message_id = 'x' || id WHERE id %% 2 = 0")
    db.execute_sql("ANALYZE campaign_recipient")
    ids = [
        row[0]
        for row in db.execute_sql(
            "SELECT id FROM campaign_recipient WHERE id %% 2 = 1 ORDER BY id LIMIT 500"
        ).fetchall()
    ]
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, statement in variants.items():
            with db.atomic() as transaction:
                started = time.perf_counter()
                marked = db.execute_sql(statement, (ids, [f"m{i}" for i in ids])).fetchall()
                timings[name].append((time.perf_counter() - started) * 1000)
                assert len(marked) == len(ids)
                transaction.rollback()
    return {name: round(statistics.median(values), 2) for name, values in timings.items()}


def contact_ids_check(db, shop: int, runs: int) -> dict:
    """`campaigns.create`'s check that the ids are the shop's, through `any_of` (bigint[]),
    and with the ids as an integer[] (before), alternating."""
    from models import Contact
    from models.expressions import any_of

    ids = [row[0] for row in db.execute_sql("SELECT id FROM contact ORDER BY id LIMIT 20000")]
    query = Contact.select(Contact.id).where((Contact.shop == shop) & (Contact.id == any_of(ids)))
    plain = "SELECT id FROM contact WHERE shop_id = %s AND id = ANY(%s)"
    cast_ms, plain_ms = [], []
    for _ in range(max(1, runs // 4)):
        cast_ms.append(timed(lambda: len(list(query.tuples())), 1)[0])
        plain_ms.append(timed(lambda: len(db.execute_sql(plain, (shop, ids)).fetchall()), 1)[0])
    sql, params = query.sql()
    # The plan the probe met (statistics from before the import: a few hundred contacts
    # estimated for the shop), where the ids are a filter on every row of the shop rather
    # than an index probe each: forced here by turning off index and bitmap scans.
    db.execute_sql("SET enable_indexscan = off")
    db.execute_sql("SET enable_bitmapscan = off")
    try:
        filter_cast_ms = timed(lambda: len(list(query.tuples())), 1)[0]
        filter_plain_ms = timed(lambda: len(db.execute_sql(plain, (shop, ids)).fetchall()), 1)[0]
        filter_plans = (top_plan(db, sql, params), top_plan(db, plain, (shop, ids)))
    finally:
        db.execute_sql("RESET enable_indexscan")
        db.execute_sql("RESET enable_bitmapscan")
    return {
        "bigint_ms": round(statistics.median(cast_ms), 2),
        "integer_ms": round(statistics.median(plain_ms), 2),
        "bigint_plan": top_plan(db, sql, params),
        "integer_plan": top_plan(db, plain, (shop, ids)),
        "as_a_filter_bigint_ms": filter_cast_ms,
        "as_a_filter_integer_ms": filter_plain_ms,
        "as_a_filter_plans": filter_plans,
    }


def top_plan(db, sql: str, params) -> str:
    plan = db.execute_sql("EXPLAIN " + sql, params).fetchall()
    return " / ".join(row[0].strip() for row in plan if "Scan" in row[0])[:300]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    reset_database()
    from models import database
    from service import audience, evidence

    database.bind(DB_URL, 2)
    db = database.db
    shop, reports = seed(db, args.contacts)
    results: dict = {"contacts": args.contacts, "reports": len(reports)}
    sql_ms, sql_count = timed(lambda: audience.count(shop, None), args.runs)
    orm_ms, orm_count = timed(lambda: peewee_count(shop), args.runs)
    assert sql_count == orm_count, (sql_count, orm_count)
    results["audience_count"] = {"eligible": sql_count, "sql_ms": sql_ms, "peewee_ms": orm_ms}
    params = {"ids": reports, "window": 3_600_000}
    named_ms, named = timed(lambda: db.execute_sql(evidence._NAMED, params).fetchall(), args.runs)
    naive_ms, naive = timed(lambda: db.execute_sql(NAIVE_NAMED, params).fetchall(), args.runs)
    results["resolve_reported_named"] = {
        "found": len(named),
        "sql_ms": named_ms,
        "plan": top_plan(db, evidence._NAMED, params),
        "naive_text_join_found": len(naive),
        "naive_text_join_ms": naive_ms,
        "naive_plan": top_plan(db, NAIVE_NAMED, params),
    }
    results["mark_sent_500_ms"] = mark_sent_cost(db, args.runs)
    results["contact_ids_check_20000"] = contact_ids_check(db, shop, args.runs)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
