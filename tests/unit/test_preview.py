"""`reminderd preview`: the next fire times, read by a script through --json. No database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reminderd.cli import main
from reminderd.exceptions import EX_USAGE


def preview_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["preview", *args, "--json"]) == 0
    parsed: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return parsed


def test_cron_in_a_timezone_lists_utc_and_local(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(
        capsys, "--cron", "0 9 * * MON", "--tz", "Asia/Kolkata", "--from", "2026-11-23T00:00:00Z", "-n", "2"
    )
    assert got == [
        {"utc": "2026-11-23T03:30:00Z", "local": "2026-11-23T09:00:00+05:30"},
        {"utc": "2026-11-30T03:30:00Z", "local": "2026-11-30T09:00:00+05:30"},
    ]


def test_spring_forward_fires_at_the_jump(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(capsys, "--cron", "30 2 * * *", "--tz", "America/New_York",
                       "--from", "2026-03-07T12:00:00Z", "-n", "2")
    assert [g["local"] for g in got] == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]


def test_holidays_are_listed_as_skipped_with_their_name(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(capsys, "--every", "weekdays at 9am", "--tz", "Europe/London", "--calendar", "GB",
                       "--from", "2026-12-24T00:00:00Z", "-n", "2")
    assert got == [
        {"utc": "2026-12-24T09:00:00Z", "local": "2026-12-24T09:00:00+00:00"},
        {"utc": "2026-12-25T09:00:00Z", "local": "2026-12-25T09:00:00+00:00", "skipped": True,
         "reason": "holiday: Christmas Day (GB)"},
        {"utc": "2026-12-28T09:00:00Z", "local": "2026-12-28T09:00:00+00:00", "skipped": True,
         "reason": "holiday: Boxing Day (observed) (GB)"},
        {"utc": "2026-12-29T09:00:00Z", "local": "2026-12-29T09:00:00+00:00"},
    ]


def test_quiet_hours_defer_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(capsys, "--cron", "0 22 * * *", "--tz", "Europe/London", "--quiet", "21:00-09:00",
                       "--from", "2026-06-01T00:00:00Z", "-n", "1")
    assert got == [{
        "utc": "2026-06-02T08:00:00Z", "local": "2026-06-02T09:00:00+01:00", "deferred": True,
        "reason": "deferred from 22:00 to 09:00 Europe/London (quiet hours 21:00-09:00)",
    }]


def test_rrule_with_exdate(capsys: pytest.CaptureFixture[str]) -> None:
    rule = "RRULE:FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0\\nEXDATE:20270104T090000"
    got = preview_json(capsys, "--rrule", rule, "--tz", "UTC", "--from", "2026-12-01T00:00:00Z", "-n", "2")
    assert [g["utc"] for g in got] == ["2026-12-07T09:00:00Z", "2027-02-01T09:00:00Z"]


def test_six_field_cron_with_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(capsys, "--cron", "*/20 * * * * *", "--from", "2026-01-01T00:00:00Z", "-n", "3")
    assert [g["utc"] for g in got] == ["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"]


def test_text_output_describes_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--every", "every monday at 9am", "--tz", "Europe/London",
                 "--from", "2026-11-23T00:00:00Z", "-n", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '"every monday at 9am" = cron "0 9 * * 1": At 09:00, only on Monday'
    assert out[1] == "next 1 fires after 2026-11-23 00:00:00 GMT (Europe/London):"
    assert out[2] == "  Mon 2026-11-23 09:00:00 GMT   2026-11-23T09:00:00Z"


def test_rrule_text_output_uses_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--rrule", "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0", "--from",
                 "2026-11-23T00:00:00Z", "-n", "1"]) == 0
    assert capsys.readouterr().out.startswith("monthly on the first Monday at 09:00\n")


def test_from_without_an_offset_is_read_in_tz(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(
        capsys, "--cron", "0 9 * * *", "--tz", "Asia/Kathmandu", "--from", "2026-01-01T08:00", "-n", "1"
    )
    assert got == [{"utc": "2026-01-01T03:15:00Z", "local": "2026-01-01T09:00:00+05:45"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], 'invalid cron "61 * * * *"'),
        (["--every", "now and then"], 'cannot read the schedule "now and then"; phrases like these work: '),
        (["--rrule", "FREQ=SOMETIMES"], "invalid RRULE"),
        (["--cron", "0 9 * * *", "--tz", "Mars/Base"], '--tz: unknown timezone "Mars/Base"'),
        (["--cron", "0 9 * * *", "--calendar", "XX"], '--calendar: unknown holiday calendar "XX"'),
        (["--cron", "0 9 * * *", "--quiet", "9pm-9am"], '--quiet: invalid quiet hours "9pm-9am"'),
        (["--cron", "0 9 * * *", "--from", "tomorrow"], "--from 'tomorrow' is not ISO-8601"),
        (["--cron", "0 9 * * *", "-n", "0"], "-n 0: must be at least 1"),
        (["--rrule", "FREQ=DAILY;COUNT=3"], "an RRULE with COUNT needs a DTSTART"),
        # Off the calendar: what to change is named, the start or the count.
        (["--cron", "0 9 * * *", "--from", "9999-12-31T23:00:00Z"],
         "the next 10 fires run past the year 9999: none falls before it ends; start earlier (--from)"),
        (["--cron", "0 9 * * *", "--from", "9999-12-29T00:00:00Z", "-n", "5"],
         "the next 5 fires run past the year 9999: only 3 fall before it ends; ask for 3 or fewer (-n)"),
        (["--cron", "* * * * *", "--tz", "America/New_York", "--from", "0001-01-01T00:30:00Z"],
         "the next 10 fires fall before the year 1 on the clock of America/New_York: start later (--from)"),
    ],
)
def test_bad_input_gets_one_clear_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["preview", *args]) == EX_USAGE
    err = capsys.readouterr().err
    assert err.startswith("reminderd: error: ") and message in err and err.count("\n") == 1


def test_occurrences_in_quiet_hours_are_shown_going_out_once(capsys: pytest.CaptureFixture[str]) -> None:
    got = preview_json(
        capsys, "--cron", "0 * * * *", "--quiet", "21:00-09:00", "--from", "2026-06-10T20:30:00Z", "-n", "2"
    )
    assert got == [
        {"utc": "2026-06-11T09:00:00Z", "local": "2026-06-11T09:00:00+00:00", "deferred": True,
         "reason": "deferred from 21:00 to 09:00 UTC (quiet hours 21:00-09:00); its 13 occurrences up to then "
                   "are sent once, as 2026-06-11 09:00 UTC"},
        {"utc": "2026-06-11T10:00:00Z", "local": "2026-06-11T10:00:00+00:00"},
    ]
