"""The delivery-report inbox: stored by the webhook, applied in bulk by the applier (SPEC 4.8).

The webhook does a constant amount of work per request: one multi-row INSERT that is its own
transaction (a report answered 200 is on disk), and at most one Redis round trip
(`ApplierSignal`). Applying is the
applier's (`apply_stored_reports`, actor `applyDeliveryReports`): it takes the reports nobody
has examined yet in chunks locked FOR UPDATE SKIP LOCKED, so several appliers share a backlog
and an applier killed mid-chunk leaves its chunk unexamined for the next. Each chunk, in one
transaction: reports whose message is known are applied (`delivery.apply_reports`), recipients
of unknown outcome they name are made `sent` with their debit (`evidence.resolve_reported`),
and the chunk is marked examined. A report whose message is not persisted yet stays unapplied
and its campaign's status refresh applies it once the message id is known.

What triggers the applier: the webhook, after its commit, debounced by a Redis key
(`ApplierSignal`): a burst of reports publishes one applier message per REPORT_APPLY_DELAY_MS.
If Redis or the broker fails, the clock's status refresh publishes the applier whenever
unexamined reports exist (`scheduler/jobs.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from psycopg2.extras import execute_values

from models import DeliveryReport
from models.database import db, execute, execute_many, fetchall, retry_conflicts
from service import audit, delivery, evidence
from service.infra import dispatch
from service.infra.config import Settings
from service.sending import unfinished_batches

log = logging.getLogger("astronote.report_inbox")

# Reports per applier transaction: large enough that the per-chunk statements cost little per
# report, small enough that a chunk's transaction stays well under a second.
APPLY_CHUNK = 5_000
APPLY_SIGNAL_KEY = "astronote:reports:apply-signalled"

_CLAIM = """
SELECT id FROM delivery_report
WHERE examined_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


@dataclass
class ApplyRun:
    """What one applier run did: reports examined, applied, and recipients of unknown outcome
    made `sent` by them."""

    examined: int = 0
    applied: int = 0
    resolved: int = 0
    campaign_ids: set[int] = field(default_factory=set)
    more: bool = False  # stopped at max_chunks with a full last chunk: reports may remain


_INSERT = (
    'INSERT INTO delivery_report (provider_id, reference, "to", status, status_code,'
    " reported_at) VALUES %s RETURNING id"
)


def _rows(reports: Sequence[dict[str, Any]]) -> list[tuple]:
    return [
        (
            r.get("id"),
            r.get("reference"),
            r.get("to"),
            r["deliveryStatus"],
            r.get("statusCode"),
            r.get("timestamp"),
        )
        for r in reports
    ]


def store_reports(reports: Sequence[dict[str, Any]]) -> list[int]:
    """Store validated reports in the inbox; returns their ids. One INSERT statement however
    many reports (every page in one statement), run outside any transaction block: it is its
    own transaction, committed (and flushed, synchronous_commit) when this returns, in one
    round trip instead of BEGIN, INSERT, COMMIT. Nothing is applied here."""
    rows = _rows(reports)
    assert not db.in_transaction(), "the reports must be committed when this returns"
    return [row[0] for row in execute_many(_INSERT, rows, fetch=True, page_size=max(1, len(rows)))]


def store_reports_on(connection: Any, reports: Sequence[dict[str, Any]]) -> list[int]:
    """`store_reports` on a psycopg2 connection of the caller's, in autocommit."""
    rows = _rows(reports)
    assert connection.autocommit, "the reports must be committed when this returns"
    with connection.cursor() as cursor:
        return [
            row[0]
            for row in execute_values(
                cursor, _INSERT, rows, page_size=max(1, len(rows)), fetch=True
            )
        ]


class ApplierSignal:
    """The webhook's trigger of the applier, debounced across every web process by a Redis
    key (SET NX PX `report_apply_delay_ms`): the process that sets it publishes one applier
    message delayed by the key's lifetime, so that run starts after the key expired and sees
    every report committed while it lived; a report committed after it expired sets the key
    again. Each process also remembers until when a run is known to be due (the key's expiry,
    read in the same round trip) and sends nothing to Redis before then: most reports of a
    burst cost no Redis command at all. Call `after` the reports' commit.

    A failure is logged, never raised: the reports are stored, and the clock's status
    refresh publishes the applier while any waits unexamined."""

    def __init__(
        self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.delay_ms = settings.report_apply_delay_ms
        self.clock = clock
        self._due_after = 0.0  # (clock) before this instant a run is known to be due later

    def after_commit(self) -> bool:
        """Make sure an applier run starts after now; returns whether this call published."""
        before = self.clock()
        if before < self._due_after:
            return False
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(APPLY_SIGNAL_KEY, 1, nx=True, px=self.delay_ms)
            pipe.pttl(APPLY_SIGNAL_KEY)
            won, ttl_ms = pipe.execute()
        except redis.RedisError:
            log.warning(
                "signalling the report applier failed; the clock's refresh will", exc_info=True
            )
            return False
        if ttl_ms > 0:
            # The key expires ttl_ms after the command, which ran after `before`: the run it
            # stands for starts no earlier than that.
            self._due_after = max(self._due_after, before + ttl_ms / 1000)
        if not won:
            return False
        try:
            dispatch.publish_apply_reports(delay_ms=self.delay_ms)
        except dispatch.PUBLISH_ERRORS:
            log.warning(
                "publishing the report applier failed; the clock's refresh will", exc_info=True
            )
            self._due_after = 0.0
            try:
                self.client.delete(APPLY_SIGNAL_KEY)  # the next report tries again at once
            except redis.RedisError:
                pass
            return False
        return True


def apply_stored_reports(
    settings: Settings, chunk: int = APPLY_CHUNK, max_chunks: int | None = None
) -> ApplyRun:
    """Apply unexamined reports, a chunk per transaction, until none is left that another
    applier does not hold (or `max_chunks` chunks); then publish the status update of each
    campaign whose last unknown outcomes these reports resolved."""
    run = ApplyRun()
    done = 0
    while max_chunks is None or done < max_chunks:
        taken = _apply_chunk(settings, chunk, run)
        done += 1
        if taken < chunk:
            break
    else:
        run.more = True
    for campaign_id in sorted(run.campaign_ids):
        if not unfinished_batches(campaign_id):
            # These may have been the campaign's last unknowns: finish it now, as the worker
            # does after its last batch, rather than at the clock's next refresh.
            _publish_status_update(campaign_id)
    return run


# The chunk examined, and the number cleared from the reports of erased recipients (SPEC 11):
# the webhook stores a report before anyone knows whose it is, and a report that arrives after
# its contact's erasure (the erasure cleared those already stored) would keep the number. FOR
# SHARE waits for an erasure holding the recipient and then returns the erased row (the
# snapshot's version of it would still have the number); rows this transaction's apply
# updated are locked already.
_EXAMINED = """
WITH erased AS (
    SELECT r.mitto_message_id AS provider_id, r.phone IS NULL AS erased
    FROM campaign_recipient r
    WHERE r.mitto_message_id IN (
        SELECT provider_id FROM delivery_report
        WHERE id = ANY(%(ids)s) AND "to" IS NOT NULL AND provider_id IS NOT NULL)
    FOR SHARE
)
UPDATE delivery_report d
SET examined_at = now(),
    "to" = CASE WHEN d.provider_id IN (SELECT provider_id FROM erased WHERE erased)
           THEN NULL ELSE d."to" END
WHERE d.id = ANY(%(ids)s)
"""


@retry_conflicts
def _apply_chunk(settings: Settings, chunk: int, run: ApplyRun) -> int:
    """One chunk in one transaction. Two appliers on neighbouring chunks (a message's Sent and
    Delivered reports in different ones), or an applier and the evidence of a persist, can
    lock the same recipients in opposite orders: the one PostgreSQL rolls back runs its chunk
    again (a review reproduced the deadlock with the real statements)."""
    resolved = evidence.Resolved(0, frozenset())
    with db.atomic():
        ids = [row[0] for row in fetchall(_CLAIM, {"limit": chunk})]
        if not ids:
            return 0
        applied = delivery.apply_reports(report_ids=ids)
        if applied < len(ids):
            # Usually none: most reports follow their message's persist.
            resolved = evidence.resolve_reported(ids, settings, audit.PROVIDER_WEBHOOK)
            if resolved.count:
                applied += delivery.apply_reports(report_ids=ids)
        execute(_EXAMINED, {"ids": ids})
    # Counted once committed: a chunk rolled back and run again counts once.
    run.resolved += resolved.count
    run.campaign_ids |= resolved.campaign_ids
    run.examined += len(ids)
    run.applied += applied
    return len(ids)


def has_unexamined() -> bool:
    """Whether any stored report waits for the applier (the partial index answers)."""
    return bool(DeliveryReport.select().where(DeliveryReport.examined_at.is_null()).exists())


def _publish_status_update(campaign_id: int) -> None:
    try:
        dispatch.publish_status_update(campaign_id)
    except dispatch.PUBLISH_ERRORS:
        log.warning(
            "publishing the status update failed; the clock's refresh will do it",
            exc_info=True,
            extra={"campaign_id": campaign_id},
        )
