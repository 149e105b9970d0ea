"""A campaign's audience in SQL: counted by name shape exactly as the reservation prices it,
and counted (never read back) in campaign answers."""

from __future__ import annotations

from collections import Counter

from models.database import fetchall
from service import audience, audit, campaigns, contacts, shops
from service.audience import name_shape
from service.segments import GSM7_BASIC, GSM7_EXTENSION

# Characters of every class `name_shape` tells apart: basic GSM-7 (each of them), extension
# characters, BMP characters outside GSM-7 (lowercase ç is not GSM-7, capital Ç is), astral ones.
OTHER_BMP = "çëłωЖ中\u00a0\u2019\uffff"
ASTRAL = "😀𝒜\U00010000\U0010ffff"
CHARACTERS = "".join(sorted(GSM7_BASIC)) + "".join(sorted(GSM7_EXTENSION)) + OTHER_BMP + ASTRAL


def test_the_sql_groups_never_mix_two_name_shapes(db):
    # Given contacts whose names hold each character once (between two letters, so that no
    # whitespace is stripped), names of one class only, and names of several lengths
    shop, _ = shops.create_shop("shapes.example", "Shapes", require_consent=False)
    names = [f"a{char}b" for char in CHARACTERS] + [
        "çω",
        "中文字",
        "€€",
        "😀",
        "Ann",
        "Anna",
        "Zoë",
        "Zoë",
        None,
    ]
    contacts.import_contacts(
        shop.id,
        [{"phone": f"+30690{i:07d}", "first_name": name} for i, name in enumerate(names)],
        actor=audit.ADMIN,
    )
    stored = [
        row[0] for row in fetchall("SELECT first_name FROM contact WHERE shop_id = %s", (shop.id,))
    ]
    assert len(stored) == len(names)

    # When the audience is counted by name shape in SQL
    rows = audience.count_by_name_shape(shop.id, None)

    # Then, each row priced by the shape of its one name, the counts per shape are exactly
    # those of every contact priced by its own name (a row spanning two shapes would not be)
    by_row: Counter = Counter()
    for name, count in rows:
        by_row[name_shape(name)] += count
    assert by_row == Counter(name_shape(name) for name in stored)
    assert audience.count(shop.id, None) == len(names)


def test_a_list_audience_is_counted_without_being_read(db):
    # Given a campaign to a list of two contacts
    shop, _ = shops.create_shop("list.example", "List", require_consent=False)
    contacts.import_contacts(
        shop.id, [{"phone": "+306900000001"}, {"phone": "+306900000002"}], actor=audit.ADMIN
    )
    ids = [row[0] for row in fetchall("SELECT id FROM contact")]
    created = campaigns.create(shop.id, "c", "Hello there", contact_ids=ids)

    # When it is read and listed
    read = [campaigns.get(shop.id, created.id), *campaigns.list_for_shop(shop.id, 10, None)]

    # Then each answer counts the list, and the ids never left PostgreSQL
    for campaign in read:
        assert campaigns.as_dict(campaign)["audience"] == {"kind": "contacts", "count": 2}
        assert campaign.contact_ids is None
    assert fetchall("SELECT contact_ids FROM campaign")[0][0] == sorted(ids)
