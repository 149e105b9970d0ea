"""The enqueue of a campaign whose audience is a long list of contact ids (issue 11,
deliverable 4: the enqueue answers within 1 s at any audience size), both ways it can go, in one
run: bounded by the list's length (one text, and the shop's credits cover every id) and counted
(they do not, or the text is personalised: the eligible audience is counted, by name shape for
a personalised text, before anything is reserved).

    BENCH_DATABASE_URL=... .venv/bin/python bench/list_enqueue.py [--ids 1000000] [--runs 3]

Its schema is dropped and migrated again (like `bench/pipeline.py`). Seeds, in SQL, one shop of
`--ids` contacts, one of them opted out; each run creates two campaigns to every contact's id
(one text, and one with `{first_name}`) and times `enqueue` in process (no HTTP, no worker: the
creation it publishes is not run). The counted runs give the shop one credit less than the
list's length, so the bound cannot be taken and the count (one fewer) is; they run twice, with
the list joined in PostgreSQL from the campaign's row (past `audience.LONG_LIST`, as the enqueue
does) and with its ids read and bound as a literal (as it did before: the floor compared to).
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

from bench import common  # noqa: E402
from bench.pipeline import DB_URL, REDIS_URL, reset_database  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--short-lists", default="10001,100000")
    args = parser.parse_args()
    reset_database()
    from models import database
    from service import audience, audit, campaigns, credits, shops
    from service.enqueue import enqueue
    from service.infra import broker, config

    settings = config.load(common.stack_env(DB_URL, REDIS_URL))
    config.override(settings)
    database.bind(DB_URL, 4)
    broker.setup_broker(settings)
    shop, _ = shops.create_shop("list.example", "list", require_consent=False)
    database.execute(
        "INSERT INTO contact (shop_id, phone, country, first_name)"
        " SELECT %s, '+3069' || lpad(g::text, 8, '0'), 'GR', 'N' || g"
        " FROM generate_series(1, %s) g",
        (shop.id, args.ids),
    )
    database.execute(
        "UPDATE contact SET opted_out_at = now() WHERE id = (SELECT min(id) FROM contact)"
    )
    database.execute("ANALYZE contact")
    ids = [row[0] for row in database.fetchall("SELECT id FROM contact ORDER BY id")]
    started = time.perf_counter()
    campaigns.create(shop.id, "list", "Flash sale", ids, False)
    create_s = time.perf_counter() - started
    timings: dict[str, list[float]] = {}
    answers: dict[str, dict] = {}
    joined_past = audience.LONG_LIST
    for _ in range(args.runs):
        for credits_given, joined in (("ample", True), ("short", True), ("short", False)):
            # The list joined in PostgreSQL (now), or its ids read and bound (before: the floor)
            audience.LONG_LIST = joined_past if joined else args.ids + 1
            for text in ("Flash sale today", "Hi {first_name}, flash sale today"):
                # Enough for every id at its widest text, or one credit short of one each.
                balance = 10 * args.ids if credits_given == "ample" else args.ids - 1
                database.execute("UPDATE credit_reservation SET status = 'released'")
                database.execute(
                    "UPDATE shop SET credit_balance = %s WHERE id = %s", (balance, shop.id)
                )
                credits.summary(shop.id)  # the same reads as a real enqueue's first
                campaign = campaigns.create(shop.id, "list", text, ids, False)
                began = time.perf_counter()
                result = enqueue(shop.id, campaign.id, settings, audit.ADMIN)
                # Labelled by what the enqueue did: bounded answers the list's length.
                did = "bounded" if result.recipients == args.ids else "counted"
                kind = "personalised" if "{" in text else "one text"
                how = "" if did == "bounded" else (", joined" if joined else ", ids bound")
                label = f"{did} ({credits_given} credits{how}), {kind}"
                timings.setdefault(label, []).append(time.perf_counter() - began)
                answers[label] = {
                    "recipients": result.recipients,
                    "reserved_credits": result.reserved_credits,
                }
    # Shorter lists of the same shop, counted directly both ways (no enqueue): what a list just
    # past LONG_LIST costs joined, where the hash join reads every contact of the shop once.
    listed: dict[str, dict[str, float]] = {}
    for size in [int(n) for n in args.short_lists.split(",") if n]:
        short = sorted(ids[1 :: max(1, len(ids) // size)][:size])
        campaign = campaigns.create(shop.id, "short", "Hi {first_name}", short, False)
        ways = count_ways(shop.id, campaign.id)
        listed[f"{len(short)} ids"] = {
            way: round(statistics.median(seconds(count) for _ in range(3)) * 1000, 1)
            for way, count in ways.items()
        }
    print(
        json.dumps(
            {
                "short_lists_ms_median": listed,
                "ids": args.ids,
                "campaign_create_s": round(create_s, 2),
                "enqueue_s_median": {k: round(statistics.median(v), 3) for k, v in timings.items()},
                "enqueue_s_each": {k: [round(x, 3) for x in v] for k, v in timings.items()},
                "answers": answers,
            },
            indent=2,
        )
    )
    return 0


def count_ways(shop_id: int, campaign_id: int) -> dict:
    """The list's audience counted joined in PostgreSQL and with its ids read and bound."""
    from service import audience

    return {
        "joined count": lambda: audience.count(shop_id, None, list_of=campaign_id),
        "ids bound count": lambda: audience.count(shop_id, read_list(campaign_id)),
        "joined by name shape": lambda: audience.count_by_name_shape(
            shop_id, None, list_of=campaign_id
        ),
        "ids bound by name shape": lambda: audience.count_by_name_shape(
            shop_id, read_list(campaign_id)
        ),
    }


def read_list(campaign_id: int) -> list[int]:
    from models import database

    return database.fetchall("SELECT contact_ids FROM campaign WHERE id = %s", (campaign_id,))[0][0]


def seconds(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


if __name__ == "__main__":
    raise SystemExit(main())
