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
the actor's time limit, and it stops between windows when its worker shuts down; the rest of
the batch then goes back on the queue. Should the time limit, or anything else, interrupt a
window all the same, the calls already made are waited for, their answers persisted and the
claims never called given back before the exception goes on (`WindowCalls`, `salvage`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from models import SendBatch
from service import credits, messages, sending
from service.errors import NotFound
from service.infra.call_slots import CallSlots, Lease
from service.infra.config import Settings
from service.infra.faults import fault_point
from service.infra.ratelimit import RateLimiter
from service.messages import CampaignContext
from service.provider import Outcome, Provider, SendResult, Sms
from service.sending import BatchReport, Claimed

log = logging.getLogger("astronote.sending")

# When the provider throttles a batch that made progress, its rest goes back on the queue
# after Retry-After, or this long when the provider gave none.
THROTTLED_DELAY_MS = 1000


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
    stopped: str | None = None  # "deferred", "not_sent" or "not_sending"

    @property
    def bulk(self) -> bool:
        return messages.uniform(self.context)


class BatchSender:
    """Sends batches with one provider, one rate limiter, one pool of provider calls and the
    process's call slots (SEND_CONCURRENCY), shared by every thread of the worker process.
    `stopping` is set when the worker shuts down; `clock` is monotonic seconds."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        calls: Executor,
        slots: CallSlots,
        limiter: RateLimiter | None = None,
        stopping: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.calls = calls
        self.slots = slots
        self.limiter = limiter
        self.stopping = stopping or threading.Event()
        self.clock = clock

    def send(
        self, campaign_id: int, shop_id: int, recipient_ids: list[int], key: str
    ) -> BatchReport:
        """Send one batch window by window. Then finish it; or, if it stopped short, leave it
        for resume (campaign no longer sending), for the actor's retry (calls surely not sent,
        nothing else done), or put its rest back on the queue (deadline, shutdown, throttled
        after some progress: `republished`)."""
        began = self.clock()
        pending = sending.pending_recipients(campaign_id, recipient_ids)
        if not pending:
            self.finish_duplicate(campaign_id, key)
            return BatchReport()
        context = messages.load_context(shop_id, campaign_id, self.settings)
        if context is None:
            raise NotFound(f"campaign {campaign_id} of shop {shop_id} does not exist")
        settings = self.settings
        run = BatchRun(
            campaign_id,
            shop_id,
            key,
            context,
            budget=self.reserved(key),
            stop_by=began + (settings.send_time_limit_ms - settings.send_window_worst_ms) / 1000,
        )
        with self.slots.lease() as lease:
            self.send_windows(run, pending, lease)
        self.conclude(run, recipient_ids)
        return run.report

    def send_windows(self, run: BatchRun, pending: list[int], lease: Lease) -> None:
        """Window after window until the batch is done or one of them stops it."""
        while pending:
            wanted = 1 if run.bulk else len(pending)
            if (
                self.stopping.is_set()
                or self.clock() > run.stop_by
                or not lease.take(wanted, run.stop_by - self.clock())
            ):
                run.stopped = "deferred"
                return
            try:
                size = len(pending) if run.bulk else lease.held
                window, pending = pending[:size], pending[size:]
                if self.limiter:
                    self.limiter.acquire(len(window))
                if self.clock() > run.stop_by:  # the rate limit made us wait too long
                    run.stopped = "deferred"
                    return
                done = self.send_window(run, window)
            finally:
                lease.give_back()
            run.report.add(done)
            if done.not_sent:
                run.stopped = "not_sent"
                return
            if not done.claimed and not sending.campaign_sending(run.campaign_id):
                run.stopped = "not_sending"  # paused or cancelled: nothing more is claimed
                return

    def send_window(self, run: BatchRun, window: Sequence[int]) -> BatchReport:
        """Claim, compose and cost, check credits, call the provider, sort the outcomes,
        persist, give back what surely was not sent. Interrupted anywhere after the claim, it
        salvages the window before the exception goes on."""
        claimed: list[Claimed] = []
        calls = WindowCalls(self.calls, 0)
        texts: list[str] = []
        costs: list[int] = []
        try:
            claimed = sending.claim_recipients(run.campaign_id, window, run.key)
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
            outcomes = sending.classify(run.campaign_id, run.key, claimed, texts, costs, results)
            persisted = sending.persist_or_hand_over(
                run.shop_id, run.campaign_id, run.key, outcomes
            )
            if outcomes.not_sent:
                sending.unclaim(outcomes.not_sent, run.key)  # pending again
            return outcomes.report(len(claimed), persisted)
        except BaseException:
            if claimed:
                self.salvage(run, claimed, texts, costs, calls)
            raise

    def call_provider(
        self, run: BatchRun, claimed: Sequence[Claimed], texts: Sequence[str], calls: WindowCalls
    ) -> None:
        """Start the window's calls: one `/smsbulk` call for a uniform campaign, else one
        `/sms` call per recipient, all on the pool (the window holds a slot for each)."""
        callback = sending.callback_url(self.settings)
        sender = run.context.sender
        if run.bulk:
            numbers = [r.phone for r in claimed]
            calls.start_bulk(
                lambda: self.provider.send_bulk(sender, numbers, texts[0], run.key, callback)
            )
            return
        calls.start_each(
            lambda sms: self.provider.send_one(sender, sms, callback),
            [Sms(r.phone, text, str(r.id)) for r, text in zip(claimed, texts)],
        )

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
                sending.persist_or_hand_over(run.shop_id, run.campaign_id, run.key, outcomes)
                give_back += outcomes.not_sent
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
        if run.stopped is None:
            sending.finish_batch(run.key)
        elif run.stopped == "deferred" or (
            run.stopped == "not_sent" and report.accepted + report.rejected
        ):
            # A delivery that made progress is not a failed attempt: republishing keeps the
            # actor's retries for deliveries that could send nothing at all.
            delay = None
            if run.stopped == "not_sent":
                delay = (
                    int(report.retry_after_s * 1000)
                    if report.retry_after_s is not None
                    else THROTTLED_DELAY_MS
                )
            sending.republish_batch(run.campaign_id, run.shop_id, recipient_ids, run.key, delay)
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

    def finish_duplicate(self, campaign_id: int, key: str) -> None:
        """A delivery with nothing pending. While the campaign is sending, an earlier delivery
        of this batch did everything; a paused or cancelled campaign's batch is left as is."""
        if sending.campaign_sending(campaign_id):
            sending.finish_batch(key)

    def reserved(self, key: str) -> int:
        """The batch's part of the campaign's reservation."""
        return (SendBatch.select(SendBatch.reserved).where(SendBatch.key == key).scalar()) or 0

    def cover(self, run: BatchRun, cost: int) -> bool:
        """Whether what is left of the batch's part of the reservation covers `cost` (this
        delivery's windows draw on it in turn), else whether the shop's available credits
        cover the excess (the reservation then grows by it)."""
        covered = cost <= run.budget or credits.cover_excess(
            run.shop_id, run.campaign_id, cost - run.budget
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
