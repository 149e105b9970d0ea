"""The simulator's runtime configuration: defaults, the forced outcomes, and validation.

A test changes the running config with `POST /_sim/config`; `validate_config` is the one place
that decides what such an update may contain.
"""

from __future__ import annotations

from typing import Any

from astronote.sim.answers import MALFORMED_ANSWERS

DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0,
    "fail_rate_429": 0.0,
    "retry_after_s": 1,
    "fail_rate_500": 0.0,
    "fail_rate_503": 0.0,
    "timeout_rate": 0.0,
    "timeout_s": 30,
    # `drip`: seconds between the bytes of an accepted call's answer.
    "drip_s": 0.3,
    "reset_rate": 0.0,
    "hang_rate": 0.0,
    "reject_rate": 0.0,
    "reject_prefixes": [],
    "next": [],
    "dlr_enabled": True,
    "dlr_delay_ms": 200,
    "dlr_mix": {"Delivered": 1.0},
    "dlr_batch": 1,
    # False: posts over the senders' keep-alive connections (at most dlr_threads at once);
    # True: every post on its own thread and new connection, unbounded (astronote/sim/reports).
    "dlr_burst": False,
    # Seconds a report's post may take (connecting, queueing at the receiver, the answer)
    # before it is abandoned and retried (astronote/sim/retry).
    "dlr_timeout_s": 5.0,
    "dlr_duplicate_rate": 0.0,
    "dlr_queued_first": False,
    "dlr_callback_override": None,
    "shuffle_bulk": False,
    # Another provider's spelling of the same API (`astronote/sim/answers.terse`): ids as
    # integers, a bulk answer's code on the answer only, `/sms`'s code as a string; reports
    # with the status in capitals, the code as a string, the time without an offset.
    "terse": False,
    # Where `POST /_sim/inbound` posts the messages customers "send" (the application's
    # inbound webhook, with its token).
    "inbound_url": None,
}

# `reset` accepts and records the messages, then resets the connection without answering;
# `refuse_before` resets before accepting anything; `hang` accepts nothing and holds the
# request for `timeout_s`, then resets it (a provider that hangs: `timeout` is one that accepts,
# then answers too late; `drip` accepts, then writes its answer one byte every `drip_s`,
# each read inside any read timeout, the whole answer not). `shuffled` answers a bulk call's
# messages in another order than the request's; the `answer_*` ones accept, then answer in a
# wrong shape
# (see `answers`).
FORCED_OUTCOMES = (
    "429",
    "500",
    "503",
    "timeout",
    "reject",
    "reset",
    "refuse_before",
    "hang",
    "drip",
    "ok",
    "shuffled",
    *MALFORMED_ANSWERS,
)

# Final statuses and their statusCode; only Delivered is a success.
DLR_STATUSES: dict[str, int] = {"Delivered": 0, "Undelivered": 1, "Failed": 2, "Expired": 3}

_RATE_FIELDS = (
    "fail_rate_429",
    "fail_rate_500",
    "fail_rate_503",
    "timeout_rate",
    "reset_rate",
    "hang_rate",
    "reject_rate",
    "dlr_duplicate_rate",
)
_NON_NEGATIVE_FIELDS = ("latency_ms", "retry_after_s", "timeout_s", "dlr_delay_ms", "drip_s")
_POSITIVE_FIELDS = ("dlr_timeout_s",)
_BOOL_FIELDS = ("dlr_enabled", "dlr_queued_first", "dlr_burst", "shuffle_bulk", "terse")


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
        elif key in _POSITIVE_FIELDS:
            if not _is_number(value) or value <= 0:
                raise ValueError(f"{key} must be a positive number")
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
        elif key in ("dlr_callback_override", "inbound_url"):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a URL string or null")
        merged[key] = value
    return merged
