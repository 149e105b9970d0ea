"""The provider's rate limits seen from the provider (SPEC 4.2, issue 11): no second above
PROVIDER_RATE_LIMIT, the limit nearly reached, and one sender's SENDER_RATE_LIMIT costing
another sender nothing. Not a test: it prints the figures, side by side in one run.

    .venv/bin/python bench/ratelimit.py [--seconds 60] [--rate 200] [--sender-rate 50]

Set-up, on real processes: the simulator (no delivery reports), gunicorn and a Dramatiq
worker (`--processes 2 --threads 4`, the Procfile's `SEND_CONCURRENCY=64`), against
BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the local database `astronote_ratelimit_bench`,
created if missing, and TEST_REDIS_URL or Redis db 5), which it wipes first.

1. PROVIDER_RATE_LIMIT=`--rate`: one shop's bulk campaign large enough to send for longer
   than `--seconds`. Over the first `--seconds` after its first message: messages accepted,
   the rate, and the most in any sliding one-second window (the simulator's timeline).
2. PROVIDER_RATE_LIMIT=`--rate`, SENDER_RATE_LIMIT=`--sender-rate`: shop B (its own sender)
   sends a campaign alone; then shop A (another sender) starts a campaign of about
   `--seconds` at its sender's limit, and B sends the same campaign again 5 s later. B's
   time to its first message and its rate, alone and beside A: equal if A's throttled
   batches hold no worker B needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.conftest import ADMIN_TOKEN, DLR_WEBHOOK_SECRET, SECRET_KEY  # noqa: E402
from tests.e2e.stack import CONSENT, Stack, wait_for  # noqa: E402

DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/astronote_ratelimit_bench"
)
REDIS_URL = os.environ.get(
    "BENCH_REDIS_URL", os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
)
TEXT = "Clearance: everything must go"


def reset() -> None:
    common.reset(DB_URL, REDIS_URL)


# PROVIDER_FAIR_SHARE and PROVIDER_RATE_LOOKAHEAD_MS of the stacks started next.
FAIR_SHARE = ["true"]
LOOKAHEAD = ["60"]
MARGIN = ["30"]


def start(label: str, **env: str) -> Stack:
    stack = Stack(
        {
            "DATABASE_URL": DB_URL,
            "REDIS_URL": REDIS_URL,
            "BROKER_URL": "",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DLR_WEBHOOK_SECRET": DLR_WEBHOOK_SECRET,
            "SECRET_KEY": SECRET_KEY,
            "MITTO_API_KEY": "bench-key",
            "API_RATE_LIMIT": "5000/second",
            "PROVIDER_FAIR_SHARE": FAIR_SHARE[0],
            "PROVIDER_RATE_LOOKAHEAD_MS": LOOKAHEAD[0],
            "PROVIDER_RATE_MARGIN_MS": MARGIN[0],
            **env,
        },
        f"bench-ratelimit-{label}",
    )
    stack.start_sim("--no-dlr")
    stack.start_web()
    stack.start_worker(processes=2, threads=4)
    return stack


def shop(stack: Stack, domain: str, sender: str, contacts: int, start_at: int) -> str:
    admin = ADMIN_TOKEN
    created = stack.call(
        "POST", "/admin/shops", admin, json={"domain": domain, "name": domain, "sender": sender}
    )
    created.raise_for_status()
    body = created.json()
    stack.call(
        "POST",
        f"/admin/shops/{body['id']}/credits",
        admin,
        json={"amount": contacts * 3, "reference": "initial"},
    ).raise_for_status()
    key = body["api_key"]
    for offset in range(0, contacts, 10_000):
        chunk = [
            {"phone": f"+30690{start_at + i:07d}", "consent": CONSENT}
            for i in range(offset, min(contacts, offset + 10_000))
        ]
        stack.call("POST", "/contacts", key, json={"contacts": chunk}).raise_for_status()
    return key


def launch(stack: Stack, key: str) -> tuple[int, float]:
    fields = {"name": "c", "text": TEXT, "append_unsubscribe": False}  # one text: /smsbulk
    campaign = stack.call("POST", "/campaigns", key, json=fields).json()
    began = time.time()
    answer = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert answer.status_code == 202, answer.text
    return campaign["id"], began


def sent_times(stack: Stack, sender: str) -> list[float]:
    """When each message of `sender` reached the simulator (the time a provider counts)."""
    return requests.get(
        f"{stack.sim}/_sim/timeline", params={"from": sender, "times": "1"}, timeout=60
    ).json()["sent_at"]


def most_in_window(times: list[float], span: float = 1.0) -> int:
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= span:
            start += 1
        most = max(most, end - start + 1)
    return most


def rate_phase(rate: int, seconds: float) -> dict:
    stack = start("rate", PROVIDER_RATE_LIMIT=str(rate))
    try:
        recipients = int(rate * (seconds + 10))
        key = shop(stack, "rate.example", "RateShop", recipients, 0)
        campaign_id, _ = launch(stack, key)
        stack.wait_finished(key, campaign_id, timeout=seconds * 3 + 120)
        times = sent_times(stack, "RateShop")
        first = times[0]
        in_span = [at for at in times if at < first + seconds]
        timeline = requests.get(f"{stack.sim}/_sim/timeline", timeout=30).json()
        per_second = [n for _, n in timeline["per_second"]]
        return {
            "recipients": recipients,
            "sent": len(times),
            "in_span": len(in_span),
            "rate": len(in_span) / seconds,
            "max_1s": most_in_window(times),
            "sim_max_1s": timeline["max_in_window"],
            "clock_seconds_min": min(per_second[1:-1]),
            "clock_seconds_max": max(per_second),
            "throttled": requests.get(f"{stack.sim}/_sim/stats", timeout=5).json()["throttled"],
        }
    finally:
        stack.close()


def b_run(stack: Stack, key: str) -> dict:
    before = len(sent_times(stack, "ShopB"))
    campaign_id, began = launch(stack, key)
    stack.wait_finished(key, campaign_id, timeout=600)
    times = sent_times(stack, "ShopB")[before:]
    return {
        "first_after_s": times[0] - began,
        "duration_s": times[-1] - times[0],
        "rate": (len(times) - 1) / (times[-1] - times[0]),
        "max_1s": most_in_window(times),
        "sent": len(times),
    }


def sender_phase(rate: int, sender_rate: int, seconds: float, b_size: int) -> dict:
    stack = start("senders", PROVIDER_RATE_LIMIT=str(rate), SENDER_RATE_LIMIT=str(sender_rate))
    try:
        a_size = int(sender_rate * seconds)
        key_a = shop(stack, "a.example", "ShopA", a_size, 0)
        key_b = shop(stack, "b.example", "ShopB", b_size, 5_000_000)
        alone = b_run(stack, key_b)
        campaign_a, _ = launch(stack, key_a)
        wait_for(lambda: len(sent_times(stack, "ShopA")) > 0, 30, "shop A sending")
        time.sleep(5)
        beside = b_run(stack, key_b)
        a_progress = stack.progress(key_a, campaign_a)
        stack.wait_finished(key_a, campaign_a, timeout=seconds * 3 + 120)
        a_times = sent_times(stack, "ShopA")
        return {
            "a_size": a_size,
            "b_size": b_size,
            "alone": alone,
            "beside": beside,
            "a_sending_while_b": a_progress["status"] == "sending",
            "a_rate": (len(a_times) - 1) / (a_times[-1] - a_times[0]),
            "a_max_1s": most_in_window(a_times),
        }
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--sender-rate", type=int, default=50)
    parser.add_argument("--b-size", type=int, default=500)
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--skip-senders", action="store_true")
    parser.add_argument("--fair-share", choices=("true", "false"), default="true")
    parser.add_argument(
        "--lookahead",
        default="60",
        help="PROVIDER_RATE_LOOKAHEAD_MS; several, comma-separated, run one after the other",
    )
    parser.add_argument(
        "--margin",
        default="30",
        help="PROVIDER_RATE_MARGIN_MS, one per --lookahead (or one for all)",
    )
    args = parser.parse_args()
    FAIR_SHARE[0] = args.fair_share
    lookaheads = [value.strip() for value in args.lookahead.split(",")]
    margins = [value.strip() for value in args.margin.split(",")]
    for i, lookahead in enumerate(lookaheads):
        LOOKAHEAD[0], MARGIN[0] = lookahead, margins[min(i, len(margins) - 1)]
        print(
            f"== PROVIDER_RATE_LOOKAHEAD_MS={LOOKAHEAD[0]} PROVIDER_RATE_MARGIN_MS={MARGIN[0]}",
            flush=True,
        )
        phases(args)


def phases(args: argparse.Namespace) -> None:
    reset()
    if not args.skip_rate:
        r = rate_phase(args.rate, args.seconds)
        print(f"PROVIDER_RATE_LIMIT={args.rate}, bulk campaign of {r['recipients']:,}")
        print(f"  sent over the first {args.seconds:.0f} s: {r['in_span']:,}")
        print(f"  achieved rate: {r['rate']:.1f}/s ({r['rate'] / args.rate:.1%} of the limit)")
        print(f"  most in any sliding 1 s window: {r['max_1s']} (simulator: {r['sim_max_1s']})")
        print(
            f"  per clock second (whole seconds only): {r['clock_seconds_min']} to "
            f"{r['clock_seconds_max']}; 429s: {r['throttled']}",
            flush=True,
        )
        reset()

    if args.skip_senders:
        return
    s = sender_phase(args.rate, args.sender_rate, args.seconds, args.b_size)
    print(
        f"PROVIDER_RATE_LIMIT={args.rate}, SENDER_RATE_LIMIT={args.sender_rate}: "
        f"shop B ({s['b_size']} recipients), alone and beside shop A ({s['a_size']:,})"
    )
    for label in ("alone", "beside"):
        b = s[label]
        print(
            f"  B {label:6}: first message {b['first_after_s']:.2f} s after enqueue, "
            f"{b['rate']:.1f}/s over {b['duration_s']:.1f} s, most in 1 s {b['max_1s']}, "
            f"sent {b['sent']}"
        )
    print(
        f"  A: {s['a_rate']:.1f}/s, most in 1 s {s['a_max_1s']} "
        f"(still sending when B finished: {s['a_sending_while_b']})",
        flush=True,
    )


if __name__ == "__main__":
    main()
