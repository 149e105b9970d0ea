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

What it does not see: messages in flight (claimed, not yet persisted) of another campaign of
the same shop sending to the same contact at the same moment; two such campaigns can each
pass a contact at N-1, so a contact can get at most one message more per campaign sending to
it concurrently. Counting claimed rows would need an index on `claimed_at` or `status`, which
would end the claim's HOT updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from models.database import fetchall

WINDOW = timedelta(hours=24)
REASON = "frequency_cap"


def over_cap(recipient_ids: Sequence[int], cap: int, now: datetime) -> list[int]:
    """The recipients (pending, of the window) whose contact was sent `cap` or more campaign
    messages in the 24 h before `now`."""
    rows = fetchall(
        "SELECT r.id FROM campaign_recipient r"
        " WHERE r.id = ANY(%(ids)s) AND r.status = 'pending'"
        "   AND (SELECT count(*) FROM campaign_recipient s"
        "        WHERE s.contact_id = r.contact_id AND s.sent_at IS NOT NULL"
        "          AND s.sent_at > %(since)s AND s.status = 'sent') >= %(cap)s",
        {"ids": list(recipient_ids), "since": now - WINDOW, "cap": cap},
    )
    return [row[0] for row in rows]
