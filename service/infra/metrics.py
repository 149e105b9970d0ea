"""Prometheus metrics, correct across gunicorn workers and Dramatiq processes.

Two kinds, so that no number depends on which process a scrape lands on:
- events (messages per outcome, provider call latency, batch duration, HTTP requests) are
  counted where they happen, in prometheus_client's multiprocess mode: every process writes
  its own memory-mapped files in one directory per host and deployment, and `/metrics` sums
  them with `MultiProcessCollector`;
- state (queue depth, live workers, campaigns by status, leader, credits debited) is read from
  Redis and PostgreSQL at scrape time by `SystemCollector`, from the same snapshot as
  `/health/full`, so it is the same whichever process answers.

Labels are low-cardinality only: outcome, endpoint, queue, state, status, route. Never a shop
or campaign id (each would be a new time series).

Multiprocess mode needs `PROMETHEUS_MULTIPROC_DIR` before the first metric is created:
`configure(settings)` sets it (unless the environment already does) at process start. The
default directory is derived from the database and Redis URLs, so the processes of one
deployment on one host share it and two deployments (or test runs) on a host never mix.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.infra.config import Settings

log = logging.getLogger("astronote.metrics")

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Provider calls: a few ms from a nearby simulator up to the 15 s read timeout.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def metrics_dir(settings: Settings) -> Path:
    """Where this deployment's processes on this host write their metrics."""
    given = os.environ.get(ENV)
    if given:
        return Path(given)
    deployment = f"{settings.database_url}|{settings.redis_url}".encode()
    return (
        Path(tempfile.gettempdir())
        / "astronote-metrics"
        / hashlib.sha256(deployment).hexdigest()[:12]
    )


def configure(settings: Settings) -> Path:
    """Turn on multiprocess mode for this process (idempotent); call before any metric is
    created. Returns the directory."""
    path = metrics_dir(settings)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    from prometheus_client import values

    # Harmless if prometheus_client was imported earlier: metrics look the class up when
    # they are created, and none is created before this call.
    values.ValueClass = values.get_value_class()
    return path


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(ENV))


@dataclass(frozen=True)
class Instruments:
    messages: Counter
    provider_call: Histogram
    batch_duration: Histogram
    http_request: Histogram


_created: Instruments | None = None
_creating = threading.Lock()


def instruments() -> Instruments:
    """Created on first use, after `configure()` (without it they count in this process only,
    as in unit tests), once per process under a lock: with `lru_cache`, two worker threads
    counting their first message at once both created the metrics, the second was refused
    `DuplicateTimeseries`, and that exception, raised after the provider's answer, left the
    batch's accepted messages as unknown outcomes (a CI run's test send waited 90 s)."""
    global _created
    if _created is None:
        with _creating:
            if _created is None:
                _created = _create_instruments()
    return _created


def _create_instruments() -> Instruments:
    from prometheus_client import Counter, Histogram

    return Instruments(
        messages=Counter(
            "astronote_messages",
            "Messages by provider outcome: accepted,"
            " rejected, not_sent (retried), unknown (never resent blindly)",
            ["outcome"],
        ),
        provider_call=Histogram(
            "astronote_provider_call_seconds",
            "Provider HTTP call latency",
            ["endpoint", "outcome"],
            buckets=CALL_BUCKETS,
        ),
        batch_duration=Histogram(
            "astronote_batch_duration_seconds",
            "sendBulkSMS duration, claim to persist",
            ["result"],
            buckets=BATCH_BUCKETS,
        ),
        http_request=Histogram(
            "astronote_http_request_seconds",
            "API request duration",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
        ),
    )


def _never_raises(record: Callable[..., None]) -> Callable[..., None]:
    """A metric is never worth a message: the recording functions are called on the send
    path, after the provider's answer, where an exception would leave accepted messages as
    unknown outcomes. A failure (the metrics directory full or gone) is logged, not raised."""

    @functools.wraps(record)
    def safe(*args: Any) -> None:
        try:
            record(*args)
        except Exception:  # noqa: BLE001 - see above
            log.warning("recording a metric failed", exc_info=True)

    return safe


@_never_raises
def count_messages(outcomes: dict[str, int]) -> None:
    """Add a batch's messages per outcome (`{"accepted": 498, "rejected": 2}`)."""
    for outcome, count in outcomes.items():
        if count:
            instruments().messages.labels(outcome).inc(count)


@_never_raises
def observe_provider_call(endpoint: str, outcome: str, seconds: float) -> None:
    instruments().provider_call.labels(endpoint, outcome).observe(seconds)


@_never_raises
def observe_batch(result: str, seconds: float) -> None:
    instruments().batch_duration.labels(result).observe(seconds)


@_never_raises
def observe_http(method: str, route: str, status: str, seconds: float) -> None:
    instruments().http_request.labels(method, route, status).observe(seconds)


class timed:
    """`with timed() as t: ...; t.seconds`: a monotonic stopwatch."""

    def __enter__(self) -> timed:
        self.began = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.began


# --- scrape time ---------------------------------------------------------------------------
class SystemCollector:
    """Gauges of the system's state, from the `/health/full` snapshot and the ledger."""

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], credits_debited: Callable[[], int]
    ) -> None:
        self.snapshot = snapshot
        self.credits_debited = credits_debited

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = self.snapshot()
        up = GaugeMetricFamily(
            "astronote_dependency_up", "1 when the dependency answers", labels=["dependency"]
        )
        for name, value in state["dependencies"].items():
            up.add_metric([name], 1 if value == "ok" else 0)
        yield up
        yield GaugeMetricFamily(
            "astronote_health_ok", "1 when /health/full says ok", value=1 if state["ok"] else 0
        )
        yield from self._queues(state.get("queues", {}), GaugeMetricFamily)
        yield from self._processes(state, GaugeMetricFamily)
        yield from self._campaigns(state.get("campaigns", {}), GaugeMetricFamily)
        if state["dependencies"]["postgresql"] == "ok":
            try:
                debited = self.credits_debited()
            except Exception:  # noqa: BLE001 - the database went away between two queries
                return
            yield CounterMetricFamily(
                "astronote_credits_debited", "Credits debited for accepted messages", value=debited
            )

    @staticmethod
    def _queues(queues: dict[str, Any], Gauge) -> Iterator[Any]:
        if "error" in queues:
            return
        depth = Gauge(
            "astronote_queue_messages",
            "Messages in each Dramatiq queue by state",
            labels=["queue", "state"],
        )
        for queue, counts in queues.items():
            for state in ("waiting", "active", "delayed", "failed"):
                if counts[state] is not None:  # `active` is unknown on RabbitMQ: no sample
                    depth.add_metric([queue, state], counts[state])
        yield depth

    @staticmethod
    def _processes(state: dict[str, Any], Gauge) -> Iterator[Any]:
        workers, scheduler = state.get("workers", {}), state.get("scheduler", {})
        if "error" not in workers:
            yield Gauge("astronote_workers_live", "Live worker processes", value=workers["live"])
            consumers = Gauge(
                "astronote_queue_consumers",
                "Live worker processes consuming each queue",
                labels=["queue"],
            )
            for queue, count in workers["consumers"].items():
                consumers.add_metric([queue], count)
            yield consumers
        if "error" not in scheduler:
            lock = scheduler["lock"]
            yield Gauge(
                "astronote_scheduler_leader",
                "1 while a clock holds the leader lock",
                value=1 if lock["exists"] else 0,
            )
            yield Gauge(
                "astronote_scheduler_epoch",
                "Fencing epoch of the leading clock",
                value=lock["epoch"] or 0,
            )
            clocks = Gauge(
                "astronote_clocks",
                "Live clock processes by RUN_SCHEDULER",
                labels=["run_scheduler"],
            )
            for flag in (True, False):
                clocks.add_metric(
                    [str(flag).lower()],
                    sum(1 for c in scheduler["clocks"] if c["run_scheduler"] is flag),
                )
            yield clocks

    @staticmethod
    def _campaigns(campaigns: dict[str, Any], Gauge) -> Iterator[Any]:
        if "error" in campaigns or not campaigns:
            return
        by_status = Gauge("astronote_campaigns", "Campaigns by status", labels=["status"])
        for status in (
            "draft",
            "scheduled",
            "sending",
            "paused",
            "completed",
            "failed",
            "cancelled",
        ):
            by_status.add_metric([status], campaigns["by_status"].get(status, 0))
        yield by_status
        yield Gauge(
            "astronote_campaigns_stuck",
            "Campaigns sending with no progress past STUCK_CAMPAIGN_AFTER_MS",
            value=campaigns["stuck_count"],
        )
        yield Gauge(
            "astronote_campaigns_long_paused",
            "Campaigns paused for longer than PAUSED_CAMPAIGN_ALERT_MS",
            value=campaigns.get("long_paused_count", 0),
        )


# A metrics file starts with 8 bytes of header (the used length and padding).
MIN_FILE_BYTES = 8


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # removed meanwhile
        return 0


class _ReadableFiles:
    """prometheus_client's multiprocess collector over the files long enough to hold their
    header: a process's file is created empty and sized a moment later, and a process killed
    in between (kill -9, which the chaos suite and real crashes do) left an empty file that
    made every later `/metrics` a 500 (`struct.error`) for the whole deployment. A reader
    could also catch a live file in that moment."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [
            path
            for path in glob.glob(os.path.join(self.path, "*.db"))
            if _size(path) >= MIN_FILE_BYTES
        ]
        return MultiProcessCollector.merge(files, accumulate=True)


def exposition(collector: SystemCollector) -> tuple[bytes, str]:
    """The `/metrics` body and content type: every process's events plus the system's state."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )

    registry = CollectorRegistry()
    if multiprocess_enabled():
        registry.register(_ReadableFiles(os.environ[ENV]))
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward:
    """This process's own metrics when multiprocess mode is off (development, unit tests)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        return self.registry.collect()
