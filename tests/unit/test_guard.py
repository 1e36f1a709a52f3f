"""Unit tests for reminderd.guard: a bug costs the row, never the daemon."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reminderd.guard import contain, describe


def explode(row: int, *, why: str) -> str:
    raise ZeroDivisionError(f"{why} in row {row}\nsecond line")


def test_a_step_that_works_returns_its_value_untouched() -> None:
    with capture_logs() as logs:
        assert contain("decide", 7, lambda reason: f"instead: {reason}", str.upper, "fine") == "FINE"
    assert logs == []


def test_a_crash_becomes_the_rows_outcome_and_is_logged_with_its_traceback() -> None:
    with capture_logs() as logs:
        got = contain("plan", 7, lambda reason: f"dead: {reason}", explode, 7, why="a bug")
    assert got == "dead: internal error while planning: ZeroDivisionError: a bug in row 7"
    assert [(line["event"], line["log_level"], line["message_id"]) for line in logs] == [
        ("plan_crashed", "error", 7),
    ]
    assert logs[0]["exc_info"] is True


@pytest.mark.parametrize(
    ("step", "doing"),
    [("timing", "while timing"), ("send", "while sending"), ("decide", "after the attempt"),
     ("plan", "while planning")],
)
def test_each_step_names_itself_in_the_reason(step: str, doing: str) -> None:
    with capture_logs():
        reason = contain(step, 1, lambda reason: reason, explode, 1, why="x")
    assert reason.startswith(f"internal error {doing}: ZeroDivisionError")


def test_an_interrupt_is_not_contained() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        contain("decide", 1, lambda reason: None, interrupted)


def test_describe_keeps_one_line_and_the_type() -> None:
    assert describe(ValueError("bad\nmore")) == "ValueError: bad"
    assert describe(TimeoutError()) == "TimeoutError"
