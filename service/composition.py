"""Composing the final text of one message from a campaign template (pure functions, no I/O).

Order matters: URLs are found and shortened in the template first, then `{first_name}` is
personalised, then the unsubscribe link is appended. Shortening before personalisation means a
recipient whose first name looks like a URL never gets it shortened (nor a link minted for it).
Shortening and the unsubscribe link are best effort: a URL with no short link stays as it was,
and a missing unsubscribe URL means no suffix. The cost of a message is the SMS segment count of
the final text, which is why `cost_upper_bound` exists: the exact text is only known at send time.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

from service.segments import (
    GSM7,
    GSM7_EXTENSION,
    UCS2,
    max_segments_for_length,
    segment_count,
)

# A URL runs to the next whitespace but may not end in sentence punctuation: in
# "see https://x.co/sale." the dot belongs to the sentence, and a link minted for
# "https://x.co/sale." would point at a different (usually broken) page.
URL_PATTERN: re.Pattern[str] = re.compile(r"https?://\S*[^\s.,;:!?)\]'\"]", re.IGNORECASE)

FIRST_NAME_PLACEHOLDER = "{first_name}"
UNSUBSCRIBE_PREFIX = "\nUnsubscribe: "

_PLACEHOLDER_WITH_SPACES = re.compile(r"(?P<pre>[ \t]*)\{first_name\}(?P<post>[ \t]*)")
# After dropping an empty name, the space before it goes too when what follows is punctuation,
# so "Hi {first_name}, sale" reads "Hi, sale" rather than "Hi , sale".
_CLOSING_PUNCTUATION = frozenset(".,;:!?)]…")

# Cost bound: each distinct URL is independently shortened or not at send time, so the exact
# maximum needs every combination; past this many distinct URLs a length-based bound is used.
# 4, not 8: 2^8 x 2 texts of a long personalised message took 0.4 s per name shape (5 s for
# long names), paid once per shape in the enqueue's transaction; a hostile text and audience
# made one enqueue take minutes. Past 4 the bound over-reserves a little, released at the end.
_MAX_EXACT_URLS = 4


def find_urls(template: str) -> list[str]:
    """The distinct http(s) URLs in `template`, in order of first appearance."""
    return list(dict.fromkeys(m.group(0) for m in URL_PATTERN.finditer(template)))


def _blank_name_replacement(match: re.Match[str]) -> str:
    text = match.string
    start, end = match.start(), match.end()
    at_line_start = start == 0 or text[start - 1] == "\n"
    following = text[end] if end < len(text) else "\n"
    if at_line_start or following == "\n" or following in _CLOSING_PUNCTUATION:
        return ""
    # Between two words: keep a single separator so they don't run together.
    return " " if match.group("pre") or match.group("post") else ""


def personalise(template: str, first_name: str | None) -> str:
    """Replace every `{first_name}` in `template` by the recipient's first name.

    The name is stripped; a missing or blank name becomes "" and the spacing around the
    placeholder is tidied ("Hi {first_name}, sale" -> "Hi, sale", "Hi {first_name}!" -> "Hi!").
    Only the exact `{first_name}` is a placeholder: other braces are left untouched, and a name
    containing `{first_name}` is inserted literally rather than expanded again.
    """
    name = (first_name or "").strip()
    if name:
        return template.replace(FIRST_NAME_PLACEHOLDER, name)
    return _PLACEHOLDER_WITH_SPACES.sub(_blank_name_replacement, template)


def _shorten(template: str, short_links: Mapping[str, str]) -> str:
    # One regex pass rather than str.replace per URL: replacing "http://a.co" would otherwise
    # also rewrite the prefix of "http://a.co/sale".
    return URL_PATTERN.sub(lambda m: short_links.get(m.group(0), m.group(0)), template)


def _with_unsubscribe(text: str, unsubscribe_url: str | None) -> str:
    return text if unsubscribe_url is None else text + UNSUBSCRIBE_PREFIX + unsubscribe_url


def compose(
    template: str,
    first_name: str | None,
    short_links: Mapping[str, str],
    unsubscribe_url: str | None,
) -> str:
    """The final text of one message.

    Each URL of `template` is replaced by `short_links[url]` when present (a URL missing from
    the mapping stays as it was), then `{first_name}` is personalised, then
    "\\nUnsubscribe: <unsubscribe_url>" is appended unless `unsubscribe_url` is None.
    """
    body = personalise(_shorten(template, short_links), first_name)
    return _with_unsubscribe(body, unsubscribe_url)


def _length_bound(text: str) -> int:
    # Weigh the text both ways: as UTF-16 units, and as septets with every character counted
    # (non-GSM ones too), so any text whose characters are a sub-multiset of it weighs no more.
    units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
    septets = sum(2 if ch in GSM7_EXTENSION or ord(ch) > 0xFFFF else 1 for ch in text)
    return max(max_segments_for_length(units, UCS2), max_segments_for_length(septets, GSM7))


def length_cost_bound(
    template: str,
    first_name: str | None,
    short_url_sample: str,
    unsubscribe_url_sample: str | None,
) -> int:
    """A bound never lower than `cost_upper_bound`, from the text's length alone: every URL as
    long + short concatenated (its characters contain those of any choice) and the suffix.
    It depends on the name only through its UTF-16 units and its septets (`_length_bound`
    sums over characters), so names alike in both share it, and it costs one pass."""
    both = {url: url + short_url_sample for url in find_urls(template)}
    return _length_bound(compose(template, first_name, both, unsubscribe_url_sample))


def cost_upper_bound(
    template: str,
    first_name: str | None,
    short_url_sample: str,
    unsubscribe_url_sample: str | None,
) -> int:
    """The largest segment count the final text of this message could have.

    Shortening is best effort and decided per URL at send time, and a short URL is not always
    shorter than its original ("http://a.co" is), nor in the same alphabet (a long URL may hold
    "~" or non-GSM characters), so neither "all shortened" nor "all long" is the worst case on
    its own. This takes the maximum over every combination of each distinct URL kept long or
    replaced by `short_url_sample` (a string of the exact length and alphabet of a real short
    link), each with and without the unsubscribe suffix built from `unsubscribe_url_sample`
    (that link is best effort too; None means the campaign appends none). Above 4 distinct
    URLs it falls back to a length-based bound that is never lower than the exact maximum.
    """
    urls = find_urls(template)
    suffixes: list[str | None] = [None]
    if unsubscribe_url_sample is not None:
        suffixes.append(unsubscribe_url_sample)

    if len(urls) > _MAX_EXACT_URLS:
        return length_cost_bound(template, first_name, short_url_sample, unsubscribe_url_sample)

    worst = 0
    for shortened in itertools.product((False, True), repeat=len(urls)):
        links = {url: short_url_sample for url, short in zip(urls, shortened) if short}
        body = personalise(_shorten(template, links), first_name)
        for suffix in suffixes:
            worst = max(worst, segment_count(_with_unsubscribe(body, suffix)))
    return worst
