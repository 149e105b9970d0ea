"""API keys, the per-shop limits and idempotency keys over real gunicorn (2 worker processes),
where each request may land in either process: what one process learns, the other must too."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import ADMIN_TOKEN
from tests.e2e.stack import CONSENT

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_revoked_key_is_refused_by_every_web_process_at_once(make_stack, db):
    # Given gunicorn with 2 processes and a shop with a second key, used through both
    stack = make_stack()
    stack.start_web(workers=2)
    shop_id, first = stack.create_shop("revoke.example", credits=0)
    issued = requests.post(f"{stack.web}/admin/shops/{shop_id}/keys", headers=ADMIN, timeout=10)
    assert issued.status_code == 201
    second, key_id = issued.json()["api_key"], issued.json()["id"]
    with ThreadPoolExecutor(8) as pool:
        before = list(
            pool.map(lambda _: stack.call("GET", "/credits", second).status_code, range(40))
        )
    assert before == [200] * 40

    # When the admin revokes it
    revoked = requests.delete(
        f"{stack.web}/admin/shops/{shop_id}/keys/{key_id}", headers=ADMIN, timeout=10
    )
    assert revoked.status_code == 200

    # Then the very next requests, whichever process answers them, are all refused
    with ThreadPoolExecutor(8) as pool:
        after = list(
            pool.map(lambda _: stack.call("GET", "/credits", second).status_code, range(40))
        )
    assert after == [401] * 40
    assert stack.call("GET", "/credits", first).status_code == 200


def test_the_rate_limit_is_one_budget_across_processes_and_per_shop(make_stack, db):
    # Given a limit of 10 requests a second per shop, and gunicorn with 2 processes (refusals
    # answered at once: held, 30 requests on 6 threads would span more than the 1 s window)
    stack = make_stack(
        API_RATE_LIMIT="10/second", API_SHOP_CONCURRENCY="0", API_REFUSAL_HOLD_MS="0"
    )
    stack.start_web(workers=2)
    _, key_a = stack.create_shop("limit-a.example", credits=0)
    _, key_b = stack.create_shop("limit-b.example", credits=0)

    # When shop A sends 30 requests at once
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: stack.call("GET", "/credits", key_a), range(30)))

    # Then about 10 are served (one budget, not one per process) and the rest are 429 with
    # Retry-After; shop B is served meanwhile
    served = sum(answer.status_code == 200 for answer in statuses)
    throttled = [answer for answer in statuses if answer.status_code == 429]
    assert 8 <= served <= 12 and served + len(throttled) == 30, [a.status_code for a in statuses]
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in throttled)
    assert stack.call("GET", "/credits", key_b).status_code == 200


def test_a_shop_hammering_imports_gets_429_naming_the_heavy_cap_while_another_is_served(
    make_stack, db
):
    # Given gunicorn with 2 processes and the default heavy cap (one import per shop in
    # flight), shop A with 6 clients importing 2,000 rows each at once, again and again
    stack = make_stack()
    stack.start_web(workers=2)
    _, key_a = stack.create_shop("hammer.example", credits=0)
    _, key_b = stack.create_shop("served.example", credits=0)
    rows = [{"phone": f"+3069{n:08d}", "consent": CONSENT} for n in range(2_000)]
    a_answers: list[requests.Response] = []
    b_statuses: list[int] = []
    start, done = threading.Barrier(7), threading.Event()

    resets: list[Exception] = []

    def hammer() -> None:
        start.wait()
        for _ in range(4):
            try:
                a_answers.append(stack.call("POST", "/contacts", key_a, json={"contacts": rows}))
            except requests.ConnectionError as error:
                # A process reads the body of one refused request of a shop at a time; it
                # closes the others' connections after the 429, which a client still sending
                # may see as a reset instead.
                resets.append(error)

    def served() -> None:
        start.wait()
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            b_statuses.append(
                stack.call("POST", "/contacts", key_b, json={"contacts": rows[:1]}).status_code
            )
            b_statuses.append(stack.call("GET", "/credits", key_b).status_code)

    # When they run, with shop B importing and reading meanwhile
    b = threading.Thread(target=served)
    b.start()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: hammer(), range(6)))
    done.set()
    b.join()

    # Then shop A got imports through and the rest refused with 429, Retry-After and a
    # description naming the limit; every one of shop B's requests was served
    refused = [answer for answer in a_answers if answer.status_code == 429]
    assert len(a_answers) + len(resets) == 24 and refused, [a.status_code for a in a_answers]
    assert {answer.status_code for answer in a_answers} == {200, 429}
    for answer in refused:
        assert int(answer.headers["Retry-After"]) >= 1
        assert "API_SHOP_HEAVY_CONCURRENCY" in answer.json()["description"]
    assert b_statuses and set(b_statuses) == {200}, b_statuses


def test_a_retried_post_with_its_idempotency_key_is_replayed_by_any_process(make_stack, db):
    # Given a shop, and the same POST sent 10 times with one Idempotency-Key across processes
    stack = make_stack()
    stack.start_web(workers=2)
    _, key = stack.create_shop("replay.example", credits=0)
    headers = {"Idempotency-Key": "create-spring"}
    body = {
        "name": "Spring",
        "text": "Spring sale, reply STOP to opt out",
        "append_unsubscribe": False,
    }
    first = stack.call("POST", "/campaigns", key, json=body, headers=headers)
    with ThreadPoolExecutor(5) as pool:
        retries = list(
            pool.map(
                lambda _: stack.call("POST", "/campaigns", key, json=body, headers=headers),
                range(10),
            )
        )

    # Then every retry is the first answer, and one campaign exists
    assert first.status_code == 201
    assert all(r.status_code == 201 and r.json() == first.json() for r in retries)
    assert db.execute_sql("SELECT count(*) FROM campaign").fetchone()[0] == 1
