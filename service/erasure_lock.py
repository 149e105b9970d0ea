"""The order between an erasure and the writes that could bring erased data back (SPEC 11).

Under READ COMMITTED an erasure's UPDATEs and DELETEs skip rows that another transaction has
written and not yet committed, and a writer that read before the erasure committed writes
after it. A review showed it six ways: an import's new contact left subscribed and unsuppressed
beside its number's digest, an unsubscribe or a STOP leaving the number in clear, a creation
chunk's recipients, an export and a test send keeping the number, name or text.

So an erasure holds its shop's lock exclusively for its transaction (`erasing`), and every
transaction that writes a shop's personal data (a number, a name, a message text) takes it
shared before it reads what it will write (`writing`). Writers do not exclude one another; an
erasure waits for the writers in flight, and the writers that come after it (PostgreSQL queues a
shared request behind a waiting exclusive one) wait for it; each statement after the lock sees
what the other committed. Taken first in a transaction, before any row lock, so that the lock
cannot close a cycle with rows an erasure waits for. A stored `Idempotency-Key` answer is
ordered by its own row instead (`idempotency.finish`), so that no request waits here for it.

A writer waits at most WRITER_WAIT_MS for an erasure in flight, then fails with PostgreSQL's
lock timeout: the web answers 503 with Retry-After, a worker's message is retried, the clock's
launch waits for its next tick. An erasure of a large shop takes seconds, and a writer waiting
holds a web or worker thread and a pooled connection that every shop needs (a probe: 80
requests waiting for one shop's erasure held every thread, and other shops' requests and
`/health` waited 9 s, or failed for connections).
"""

from __future__ import annotations

from models.database import execute, fetchone

# First key of `pg_advisory_xact_lock[_shared](ERASURE_LOCK, shop_id)`.
ERASURE_LOCK = 0x65726173  # "eras"
WRITER_WAIT_MS = 2000


def erasing(shop_id: int) -> None:
    """Inside the erasure's transaction: wait for the shop's writers in flight; hold off others."""
    execute("SELECT pg_advisory_xact_lock(%s, %s)", (ERASURE_LOCK, shop_id))


def writing(*shop_ids: int) -> None:
    """Inside a writer's transaction: wait for an erasure of any of these shops in flight, and
    hold off the next until the commit. In the shops' order, so two writers cannot deadlock
    with an erasure queued between them."""
    row = fetchone("SELECT current_setting('lock_timeout')")
    execute("SELECT set_config('lock_timeout', %s, true)", (f"{WRITER_WAIT_MS}ms",))
    for shop_id in sorted(set(shop_ids)):
        execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (ERASURE_LOCK, shop_id))
    # The session's own for the rest of the transaction (on a timeout the transaction is over,
    # and its SET LOCAL with it).
    execute("SELECT set_config('lock_timeout', %s, true)", (row[0] if row else "0",))
