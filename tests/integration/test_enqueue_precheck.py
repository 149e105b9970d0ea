"""The enqueue's pre-check on real PostgreSQL: a shop that cannot pay is refused before a single
recipient is inserted, and the check never refuses what the reservation itself would accept."""

from __future__ import annotations

import pytest

from models.database import fetchall
from service import audit, campaigns, contacts, credits, shops
from service.enqueue import enqueue
from service.errors import InsufficientCredits

# Names of every shape the cost depends on: none, basic GSM-7 short and long, UCS-2 (a name
# outside GSM-7 makes the whole text UCS-2), extension and astral characters.
NAMES = [
    None,
    "Anna",
    "Bert",
    "Alexandros-Konstantinos" * 3,
    "Zoë",
    "Łukasz",
    "Ωmega",
    "Jo€",
    "Mia😀",
    "中文",
    "ë" * 40,
]
TEMPLATE = "Hi {first_name}, spring sale at https://shop.example/spring today only"


def shop_with_audience(domain: str, balance: int, names=NAMES) -> int:
    shop, _ = shops.create_shop(domain, domain, require_consent=False)
    if balance:
        credits.top_up(shop.id, balance, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id,
        [{"phone": f"+30690{i:07d}", "first_name": name} for i, name in enumerate(names)],
        actor=audit.ADMIN,
    )
    return shop.id


def recipient_ids_drawn() -> int:
    """How many recipient ids were ever drawn, rolled back or not (sequences never go back)."""
    last_value, is_called = fetchall("SELECT last_value, is_called FROM campaign_recipient_id_seq")[
        0
    ]
    return last_value if is_called else 0


def written(campaign_id: int) -> tuple:
    return fetchall(
        "SELECT c.status, c.started_at,"
        " (SELECT count(*) FROM campaign_recipient r WHERE r.campaign_id = c.id),"
        " (SELECT count(*) FROM send_batch b WHERE b.campaign_id = c.id),"
        " (SELECT count(*) FROM credit_reservation v WHERE v.campaign_id = c.id)"
        " FROM campaign c WHERE c.id = %s",
        (campaign_id,),
    )[0]


@pytest.mark.parametrize("text", [TEMPLATE, "Spring sale today only"], ids=["personalised", "bulk"])
def test_a_shop_that_cannot_pay_is_refused_before_any_recipient_is_inserted(db, settings, text):
    # Given a shop with 3 credits and a campaign to its 11 contacts
    shop_id = shop_with_audience("poor.example", 3)
    campaign = campaigns.create(shop_id, "c", text)

    # When it is enqueued
    with pytest.raises(InsufficientCredits) as refused:
        enqueue(shop_id, campaign.id, settings, audit.ADMIN)

    # Then 402 saying what it needs, and nothing was written: still a draft, never started, no
    # recipient, batch or reservation, and no recipient row was even inserted and rolled back
    assert "3 available" in refused.value.description
    assert written(campaign.id) == ("draft", None, 0, 0, 0)
    assert recipient_ids_drawn() == 0
    assert credits.summary(shop_id) == credits.CreditSummary(3, 0, 3)


def test_credits_equal_to_the_exact_reservation_are_enough_and_one_fewer_is_not(db, settings):
    # Given the exact reservation of a personalised campaign to contacts of every name shape,
    # learnt from a shop that can pay it
    rich = shop_with_audience("rich.example", 1_000_000)
    exact = enqueue(
        rich, campaigns.create(rich, "c", TEMPLATE).id, settings, audit.ADMIN
    ).reserved_credits
    drawn = recipient_ids_drawn()
    # ...and a shop with the same contacts and one credit fewer than that
    shop_id = shop_with_audience("exact.example", exact - 1)
    campaign = campaigns.create(shop_id, "c", TEMPLATE)

    # When it is enqueued, Then the pre-check refuses it, naming the exact cost, and inserts
    # nothing
    with pytest.raises(InsufficientCredits) as refused:
        enqueue(shop_id, campaign.id, settings, audit.ADMIN)
    assert f"needs up to {exact} credits; {exact - 1} available" in refused.value.description
    assert recipient_ids_drawn() == drawn

    # When it gets the one credit more, Then it is accepted and reserves exactly that
    credits.top_up(shop_id, 1, "one more", audit.ADMIN)
    result = enqueue(shop_id, campaign.id, settings, audit.ADMIN)
    assert (result.recipients, result.reserved_credits) == (len(NAMES), exact)
    assert credits.summary(shop_id).available == 0


def test_other_campaigns_reservations_count_against_the_pre_check(db, settings):
    # Given a shop whose first campaign reserved all but 5 of its credits
    shop_id = shop_with_audience("busy.example", 30, names=[f"N{i}" for i in range(20)])
    enqueue(shop_id, campaigns.create(shop_id, "first", "Sale today").id, settings, audit.ADMIN)
    drawn = recipient_ids_drawn()
    second = campaigns.create(shop_id, "second", "Sale tomorrow")

    # When a second 20-recipient campaign is enqueued
    with pytest.raises(InsufficientCredits) as refused:
        enqueue(shop_id, second.id, settings, audit.ADMIN)

    # Then it is refused by the pre-check, which counted the first one's reservation
    assert "needs up to 20 credits; 10 available" in refused.value.description
    assert recipient_ids_drawn() == drawn
    assert written(second.id) == ("draft", None, 0, 0, 0)
