"""How long a campaign's check of its contact ids takes on a large shop (`UNKNOWN_CONTACTS` in
service/campaigns.py: an anti-join of the list against the shop's contacts, the first 20
unknown ids). Not a test: it prints the figures.

    flock /tmp/astronote-bench.lock .venv/bin/python bench/unknown_contacts.py \
        [--contacts 1000000] [--ids 500000] [--repeat 3]

Against BENCH_DATABASE_URL (default: the local database `astronote_bench`, wiped first): shop
A with `--contacts` contacts, shop B with a tenth as many, seeded with one `INSERT ... SELECT
generate_series` each. Each case is a list of `--ids` distinct ids, bound as one string
(`models.expressions.IdArray`, as a campaign's are), and timed `--repeat` times in one
session; beside it, the floor: the same list unnested and counted, with no check.

- `all known`: `--ids` of A's contacts, spread over all of them;
- `one unknown`: the same with its last id replaced by one of B's;
- `all B's`: `--ids` ids of B's contacts (every one unknown to A).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
FLOOR = "SELECT count(*) FROM unnest(%s::bigint[])"


def seed(shop_id: int, prefix: str, count: int) -> list[int]:
    from models.database import fetchall

    fetchall(
        "INSERT INTO contact (shop_id, phone, country, first_name, consent_source,"
        " consent_collected_at)"
        " SELECT %s, %s || lpad(g::text, 7, '0'), 'GR', 'N' || g, 'bench', now()"
        " FROM generate_series(1, %s) g",
        (shop_id, prefix, count),
    )
    return [row[0] for row in fetchall("SELECT id FROM contact WHERE shop_id = %s", (shop_id,))]


def timed(sql: str, params: tuple, repeat: int) -> tuple[float, object]:
    from models.database import db, fetchall

    times, result = [], None
    for _ in range(repeat):
        with db.atomic():
            started = time.perf_counter()
            result = fetchall(sql, params)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    common.reset(DB_URL, REDIS_URL)
    from models import database
    from models.expressions import IdArray
    from service import shops
    from service.campaigns import UNKNOWN_CONTACTS

    database.bind(DB_URL, 2)
    a, _ = shops.create_shop("a.myshopify.com", "A")
    b, _ = shops.create_shop("b.myshopify.com", "B")
    started = time.perf_counter()
    a_ids = seed(a.id, "+30690", args.contacts)
    b_ids = seed(b.id, "+30691", args.contacts // 10)
    database.fetchall("ANALYZE contact")
    seconds = time.perf_counter() - started
    print(f"seeded {args.contacts:,} + {len(b_ids):,} contacts in {seconds:.1f} s")

    rng = random.Random(7)
    known = rng.sample(a_ids, args.ids)
    cases = {
        "all known": known,
        "one unknown": known[:-1] + [b_ids[0]],
        "all B's": rng.sample(b_ids, min(args.ids, len(b_ids))),
    }
    print(f"\n{args.ids:,} distinct ids a list, median of {args.repeat}, ms\n")
    print("| list | check (UNKNOWN_CONTACTS) | floor (unnest and count) | unknown found |")
    print("|---|---|---|---|")
    for name, ids in cases.items():
        text = IdArray.of(ids)
        check_ms, found = timed(UNKNOWN_CONTACTS, (text, a.id), args.repeat)
        floor_ms, _ = timed(FLOOR, (text,), args.repeat)
        print(f"| {name} ({len(ids):,}) | {check_ms:.0f} | {floor_ms:.0f} | {len(found)} |")
    plan = database.fetchall("EXPLAIN " + UNKNOWN_CONTACTS, (IdArray.of(known), a.id))
    print("\nplan (all known):\n" + "\n".join("    " + row[0] for row in plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
