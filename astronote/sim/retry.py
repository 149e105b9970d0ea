"""How the simulator retries a delivery report, as a provider does: a post that got no answer
(refused, reset, timed out), a 5xx or a 429 is posted again, after the answer's `Retry-After`
when it has one (a receiver shedding load says when to come back), else after a backoff that
doubles; both with jitter, so reports refused together do not all come back in the same
instant. Bounded: at most MAX_ATTEMPTS posts within WINDOW_S of the first, then the report is
given up (counted `dlr_failed`). Any other answer (a 4xx) is final: retrying cannot help.
"""

from __future__ import annotations

import random
import time

# A provider retries for hours; within the simulator's window, 30 posts (12 until session 13,
# whose 1-ms shedding e2e test then saw 3-5 of 400 reports given up in 2 of 5 runs: a
# refused report is retried about every Retry-After, so 12 posts spanned some 15 s).
MAX_ATTEMPTS = 30
WINDOW_S = 120.0
MAX_RETRY_AFTER_S = 30.0
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0


def worth_retrying(status: int | None) -> bool:
    return status is None or status >= 500 or status == 429


def retry_after_seconds(header: str | None) -> float | None:
    """`Retry-After` in seconds (the delta form; a date is ignored), capped."""
    if not header:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


class Retries:
    """One report's attempts: `after(status, retry_after)` is the wait before the next post,
    or None when it is final (answered 2xx, refused for good, or out of attempts or time)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.attempts = 0

    def after(self, status: int | None, retry_after: str | None = None) -> float | None:
        self.attempts += 1
        if status is not None and 200 <= status < 300:
            return None
        if not worth_retrying(status) or self.attempts >= MAX_ATTEMPTS:
            return None
        told = retry_after_seconds(retry_after)
        if told is not None:
            wait = told * (1 + random.random() / 2)
        else:
            backoff = min(_FIRST_BACKOFF_S * 2 ** (self.attempts - 1), _MAX_BACKOFF_S)
            wait = backoff * (0.5 + random.random())
        if self.clock() + wait - self.started > WINDOW_S:
            return None
        return wait
