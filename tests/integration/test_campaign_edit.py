"""Editing a campaign in the service: only whitelisted fields reach the database."""

from __future__ import annotations

import pytest

from service import campaigns, shops
from service.errors import InvalidInput, InvalidTransition


@pytest.fixture
def draft(db):
    shop, _ = shops.create_shop("edit.example", "Edit")
    campaign = campaigns.create(shop.id, "Spring sale", "Hello there")
    return shop.id, campaign.id


def test_name_and_text_are_edited(draft):
    # Given a draft campaign
    shop_id, campaign_id = draft

    # When its name and text are edited
    edited = campaigns.update(shop_id, campaign_id, {"name": "Summer sale", "text": "Hi"})

    # Then both changed, and nothing else did
    stored = campaigns.get(shop_id, campaign_id)
    assert (edited.name, edited.text) == (stored.name, stored.text) == ("Summer sale", "Hi")
    assert stored.status == "draft"
    assert stored.updated_at > stored.created_at


@pytest.mark.parametrize(
    "key", ["status", "shop_id", "status = 'sending', name", "name = name; --"]
)
def test_a_key_that_is_not_an_editable_field_is_invalid_input_and_changes_nothing(draft, key):
    # Given a draft campaign
    shop_id, campaign_id = draft
    before = campaigns.as_dict(campaigns.get(shop_id, campaign_id))

    # When an edit names a column that may not be edited, or is not a column at all
    with pytest.raises(InvalidInput) as raised:
        campaigns.update(shop_id, campaign_id, {"name": "changed", key: "sending"})

    # Then the error names the key, and the campaign is unchanged
    assert raised.value.field == key
    assert campaigns.as_dict(campaigns.get(shop_id, campaign_id)) == before


def test_an_edit_of_a_sending_campaign_is_an_invalid_transition(db, draft):
    # Given a campaign that left draft
    shop_id, campaign_id = draft
    db.execute_sql("UPDATE campaign SET status = 'sending' WHERE id = %s", (campaign_id,))

    # When it is edited
    with pytest.raises(InvalidTransition):
        campaigns.update(shop_id, campaign_id, {"text": "changed"})

    # Then its text is what is being sent
    assert campaigns.get(shop_id, campaign_id).text == "Hello there"
