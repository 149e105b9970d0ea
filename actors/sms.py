"""`sendBulkSMS` and `persistSmsResults` on queue `sms-send`; `sendTestSMS`, `persistTestSend`
and `sendInboundReply` on `sms-priority`."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import dramatiq
import redis

from actors import settings, stopping
from service import admission, replies, test_sends
from service.creation import batch_key
from service.infra import clock, dispatch, metrics
from service.infra.call_slots import CallSlots
from service.infra.faults import fault_point
from service.infra.ratelimit import SendLimiter
from service.provider import MittoClient
from service.sending import BatchReport, repair_persist, unfinished_batches
from service.windows import BatchSender

log = logging.getLogger("astronote.actors.sms")


# The process's SEND_CONCURRENCY calls, shared by every batch its threads send.
slots = CallSlots(settings.send_concurrency)
_creating = threading.Lock()


def batch_sender() -> BatchSender:
    """The process's one BatchSender. Under a lock: two threads creating one each would
    double the calls the process makes at once."""
    with _creating:
        return _batch_sender()


@lru_cache(maxsize=1)
def _batch_sender() -> BatchSender:
    """One provider session, one pool of SEND_CONCURRENCY calls and as many call slots per
    worker process, created lazily so each forked process gets its own."""
    provider = MittoClient(
        settings.mitto_api_base,
        settings.mitto_api_key,
        settings.provider_connect_timeout_ms / 1000,
        settings.provider_read_timeout_ms / 1000,
        pool_size=settings.send_concurrency,
    )
    # Always there: without PROVIDER_RATE_LIMIT or SENDER_RATE_LIMIT it still keeps the
    # account's cool-down after a 429, which every worker honours.
    limiter = SendLimiter.for_settings(settings, redis.Redis.from_url(settings.redis_url))
    calls = ThreadPoolExecutor(settings.send_concurrency, thread_name_prefix="provider")
    return BatchSender(
        settings,
        provider,
        calls,
        slots,
        limiter,
        stopping.stopping,
        wall=clock.for_settings(settings),
    )


def finish_windows_at_exit() -> None:
    """Let every batch end the window it has in flight (answers persisted, the rest of the
    batch back on the queue, its message acknowledged) before the process exits. Dramatiq's
    worker process exits at once on a second SIGTERM, without stopping its threads, and a
    SIGTERM to the process group (a platform stopping the worker, `kill` of the group) is
    two: the parent forwards the one it got to the child, which got its own."""
    # A window at its worst, then the batch's conclusion and the consumers' requeue.
    stopping.stop_worker(timeout_ms=settings.send_window_worst_ms + 2000)


# Called by `threading._shutdown()`, which every exit path of a worker process runs (a forked
# multiprocessing child ends with `os._exit`, skipping `atexit`), before the pool of provider
# calls is shut down: registered later than `concurrent.futures`' own hook, it runs first.
threading._register_atexit(finish_windows_at_exit)  # type: ignore[attr-defined]


def batch_result(report: BatchReport) -> str:
    """The batch-duration label: `limited` (the shared rate limit or the account's cool-down
    put it back on the queue before it claimed anything), `empty` (claimed nothing: a
    duplicate or a paused campaign), `throttled` (a 429: the rest back on the queue after the
    cool-down), `retry` (some messages surely not sent, the actor retries), `deferred`
    (stopped at its deadline, a shutdown or the rate limit, the rest back on the queue),
    else `sent`."""
    if not report.claimed:
        return "limited" if report.limited else "empty"
    if report.throttled:
        return "throttled"
    if report.not_sent and not report.republished:
        return "retry"
    return "deferred" if report.republished else "sent"


@dramatiq.actor(
    actor_name="sendBulkSMS",
    queue_name=dispatch.SEND_QUEUE,
    max_retries=settings.send_max_retries,
    min_backoff=1000,
    max_backoff=60_000,
    time_limit=settings.send_time_limit_ms,
)
def send_bulk_sms(campaign_id: int, shop_id: int, recipient_ids: list[int]) -> None:
    key = batch_key(campaign_id, recipient_ids)
    began = time.perf_counter()
    try:
        report = batch_sender().send(campaign_id, shop_id, recipient_ids, key)
        if report.claimed:
            # Only a delivery that claimed (and so persisted) something: a retry of a finished
            # batch claims nothing, and raising there again and again only lengthened the
            # message's backoff (a CI run waited 180 s for one such message, retries=5). A
            # delivery that claims nothing but finishes or requeues its batch is no longer
            # faulted here.
            fault_point("after_persist_before_ack")
    except Exception:
        metrics.observe_batch("error", time.perf_counter() - began)
        raise
    metrics.observe_batch(batch_result(report), time.perf_counter() - began)
    metrics.count_messages(
        {
            "accepted": report.accepted,
            "rejected": report.rejected,
            "not_sent": report.not_sent,
            "unknown": report.unknown,
        }
    )
    log.info(
        "batch sent",
        extra={
            "campaign_id": campaign_id,
            "shop_id": shop_id,
            "batch_key": key,
            "claimed": report.claimed,
            "accepted": report.accepted,
            "rejected": report.rejected,
            "not_sent": report.not_sent,
            "unknown": report.unknown,
            "throttled": report.throttled,
            "limited": report.limited,
            "wait_ms": report.wait_ms,
            "windows": report.windows,
            "republished": report.republished,
        },
    )
    # A batch that ended (or went back on the queue) may have left the shop a place in the
    # queue: admit its next waiting batch now rather than at the clock's next reconcile.
    admission.admit_shop(shop_id, settings)
    if report.claimed and not unfinished_batches(campaign_id):
        # The campaign's last batch: finish it now rather than waiting for the clock.
        dispatch.publish_status_update(campaign_id)
    if report.not_sent and not report.republished:
        # The provider surely has none of these, for a reason other than its rate (a 429 is
        # republished after the cool-down, above); they are pending again. Retry the batch,
        # honouring Retry-After when the provider gave one (else Dramatiq's backoff).
        delay = int(report.retry_after_s * 1000) if report.retry_after_s is not None else None
        raise dramatiq.Retry(f"{report.not_sent} messages not sent", delay=delay)


@dramatiq.actor(
    actor_name="sendTestSMS",
    queue_name=dispatch.PRIORITY_QUEUE,
    max_retries=settings.send_max_retries,
    min_backoff=500,
    max_backoff=10_000,
    time_limit=settings.send_time_limit_ms,
    # Taken before any bulk batch this process has prefetched (lower runs first).
    priority=-1,
)
def send_test_sms(test_send_id: int) -> None:
    sender = batch_sender()
    delivery = test_sends.deliver(test_send_id, sender.provider, sender.limiter, settings)
    log.info(
        "test send delivered",
        extra={
            "test_send_id": test_send_id,
            "status": delivery.status,
            "delay_ms": delivery.delay_ms,
            "limited": delivery.limited,
        },
    )
    if delivery.delay_ms is not None:
        # Refused by the rate limit, cooling down or surely not sent: back on its queue for
        # as long as that says; this thread goes to other work and no retry is spent.
        dispatch.publish_test_send(test_send_id, delay_ms=delivery.delay_ms)


@dramatiq.actor(
    actor_name="persistTestSend",
    queue_name=dispatch.PRIORITY_QUEUE,
    max_retries=100,
    min_backoff=500,
    max_backoff=60_000,
)
def persist_test_send(test_send_id: int, provider_id: str) -> None:
    """A test send the provider accepted whose persist failed: sent and debited, once."""
    changed = test_sends.accepted(test_send_id, provider_id)
    log.info(
        "test send persisted by repair", extra={"test_send_id": test_send_id, "changed": changed}
    )


# How long an answer waits on the queue when the process tries REPLY_CONCURRENCY already.
REPLY_BUSY_MS = 1000


@lru_cache(maxsize=1)
def _answering() -> threading.BoundedSemaphore:
    """The process's answers being tried (created in the worker process, after the fork)."""
    return threading.BoundedSemaphore(settings.reply_concurrency)


@dramatiq.actor(
    actor_name="sendInboundReply",
    queue_name=dispatch.PRIORITY_QUEUE,
    # A retry is safe: only a try that takes the row from `retrying` calls the provider. As
    # many as an outage of the database or the broker may need (1 s doubling to 60 s: about
    # 20 min); past them the reconcile queues it again (`replies.requeue_abandoned`).
    max_retries=25,
    min_backoff=1000,
    max_backoff=60_000,
    time_limit=settings.send_time_limit_ms,
    priority=-1,
)
def send_inbound_reply(message_key: str, sender: str, to: str, text: str, attempt: int) -> None:
    """A try of an answer to STOP, START or HELP: its first, or the next after one the provider
    did not take. At most REPLY_CONCURRENCY at once in a process; one more waits on the queue
    (a probe's wave of 320 answers at 3 s each took every thread, and delivery reports went
    unapplied for 200 s)."""
    answering = _answering()
    if not answering.acquire(blocking=False):
        dispatch.publish_reply(message_key, sender, to, text, attempt, delay_ms=REPLY_BUSY_MS)
        return
    try:
        batches = batch_sender()
        state = replies.resend(
            message_key, sender, to, text, attempt, batches.provider, batches.limiter
        )
    finally:
        answering.release()
    log.info("answer to an inbound message tried", extra={"state": state, "attempt": attempt})


@dramatiq.actor(
    actor_name="persistSmsResults",
    queue_name=dispatch.SEND_QUEUE,
    max_retries=100,
    min_backoff=500,
    max_backoff=60_000,
)
def persist_sms_results(payload: dict) -> None:
    debited = repair_persist(payload, settings)
    log.info(
        "provider results persisted by repair",
        extra={
            "campaign_id": payload["campaign_id"],
            "shop_id": payload["shop_id"],
            "batch_key": payload["batch_key"],
            "debited": debited,
        },
    )
    dispatch.publish_status_update(payload["campaign_id"])
