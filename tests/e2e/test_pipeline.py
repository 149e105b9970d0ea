"""The whole path of a campaign through real processes: gunicorn, a Dramatiq worker, the
provider simulator, PostgreSQL and Redis (and RabbitMQ as the broker)."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.stack import wait_for


def ledger(db, shop_id: int) -> dict[str, int]:
    rows = db.execute_sql(
        "SELECT kind, coalesce(sum(amount), 0), count(*) FROM credit_transaction"
        " WHERE shop_id = %s GROUP BY kind",
        (shop_id,),
    ).fetchall()
    return {kind: int(total) for kind, total, _ in rows} | {
        f"{kind}_rows": count for kind, _, count in rows
    }


@pytest.mark.brokers("redis", "rabbitmq")
def test_a_1000_recipient_campaign_is_sent_once_each_and_charged_exactly(stack, db):
    # Given a shop with 1,000 contacts and enough credits
    shop_id, key = stack.create_shop("shop-one.example", credits=5000)
    stack.import_contacts(key, 1000)
    created = stack.call(
        "POST", "/campaigns", key, json={"name": "Spring", "text": "Hi {first_name}, spring sale!"}
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "draft"

    # When it is enqueued
    enqueued = stack.call("POST", f"/campaigns/{campaign['id']}/enqueue", key)
    assert enqueued.status_code == 202, enqueued.text
    assert enqueued.json()["recipients"] == 1000
    reserved = enqueued.json()["reserved_credits"]

    # Then it completes, the provider got exactly one message per recipient...
    progress = stack.wait_finished(key, campaign["id"], timeout=120)
    assert progress["status"] == "completed"
    assert (progress["sent"], progress["pending"], progress["sending"]) == (1000, 0, 0)
    messages = stack.sim_messages()
    assert messages["count"] == 1000
    assert len({m["reference"] for m in messages["messages"]}) == 1000
    assert len({m["to"] for m in messages["messages"]}) == 1000

    # ...the ledger balances: balance = top-up - debits, one debit per message
    books = ledger(db, shop_id)
    assert books["debit_rows"] == 1000
    credits = stack.call("GET", "/credits", key).json()
    assert credits["balance"] == 5000 + books["debit"]
    assert credits["reserved"] == 0 and credits["available"] == credits["balance"]
    assert progress["credits"]["consumed"] == -books["debit"] <= reserved
    assert progress["credits"]["released"] == reserved - progress["credits"]["consumed"]
    assert progress["finished_at"] is not None

    # ...and delivery statuses reach Delivered from the simulator's reports
    seen: dict = {}

    def all_delivered() -> dict | None:
        seen["progress"] = stack.progress(key, campaign["id"])
        return seen["progress"] if seen["progress"]["delivery"].get("Delivered") == 1000 else None

    try:
        delivered = wait_for(all_delivered, 60, "1000 Delivered reports")
    except TimeoutError as error:
        # Say where the reports stopped: posted and refused by the simulator, or applied
        stats = requests.get(f"{stack.sim}/_sim/stats", timeout=5).json()
        raise AssertionError(f"{error}: {seen.get('progress')}; simulator {stats}") from None
    assert delivered["delivery"] == {"Delivered": 1000}
