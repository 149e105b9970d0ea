"""What a campaign's reservation holds at each stage: reservations follow the money (SPEC 3, 4).

- While the campaign may send (`sending`, `paused`): the upper bound of its whole cost, reserved
  at enqueue (`credits.reserve`); each debit consumes its part.
- Once it is cancelled: the part for recipients that will never be sent (skipped) is released
  at once; the upper bound of its calls in flight (`sending`) and of its messages of unknown
  outcome stays, `active`, until those calls resolve.
- Once it is over (completed, failed, or cancelled with no call in flight): `held`, the upper
  bound of its messages of unknown outcome only, because a delivery report may still prove the
  provider sent them, and that evidence is charged (`service.evidence`). The hold lasts as long
  as evidence counts, EVIDENCE_WINDOW_MS after the campaign finished; then it is released. With
  no message of unknown outcome the reservation is released at once.

So `available` never counts credits a message in flight may still take, and a late debit always
finds credits held for it: the balance covers it without going below zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from peewee import SQL, fn

from models import Campaign, CampaignRecipient, CreditReservation
from models.database import db
from models.expressions import milliseconds_ago
from service import audit, composition, credits, links, recipient_counts
from service.audit import Actor
from service.infra.config import Settings

# Campaign statuses whose reservation still covers everything they have not sent.
MAY_SEND = ("draft", "scheduled", "sending", "paused")
IN_FLIGHT = CampaignRecipient.status == "sending"
UNKNOWN_OUTCOME = (CampaignRecipient.status == "failed") & (
    CampaignRecipient.error == "unknown_outcome"
)


@dataclass(frozen=True)
class Hold:
    """What may still be charged for a campaign: its calls in flight and its messages of
    unknown outcome, each as (recipients, upper bound of their cost in credits)."""

    in_flight: int = 0
    in_flight_credits: int = 0
    unknown: int = 0
    unknown_credits: int = 0

    @property
    def credits(self) -> int:
        return self.in_flight_credits + self.unknown_credits

    @property
    def status(self) -> str:
        """The reservation's status for this hold: `active` while a call is in flight."""
        if self.in_flight:
            return "active"
        return "held" if self.unknown else "released"


def unresolved_hold(campaign_id: int, settings: Settings) -> Hold:
    """The upper bound of what the campaign's unresolved messages may cost, computed as the
    enqueue reserved it (`composition.cost_upper_bound`), so it never exceeds their share."""
    campaign = (
        Campaign.select(Campaign.text, Campaign.append_unsubscribe)
        .where(Campaign.id == campaign_id)
        .first()
    )
    if campaign is None:
        return Hold()
    unresolved = (
        CampaignRecipient.select(
            IN_FLIGHT.alias("in_flight"),
            CampaignRecipient.first_name,
            fn.COUNT(SQL("*")).alias("count"),
        )
        .where((CampaignRecipient.campaign == campaign_id) & (IN_FLIGHT | UNKNOWN_OUTCOME))
        .group_by(SQL("1"), CampaignRecipient.first_name)
        .tuples()
    )
    base = settings.public_base_url
    short = links.sample_short_url(base)
    unsubscribe = links.sample_unsubscribe_url(base) if campaign.append_unsubscribe else None
    personalised = composition.FIRST_NAME_PLACEHOLDER in campaign.text
    costs: dict[str | None, int] = {}
    counts = {True: [0, 0], False: [0, 0]}  # in flight? -> [recipients, credits]
    for in_flight, first_name, count in unresolved:
        name = first_name if personalised else None
        if name not in costs:
            costs[name] = composition.cost_upper_bound(campaign.text, name, short, unsubscribe)
        counts[in_flight][0] += count
        counts[in_flight][1] += count * costs[name]
    return Hold(*counts[True], *counts[False])


def settle(campaign_id: int, settings: Settings, actor: Actor) -> str | None:
    """Bring the reservation of a cancelled or finished campaign down to its hold (see the
    module's docstring); idempotent. Returns the reservation's status after it, or None when
    there is nothing to settle: no reservation, already released, or a campaign that may
    still send (its reservation covers all it has not sent).

    The reservation row is locked before the hold is read, so settles run one at a time; a
    debit committed after the hold was read is taken from the hold, so the hold is never
    short. Credits once released stay released: another campaign may have reserved them.
    A settle that changes the reservation's status or releases credits is recorded for
    `actor`; one that changes nothing (calls still in flight) records nothing."""
    status = Campaign.select(Campaign.status).where(Campaign.id == campaign_id).scalar()
    if status is None or status in MAY_SEND:
        return None  # checked unlocked: a campaign that can send no more never can again
    if status == "cancelled" and recipient_counts.for_campaign(campaign_id)[0].get("pending"):
        # Its pending recipients are skipped first, in chunks after the cancel answered
        # (`delivery.finalize_cancelled`), which then settles. Settled now (by a batch's
        # persist that came back meanwhile), the reservation was released and the skip,
        # which only looked at campaigns with an active one, never came: a probe saw 297
        # recipients left pending for good.
        return None
    with db.atomic():
        reservation = (
            CreditReservation.select(
                CreditReservation.id,
                CreditReservation.shop,
                CreditReservation.status,
                CreditReservation.released,
            )
            .where(
                (CreditReservation.campaign == campaign_id)
                & (CreditReservation.status != "released")
            )
            .for_update()
            .first()
        )
        if reservation is None:
            return None
        hold = unresolved_hold(campaign_id, settings)
        unneeded = CreditReservation.amount - CreditReservation.consumed - hold.credits
        (released,) = (
            CreditReservation.update(
                released=fn.GREATEST(CreditReservation.released, unneeded, 0),
                status=hold.status,
                released_at=fn.now() if hold.status == "released" else None,
            )
            .where(CreditReservation.id == reservation.id)
            .returning(CreditReservation.released)
            .tuples()
            .execute()
        )[0]
        if hold.status != reservation.status or released != reservation.released:
            audit.record(
                actor,
                audit.Event(
                    reservation.shop_id,
                    "reservation",
                    "held" if hold.status == "held" else "released",
                    _settle_reason(status, hold),
                    campaign_id=campaign_id,
                    from_status=reservation.status,
                    to_status=hold.status,
                    amount=released - reservation.released,
                    detail={"in_flight": hold.in_flight, "unknown_outcome": hold.unknown}
                    if hold.credits
                    else None,
                ),
            )
    return hold.status


def _settle_reason(campaign_status: str, hold: Hold) -> str:
    if hold.in_flight:
        return f"campaign {campaign_status}: unsent part released, calls in flight still held"
    if hold.unknown:
        return f"campaign {campaign_status}: held for messages of unknown outcome"
    return f"campaign {campaign_status}: nothing more can be charged"


def release_expired_holds(settings: Settings, actor: Actor) -> int:
    """Release the holds of campaigns that finished more than EVIDENCE_WINDOW_MS ago: from
    then on evidence no longer counts (`service.evidence`), so nothing can be charged."""
    expired = (
        CreditReservation.select(CreditReservation.campaign)
        .join(Campaign)
        .where(
            (CreditReservation.status == "held")
            & (Campaign.finished_at < milliseconds_ago(settings.evidence_window_ms))
        )
        .scalars()
    )
    reason = "the evidence window ended: nothing more can be charged"
    return sum(credits.release(campaign_id, actor, reason) for campaign_id in list(expired))


def settle_finished(settings: Settings, actor: Actor) -> int:
    """Settle every active reservation of a completed or failed campaign (a repair: their
    finalisation settles them; cancelled ones are settled by `delivery.finalize_cancelled`):
    no active reservation outlives its campaign. Returns how many are no longer active."""
    finished = (
        CreditReservation.select(CreditReservation.campaign)
        .join(Campaign)
        .where(
            (CreditReservation.status == "active") & Campaign.status.in_(("completed", "failed"))
        )
        .scalars()
    )
    return sum(
        settle(campaign_id, settings, actor) in ("held", "released")
        for campaign_id in list(finished)
    )
