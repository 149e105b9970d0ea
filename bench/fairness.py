"""Fair admission benchmark on real processes (not a test): while shop A's big bulk campaign
sends, shop B launches 500-recipient campaigns one after another; how long until B's first
message reaches the provider, and until B's campaign completes, and what A's rate is; after
each of B's campaigns, B's test send of it to one number (the priority lane): how long until
the provider has it. Each mode runs on a fresh database and stack, side by side in one
invocation (`--modes`, comma-separated):

- `uncapped`: no provider rate limit (fair admission: SHOP_BATCHES_IN_FLIGHT, default 32);
- `capped`: PROVIDER_RATE_LIMIT=--rate-limit, with each shop's fair share of it;
- `capped-fcfs`: the same with PROVIDER_FAIR_SHARE=false (first come, first served);
- `capped-alone`: A alone under the cap (A's rate without B: what A loses is against this);
- `unbounded`: no provider cap and no admission bound (every batch published at enqueue).

    .venv/bin/python bench/fairness.py [--big 100000] [--tries 10] [--rate-limit 2000] [--gap 0]

Uses BENCH_DATABASE_URL / BENCH_REDIS_URL like bench/pipeline.py (its database is reset).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pipeline import make_stack, query, reset_database  # noqa: E402
from tests.e2e.stack import Stack, wait_for  # noqa: E402

SMALL = 500


def seconds_since(moment: float, iso: str | None) -> float | None:
    if iso is None:
        return None
    stamp = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    return round(stamp - moment, 2)


def create_shop(stack: Stack, domain: str, sender: str, credits: int) -> str:
    admin = stack.env["ADMIN_TOKEN"]
    shop = stack.call(
        "POST",
        "/admin/shops",
        admin,
        json={"domain": domain, "name": domain, "sender": sender, "require_consent": False},
    ).json()
    stack.call(
        "POST",
        f"/admin/shops/{shop['id']}/credits",
        admin,
        json={"amount": credits, "reference": "initial"},
    ).raise_for_status()
    return shop["api_key"]


def import_contacts(stack: Stack, key: str, count: int, start: int) -> None:
    for offset in range(0, count, 10_000):
        chunk = [
            {"phone": f"+3069{start + i:08d}"} for i in range(offset, min(count, offset + 10_000))
        ]
        stack.call("POST", "/contacts", key, json={"contacts": chunk}).raise_for_status()


def launch(stack: Stack, key: str, text: str) -> tuple[int, float]:
    campaign = stack.call(
        "POST", "/campaigns", key, json={"name": "c", "text": text, "append_unsubscribe": False}
    ).json()
    began = time.time()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert answer.status_code == 202, answer.text
    return campaign["id"], began


def finished(stack: Stack, key: str, campaign_id: int) -> bool:
    return stack.progress(key, campaign_id)["status"] in ("completed", "failed")


def percentiles(values: list[float]) -> dict:
    """p50, p99 (nearest rank: with 10 tries, the largest) and max."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered) + 0.5) - 1))]

    return {"p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1], "all": ordered}


# Where a try's wait went, from the database (each column the first such moment of B's
# campaign): its audience created, its first batch published, its first recipients claimed by
# a window the limiter admitted.
_PHASES = """
SELECT c.id,
       extract(epoch FROM c.recipients_created_at),
       (SELECT extract(epoch FROM min(b.created_at)) FROM send_batch b WHERE b.campaign_id = c.id),
       (SELECT extract(epoch FROM min(r.claimed_at)) FROM campaign_recipient r
        WHERE r.campaign_id = c.id)
FROM campaign c WHERE c.id = ANY(%s)
"""


def phases(tries: list[dict]) -> None:
    """Adds to each try the seconds from its enqueue to each phase of `_PHASES`."""
    rows = {row[0]: row[1:] for row in query(_PHASES, [t["campaign_id"] for t in tries])}
    for t in tries:
        created, batched, claimed = rows.get(t["campaign_id"], (None, None, None))
        for name, moment in (("created", created), ("batched", batched), ("claimed", claimed)):
            t[f"{name}_s"] = None if moment is None else round(float(moment) - t["began"], 2)


def test_send(stack: Stack, key: str, campaign_id: int, phone: str) -> float:
    """Seconds from B's test send request to the provider's acceptance of it."""
    began = time.time()
    answer = stack.call("POST", f"/campaigns/{campaign_id}/test", key, json={"phone": phone})
    assert answer.status_code == 202, answer.text
    reference = f"test-{answer.json()['id']}"
    seen = wait_for(
        lambda: (lambda m: m if m["count"] else None)(stack.sim_messages(reference=reference)),
        120,
        "the test send",
        interval=0.02,
    )
    return seconds_since(began, seen["messages"][0]["received_at"]) or 0.0


MODES = {
    # name: (provider rate limit, fair share, admission bound, B tries)
    "uncapped": (False, True, None, True),
    "capped": (True, True, None, True),
    "capped-fcfs": (True, False, None, True),
    "capped-alone": (True, True, None, False),
    "unbounded": (False, True, 1_000_000_000, True),
}


def run(args: argparse.Namespace, mode: str) -> dict:
    capped, fair, bound, with_b = MODES[mode]
    in_flight = bound or args.in_flight
    reset_database()
    stack = make_stack(args.concurrency, args.processes, args.threads)
    stack.env["SHOP_BATCHES_IN_FLIGHT"] = str(in_flight)
    stack.env["PROVIDER_FAIR_SHARE"] = "true" if fair else "false"
    if capped:
        stack.env["PROVIDER_RATE_LIMIT"] = str(args.rate_limit)
    try:
        stack.start_sim("--no-dlr")
        stack.start_web(workers=2)
        stack.start_worker(processes=args.processes, threads=args.threads)
        stack.start_clock()
        big_key = create_shop(stack, "a.example", "ShopA", 10_000_000)
        small_key = create_shop(stack, "b.example", "ShopB", 10_000_000)
        import_contacts(stack, big_key, args.big, 0)
        import_contacts(stack, small_key, SMALL, 50_000_000)

        big_id, big_began = launch(stack, big_key, "Spring sale: 20% off everything today")
        time.sleep(2)  # A's batches are in the queue when B arrives
        tries = []
        for attempt in range(args.tries if with_b else 0):
            if attempt and args.gap:
                time.sleep(args.gap)  # spread over A's life: creation, then the steady state
            if finished(stack, big_key, big_id):
                break
            before = stack.sim_messages(summary="1", **{"from": "ShopB"})["count"]
            small_id, began = launch(stack, small_key, f"Try {attempt}: members' preview")
            messages = wait_for(
                lambda seen=before: (lambda m: m if m["count"] > seen else None)(
                    stack.sim_messages(**{"from": "ShopB"})
                ),
                600,
                "B's first message",
                interval=0.05,
            )["messages"]
            first_call_s = seconds_since(began, messages[before]["received_at"])
            wait_for(lambda c=small_id: finished(stack, small_key, c), 900, "B", interval=0.05)
            complete_s = round(time.time() - began, 2)
            a_sending = not finished(stack, big_key, big_id)
            tries.append(
                {
                    "campaign_id": small_id,
                    "began": began,
                    "at_s": round(began - big_began, 1),  # since A's enqueue
                    "first_call_s": first_call_s,
                    "complete_s": complete_s,
                    "test_send_s": test_send(stack, small_key, small_id, f"+3069{50_000_000:08d}"),
                    "a_still_sending": a_sending,
                }
            )
        wait_for(lambda: finished(stack, big_key, big_id), 3600, "A", interval=0.5)
        a_summary = stack.sim_messages(summary="1", **{"from": "ShopA"})
        a_seconds = (
            datetime.fromisoformat(a_summary["last_at"].replace("Z", "+00:00")).timestamp()
            - big_began
        )
        # A's own rate while B's tries ran: the time B's messages took is not A's loss.
        during = [t for t in tries if t["a_still_sending"]]
        phases(tries)
        a_created = query(
            "SELECT extract(epoch FROM recipients_created_at) FROM campaign WHERE id = %s", big_id
        )[0][0]
        return {
            "mode": mode,
            "provider_rate_limit": args.rate_limit if capped else None,
            "fair_share": fair,
            "shop_batches_in_flight": in_flight,
            "a_recipients": args.big,
            "a_seconds": round(a_seconds, 1),
            "a_rate_per_s": round(args.big / a_seconds),
            "b_tries": len(tries),
            "b_tries_during_a": len(during),
            # Only tries that ended while A was still sending count: the others had the
            # provider to themselves.
            "b_first_call_s": percentiles([t["first_call_s"] for t in during]),
            "b_complete_s": percentiles([t["complete_s"] for t in during]),
            "test_send_s": percentiles([t["test_send_s"] for t in during]),
            # A's audience fully created, seconds after its enqueue.
            "a_created_s": None if a_created is None else round(float(a_created) - big_began, 1),
            "tries": [{k: v for k, v in t.items() if k != "began"} for t in tries],
        }
    finally:
        stack.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--rate-limit", type=int, default=2000)
    parser.add_argument("--modes", default="uncapped,capped,capped-fcfs,capped-alone")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument(
        "--gap", type=float, default=0.0, help="seconds between one try of B and the next"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {sorted(MODES)}")
    results = {
        "machine": f"{os.cpu_count()} cores",
        "load_average_before": os.getloadavg(),
        "args": vars(args),
        "runs": [run(args, mode) for mode in modes],
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
