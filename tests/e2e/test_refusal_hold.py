"""A shop that ignores Retry-After, on real gunicorn: after a 429 its connection is left unread
for the hold (API_REFUSAL_HOLD_MS, at most the Retry-After), so asking again at once on it
waits instead of being refused hundreds of times a second; no thread waits meanwhile, so
another shop is answered at once, and the held request is answered, not dropped."""

from __future__ import annotations

import threading
import time

import requests


def hammer(base: str, key: str, seconds: float) -> dict:
    """GET /credits back to back on one kept-alive connection, ignoring Retry-After."""
    client = requests.Session()
    client.headers["Authorization"] = f"Bearer {key}"
    answers: dict = {200: 0, 429: 0, "after_429_s": []}
    refused_before = False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        status = client.get(f"{base}/credits", timeout=10).status_code
        answers[status] = answers.get(status, 0) + 1
        if refused_before:
            answers["after_429_s"].append(time.monotonic() - started)
        refused_before = status == 429
    return answers


def test_a_client_ignoring_retry_after_waits_out_its_refusals(make_stack, db):
    # Given a limit of 5 requests a second per shop, one web process, and a refusal hold of
    # 1 s (the same as the default, stated so that the test says what it measures)
    stack = make_stack(
        API_RATE_LIMIT="5/second", API_SHOP_CONCURRENCY="0", API_REFUSAL_HOLD_MS="1000"
    )
    stack.start_web(workers=1)
    _, key_a = stack.create_shop("hammer.example", credits=0)
    _, key_b = stack.create_shop("quiet.example", credits=0)

    # When shop A asks back to back for 3 s on one connection, while shop B asks now and then
    seen_b: list[tuple[int, float]] = []

    def shop_b() -> None:
        client = requests.Session()
        client.headers["Authorization"] = f"Bearer {key_b}"
        for _ in range(10):
            started = time.monotonic()
            status = client.get(f"{stack.web}/credits", timeout=10).status_code
            seen_b.append((status, time.monotonic() - started))
            time.sleep(0.25)

    other = threading.Thread(target=shop_b)
    other.start()
    answers = hammer(stack.web, key_a, 3.0)
    other.join()

    # Then A was served (at least its first second's 5) and refused a handful of times, not
    # hundreds: each request after a 429 waited at least half the hold before it was read (a
    # hold is between half of it and all of it, at random), and was answered
    assert answers[200] >= 5, answers
    assert 1 <= answers[429] <= 8, answers
    assert answers["after_429_s"] and min(answers["after_429_s"]) >= 0.35, answers
    # And B, asking meanwhile from another connection, was answered at once every time
    assert [status for status, _ in seen_b] == [200] * 10
    # (well under the 1 s hold: a loaded CI machine may add a few hundred ms)
    assert max(took for _, took in seen_b) < 0.9, seen_b


def test_without_the_hold_the_same_client_is_refused_at_will(make_stack, db):
    # Given the same limit with the hold off (API_REFUSAL_HOLD_MS=0): the comparison that shows
    # the test above measures the hold, not the client's own pace
    stack = make_stack(API_RATE_LIMIT="5/second", API_SHOP_CONCURRENCY="0", API_REFUSAL_HOLD_MS="0")
    stack.start_web(workers=1)
    _, key = stack.create_shop("hammer.example", credits=0)

    # When the shop asks back to back for 2 s
    answers = hammer(stack.web, key, 2.0)

    # Then it is refused as fast as it asks, and no answer waited
    assert answers[429] >= 50, answers
    assert max(answers["after_429_s"]) < 0.9, answers
