"""The SMS provider (Mitto's public API, SPEC 7) and the classification of every call's outcome.

Each outcome is classified here, where it arises (SPEC 4.4):
- ACCEPTED: responseCode 0; the message exists at the provider.
- REJECTED: responseCode != 0, or a 4xx other than 429: permanent for that message.
- NOT_SENT: connection refused, connect timeout, 429, 503: the provider surely has nothing,
  so the claim may be undone and the batch retried.
- UNKNOWN: read timeout, connection reset after sending, other 5xx: the provider may have it;
  never resend blindly.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import requests
from requests.adapters import HTTPAdapter

from service.infra import metrics

log = logging.getLogger("astronote.provider")


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_id: str | None = None
    reason: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Sms:
    to: str
    text: str
    reference: str


class Provider(Protocol):
    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult: ...

    def send_bulk(self, sender: str, to: Sequence[str], text: str, reference: str,
                  callback: str | None) -> list[SendResult]: ...


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def classify_http_error(response: requests.Response) -> SendResult | None:
    """The outcome of a non-2xx answer, or None for a 2xx one."""
    status = response.status_code
    if status < 300:
        return None
    reason = f"HTTP {status}: {response.text[:200]}"
    if status in (429, 503):
        return SendResult(Outcome.NOT_SENT, reason=reason, retry_after_s=_retry_after(response))
    if 400 <= status < 500:
        return SendResult(Outcome.REJECTED, reason=reason)
    return SendResult(Outcome.UNKNOWN, reason=reason)


def classify_exception(error: requests.RequestException) -> SendResult:
    if isinstance(error, requests.ConnectTimeout):
        return SendResult(Outcome.NOT_SENT, reason="connect timeout")
    if isinstance(error, requests.ConnectionError) and not isinstance(
            error, requests.ReadTimeout):
        # urllib3 reports "refused" while connecting; anything else may have reached the provider.
        text = str(error)
        if "refused" in text.lower() or "NewConnectionError" in text:
            return SendResult(Outcome.NOT_SENT, reason="connection refused")
    return SendResult(Outcome.UNKNOWN, reason=f"{type(error).__name__}: {str(error)[:200]}")


def classify_message(message: dict[str, Any]) -> SendResult:
    code = message.get("responseCode")
    if code == 0 and message.get("id"):
        return SendResult(Outcome.ACCEPTED, provider_id=str(message["id"]))
    if code == 0:
        return SendResult(Outcome.UNKNOWN, reason="accepted without a message id")
    return SendResult(Outcome.REJECTED, reason=f"{code}: {message.get('responseText', '')}"[:200])


class MittoClient:
    """`requests` with one pooled session (pool at least as large as the concurrency)."""

    def __init__(self, base_url: str, api_key: str | None, connect_timeout_s: float,
                 read_timeout_s: float, pool_size: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy lookup per call: ~0.6 ms of CPU each
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"X-Mitto-API-Key": api_key or "",
                                     "Content-Type": "application/json"})

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.session.post(f"{self.base_url}{path}", json=body, timeout=self.timeout)

    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        with metrics.timed() as call:
            result = self._send_one(sender, sms, callback)
        metrics.observe_provider_call("sms", result.outcome.value, call.seconds)
        return result

    def send_bulk(self, sender: str, to: Sequence[str], text: str, reference: str,
                  callback: str | None) -> list[SendResult]:
        with metrics.timed() as call:
            results = self._send_bulk(sender, to, text, reference, callback)
        outcomes = {result.outcome.value for result in results}
        metrics.observe_provider_call("smsbulk", outcomes.pop() if len(outcomes) == 1 else "mixed",
                                      call.seconds)
        return results

    def _send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        body = {"from": sender, "to": sms.to, "text": sms.text, "reference": sms.reference}
        if callback:
            body["callback"] = callback
        try:
            response = self._post("/sms", body)
        except requests.RequestException as error:
            return classify_exception(error)
        failure = classify_http_error(response)
        if failure:
            return failure
        try:
            return classify_message(response.json())
        except ValueError:
            return SendResult(Outcome.UNKNOWN, reason="unreadable answer")

    def _send_bulk(self, sender: str, to: Sequence[str], text: str, reference: str,
                   callback: str | None) -> list[SendResult]:
        body = {"from": sender, "to": ",".join(to), "text": text, "reference": reference}
        if callback:
            body["callback"] = callback
        try:
            response = self._post("/smsbulk", body)
        except requests.RequestException as error:
            return [classify_exception(error)] * len(to)
        failure = classify_http_error(response)
        if failure:
            return [failure] * len(to)
        try:
            answer = response.json()
            messages = answer.get("messages") or []
        except (ValueError, AttributeError):
            return [SendResult(Outcome.UNKNOWN, reason="unreadable answer")] * len(to)
        if answer.get("responseCode", 0) != 0 and not messages:
            return [classify_message(answer)] * len(to)
        if len(messages) != len(to):
            # The provider accepted something but the answer cannot be matched in order.
            return [SendResult(Outcome.UNKNOWN, reason="bulk answer length mismatch")] * len(to)
        return [classify_message(message) for message in messages]
