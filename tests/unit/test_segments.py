from __future__ import annotations

import math
import random

import pytest

from service.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    encoding,
    max_segments_for_length,
    segment_count,
    text_length,
)

EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair, 2 UTF-16 units
UPPER_GREEK_GSM = "ΔΦΓΛΩΠΨΣΘΞ"


def test_gsm_tables_have_the_spec_sizes() -> None:
    # 128 codes in the basic table minus ESC; 10 printable extension characters.
    assert len(GSM7_BASIC) == 127
    assert GSM7_EXTENSION == frozenset("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    "ch",
    list("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà")
    + list("0123456789")
    + list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
)
def test_basic_table_members(ch: str) -> None:
    assert ch in GSM7_BASIC
    assert encoding(ch) == "GSM-7"
    assert text_length(ch) == 1


@pytest.mark.parametrize(
    "ch",
    [
        "ç",  # only the capital Ç is in the table
        "λ",  # lowercase Greek is not GSM-7
        "Α",  # GREEK CAPITAL ALPHA looks like "A" but is not in the table
        "ë",
        "Ł",
        "`",
        "\t",
        "\x1b",  # ESC is the extension escape, not a character
        "\u00a0",  # no-break space
        "\u2019",  # curly apostrophe
        EMOJI,
    ],
)
def test_non_gsm_characters_force_ucs2(ch: str) -> None:
    assert ch not in GSM7_BASIC and ch not in GSM7_EXTENSION
    assert encoding("hello " + ch) == "UCS-2"


@pytest.mark.parametrize("ch", sorted(GSM7_EXTENSION))
def test_extension_characters_are_gsm_and_count_two(ch: str) -> None:
    assert encoding(ch) == "GSM-7"
    assert text_length(ch) == 2


def test_empty_text_is_not_sendable_and_costs_nothing() -> None:
    assert segment_count("") == 0
    assert text_length("") == 0
    assert encoding("") == "GSM-7"


@pytest.mark.parametrize(
    "text, length, segments",
    [
        ("a", 1, 1),
        ("a" * 160, 160, 1),
        ("a" * 161, 161, 2),
        ("a" * 306, 306, 2),
        ("a" * 307, 307, 3),
        ("a" * 459, 459, 3),
        ("a" * 460, 460, 4),
        (UPPER_GREEK_GSM * 16, 160, 1),
        (UPPER_GREEK_GSM * 16 + "Δ", 161, 2),
        ("€" * 80, 160, 1),
        ("€" * 81, 162, 2),
        ("a" * 159 + "€", 161, 2),
        # 154 septets still fit one single-part message (160): the 153-septet limit and the
        # no-straddle rule only apply once the text is concatenated.
        ("a" * 152 + "€", 154, 1),
        ("a" * 152 + "€" * 5, 162, 2),
        ("€" * 153, 306, 3),  # 76 per part: a pair never fills the 153rd septet
        ("a" * 158 + "\n\r", 160, 1),
    ],
)
def test_gsm7_boundaries(text: str, length: int, segments: int) -> None:
    assert encoding(text) == "GSM-7"
    assert text_length(text) == length
    assert segment_count(text) == segments


@pytest.mark.parametrize(
    "text, segments",
    [
        # 306 septets, so ceil(306 / 153) == 2, but the "€" cannot straddle parts 1 and 2:
        # part 1 is 152 "a", part 2 "€" + 151 "a", part 3 the last "a".
        ("a" * 152 + "€" + "a" * 152, 3),
        # Same layout one septet shorter fits exactly: 152 | € + 151.
        ("a" * 152 + "€" + "a" * 151, 2),
        # The pair landing exactly on septets 152-153 fits in part 1.
        ("a" * 151 + "€" + "a" * 153, 2),
    ],
)
def test_gsm7_extension_pair_is_never_split(text: str, segments: int) -> None:
    assert text_length(text) in (305, 306)
    assert segment_count(text) == segments


@pytest.mark.parametrize(
    "text, length, segments",
    [
        ("λ" * 70, 70, 1),
        ("λ" * 71, 71, 2),
        ("λ" * 134, 134, 2),
        ("λ" * 135, 135, 3),
        ("a" * 69 + "λ", 70, 1),
        (EMOJI * 35, 70, 1),
        (EMOJI * 36, 72, 2),
        ("λ" * 69 + EMOJI, 71, 2),
        ("€" * 69 + "λ", 70, 1),  # in UCS-2 "€" is a single unit
    ],
)
def test_ucs2_boundaries(text: str, length: int, segments: int) -> None:
    assert encoding(text) == "UCS-2"
    assert text_length(text) == length
    assert segment_count(text) == segments


def test_ucs2_surrogate_pair_is_never_split() -> None:
    text = "λ" * 66 + EMOJI + "λ" * 66
    assert text_length(text) == 134
    assert math.ceil(134 / 67) == 2
    assert segment_count(text) == 3
    # Pair on units 66-67 fits in part 1.
    assert segment_count("λ" * 65 + EMOJI + "λ" * 67) == 2


def test_one_emoji_turns_gsm_text_into_ucs2() -> None:
    gsm = "a" * 100
    assert (encoding(gsm), segment_count(gsm)) == ("GSM-7", 1)
    text = gsm + EMOJI
    assert encoding(text) == "UCS-2"
    assert text_length(text) == 102
    assert segment_count(text) == 2


def test_max_segments_for_length_bounds_every_text() -> None:
    rng = random.Random(1234)
    gsm_alphabet = sorted(GSM7_BASIC | GSM7_EXTENSION)
    ucs2_alphabet = gsm_alphabet + ["λ", "ç", EMOJI]
    for _ in range(2000):
        alphabet = gsm_alphabet if rng.random() < 0.5 else ucs2_alphabet
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 700)))
        assert segment_count(text) <= max_segments_for_length(text_length(text), encoding(text))
    assert max_segments_for_length(0, "GSM-7") == 0
    assert max_segments_for_length(160, "GSM-7") == 1
    assert max_segments_for_length(70, "UCS-2") == 1
    with pytest.raises(ValueError):
        max_segments_for_length(10, "latin-1")
