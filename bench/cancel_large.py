"""How long a merchant's cancel of a large campaign takes to stop its sends: the cancel as one
transaction (before) against the cancel committed first, its pending recipients then skipped in
chunks by the worker (now).

    BENCH_DATABASE_URL=... .venv/bin/python bench/cancel_large.py [--recipients 1000000]

Its schema is dropped and migrated again. Seeds, in SQL, two `sending` campaigns of
`--recipients` pending recipients each, and their reservations. Then, on the first, the
statements of the cancel as it was, in one transaction (the campaign's status, then every
pending recipient skipped); on the second, `campaigns.cancel` as it is, then the worker's
`updateCampaignStatus` that skips in chunks of RECIPIENT_CHUNK_SIZE (default 20,000). For
each: the seconds until another session sees the campaign `cancelled` (from then on no claim
takes a recipient: a claim needs it `sending`), until the cancel returned, and (now) what the
worker's skipping took after it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import DB_URL, reset_database  # noqa: E402


def seed(db, recipients: int) -> None:
    db.execute_sql(
        "INSERT INTO shop (id, domain, name, timezone) VALUES (1, 'bench.example', 'b', 'UTC')"
    )
    for campaign_id in (1, 2):
        db.execute_sql(
            "INSERT INTO campaign (id, shop_id, name, text, status, started_at,"
            " recipients_created_at) VALUES (%s, 1, 'c', 't', 'sending', now(), now())",
            (campaign_id,),
        )
        db.execute_sql(
            "INSERT INTO credit_reservation (shop_id, campaign_id, key, amount)"
            " VALUES (1, %s, 'shop:1:campaign:' || %s, %s)",
            (campaign_id, campaign_id, recipients),
        )
        db.execute_sql(
            "INSERT INTO campaign_recipient (campaign_id, shop_id, contact_id, phone)"
            " SELECT %s, 1, n, '+3069' || lpad(n::text, 8, '0') FROM generate_series(1, %s) n",
            (campaign_id, recipients),
        )
    db.execute_sql("ANALYZE")


def watched(campaign_id: int, cancel) -> dict[str, float]:
    """Run `cancel`; meanwhile poll from another session until the campaign reads cancelled."""
    seen: dict[str, float] = {}
    observer = psycopg2.connect(DB_URL)
    observer.autocommit = True
    started = time.perf_counter()

    def poll() -> None:
        with observer.cursor() as cursor:
            while True:
                cursor.execute("SELECT status FROM campaign WHERE id = %s", (campaign_id,))
                if cursor.fetchone()[0] == "cancelled":
                    seen["visible_s"] = round(time.perf_counter() - started, 2)
                    return
                time.sleep(0.01)

    thread = threading.Thread(target=poll)
    thread.start()
    cancel()
    seen["returned_s"] = round(time.perf_counter() - started, 2)
    thread.join()
    observer.close()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1_000_000)
    args = parser.parse_args()
    reset_database()
    from models import database
    from service import audit, campaigns, delivery
    from service.infra import config, dispatch

    database.bind(DB_URL, 4)
    db = database.db
    seed(db, args.recipients)
    settings = config.load({"DATABASE_URL": DB_URL})

    def before() -> None:
        with db.atomic():
            db.execute_sql(
                "UPDATE campaign SET status = 'cancelled', finished_at = now() WHERE id = 1"
            )
            db.execute_sql(
                "UPDATE campaign_recipient SET status = 'skipped', error = 'cancelled',"
                " updated_at = now() WHERE campaign_id = 1 AND status = 'pending'"
            )

    # The cancel publishes the skipping to the worker (`updateCampaignStatus`): run here, after
    # the cancel returned, as the worker would.
    published: list[int] = []
    dispatch.publish_status_update = published.append  # type: ignore[assignment]
    now = watched(2, lambda: campaigns.cancel(1, 2, settings, audit.ADMIN))
    started = time.perf_counter()
    assert published == [2]
    delivery.refresh_campaign(2, settings, audit.WORKER)
    now["worker_skipped_s"] = round(time.perf_counter() - started, 2)
    left = db.execute_sql(
        "SELECT count(*) FROM campaign_recipient WHERE campaign_id = 2 AND status = 'pending'"
    ).fetchone()[0]
    assert left == 0, left
    released = db.execute_sql(
        "SELECT status, released FROM credit_reservation WHERE campaign_id = 2"
    ).fetchone()
    assert released == ("released", args.recipients), released
    results = {
        "recipients": args.recipients,
        "chunk": settings.recipient_chunk_size,
        "one_transaction": watched(1, before),
        "committed_first_worker_chunks": now,
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
