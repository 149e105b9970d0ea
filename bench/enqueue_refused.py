"""How fast a campaign the shop cannot pay is refused, on real processes (not a test).

    .venv/bin/python bench/enqueue_refused.py [--recipients 100000] [--runs 5]

Runs against BENCH_DATABASE_URL / BENCH_REDIS_URL like `bench/pipeline.py` (its schema is
dropped and migrated again). A shop with 10 credits and `--recipients` contacts enqueues a bulk
and a personalised campaign `--runs` times each: every call must be a 402 that wrote nothing
(no recipient, no batch, the campaign still a draft). Then a shop that can pay enqueues the bulk
campaign once, for the cost of the accepted path.
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

from bench.pipeline import make_stack, query, reset_database  # noqa: E402

TEXTS = {
    "bulk": "Spring sale: 20% off everything today",
    "personalised": "Hi {first_name}, your personal offer is waiting",
}


def refused_enqueue(stack, key: str, text: str, runs: int) -> dict:
    campaign = stack.call(
        "POST",
        "/campaigns",
        key,
        json={"name": "refused", "text": text, "append_unsubscribe": False},
    ).json()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
        timings.append(time.perf_counter() - started)
        assert answer.status_code == 402, answer.text
    written = query(
        "SELECT (SELECT count(*) FROM campaign_recipient WHERE campaign_id = %s),"
        " (SELECT count(*) FROM send_batch WHERE campaign_id = %s),"
        " (SELECT status FROM campaign WHERE id = %s)",
        campaign["id"],
        campaign["id"],
        campaign["id"],
    )[0]
    assert written == (0, 0, "draft"), written
    return {
        "median_s": round(statistics.median(timings), 3),
        "max_s": round(max(timings), 3),
        "answer": answer.json()["description"],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    reset_database()
    stack = make_stack(64, 1, 1)
    results: dict = {"recipients": args.recipients}
    try:
        stack.start_web(workers=2)
        _, poor = stack.create_shop("poor.example", credits=10)
        stack.import_contacts(poor, args.recipients)
        for label, text in TEXTS.items():
            results[f"refused_{label}"] = refused_enqueue(stack, poor, text, args.runs)
        _, rich = stack.create_shop("rich.example", credits=10 * args.recipients)
        stack.import_contacts(rich, args.recipients)
        campaign = stack.call(
            "POST",
            "/campaigns",
            rich,
            json={"name": "accepted", "text": TEXTS["bulk"], "append_unsubscribe": False},
        ).json()
        started = time.perf_counter()
        answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", rich)
        results["accepted_bulk_s"] = round(time.perf_counter() - started, 3)
        assert answer.status_code == 202, answer.text
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
