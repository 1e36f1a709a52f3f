"""The live feed's cursor over the trail's two tables, and the order it sends fires in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reminderd.dashboard_rows import FEED_START, FeedCursor, FeedEntry
from reminderd.feed import oldest_first

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def fire(*, event_id: int | None = None, delivery_id: int | None = None, second: float = 0) -> FeedEntry:
    return FeedEntry(event_id, delivery_id, T0 + timedelta(seconds=second), 1, "acme", "r", "fired", "sent",
                     None, None)


def test_a_cursor_moves_past_each_tables_fires_on_its_own() -> None:
    cursor = FEED_START.past(fire(event_id=7)).past(fire(delivery_id=3))
    assert cursor == FeedCursor(7, 3)
    assert cursor.past(fire(event_id=5)) == cursor  # behind it already: stays
    assert cursor.past(fire(delivery_id=9)) == FeedCursor(7, 9)


def test_a_cursor_reads_as_it_is_written_and_nothing_else() -> None:
    assert str(FeedCursor(1042, 977)) == "1042.977"
    assert FeedCursor.parse("1042.977") == FeedCursor(1042, 977)
    assert FeedCursor.parse(str(FEED_START)) == FEED_START
    for bad in ("", "1042", "1042.", ".977", "1.2.3", "-1.2", "1 .2", "\u0661.\u0662", "9" * 19 + ".0"):
        assert FeedCursor.parse(bad) is None, bad


def test_keys_tell_the_tables_apart() -> None:
    assert fire(event_id=5).key == "e5" and fire(delivery_id=5).key == "d5"


def test_fires_are_sent_in_each_tables_order_merged_by_time() -> None:
    # Ids of one table out of time order (two transactions committing in the other order) keep
    # their table's order, so a cursor past one has had every earlier one of that table.
    entries = [fire(delivery_id=11, second=3), fire(event_id=4, second=2), fire(delivery_id=10, second=4),
               fire(event_id=5, second=1)]
    assert [e.key for e in oldest_first(entries)] == ["e4", "e5", "d10", "d11"]
    assert [e.key for e in oldest_first([fire(delivery_id=2, second=2), fire(event_id=9, second=1)])] == [
        "e9", "d2"]
