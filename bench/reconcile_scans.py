"""What the reconciler's two searches for unknown outcomes cost on a table with a long history:
driven by the recipients (before) against driven by the counters and the reports (now).

    BENCH_DATABASE_URL=... .venv/bin/python bench/reconcile_scans.py [--old 2000000] [--runs 10]
    BENCH_DATABASE_URL=... .venv/bin/python bench/reconcile_scans.py --existing  # as it is

Its schema is dropped and migrated again. Seeds, in SQL, one shop with `--old` sent recipients
in 200 completed campaigns (the history), a sending campaign of 10,000 with 100 claims timed
out, and a campaign finished an hour ago with 50 recipients failed as `unknown_outcome`, for
which 50 unapplied delivery reports name them by id and number. Then times, median of
`--runs`, the two alternating, each in a transaction rolled back:
- failing timed-out claims: the UPDATE over every open campaign's recipients (before) against
  `reconcile.fail_unknown_outcomes` (campaigns whose counters say some are in flight);
- finding evidence: the join of recipients of unknown outcome with reports (before) against
  the unapplied reports with a reference read through `evidence._NAMED` (now).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import DB_URL, reset_database  # noqa: E402

BEFORE_FAIL = """
UPDATE campaign_recipient SET status = 'failed', error = 'unknown_outcome', updated_at = now()
WHERE status = 'sending' AND claimed_at < now() - interval '5 minutes'
  AND campaign_id IN (SELECT id FROM campaign WHERE status IN ('sending', 'paused', 'cancelled'))
"""

BEFORE_EVIDENCE = """
SELECT DISTINCT ON (r.id) r.id, d.provider_id
FROM campaign_recipient r
JOIN delivery_report d ON d.provider_id IS NOT NULL AND (
    (d.reference = r.id::text AND (d."to" IS NULL OR d."to" IN (r.phone, ltrim(r.phone, '+'))))
    OR (d.reference = r.batch_key AND d."to" IN (r.phone, ltrim(r.phone, '+'))))
JOIN campaign c ON c.id = r.campaign_id
WHERE (c.status IN ('sending', 'paused') OR c.finished_at > now() - interval '7 days')
  AND ((r.status = 'sending' AND r.claimed_at < now() - interval '5 minutes')
       OR (r.status = 'failed' AND r.error = 'unknown_outcome'))
  AND NOT EXISTS (SELECT 1 FROM campaign_recipient o WHERE o.mitto_message_id = d.provider_id)
ORDER BY r.id, d.id
"""

NOW_EVIDENCE_REPORTS = """
SELECT id FROM delivery_report
WHERE applied_at IS NULL AND provider_id IS NOT NULL AND reference IS NOT NULL
ORDER BY id LIMIT 1000
"""


def seed(db, old: int) -> None:
    db.execute_sql(
        "INSERT INTO shop (id, domain, name, timezone) VALUES (1, 'bench.example', 'b', 'UTC')"
    )
    db.execute_sql(
        "INSERT INTO contact (shop_id, phone) SELECT 1, '+3069' || lpad(n::text, 8, '0')"
        " FROM generate_series(1, 20000) n"
    )
    db.execute_sql(
        "INSERT INTO campaign (id, shop_id, name, text, status, finished_at,"
        " recipients_created_at) SELECT n, 1, 'c', 't', 'completed', now() - interval '30 days',"
        " now() FROM generate_series(1, 200) n"
    )
    db.execute_sql(
        "INSERT INTO campaign (id, shop_id, name, text, status, started_at, recipients_created_at)"
        " VALUES (201, 1, 's', 't', 'sending', now(), now())"
    )
    db.execute_sql(
        "INSERT INTO campaign (id, shop_id, name, text, status, finished_at,"
        " recipients_created_at) VALUES (202, 1, 'f', 't', 'completed', now() - interval '1 hour',"
        " now())"
    )
    db.execute_sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status,"
        " mitto_message_id, sent_at) SELECT 1 + n %% 200, 1, n / 200 + 1,"
        " '+3069' || lpad((n / 200 + 1)::text, 8, '0'), 'sent', 'old-' || n, now()"
        " FROM generate_series(0, %s - 1) n",
        (old,),
    )
    db.execute_sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status,"
        " claimed_at) SELECT 201, 1, n, '+3069' || lpad(n::text, 8, '0'),"
        " CASE WHEN n <= 100 THEN 'sending' ELSE 'pending' END,"
        " CASE WHEN n <= 100 THEN now() - interval '1 hour' END FROM generate_series(1, 10000) n"
    )
    db.execute_sql(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone, status, error)"
        " SELECT 202, 1, n, '+3069' || lpad(n::text, 8, '0'), 'failed', 'unknown_outcome'"
        " FROM generate_series(1, 50) n"
    )
    db.execute_sql(
        'INSERT INTO delivery_report (provider_id, reference, "to", status)'
        " SELECT 'late-' || r.id, r.id::text, ltrim(r.phone, '+'), 'Delivered'"
        " FROM campaign_recipient r WHERE r.campaign_id = 202"
    )
    db.execute_sql("ANALYZE")


def alternating(runs: int, **candidates) -> dict[str, float]:
    """Median ms of each candidate (a callable run in a transaction rolled back)."""
    from models.database import db

    timings: dict[str, list[float]] = {name: [] for name in candidates}
    found: dict[str, int] = {}
    for _ in range(runs):
        for name, run in candidates.items():
            with db.atomic() as transaction:
                started = time.perf_counter()
                found[name] = run()
                timings[name].append((time.perf_counter() - started) * 1000)
                transaction.rollback()
    return {
        **{f"{name}_ms": round(statistics.median(values), 1) for name, values in timings.items()},
        **{f"{name}_found": count for name, count in found.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--existing", action="store_true", help="measure BENCH_DATABASE_URL as it is (no seed)"
    )
    args = parser.parse_args()
    if not args.existing:
        reset_database()
    from models import database
    from service import evidence, reconcile
    from service.infra import config

    database.bind(DB_URL, 2)
    db = database.db
    started = time.perf_counter()
    if args.existing:
        args.old = db.execute_sql("SELECT count(*) FROM campaign_recipient").fetchone()[0]
    else:
        seed(db, args.old)
    settings = dataclasses.replace(config.load({"DATABASE_URL": DB_URL}), claim_timeout_ms=300_000)
    results: dict = {"old_recipients": args.old, "seed_s": round(time.perf_counter() - started)}
    results["fail_unknown_outcomes"] = alternating(
        args.runs,
        before=lambda: db.execute_sql(BEFORE_FAIL).rowcount,
        now=lambda: reconcile.fail_unknown_outcomes(settings),
    )
    params = {"window": settings.evidence_window_ms}

    def now_evidence() -> int:
        ids = [row[0] for row in db.execute_sql(NOW_EVIDENCE_REPORTS).fetchall()]
        return len(db.execute_sql(evidence._NAMED, {**params, "ids": ids}).fetchall())

    results["evidence"] = alternating(
        args.runs,
        before=lambda: len(db.execute_sql(BEFORE_EVIDENCE).fetchall()),
        now=now_evidence,
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
