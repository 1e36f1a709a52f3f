"""reminderd.schedule.wallclock against a slow reference: the straightforward search that scans every wall
time within the DST shift of `after` (correct, but thousands of steps for dense schedules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reminderd.schedule.cron import parse_cron
from reminderd.schedule.wallclock import WallSchedule, _instants, next_instant, to_instant, wall

WINDOW = timedelta(hours=3)


def reference_next_instant(schedule: WallSchedule, tz: ZoneInfo, after: datetime) -> datetime | None:
    def offset(instant: datetime) -> timedelta:
        return instant.astimezone(tz).utcoffset() or timedelta()

    def slack(instant: datetime) -> timedelta:
        offsets = [offset(instant + delta) for delta in (-WINDOW, timedelta(), WINDOW)]
        return max(offsets) - min(offsets)

    best: datetime | None = None
    stop = datetime.max
    for candidate in schedule.walls_after(wall(after, tz) - slack(after)):
        if best is not None and candidate > stop:
            return best
        for instant in _instants(candidate, tz, schedule.every_hour):
            if instant > after and (best is None or instant < best):
                best, stop = instant, wall(instant, tz) + slack(instant)
    return best


ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Australia/Lord_Howe", "Asia/Kolkata",
         "Asia/Kathmandu", "Antarctica/Troll", "America/Santiago", "Africa/Casablanca", "Pacific/Chatham"]
CRONS = ["*/15 * * * *", "0 * * * *", "30 * * * *", "*/20 * * * * *", "0 * * * MON", "30 1 * * *",
         "30 2 * * *", "0 0 * * *", "*/10 1,2 * * *", "0 30 1 * * 0"]


def transition_instants(zone: str) -> list[datetime]:
    tz = ZoneInfo(zone)
    hours = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(2 * 366 * 24)]
    offsets = [h.astimezone(tz).utcoffset() for h in hours]
    return [h for h, (before, after) in zip(hours, pairwise(offsets), strict=False) if before != after]


TRANSITIONS = {zone: transition_instants(zone) for zone in ZONES}


@st.composite
def near_a_clock_change(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from([z for z in ZONES if TRANSITIONS[z]]))
    hour = draw(st.sampled_from(TRANSITIONS[zone]))
    return zone, hour + timedelta(seconds=draw(st.integers(-5 * 3600, 5 * 3600)))


@settings(max_examples=400, deadline=None)
@given(near_a_clock_change(), st.sampled_from(CRONS))
def test_agrees_with_the_reference_near_clock_changes(zone_after: tuple[str, datetime], cron: str) -> None:
    zone, after = zone_after
    schedule, tz = parse_cron(cron), ZoneInfo(zone)
    got = next_instant(schedule, tz, after)
    assert got == reference_next_instant(schedule, tz, after)
    assert got is not None and got > after


def test_every_second_across_a_two_hour_shift_is_answered_at_once() -> None:
    # Antarctica/Troll moves between UTC+0 and UTC+2; the reference scans 7,200 walls each way.
    tz, schedule = ZoneInfo("Antarctica/Troll"), parse_cron("* * * * * *")
    after = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    fires = [after]
    for _ in range(5):
        following = next_instant(schedule, tz, fires[-1])
        assert following is not None
        fires.append(following)
    assert [b - a for a, b in pairwise(fires)] == [timedelta(seconds=1)] * 5


def test_to_instant_reads_the_first_of_a_repeated_time_and_the_jump_for_a_skipped_one() -> None:
    ny = ZoneInfo("America/New_York")
    assert to_instant(datetime(2026, 11, 1, 1, 30), ny) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert to_instant(datetime(2026, 3, 8, 2, 30), ny) == datetime(2026, 3, 8, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "after"),
    [
        ("* * 1 * * *", "America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC)),  # inside the repeat
        ("* * 1 * * *", "Europe/Dublin", datetime(2026, 10, 25, 1, tzinfo=UTC)),  # negative DST
        ("* * 1,2 * * *", "Antarctica/Troll", datetime(2026, 10, 25, 1, 0, 1, tzinfo=UTC)),
    ],
)
def test_a_dense_first_reading_schedule_passes_a_repeated_stretch_in_one_step(
    cron: str, zone: str, after: datetime
) -> None:
    schedule, tz = parse_cron(cron), ZoneInfo(zone)
    assert next_instant(schedule, tz, after) == reference_next_instant(schedule, tz, after)
