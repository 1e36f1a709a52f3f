"""Unit tests for the command line's input parsing and its exit codes on bad input (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reminderd.arguments import UsageError, parse_duration, parse_instant, parse_payload
from reminderd.cli import EX_CONFIG, EX_USAGE, main
from reminderd.exceptions import ConfigError, DatabaseUnavailable
from reminderd.store import Store

# parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (" 2H ", timedelta(hours=2)),
        ("1h 30m", timedelta(minutes=90)),
        ("0h5m", timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "5x", "90", "1h30", "1.5h", "-5m", "5m-", "h", "soon", "5 minutes"]
)
def test_parse_duration_rejects_malformed_text(text: str) -> None:
    with pytest.raises(UsageError, match=r"use a duration such as 90s, 15m, 2h, 3d or 1h30m") as raised:
        parse_duration(text)
    assert str(raised.value).startswith(f"--in {text!r}")


@pytest.mark.parametrize("text", ["0s", "0m0s", "00h"])
def test_parse_duration_rejects_zero(text: str) -> None:
    with pytest.raises(UsageError, match="the delay must be positive"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1000000000d", "99999999999999999999999s"])
def test_parse_duration_reports_an_absurd_delay_as_usage_error(text: str) -> None:
    try:
        parse_duration(text)
    except UsageError:
        pass
    except OverflowError as exc:
        raise AssertionError(
            f"BUG: parse_duration({text!r}) raises OverflowError ({exc}), so the CLI dies with a traceback "
            "instead of one line and exit status 2"
        ) from None
    else:
        raise AssertionError(f"parse_duration({text!r}) accepted a delay beyond any representable date")


# parse_instant


@pytest.mark.parametrize(
    ("text", "tz_name", "expected"),
    [
        ("2026-12-24T09:00:00Z", None, datetime(2026, 12, 24, 9, 0, tzinfo=UTC)),
        ("2026-12-24T09:00:00+05:30", None, datetime(2026, 12, 24, 3, 30, tzinfo=UTC)),
        ("2026-12-24T09:00:00-08:00", None, datetime(2026, 12, 24, 17, 0, tzinfo=UTC)),
        ("2026-12-24T09:00:00", "Asia/Kolkata", datetime(2026, 12, 24, 3, 30, tzinfo=UTC)),
        ("2026-07-01T09:00", "America/New_York", datetime(2026, 7, 1, 13, 0, tzinfo=UTC)),
        ("2026-12-24", "Asia/Kolkata", datetime(2026, 12, 23, 18, 30, tzinfo=UTC)),
        ("2026-12-24T09:00:00Z", "Asia/Kolkata", datetime(2026, 12, 24, 9, 0, tzinfo=UTC)),  # offset wins
        (" 2026-12-24T09:00:00Z ", None, datetime(2026, 12, 24, 9, 0, tzinfo=UTC)),
    ],
)
def test_parse_instant_returns_utc(text: str, tz_name: str | None, expected: datetime) -> None:
    parsed = parse_instant(text, tz_name)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_instant_without_offset_or_tz_asks_for_an_offset() -> None:
    with pytest.raises(UsageError, match=r"has no UTC offset: add one \(Z, \+05:30\) or say --tz"):
        parse_instant("2026-12-24T09:00:00", None)


@pytest.mark.parametrize("text", ["tomorrow", "24/12/2026 09:00", "2026-13-01T00:00:00Z", ""])
def test_parse_instant_rejects_non_iso_text(text: str) -> None:
    with pytest.raises(UsageError, match=r"is not ISO-8601, e\.g\. 2026-12-24T09:00:00Z"):
        parse_instant(text, "UTC")


def test_parse_instant_with_unknown_tz_names_it() -> None:
    with pytest.raises(UsageError, match='--at: unknown timezone "Mars/Olympus_Mons"'):
        parse_instant("2026-12-24T09:00:00", "Mars/Olympus_Mons")


# parse_payload


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ('{"a": [1, "é"], "b": {"c": null}}', {"a": [1, "é"], "b": {"c": None}}),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('"text"', "text"),
    ],
)
def test_parse_payload_accepts_any_json(text: str | None, expected: Any) -> None:
    assert parse_payload(text) == expected


@pytest.mark.parametrize(("text", "position"), [("{bad", 1), ("", 0), ('{"a": 1,}', 8), ("{'a': 1}", 1)])
def test_parse_payload_rejects_invalid_json_saying_where(text: str, position: int) -> None:
    with pytest.raises(UsageError, match=rf"^--payload is not valid JSON: .* at character {position}$"):
        parse_payload(text)


# main(): bad input is one line on stderr and exit status 2, without touching the database


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Database URL set (pointing nowhere); Store.connect records the attempt and fails like a dead server."""
    monkeypatch.setenv("REMINDERD_DATABASE_URL", "postgresql://x@127.0.0.1:1/x")
    monkeypatch.delenv("REMINDERD_DATABASE_URL_FILE", raising=False)
    attempts: list[str] = []

    async def refuse(url: str, *args: Any, **kwargs: Any) -> Store:
        attempts.append(url)
        raise DatabaseUnavailable("ConnectionRefusedError: [Errno 111] Connection refused (test double)")

    monkeypatch.setattr(Store, "connect", refuse)
    return attempts


def one_line(text: str) -> str:
    lines = text.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "t", "r"],
        ["schedule", "t"],
        ["schedule", "t", "r", "--at", "2026-12-24T09:00:00Z", "--in", "5m"],
        ["schedule", "t", "r", "--in", "5m", "--cron", "* * * * *"],
        ["tenant", "add", "acme"],
        ["tenant"],
        ["cancel", "t"],
        ["frobnicate"],
        [],
        ["--no-such-flag", "status"],
    ],
)
def test_argument_errors_exit_2_with_one_line(
    argv: list[str], connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EX_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert line.startswith("reminderd") and "error:" in line and line.endswith("(see --help)")
    assert connections == []


def test_schedule_without_when_names_the_choices(
    connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["schedule", "t", "r"])
    assert "one of the arguments --at --in --cron --every --rrule is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["schedule", "t", "r", "--in", "5x"], "--in '5x'"),
        (["schedule", "t", "r", "--in", "0s"], "the delay must be positive"),
        (["schedule", "t", "r", "--at", "tomorrow"], "is not ISO-8601"),
        (["schedule", "t", "r", "--at", "2026-12-24T09:00:00"], "has no UTC offset"),
        (
            ["schedule", "t", "r", "--at", "2026-12-24T09:00:00", "--tz", "Mars/Olympus_Mons"],
            "unknown timezone",
        ),
        (["schedule", "t", "r", "--cron", "61 * * * *"], 'invalid cron "61 * * * *"'),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--tz", "Mars/Olympus_Mons"], "unknown timezone"),
        (["schedule", "t", "r", "--in", "5m", "--payload", "{bad"], "--payload is not valid JSON"),
        (["schedule", "t", "r", "--every", "whenever"], 'cannot read the schedule "whenever"'),
        (["schedule", "t", "r", "--every", "every 7 minutes"], "must divide 60 evenly"),
        (["schedule", "t", "r", "--rrule", "FREQ=DAILY;BYDAYS=MO"], "BYDAYS"),
        (["schedule", "t", "r", "--in", "5m", "--max-runs", "3"], "--until and --max-runs end a recurring"),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--max-runs", "0"], "--max-runs 0: must be at least 1"),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--until", "soon"], "--until 'soon' is not ISO-8601"),
        (["schedule", "t", "r", "--in", "5m", "--calendar", "ZZ"], 'unknown holiday calendar "ZZ"'),
        (["schedule", "t", "r", "--in", "5m", "--category", "Marketing!"], "--category 'Marketing!'"),
        (["schedule", "t", "r", "--in", "5m", "--max-lateness", "soon"], "--max-lateness 'soon'"),
        (["tenant", "set", "t", "--quiet", "21-09"], '--quiet: invalid quiet hours "21-09"'),
        (["tenant", "set", "t", "--calendar", "US-ZZ"], "US has no subdivision ZZ"),
        (["tenant", "holiday", "add", "t", "31/12/2026"], "'31/12/2026' is not a date like 2026-12-31"),
    ],
    ids=["in-5x", "in-0s", "at-words", "at-naive", "at-bad-tz", "cron-61", "cron-bad-tz", "payload",
         "every-unknown", "every-7-minutes", "rrule-part", "max-runs-one-off", "max-runs-0", "until-words",
         "calendar", "category", "max-lateness", "tenant-quiet", "tenant-calendar", "holiday-date"],
)
def test_bad_schedule_values_exit_2_before_connecting(
    argv: list[str], complaint: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(argv)
    err = capsys.readouterr().err
    assert connections == [], (
        f"BUG: cli.main connected to the database before validating {argv[3:]} "
        f"(exit {status}, stderr {err.strip()!r}); a typo is reported as an unreachable database"
    )
    assert status == EX_USAGE
    line = one_line(err)
    assert line.startswith("reminderd: error: ")
    assert complaint in line


def test_a_local_wall_time_in_a_gap_is_the_jump_and_a_repeated_one_the_first() -> None:
    assert parse_instant("2026-03-08T02:30", "America/New_York") == datetime(2026, 3, 8, 7, tzinfo=UTC)
    assert parse_instant("2026-11-01T01:30", "America/New_York") == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert parse_instant("2026-12-24 09:00", "Asia/Kolkata") == datetime(2026, 12, 24, 3, 30, tzinfo=UTC)
    assert parse_instant("2026-12-24 09:00 in Asia/Kolkata", None) == datetime(2026, 12, 24, 3, 30, tzinfo=UTC)
    with pytest.raises(UsageError, match="names Asia/Kolkata, but --tz says Europe/London"):
        parse_instant("2026-12-24 09:00 in Asia/Kolkata", "Europe/London")
    with pytest.raises(UsageError, match='--at: unknown timezone "Mars/Base"'):
        parse_instant("2026-12-24 09:00 in Mars/Base", None)


def test_valid_schedule_does_reach_for_the_database(
    connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Proves the test double above is what main() calls: good input gets as far as connecting.
    status = main(["schedule", "t", "r", "--in", "5m", "--payload", '{"a": 1}'])
    assert connections == ["postgresql://x@127.0.0.1:1/x"]
    assert status == 1
    assert one_line(capsys.readouterr().err).startswith("reminderd: cannot reach the database: ")


def test_missing_database_url_is_a_config_error_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REMINDERD_DATABASE_URL", raising=False)
    monkeypatch.delenv("REMINDERD_DATABASE_URL_FILE", raising=False)
    assert main(["status"]) == EX_CONFIG
    line = one_line(capsys.readouterr().err)
    assert line.startswith("reminderd: configuration error: REMINDERD_DATABASE_URL is required")


def test_database_url_flag_overrides_the_environment(
    connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--database-url", "postgresql://flag@127.0.0.1:2/y", "cancel", "t", "r"])
    assert connections == ["postgresql://flag@127.0.0.1:2/y"]
    capsys.readouterr()


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("reminderd ")


def test_a_database_url_waiting_cannot_fix_is_a_config_error_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMINDERD_DATABASE_URL", "postgresql://x@127.0.0.1:1/x")
    monkeypatch.delenv("REMINDERD_DATABASE_URL_FILE", raising=False)

    async def misconfigured(url: str, *args: Any, **kwargs: Any) -> Store:
        raise ConfigError('REMINDERD_DATABASE_URL: database "x" does not exist')

    monkeypatch.setattr(Store, "connect", misconfigured)
    assert main(["status"]) == EX_CONFIG
    assert one_line(capsys.readouterr().err) == (
        'reminderd: configuration error: REMINDERD_DATABASE_URL: database "x" does not exist'
    )
