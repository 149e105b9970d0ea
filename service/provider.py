"""The SMS provider (Mitto's public API, SPEC 7) and the classification of every call's outcome.

Each outcome is classified here, where it arises (SPEC 4.4):
- ACCEPTED: responseCode 0 with a message id; the message exists at the provider.
- REJECTED: responseCode != 0, or a 4xx other than 429: permanent for that message.
- NOT_SENT: connection refused, connect timeout, 429, 503: the provider surely has nothing,
  so the claim may be undone and the batch retried. A 429 is also `throttled`: the account is
  over its rate, which slows every worker down (service/infra/ratelimit.py), not an error.
- UNKNOWN: read timeout, connection reset after sending, other 5xx, and a 2xx answer that
  cannot be read: the provider may have it; never resend blindly.

Answers are classified by pure functions over (status, headers, body), total over any input:
an answer of an unexpected shape is an outcome, never an exception.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests

from service.infra import metrics
from service.infra.call_deadline import DeadlineAdapter, deadline

log = logging.getLogger("astronote.provider")

# A provider asking for longer than this is treated as asking for this: a batch retried after
# five minutes is still honouring it, while an hour would outlive the claim timeout.
RETRY_AFTER_CAP_S = 300.0

_DELAY_SECONDS = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")
_PHONE = re.compile(r"\+?([0-9]{1,20})")


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
    throttled: bool = False  # a 429: the provider account is over its rate
    # Never called: our own rate limit refused it right before the call (its reason:
    # "provider", "sender", "cool_down", "redis_down"), and the budget allows it again in
    # `limited_ms` (service/infra/ratelimit.py).
    limited_by: str | None = None
    limited_ms: int | None = None


@dataclass(frozen=True)
class Sms:
    to: str
    text: str
    reference: str


class Provider(Protocol):
    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult: ...

    def send_bulk(
        self, sender: str, to: Sequence[str], text: str, reference: str, callback: str | None
    ) -> list[SendResult]: ...


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The wait a `Retry-After` value asks for, in seconds, at most RETRY_AFTER_CAP_S.

    Delay-seconds (a decimal is tolerated) or an HTTP-date (a past date is 0); None when the
    value is absent or unreadable (negative, `inf`, garbage), so the caller's backoff applies."""
    text = (value or "").strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(text), RETRY_AFTER_CAP_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(0.0, seconds), RETRY_AFTER_CAP_S) if math.isfinite(seconds) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


# Seven digits or more, alone or with up to two spaces, dashes, dots, slashes or brackets
# between them: a phone number however the provider writes it (`+1 (555) 123-4567`).
_NUMBER = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,2}\d){6,}")


def without_numbers(text: str) -> str:
    """The provider's own words with any phone number in them replaced. They become a
    recipient's or a test send's `error` and an audit event's reason, which is append-only
    and never erased: a provider echoing the destination in its refusal would otherwise keep
    an erased customer's number there for ever (a review)."""
    return _NUMBER.sub("[number]", text)


def classify_status(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime | None = None
) -> SendResult | None:
    """The outcome of a non-2xx answer, or None for a 2xx one (its body decides)."""
    if 200 <= status < 300:
        return None
    # Cut after the numbers are out: one cut through would leave its first digits.
    reason = f"HTTP {status}: {without_numbers(body[:400].decode('utf-8', 'replace'))[:200]}"
    if status in (429, 503):
        return SendResult(
            Outcome.NOT_SENT,
            reason=reason,
            retry_after_s=retry_after_seconds(_header(headers, "Retry-After"), now),
            throttled=status == 429,
        )
    if 400 <= status < 500:
        return SendResult(Outcome.REJECTED, reason=reason)
    return SendResult(Outcome.UNKNOWN, reason=reason)


def classify_http_error(response: requests.Response) -> SendResult | None:
    """`classify_status` of a `requests` response (the older name)."""
    return classify_status(response.status_code, response.headers, response.content)


class RequestNeverSent(requests.ConnectionError):
    """The call failed before its whole request went out (a name lookup, a connect, a TLS
    handshake, or a write refused part way): the provider cannot have acted on it."""


def classify_exception(error: requests.RequestException) -> SendResult:
    if isinstance(error, RequestNeverSent):
        cause = error.__cause__
        return SendResult(
            Outcome.NOT_SENT, reason=f"not sent: {type(cause).__name__}: {str(cause)[:200]}"
        )
    if isinstance(error, requests.ConnectTimeout):
        return SendResult(Outcome.NOT_SENT, reason="connect timeout")
    if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.ReadTimeout):
        # urllib3 reports "refused" while connecting; anything else may have reached the provider.
        text = str(error)
        if "refused" in text.lower() or "NewConnectionError" in text:
            return SendResult(Outcome.NOT_SENT, reason="connection refused")
    return SendResult(Outcome.UNKNOWN, reason=f"{type(error).__name__}: {str(error)[:200]}")


_INTEGER_TEXT = re.compile(r"\s*-?[0-9]{1,9}\s*")


def response_code(value: Any) -> int | None:
    """A `responseCode` as an integer: a JSON integer, or its digits in a string (`"0"`):
    providers and their versions differ. None when it is neither (never a boolean)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    return None


def whole_number_text(value: Any, digits: int) -> str | None:
    """A whole JSON number from 0 with at most `digits` digits as its decimal text (`17`,
    `17.0`: "17", JSON Schema's integers), as providers write ids and numbers; None for
    anything else (a boolean, a string, a fraction)."""
    if isinstance(value, float) and value.is_integer() and 0 <= value < 10**digits:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**digits:
        return str(value)
    return None


def message_id(value: Any) -> str | None:
    """A provider's message id as text: a non-blank string as written, or a whole number of at
    most 100 digits (the stored id's length) in decimal. One reader for send answers, delivery
    reports and inbound messages, so that a report names a message as its send's answer did.
    None for anything else."""
    if isinstance(value, str):
        return value if value.strip() else None
    return whole_number_text(value, 100)


def classify_message(message: Any, answer_code: int | None = None) -> SendResult:
    """One message of an answer: accepted with responseCode 0 and an id. A bulk answer's
    messages may carry no code of their own (SPEC 7: `{responseCode, messages: [{id, to,
    ...}]}`): the answer's 0 (`answer_code`) then accepts those with an id, and the answer's
    refusal refuses those without one; an entry with an id under a refusal is unknown (the
    provider named a message: it may have been sent). A code that cannot be read, or no id,
    leaves the outcome unknown."""
    if not isinstance(message, dict):
        return SendResult(Outcome.UNKNOWN, reason="unreadable message in the answer")
    provider_id = message_id(message.get("id"))
    if "responseCode" in message:
        code = response_code(message["responseCode"])
    elif answer_code and provider_id is not None:
        return SendResult(Outcome.UNKNOWN, reason="an id under the answer's refusal")
    else:
        code = answer_code
    if code is None:
        return SendResult(Outcome.UNKNOWN, reason="answer without an integer responseCode")
    if code != 0:
        text = message.get("responseText")
        words = without_numbers(text) if isinstance(text, str) else ""
        return SendResult(Outcome.REJECTED, reason=f"{code}: {words}"[:200])
    if provider_id is not None:
        return SendResult(Outcome.ACCEPTED, provider_id=provider_id)
    return SendResult(Outcome.UNKNOWN, reason="accepted without a message id")


_UNREADABLE = SendResult(Outcome.UNKNOWN, reason="unreadable answer")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays
        return None
    return answer if isinstance(answer, dict) else None


def classify_sms_answer(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime | None = None
) -> SendResult:
    """The outcome of a `/sms` answer; a 2xx whose body cannot be read is unknown (the
    provider may have accepted)."""
    failure = classify_status(status, headers, body, now)
    if failure:
        return failure
    answer = _json_object(body)
    return classify_message(answer) if answer is not None else _UNREADABLE


def _phone_key(number: Any) -> str | None:
    """A number as both sides of a bulk call are compared: its digits, `+` optional."""
    if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
        number = str(number)
    if not isinstance(number, str):
        return None
    match = _PHONE.fullmatch(number.strip())
    return match.group(1) if match else None


def classify_bulk_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    to: Sequence[str],
    now: datetime | None = None,
) -> list[SendResult]:
    """The outcome of a `/smsbulk` answer for each number of `to`, in that order.

    Messages are matched to recipients by `to`: a recipient the answer does not mention, or
    mentions more than once, is unknown. Only an answer none of whose entries names a number
    (Mitto's published schema of `/smsbulk` gives each message only `id` and `timestamp`)
    is matched by position, SPEC 7's order of `to`, and then only with one entry per
    number; without that every recipient of the call was unknown, and failed
    `unknown_outcome` unless a report came."""
    failure = classify_status(status, headers, body, now)
    if failure:
        return [failure] * len(to)
    answer = _json_object(body)
    if answer is None:
        return [_UNREADABLE] * len(to)
    messages = answer.get("messages")
    if isinstance(messages, dict):  # one message, written as the object itself
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        return [_whole_batch(answer)] * len(to)
    code = response_code(answer.get("responseCode"))
    if len(messages) == len(to) and not any(
        isinstance(message, dict) and message.get("to") not in (None, "") for message in messages
    ):
        return _match_by_position(messages, code)
    return _match_messages(messages, to, code)


def _match_by_position(messages: list[Any], answer_code: int | None) -> list[SendResult]:
    """Entries that name no number, one per requested number, in the order of `to`. An id
    given twice is ambiguous (two recipients, one message) for both."""
    ids = Counter(
        message_id(message.get("id")) for message in messages if isinstance(message, dict)
    )
    results = []
    for message in messages:
        if not isinstance(message, dict):
            results.append(SendResult(Outcome.UNKNOWN, reason="not in the bulk answer"))
            continue
        result = classify_message(message, answer_code)
        if result.provider_id is not None and ids[result.provider_id] > 1:
            result = SendResult(Outcome.UNKNOWN, reason="ambiguous in the bulk answer")
        results.append(result)
    return results


def _whole_batch(answer: dict[str, Any]) -> SendResult:
    # Without per-message entries only a refusal of the whole call can be read.
    code = response_code(answer.get("responseCode"))
    if code is not None and code != 0:
        return classify_message(answer)
    return SendResult(Outcome.UNKNOWN, reason="bulk answer without messages")


def _match_messages(
    messages: list[Any], to: Sequence[str], answer_code: int | None
) -> list[SendResult]:
    """Each requested number's outcome from the message entries naming it by `to`; an entry
    without a code of its own takes the answer's (`answer_code`)."""
    named: dict[str, list[Any]] = {}
    for message in messages:
        key = _phone_key(message.get("to")) if isinstance(message, dict) else None
        if key is not None:
            named.setdefault(key, []).append(message)
    keys = [_phone_key(number) for number in to]
    requested = Counter(keys)
    stray = len(messages) - sum(len(named.get(key, ())) for key in requested if key)
    if stray:
        log.warning(
            "bulk answer has messages naming no requested number",
            extra={"messages": len(messages), "stray": stray},
        )
    # An id named twice (17 and "17" are one id) would give two recipients one message.
    ids = Counter(
        message_id(message.get("id")) for message in messages if isinstance(message, dict)
    )
    results = []
    for key in keys:
        entries = named.get(key, []) if key is not None else []
        if not entries:
            results.append(SendResult(Outcome.UNKNOWN, reason="not in the bulk answer"))
            continue
        result = classify_message(entries[0], answer_code)
        if (
            len(entries) > 1
            or requested[key] > 1
            or (result.provider_id is not None and ids[result.provider_id] > 1)
        ):
            result = SendResult(Outcome.UNKNOWN, reason="ambiguous in the bulk answer")
        results.append(result)
    return results


class AnswerTooSlow(requests.ReadTimeout):
    """The call's deadline passed before its whole answer came: it may have reached the
    provider (an unknown outcome, as a read timeout is)."""


class MittoClient:
    """`requests` with one pooled session (pool at least as large as the concurrency)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        pool_size: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout_s, read_timeout_s)
        # The whole call, not each read: a provider answering byte by byte, each read inside
        # the read timeout, is cut at the connect and read timeouts' sum
        # (`service/infra/call_deadline.py`), the window's worst as the sender plans it.
        self.deadline_s = connect_timeout_s + read_timeout_s
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy lookup per call: ~0.6 ms of CPU each
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"X-Mitto-API-Key": api_key or "", "Content-Type": "application/json"}
        )

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response:
        with deadline(self.deadline_s) as bound:
            try:
                return self.session.post(f"{self.base_url}{path}", json=body, timeout=self.timeout)
            except requests.RequestException as error:
                if bound.sock is None:
                    # urllib3's `request` had not returned: the request never went out whole.
                    # Classified by where it failed, not by the error's text: a review found a
                    # name lookup's or a TLS handshake's failure read as an unknown outcome, so
                    # a DNS blip claimed every window, sent nothing and failed the campaigns
                    # at the claim timeout, their credits held as unknown for days.
                    raise RequestNeverSent(str(error)) from error
                if bound.passed:
                    # Cut after the request went out.
                    raise AnswerTooSlow(
                        f"no whole answer within {self.deadline_s:g} s (the connect and read"
                        " timeouts)"
                    ) from error
                raise

    def send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        with metrics.timed() as call:
            result = self._send_one(sender, sms, callback)
        metrics.observe_provider_call("sms", result.outcome.value, call.seconds)
        return result

    def send_bulk(
        self, sender: str, to: Sequence[str], text: str, reference: str, callback: str | None
    ) -> list[SendResult]:
        with metrics.timed() as call:
            results = self._send_bulk(sender, to, text, reference, callback)
        outcomes = {result.outcome.value for result in results}
        metrics.observe_provider_call(
            "smsbulk", outcomes.pop() if len(outcomes) == 1 else "mixed", call.seconds
        )
        return results

    def _send_one(self, sender: str, sms: Sms, callback: str | None) -> SendResult:
        body = {"from": sender, "to": sms.to, "text": sms.text, "reference": sms.reference}
        if callback:
            body["callback"] = callback
        try:
            response = self._post("/sms", body)
        except requests.RequestException as error:
            return classify_exception(error)
        return classify_sms_answer(response.status_code, response.headers, response.content)

    def _send_bulk(
        self, sender: str, to: Sequence[str], text: str, reference: str, callback: str | None
    ) -> list[SendResult]:
        body = {"from": sender, "to": ",".join(to), "text": text, "reference": reference}
        if callback:
            body["callback"] = callback
        try:
            response = self._post("/smsbulk", body)
        except requests.RequestException as error:
            return [classify_exception(error)] * len(to)
        return classify_bulk_answer(response.status_code, response.headers, response.content, to)
