"""reminderd/schedule/waves.py: a broadcast's wall time read in each zone, the zone furthest ahead
first; pure, checked against zoneinfo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reminderd.schedule import (
    InvalidSchedule,
    Waves,
    first_everywhere,
    next_wall,
    parse_cron,
    parse_rrule,
    readable_zones,
    span,
    to_instant,
)

ZONES = ["Pacific/Auckland", "Asia/Kolkata", "Europe/London", "America/Los_Angeles"]


def test_the_first_occurrence_is_still_ahead_in_every_zone() -> None:
    monday_9 = parse_cron("0 9 * * 1")
    now = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # Monday 13:00 in Auckland, Sunday 16:00 in LA
    occurrence = first_everywhere(monday_9, ZONES, now)
    assert occurrence == datetime(2026, 12, 7, 9, 0)  # this Monday 09:00 is past in Auckland already
    first_at, last_at = span(occurrence, ZONES)
    assert first_at > now
    assert first_at == datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo("Pacific/Auckland"))
    assert last_at == datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo("America/Los_Angeles"))


def test_behind_every_zone_it_is_this_weeks() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # Monday 01:00 in Auckland
    assert first_everywhere(parse_cron("0 9 * * 1"), ZONES, now) == datetime(2026, 11, 30, 9, 0)


def test_a_wall_time_skipped_by_a_clock_change_is_read_at_the_jump() -> None:
    skipped = datetime(2027, 3, 14, 2, 30)  # America/New_York springs forward at 02:00
    first_at, last_at = span(skipped, ["America/New_York"])
    assert first_at == last_at == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)  # 03:00 EDT


def test_next_wall_walks_the_recurrence_and_ends_with_it() -> None:
    weekly_twice = parse_rrule("DTSTART:20261130T090000\nRRULE:FREQ=WEEKLY;COUNT=2", "UTC")
    first = next_wall(weekly_twice, datetime(2026, 11, 29))
    assert first == datetime(2026, 11, 30, 9, 0)
    assert first is not None
    second = next_wall(weekly_twice, first)
    assert second == datetime(2026, 12, 7, 9, 0)
    assert second is not None
    assert next_wall(weekly_twice, second) is None


def test_no_zones_reads_it_in_utc() -> None:
    now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert first_everywhere(parse_cron("0 9 * * *"), [], now) == datetime(2026, 11, 30, 9, 0)
    assert span(datetime(2026, 11, 30, 9, 0), []) == (datetime(2026, 11, 30, 9, 0, tzinfo=UTC),) * 2


# The instant a broadcast ends by: its until, and an RRULE's UNTIL written in UTC (…Z, an instant).

EAST_WEST = ["Asia/Tokyo", "America/Los_Angeles"]  # UTC+9 and UTC-8 in December
UNTIL_Z = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo, 04:00 in Los Angeles
TWICE_A_DAY = "DTSTART:20261201T000000\nRRULE:FREQ=DAILY;BYHOUR=9,20;BYMINUTE=0"  # DTSTART as stored


def occurrences(waves: Waves, zones: list[str], now: datetime) -> list[datetime]:
    found, occurrence = [], waves.first(zones, now)
    while occurrence is not None:
        found.append(occurrence)
        occurrence = waves.after(occurrence, zones)
    return found


def test_an_until_in_utc_is_an_instant_on_every_contacts_clock() -> None:
    waves = Waves.parse(cron=None, rrule=f"{TWICE_A_DAY};UNTIL=20261204T120000Z", until=None)
    assert waves.until == UNTIL_Z
    now = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)
    # West of UTC: 09:00 on the 4th in Los Angeles is 17:00Z, after the UNTIL; 20:00 on the 3rd is
    # 04:00Z on the 4th, before it.
    west = occurrences(waves, ["America/Los_Angeles"], now)
    assert west[-1] == datetime(2026, 12, 3, 20, 0)
    assert all(to_instant(w, ZoneInfo("America/Los_Angeles")) <= UNTIL_Z for w in west)
    # East of UTC: 20:00 on the 4th in Tokyo is 11:00Z, before the UNTIL (read as a UTC wall time
    # it was after 12:00, and lost).
    east = occurrences(waves, ["Asia/Tokyo"], now)
    assert east[-1] == datetime(2026, 12, 4, 20, 0)
    # Both: the broadcast goes on while an occurrence reaches a zone, but each zone only up to its
    # own instant: 20:00 on the 4th goes to Tokyo (11:00Z), not to Los Angeles (04:00Z on the 5th).
    both = occurrences(waves, EAST_WEST, now)
    assert both[-1] == datetime(2026, 12, 4, 20, 0)
    assert [(w, waves.reached(w, EAST_WEST)) for w in both[-3:]] == [
        (datetime(2026, 12, 3, 20, 0), EAST_WEST),
        (datetime(2026, 12, 4, 9, 0), ["Asia/Tokyo"]),
        (datetime(2026, 12, 4, 20, 0), ["Asia/Tokyo"]),
    ]


# 09:00 on each contact's clock, until 12:00Z on the 5th (December: London is on UTC).
KIRITIMATI, LONDON, PAGO_PAGO = "Pacific/Kiritimati", "Europe/London", "Pacific/Pago_Pago"  # +14, 0, -11
DAILY_9 = "DTSTART:20261201T000000\nRRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0"
UNTIL_5TH = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "waves",
    [
        Waves.parse(cron="0 9 * * *", rrule=None, until=UNTIL_5TH),
        Waves.parse(cron=None, rrule=f"{DAILY_9};UNTIL=20261205T120000Z", until=None),
    ],
    ids=["until", "rrule-until-z"],
)
def test_an_until_instant_ends_each_contact_by_their_own_instant(waves: Waves) -> None:
    """Each contact is sent every 09:00 whose instant in their own zone is not after the until: in
    Kiritimati 09:00 on the 5th (19:00Z on the 4th), in London 09:00 on the 5th (09:00Z), in Pago
    Pago 09:00 on the 4th (20:00Z), not on the 5th (20:00Z, after it). One instant for everyone cut
    the contacts of one side: the first zone's sent Pago Pago the 5th, the last zone's would have
    cut Kiritimati and London on the 4th."""
    zones = [KIRITIMATI, LONDON, PAGO_PAGO]
    now = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)  # the clock, injected
    found = occurrences(waves, zones, now)
    assert found[-1] == datetime(2026, 12, 5, 9, 0)  # the 6th's is 19:00Z on the 5th in Kiritimati: after it
    last_for = {zone: max(w for w in found if waves.reaches(w, zone)) for zone in zones}
    assert last_for == {KIRITIMATI: datetime(2026, 12, 5, 9, 0), LONDON: datetime(2026, 12, 5, 9, 0),
                        PAGO_PAGO: datetime(2026, 12, 4, 9, 0)}
    for wall in found:
        for zone in waves.reached(wall, zones):
            assert to_instant(wall, ZoneInfo(zone)) <= UNTIL_5TH
    fifth = datetime(2026, 12, 5, 9, 0)
    assert waves.reached(fifth, zones) == [KIRITIMATI, LONDON]
    assert span(fifth, waves.reached(fifth, zones)) == (
        datetime(2026, 12, 4, 19, 0, tzinfo=UTC), datetime(2026, 12, 5, 9, 0, tzinfo=UTC))
    assert waves.after(fifth, zones) is None


def test_an_until_without_z_ends_every_contact_on_the_same_wall_time() -> None:
    # RFC 5545: a floating UNTIL is compared with each occurrence as read on its contact's clock, so
    # 09:00 on the 5th is everyone's last, and reaches every zone (no instant ends it).
    waves = Waves.parse(cron=None, rrule=f"{DAILY_9};UNTIL=20261205T235959", until=None)
    zones = [KIRITIMATI, LONDON, PAGO_PAGO]
    found = occurrences(waves, zones, datetime(2026, 12, 2, 0, 0, tzinfo=UTC))
    assert found[-1] == datetime(2026, 12, 5, 9, 0)
    assert all(waves.reached(w, zones) == zones for w in found)


def test_the_earlier_of_until_and_the_rrules_until_ends_it() -> None:
    rule = f"{TWICE_A_DAY};UNTIL=20261204T120000Z"
    sooner = datetime(2026, 12, 4, 0, 0, tzinfo=UTC)
    assert Waves.parse(cron=None, rrule=rule, until=sooner).until == sooner
    assert Waves.parse(cron=None, rrule=rule, until=UNTIL_Z + timedelta(days=1)).until == UNTIL_Z
    assert Waves.parse(cron="0 9 * * *", rrule=None, until=sooner).until == sooner
    cron_waves = Waves.parse(cron="0 9 * * *", rrule=None, until=sooner)
    assert occurrences(cron_waves, ["America/Los_Angeles"], datetime(2026, 12, 1, tzinfo=UTC)) == [
        datetime(2026, 12, day, 9, 0) for day in (1, 2, 3)]  # 17:00Z on the 3rd; the 4th's is after it


def test_an_until_without_z_is_a_wall_time_on_every_clock() -> None:
    waves = Waves.parse(cron=None, rrule=f"{TWICE_A_DAY};UNTIL=20261204T120000", until=None)
    assert waves.until is None
    now = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)
    for zone in EAST_WEST:
        assert occurrences(waves, [zone], now)[-1] == datetime(2026, 12, 4, 9, 0)


def test_a_broadcasts_rule_is_still_checked_whole() -> None:
    with pytest.raises(InvalidSchedule, match="COUNT and UNTIL cannot both be given"):
        Waves.parse(cron=None, rrule="FREQ=DAILY;COUNT=3;UNTIL=20261204T120000Z", until=None)
    with pytest.raises(InvalidSchedule, match="minute 61 is out of range"):
        Waves.parse(cron="61 * * * *", rrule=None, until=None)


def test_zones_the_daemon_cannot_read_are_set_apart() -> None:
    assert readable_zones(["Europe/London", "Mars/Base", "UTC", "Asia/Kolkata", "../etc/passwd"]) == (
        ["Europe/London", "UTC", "Asia/Kolkata"], ["Mars/Base", "../etc/passwd"])
