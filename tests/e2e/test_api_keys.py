"""API keys, the per-shop limits and idempotency keys over real gunicorn (2 worker processes),
where each request may land in either process: what one process learns, the other must too."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import ADMIN_TOKEN

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
    # Given a limit of 10 requests a second per shop, and gunicorn with 2 processes
    stack = make_stack(API_RATE_LIMIT="10/second", API_SHOP_CONCURRENCY="0")
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
