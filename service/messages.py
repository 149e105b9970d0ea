"""A campaign's messages (SPEC 4.3): what one recipient's text is and what it costs.

The per-campaign part (template, short links, sender) is read once per batch into a
`CampaignContext`; each recipient's text is then composed from it (`service.composition` does
the text itself, without I/O) and costed in SMS segments (`service.segments`). The send
(`service.sending`) and the repair by evidence (`service.reconcile`) compose the same way, so a
message persisted by either has the text and cost the provider was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from models import Campaign, Shop
from service import composition, links, quiet_hours, segments
from service.infra.config import Settings
from service.quiet_hours import QuietHours


class Addressee(Protocol):
    """What composing a message reads of its recipient (a claimed campaign recipient)."""

    @property
    def contact_id(self) -> int: ...

    @property
    def first_name(self) -> str | None: ...


@dataclass(frozen=True)
class CampaignContext:
    """What composing a campaign's messages needs, read once per batch."""

    campaign_id: int
    shop_id: int
    template: str
    append_unsubscribe: bool
    sender: str
    short_links: dict[str, str]
    # The shop's compliance settings (SPEC 11), applied by each window of the batch.
    quiet: QuietHours | None = None
    timezone: str = "UTC"
    frequency_cap: int | None = None


def load_context(shop_id: int, campaign_id: int, settings: Settings) -> CampaignContext | None:
    """The campaign's template, sender and short links (created on first use); None when the
    shop has no such campaign. The sender falls back to `Settings.default_sender`."""
    row = (
        Campaign.select(
            Campaign.text,
            Campaign.append_unsubscribe,
            Shop.sender,
            Shop.quiet_start,
            Shop.quiet_end,
            Shop.timezone,
            Shop.frequency_cap,
        )
        .join(Shop)
        .where((Campaign.id == campaign_id) & (Campaign.shop == shop_id))
        .tuples()
        .first()
    )
    if row is None:
        return None
    template, append_unsubscribe, sender, quiet_start, quiet_end, timezone, cap = row
    short = links.shorten(
        shop_id, campaign_id, composition.find_urls(template), settings.public_base_url
    )
    return CampaignContext(
        campaign_id,
        shop_id,
        template,
        append_unsubscribe,
        sender or settings.default_sender,
        short,
        quiet_hours.of_shop(quiet_start, quiet_end),
        timezone,
        cap,
    )


def compose_for(context: CampaignContext, recipient: Addressee, settings: Settings) -> str:
    """The final text of one recipient's message: personalised, links shortened, and the
    unsubscribe link appended unless the campaign opted out of it."""
    unsubscribe = (
        links.unsubscribe_url(
            settings.public_base_url, settings.secret_key, context.shop_id, recipient.contact_id
        )
        if context.append_unsubscribe
        else None
    )
    return composition.compose(
        context.template, recipient.first_name, context.short_links, unsubscribe
    )


def uniform(context: CampaignContext) -> bool:
    """Whether every recipient's text is the same (no first name, no unsubscribe link of
    their own): the campaign then goes out in `/smsbulk` calls."""
    return (
        not context.append_unsubscribe
        and composition.FIRST_NAME_PLACEHOLDER not in context.template
    )


def compose_batch(
    context: CampaignContext, recipients: Sequence[Addressee], settings: Settings
) -> list[str]:
    """The final text of each recipient; composed once when it cannot differ."""
    if uniform(context):
        return [compose_for(context, recipients[0], settings)] * len(recipients)
    return [compose_for(context, recipient, settings) for recipient in recipients]


def segment_costs(texts: Sequence[str]) -> list[int]:
    """The SMS segments each text costs, counted once per distinct text (a batch's texts
    differ by first name at most, so most of them repeat)."""
    counted: dict[str, int] = {}
    return [
        counted.get(text) or counted.setdefault(text, segments.segment_count(text))
        for text in texts
    ]
