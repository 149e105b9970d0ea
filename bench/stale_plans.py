"""The send rate by campaign size, on a fresh database and on a large old one, in one run
(issue 11, deliverable 6; not a test).

    flock /tmp/astronote-bench.lock .venv/bin/python bench/stale_plans.py \
        [--sizes 10000,50000,100000] [--old 2000000] [--warm-up 2000]

One stack (as bench/million.py's). First on the fresh schema, where PostgreSQL's statistics
say `campaign_recipient` is empty while each campaign creates its recipients: a bulk campaign
of each size, one after the other. Then `--old` finished recipients of an old campaign are
written and analysed (a database that has sent for a while), and the same sizes again. A
statement whose plan walks the table (a campaign's rows, or all of them) shows as a rate that
falls with the size or with the old rows; per-batch statements that stay on the primary key
keep it flat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.million import (  # noqa: E402
    DB_URL,
    REDIS_URL,
    run_campaign,
    seed_contacts,
    seed_old_recipients,
    sql,
)
from tests.e2e.stack import Stack  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--old", type=int, default=2_000_000)
    # One campaign before the measured ones, so that the first measured size does not also pay
    # the stack's start (the workers' first connections and messages): 0 to measure it with.
    parser.add_argument("--warm-up", type=int, default=2000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="campaigns per size; the median one is reported"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict = {"machine": f"{os.cpu_count()} cores", "args": vars(args)}
    common.reset(DB_URL, REDIS_URL)
    env = common.stack_env(DB_URL, REDIS_URL, LOG_LEVEL="INFO")
    stack = Stack(env, f"stale-{int(time.time())}")
    try:
        stack.start_sim("--no-dlr")
        stack.start_web(workers=2)
        stack.start_worker(processes=2, threads=4)
        stack.start_clock()
        if args.warm_up:
            shop_id, key = stack.create_shop("warm-up.example", credits=10_000_000)
            seed_contacts(shop_id, args.warm_up, "+30670")
            results["warm_up"] = run_campaign(stack, key, "warm-up")["rate_per_s"]
        for phase in ("fresh", "old"):
            if phase == "old":
                results["seed_old_s"] = seed_old_recipients(args.old)
            results[phase] = {}
            for number, size in enumerate(sizes):
                runs = []
                for attempt in range(args.repeat):
                    label = f"{phase}{number}r{attempt}"
                    shop_id, key = stack.create_shop(f"{label}.example", credits=10_000_000)
                    seed_contacts(shop_id, size, f"+3068{number}{len(phase)}{attempt}")
                    runs.append(run_campaign(stack, key, label))
                # The median run of the size by its rate (one run when --repeat 1).
                run = sorted(runs, key=lambda one: one["rate_per_s"])[len(runs) // 2]
                results[phase][size] = {
                    "rate_per_s": run["rate_per_s"],
                    "campaign_rate_per_s": run["campaign_rate_per_s"],
                    "send_rate_per_s": run["send_rate_per_s"],
                    "total_s": run["total_s"],
                    "enqueue_ms": run["enqueue_ms"],
                    "longest_creation_transaction_ms": run["longest_creation_transaction_ms"],
                    "rates_of_each_run": [one["rate_per_s"] for one in runs],
                    "campaign_rates_of_each_run": [one["campaign_rate_per_s"] for one in runs],
                }
            for measure in ("rate_per_s", "campaign_rate_per_s", "send_rate_per_s"):
                rates = [results[phase][size][measure] for size in sizes]
                results[phase][f"slowest_vs_fastest_{measure}"] = round(min(rates) / max(rates), 2)
        results["recipients_in_table"] = sql("SELECT count(*) FROM campaign_recipient")[0][0]
        results["load_average"] = os.getloadavg()
    finally:
        stack.close()
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
