"""Quiet hours in the recipient's local time (SPEC 11): the zones of the number (all of them
when its region spans several), else the shop's timezone; windows that cross midnight; and
daylight-saving changes, which move the opening in UTC but never in local time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.infra.config import ConfigError, load
from service.quiet_hours import NEVER, QuietFilter, QuietHours, number_zones_of

NIGHT = QuietHours(21 * 60, 8 * 60)  # 21:00-08:00, the default
ATHENS = "+306912345678"  # Europe/Athens: UTC+2 in winter, UTC+3 in summer
SAN_FRANCISCO = "+14155550123"  # America/Los_Angeles
MOSCOW_MOBILE = "+79161234567"  # a Russian mobile: every zone from UTC+2 to UTC+12
FREEPHONE = "+80012345678"  # international freephone: no zone


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def opening(phone: str, now: datetime, quiet: QuietHours = NIGHT, shop_tz: str = "UTC"):
    return QuietFilter(quiet, shop_tz, now).recipient_opening(phone, None)


def test_a_number_is_sent_outside_quiet_hours_in_its_own_zone():
    # 19:30 UTC: 21:30 in Athens (quiet), 11:30 in San Francisco (not)
    now = utc(2026, 12, 2, 19, 30)
    assert opening(SAN_FRANCISCO, now) is None
    # The Athenian waits for 08:00 Athens, 06:00 UTC
    assert opening(ATHENS, now) == utc(2026, 12, 3, 6, 0)


def test_the_window_crosses_midnight():
    # Athens 07:59 waits a minute; 08:00 goes; 20:59 goes; 21:00 waits until 08:00 next day
    assert opening(ATHENS, utc(2026, 12, 2, 5, 59)) == utc(2026, 12, 2, 6, 0)
    assert opening(ATHENS, utc(2026, 12, 2, 6, 0)) is None
    assert opening(ATHENS, utc(2026, 12, 2, 18, 59)) is None
    assert opening(ATHENS, utc(2026, 12, 2, 19, 0)) == utc(2026, 12, 3, 6, 0)
    # and just after midnight local it is the same morning's 08:00
    assert opening(ATHENS, utc(2026, 12, 2, 22, 30)) == utc(2026, 12, 3, 6, 0)


def test_a_window_within_one_day():
    lunch = QuietHours(12 * 60, 14 * 60)
    assert opening(ATHENS, utc(2026, 12, 2, 10, 0), lunch) == utc(2026, 12, 2, 12, 0)
    assert opening(ATHENS, utc(2026, 12, 2, 9, 59), lunch) is None
    assert opening(ATHENS, utc(2026, 12, 2, 12, 0), lunch) is None


def test_a_number_spanning_several_zones_waits_until_every_zone_is_outside():
    zones = number_zones_of(MOSCOW_MOBILE)
    assert {"Europe/Moscow", "Asia/Kamchatka", "Europe/Bucharest"} <= zones
    # 12:00 UTC: 15:00 in Moscow, but 00:00 in Kamchatka (UTC+12): it waits
    now = utc(2026, 12, 2, 12, 0)
    opens = opening(MOSCOW_MOBILE, now)
    # until 08:00 in the easternmost zone (20:00 UTC) is too late for the westernmost
    # (UTC+2: 22:00), so the first moment all are outside is 08:00 at UTC+2 the next day
    # (06:00 UTC), when it is 18:00 at UTC+12
    assert opens == utc(2026, 12, 3, 6, 0)
    for zone in zones:
        local = opens.astimezone(ZoneInfo(zone))
        assert not NIGHT.inside(local), zone
    # and at 07:00 UTC (09:00 at UTC+2, 19:00 at UTC+12) it goes at once
    assert opening(MOSCOW_MOBILE, utc(2026, 12, 3, 7, 0)) is None


def test_zones_that_are_never_all_outside_quiet_hours_are_never_sent():
    # 20:00-10:00 leaves ten hours a day, fewer than Russia's ten hours of zones need
    long_night = QuietHours(20 * 60, 10 * 60)
    assert opening(MOSCOW_MOBILE, utc(2026, 12, 2, 12, 0), long_night) is NEVER


def test_a_number_without_zone_uses_the_shop_timezone():
    assert number_zones_of(FREEPHONE) == frozenset()
    now = utc(2026, 12, 2, 22, 0)  # 23:00 in Paris, 14:00 in Los Angeles
    assert opening(FREEPHONE, now, shop_tz="Europe/Paris") == utc(2026, 12, 3, 7, 0)
    assert opening(FREEPHONE, now, shop_tz="America/Los_Angeles") is None
    # an unknown shop timezone is read as UTC rather than failing the batch
    assert opening(FREEPHONE, now, shop_tz="Not/AZone") == utc(2026, 12, 3, 8, 0)


def test_the_country_shortcut_agrees_with_the_number():
    # Given a recipient whose region (from import) is known
    quiet = QuietFilter(NIGHT, "UTC", utc(2026, 12, 2, 19, 30))
    # Then with or without the region the decision is the same
    assert quiet.recipient_opening(ATHENS, "GR") == quiet.recipient_opening(ATHENS, None)
    assert quiet.recipient_opening(SAN_FRANCISCO, "US") is None


@pytest.mark.parametrize(
    ("now", "expected", "hours_later"),
    [
        # New York springs forward on 2026-03-08 at 02:00 EST: 08:00 EDT is 12:00 UTC,
        # six hours after 01:00 EST (06:00 UTC), not seven
        (utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 12, 0), 6),
        # and falls back on 2026-11-01 at 02:00 EDT: 08:00 EST is 13:00 UTC, 7.5 hours
        # after 01:30 EDT (05:30 UTC)
        (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13, 0), 7.5),
    ],
)
def test_daylight_saving_changes_keep_the_local_opening(now, expected, hours_later):
    new_york = "+12125550123"
    assert opening(new_york, now) == expected
    assert (expected - now) == timedelta(hours=hours_later)


def test_an_end_inside_the_spring_gap_opens_when_the_gap_ends():
    # 21:00-02:30 in New York on 2026-03-08: 02:30 does not exist (02:00 EST -> 03:00 EDT).
    # It opens at 03:00 EDT (07:00 UTC), when the wall clock is first past 02:30: the moment
    # `inside` stops saying quiet, so the opening shown is the one sending keeps (it showed
    # 03:30 while a recheck at 03:00 already sent)
    short_night = QuietHours(21 * 60, 2 * 60 + 30)
    now = utc(2026, 3, 8, 6, 0)
    assert opening("+12125550123", now, short_night) == utc(2026, 3, 8, 7, 0)
    new_york = ZoneInfo("America/New_York")
    assert short_night.inside(utc(2026, 3, 8, 6, 59, 59).astimezone(new_york))
    assert not short_night.inside(utc(2026, 3, 8, 7, 0).astimezone(new_york))


def test_the_filter_splits_a_window_keeping_its_order():
    quiet = QuietFilter(NIGHT, "UTC", utc(2026, 12, 2, 19, 30))
    sendable, waiting = quiet.split(
        [(1, ATHENS, "GR"), (2, SAN_FRANCISCO, "US"), (3, None, None), (4, "+306900000001", "GR")]
    )
    # an erased recipient (no number) is left to the claim, which skips it
    assert sendable == [2, 3]
    assert [(w.recipient_id, w.opening) for w in waiting] == [
        (1, utc(2026, 12, 3, 6, 0)),
        (4, utc(2026, 12, 3, 6, 0)),
    ]


def test_the_default_quiet_hours_are_configured_in_one_place():
    assert load({}).quiet_hours_default == (21 * 60, 8 * 60)
    assert load({"QUIET_HOURS_DEFAULT": "off"}).quiet_hours_default is None
    assert load({"QUIET_HOURS_DEFAULT": "22:30-07:15"}).quiet_hours_default == (1350, 435)
    for bad in ("21-08", "25:00-08:00", "08:00-08:00", "soon"):
        with pytest.raises(ConfigError, match="QUIET_HOURS_DEFAULT"):
            load({"QUIET_HOURS_DEFAULT": bad})


def test_a_caribbean_mobile_is_in_its_island_not_everywhere_in_the_plan():
    # phonenumbers gives a Jamaican mobile every zone of +1 (Guam to Hawaii: never all outside
    # quiet hours); its area code says Jamaica, where 15:00 (20:00 UTC) is a sending time
    assert number_zones_of("+18765024549") == {"America/Jamaica"}
    assert opening("+18765024549", utc(2026, 12, 2, 20, 0)) is None
    # a geographic number of the plan is where phonenumbers says
    assert number_zones_of("+12125550123") == {"America/New_York"}


def brute_opening(quiet: QuietHours, zones: frozenset[str], now: datetime) -> datetime | None:
    """The first whole minute from `now` at which every zone is outside quiet hours."""
    moment = now
    while moment - now <= timedelta(days=3):
        if not any(quiet.inside(moment.astimezone(ZoneInfo(zone))) for zone in zones):
            return None if moment == now else moment
        moment += timedelta(minutes=1)
    return NEVER


@pytest.mark.timeout(60)  # the search used to loop forever on these nights
@pytest.mark.parametrize(
    "quiet, phone, now",
    [
        # The night clocks go back, with the window's end in the repeated hour: read with the
        # earlier offset, the end lay behind the moment (an opening in the past), and across
        # two zones the search moved back and forth between two such ends forever.
        (QuietHours(90, 150), "+61412345678", datetime(2026, 4, 4, 14, 30, tzinfo=UTC)),
        (QuietHours(120, 150), "+61412345678", datetime(2026, 4, 4, 15, 5, tzinfo=UTC)),
        (QuietHours(60, 90), "+12127363100", datetime(2026, 11, 1, 3, 30, tzinfo=UTC)),
        (QuietHours(60, 90), "+12127363100", datetime(2026, 11, 1, 6, 10, tzinfo=UTC)),
        (QuietHours(22 * 60, 90), "+12127363100", datetime(2026, 11, 1, 6, 10, tzinfo=UTC)),
        (QuietHours(0, 90), "+12127363100", datetime(2026, 11, 1, 6, 5, tzinfo=UTC)),
        (QuietHours(60, 90), "+442071234567", datetime(2026, 10, 25, 1, 10, tzinfo=UTC)),
        (
            QuietHours(3 * 60 + 10, 3 * 60 + 40),
            "+302101234567",
            datetime(2026, 10, 25, 1, 5, tzinfo=UTC),
        ),
    ],
)
def test_on_the_night_clocks_go_back_the_opening_is_the_first_moment_outside(quiet, phone, now):
    zones = number_zones_of(phone)
    # When the opening is searched around the change
    opening = quiet.opening(zones, now)
    # Then it ends, lies ahead, and is the first minute at which every zone is outside
    assert opening is None or opening > now
    assert opening == brute_opening(quiet, zones, now)
