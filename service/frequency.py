"""The frequency cap (SPEC 11): at most N campaign messages per contact in a rolling 24 h.

Off by default (`shop.frequency_cap` NULL); with a cap, each window of a batch skips
(`windows.BatchSender.admit`, `sending.skip_pending`), before its claim, the recipients whose
contact was already sent N messages in the 24 h before now: `skipped` with reason
`frequency_cap`, never claimed, never charged; their part of the reservation is released with
the other skips' when the campaign is settled (`service.reservations`).

How it counts, and why so: every message a contact was sent is a `campaign_recipient` row with
`sent_at` (all campaign messages are marketing; answers to STOP/HELP are `inbound_reply` rows
and do not count). One query per window, over the window's contacts only, through the partial
index `campaign_recipient_contact_sent (contact_id, sent_at) WHERE sent_at IS NOT NULL`
(migration 0008): a contact's sends of the last day are a short range of it. The index costs
nothing at enqueue (pending rows have no `sent_at`) and does not touch the claim, which stays
a HOT update (no indexed column changes from pending to sending: bench/RESULTS.md); its entry
is written when the message is persisted, an update that is never HOT anyway (it sets the
indexed `mitto_message_id`). Shops without a cap pay nothing: the query is not made.

Messages in flight count too: a contact claimed by another campaign of the shop (`sending`,
its call under way or its outcome still unknown) or whose outcome stayed unknown
(`failed`, `unknown_outcome`: it may have reached the phone) in the last 24 h. Those rows
have no `sent_at`, so they are found through the shop's campaigns of the last day (a few),
each by its unique (campaign_id, contact_id) index: the claim stays HOT. And two campaigns of
a capped shop claiming the same contact at the same moment are serialised: the check, the
skips and the claim are one transaction under the shop's advisory lock (`claim_within_cap`),
so the second sees the first's claim. Without it each passed a contact at N-1 and the
contact got one message more per campaign sending to it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from models.database import db, execute, fetchall
from service import sending
from service.sending import Claimed

WINDOW = timedelta(hours=24)
REASON = "frequency_cap"
# First key of `pg_advisory_xact_lock(FREQUENCY_LOCK, shop_id)`: a capped shop's claims.
FREQUENCY_LOCK = 0x66726571  # "freq"


def over_cap(shop_id: int, recipient_ids: Sequence[int], cap: int, now: datetime) -> list[int]:
    """The recipients (pending, of the window) whose contact was sent, or is being sent,
    `cap` or more campaign messages in the 24 h before `now`. MATERIALIZED: inlined, the
    shop's campaigns were read again for each recipient (a review: 133 ms a window of 100
    for a shop of 3,000 campaigns, 1.4 ms materialised)."""
    rows = fetchall(
        "WITH recent AS MATERIALIZED ("
        "   SELECT id FROM campaign WHERE shop_id = %(shop)s"
        "     AND status NOT IN ('draft', 'scheduled')"
        "     AND (finished_at IS NULL OR finished_at > %(since)s))"
        " SELECT r.id FROM campaign_recipient r"
        " WHERE r.id = ANY(%(ids)s) AND r.status = 'pending'"
        "   AND (SELECT count(*) FROM campaign_recipient s"
        "        WHERE s.contact_id = r.contact_id AND s.sent_at IS NOT NULL"
        "          AND s.sent_at > %(since)s AND s.status = 'sent')"
        "     + (SELECT count(*) FROM recent c JOIN campaign_recipient s"
        "          ON s.campaign_id = c.id AND s.contact_id = r.contact_id"
        "        WHERE s.status = 'sending'"
        "           OR (s.status = 'failed' AND s.error = 'unknown_outcome'"
        "               AND s.claimed_at > %(since)s)) >= %(cap)s",
        {"shop": shop_id, "ids": list(recipient_ids), "since": now - WINDOW, "cap": cap},
    )
    return [row[0] for row in rows]


def claim_within_cap(
    shop_id: int, campaign_id: int, recipient_ids: Sequence[int], key: str, cap: int, now: datetime
) -> list[Claimed]:
    """Skip the window's recipients over the cap and claim the others in one transaction,
    under the shop's lock: another campaign's window of the same shop waits, then sees these
    claims (each statement of READ COMMITTED reads what was committed before it began)."""
    with db.atomic():
        execute("SELECT pg_advisory_xact_lock(%s, %s)", (FREQUENCY_LOCK, shop_id))
        sending.skip_pending(campaign_id, over_cap(shop_id, recipient_ids, cap, now), REASON)
        return sending.claim_recipients(campaign_id, recipient_ids, key)
