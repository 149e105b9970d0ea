"""A campaign's audience: who it sends to, counted by name shape without writing anything.

The eligible contacts of a campaign (its shop's, subscribed, number not suppressed, in its list
when it has one) are defined once, here, for the enqueue's INSERT ... SELECT and for the checks
that run before it (the recipient cap and the credit pre-check), so the two cannot disagree on
who is in the audience.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.database import fetchall, planned_for_a_long_list
from models.expressions import id_array
from service.segments import GSM7_BASIC, GSM7_EXTENSION

# `FROM ... WHERE` of the eligible contacts `c`; its parameters are `eligible_params(...)`.
ELIGIBLE_CONTACTS = (
    " FROM contact c"
    " WHERE c.shop_id = %s AND c.opted_out_at IS NULL"
    "   AND (%s::bigint[] IS NULL OR c.id = ANY(%s::bigint[]))"
    "   AND NOT EXISTS (SELECT 1 FROM suppression s"
    "                   WHERE s.shop_id = c.shop_id AND s.phone = c.phone)"
    # A shop that requires consent sends only to contacts that gave it (SPEC 11).
    "   AND (c.consent_collected_at IS NOT NULL"
    "        OR NOT (SELECT require_consent FROM shop WHERE id = %s))"
)


# A list longer than this is joined in PostgreSQL from the campaign's row (`IN_CAMPAIGN_LIST`)
# rather than sent back as a literal: 1,000,000 ids took about 0.4 s to read into Python, write
# out and parse again, and 0.2 s to plan, before the count began.
LONG_LIST = 10_000
# Appended to `ELIGIBLE_CONTACTS` (its list left NULL); its parameter is the campaign's id. Run
# under `planned_for_a_long_list`.
IN_CAMPAIGN_LIST = " AND c.id IN (SELECT unnest(contact_ids) FROM campaign WHERE id = %s)"


def eligible_params(shop_id: int, contact_ids: Sequence[int] | None) -> tuple:
    # The ids as one text literal, which PostgreSQL parses as one constant (`id_array`).
    ids = None if contact_ids is None else id_array(contact_ids)
    return (shop_id, ids, ids, shop_id)


def list_has_eligible(shop_id: int, campaign_id: int) -> bool:
    """Whether the campaign's list (`contact_ids`) holds an eligible contact: the ids read in
    PostgreSQL in the list's order, stopping at the first (tens of ms for 1,000,000 ids; the
    whole list, about 2 s, only when none is)."""
    row = fetchall(
        "SELECT EXISTS (SELECT 1 FROM unnest((SELECT contact_ids FROM campaign WHERE id = %s))"
        f" AS l(id) WHERE EXISTS (SELECT 1 {ELIGIBLE_CONTACTS} AND c.id = l.id))",
        (campaign_id, *eligible_params(shop_id, None)),
    )
    return bool(row[0][0])


def name_shape(name: str | None) -> object:
    """Names that compose into texts of the same segment count share a shape, so the cost
    is computed once per shape rather than once per recipient. A name of basic GSM-7
    characters (one septet each) or of BMP characters outside GSM-7 (one UTF-16 unit each)
    only matters by its length and encoding. Any other name (GSM-7 extension characters,
    emoji) is priced by the length bound (`composition.length_cost_bound`), which depends on
    its UTF-16 units and septets only: its shape is those two. (It was the name itself, each
    priced exactly over every URL combination: a probe's audience of 8 names of "€" cost a
    41 s enqueue, about 5 s of CPU per name.)"""
    if not name:
        return ("", 0)
    if all(char in GSM7_BASIC for char in name):
        return ("gsm", len(name))
    if all(ord(char) < 0x10000 for char in name) and not any(
        char in GSM7_EXTENSION for char in name
    ):
        return ("ucs2", len(name))
    units = sum(2 if ord(char) > 0xFFFF else 1 for char in name)
    septets = sum(2 if char in GSM7_EXTENSION or ord(char) > 0xFFFF else 1 for char in name)
    return (BOUND, units, septets)


BOUND = "bound"  # the kind of `name_shape` priced by the length bound


def _bracket(chars: str) -> str:
    # Inside a PostgreSQL (ARE) bracket expression these are the characters with a meaning.
    return "".join("\\" + char if char in "\\]^-[" else char for char in sorted(chars))


# `name_shape` in SQL: every character basic GSM-7; or none an extension character or outside
# the BMP (a range of code points, not of collation, in PostgreSQL's regular expressions).
_ALL_GSM_BASIC = f"^[{_bracket(''.join(GSM7_BASIC))}]+$"
_NOT_LENGTH_ONLY = f"[{_bracket(''.join(GSM7_EXTENSION))}{chr(0x10000)}-{chr(0x10FFFF)}]"


def _eligible(
    shop_id: int, contact_ids: Sequence[int] | None, list_of: int | None
) -> tuple[str, tuple]:
    """`FROM ... WHERE` of the audience and its parameters: the shop's eligible contacts, among
    `contact_ids` when given, or in the stored list of campaign `list_of` when given."""
    if list_of is None:
        return ELIGIBLE_CONTACTS, eligible_params(shop_id, contact_ids)
    return ELIGIBLE_CONTACTS + IN_CAMPAIGN_LIST, (*eligible_params(shop_id, None), list_of)


def _fetch(sql: str, params: tuple, list_of: int | None) -> list[tuple]:
    if list_of is None:
        return fetchall(sql, params)
    with planned_for_a_long_list():
        return fetchall(sql, params)


# The audience counted by name shape (`count_by_name_shape`); `{eligible}` is `_eligible`'s SQL,
# the parameters `SHAPE_PARAMS` and then its own.
BY_NAME_SHAPE = (
    "SELECT min(first_name), count(*) FROM ("
    "  SELECT c.first_name, CASE WHEN coalesce(c.first_name, '') = '' THEN 'none'"
    "                            WHEN c.first_name ~ %s THEN 'gsm'"
    "                            WHEN c.first_name !~ %s THEN 'ucs2' END AS kind"
    " {eligible}"
    ") audience"
    " GROUP BY kind, length(first_name), CASE WHEN kind IS NULL THEN first_name END"
)
SHAPE_PARAMS = (_ALL_GSM_BASIC, _NOT_LENGTH_ONLY)


def count_by_name_shape(
    shop_id: int, contact_ids: Sequence[int] | None, list_of: int | None = None
) -> list[tuple]:
    """[(a first name of the shape, eligible contacts of that shape)]: one row per shape of
    `name_shape` (a shape may span several rows, a row never spans two shapes), so summing
    count x cost of the name over the rows gives exactly what pricing each contact would.
    `list_of`: a campaign whose (long) list the audience is, joined in PostgreSQL.

    SQL: one aggregate over the audience; a name that is neither all basic GSM-7 nor of BMP
    characters without extension ones is grouped by itself (`name_shape` puts such names in
    shapes of their units and septets: a shape spans several rows, priced once)."""
    eligible, params = _eligible(shop_id, contact_ids, list_of)
    return _fetch(BY_NAME_SHAPE.format(eligible=eligible), (*SHAPE_PARAMS, *params), list_of)


def count(shop_id: int, contact_ids: Sequence[int] | None, list_of: int | None = None) -> int:
    """How many contacts the campaign would send to right now (`list_of`: as above).

    SQL, not a Peewee chain: it counts over `ELIGIBLE_CONTACTS`, the one definition of the
    audience that the enqueue's `INSERT ... SELECT` also runs, so the recipient cap and the
    credit pre-check cannot count another audience than the one inserted; a Peewee copy of the
    WHERE clause could drift from it. Not for speed: over 100,000 contacts (90,000 eligible) the
    same count as a Peewee chain took 64 ms against 62 ms (`bench/sql_choices.py`, RESULTS.md
    "Statements that stay SQL")."""
    eligible, params = _eligible(shop_id, contact_ids, list_of)
    return _fetch(f"SELECT count(*) {eligible}", params, list_of)[0][0]
