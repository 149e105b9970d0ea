"""SMS segment counting: how many billable message parts a text costs.

A text is sent GSM-7 when every character is in the GSM 03.38 default alphabet or its extension
table, and UCS-2 (really UTF-16) otherwise. A single-part message holds 160 septets / 70 UTF-16
units; a concatenated message loses room to its user data header, so each part holds 153 septets
/ 67 units. Handsets and providers never split a character across parts: a 2-septet extension
character (escape + char) or a surrogate pair that would straddle a part boundary moves whole to
the next part, which is why the count is a greedy packing rather than a plain ceil(len / 153).

The empty text is not sendable, so it costs 0 segments (not the 1 a provider would charge if it
accepted it); callers reject empty messages before they get here.
"""

from __future__ import annotations

from collections.abc import Iterator

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# GSM 03.38 default alphabet, in code-point order 0x00..0x7F so it can be checked against the
# spec table row by row. 0x1B (ESC) is deliberately absent: it is the escape to the extension
# table, not a character a user can type. 0x09 is the capital "Ç" as in the 3GPP table and the
# Unicode mapping file; lowercase "ç" is not GSM-7 (some handsets render 0x09 as "ç", but a
# text containing "ç" must still be sent UCS-2 to arrive intact).
_GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞ"
    "ÆæßÉ"  # 0x10-0x1F, ESC at 0x1B left out
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)
GSM7_BASIC: frozenset[str] = frozenset(_GSM7_BASIC_TABLE)

# Extension table characters (each sent as ESC + code, so 2 septets). The table's other entries
# (0x0D page break / CR2, 0x1B second escape) are control codes with no character to send.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

_GSM7_ALL: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION

_GSM7_SINGLE = 160
_GSM7_MULTI = 153
_UCS2_SINGLE = 70
_UCS2_MULTI = 67


def is_gsm7(text: str) -> bool:
    """True when every character of `text` can be sent in the GSM-7 alphabet."""
    return all(ch in _GSM7_ALL for ch in text)


def encoding(text: str) -> str:
    """The encoding a provider uses for `text`: "GSM-7" or "UCS-2".

    One character outside GSM-7 (an emoji, a curly quote, lowercase Greek, "ç", a tab)
    switches the whole message to UCS-2. The empty text is "GSM-7".
    """
    return GSM7 if is_gsm7(text) else UCS2


def _weights(text: str, gsm: bool) -> Iterator[int]:
    if gsm:
        return (2 if ch in GSM7_EXTENSION else 1 for ch in text)
    # Python strings hold code points; anything beyond the BMP is a surrogate pair in UTF-16.
    return (2 if ord(ch) > 0xFFFF else 1 for ch in text)


def text_length(text: str) -> int:
    """The length of `text` in the units of its encoding.

    GSM-7: septets, extension characters counting 2. UCS-2: UTF-16 code units, characters
    outside the BMP (most emoji) counting 2.
    """
    return sum(_weights(text, is_gsm7(text)))


def _parts(weights: Iterator[int], total: int, single: int, multi: int) -> int:
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for w in weights:
        # An unsplittable unit that does not fit in what is left opens the next part whole.
        if used + w > multi:
            parts += 1
            used = 0
        used += w
    return parts


def segment_count(text: str) -> int:
    """The number of SMS parts (billable segments) `text` is sent as; 0 for the empty text.

    GSM-7: up to 160 septets is 1 part, otherwise parts of at most 153 septets with no
    extension character split across parts. UCS-2: up to 70 UTF-16 units is 1 part, otherwise
    parts of at most 67 units with no surrogate pair split across parts. Splitting is per code
    point, like the providers do: a multi-code-point emoji sequence (ZWJ, flags) may be split.
    """
    gsm = is_gsm7(text)
    total = sum(_weights(text, gsm))
    if gsm:
        return _parts(_weights(text, gsm), total, _GSM7_SINGLE, _GSM7_MULTI)
    return _parts(_weights(text, gsm), total, _UCS2_SINGLE, _UCS2_MULTI)


def max_segments_for_length(length: int, text_encoding: str) -> int:
    """The most parts any text of `length` units in `text_encoding` can be sent as.

    Because no unsplittable unit is ever larger than 2, every part but the last is filled to at
    least 152 septets / 66 UTF-16 units, so the bound holds whatever the characters are. Used
    to bound a cost when the exact text is not known yet.
    """
    if text_encoding == GSM7:
        single, multi = _GSM7_SINGLE, _GSM7_MULTI
    elif text_encoding == UCS2:
        single, multi = _UCS2_SINGLE, _UCS2_MULTI
    else:
        raise ValueError(f"unknown encoding {text_encoding!r}")
    if length <= 0:
        return 0
    if length <= single:
        return 1
    return (length - 1) // (multi - 1) + 1
