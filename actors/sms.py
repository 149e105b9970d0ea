"""`sendBulkSMS` and `persistSmsResults` on queue `sms-send`."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import dramatiq
import redis

from actors import settings
from service.enqueue import batch_key
from service.infra import dispatch, metrics
from service.infra.ratelimit import RateLimiter
from service.provider import MittoClient
from service.sending import BatchReport, BatchSender, repair_persist, unfinished_batches

log = logging.getLogger("astronote.actors.sms")


@lru_cache(maxsize=1)
def batch_sender() -> BatchSender:
    """One provider session and one pool of SEND_CONCURRENCY calls per worker process,
    created lazily so each forked process gets its own."""
    provider = MittoClient(settings.mitto_api_base, settings.mitto_api_key,
                           settings.provider_connect_timeout_ms / 1000,
                           settings.provider_read_timeout_ms / 1000,
                           pool_size=settings.send_concurrency)
    limiter = (RateLimiter(redis.Redis.from_url(settings.redis_url), settings.provider_rate_limit)
               if settings.provider_rate_limit else None)
    calls = ThreadPoolExecutor(settings.send_concurrency, thread_name_prefix="provider")
    return BatchSender(settings, provider, calls, limiter)


def batch_result(report: BatchReport) -> str:
    """The batch-duration label: `empty` (claimed nothing: a duplicate or a paused campaign),
    `retry` (some messages surely not sent), else `sent`."""
    if not report.claimed:
        return "empty"
    return "retry" if report.not_sent else "sent"


@dramatiq.actor(actor_name="sendBulkSMS", queue_name=dispatch.SEND_QUEUE,
                max_retries=settings.send_max_retries, min_backoff=1000, max_backoff=60_000,
                time_limit=settings.send_time_limit_ms)
def send_bulk_sms(campaign_id: int, shop_id: int, recipient_ids: list[int]) -> None:
    key = batch_key(campaign_id, recipient_ids)
    began = time.perf_counter()
    try:
        report = batch_sender().send(campaign_id, shop_id, recipient_ids, key)
    except Exception:
        metrics.observe_batch("error", time.perf_counter() - began)
        raise
    metrics.observe_batch(batch_result(report), time.perf_counter() - began)
    metrics.count_messages({"accepted": report.accepted, "rejected": report.rejected,
                            "not_sent": report.not_sent, "unknown": report.unknown})
    log.info("batch sent", extra={"campaign_id": campaign_id, "shop_id": shop_id,
                                  "batch_key": key, "claimed": report.claimed,
                                  "accepted": report.accepted, "rejected": report.rejected,
                                  "not_sent": report.not_sent, "unknown": report.unknown})
    if report.claimed and not unfinished_batches(campaign_id):
        # The campaign's last batch: finish it now rather than waiting for the clock.
        dispatch.publish_status_update(campaign_id)
    if report.not_sent:
        # The provider surely has none of these; they are pending again. Retry the batch,
        # honouring Retry-After when the provider gave one (else Dramatiq's backoff).
        delay = int(report.retry_after_s * 1000) if report.retry_after_s is not None else None
        raise dramatiq.Retry(f"{report.not_sent} messages not sent", delay=delay)


@dramatiq.actor(actor_name="persistSmsResults", queue_name=dispatch.SEND_QUEUE,
                max_retries=100, min_backoff=500, max_backoff=60_000)
def persist_sms_results(payload: dict) -> None:
    debited = repair_persist(payload)
    log.info("provider results persisted by repair",
             extra={"campaign_id": payload["campaign_id"], "shop_id": payload["shop_id"],
                    "batch_key": payload["batch_key"], "debited": debited})
    dispatch.publish_status_update(payload["campaign_id"])
