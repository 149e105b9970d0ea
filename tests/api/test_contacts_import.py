"""`POST /contacts` (SPEC 5): only the body's shape or size refuses an import whole; a bad row
is reported by its index and every valid row is imported, from JSON and from CSV (a Shopify
customer export as it comes)."""

from __future__ import annotations

import pytest

from api.body import MAX_BODY
from tests.api.conftest import assert_error, auth

SHOPIFY_HEADER = (
    "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Default Address Company,"
    "Default Address Address1,Default Address Address2,Default Address City,"
    "Default Address Province Code,Default Address Country Code,Default Address Zip,"
    "Default Address Phone,Phone,Accepts SMS Marketing,Total Spent,Total Orders,Note,"
    "Tax Exempt,Tags"
)


def shopify_row(first: str, address_phone: str, phone: str, note: str = "") -> str:
    return (
        f'7001,{first},Papadopoulou,{first.lower()}@mail.example,yes,,"Odos 1, 2nd floor",'
        f',Athens,,GR,10431,{address_phone},{phone},yes,12.50,1,{note},no,"vip, summer"'
    )


def contacts_of(db, shop_id: int) -> dict[str, str | None]:
    rows = db.execute_sql(
        "SELECT phone, first_name FROM contact WHERE shop_id = %s", (shop_id,)
    ).fetchall()
    return dict(rows)


def post_csv(client, key: str, text: str | bytes, **kwargs):
    return client.simulate_post(
        "/contacts",
        headers=auth(key),
        body=text,
        content_type=kwargs.pop("content_type", "text/csv"),
        **kwargs,
    )


# --- JSON ------------------------------------------------------------------------------------


def test_ten_thousand_rows_with_one_blank_phone_import_the_other_9999(client, db, shops):
    # Given a 10,000-row import (the most one takes) in which one phone cell is blank
    rows = [{"phone": f"+30690{i:07d}", "first_name": f"N{i}"} for i in range(10_000)]
    rows[4321]["phone"] = ""
    # When it is imported
    result = client.simulate_post("/contacts", headers=auth(shops.key), json={"contacts": rows})
    # Then 200: 9,999 contacts created and the blank one reported by its index
    assert result.status_code == 200, result.text[:500]
    assert (result.json["created"], result.json["updated"]) == (9_999, 0)
    assert result.json["invalid"] == [{"index": 4321, "field": "phone", "error": "phone is blank"}]
    assert len(contacts_of(db, shops.id)) == 2 + 9_999


def test_every_bad_row_is_reported_in_order_with_its_field(client, shops):
    # When an import mixes several kinds of bad rows with good ones
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={
            "contacts": [
                {"phone": "+14155552671"},
                {"phone": "+447911123456", "first_name": "x" * 101},
                "not a row",
                {"phone": "+14155552672", "tags": ["vip"]},
                {"phone": "12"},
                {"phone": "+447911123457", "first_name": None},
            ]
        },
    )
    # Then the good rows are created and each bad one is reported once, in index order
    assert result.status_code == 200, result.text
    assert result.json["created"] == 2
    assert [(row["index"], row["field"]) for row in result.json["invalid"]] == [
        (1, "first_name"),
        (2, None),
        (3, "tags"),
        (4, "phone"),
    ]


def test_a_later_duplicate_without_a_name_keeps_the_earlier_name(client, db, shops):
    # When one number appears twice, named only the first time
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={
            "contacts": [
                {"phone": "+1 415 555 2671", "first_name": "Ann"},
                {"phone": "+14155552671"},
            ]
        },
    )
    # Then it is one contact, created once, with the name given
    assert (result.json["created"], result.json["updated"], result.json["invalid"]) == (1, 0, [])
    assert contacts_of(db, shops.id)["+14155552671"] == "Ann"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"contacts": [{"phone": "+14155552671"}], "source": "shopify"}, "source"),
        ({"contacts": "+14155552671"}, "contacts"),
        ({"contacts": None}, "contacts"),
        ({"rows": []}, "contacts"),
        ({"contacts": [{"phone": "+14155552671"}] * 10_001}, "contacts"),
        ({"contacts": [], "default_country": "Greece"}, "default_country"),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused_whole(client, db, shops, body, field):
    before = contacts_of(db, shops.id)
    # When the body itself is wrong (not one row of it)
    result = client.simulate_post("/contacts", headers=auth(shops.key), json=body)
    # Then 422 naming the field, and nothing imported
    assert_error(result, 422, field)
    assert contacts_of(db, shops.id) == before


def test_a_json_import_refuses_default_country_as_a_query_parameter(client, db, shops):
    # (it belongs in the JSON body; ignoring it would refuse every national number)
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        query_string="default_country=GR",
        json={"contacts": [{"phone": "6912345670"}]},
    )
    assert_error(result, 422, "default_country")


# --- CSV -------------------------------------------------------------------------------------


def test_a_shopify_customer_export_is_imported(client, db, shops):
    # Given Shopify's export: a byte order mark, CRLF lines, quoted commas, many columns, the
    # customer's Phone often blank with the number in Default Address Phone, and one customer
    # with no number at all
    text = (
        "\ufeff"
        + "\r\n".join(
            [
                SHOPIFY_HEADER,
                shopify_row("Eleni", "", "+306912000001"),
                shopify_row("Nikos", "+30 691 200 0002", ""),
                shopify_row("Maria", "", "", note='"called, no phone"'),
                shopify_row("Zoë", "+306912000099", "+306912000004"),
            ]
        )
        + "\r\n"
    )
    # When it is posted as text/csv
    result = post_csv(client, shops.key, text.encode("utf-8"))
    # Then every customer with a number is imported (the customer's own Phone first), and the
    # one without is reported at its data row's index
    assert result.status_code == 200, result.text
    assert (result.json["created"], result.json["updated"]) == (3, 0)
    assert result.json["invalid"] == [{"index": 2, "field": "phone", "error": "phone is blank"}]
    imported = contacts_of(db, shops.id)
    assert {
        phone: imported[phone] for phone in ("+306912000001", "+306912000002", "+306912000004")
    } == {"+306912000001": "Eleni", "+306912000002": "Nikos", "+306912000004": "Zoë"}
    assert "+306912000099" not in imported


def test_a_plain_csv_with_national_numbers_and_a_default_country(client, db, shops):
    # Given a hand-made CSV: lower-case header, national numbers, a blank line, a bad number,
    # and its country given as a query parameter (a CSV has no room for it)
    text = "PHONE,first_name\n6912000011,Ann\n\n6912000012,\n12,Bad\n"
    # When it is imported
    result = post_csv(
        client,
        shops.key,
        text,
        query_string="default_country=GR",
        content_type="text/csv; charset=utf-8",
    )
    # Then both numbers are read as Greek; the blank line is not a row; the bad one is index 2
    assert result.status_code == 200, result.text
    assert result.json["created"] == 2
    assert [(row["index"], row["field"]) for row in result.json["invalid"]] == [(2, "phone")]
    assert contacts_of(db, shops.id)["+306912000011"] == "Ann"
    assert contacts_of(db, shops.id)["+306912000012"] is None


def test_a_csv_in_the_encoding_its_content_type_names(client, db, shops):
    # Given a file Excel on Windows saved (windows-1252), its encoding named
    text = "Phone,First Name\n+306912000041,Ren\u00e9e\n".encode("cp1252")
    result = post_csv(client, shops.key, text, content_type="text/csv; charset=windows-1252")
    # Then it is read in that encoding
    assert result.status_code == 200, result.text
    assert contacts_of(db, shops.id)["+306912000041"] == "Ren\u00e9e"
    # And the same file without the name is refused naming the line and what to do
    refused = post_csv(client, shops.key, text)
    assert "line 2" in assert_error(refused, 400)["description"]
    assert "charset=" in refused.json["description"]
    # And an unknown encoding, or a codec that is not a text encoding, is named (never a 500)
    for charset in ("klingon", "base64", "zlib", "rot13", "unicode_escape", "undefined", "hex"):
        unknown = post_csv(client, shops.key, text, content_type=f"text/csv; charset={charset}")
        assert_error(unknown, 422, "charset")


def test_a_json_row_cannot_carry_the_csvs_own_consent_mark(client, db, shops):
    result = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={"contacts": [{"phone": "+306912000071", "withdraws_shopify_consent": True}]},
    )
    assert result.status_code == 200, result.text
    assert [row["index"] for row in result.json["invalid"]] == [0]
    assert "+306912000071" not in contacts_of(db, shops.id)


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_csv_separated_by_semicolons_or_tabs(client, db, shops, separator):
    # Given a spreadsheet saved in a locale whose lists use ";" (or as tab-separated text)
    text = separator.join(["phone", "first_name"]) + "\n"
    text += separator.join(["+306912000051", "Ann"]) + "\n"
    result = post_csv(client, shops.key, text)
    assert result.status_code == 200, result.text
    assert contacts_of(db, shops.id)["+306912000051"] == "Ann"


def test_a_name_with_line_breaks_is_imported_on_one_line(client, db, shops):
    # A quoted cell spanning lines (and tabs) would go into every message greeting the contact
    text = 'phone,first_name\n+306912000061,"Multi\r\nLine\tName "\n'
    result = post_csv(client, shops.key, text)
    assert result.status_code == 200, result.text
    assert contacts_of(db, shops.id)["+306912000061"] == "Multi Line Name"


@pytest.mark.parametrize(
    "media_type", ["application/vnd.ms-excel", "application/csv", "text/comma-separated-values"]
)
def test_a_csv_upload_labelled_as_browsers_label_it_is_read_as_csv(client, db, shops, media_type):
    # When a CSV comes as a browser on Windows labels a `.csv` file
    text = "Phone,First Name\n+306912000031,Ann\n"
    result = post_csv(client, shops.key, text, content_type=media_type)
    # Then it is imported as CSV, not refused as malformed JSON
    assert result.status_code == 200, result.text
    assert result.json["created"] == 1
    assert contacts_of(db, shops.id)["+306912000031"] == "Ann"


def test_a_csv_row_with_a_consent_proof_alone_is_reported_as_a_json_row_is(client, db, shops):
    # When a CSV row gives a consent proof but no source nor time (JSON refuses that row)
    text = "phone,consent_proof\n+306912000041,signed form\n+306912000042,\n"
    result = post_csv(client, shops.key, text)
    # Then that row is reported naming the consent's source, not imported without consent;
    # the row with no consent cell is imported as before
    assert result.status_code == 200, result.text
    assert result.json["created"] == 1
    assert [(row["index"], row["field"]) for row in result.json["invalid"]] == [
        (0, "consent.source")
    ]
    assert "+306912000041" not in contacts_of(db, shops.id)


def test_a_csv_row_is_checked_like_a_json_row(client, db, shops):
    # When a CSV has an over-long first name and a short row
    text = f"phone,first_name\n+306912000021,{'x' * 101}\n+306912000022\n"
    result = post_csv(client, shops.key, text)
    # Then the long one is reported naming first_name, the short row is imported without one
    assert result.status_code == 200, result.text
    assert result.json["created"] == 1
    assert [(row["index"], row["field"]) for row in result.json["invalid"]] == [(0, "first_name")]


def test_a_csv_of_exactly_ten_thousand_rows_is_imported(client, db, shops):
    text = "phone\n" + "".join(f"+30690{i:07d}\n" for i in range(10_000))
    result = post_csv(client, shops.key, text)
    assert result.status_code == 200, result.text[:500]
    assert (result.json["created"], result.json["invalid"]) == (10_000, [])


@pytest.mark.parametrize(
    "text, status, field",
    [
        ("first_name,email\nAnn,a@mail.example\n", 422, "phone"),
        ("+306912000031\n+306912000032\n", 422, "phone"),  # no header row
        ("phone\n" + "+306912000031\n" * 10_001, 422, "body"),
        (b"phone,first_name\n+306912000031,Ren\xe9e\n", 400, None),  # Latin-1, not UTF-8
        ("", 400, None),
    ],
    ids=["no-phone-column", "no-header", "10001-rows", "not-utf8", "empty"],
)
def test_a_csv_of_the_wrong_shape_is_refused_whole(client, db, shops, text, status, field):
    before = contacts_of(db, shops.id)
    result = post_csv(client, shops.key, text)
    assert_error(result, status, field)
    assert contacts_of(db, shops.id) == before


def test_a_csv_over_5_mib_is_413(client, db, shops):
    text = "phone,first_name\n" + "+306912000041,x\n" * (MAX_BODY // 16 + 1)
    assert len(text) > MAX_BODY
    assert_error(post_csv(client, shops.key, text), 413)


def test_a_csv_default_country_is_checked(client, shops):
    result = post_csv(client, shops.key, "phone\n6912000051\n", query_string="default_country=gr")
    assert_error(result, 422, "default_country")


def test_a_default_country_nobody_has_is_named_in_each_national_rows_error(client, db, shops):
    # (a parameter, not the body's shape: the import's international numbers stand, and each
    # national one says why it has no country, where it said "(0) Missing or invalid ...")
    as_csv = post_csv(
        client, shops.key, "phone\n6912000061\n+14155550161\n", query_string="default_country=XX"
    )
    as_json = client.simulate_post(
        "/contacts",
        headers=auth(shops.key),
        json={
            "contacts": [{"phone": "6912000062"}, {"phone": "+14155550162"}],
            "default_country": "XX",
        },
    )
    for result in (as_csv, as_json):
        assert result.status_code == 200, result.text
        assert result.json["created"] == 1
        [row] = result.json["invalid"]
        assert row["index"] == 0 and "default_country 'XX' is not a known" in row["error"], row


def test_one_cell_longer_than_the_csv_modules_limit_is_that_rows_problem(client, db, shops):
    # (a name of 140,000 characters refused the whole import: "field larger than field limit")
    text = f"phone,first_name\n+306912000071,ok\n+306912000072,{'a' * 140_000}\n+306912000073,ok2\n"
    result = post_csv(client, shops.key, text)
    assert result.status_code == 200, result.text
    assert result.json["created"] == 2
    assert [(row["index"], row["field"]) for row in result.json["invalid"]] == [(1, "first_name")]


def test_a_row_without_a_country_code_says_so_in_words(client, shops):
    result = post_csv(client, shops.key, "phone\n6912000081\nhello\n")
    errors = [row["error"] for row in result.json["invalid"]]
    assert errors[0].startswith("not a phone number: no valid country code"), errors
    assert errors[1] == "not a phone number", errors
    assert not any("(" + digit + ")" in error for error in errors for digit in "01234")
