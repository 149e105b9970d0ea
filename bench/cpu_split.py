"""Where the CPU goes while a bulk campaign is sent: CPU seconds per process kind.

    .venv/bin/python bench/cpu_split.py [--recipients 100000]

Same set-up as bench/pipeline.py (its database and Redis); reads utime+stime of every
PostgreSQL, gunicorn, Dramatiq, simulator and Redis process before and after the campaign.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline  # noqa: E402

KINDS = (
    ("postgres", "postgres"),
    ("gunicorn", "web"),
    ("dramatiq", "worker"),
    ("provider-sim", "simulator"),
    ("redis", "redis"),
)


def cpu_seconds() -> dict[tuple[str, str], float]:
    tick, seconds = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        kind = next((name for marker, name in KINDS if marker in command), None)
        if kind:
            seconds[(kind, pid)] = (int(stat[11]) + int(stat[12])) / tick
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args()
    pipeline.reset_database()
    stack = pipeline.make_stack(64, 2, 4)
    try:
        stack.start_sim("--no-dlr")
        stack.start_web(workers=2)
        stack.start_worker(processes=2, threads=4)
        _, key = stack.create_shop("cpu.example", credits=10_000_000)
        stack.import_contacts(key, args.recipients)
        time.sleep(2)
        before = cpu_seconds()
        result = pipeline.run_campaign(
            stack, key, "Spring sale: 20% off everything today", unsubscribe=False
        )
        after = cpu_seconds()
    finally:
        stack.close()
    split: dict[str, float] = {}
    for (kind, pid), total in after.items():
        split[kind] = split.get(kind, 0.0) + total - before.get((kind, pid), 0.0)
    print(
        json.dumps(
            {"campaign": result, "cpu_seconds": {k: round(v, 1) for k, v in sorted(split.items())}}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
