"""A shop that ignores Retry-After, on real gunicorn: a 429 is answered only when its hold is
over (API_REFUSAL_HOLD_MS, at most the Retry-After), its connection left unread meanwhile, so a
client asking again at once waits instead of being refused hundreds of times a second, whether
it keeps its connection or opens one per request; no thread waits meanwhile, so another shop is
answered at once, and the request sent behind a held answer is answered, not dropped."""

from __future__ import annotations

import threading
import time

import pytest
import requests


def hammer(base: str, key: str, seconds: float, new_connections: bool = False) -> dict:
    """GET /credits back to back, ignoring Retry-After: on one kept-alive connection, or with a
    connection per request (`Connection: close`). Each status counted, each answer timed."""
    client = requests.Session()
    client.headers["Authorization"] = f"Bearer {key}"
    if new_connections:
        client.headers["Connection"] = "close"
    answers: dict = {200: 0, 429: 0, "took_s": {200: [], 429: []}}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        status = client.get(f"{base}/credits", timeout=10).status_code
        answers[status] = answers.get(status, 0) + 1
        answers["took_s"].setdefault(status, []).append(time.monotonic() - started)
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
    # hundreds: each 429 came at least half the hold after its request (a hold is between half
    # of it and all of it, at random), and the request sent after it was answered
    assert answers[200] >= 5, answers
    assert 1 <= answers[429] <= 8, answers
    assert min(answers["took_s"][429]) >= 0.35, answers
    assert max(answers["took_s"][200]) < 0.35, answers
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
    assert max(answers["took_s"][429]) < 0.9, answers


def test_a_client_opening_a_connection_per_request_waits_out_its_refusals_too(make_stack, db):
    # Given the limit and hold of the first test
    stack = make_stack(
        API_RATE_LIMIT="5/second", API_SHOP_CONCURRENCY="0", API_REFUSAL_HOLD_MS="1000"
    )
    stack.start_web(workers=1)
    _, key = stack.create_shop("hammer.example", credits=0)

    # When the shop asks back to back for 3 s with a new connection each time (`requests.get`,
    # `curl` in a loop): holding its connection after the answer does not slow this client
    answers = hammer(stack.web, key, 3.0, new_connections=True)

    # Then it is refused a handful of times, each 429 coming at least half the hold late, not
    # hundreds of times at once (1,730 times in 3 s when only the connection was held, after
    # an answer sent at once)
    assert answers[200] >= 5, answers
    assert 1 <= answers[429] <= 8, answers
    assert min(answers["took_s"][429]) >= 0.35, answers


@pytest.mark.parametrize("answer", [429, 200], ids=["refused", "served"])
def test_a_client_slow_to_close_its_connection_holds_up_no_one(make_stack, db, answer):
    # Given a limit of 5 requests a minute (so that a shop over it stays over it), the hold of
    # the first test, one web process, and shop A over its limit (or not)
    import socket
    from urllib.parse import urlsplit

    stack = make_stack(
        API_RATE_LIMIT="5/minute", API_SHOP_CONCURRENCY="0", API_REFUSAL_HOLD_MS="1000"
    )
    stack.start_web(workers=1)
    _, key_a = stack.create_shop("slow-closer.example", credits=0)
    _, key_b = stack.create_shop("other.example", credits=0)
    while answer == 429 and stack.call("GET", "/credits", key_a).status_code != 429:
        pass

    # When A asks on a connection of its own, saying it will close it, reads its answer, and
    # then keeps the connection open for 2 s (a client slow to close, or far away)
    address = urlsplit(stack.web)
    slow = socket.create_connection((address.hostname, address.port), timeout=10)
    slow.sendall(
        f"GET /credits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key_a}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        received += slow.recv(65536)
    assert received.startswith(f"HTTP/1.1 {answer}".encode()), received[:200]

    # Then shop B, asking on a new connection meanwhile, is answered at once: the process does
    # not wait for A's close to accept it (it waited 2.0 s: gunicorn's close of a connection
    # reads until its client closes, up to 2 s, on the thread that accepts)
    started = time.monotonic()
    status = requests.get(
        f"{stack.web}/credits", headers={"Authorization": f"Bearer {key_b}"}, timeout=10
    ).status_code
    took = time.monotonic() - started
    slow.close()
    assert status == 200
    assert took < 0.5, took
