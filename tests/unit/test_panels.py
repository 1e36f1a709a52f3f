"""reminderd.panels: what the dashboard's pages compute, without a database or a clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from reminderd.lifecycle import Status
from reminderd.panels import (
    LATENESS_BOUNDS_MS,
    Quantile,
    chart,
    duration_words,
    holiday_spans,
    lateness,
    next_fires,
    prefix_range,
    quantile,
    quiet_spans,
    schedule_words,
    share,
    slot_start,
    why,
)
from reminderd.schedule import Holidays, QuietHours, Timing

LONDON = ZoneInfo("Europe/London")
KOLKATA = ZoneInfo("Asia/Kolkata")
NOW = datetime(2026, 12, 1, 10, 17, 30, tzinfo=UTC)


def bucket_of(ms: float) -> int:
    """The bucket reminderd.count_fires() puts a lateness in (width_bucket)."""
    return sum(1 for bound in LATENESS_BOUNDS_MS if ms >= bound)


# Percentiles from bucket counts ----------------------------------------------------------------------


def test_nothing_counted_has_no_percentile() -> None:
    assert quantile({}, 0.5) is None
    assert lateness({}).p99 is None and lateness({}).delivered == 0


def test_a_percentile_is_interpolated_within_its_bucket() -> None:
    ten_to_25 = bucket_of(10)
    assert LATENESS_BOUNDS_MS[ten_to_25 - 1] == 10 and LATENESS_BOUNDS_MS[ten_to_25] == 25
    # 100 attempts in [10, 25) ms: the median lies halfway through the bucket, p99 near its top.
    counts = {ten_to_25: 100}
    assert quantile(counts, 0.5) == Quantile(17.5)
    p99 = quantile(counts, 0.99)
    assert p99 is not None and p99.ms == pytest.approx(24.85)
    # 98 fast ones and two very late: the median stays fast, p99 lands in the late ones' bucket.
    late = bucket_of(120_000)
    mixed = lateness({bucket_of(0.5): 98, late: 2})
    assert mixed.delivered == 100 and mixed.p50 is not None and mixed.p50.ms < 1
    assert mixed.p99 is not None and LATENESS_BOUNDS_MS[late - 1] <= mixed.p99.ms <= LATENESS_BOUNDS_MS[late]


def test_a_percentile_in_the_open_last_bucket_is_a_lower_bound() -> None:
    beyond = len(LATENESS_BOUNDS_MS)
    assert bucket_of(2 * 3_600_000) == beyond
    assert quantile({beyond: 3}, 0.99) == Quantile(LATENESS_BOUNDS_MS[-1], at_least=True)


def test_share_is_a_percentage_of_a_whole_or_nothing() -> None:
    assert share(1, 4) == 25.0
    assert share(0, 0) is None


# Ref prefixes ---------------------------------------------------------------------------------------


def test_a_prefix_range_holds_every_ref_starting_with_it_and_nothing_else() -> None:
    low, high = prefix_range("booking:b7d2")
    assert (low, high) == ("booking:b7d2", "booking:b7d3")
    inside = ["booking:b7d2", "booking:b7d2:24h", "booking:b7d2\U0010ffff"]
    outside = ["booking:b7d1:x", "booking:b7d3", "booking:b7d"]
    encoded = [s.encode() for s in inside + outside]
    assert all(low.encode() <= e < high.encode() for e in encoded[: len(inside)])
    assert not any(low.encode() <= e < high.encode() for e in encoded[len(inside):])


def test_prefix_ranges_step_over_what_utf8_cannot_encode_and_the_last_character() -> None:
    assert prefix_range("a\ud7ff")[1] == "a\ue000"
    assert prefix_range("ab\U0010ffff")[1] == "ac"
    for nothing in ("", "\U0010ffff"):
        with pytest.raises(ValueError):
            prefix_range(nothing)


# The histogram --------------------------------------------------------------------------------------


def test_slots_start_on_the_clock_of_the_chosen_timezone() -> None:
    assert slot_start(NOW, "hour", ZoneInfo("UTC")) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert slot_start(NOW, "hour", KOLKATA) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)  # 15:47 IST -> 15:00
    assert slot_start(NOW, "minute", LONDON) == datetime(2026, 12, 1, 10, 17, tzinfo=UTC)
    with pytest.raises(ValueError, match="hour or minute"):
        slot_start(NOW, "day", LONDON)


def test_every_slot_is_a_bar_scaled_to_the_busiest_and_counts_outside_are_left_out() -> None:
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    hour = timedelta(hours=1)
    drawn = chart([(start, 4), (start + 2 * hour, 8), (start - hour, 100), (start + 48 * hour, 100)],
                  start=start, step=hour, slots=48, tz=LONDON)
    assert len(drawn.bars) == 48 and drawn.total == 12 and drawn.peak == 8
    assert [b.messages for b in drawn.bars[:3]] == [4, 0, 8]
    assert drawn.bars[2].height == pytest.approx(2 * drawn.bars[0].height) and drawn.bars[1].height == 0
    assert drawn.bars[1].starts_at == start + hour and drawn.bars[1].ends_at == start + 2 * hour
    assert drawn.bars[47].x + drawn.bars[47].width <= drawn.width
    assert [t.label for t in drawn.ticks[:5]] == ["Tue 10:00", "16:00", "22:00", "Wed 04:00", "10:00"]
    assert len(drawn.ticks) == 8
    assert [t.major for t in drawn.ticks[:3]] == [True, False, True]


def test_an_empty_chart_has_flat_bars() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    drawn = chart([], start=start, step=timedelta(minutes=1), slots=60, tz=LONDON, tick_every=10)
    assert drawn.peak == 0 and {b.height for b in drawn.bars} == {0.0} and len(drawn.ticks) == 6


def test_shaded_spans_are_clipped_to_the_chart() -> None:
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    end = start + timedelta(hours=48)
    spans = quiet_spans(QuietHours(time(21), time(7)), LONDON, start, end)
    drawn = chart([], start=start, step=timedelta(hours=1), slots=48, tz=LONDON, spans=spans)
    assert [(s.starts_at, s.ends_at) for s in drawn.spans] == [
        (datetime(2026, 12, 1, 21, tzinfo=UTC), datetime(2026, 12, 2, 7, tzinfo=UTC)),
        (datetime(2026, 12, 2, 21, tzinfo=UTC), datetime(2026, 12, 3, 7, tzinfo=UTC)),
    ]
    first = drawn.spans[0]
    assert first.x == pytest.approx(drawn.width * 11 / 48)
    assert first.width == pytest.approx(drawn.width * 10 / 48)
    # A window already running when the chart starts is cut at its start.
    morning = quiet_spans(QuietHours(time(6), time(11)), LONDON, start, end)
    assert morning[0][0] == datetime(2026, 12, 1, 6, tzinfo=UTC)
    clipped = chart([], start=start, step=timedelta(hours=1), slots=48, tz=LONDON, spans=morning)
    assert clipped.spans[0].starts_at == start and clipped.spans[0].x == 0


def test_quiet_hours_are_read_on_the_clock_across_a_clock_change() -> None:
    # London leaves summer time on 25 October 2026: 21:00-07:00 is 20:00Z-07:00Z that night.
    start = datetime(2026, 10, 25, 5, tzinfo=UTC)
    spans = quiet_spans(QuietHours(time(21), time(7)), LONDON, start, start + timedelta(hours=48))
    assert spans[0][:2] == (datetime(2026, 10, 24, 20, tzinfo=UTC), datetime(2026, 10, 25, 7, tzinfo=UTC))
    assert spans[1][:2] == (datetime(2026, 10, 25, 21, tzinfo=UTC), datetime(2026, 10, 26, 7, tzinfo=UTC))


def test_holidays_are_whole_local_days_with_their_names() -> None:
    start = datetime(2026, 12, 24, 12, tzinfo=UTC)
    end = start + timedelta(hours=48)
    spans = holiday_spans(Holidays.of("GB", [(date(2026, 12, 24), "Office closed")]), KOLKATA, start, end)
    assert [(s[0].astimezone(KOLKATA).date(), s[2]) for s in spans] == [
        (date(2026, 12, 24), "Office closed"), (date(2026, 12, 25), "Christmas Day (GB)"),
        (date(2026, 12, 26), "Boxing Day (GB)"),
    ]
    assert spans[1][1] - spans[1][0] == timedelta(days=1)
    assert holiday_spans(Holidays.of("XX"), KOLKATA, start, end) == []  # unknown: nothing shaded


# One message ----------------------------------------------------------------------------------------


def test_a_schedule_in_words() -> None:
    assert schedule_words(Timing()) == "once"
    assert schedule_words(Timing(cron="0 9 * * 1-5", timezone="Europe/London")) == (
        'cron "0 9 * * 1-5": At 09:00, Monday through Friday')
    until = datetime(2027, 1, 1, tzinfo=UTC)
    assert schedule_words(Timing(cron="0 9 * * *", until=until, max_runs=12, runs=3)).endswith(
        "; until 2027-01-01T00:00:00Z, at most 12 runs (3 so far)")
    words = schedule_words(Timing(rrule="DTSTART:20261201T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO", timezone="UTC"))
    assert "Monday" in words
    assert schedule_words(Timing(cron="61 * * * *")).startswith("a schedule that cannot be read")


def test_next_fires_of_a_recurring_row_start_at_its_planned_fire_at() -> None:
    timing = Timing(cron="0 9 * * *", timezone="Europe/London")
    planned = datetime(2026, 12, 2, 9, tzinfo=UTC)
    fires = next_fires(timing, planned, NOW, count=3)
    assert [f.utc for f in fires] == [planned + timedelta(days=d) for d in range(3)]


def test_next_fires_of_a_recurring_row_pass_over_holidays_and_defer_quiet_hours() -> None:
    timing = Timing(cron="0 9 * * *", timezone="Europe/London", holidays=Holidays.of("GB"),
                    quiet=QuietHours(time(8), time(10)))
    fires = next_fires(timing, datetime(2026, 12, 24, 9, tzinfo=UTC), NOW, count=2)
    assert fires[0].deferred and fires[0].utc == datetime(2026, 12, 24, 10, tzinfo=UTC)
    assert fires[1].skipped and "Christmas" in (fires[1].reason or "")


def test_the_next_fire_of_a_one_off_is_moved_off_a_holiday_or_out_of_quiet_hours() -> None:
    christmas = datetime(2026, 12, 25, 9, tzinfo=UTC)
    moved = next_fires(Timing(timezone="Europe/London", holidays=Holidays.of("GB")), christmas, NOW)
    assert [f.utc for f in moved] == [datetime(2026, 12, 27, 9, tzinfo=UTC)]  # past Boxing Day (a Saturday)
    assert "Christmas Day" in (moved[0].reason or "")
    night = datetime(2026, 12, 1, 23, tzinfo=UTC)
    deferred = next_fires(Timing(quiet=QuietHours(time(21), time(7))), night, NOW)
    assert deferred[0].deferred and deferred[0].utc == datetime(2026, 12, 2, 7, tzinfo=UTC)
    assert next_fires(Timing(), None, NOW) == []
    plain = next_fires(Timing(timezone="Asia/Kolkata"), NOW, NOW)
    assert plain[0].utc == NOW and plain[0].local.utcoffset() == timedelta(hours=5, minutes=30)


def _why(status: Status, **changes: object) -> str:
    values: dict[str, object] = dict(
        fire_at=None, scheduled_for=None, attempts=0, max_attempts=None, last_error=None, picked_at=None,
        lease_expires_at=None, sent_at=None, paused_by=None, tenant_paused=False, now=NOW)
    values.update(changes)
    return why(status, **values)  # type: ignore[arg-type]  # the keyword types are why()'s own


def test_why_a_message_is_where_it_is() -> None:
    later, earlier = NOW + timedelta(hours=3), NOW - timedelta(minutes=4)
    assert _why(Status.PENDING, fire_at=later) == "Waiting: due at 2026-12-01T13:17:30Z (in 3 h)."
    assert "not claimed yet: is a daemon running" in _why(Status.PENDING, fire_at=earlier)
    retrying = _why(Status.PENDING, fire_at=later, scheduled_for=earlier, attempts=2, max_attempts=5,
                    last_error="attempt 2 failed: HTTP 503")
    assert retrying.startswith("Retrying the occurrence of 2026-12-01T10:13:30Z") and "of 5" in retrying
    assert "HTTP 503" in retrying
    assert "first occurrence" in _why(Status.PENDING)
    assert "its tenant is paused" in _why(Status.PAUSED, paused_by="tenant")
    assert "it was paused" in _why(Status.PAUSED, paused_by="message")
    assert _why(Status.DEAD, attempts=1, last_error="HTTP 410") == (
        "Dead-lettered after 1 attempt: HTTP 410. Requeue it to try again.")
    assert _why(Status.SENT, sent_at=earlier, attempts=1) == (
        "Delivered at 2026-12-01T10:13:30Z (4 min ago) (attempt 1).")
    assert "In flight" in _why(Status.PICKED, picked_at=earlier, lease_expires_at=later, attempts=1)
    assert _why(Status.EXPIRED, last_error="missed") == "Expired, never sent: missed."
    assert "awaits a second person's approval" in _why(Status.AWAITING_APPROVAL)


def test_durations_in_words() -> None:
    assert [duration_words(s) for s in (0, 59, 61, 600, 3600, 3660, 90000)] == [
        "0 s", "59 s", "1 min 1 s", "10 min", "1 h", "1 h 1 min", "1 d 1 h"]
