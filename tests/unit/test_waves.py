"""reminderd/schedule/waves.py: a broadcast's wall time read in each zone, the zone furthest ahead
first; pure, checked against zoneinfo."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from reminderd.schedule import first_everywhere, next_wall, parse_cron, parse_rrule, span

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
