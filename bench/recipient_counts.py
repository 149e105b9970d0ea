"""What the progress counters' triggers cost the send path's statements (not a test).

    flock /tmp/astronote-bench.lock .venv/bin/python bench/recipient_counts.py [--rounds 5]

On BENCH_DATABASE_URL (a fresh schema): 100,000 pending recipients of one campaign, then, in
alternating rounds with the triggers of migration 0011 enabled and disabled, the statements a
batch of 500 is made of, by primary key as the send path runs them: the claim (pending ->
sending) and the persist (sending -> sent, with a message id). Each round takes 100 fresh
batches per mode, so both modes see the same table. Prints the milliseconds per statement of
each, and the insert of 20,000 recipients (a creation chunk) with and without.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
TRIGGERS = [f"campaign_recipient_counted_{event}" for event in ("insert", "update", "delete")]
BATCH = 500


def set_triggers(cursor, enabled: bool) -> None:
    for name in TRIGGERS:
        action = "ENABLE" if enabled else "DISABLE"
        cursor.execute(f"ALTER TABLE campaign_recipient {action} TRIGGER {name}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    common.reset(DB_URL, REDIS_URL)
    conn = psycopg2.connect(DB_URL)
    conn.autocommit = True
    cursor = conn.cursor()
    cursor.execute(
        "INSERT INTO shop (domain, name, require_consent) VALUES ('c.example', 'c', false)"
        " RETURNING id"
    )
    shop = cursor.fetchone()[0]
    cursor.execute(
        "INSERT INTO contact (shop_id, phone) SELECT %s, '+3069' || lpad(g::text, 8, '0')"
        " FROM generate_series(1, 140000) g",
        (shop,),
    )
    cursor.execute(
        "INSERT INTO campaign (shop_id, name, text, status) VALUES (%s, 'c', 't', 'sending')"
        " RETURNING id",
        (shop,),
    )
    campaign = cursor.fetchone()[0]
    insert_ms: dict[str, list[float]] = {"on": [], "off": []}
    for chunk, mode in enumerate(("on", "off") * 1):
        set_triggers(cursor, mode == "on")
        started = time.perf_counter()
        cursor.execute(
            "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone)"
            " SELECT %s, shop_id, id, phone FROM contact WHERE shop_id = %s"
            " ORDER BY id OFFSET %s LIMIT 20000",
            (campaign, shop, chunk * 20000),
        )
        insert_ms[mode].append((time.perf_counter() - started) * 1000)
    cursor.execute(
        "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone)"
        " SELECT %s, shop_id, id, phone FROM contact WHERE shop_id = %s ORDER BY id OFFSET 40000",
        (campaign, shop),
    )
    cursor.execute("VACUUM ANALYZE campaign_recipient")
    cursor.execute("SELECT id FROM campaign_recipient ORDER BY id")
    ids = [row[0] for row in cursor.fetchall()]
    batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
    per_round = len(batches) // (2 * args.rounds)
    timings: dict[str, dict[str, list[float]]] = {
        mode: {"claim": [], "persist": []} for mode in ("on", "off")
    }
    for round_no in range(args.rounds):
        for offset, mode in enumerate(("on", "off") if round_no % 2 == 0 else ("off", "on")):
            set_triggers(cursor, mode == "on")
            start = (2 * round_no + offset) * per_round
            for batch in batches[start : start + per_round]:
                started = time.perf_counter()
                cursor.execute(
                    "UPDATE campaign_recipient r SET status = 'sending', claimed_at = now(),"
                    " updated_at = now() WHERE r.id = ANY(%s) AND r.campaign_id + 0 = %s"
                    " AND r.status = 'pending'",
                    (batch, campaign),
                )
                timings[mode]["claim"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                cursor.execute(
                    "UPDATE campaign_recipient r SET status = 'sent', mitto_message_id = v.pid,"
                    " sent_at = now(), delivery_status = 'Queued', updated_at = now()"
                    " FROM unnest(%s::bigint[], %s::text[]) AS v(id, pid)"
                    " WHERE r.id = v.id AND r.status = 'sending'",
                    (batch, [f"m-{rid}" for rid in batch]),
                )
                timings[mode]["persist"].append((time.perf_counter() - started) * 1000)
    set_triggers(cursor, True)
    results = {
        "batches_per_mode": per_round * args.rounds,
        "insert_20000_ms": {mode: round(v[0], 1) for mode, v in insert_ms.items()},
        **{
            f"{statement}_ms_per_{BATCH}": {
                mode: round(statistics.median(timings[mode][statement]), 2)
                for mode in ("on", "off")
            }
            for statement in ("claim", "persist")
        },
        "load_average": os.getloadavg(),
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
