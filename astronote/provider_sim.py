"""An HTTP simulator of the Mitto SMS API, for end-to-end tests, the demo and benchmarks.

It speaks the provider's shape (`POST /sms`, `POST /smsbulk`, delivery reports POSTed back to the
request's `callback`), records every accepted message so a test can count what was really sent,
and injects faults (latency, 429, 5xx, timeouts, resets, rejections) either by rate or by a
deterministic queue of forced outcomes. Control and inspection live under `/_sim/`:
`POST /_sim/config` merges fields into the running config (`next` replaces the forced-outcome
queue), `GET /_sim/messages[?reference=&to=&summary=1]`, `GET /_sim/stats`, `POST /_sim/reset`,
`GET /_sim/health`.

Only the stdlib serves HTTP: the simulator must sustain thousands of small requests per second
and hundreds of keep-alive connections without adding a dependency.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Iterable
from urllib.parse import parse_qs

import requests

__all__ = [
    "DEFAULT_CONFIG",
    "FORCED_OUTCOMES",
    "DLR_STATUSES",
    "Simulator",
    "SimServer",
    "make_server",
    "start_background",
    "serve",
    "main",
]

DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0,
    "fail_rate_429": 0.0,
    "retry_after_s": 1,
    "fail_rate_500": 0.0,
    "fail_rate_503": 0.0,
    "timeout_rate": 0.0,
    "timeout_s": 30,
    "reset_rate": 0.0,
    "reject_rate": 0.0,
    "reject_prefixes": [],
    "next": [],
    "dlr_enabled": True,
    "dlr_delay_ms": 200,
    "dlr_mix": {"Delivered": 1.0},
    "dlr_batch": 1,
    "dlr_duplicate_rate": 0.0,
    "dlr_queued_first": False,
    "dlr_callback_override": None,
}

FORCED_OUTCOMES = ("429", "500", "503", "timeout", "reject", "reset", "refuse_before", "ok")

# Final statuses and their statusCode; only Delivered is a success.
DLR_STATUSES: dict[str, int] = {"Delivered": 0, "Undelivered": 1, "Failed": 2, "Expired": 3}
# Sent (not Queued) is the intermediate report: the application itself marks an accepted
# message Queued, so Sent is the one that exercises "statuses only move forward".
_INTERMEDIATE_STATUS = "Sent"

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
    "bad_requests",
    "dlr_sent",
    "dlr_failed",
)
_DLR_ATTEMPTS = 4
_DLR_BACKOFF_S = (0.1, 0.3, 0.9)
_DLR_TIMEOUT = (2.0, 5.0)

_RATE_FIELDS = (
    "fail_rate_429",
    "fail_rate_500",
    "fail_rate_503",
    "timeout_rate",
    "reset_rate",
    "reject_rate",
    "dlr_duplicate_rate",
)
_NON_NEGATIVE_FIELDS = ("latency_ms", "retry_after_s", "timeout_s", "dlr_delay_ms")
_BOOL_FIELDS = ("dlr_enabled", "dlr_queued_first")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# Fixed error answers are serialised once: they are hit at full request rate under fault load.
_BODY_401 = b'{"responseCode": 401, "responseText": "Unauthorized"}'
_BODY_429 = b'{"responseCode": 429, "responseText": "Too Many Requests"}'
_BODY_500 = b'{"responseCode": 500, "responseText": "Internal Server Error"}'
_BODY_503 = b'{"responseCode": 503, "responseText": "Service Unavailable"}'
_BODY_404 = b'{"responseCode": 404, "responseText": "Not Found"}'
_LINGER_RST = struct.pack("ii", 1, 0)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(update: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Return `base` merged with `update`, or raise ValueError naming the bad field.

    Unknown fields are refused rather than ignored: a typo in a test's fault setup would
    otherwise silently test nothing.
    """
    if not isinstance(update, dict):
        raise ValueError("config must be a JSON object")
    unknown = sorted(set(update) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    merged = dict(base)
    for key, value in update.items():
        if key in _RATE_FIELDS:
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be a number in [0, 1]")
            value = float(value)
        elif key in _NON_NEGATIVE_FIELDS:
            if not _is_number(value) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
        elif key in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be a boolean")
        elif key == "dlr_batch":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError("dlr_batch must be an integer >= 1")
        elif key == "reject_prefixes":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ValueError("reject_prefixes must be a list of strings")
            value = list(value)
        elif key == "next":
            if not isinstance(value, list) or not all(v in FORCED_OUTCOMES for v in value):
                raise ValueError(f"next must be a list of {', '.join(FORCED_OUTCOMES)}")
            value = list(value)
        elif key == "dlr_mix":
            if (
                not isinstance(value, dict)
                or not value
                or not all(k in DLR_STATUSES and _is_number(w) and w >= 0 for k, w in value.items())
                or sum(value.values()) <= 0
            ):
                raise ValueError(
                    f"dlr_mix must map some of {', '.join(DLR_STATUSES)} to non-negative weights "
                    "with a positive sum"
                )
            value = {k: float(w) for k, w in value.items()}
        elif key == "dlr_callback_override":
            if value is not None and not isinstance(value, str):
                raise ValueError("dlr_callback_override must be a URL string or null")
        merged[key] = value
    return merged


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
        self._stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        # Ids are a per-process random prefix plus a counter: unique like uuid4 but without an
        # os.urandom call per message.
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count(1)
        self._stopping = threading.Event()
        self._dlr_cond = threading.Condition(threading.Lock())
        self._dlr_heap: list[tuple[float, int, str, dict[str, Any]]] = []
        self._dlr_seq = itertools.count()
        self._dlr_in_flight = 0
        self._dlr_generation = 0
        self._senders: list[threading.Thread] = []
        self._session: requests.Session | None = None
        self._apply_config(self._startup_config)

    # ---- configuration -------------------------------------------------------------------

    def _apply_config(self, merged: dict[str, Any]) -> None:
        with self._config_lock:
            self._next = deque(merged["next"])
            merged = dict(merged)
            merged["next"] = []
            self._config = merged

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
            self._stats = dict.fromkeys(_STAT_KEYS, 0)
        with self._dlr_cond:
            self._dlr_heap = []
            self._dlr_generation += 1
        with self._rng_lock:
            self._rng = random.Random(self.seed)
        self._apply_config(self._startup_config)

    # ---- inspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._state_lock:
            result = dict(self._stats)
        with self._dlr_cond:
            result["dlr_pending"] = len(self._dlr_heap) + self._dlr_in_flight
        return result

    def messages(self, reference: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        with self._state_lock:
            selected = list(self._messages)
        if reference is not None:
            selected = [m for m in selected if _ref_text(m["reference"]) == reference]
        if to is not None:
            selected = [m for m in selected if m["to"] == to]
        return selected

    def summary(self, reference: str | None = None, to: str | None = None) -> dict[str, Any]:
        """Count plus the (to, reference) keys accepted more than once: a resend is a bug."""
        selected = self.messages(reference, to)
        counts = Counter((m["to"], _hashable(m["reference"])) for m in selected)
        duplicates = [[key[0], key[1]] for key, n in counts.items() if n > 1]
        extra = sum(n - 1 for n in counts.values() if n > 1)
        return {
            "count": len(selected),
            "unique": len(counts),
            "duplicates": duplicates,
            "duplicate_messages": extra,
        }

    def bump(self, **deltas: int) -> None:
        with self._state_lock:
            stats = self._stats
            for key, delta in deltas.items():
                stats[key] += delta

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
    ) -> list[dict[str, Any]]:
        """Decide, record and schedule reports for each number; return per-message answers."""
        text = payload["text"]
        text_length = len(text)
        reference = payload.get("reference")
        sender = payload.get("from")
        now = _now_iso()
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
                    "received_at": now,
                }
            )
        n_rejected = len(numbers) - len(records)
        with self._state_lock:
            self._messages.extend(records)
            self._stats["accepted"] += len(records)
            self._stats["rejected"] += n_rejected
        callback = cfg["dlr_callback_override"] or payload.get("callback")
        if records and cfg["dlr_enabled"] and isinstance(callback, str) and callback:
            self._schedule_reports(records, callback, cfg)
        return answers

    # ---- delivery reports ----------------------------------------------------------------

    def _schedule_reports(
        self, records: list[dict[str, Any]], url: str, cfg: dict[str, Any]
    ) -> None:
        delay = cfg["dlr_delay_ms"] / 1000.0
        mix = cfg["dlr_mix"]
        statuses = list(mix)
        weights = list(mix.values())
        dup_rate = cfg["dlr_duplicate_rate"]
        base = time.monotonic()
        entries: list[tuple[float, dict[str, Any]]] = []
        with self._rng_lock:
            finals = self._rng.choices(statuses, weights, k=len(records))
            dups = [dup_rate > 0 and self._rng.random() < dup_rate for _ in records]
        for record, status, dup in zip(records, finals, dups):
            report = {
                "id": record["id"],
                "to": record["to"],
                "reference": record["reference"],
                "deliveryStatus": status,
                "statusCode": DLR_STATUSES[status],
            }
            if cfg["dlr_queued_first"]:
                early = dict(report, deliveryStatus=_INTERMEDIATE_STATUS, statusCode=0)
                entries.append((base + delay / 2, early))
            entries.append((base + delay, report))
            if dup:
                # Later and separately, so the webhook sees a genuine replay, not one array item
                # repeated.
                entries.append((base + delay + max(0.05, delay / 2), report))
        self._ensure_senders()
        with self._dlr_cond:
            for due, report in entries:
                heapq.heappush(self._dlr_heap, (due, next(self._dlr_seq), url, report))
            self._dlr_cond.notify(len(entries))

    def _ensure_senders(self) -> None:
        if self._senders:
            return
        with self._dlr_cond:
            if self._senders or self._stopping.is_set():
                return
            session = requests.Session()
            # Callbacks are explicit URLs; consulting proxy/netrc settings from the environment
            # costs ~0.5 ms of CPU per post (it walks os.environ twice) for nothing.
            session.trust_env = False
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=4, pool_maxsize=self.dlr_threads * 2
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
            for i in range(self.dlr_threads):
                thread = threading.Thread(
                    target=self._sender_loop, name=f"provider-sim-dlr-{i}", daemon=True
                )
                thread.start()
                self._senders.append(thread)

    def _take_due(self) -> tuple[int, int, list[tuple[str, dict[str, Any]]]] | None:
        """Block until reports are due; take up to dlr_batch of them (None when stopping)."""
        cond = self._dlr_cond
        with cond:
            while True:
                if self._stopping.is_set():
                    return None
                heap = self._dlr_heap
                now = time.monotonic()
                if heap and heap[0][0] <= now:
                    break
                cond.wait(heap[0][0] - now if heap else None)
            batch_size = self._config["dlr_batch"]
            taken = []
            while heap and heap[0][0] <= now and len(taken) < batch_size:
                _, _, url, report = heapq.heappop(heap)
                taken.append((url, report))
            self._dlr_in_flight += len(taken)
            return batch_size, self._dlr_generation, taken

    def _sender_loop(self) -> None:
        while True:
            item = self._take_due()
            if item is None:
                return
            batch_size, generation, taken = item
            try:
                by_url: dict[str, list[dict[str, Any]]] = {}
                for url, report in taken:
                    by_url.setdefault(url, []).append(report)
                for url, reports in by_url.items():
                    stamp = _now_iso()
                    for report in reports:
                        report["timestamp"] = stamp
                    # With batching on, even a lone report goes as an array: the receiver
                    # must handle both shapes, and tests can rely on the shape.
                    body = reports if batch_size > 1 else reports[0]
                    ok = self._post_report(url, json.dumps(body).encode())
                    # A reset during the post must not leak counts into the fresh stats.
                    if generation == self._dlr_generation:
                        self.bump(**{"dlr_sent" if ok else "dlr_failed": len(reports)})
            finally:
                with self._dlr_cond:
                    self._dlr_in_flight -= len(taken)

    def _post_report(self, url: str, body: bytes) -> bool:
        session = self._session
        assert session is not None
        for attempt in range(_DLR_ATTEMPTS):
            if self._stopping.is_set():
                return False
            try:
                response = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=_DLR_TIMEOUT,
                )
                status = response.status_code
                response.close()
                if 200 <= status < 300:
                    return True
                if status < 500 and status != 429:
                    return False  # the receiver refuses it: retrying cannot help
            except requests.RequestException:
                pass
            if attempt < len(_DLR_BACKOFF_S):
                self._stopping.wait(_DLR_BACKOFF_S[attempt])
        return False

    def sleep(self, seconds: float) -> None:
        """Sleep that a shutdown interrupts, so held requests do not delay it."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def close(self) -> None:
        self._stopping.set()
        with self._dlr_cond:
            self._dlr_cond.notify_all()
        for thread in self._senders:
            thread.join(timeout=2)
        if self._session is not None:
            self._session.close()


def _hashable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def _ref_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _parse_numbers(to: Any, bulk: bool) -> list[str] | None:
    if isinstance(to, (int, str)) and not isinstance(to, bool):
        raw = str(to)
        parts = raw.split(",") if bulk else [raw]
    elif bulk and isinstance(to, list) and all(isinstance(n, (int, str)) for n in to):
        parts = [str(n) for n in to]
    else:
        return None
    numbers = [p.strip() for p in parts if p.strip()]
    return numbers or None


class _Headers(dict):
    """Request headers keyed by lower-cased name; the lookups the handler needs, nothing more."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return dict.get(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "provider-sim"
    # One write per response already; no Nagle, so nothing waits for a delayed ACK.
    disable_nagle_algorithm = True
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # ---- plumbing ------------------------------------------------------------------------

    def parse_request(self) -> bool:
        """Parse the request line and headers without the stdlib's email parser.

        The email-based header parsing costs about as much as everything else a request does;
        a plain split halves the simulator's CPU per request, which the system under test
        shares during benchmarks.
        """
        self.command = None
        self.request_version = "HTTP/1.1"  # so that error answers carry a status line
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            self.send_error(400, "Bad request line")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, f"Unsupported HTTP version {version}")
            return False
        self.command, self.path, self.request_version = command, path, version
        headers = _Headers()
        readline = self.rfile.readline
        for _ in range(_MAX_HEADERS + 1):
            line = readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep:
                self.send_error(400, "Malformed header line")
                return False
            dict.__setitem__(headers, name.strip().lower(), value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(n) if n > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_line = self.rfile.readline(_MAX_LINE + 1)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return b""
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE + 1)

    def _send(self, status: int, body: bytes, extra: Iterable[tuple[str, str]] = ()) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head.extend(f"{k}: {v}" for k, v in extra)
        if self.close_connection:
            head.append("Connection: close")
        # Status line, headers and body in one send: a split write plus delayed ACK on the
        # client would cost tens of milliseconds per keep-alive request.
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _send_json(self, status: int, payload: Any, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(payload).encode(), extra)

    def _bad_request(self, reason: str) -> None:
        self._send_json(400, {"responseCode": 400, "responseText": f"Bad Request: {reason}"})

    def _reset_connection(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean EOF.
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        self.close_connection = True
        self.connection.close()

    def _split_path(self) -> tuple[str, dict[str, list[str]]]:
        path, _, query = self.path.partition("?")
        if len(path) > 1:
            path = path.rstrip("/")
        return path, parse_qs(query) if query else {}

    # ---- routes --------------------------------------------------------------------------

    def do_POST(self) -> None:
        body = self._read_body()
        path, _ = self._split_path()
        if path == "/sms":
            self._send_sms(body, bulk=False)
        elif path == "/smsbulk":
            self._send_sms(body, bulk=True)
        elif path == "/_sim/config":
            sim = self.server.simulator
            try:
                update = json.loads(body or b"{}")
                self._send_json(200, sim.update_config(update))
            except ValueError as exc:
                self._bad_request(str(exc))
        elif path == "/_sim/reset":
            self.server.simulator.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send(404, _BODY_404)

    def do_GET(self) -> None:
        self._read_body()
        path, query = self._split_path()
        sim = self.server.simulator
        if path == "/_sim/health":
            self._send(200, b'{"ok": true}')
        elif path == "/_sim/stats":
            self._send_json(200, sim.stats())
        elif path == "/_sim/config":
            self._send_json(200, sim.get_config())
        elif path == "/_sim/messages":
            reference = query.get("reference", [None])[0]
            to = query.get("to", [None])[0]
            if query.get("summary", ["0"])[0] not in ("", "0", "false"):
                self._send_json(200, sim.summary(reference, to))
            else:
                selected = sim.messages(reference, to)
                self._send_json(200, {"count": len(selected), "messages": selected})
        else:
            self._send(404, _BODY_404)

    def _send_sms(self, body: bytes, bulk: bool) -> None:
        sim = self.server.simulator
        if not sim.check_api_key(self.headers.get("X-Mitto-API-Key")):
            sim.bump(requests=1, bad_requests=1)
            self._send(401, _BODY_401)
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            sim.bump(requests=1, bad_requests=1)
            self._bad_request("body must be a JSON object")
            return
        numbers = _parse_numbers(payload.get("to"), bulk)
        missing = [
            name
            for name, ok in (
                ("from", isinstance(payload.get("from"), str) and payload["from"]),
                ("to", numbers),
                ("text", isinstance(payload.get("text"), str) and payload["text"]),
            )
            if not ok
        ]
        if missing:
            sim.bump(requests=1, bad_requests=1)
            self._bad_request(f"missing or invalid {', '.join(missing)}")
            return
        assert numbers is not None
        cfg = sim._config
        outcome = sim.choose_outcome(cfg)
        sim.sleep(cfg["latency_ms"] / 1000.0)

        if outcome == "429":
            sim.bump(requests=1, throttled=1)
            retry_after = cfg["retry_after_s"]
            retry_text = (
                str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
            )
            self._send(429, _BODY_429, (("Retry-After", retry_text),))
            return
        if outcome in ("500", "503"):
            sim.bump(requests=1, errors=1)
            self._send(int(outcome), _BODY_500 if outcome == "500" else _BODY_503)
            return
        if outcome == "refuse_before":
            sim.bump(requests=1, resets=1)
            self._reset_connection()
            return

        sim.bump(requests=1)
        answers = sim.accept("smsbulk" if bulk else "sms", payload, numbers, cfg, outcome)
        if outcome == "reset":
            sim.bump(resets=1)
            self._reset_connection()
            return
        if bulk:
            response: dict[str, Any] = {
                "responseCode": 0,
                "responseText": "OK",
                "messages": answers,
            }
        else:
            response = answers[0]
        encoded = json.dumps(response).encode()
        if outcome == "timeout":
            sim.bump(timeouts=1)
            sim.sleep(cfg["timeout_s"])
            # The client has most likely given up; do not reuse a connection whose peer left.
            self.close_connection = True
        self._send(200, encoded)


class SimServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying its Simulator; closing the server stops report senders."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds
        # on a box with slow reverse DNS; nothing here needs it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (read timeout, reset) is routine here, not an error to print.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.simulator.close()


def make_server(host: str = "127.0.0.1", port: int = 9090, **options: Any) -> SimServer:
    """Bind a simulator server (port 0 picks a free port; see `server.url`).

    `options` are `api_key`, `seed`, `dlr_threads` and any field of DEFAULT_CONFIG as its
    start-up value (restored by `POST /_sim/reset`).
    """
    return SimServer((host, port), Simulator(**options))


def start_background(host: str = "127.0.0.1", port: int = 0, **options: Any) -> SimServer:
    """Start a server in a daemon thread and return it; stop with `shutdown()` +
    `server_close()`."""
    server = make_server(host, port, **options)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    return server


def serve(
    host: str = "127.0.0.1", port: int = 9090, api_key: str | None = None, **options: Any
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down (pending delivery reports are dropped)."""
    server = make_server(host, port, api_key=api_key, **options)
    cfg = server.simulator.get_config()
    print(
        json.dumps(
            {
                "event": "provider_sim.started",
                "host": server.server_address[0],
                "port": server.server_address[1],
                "dlr": cfg["dlr_enabled"],
                "dlr_delay_ms": cfg["dlr_delay_ms"],
                "api_key_required": api_key is not None,
            }
        ),
        file=sys.stderr,
        flush=True,
    )

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run on serve_forever's
        # own (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(json.dumps({"event": "provider_sim.stopped"}), file=sys.stderr, flush=True)


def _default_port() -> int:
    try:
        return int(os.environ.get("PORT", "") or 9090)
    except ValueError:
        return 9090


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="astronote provider-sim", description="Simulated Mitto SMS API for local work."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=_default_port())
    parser.add_argument("--api-key", default=None, help="require this X-Mitto-API-Key")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--dlr-delay-ms", type=float, default=DEFAULT_CONFIG["dlr_delay_ms"])
    parser.add_argument("--no-dlr", action="store_true", help="post no delivery reports")
    parser.add_argument("--dlr-batch", type=int, default=1)
    parser.add_argument("--dlr-threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-rate-429", type=float, default=0.0)
    parser.add_argument("--fail-rate-500", type=float, default=0.0)
    parser.add_argument("--reject-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        serve(
            args.host,
            args.port,
            api_key=args.api_key,
            seed=args.seed,
            dlr_threads=args.dlr_threads,
            latency_ms=args.latency_ms,
            dlr_delay_ms=args.dlr_delay_ms,
            dlr_enabled=not args.no_dlr,
            dlr_batch=args.dlr_batch,
            fail_rate_429=args.fail_rate_429,
            fail_rate_500=args.fail_rate_500,
            reject_rate=args.reject_rate,
        )
    except (ValueError, OSError) as exc:
        print(
            json.dumps({"event": "provider_sim.failed", "error": str(exc)}),
            file=sys.stderr,
            flush=True,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
