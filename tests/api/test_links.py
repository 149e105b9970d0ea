"""The public link routes (SPEC 6): the unsubscribe page that scanners cannot trigger, and
short links that lead only to public web pages, can be disabled, and count only people."""

from __future__ import annotations

import pytest

from service import campaigns, composition, links
from service.messages import load_context
from tests.api.conftest import ADMIN, assert_error, auth, contact_ids, import_contacts
from tests.conftest import SECRET_KEY as SECRET


def opted_out(db, contact_id: int) -> tuple:
    """(opted_out_at, suppression rows) of a contact."""
    at, phone = db.execute_sql(
        "SELECT opted_out_at, phone FROM contact WHERE id = %s", (contact_id,)
    ).fetchone()
    suppressions = db.execute_sql(
        "SELECT source FROM suppression WHERE phone = %s", (phone,)
    ).fetchall()
    return at, suppressions


@pytest.fixture
def contact(client, shops) -> tuple[int, str]:
    """(id, unsubscribe path) of a contact of the shop under test."""
    contact_id = contact_ids(client, shops.key)[0]
    return contact_id, f"/u/{links.unsubscribe_token(SECRET, shops.id, contact_id)}"


# --- unsubscribe -----------------------------------------------------------------------------


def test_get_shows_a_confirmation_page_and_changes_nothing(client, db, shops, contact):
    contact_id, path = contact
    # When the link is fetched, as a scanner or previewer fetches every link, several times
    pages = [client.simulate_get(path) for _ in range(3)]
    # Then each is a page naming the shop with a button that posts back to the same URL...
    for page in pages:
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "shop-one" in page.text
        assert '<form method="post">' in page.text and "<button" in page.text
        assert page.headers["cache-control"] == "no-store"
    # ...and the contact is still subscribed, with no suppression
    assert opted_out(db, contact_id) == (None, [])
    listed = client.simulate_get("/contacts", headers=auth(shops.key), params={"opted_out": "true"})
    assert listed.json["items"] == []


def test_head_answers_like_get_and_changes_nothing(client, db, contact):
    contact_id, path = contact
    # When a link checker asks with HEAD, for a genuine link and a forged one
    genuine, forged = client.simulate_head(path), client.simulate_head(path[:-2] + "AA")
    # Then it gets GET's status, no body, and the contact is still subscribed
    assert (genuine.status_code, forged.status_code) == (200, 404)
    assert genuine.text == "" and genuine.headers["cache-control"] == "no-store"
    assert opted_out(db, contact_id) == (None, [])


def test_post_opts_the_contact_out_once(client, db, shops, contact):
    contact_id, path = contact
    # When the contact confirms, twice (a double click, a retried request)
    first, second = client.simulate_post(path), client.simulate_post(path)
    # Then both answer the done page, and the contact is opted out once, at the first time
    assert first.status_code == second.status_code == 200
    assert "You are unsubscribed" in first.text and "shop-one" in first.text
    at, suppressions = opted_out(db, contact_id)
    assert at is not None and suppressions == [("link",)]
    listed = client.simulate_get("/contacts", headers=auth(shops.key), params={"opted_out": "true"})
    assert [item["id"] for item in listed.json["items"]] == [contact_id]
    assert opted_out(db, contact_id)[0] == at
    # And the page opened again says so, with no button
    again = client.simulate_get(path)
    assert "You are unsubscribed" in again.text and "<form" not in again.text


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),  # RFC 8058
        ("", None),
        ("{not json", "application/json"),  # the body is not read: nothing in it can break this
    ],
)
def test_post_opts_out_whatever_the_body(client, db, contact, body, content_type):
    contact_id, path = contact
    headers = {"Content-Type": content_type} if content_type else {}
    result = client.simulate_post(path, body=body, headers=headers)
    assert result.status_code == 200, result.text
    assert opted_out(db, contact_id)[0] is not None


def test_the_shop_name_is_escaped(client, db):
    # Given a shop whose name is markup
    created = client.simulate_post(
        "/admin/shops",
        headers=ADMIN,
        json={"domain": "markup.example", "name": '<script>alert("x")</script> & Sons'},
    )
    shop_id, key = created.json["id"], created.json["api_key"]
    import_contacts(client, key, ["+14155552671"])
    path = f"/u/{links.unsubscribe_token(SECRET, shop_id, contact_ids(client, key)[0])}"
    # When its confirmation and done pages are shown
    for page in (client.simulate_get(path), client.simulate_post(path)):
        # Then the name is shown as text, never as markup
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Sons" in page.text
        assert "<script>" not in page.text


def test_a_token_of_one_shop_does_not_opt_out_anothers_contact(client, db, shops):
    # Given a genuine token naming shop one with another shop's contact id
    path = f"/u/{links.unsubscribe_token(SECRET, shops.id, shops.other_contact_id)}"
    # When it is posted, Then 404 and the other shop's contact is untouched
    result = client.simulate_post(path)
    assert result.status_code == 404 and result.headers["content-type"].startswith("text/html")
    assert opted_out(db, shops.other_contact_id) == (None, [])


# --- short links -----------------------------------------------------------------------------


def mint(shops, url: str = "https://shop.example/sale") -> str:
    """A short link of the other shop's campaign; its path."""
    short = links.shorten(shops.other_id, shops.other_campaign_id, [url], "http://localhost")
    return short[url].removeprefix("http://localhost")


def clicks(db) -> int:
    return db.execute_sql("SELECT clicks FROM short_link").fetchone()[0]


BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Safari/604.1"


@pytest.mark.parametrize(
    "user_agent",
    [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # an iMessage preview
        "WhatsApp/2.23.20.0 A",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ],
)
def test_a_previewer_is_redirected_but_not_counted(client, db, shops, user_agent):
    path = mint(shops)
    result = client.simulate_get(path, headers={"User-Agent": user_agent})
    assert result.status_code == 302
    assert result.headers["location"] == "https://shop.example/sale"
    assert clicks(db) == 0


def test_a_head_request_is_redirected_but_not_counted(client, db, shops):
    path = mint(shops)
    result = client.simulate_head(path, headers={"User-Agent": BROWSER})
    assert result.status_code == 302
    assert result.headers["location"] == "https://shop.example/sale"
    assert clicks(db) == 0


def test_a_person_s_click_is_counted(client, db, shops):
    # (the control)
    path = mint(shops)
    for _ in range(2):
        assert client.simulate_get(path, headers={"User-Agent": BROWSER}).status_code == 302
    assert clicks(db) == 2


def test_a_disabled_link_answers_410_and_counts_nothing(client, db, shops):
    # Given a link clicked once
    path = mint(shops)
    client.simulate_get(path, headers={"User-Agent": BROWSER})
    code = path.removeprefix("/r/")
    # When the admin disables it, twice
    first = client.simulate_post(f"/admin/links/{code}/disable", headers=ADMIN)
    second = client.simulate_post(f"/admin/links/{code}/disable", headers=ADMIN)
    # Then both answer the link, disabled at the first time
    assert first.status_code == second.status_code == 200, first.text
    assert first.json["code"] == code and first.json["url"] == "https://shop.example/sale"
    assert first.json["disabled_at"] and second.json["disabled_at"] == first.json["disabled_at"]
    # And following it is a 410 page that counts nothing
    gone = client.simulate_get(path, headers={"User-Agent": BROWSER})
    assert gone.status_code == 410 and gone.headers["content-type"].startswith("text/html")
    assert "location" not in gone.headers
    assert client.simulate_head(path).status_code == 410
    assert clicks(db) == 1


@pytest.mark.parametrize("code", ["unknown123", "%00", "a.b"])
def test_disabling_an_unknown_code_is_404(client, shops, code):
    assert_error(client.simulate_post(f"/admin/links/{code}/disable", headers=ADMIN), 404)


@pytest.mark.parametrize("headers", [{}, None], ids=["no-token", "shop-key"])
def test_disabling_takes_the_admin_token(client, db, shops, headers):
    path = mint(shops)
    headers = auth(shops.key) if headers is None else headers
    result = client.simulate_post(
        f"/admin/links/{path.removeprefix('/r/')}/disable", headers=headers
    )
    assert_error(result, 401)
    assert client.simulate_get(path).status_code == 302


def test_urls_that_are_not_allowed_destinations_are_not_shortened(db, settings, shops):
    # Given a campaign whose text links a public page and several that are not
    text = (
        "Sale https://shop.example/sale also http://127.0.0.1/admin http://2130706433/x"
        " http://localhost:8000/ https://user:pw@shop.example/ http://intranet/"
    )
    campaign = campaigns.create(shops.id, "c", text)
    # When a batch's context is loaded (where the worker shortens the campaign's URLs)
    context = load_context(shops.id, campaign.id, settings)
    # Then only the public page has a short link, and the others stay as they were
    assert list(context.short_links) == ["https://shop.example/sale"]
    final = composition.compose(text, None, context.short_links, None)
    assert final.startswith(f"Sale {context.short_links['https://shop.example/sale']} also")
    assert final.endswith(text.removeprefix("Sale https://shop.example/sale"))
    assert db.execute_sql(
        "SELECT url FROM short_link WHERE campaign_id = %s", (campaign.id,)
    ).fetchall() == [("https://shop.example/sale",)]


def test_a_stored_link_to_a_refused_destination_is_not_followed(client, db, shops):
    # Given a link minted before the destination rules (written straight into the table)
    db.execute_sql(
        "INSERT INTO short_link (shop_id, campaign_id, code, url)"
        " VALUES (%s, %s, 'legacy0001', 'http://127.0.0.1:8080/admin')",
        (shops.other_id, shops.other_campaign_id),
    )
    # When it is followed, Then 410, not a redirect into the recipient's own network
    result = client.simulate_get("/r/legacy0001", headers={"User-Agent": BROWSER})
    assert result.status_code == 410
    assert clicks(db) == 0


def test_a_destination_with_non_ascii_characters_redirects_percent_encoded(client, shops):
    # (a Location header is ASCII; what is already percent-encoded stays as it is)
    path = mint(shops, "https://shop.example/καλοκαίρι?size=M%2FL")
    result = client.simulate_get(path, headers={"User-Agent": BROWSER})
    assert result.status_code == 302
    assert result.headers["location"] == (
        "https://shop.example/%CE%BA%CE%B1%CE%BB%CE%BF%CE%BA%CE%B1%CE%AF%CF%81%CE%B9?size=M%2FL"
    )
