from __future__ import annotations

import itertools
import random

import pytest

from service.composition import (
    URL_PATTERN,
    compose,
    cost_upper_bound,
    find_urls,
    personalise,
)
from service.segments import encoding, segment_count

BASE = "https://sms.example.com"
SHORT = f"{BASE}/r/AbCdEfGh_-"  # the exact shape of a real short link: 10 url-safe chars
UNSUB = f"{BASE}/u/tok_0123456789abcdefghij"


@pytest.mark.parametrize(
    "template, urls",
    [
        ("Sale at https://shop.example/sale.", ["https://shop.example/sale"]),
        ("Sale at https://shop.example/sale, today", ["https://shop.example/sale"]),
        ("(see https://shop.example/a)", ["https://shop.example/a"]),
        ("Go https://shop.example/a!", ["https://shop.example/a"]),
        ("Ready? http://a.co?", ["http://a.co"]),
        ("Go http://a.co/x?ref=sms&y=1!!", ["http://a.co/x?ref=sms&y=1"]),
        ("a https://x.example/p\nb http://y.example", ["https://x.example/p", "http://y.example"]),
        ("dup http://a.co and http://a.co again, http://a.co/x", ["http://a.co", "http://a.co/x"]),
        ("HTTPS://SHOP.EXAMPLE/A", ["HTTPS://SHOP.EXAMPLE/A"]),
        ("no links here, www.shop.example or ftp://x.example", []),
        ("bare scheme http:// here", []),
    ],
)
def test_find_urls(template: str, urls: list[str]) -> None:
    assert find_urls(template) == urls
    assert all(URL_PATTERN.fullmatch(url) for url in urls)


@pytest.mark.parametrize(
    "template, name, expected",
    [
        ("Hi {first_name}, sale", "Ann", "Hi Ann, sale"),
        ("Hi {first_name}, sale", None, "Hi, sale"),
        ("Hi {first_name}, sale", "   ", "Hi, sale"),
        ("Hi {first_name}, sale", "", "Hi, sale"),
        ("Hi {first_name}!", None, "Hi!"),
        ("Hi {first_name}!", " Ann ", "Hi Ann!"),
        ("Dear {first_name} welcome", None, "Dear welcome"),
        ("{first_name} welcome", None, "welcome"),
        ("Hi {first_name}\nSale", None, "Hi\nSale"),
        ("Hi {first_name}", None, "Hi"),
        ("{first_name}, {first_name}!", "Bo", "Bo, Bo!"),
        ("Use {code} or {{x}} {first_name}.", None, "Use {code} or {{x}}."),
        ("Use {code} or { first_name }", "Ann", "Use {code} or { first_name }"),
        ("Hi {first_name}", "{first_name}", "Hi {first_name}"),
        ("Hi {first_name}", r"A\1 $0", r"Hi A\1 $0"),
    ],
)
def test_personalise(template: str, name: str | None, expected: str) -> None:
    assert personalise(template, name) == expected


def test_compose_shortens_known_urls_and_keeps_the_rest() -> None:
    template = "Hi {first_name}, see http://a.co/x and http://b.co. Also http://a.co!"
    links = {"http://a.co": SHORT, "http://a.co/x": SHORT + "2"}
    text = compose(template, "Ann", links, None)
    # http://b.co has no short link (shortening failed): it stays; the prefix-sharing URLs are
    # each replaced by their own link.
    assert text == f"Hi Ann, see {SHORT}2 and http://b.co. Also {SHORT}!"


def test_compose_unsubscribe_suffix_on_and_off() -> None:
    assert compose("Sale", None, {}, UNSUB) == f"Sale\nUnsubscribe: {UNSUB}"
    assert compose("Sale", None, {}, None) == "Sale"


def test_compose_never_shortens_a_url_in_the_first_name() -> None:
    name = "http://a.co"
    text = compose("Hi {first_name}, see http://a.co", name, {"http://a.co": SHORT}, None)
    assert text == f"Hi http://a.co, see {SHORT}"


def test_compose_blank_name_with_links_and_suffix() -> None:
    text = compose("Hi {first_name}, 20% off https://shop.example/s.", " ", {}, UNSUB)
    assert text == f"Hi, 20% off https://shop.example/s.\nUnsubscribe: {UNSUB}"


def _all_outcomes(template: str, name: str | None, short: str, unsub: str | None) -> list[int]:
    """Segment counts of every text the send could produce: each URL shortened or not, and the
    unsubscribe link present or not."""
    urls = find_urls(template)
    counts = []
    for choice in itertools.product((False, True), repeat=len(urls)):
        links = {u: short for u, c in zip(urls, choice) if c}
        for suffix in {None, unsub}:
            counts.append(segment_count(compose(template, name, links, suffix)))
    return counts


CASES = [
    ("Hi {first_name}, sale at http://a.co today", "Ann"),
    ("Hi {first_name}, sale at http://a.co today " + "x" * 110, None),
    ("Sale " + "https://shop.example/" + "p" * 140 + " now", "Ann"),
    ("Hi {first_name}! " + "y" * 100 + " https://shop.example/~deals", "Zoë"),
    ("Hi {first_name}! " + "y" * 40 + " http://a.co", "Łukasz"),
    ("€" * 60 + " http://a.co " + "https://shop.example/" + "q" * 60, "Ann"),
    ("{first_name} " + "z" * 150, "Bartholomew"),
    ("Hi {first_name}, " + "λ" * 50 + " http://a.co", None),
    ("", None),
]


@pytest.mark.parametrize("template, name", CASES)
@pytest.mark.parametrize("unsub", [UNSUB, None])
def test_cost_upper_bound_covers_every_outcome(
    template: str, name: str | None, unsub: str | None
) -> None:
    bound = cost_upper_bound(template, name, SHORT, unsub)
    outcomes = _all_outcomes(template, name, SHORT, unsub)
    assert bound == max(outcomes)
    assert bound >= segment_count(compose(template, name, {}, unsub))
    all_short = {u: SHORT for u in find_urls(template)}
    assert bound >= segment_count(compose(template, name, all_short, unsub))


@pytest.mark.parametrize("name", ["Zoë", "Łukasz"])
def test_non_gsm_first_name_makes_the_message_ucs2(name: str) -> None:
    template = "Hi {first_name}, " + "s" * 65
    assert segment_count(compose(template, "Zoe", {}, None)) == 1
    text = compose(template, name, {}, None)
    assert encoding(text) == "UCS-2"
    assert segment_count(text) == 2
    assert cost_upper_bound(template, name, SHORT, None) == 2


def test_cost_upper_bound_mixed_outcome_is_the_worst() -> None:
    # A short original (shorter than a short link) next to a long one: the worst text keeps the
    # long URL and shortens the short one, which neither extreme shows.
    long_url = "https://shop.example/" + "p" * 39  # 60 chars
    template = "http://a.co " + long_url + " " + "f" * 75
    assert len(SHORT) == 36
    all_long = segment_count(compose(template, None, {}, None))
    both = {"http://a.co": SHORT, long_url: SHORT}
    all_short = segment_count(compose(template, None, both, None))
    mixed = segment_count(compose(template, None, {"http://a.co": SHORT}, None))
    assert (all_long, all_short, mixed) == (1, 1, 2)
    assert cost_upper_bound(template, None, SHORT, None) == 2


def test_cost_upper_bound_many_urls_falls_back_to_a_safe_bound() -> None:
    rng = random.Random(7)
    urls = [f"http://s{i}.co" for i in range(5)] + [
        f"https://shop.example/{'~' * i}{'p' * 30}" for i in range(5)
    ]
    template = "Hi {first_name} " + " ".join(urls) + " end"
    bound = cost_upper_bound(template, "Zoë", SHORT, UNSUB)
    for _ in range(300):
        links = {u: SHORT for u in urls if rng.random() < 0.5}
        suffix = UNSUB if rng.random() < 0.5 else None
        assert segment_count(compose(template, "Zoë", links, suffix)) <= bound
    assert segment_count(compose(template, "Zoë", {}, UNSUB)) <= bound
