"""The simulated provider's state: the config in force, recorded messages, stats and fates.

Every random decision about a send (its outcome, which numbers are rejected, each report's
final status and duplication) draws from one seeded generator, which `reset` reseeds.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections import Counter, deque
from typing import Any

from astronote.sim.config import DEFAULT_CONFIG, validate_config
from astronote.sim.inbound import inbound_message, post_inbound
from astronote.sim.reports import DeliveryReports, now_iso, plan_reports

_REJECT_CODE = 6
_REJECT_TEXT = "Invalid destination"
_STAT_KEYS = (
    "requests",
    "accepted",
    "rejected",
    "throttled",
    "errors",
    "timeouts",
    "resets",
    "hangs",
    "bad_requests",
    "dlr_sent",
    "dlr_failed",
    "dlr_retries",
    "inbound_posted",
)


class Simulator:
    """Configuration and state of one simulated provider; thread-safe.

    A send call asks `choose_outcome` for its fate, then `accept` records the messages and
    schedules their reports; the `/_sim/` endpoints map onto the remaining public methods.
    Delivery reports are posted by a small pool of sender threads started on first use.
    """

    def __init__(
        self,
        api_key: str | None = None,
        seed: int = 0,
        dlr_threads: int = 4,
        **config: Any,
    ) -> None:
        self.api_key = api_key
        self.seed = seed
        self.dlr_threads = max(1, int(dlr_threads))
        self._startup_config = validate_config(config, DEFAULT_CONFIG)
        # Readers take the current dict without a lock; writers replace it whole (copy on
        # write), so the hot path never contends on configuration.
        self._config: dict[str, Any] = {}
        self._next: deque[str] = deque()
        self._config_lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        # When each message was accepted (epoch seconds, sender) and each 429 answered: the
        # provider's view of the rate it was sent at (`timeline`).
        self._sent_at: list[tuple[float, str | None]] = []
        self._throttled_at: list[float] = []
        self._stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        # Ids are a per-process random prefix plus a counter: unique like uuid4 but without an
        # os.urandom call per message.
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count(1)
        # One event for held requests and report senders alike: closing wakes both.
        self._stopping = threading.Event()
        self._reports = DeliveryReports(
            self.dlr_threads,
            self._stopping,
            batch_size=lambda: self._config["dlr_batch"],
            on_posted=self._count_reports,
            burst=lambda: self._config["dlr_burst"],
            on_retry=lambda count: self.bump(dlr_retries=count),
            timeout=lambda: self._config["dlr_timeout_s"],
        )
        self._apply_config(self._startup_config)

    # ---- configuration -------------------------------------------------------------------

    def _apply_config(self, merged: dict[str, Any]) -> None:
        with self._config_lock:
            self._next = deque(merged["next"])
            merged = dict(merged)
            merged["next"] = []
            self._config = merged

    @property
    def live_config(self) -> dict[str, Any]:
        """The config in force, without the forced queue and uncopied: read it, never mutate."""
        return self._config

    def get_config(self) -> dict[str, Any]:
        with self._config_lock:
            current = dict(self._config)
            current["next"] = list(self._next)
        return current

    def update_config(self, update: Any) -> dict[str, Any]:
        """Merge `update` into the current config (ValueError if invalid); return the result."""
        with self._config_lock:
            base = dict(self._config)
            base["next"] = list(self._next)
            merged = validate_config(update, base)
            self._next = deque(merged["next"])
            stored = dict(merged)
            stored["next"] = []
            self._config = stored
        return self.get_config()

    def _pop_forced(self) -> str | None:
        # Checked without the lock first: the empty queue is the common, hot case.
        if not self._next:
            return None
        with self._config_lock:
            return self._next.popleft() if self._next else None

    def reset(self) -> None:
        """Clear messages, stats and pending reports; restore the start-up configuration."""
        with self._state_lock:
            self._messages = []
            self._sent_at = []
            self._throttled_at = []
            self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._reports.clear()
        with self._rng_lock:
            self._rng = random.Random(self.seed)
        self._apply_config(self._startup_config)

    # ---- inspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._state_lock:
            result = dict(self._stats)
        result["dlr_pending"] = self._reports.pending()
        return result

    def messages(
        self, reference: str | None = None, to: str | None = None, sender: str | None = None
    ) -> list[dict[str, Any]]:
        with self._state_lock:
            selected = list(self._messages)
        if reference is not None:
            selected = [m for m in selected if _ref_text(m["reference"]) == reference]
        if to is not None:
            selected = [m for m in selected if m["to"] == to]
        if sender is not None:
            selected = [m for m in selected if m["from"] == sender]
        return selected

    def summary(
        self, reference: str | None = None, to: str | None = None, sender: str | None = None
    ) -> dict[str, Any]:
        """Count plus the (to, reference) keys accepted more than once: a resend is a bug;
        `first_at` and `last_at`: when the first and the last of them were accepted."""
        selected = self.messages(reference, to, sender)
        counts = Counter((m["to"], _hashable(m["reference"])) for m in selected)
        duplicates = [[key[0], key[1]] for key, n in counts.items() if n > 1]
        extra = sum(n - 1 for n in counts.values() if n > 1)
        return {
            "count": len(selected),
            "unique": len(counts),
            "duplicates": duplicates,
            "duplicate_messages": extra,
            "first_at": min((m["received_at"] for m in selected), default=None),
            "last_at": max((m["received_at"] for m in selected), default=None),
        }

    def throttled(self, arrived: float | None = None) -> None:
        """A call answered 429: counted and its time (of arrival) kept for `timeline`."""
        at = arrived if arrived is not None else time.time()
        with self._state_lock:
            self._stats["requests"] += 1
            self._stats["throttled"] += 1
            self._throttled_at.append(at)

    def timeline(
        self, window_ms: int = 1000, sender: str | None = None, times: bool = False
    ) -> dict[str, Any]:
        """The rate messages were accepted at (counted when their call arrived, as a provider
        counts them): the most in any `window_ms` (a sliding window,
        not aligned to the clock's seconds), a count per clock second, the first and last
        acceptance, and when each 429 was answered (epoch seconds). `sender`: only its own;
        `times`: also every message's time."""
        with self._state_lock:
            sent = [at for at, name in self._sent_at if sender is None or name == sender]
            throttled = list(self._throttled_at)
        sent.sort()
        span = window_ms / 1000
        most, start = 0, 0
        for end, at in enumerate(sent):
            while at - sent[start] >= span:
                start += 1
            most = max(most, end - start + 1)
        per_second = Counter(int(at) for at in sent)
        return {
            "sent": len(sent),
            "window_ms": window_ms,
            "max_in_window": most,
            "first": sent[0] if sent else None,
            "last": sent[-1] if sent else None,
            "per_second": sorted([second, n] for second, n in per_second.items()),
            "throttled_at": throttled,
            **({"sent_at": sent} if times else {}),
        }

    def bump(self, **deltas: int) -> None:
        with self._state_lock:
            stats = self._stats
            for key, delta in deltas.items():
                stats[key] += delta

    def _count_reports(self, ok: bool, count: int) -> None:
        self.bump(**{"dlr_sent" if ok else "dlr_failed": count})

    # ---- sending -------------------------------------------------------------------------

    def check_api_key(self, provided: str | None) -> bool:
        if not provided:
            return False
        return self.api_key is None or provided == self.api_key

    def choose_outcome(self, cfg: dict[str, Any]) -> str:
        """The call's outcome: the forced queue first, then one draw against the rates."""
        forced = self._pop_forced()
        if forced is not None:
            return forced
        thresholds = (
            ("429", cfg["fail_rate_429"]),
            ("500", cfg["fail_rate_500"]),
            ("503", cfg["fail_rate_503"]),
            ("timeout", cfg["timeout_rate"]),
            ("reset", cfg["reset_rate"]),
            ("hang", cfg["hang_rate"]),
        )
        if not any(rate for _, rate in thresholds):
            return "ok"
        with self._rng_lock:
            draw = self._rng.random()
        cumulative = 0.0
        for outcome, rate in thresholds:
            cumulative += rate
            if draw < cumulative:
                return outcome
        return "ok"

    def _rejected_numbers(
        self, numbers: list[str], cfg: dict[str, Any], forced: bool
    ) -> list[bool]:
        if forced:
            return [True] * len(numbers)
        prefixes = [p.lstrip("+") for p in cfg["reject_prefixes"]]
        rate = cfg["reject_rate"]
        result = []
        for number in numbers:
            bare = number.lstrip("+")
            rejected = any(bare.startswith(p) for p in prefixes)
            if not rejected and rate > 0:
                with self._rng_lock:
                    rejected = self._rng.random() < rate
            result.append(rejected)
        return result

    def accept(
        self,
        endpoint: str,
        payload: dict[str, Any],
        numbers: list[str],
        cfg: dict[str, Any],
        outcome: str,
        arrived: float | None = None,
    ) -> list[dict[str, Any]]:
        """Decide, record and schedule reports for each number; return per-message answers.
        `arrived`: when the call arrived (epoch seconds; now if not given), for `timeline`."""
        text = payload["text"]
        text_length = len(text)
        reference = payload.get("reference")
        sender = payload.get("from")
        now = now_iso()
        rejected = self._rejected_numbers(numbers, cfg, forced=outcome == "reject")
        answers: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        for number, is_rejected in zip(numbers, rejected):
            if is_rejected:
                answers.append(
                    {
                        "id": None,
                        "to": number,
                        "timestamp": now,
                        "responseCode": _REJECT_CODE,
                        "responseText": _REJECT_TEXT,
                        "textLength": text_length,
                    }
                )
                continue
            message_id = f"{self._id_prefix}{next(self._id_counter):016x}"
            answers.append(
                {
                    "id": message_id,
                    "to": number,
                    "timestamp": now,
                    "responseCode": 0,
                    "responseText": "Accepted",
                    "textLength": text_length,
                }
            )
            records.append(
                {
                    "id": message_id,
                    "to": number,
                    "text": text,
                    "from": sender,
                    "reference": reference,
                    "endpoint": endpoint,
                    "callback": payload.get("callback"),
                    "received_at": now,
                }
            )
        n_rejected = len(numbers) - len(records)
        at = arrived if arrived is not None else time.time()
        with self._state_lock:
            self._messages.extend(records)
            self._sent_at.extend((at, sender) for _ in records)
            self._stats["accepted"] += len(records)
            self._stats["rejected"] += n_rejected
        callback = cfg["dlr_callback_override"] or payload.get("callback")
        if records and cfg["dlr_enabled"] and isinstance(callback, str) and callback:
            self._schedule_reports(records, callback, cfg)
        return answers

    def _schedule_reports(
        self, records: list[dict[str, Any]], url: str, cfg: dict[str, Any]
    ) -> None:
        mix = cfg["dlr_mix"]
        statuses = list(mix)
        weights = list(mix.values())
        dup_rate = cfg["dlr_duplicate_rate"]
        base = time.monotonic()
        # Fates are drawn here, from the seeded generator shared with outcome choice; the
        # reports module only lays out what was drawn.
        with self._rng_lock:
            finals = self._rng.choices(statuses, weights, k=len(records))
            dups = [dup_rate > 0 and self._rng.random() < dup_rate for _ in records]
        self._reports.schedule(url, plan_reports(records, finals, dups, cfg, base))

    def shuffled(self, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`answers` in an order other than the request's, whenever they have two or more
        distinct entries: a provider that answers a bulk call out of order."""
        result = list(answers)
        with self._rng_lock:
            self._rng.shuffle(result)
        if result == answers:
            result = result[1:] + result[:1]
        return result

    # ---- inbound messages ----------------------------------------------------------------

    def send_inbound(self, request: Any) -> dict[str, Any]:
        """Post a customer's message to the inbound URL (ValueError when the request is wrong
        or no URL is configured); the message and the application's answers."""
        message, repeat, url = inbound_message(request)
        url = url or self._config["inbound_url"]
        if not url:
            raise ValueError("no inbound_url is configured (POST /_sim/config)")
        answers = post_inbound(url, message, repeat)
        self.bump(inbound_posted=repeat)
        return {"message": message, "answers": answers}

    # ---- lifecycle -----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Sleep that a shutdown interrupts, so held requests do not delay it."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def close(self) -> None:
        # Closing the reports sets the shared stopping event, which also ends held requests.
        self._reports.close()


def _hashable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def _ref_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)
