"""CPU cost of the quiet-hours decision per recipient, in the worker (not a test).

    .venv/bin/python bench/quiet_hours.py [--recipients 100000] [--window 64]

Splits `--recipients` numbers into windows of `--window` as a batch's windows do, one
`QuietFilter` per window (its cache of zone sets lives one window), for: Greek numbers in the
day and at night (+30 has one zone: no number parsed), US numbers (+1 spans Guam to Hawaii,
so each number's own zones are looked up: the first look parses, later ones hit the
per-number cache), and Russian mobiles (sixteen zones each).
Compare with the send pipeline's cost per recipient (bench/RESULTS.md: 6,201 recipients/s,
161 us each).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import quiet_hours  # noqa: E402
from service.quiet_hours import QuietFilter, QuietHours  # noqa: E402

NIGHT = QuietHours(21 * 60, 8 * 60)


def run(label: str, rows: list, now: datetime, window: int) -> None:
    began = time.perf_counter()
    waiting = 0
    for start in range(0, len(rows), window):
        quiet = QuietFilter(NIGHT, "UTC", now)
        waiting += len(quiet.split(rows[start : start + window])[1])
    elapsed = time.perf_counter() - began
    per = elapsed / len(rows) * 1e6
    print(f"| {label} | {len(rows):,} | {waiting:,} | {per:.2f} us |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    n = args.recipients
    greek = [(i, f"+30690{i:07d}", "GR") for i in range(n)]
    # NANP numbers across many area codes (distinct numbers)
    area_codes = [212, 415, 312, 713, 808, 907, 305, 206, 602, 303]
    us = [
        (i, f"+1{area_codes[i % 10]}{200 + i // 10_000 % 800:03d}{i % 10_000:04d}", "US")
        for i in range(n)
    ]
    russian = [(i, f"+7916{i:07d}", "RU") for i in range(n)]
    day = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    night = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    print("| case | recipients | waiting | per recipient |")
    print("|---|---|---|---|")
    run("Greek, 14:00 Athens (country shortcut)", greek, day, args.window)
    run("Greek, 00:00 Athens (all wait)", greek, night, args.window)
    quiet_hours.number_zones_of.cache_clear()
    afternoon = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)  # 15:00 New York, 10:00 Honolulu
    run("US, 20:00 UTC, first look (area-code lookup)", us, afternoon, args.window)
    run("US, 20:00 UTC, again (per-number cache)", us, afternoon, args.window)
    run("US, 12:00 UTC (night in most zones), cached", us, day, args.window)
    quiet_hours.number_zones_of.cache_clear()
    run("Russian mobiles, 07:00 UTC, first look", russian, day.replace(hour=7), args.window)


if __name__ == "__main__":
    main()
