"""Sending a batch window by window (SPEC 4.2-4.6, 12).

A window is what the process can call at once: its fair, free share of SEND_CONCURRENCY for
personalised texts (one `/sms` call per recipient), or the whole batch for identical texts
(one `/smsbulk` call is one call). Each window takes its call slots, claims its recipients
with the one conditional UPDATE of `service.sending` (which re-checks the campaign's status
and the suppression list), composes and costs them, calls the provider, persists the answers
in one transaction and only then gives its slots back. So pause, cancel and opt-out take
effect at the next window, progress moves window by window, and a crash leaves of unknown
outcome at most the calls that were in flight.

A batch's wall time is bounded by design: it starts a window only while one at its worst
(`Settings.send_window_worst_ms`: the provider timeouts, not the batch size) still ends before
the actor's time limit, and within BATCH_TIME_SLICE_MS of its start (the first window always
starts), and it stops between windows when its worker shuts down; the rest of the batch then
goes back on the queue, behind what was published meanwhile. Should the time limit, or
anything else, interrupt a window all the same, the calls already made are waited for, their
answers persisted and the claims never called given back before the exception goes on
(`WindowCalls`, `salvage`).

Rate limits never hold a worker (service/infra/ratelimit.py): each window asks the shared
limiter for its recipients before claiming them, and is cut to what it gets (at most a quarter
of a limit's amount per second); each call is counted again on the pool thread right before it
goes out (refused there, it is not made and its claims are given back). Refused, or during the
account's cool-down after a 429, the batch gives back its slots and goes back on the queue for
as long as the limiter says: no sleep in the worker thread, no retry spent. A 429 starts that
cool-down for every worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import datetime

from models.database import fetchone
from service import audit, creation, credits, frequency, messages, quiet_hours, sending
from service.errors import NotFound
from service.infra.call_slots import CallSlots, Lease
from service.infra.clock import WallClock
from service.infra.config import Settings
from service.infra.faults import fault_point
from service.infra.ratelimit import DEFAULT_COOL_DOWN_MS, Grant, SendLimiter
from service.messages import CampaignContext
from service.provider import Outcome, Provider, SendResult, Sms
from service.sending import BatchReport, Claimed, Pending

log = logging.getLogger("astronote.sending")

# When the provider surely did not take some messages of a batch that made progress (a
# refused connection, a 503), its rest goes back on the queue after Retry-After, or this long.
NOT_SENT_DELAY_MS = 1000


def dispatch_refused(
    limiter: SendLimiter, sender: str, count: int, depart_within_ms: int = 0
) -> SendResult | None:
    """Count a call's messages as they go out, on the pool thread right before the call
    (the closest to when the provider counts them); None if they may go, else the result
    of every message of the call: never called, and when the budget allows them again.

    `depart_within_ms`: a window the admission let in ahead of the budget (its lookahead,
    PROVIDER_RATE_LOOKAHEAD_MS) departs when the budget frees, if that is within this long:
    the pool thread making the call waits for it (bounded; the batch's own worker thread
    waits for the call's answer, as for any call). Beyond it, or in a cool-down, the call
    is not made and the batch goes back on the queue."""
    departure = time.monotonic() + depart_within_ms / 1000
    if depart_within_ms:
        # Look first, then take: a window admitted ahead is expected to find the budget a
        # few ms short, and a refused take leaves the sender's entries behind.
        ahead = limiter.dispatch_wait(sender, count)
        if not ahead.count and ahead.reason in ("provider", "sender"):
            if time.monotonic() + ahead.wait_ms / 1000 <= departure:
                time.sleep(ahead.wait_ms / 1000)
    grant = limiter.dispatch(sender, count)
    while not grant.count and grant.reason in ("provider", "sender"):
        wait_s = grant.wait_ms / 1000
        if time.monotonic() + wait_s > departure:
            break
        time.sleep(wait_s)
        grant = limiter.dispatch(sender, count)
    if grant.count:
        return None
    return SendResult(
        Outcome.NOT_SENT,
        reason=f"rate limit ({grant.reason})",
        limited_by=grant.reason,
        limited_ms=grant.wait_ms,
    )


def cool_down_ms(retry_after_s: float | None) -> int:
    """How long a throttled batch waits when no shared limiter is configured."""
    return int(retry_after_s * 1000) if retry_after_s is not None else DEFAULT_COOL_DOWN_MS


class WindowCalls:
    """The provider calls of one window, made on the process's pool of calls and never on the
    batch's own thread: an exception raised into that thread (the time limit) cannot cut a
    call short and lose its answer, which `collect` still gets."""

    def __init__(self, pool: Executor, recipients: int) -> None:
        self.pool = pool
        self.recipients = recipients
        self.futures: list[Future] = []
        self.bulk = False

    def start_bulk(self, call: Callable[[], list[SendResult]]) -> None:
        self.bulk = True
        self.futures.append(self.pool.submit(call))

    def start_each(self, call: Callable[[Sms], SendResult], items: Sequence[Sms]) -> None:
        for item in items:
            self.futures.append(self.pool.submit(call, item))

    def results(self) -> list[SendResult]:
        """Every recipient's answer, in order, once all calls returned (each is bounded by
        the provider's connect and read timeouts)."""
        if self.bulk:
            return self.futures[0].result()
        return [future.result() for future in self.futures]

    def collect(self) -> list[SendResult | None]:
        """After an interruption: each recipient's answer, waiting for the calls under way;
        None where the call never started (it is cancelled, so it never will)."""
        # Cancel every call not started yet before waiting for any: a pool thread freed by a
        # call that ends would otherwise start the next one.
        cancelled = [future.cancel() for future in self.futures]
        answers: list[SendResult | None] = []
        for future, never_started in zip(self.futures, cancelled):
            if never_started:
                answers += [None] * (self.recipients if self.bulk else 1)
                continue
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - the call may have reached the provider
                unknown = SendResult(Outcome.UNKNOWN, reason=f"{type(error).__name__}: {error}")
                result = [unknown] * self.recipients if self.bulk else unknown
            answers += result if self.bulk else [result]
        return answers + [None] * (self.recipients - len(answers))


@dataclass
class BatchRun:
    """One delivery of a batch: what its windows share, and why it stopped short, if it did."""

    campaign_id: int
    shop_id: int
    key: str
    context: CampaignContext
    budget: int  # what is left of the batch's part of the reservation
    stop_by: float  # the clock reading after which no window may start
    report: BatchReport = field(default_factory=BatchReport)
    stopped: str | None = None  # "deferred", "throttled", "not_sent" or "not_sending"
    delay_ms: int | None = None  # deferred or throttled: how long the rest waits on the queue
    # Recipients held by quiet hours at this delivery, and when each may go.
    waiting: dict[int, datetime] = field(default_factory=dict)
    # The clock reading when the batch was last marked as at work (never yet: at once).
    touched_at: float = float("-inf")

    @property
    def bulk(self) -> bool:
        return messages.uniform(self.context)


class BatchSender:
    """Sends batches with one provider, one rate limiter, one pool of provider calls and the
    process's call slots (SEND_CONCURRENCY), shared by every thread of the worker process.
    `stopping` is set when the worker shuts down; `clock` is monotonic seconds (deadlines);
    `wall` is the time of day for quiet hours and the frequency cap."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        calls: Executor,
        slots: CallSlots,
        limiter: SendLimiter | None = None,
        stopping: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: WallClock | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.calls = calls
        self.slots = slots
        self.limiter = limiter
        self.stopping = stopping or threading.Event()
        self.clock = clock
        self.wall = wall or WallClock()

    def send(
        self, campaign_id: int, shop_id: int, recipient_ids: list[int], key: str
    ) -> BatchReport:
        """Send one batch window by window. Then finish it; or, if it stopped short, leave it
        for resume (campaign no longer sending), for the actor's retry (calls surely not sent,
        nothing else done), or put its rest back on the queue (deadline, shutdown, throttled
        after some progress: `republished`)."""
        began = self.clock()
        if self.limiter:
            now = self.limiter.precheck(shop_id)
            if not now.count:
                return self.defer_unread(campaign_id, shop_id, recipient_ids, key, now)
        pending = sending.pending_recipients(campaign_id, recipient_ids)
        if not pending:
            self.finish_duplicate(campaign_id, key)
            if self.limiter:
                self.limiter.withdraw(shop_id)  # its precheck asked for nothing it will send
            return BatchReport()
        context = messages.load_context(shop_id, campaign_id, self.settings)
        if context is None:
            raise NotFound(f"campaign {campaign_id} of shop {shop_id} does not exist")
        settings = self.settings
        budget = self.reserved(key, context)
        run = BatchRun(
            campaign_id,
            shop_id,
            key,
            context,
            budget=budget,
            # Before the time limit, and after a time slice: a batch of one-call windows
            # trickling at a capped rate held a thread for 15 s, and a small shop's batch
            # queued behind a big one's for 60-100 s (a probe, SEND_CONCURRENCY=8).
            stop_by=began
            + min(
                settings.send_time_limit_ms - settings.send_window_worst_ms,
                settings.batch_time_slice_ms,
            )
            / 1000,
        )
        with self.slots.lease() as lease:
            self.send_windows(run, pending, lease)
        self.conclude(run, recipient_ids)
        if self.limiter and not run.report.limited:
            # Not waiting for the account's budget: owed no share until the shop asks again.
            self.limiter.withdraw(shop_id)
        return run.report

    def send_windows(self, run: BatchRun, pending: list[Pending], lease: Lease) -> None:
        """Window after window until the batch is done or one of them stops it."""
        while pending:
            self.mark_at_work(run)
            wanted = 1 if run.bulk else len(pending)
            if (
                self.stopping.is_set()
                or self.clock() > run.stop_by
                or not self.take_slots(run, lease, wanted)
            ):
                run.stopped = "deferred"
                return
            try:
                size = len(pending) if run.bulk else lease.held
                cut, pending = pending[:size], pending[size:]
                window = self.admit(run, cut)
                if not window:
                    continue  # all wait for quiet hours or were skipped; slots given back
                if self.limiter:
                    grant = self.limiter.acquire(run.context.sender, len(window), run.shop_id)
                    if not grant.count:
                        # Nothing claimed: the rest waits on the queue, not in this thread.
                        run.stopped, run.delay_ms = "deferred", grant.wait_ms
                        run.report.limited = grant.reason
                        return
                    if grant.count < len(window):
                        # The budget's part now; the others stay first in line (pending in
                        # the database, decided again at their window).
                        later = set(window[grant.count :])
                        pending = [r for r in cut if r.id in later] + pending
                        window = window[: grant.count]
                done = self.send_window(run, window)
            finally:
                lease.give_back()
            run.report.add(done)
            if done.limited:  # refused at dispatch: its claims were given back
                if self.limiter and not done.claimed:
                    self.limiter.give_back(run.shop_id, grant)  # and, none sent, its admission
                run.stopped, run.delay_ms = "deferred", done.wait_ms
                return
            if done.throttled:
                # A 429: the account is over its rate. Every worker holds off for the
                # cool-down (set as the answers came); this batch's rest waits on the
                # queue as long, no retry spent.
                run.stopped = "throttled"
                run.delay_ms = done.wait_ms or cool_down_ms(done.retry_after_s)
                return
            if done.not_sent:
                run.stopped = "not_sent"
                return
            if not done.claimed and not sending.campaign_sending(run.campaign_id):
                run.stopped = "not_sending"  # paused or cancelled: nothing more is claimed
                return

    def mark_at_work(self, run: BatchRun) -> None:
        """The batch's delivery is at work: marked at its start and then every quarter of
        BATCH_STALE_AFTER_MS. The reconciler publishes a batch silent that long again (the
        send time limit is longer, and a message may have waited in the queue), and a second
        delivery would then share its windows and budget."""
        if self.clock() - run.touched_at > self.settings.batch_stale_after_ms / 4000:
            sending.touch_batch(run.key)
            run.touched_at = self.clock()

    def take_slots(self, run: BatchRun, lease: Lease, wanted: int) -> bool:
        """Call slots for the next window, waiting for them until the delivery's deadline at
        most, the batch marked as at work meanwhile. (The wait is bounded in real time: the
        slots' own clock.)"""
        give_up = time.monotonic() + max(0.0, run.stop_by - self.clock())
        while True:
            left = give_up - time.monotonic()
            if lease.take(wanted, max(0.0, min(left, self.settings.batch_stale_after_ms / 4000))):
                return True
            if left <= 0 or self.stopping.is_set():
                return False
            self.mark_at_work(run)

    def admit(self, run: BatchRun, window: Sequence[Pending]) -> list[int]:
        """The window's recipients that may be sent now (SPEC 11): those in quiet hours wait
        (pending, their reservation kept: `run.waiting`), those over the frequency cap, or
        whose zones never leave quiet hours together, are skipped. Decided at this window's
        time, so a batch crossing the start of quiet hours stops sending at its next window."""
        context = run.context
        ids = [recipient.id for recipient in window]
        if context.quiet is None and context.frequency_cap is None:
            return ids
        now = self.wall.now()
        if context.quiet is not None:
            quiet = quiet_hours.QuietFilter(context.quiet, context.timezone, now)
            ids, waiting = quiet.split(window)
            never = [w.recipient_id for w in waiting if w.opening == quiet_hours.NEVER]
            sending.skip_pending(run.campaign_id, never, "quiet_hours")
            run.waiting.update(
                (w.recipient_id, w.opening) for w in waiting if w.opening != quiet_hours.NEVER
            )
        if ids and context.frequency_cap:
            # A first look, so the rate limit's budget is not taken for them; decided again
            # with the claim (`claim`), where another campaign may have claimed them since.
            over = frequency.over_cap(run.shop_id, ids, context.frequency_cap, now)
            if over:
                sending.skip_pending(run.campaign_id, over, frequency.REASON)
                skipped = set(over)
                ids = [rid for rid in ids if rid not in skipped]
        return ids

    def send_window(self, run: BatchRun, window: Sequence[int]) -> BatchReport:
        """Claim, compose and cost, check credits, call the provider, sort the outcomes,
        persist, give back what surely was not sent. Interrupted anywhere after the claim, it
        salvages the window before the exception goes on."""
        claimed: list[Claimed] = []
        calls = WindowCalls(self.calls, 0)
        texts: list[str] = []
        costs: list[int] = []
        try:
            claimed = self.claim(run, window)
            if not claimed:
                return BatchReport()
            fault_point("after_claim_commit")
            calls.recipients = len(claimed)
            texts = messages.compose_batch(run.context, claimed, self.settings)
            costs = messages.segment_costs(texts)
            if not self.cover(run, sum(costs)):
                return self.fail_uncovered(run, claimed)
            self.call_provider(run, claimed, texts, calls)
            results = calls.results()
            fault_point("after_provider_answer")
            cool_down = self.throttled(results)
            outcomes = sending.classify(run.campaign_id, run.key, claimed, texts, costs, results)
            persisted = sending.persist_or_hand_over(
                run.shop_id, run.campaign_id, run.key, outcomes, self.settings
            )
            if outcomes.not_sent or outcomes.limited:
                sending.unclaim(outcomes.not_sent + outcomes.limited, run.key)  # pending again
            report = outcomes.report(len(claimed) - len(outcomes.limited), persisted)
            if cool_down is not None:
                report.wait_ms = cool_down
            return report
        except BaseException:
            if claimed:
                self.salvage(run, claimed, texts, costs, calls)
            raise

    def claim(self, run: BatchRun, window: Sequence[int]) -> list[Claimed]:
        """Claim the window; for a shop with a frequency cap, together with the cap's check."""
        cap = run.context.frequency_cap
        if not cap:
            return sending.claim_recipients(run.campaign_id, window, run.key)
        now = self.wall.now()
        return frequency.claim_within_cap(run.shop_id, run.campaign_id, window, run.key, cap, now)

    def throttled(self, results: Sequence[SendResult]) -> int | None:
        """If the provider answered 429, cool the account down for every worker at once,
        before this window's answers are persisted; the cool-down in force (ms)."""
        throttled = [result for result in results if result.throttled]
        if not throttled or not self.limiter:
            return None
        waits = [r.retry_after_s for r in throttled if r.retry_after_s is not None]
        return self.limiter.cool_down(max(waits) if waits else None)

    def call_provider(
        self, run: BatchRun, claimed: Sequence[Claimed], texts: Sequence[str], calls: WindowCalls
    ) -> None:
        """Start the window's calls: one `/smsbulk` call for a uniform campaign, else one
        `/sms` call per recipient, all on the pool (the window holds a slot for each)."""
        callback = sending.callback_url(self.settings)
        sender = run.context.sender
        limiter = self.limiter if self.limiter and self.limiter.limits_sends else None
        departure_ms = self.settings.provider_rate_departure_ms
        if run.bulk:
            numbers = [r.phone for r in claimed]

            def bulk() -> list[SendResult]:
                if limiter:
                    refused = dispatch_refused(limiter, sender, len(numbers), departure_ms)
                    if refused:
                        return [refused] * len(numbers)
                return self.provider.send_bulk(sender, numbers, texts[0], run.key, callback)

            calls.start_bulk(bulk)
            return

        def one(sms: Sms) -> SendResult:
            if limiter:
                refused = dispatch_refused(limiter, sender, 1, departure_ms)
                if refused:
                    return refused
            return self.provider.send_one(sender, sms, callback)

        calls.start_each(one, [Sms(r.phone, text, str(r.id)) for r, text in zip(claimed, texts)])

    def salvage(
        self,
        run: BatchRun,
        claimed: Sequence[Claimed],
        texts: Sequence[str],
        costs: Sequence[int],
        calls: WindowCalls,
    ) -> None:
        """The window was interrupted (the time limit, a shutdown, an error): persist the
        answers of the calls already made, waiting for those under way, and give back every
        claim whose call never started or surely did not reach the provider."""
        try:
            # Interrupted before the calls were laid out (right after the claim, or while
            # composing), `calls` does not know the window's size yet: every claim counts.
            calls.recipients = len(claimed)
            answers = calls.collect()
            answered = [(i, answer) for i, answer in enumerate(answers) if answer is not None]
            give_back = [claimed[i].id for i, answer in enumerate(answers) if answer is None]
            if answered:
                outcomes = sending.classify(
                    run.campaign_id,
                    run.key,
                    [claimed[i] for i, _ in answered],
                    [texts[i] for i, _ in answered],
                    [costs[i] for i, _ in answered],
                    [answer for _, answer in answered],
                )
                sending.persist_or_hand_over(
                    run.shop_id, run.campaign_id, run.key, outcomes, self.settings
                )
                give_back += outcomes.not_sent + outcomes.limited
            if give_back:
                sending.unclaim(give_back, run.key)
            log.warning(
                "window interrupted: answers persisted, claims not sent given back",
                extra={
                    "campaign_id": run.campaign_id,
                    "batch_key": run.key,
                    "answered": len(answered),
                    "given_back": len(give_back),
                },
            )
        except Exception:  # noqa: BLE001 - the interruption itself must still propagate
            log.exception(
                "salvaging an interrupted window failed; its claims wait for the reconciler",
                extra={"campaign_id": run.campaign_id, "batch_key": run.key},
            )

    def conclude(self, run: BatchRun, recipient_ids: list[int]) -> None:
        """Finish the batch, or put its rest back on the queue when it stopped short for a
        reason the campaign itself does not decide."""
        report = run.report
        if run.stopped is None and run.waiting:
            self.wait_for_opening(run, recipient_ids)
        elif run.stopped is None:
            sending.finish_batch(run.key)
        elif run.stopped in ("deferred", "throttled") or (
            run.stopped == "not_sent" and report.accepted + report.rejected
        ):
            # Neither a rate limit nor a delivery that made progress is a failed attempt:
            # republishing keeps the actor's retries for deliveries that could send nothing
            # for a reason other than the account's rate.
            delay = run.delay_ms
            if run.stopped == "not_sent":
                delay = (
                    int(report.retry_after_s * 1000)
                    if report.retry_after_s is not None
                    else NOT_SENT_DELAY_MS
                )
            sending.republish_batch(
                run.campaign_id,
                run.shop_id,
                recipient_ids,
                run.key,
                delay,
                len(run.waiting),
                min(run.waiting.values(), default=None),
                waiting_until=max(run.waiting.values(), default=None),
            )
            report.republished = True
            log.info(
                "batch stopped short; its rest is back on the queue",
                extra={
                    "campaign_id": run.campaign_id,
                    "batch_key": run.key,
                    "reason": run.stopped,
                    "delay_ms": delay,
                },
            )

    def wait_for_opening(self, run: BatchRun, recipient_ids: list[int]) -> None:
        """Everything sendable was sent and the rest waits for quiet hours to end: the batch
        is parked (`sending.park_batch`) until the earliest opening, and fair admission
        publishes it again then, or after QUIET_HOURS_RECHECK_MS if that is sooner (no
        worker thread sleeps through a night, and a parked batch holds none of its shop's
        places in the queue). A paused campaign's batch is left for its resume."""
        opening = min(run.waiting.values())
        if not sending.campaign_sending(run.campaign_id):
            return
        run.report.republished = sending.park_batch(
            run.key,
            len(run.waiting),
            opening,
            max(run.waiting.values()),
        )
        log.info(
            "recipients wait for quiet hours to end; the batch waits for admission",
            extra={
                "campaign_id": run.campaign_id,
                "batch_key": run.key,
                "waiting": len(run.waiting),
                "not_before": opening.isoformat(),
            },
        )

    def defer_unread(
        self, campaign_id: int, shop_id: int, recipient_ids: list[int], key: str, refused: Grant
    ) -> BatchReport:
        """The account cannot send now (cool-down, budget used): back on the queue until it
        can, before reading anything. With many batches waiting for one account's budget,
        each comes back about once a second, and costs only this."""
        sending.republish_batch(campaign_id, shop_id, recipient_ids, key, refused.wait_ms)
        return BatchReport(republished=True, limited=refused.reason, wait_ms=refused.wait_ms)

    def finish_duplicate(self, campaign_id: int, key: str) -> None:
        """A delivery with nothing pending. While the campaign is sending, an earlier delivery
        of this batch did everything; a paused or cancelled campaign's batch is left as is."""
        if sending.campaign_sending(campaign_id):
            sending.finish_batch(key)

    def reserved(self, key: str, context: CampaignContext) -> int:
        """What is left of the batch's part of the campaign's reservation for this delivery:
        its part less what earlier deliveries
        of it spent, the debits of its recipients and the reservation's bound of each one
        still in flight or of unknown outcome (they may be charged yet), priced by first name
        as the part itself was (`creation.pricing`). Each delivery used to start again from
        the whole part: a batch delivered again (a pause, a 503, a 429) whose messages cost
        more than its part was never asked to cover the excess. Then those in flight were
        deducted at the batch's average, which over-deducts a cheap one beside a dear one: a
        window short by a credit failed paid-for recipients `insufficient_credits`."""
        row = fetchone(
            "SELECT b.reserved - coalesce(("
            "   SELECT sum(-t.amount) FROM credit_transaction t"
            "   WHERE t.idempotency_key = ANY(ARRAY("
            "     SELECT 'debit:' || rid FROM unnest(b.recipient_ids) AS rid))), 0),"
            " ARRAY(SELECT r.first_name FROM campaign_recipient r"
            "   WHERE r.id = ANY(b.recipient_ids) AND r.campaign_id + 0 = b.campaign_id"
            "     AND (r.status = 'sending'"
            "          OR (r.status = 'failed' AND r.error = 'unknown_outcome')))"
            " FROM send_batch b WHERE b.key = %s",
            (key,),
        )
        if not row:
            return 0
        left, in_flight = row
        if in_flight:
            cost = creation.pricing(
                context.template, context.append_unsubscribe, self.settings.public_base_url
            )
            left -= sum(cost(name) for name in in_flight)
        return max(0, int(left))

    def cover(self, run: BatchRun, cost: int) -> bool:
        """Whether what is left of the batch's part of the reservation covers `cost` (this
        delivery's windows draw on it in turn), else whether the shop's available credits
        cover the excess (the reservation then grows by it)."""
        covered = cost <= run.budget or credits.cover_excess(
            run.shop_id, run.campaign_id, cost - run.budget, audit.WORKER
        )
        if covered:
            run.budget = max(0, run.budget - cost)
        return covered

    def fail_uncovered(self, run: BatchRun, claimed: Sequence[Claimed]) -> BatchReport:
        """Nothing is sent: every claimed recipient fails with `insufficient_credits`."""
        sending.persist_results(
            run.shop_id, run.campaign_id, [], [(r.id, "insufficient_credits") for r in claimed]
        )
        return BatchReport(claimed=len(claimed), rejected=len(claimed))
