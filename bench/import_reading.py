"""What reading a contact import costs, and what the web process pays for reading it in a child
(`api/import_processes.py`), side by side in one run: no database, no HTTP.

    .venv/bin/python bench/import_reading.py [--rows 10000] [--runs 5]

- `in the request`: `contact_import.merged` in this process (the GIL held throughout);
- `in the child`: the same through `import_processes.run`, as the web calls it (this process
  waits on a pipe, GIL released, except to send the body and unpickle the answer);
- `unpickling the answer`: the one C call of that round trip that holds this process's GIL;
- the child's resident memory after the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import import_processes  # noqa: E402
from api.contact_import import Upload, merged  # noqa: E402

CONSENT = {"source": "checkout", "collected_at": "2026-11-01T10:00:00Z"}


def median_ms(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = [
        {"phone": f"+3069{n:08d}", "first_name": f"N{n}", "consent": CONSENT}
        for n in range(args.rows)
    ]
    upload = Upload(False, json.dumps({"contacts": rows}).encode(), None, None)
    now = datetime.now(UTC)
    import_processes.configure(1)
    child = import_processes.run(os.getpid)  # started before anything is timed
    answer = pickle.dumps(merged(upload, now), protocol=pickle.HIGHEST_PROTOCOL)
    figures = {
        "rows": args.rows,
        "body_bytes": len(upload.raw),
        "in the request, ms": median_ms(lambda: merged(upload, now), args.runs),
        "in the child, ms": median_ms(lambda: import_processes.run(merged, upload, now), args.runs),
        "unpickling the answer, ms": median_ms(lambda: pickle.loads(answer), args.runs * 4),
        "answer_bytes": len(answer),
        "child RSS, MB": round(
            int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{child}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
            )
            / 1024,
            1,
        ),
    }
    import_processes.shutdown()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
