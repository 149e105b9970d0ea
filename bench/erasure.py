"""How long Shopify's shop/redact takes for a shop of N contacts (not a test).

    .venv/bin/python bench/erasure.py [--contacts 10000,50000]

In process, against BENCH_DATABASE_URL (its schema dropped and migrated again, as
`bench/pipeline.py` does): a shop imports N contacts (10,000 a call, as `POST /contacts`
takes them), then `erasure.erase_shop` runs as the webhook runs it. Shopify waits 5 s for a
webhook's answer and retries one that takes longer (the erasure is idempotent). Printed: the
import and erasure seconds, and what the erasure changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import DB_URL, reset_database  # noqa: E402
from models.database import bind  # noqa: E402
from service import audit, contacts, erasure, shops  # noqa: E402

SECRET = "bench-secret-key-" + "x" * 32


def run(size: int) -> None:
    shop, _ = shops.create_shop(f"erase-{size}.example", "Erase", require_consent=False)
    started = time.monotonic()
    for first in range(0, size, 10_000):
        rows = [
            {"phone": f"+30690{n:07d}", "first_name": "Ann"}
            for n in range(first, min(size, first + 10_000))
        ]
        contacts.import_contacts(shop.id, rows, secret=SECRET, actor=audit.ADMIN)
    imported = time.monotonic() - started
    started = time.monotonic()
    erased = erasure.erase_shop(shop.id, SECRET, audit.SHOPIFY_WEBHOOK)
    took = time.monotonic() - started
    print(
        f"| {size:,} | {imported:.2f} s | **{took:.2f} s** | {erased.contacts:,} contacts,"
        " each number kept as a digested suppression |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", default="10000,50000")
    args = parser.parse_args()
    reset_database()
    bind(DB_URL)
    print("| contacts | import | shop/redact | erased |")
    print("|---|---|---|---|")
    for size in (int(value) for value in args.contacts.split(",")):
        run(size)


if __name__ == "__main__":
    main()
