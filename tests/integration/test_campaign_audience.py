"""A campaign's audience in SQL: counted by name shape exactly as the reservation prices it,
and counted (never read back) in campaign answers."""

from __future__ import annotations

from collections import Counter

import peewee
import pytest

from models import database
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


def test_a_long_list_joined_in_postgresql_counts_what_its_ids_bound_count(db):
    # Given a shop of named contacts, some opted out and one suppressed, and another shop's
    # contact; a campaign whose stored list holds them all, an id twice and an id that no
    # longer exists (a contact deleted after the campaign was written)
    shop, _ = shops.create_shop("long.example", "Long", require_consent=False)
    other, _ = shops.create_shop("other-long.example", "Other", require_consent=False)
    names = ["Ann", "Anna", "Zoë", "€€", "😀", "中文字", None, "Bob", "Bert", "Ω"] * 3
    contacts.import_contacts(
        shop.id,
        [{"phone": f"+30690{i:07d}", "first_name": name} for i, name in enumerate(names)],
        actor=audit.ADMIN,
    )
    contacts.import_contacts(other.id, [{"phone": "+306911111111"}], actor=audit.ADMIN)
    ids = [row[0] for row in fetchall("SELECT id FROM contact WHERE shop_id = %s", (shop.id,))]
    foreign = fetchall("SELECT id FROM contact WHERE shop_id = %s", (other.id,))[0][0]
    fetchall("UPDATE contact SET opted_out_at = now() WHERE id = ANY(%s) RETURNING id", (ids[:4],))
    fetchall(
        "INSERT INTO suppression (shop_id, phone, source) SELECT shop_id, phone, 'admin'"
        " FROM contact WHERE id = %s RETURNING id",
        (ids[5],),
    )
    campaign = campaigns.create(shop.id, "c", "Hi {first_name}", contact_ids=ids)
    listed = [*ids, ids[7], foreign, max(ids) + 1000]
    fetchall(
        "UPDATE campaign SET contact_ids = %s WHERE id = %s RETURNING id", (listed, campaign.id)
    )

    # When the list is counted joined from the campaign's row, and bound as ids
    joined = audience.count(shop.id, None, list_of=campaign.id)
    bound = audience.count(shop.id, listed)

    # Then both count the shop's eligible listed contacts once each, by name shape alike
    assert joined == bound == len(ids) - 4 - 1
    assert Counter(audience.count_by_name_shape(shop.id, None, list_of=campaign.id)) == Counter(
        audience.count_by_name_shape(shop.id, listed)
    )


def test_a_long_list_is_planned_as_hash_joins_and_the_settings_come_back(db):
    # Given a campaign's stored list, which the planner estimates at 10 ids whatever its length
    shop, _ = shops.create_shop("plan.example", "Plan", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": "+306900000001"}], actor=audit.ADMIN)
    ids = [row[0] for row in fetchall("SELECT id FROM contact")]
    campaign = campaigns.create(shop.id, "c", "Hello {first_name}", contact_ids=ids)
    eligible, params = audience._eligible(shop.id, None, campaign.id)
    statements = {  # the enqueue's two counts, as they run
        "count": (f"SELECT count(*) {eligible}", params),
        "by name shape": (
            audience.BY_NAME_SHAPE.format(eligible=eligible),
            (*audience.SHAPE_PARAMS, *params),
        ),
    }
    settings = "SELECT current_setting('enable_nestloop'), current_setting('work_mem')"
    before = fetchall(settings)

    # When they are planned for a long list, inside a transaction and outside one, and when
    # a statement fails inside it
    plans, inside = {}, []
    with database.db.atomic():
        with database.planned_for_a_long_list():
            inside = fetchall(settings)
            for name, (sql, values) in statements.items():
                plans[name] = "\n".join(row[0] for row in fetchall("EXPLAIN " + sql, values))
        after = fetchall(settings)
    with database.planned_for_a_long_list():
        fetchall(*statements["count"])
    outside = fetchall(settings)
    with database.db.atomic():
        with pytest.raises(peewee.DataError):
            with database.planned_for_a_long_list():
                fetchall("SELECT 1 / 0")
        after_failure = fetchall(settings)

    # Then the list is hashed, never walked by a nested loop nor sorted to be grouped, and the
    # session's own settings are back after it (the rest of an enqueue plans as before)
    assert inside == [("off", "64MB")]
    for name, plan in plans.items():
        assert "Hash Semi Join" in plan or "Hash Join" in plan, (name, plan)
        assert "Nested Loop" not in plan and "Sort" not in plan, (name, plan)
    assert after == outside == after_failure == before
