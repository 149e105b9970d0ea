"""What the system keeps only for a while, dropped by the clock's reconcile in bounded chunks.

- Idempotency keys (`service/idempotency.py`): kept 24 h, as Stripe keeps them. A key older
  than that was already forgotten when its shop used it again; without a purge the table grew
  by one row per POST for ever, each holding the answer it replays (contacts' numbers among
  them).
- Delivery reports (`delivery_report`, the webhook's inbox): one row per message, which the
  applier examines once; a report is read again only while its campaign's messages may still
  be unknown (`REFRESH_REPORTS_WINDOW_HOURS`, the reservations' evidence window), so one
  examined `DELIVERY_REPORT_RETENTION_DAYS` ago is dropped (0: kept for ever). What a report
  said stays on its recipient (`delivery_status`, `delivered_at`).

Each chunk is its own short transaction, and one run drops at most `MAX_CHUNKS` chunks per
table: a backlog (the first run after an upgrade) is worked off over several reconciles
without holding locks or one long transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from models.database import db, execute, fetchall
from service.idempotency import RETENTION as IDEMPOTENCY_RETENTION
from service.infra.config import Settings

CHUNK = 5_000
MAX_CHUNKS = 20


def purge(settings: Settings) -> dict[str, int]:
    """Drop what outlived its retention; how many rows of each kind."""
    days = settings.delivery_report_retention_days
    return {
        "idempotency_keys": _in_chunks(_idempotency_chunk),
        "delivery_reports": _in_chunks(lambda: _report_chunk(days)) if days else 0,
    }


def _in_chunks(chunk: Callable[[], tuple[int, bool]]) -> int:
    """Run `chunk` (rows dropped, whether more may be due) until done or MAX_CHUNKS ran."""
    dropped = 0
    for _ in range(MAX_CHUNKS):
        with db.atomic():
            count, more = chunk()
        dropped += count
        if not more:
            break
    return dropped


def _idempotency_chunk() -> tuple[int, bool]:
    # The oldest first, on the index of created_at: a chunk reads only what it drops.
    count = execute(
        "DELETE FROM idempotency_key WHERE (shop_id, key) IN ("
        "  SELECT shop_id, key FROM idempotency_key"
        f"  WHERE created_at < now() - interval '{IDEMPOTENCY_RETENTION}'"
        "  ORDER BY created_at LIMIT %s)",
        (CHUNK,),
    )
    return count, count == CHUNK


def _report_chunk(days: int) -> tuple[int, bool]:
    # delivery_report has no index on received_at, but its ids grow with it: the oldest
    # CHUNK rows by id, and of those the leading run received before the cutoff and examined
    # by the applier. The read stops at CHUNK rows whatever the table's size, and the run at
    # the first young or unexamined report, so none is dropped before its time.
    cutoff = datetime.now(UTC) - timedelta(days=days)
    first = fetchall("SELECT received_at FROM delivery_report ORDER BY id LIMIT 1")
    if not first or first[0][0] >= cutoff:
        return 0, False  # the usual case: one row read
    rows = fetchall(
        "SELECT id, received_at, examined_at IS NOT NULL FROM delivery_report ORDER BY id LIMIT %s",
        (CHUNK,),
    )
    old: list[int] = []
    for report_id, received_at, examined in rows:
        if received_at >= cutoff or not examined:
            break
        old.append(report_id)
    if not old:
        return 0, False
    count = execute("DELETE FROM delivery_report WHERE id = ANY(%s)", (old,))
    return count, len(old) == CHUNK
