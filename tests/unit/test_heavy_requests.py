"""Which requests are heavy (`API_SHOP_HEAVY_CONCURRENCY`): declared by the resource class, per
method, read from the routed resource like its `auth`; and the web process's GIL switch interval,
a setting with bounds."""

from __future__ import annotations

import pytest

from api.access import HEAVY_BODY, heavy
from api.resources.campaigns import CampaignsResource
from api.resources.contacts import ContactsResource
from service.infra import config
from tests.conftest import SECRET_KEY


def test_a_contacts_import_is_heavy_and_listing_contacts_or_campaigns_is_not():
    contacts = ContactsResource.__new__(ContactsResource)
    assert heavy(contacts, "POST")
    assert not heavy(contacts, "GET")
    assert not heavy(CampaignsResource(), "GET") and not heavy(CampaignsResource(), "POST")


def test_any_request_declaring_a_body_over_the_heavy_size_is_heavy():
    # A campaign to 500,000 contact ids (4.5 MB) is read in a web process's child, as an
    # import is; so is a body sent in chunks, whose size is known only once it is read
    campaigns = CampaignsResource()
    assert heavy(campaigns, "POST", HEAVY_BODY + 1)
    assert heavy(campaigns, "POST", None, chunked=True)
    assert not heavy(campaigns, "POST", HEAVY_BODY)
    assert not heavy(campaigns, "POST", None)


def test_the_heavy_cap_and_the_switch_interval_are_settings_with_defaults_and_bounds():
    base = {"SECRET_KEY": SECRET_KEY}
    defaults = config.load(base)
    assert (defaults.api_shop_heavy_concurrency, defaults.web_switch_interval_us) == (1, 200)
    assert config.load({**base, "API_SHOP_HEAVY_CONCURRENCY": "0"}).api_shop_heavy_concurrency == 0
    with pytest.raises(config.ConfigError, match="API_SHOP_HEAVY_CONCURRENCY"):
        config.load({**base, "API_SHOP_HEAVY_CONCURRENCY": "-1"})
    with pytest.raises(config.ConfigError, match="WEB_SWITCH_INTERVAL_US=50 must be at least"):
        config.load({**base, "WEB_SWITCH_INTERVAL_US": "50"})
