"""Unit tests for the command line's input parsing and its exit codes on bad input (no database)."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from reminderd import validation
from reminderd.arguments import (
    CancelRequest,
    EnableEndpointRequest,
    EndpointSetRequest,
    HolidayRequest,
    ScheduleRequest,
    TenantSetRequest,
    UsageError,
    UsageRequest,
    parse_duration,
    parse_instant,
    parse_payload,
)
from reminderd.cli import build_parser, main
from reminderd.contact_files import checked_contact
from reminderd.exceptions import EX_CONFIG, EX_USAGE, ConfigError, DatabaseUnavailable, InvalidInput
from reminderd.schedule import QuietHours
from reminderd.settings import Settings
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
        # Durations are read one way everywhere (issue 10): a bare number is seconds, as in
        # REMINDERD_LEASE=300; "90" was refused here before.
        ("90", timedelta(seconds=90)),
        ("1.5s", timedelta(seconds=1.5)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "5x", "1h30", "1.5h", "-5m", "5m-", "h", "soon", "5 minutes", "30m1h", "1e3", "nan"]
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
    # parse_payload keeps the JSON text as given (issue 10); it returned the decoded value before.
    assert json.loads(parse_payload(text)) == expected
    assert text is None or parse_payload(text) == text


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


MALFORMED_URLS = {  # a malformed URL, and what is wrong with it (its password: s3cr3t, or all of it)
    "scheme": ("mysql://app:s3cr3t@db/app", "<hidden>: must start with postgresql://"),
    "port": ("postgresql://app:s3cr3t@db:99999/app",
             "postgresql://app:***@db:99999/app: port '99999' is not a port number (1-65535)"),
    "slash in the password": ("postgresql://app:s3/cr3t@db/app", "postgresql://***@db/app: an @ comes after the"
                              " host: write a /, ? or # of the user name or password as %2F, %3F or %23 (and an"
                              " @ of the database name as %40)"),
    "hash in the password": ("postgresql://app:s3#cr3t@db/app", "postgresql://***@db/app: an @ comes after the"
                             " host: write a /, ? or # of the user name or password as %2F, %3F or %23 (and an"
                             " @ of the database name as %40)"),
}


@pytest.mark.parametrize("case", list(MALFORMED_URLS))
@pytest.mark.parametrize("command", [["status"], ["run"], ["cancel", "t", "r"]], ids=lambda argv: argv[0])
def test_a_malformed_url_is_named_as_the_user_gave_it(
    case: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given by --database-url it was reported as REMINDERD_DATABASE_URL (the variable the flag
    stood in for), from a _FILE as the variable itself; a password holding / or # was printed, as a
    'port'. Each names what the user set, exit 78, and no part of the password."""
    url, problem = MALFORMED_URLS[case]
    monkeypatch.setenv("REMINDERD_DATABASE_URL", "postgresql://env@127.0.0.1:1/env")
    monkeypatch.delenv("REMINDERD_DATABASE_URL_FILE", raising=False)
    monkeypatch.delenv("REMINDERD_CONFIG", raising=False)
    assert main(["--database-url", url, *command]) == EX_CONFIG
    assert capsys.readouterr().err == f"reminderd: configuration error: --database-url {problem}\n"
    assert main([*command, "--database-url", url]) == EX_CONFIG  # after the subcommand too
    assert capsys.readouterr().err == f"reminderd: configuration error: --database-url {problem}\n"
    monkeypatch.setenv("REMINDERD_DATABASE_URL", url)
    assert main(command) == EX_CONFIG
    assert capsys.readouterr().err == f"reminderd: configuration error: REMINDERD_DATABASE_URL={problem}\n"
    monkeypatch.delenv("REMINDERD_DATABASE_URL")
    (tmp_path / "url").write_text(url + "\n", encoding="utf-8")
    monkeypatch.setenv("REMINDERD_DATABASE_URL_FILE", str(tmp_path / "url"))
    assert main(command) == EX_CONFIG
    shown, _, why = problem.partition(": ")
    assert capsys.readouterr().err == (f"reminderd: configuration error: REMINDERD_DATABASE_URL={shown}"
                                       f" (from REMINDERD_DATABASE_URL_FILE={tmp_path / 'url'}): {why}\n")


def test_a_good_database_url_flag_is_taken_over_a_bad_variable(
    connections: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMINDERD_DATABASE_URL", "mysql://not@this/one")
    main(["--database-url", "postgresql://flag@127.0.0.1:2/y", "cancel", "t", "r"])
    assert connections == ["postgresql://flag@127.0.0.1:2/y"]
    capsys.readouterr()


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("reminderd ")


# Dispatch: every subcommand registers its handler and describes itself in one line


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    """Every (sub)subcommand's path and parser, depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append(((*path, name), child))
                found += subcommands(child, (*path, name))
    return found


ALL_COMMANDS = subcommands(build_parser())


def test_the_subcommands_are_the_documented_ones() -> None:
    assert {" ".join(path) for path, _ in ALL_COMMANDS} == {
        "migrate", "run", "status", "config", "demo", "schedule", "preview", "cancel", "tenant",
        "tenant add", "tenant list", "tenant grant", "tenant revoke", "tenant rotate-secret", "tenant set",
        "tenant holiday", "tenant enable-endpoint", "endpoint", "endpoint set", "endpoint list", "usage",
        "tenant rate-limit", "send-now", "serve", "api-key", "api-key create", "api-key list",
        "api-key revoke",
        "dev-db", "dev-db start", "dev-db url", "dev-db stop", "dev-db status", "dev-db delete",
        # Recipients (issue 14, docs/audiences.md)
        "contacts", "contacts import", "contacts remove", "contact", "contact show", "audience", "audience add",
        "audience remove", "audience drop", "audience list", "broadcast", "broadcasts", "broadcasts list",
        "broadcasts show", "broadcasts approve", "broadcasts reject", "broadcasts cancel", "cadence",
    }


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_subcommand_says_what_it_does_in_its_help(
    path: tuple[str, ...], command: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    description = command.description
    assert description and "\n" not in description and description.endswith(".")
    assert f"\n{description}\n" in shown.replace("\n\n", "\n")
    # and the parent's --help lists it with the same words
    with pytest.raises(SystemExit):
        main([*path[:-1], "--help"])
    parent_help = " ".join(capsys.readouterr().out.split())
    assert description.rstrip(".").lower() in parent_help.lower()


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_leaf_subcommand_registers_its_handler(path: tuple[str, ...], command: Any) -> None:
    has_children = any(isinstance(a, argparse._SubParsersAction) for a in command._actions)
    assert has_children or callable(command.get_default("handler")), f"{' '.join(path)} has no handler"


def test_handlers_get_typed_requests_not_the_namespace(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def record(command: Any, request: Any, settings: Any) -> int:
        seen.append(request)
        return 0

    monkeypatch.setattr("reminderd.cli._run", record)
    assert main(["tenant", "holiday", "add", "acme", "2026-12-31", "Company day"]) == 0
    assert main(["tenant", "set", "acme", "--quiet", "21:00-09:00", "--quiet-exempt", "otp, sms"]) == 0
    assert main(["schedule", "acme", "r", "--in", "5m"]) == 0
    assert main(["cancel", "acme", "r"]) == 0
    holiday, rules, schedule, cancel = seen
    assert holiday == HolidayRequest(add=True, tenant_id="acme", day=date(2026, 12, 31), name="Company day")
    assert rules == TenantSetRequest("acme", None, None, QuietHours(time(21), time(9)), ["otp", "sms"])
    assert isinstance(schedule, ScheduleRequest) and schedule.fire_at is not None
    assert cancel == CancelRequest("acme", "r")


# Durations: one parser for the environment, the TOML file and the command line


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "t", "r", "--in", "-5m"],
        ["schedule", "t", "r", "--in=-5m"],
        ["schedule", "t", "r", "--in", "-300"],
        ["schedule", "t", "r", "--cron", "0 9 * * *", "--max-lateness", "-1h"],
        ["tenant", "rotate-secret", "t", "--grace", "-1h"],
    ],
)
def test_a_negative_duration_is_refused_with_a_sentence(
    argv: list[str], connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EX_USAGE
    line = one_line(capsys.readouterr().err)
    assert line.startswith("reminderd: error: --") and "a duration cannot be negative" in line
    assert "expected one argument" not in line
    assert connections == []


def test_the_cli_and_the_settings_read_durations_alike(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("reminderd.cli._run", recording(seen))
    for text in ["300", "300s", "5m", "1h30m", "1.5s"]:
        assert main(["schedule", "t", "r", "--cron", "0 9 * * *", "--max-lateness", text]) == 0
        assert seen[-1].max_lateness_s == Settings.from_env(
            {"REMINDERD_DATABASE_URL": "postgresql://x@h/d", "REMINDERD_MAX_LATENESS": text}
        ).max_lateness_s


# Options after the subcommand; the environment checked before anything else


def test_database_url_and_config_are_accepted_after_the_subcommand(
    connections: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["cancel", "t", "r", "--database-url", "postgresql://after@127.0.0.1:3/z"])
    main(["tenant", "grant", "acme", "app", "--database-url", "postgresql://leaf@127.0.0.1:4/z"])
    assert connections == ["postgresql://after@127.0.0.1:3/z", "postgresql://leaf@127.0.0.1:4/z"]
    config = tmp_path / "reminderd.toml"
    config.write_text("concurrency = 16\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["config", "--config", str(config)]) == 0
    assert f"REMINDERD_CONCURRENCY=16  # config file {config}" in capsys.readouterr().out.splitlines()


def test_every_command_that_connects_reads_the_database_url_from_the_config_file(
    connections: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMINDERD_DATABASE_URL")
    config = tmp_path / "reminderd.toml"
    config.write_text('database_url = "postgresql://file@127.0.0.1:5/z"\nbatch_size = "ignored here"\n')
    main(["status", "--config", str(config)])
    assert connections == ["postgresql://file@127.0.0.1:5/z"]


@pytest.mark.parametrize("argv", [["status"], ["cancel", "t", "r"], ["config"], ["run"], ["migrate"]])
def test_a_misspelt_variable_stops_every_command_on_one_line(
    argv: list[str], connections: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMINDERD_ALLOWED_CALLBACK_NETWORK", "10.0.0.0/8")
    assert main(argv) == EX_CONFIG
    assert one_line(capsys.readouterr().err) == (
        "reminderd: configuration error: REMINDERD_ALLOWED_CALLBACK_NETWORK is not a reminderd setting; "
        "did you mean REMINDERD_ALLOWED_CALLBACK_NETWORKS?"
    )
    assert connections == []


# Payloads: checked as PostgreSQL's jsonb takes them, kept as written, before connecting

HUGE_INTEGER = "9" * 5000  # beyond Python's 4300-digit int-string limit


@pytest.mark.parametrize(
    "text",
    ['{"amount": 12345678901234567.5}', HUGE_INTEGER, "1e400", '{"id": 123456789012345678901234567890}',
     '"\\ud83d\\ude00 \\\\u0000"', '{"a": 1, "a": 2}', "[" * 500 + "]" * 500],
    ids=["decimal", "5000-digits", "1e400", "big-id", "escapes", "duplicate-key", "500-deep"],
)
def test_a_payload_is_kept_exactly_as_written(text: str) -> None:
    assert parse_payload(text) == text


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"amount": NaN}', "--payload is not valid JSON: NaN at character 11 "
                            "(JSON has no NaN or Infinity, and PostgreSQL refuses them)"),
        ("[1, Infinity]", "--payload is not valid JSON: Infinity at character 4 "
                          "(JSON has no NaN or Infinity, and PostgreSQL refuses them)"),
        ('{"t": -Infinity}', "--payload is not valid JSON: -Infinity at character 6 "
                             "(JSON has no NaN or Infinity, and PostgreSQL refuses them)"),
        ('{"n": 1e131072}', "--payload has a number too large for PostgreSQL at character 6: 1e131072 has "
                            "more than 131072 digits before the decimal point"),
        ("[0e1073741823]", "--payload has a number PostgreSQL cannot read at character 1: 0e1073741823 has too "
                           "large an exponent"),
        ('[0.5e-16383]', "--payload has a number too precise for PostgreSQL at character 1: 0.5e-16383 has "
                         "more than 16383 digits after the decimal point"),
        ('{"s": "a\\u0000b"}',
         "--payload has \\u0000 at character 8: PostgreSQL cannot store the NUL character"),
        ('["\\ud83d"]', "--payload has half a UTF-16 surrogate pair, \\ud83d, at character 2: "
                        "PostgreSQL refuses it"),
        ('"\\ude00\\ud83d"', "--payload has half a UTF-16 surrogate pair, \\ude00, at character 1: "
                             "PostgreSQL refuses it"),
        ("[" * 501 + "]" * 501,
         "--payload nests arrays and objects more than 500 levels deep at character 500"),
        ('{"a": 1,}', "--payload is not valid JSON: Expecting property name enclosed in double quotes "
                      "at character 8"),
        ('"x' + "y" * 300_000 + '"', "--payload is 300003 bytes of JSON (not counting whitespace between "
                                     "values); at most 262144 (256 KiB): a callback is a nudge, not a file "
                                     "transfer"),
        ("\udcff", "--payload is not valid UTF-8 text at character 0"),
    ],
    ids=["nan", "infinity", "-infinity", "1e131072", "exponent", "too-precise", "nul", "high-alone",
         "low-first", "501-deep", "trailing-comma", "300-kb", "bad-utf8-argv"],
)
def test_a_payload_jsonb_would_refuse_is_one_line_before_connecting(
    payload: str, message: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", "t", "r", "--in", "5m", "--payload", payload]) == EX_USAGE
    assert one_line(capsys.readouterr().err) == f"reminderd: error: {message}"
    assert connections == []


def test_a_payload_error_on_a_later_line_says_line_and_column() -> None:
    with pytest.raises(UsageError) as raised:
        parse_payload('{\n  "to": "+4477",\n  "n": NaN\n}')
    assert "NaN at line 3, column 8 (character 26)" in str(raised.value)


def recording(seen: list[Any]) -> Any:
    """A stand-in for cli._run that keeps the request it was given and connects nowhere."""

    def run(command: object, request: object, settings: object) -> int:
        seen.append(request)
        return 0

    return run


def scheduled_payload(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> str:
    seen: list[ScheduleRequest] = []
    monkeypatch.setattr("reminderd.cli._run", recording(seen))
    assert main(argv) == 0
    return seen[0].payload_json


def test_payload_from_a_file(connections: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = '{\n  "amount": 12345678901234567.5,\n  "text": "é"\n}\n'
    (tmp_path / "order.json").write_text(written, encoding="utf-8")
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert scheduled_payload(monkeypatch, ["schedule", "t", "r", "--in", "5m", "--payload",
                                           f"@{tmp_path / 'order.json'}"]) == written
    assert scheduled_payload(monkeypatch, ["schedule", "t", "r", "--in", "5m", "--payload",
                                           f"@{tmp_path / 'bom.json'}"]) == '{"a": 1}'


def test_payload_from_stdin(connections: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    big = '{"text": "' + "x" * 200_000 + '"}'  # over the kernel's 128 KiB limit for one argument
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(big.encode())))
    assert scheduled_payload(monkeypatch, ["schedule", "t", "r", "--in", "5m", "--payload", "-"]) == big


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--payload @{path}: cannot read it (No such file or directory)"),
        (b'{"text": "caf\xe9"}', "--payload @{path} is not UTF-8 text (byte 13)"),
        (b'{\n  "a": [1, 2,]\n}', "--payload @{path} is not valid JSON: Expecting value at line 2, column 14 "
                                  "(character 15)"),
        (b" " * (64 * 262144 + 1), "--payload @{path} is over 16 MiB; a payload is at most 256 KiB"),
    ],
    ids=["missing", "latin-1", "bad-json", "enormous"],
)
def test_a_bad_payload_file_is_one_line(
    content: bytes | None, message: str, connections: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "payload.json"
    if content is not None:
        path.write_bytes(content)
    assert main(["schedule", "t", "r", "--in", "5m", "--payload", f"@{path}"]) == EX_USAGE
    assert one_line(capsys.readouterr().err) == "reminderd: error: " + message.format(path=path)
    assert connections == []


# What the schema would refuse, refused before connecting; every failure one line and a status


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedule", "t", "r", "--at", "0001-01-01T00:00:00+05:00"],
         "--at '0001-01-01T00:00:00+05:00' is outside the years 1 to 9999 in UTC"),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--until", "9999-12-31T23:59:59-05:00"],
         "--until '9999-12-31T23:59:59-05:00' is outside the years 1 to 9999 in UTC"),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--max-runs", "99999999999"],
         "--max-runs 99999999999: at most 2147483647"),
        (["schedule", "bad tenant!", "r", "--in", "5m"],
         "tenant 'bad tenant!': letters, digits and _ . : -, starting with a letter or digit, at most 128"),
        (["schedule", "t", "", "--in", "5m"], "REF is empty: name the message, e.g. booking:b7d2:24h"),
        (["schedule", "t", "r", "--in", "5m", "--callback-url", "ftp://x"],
         "--callback-url 'ftp://x': use an http:// or https:// URL, like https://example.com/hooks"),
        (["tenant", "add", "acme", "--callback-url", "hooks.example/x"],
         "--callback-url 'hooks.example/x': use an http:// or https:// URL, like https://example.com/hooks"),
        (["tenant", "add", "acme", "--callback-url", "http://example.com:1234567/cb"],
         "--callback-url 'http://example.com:1234567/cb' has port \"1234567\": a port is 1 to 65535"),
        (["schedule", "t", "r", "--in", "5m", "--callback-url", "http://exa..mple.com/cb"],
         "--callback-url 'http://exa..mple.com/cb' has host \"exa..mple.com\" with an empty label"),
        (["tenant", "add", "-acme", "--callback-url", "https://a.example"], None),  # argparse: an option
        (["tenant", "add", "a" * 129, "--callback-url", "https://a.example"], f"tenant {'a' * 129!r}:"),
        (["tenant", "holiday", "add", "t", "2026-12-31", " "],
         "the holiday's name is empty: say what the day is, e.g. \"Company day\""),
        (["tenant", "grant", "t", ""], "ROLE is empty: name a database role, e.g. booking_service"),
        (["tenant", "set", "t", "--quiet-exempt", "otp,Bad!"],
         "--quiet-exempt 'Bad!': lower-case letters, digits, _ and -, like marketing"),
        (["cancel", "t", ""], "REF is empty: name the message, e.g. booking:b7d2:24h"),
        (["preview", "--cron", "0 9 * * *", "-n", "100000000"], "-n 100000000: at most 1000"),
        (["preview", "--cron", "0 9 * * *", "--from", "9999-12-31T23:00:00Z"],
         "the next 10 fires run past the year 9999"),
    ],
)
def test_what_the_schema_would_refuse_is_one_line_before_connecting(
    argv: list[str], message: str | None, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    if message is None:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == EX_USAGE
        one_line(capsys.readouterr().err)
    else:
        assert main(argv) == EX_USAGE
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"reminderd: error: {message}")
    assert connections == []


def test_rotating_with_no_grace_retires_the_old_secret_at_once(connections: list[str]) -> None:
    assert main(["tenant", "rotate-secret", "acme", "--grace", "0"]) != EX_USAGE
    assert len(connections) == 1  # valid: it went on to connect


def test_the_exit_statuses_are_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 done; 1 the database cannot be reached; 2 bad input" in shown
    assert "78 a configuration error" in shown and "130 interrupted" in shown


def test_an_interrupt_is_one_line_and_status_130(
    connections: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Interrupting(io.RawIOBase):  # Ctrl-C while the payload is read from stdin
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise KeyboardInterrupt

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(Interrupting())))
    assert main(["schedule", "t", "r", "--in", "5m", "--payload", "-"]) == 130
    assert one_line(capsys.readouterr().err) == "reminderd: interrupted"


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


# Nothing dead on arrival: refused before connecting, with the policy named


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["schedule", "t", "r", "--at", "2020-01-01T09:00:00Z"],
         "too late to send, nothing older than the lookback (1d) is ever sent, so it would expire at once; "
         "schedule it for now or later"),
        (["schedule", "t", "r", "--at", "AGO_2H"],
         "too late to send, backfill=send sends a message at most 30m late, so it would expire at once; "
         "schedule it for now or later; --max-lateness (or --backfill latest) allows later"),
        (["schedule", "t", "r", "--at", "AGO_2M", "--backfill", "skip"],
         "too late to send, backfill=skip sends a message at most 1m late"),
        (["schedule", "t", "r", "--at", "AGO_2M", "--max-lateness", "1m"],
         "too late to send, backfill=send sends a message at most 1m late"),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--until", "2020-01-01T00:00:00Z"],
         "--until '2020-01-01T00:00:00Z' is already past: the schedule would finish without sending"),
        (["schedule", "t", "r", "--cron", "0 9 29 2 *", "--until", "IN_1M"],
         "is before the first occurrence, "),
    ],
    ids=["beyond-lookback", "beyond-max-lateness", "skip", "own-max-lateness", "until-past", "until-first"],
)
def test_a_message_dead_on_arrival_is_refused_before_connecting(
    argv: list[str], expected: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    stamps = {"AGO_2H": _ago(hours=2), "AGO_2M": _ago(minutes=2),
              "IN_1M": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert main([stamps.get(arg, arg) for arg in argv]) == EX_USAGE
    line = one_line(capsys.readouterr().err)
    assert line.startswith("reminderd: error: ") and expected in line
    assert connections == []


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "t", "r", "--at", "AGO_10M"],
        ["schedule", "t", "r", "--at", "AGO_2H", "--backfill", "latest"],
        ["schedule", "t", "r", "--at", "AGO_2H", "--max-lateness", "3h"],
        ["schedule", "t", "r", "--at", "AGO_30S", "--backfill", "skip"],
    ],
    ids=["within-30m", "latest", "own-max-lateness", "skip-on-time"],
)
def test_a_message_slightly_late_for_its_policy_goes_on_to_connect(
    argv: list[str], connections: list[str]
) -> None:
    stamps = {"AGO_10M": _ago(minutes=10), "AGO_2H": _ago(hours=2), "AGO_30S": _ago(seconds=30)}
    assert main([stamps.get(arg, arg) for arg in argv]) == 1  # the test double: the database is down
    assert len(connections) == 1


# Sending limits, endpoints, usage (migration 0010)


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_tenant_set_reads_limits_caps_and_the_policy() -> None:
    request = TenantSetRequest.from_args(parsed(
        "tenant", "set", "acme", "--max-per-second", "50", "--max-per-hour", "none",
        "--frequency-cap", "marketing=2/1d", "--frequency-cap", "reminder=none", "--cap-policy", "skip",
    ))
    assert (request.max_per_second, request.max_per_hour, request.cap_policy) == (50, "none", "skip")
    assert request.frequency_caps == (("marketing", 2, 86400.0), ("reminder", None, None))
    assert request.sets_limits
    assert not TenantSetRequest.from_args(parsed("tenant", "set", "acme", "--quiet", "none")).sets_limits


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--max-per-second", "0"), "--max-per-second '0': give a positive whole number"),
        (("--max-per-hour", "1.5"), "--max-per-hour '1.5': give a positive whole number"),
        (("--frequency-cap", "marketing"), "write CATEGORY=N/DURATION, e.g. marketing=2/1d"),
        (("--frequency-cap", "marketing=0/1d"), "with N a positive whole number"),
        (("--frequency-cap", "marketing=2/400d"), "the window is at most 366 days"),
        (("--frequency-cap", "Marketing=2/1d"), "--frequency-cap"),
    ],
)
def test_tenant_set_refuses_bad_limits_in_one_line(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError) as refused:
        TenantSetRequest.from_args(parsed("tenant", "set", "acme", *argv))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_endpoint_set_names_host_and_port_and_needs_a_limit() -> None:
    request = EndpointSetRequest.from_args(parsed("endpoint", "set", "Hooks.Example.com:0443",
                                                  "--max-in-flight", "50"))
    assert (request.endpoint, request.max_in_flight, request.max_per_second) == (
        "hooks.example.com:443", 50, None)
    assert EndpointSetRequest.from_args(parsed("endpoint", "set", "[::1]:8080", "--max-per-second", "none")
                                        ).endpoint == "[::1]:8080"
    with pytest.raises(UsageError, match="give --max-in-flight or --max-per-second"):
        EndpointSetRequest.from_args(parsed("endpoint", "set", "hooks.example.com:443"))
    for bad in ("hooks.example.com", "https://hooks.example.com/cb", "host:99999"):
        with pytest.raises(UsageError, match="is not an endpoint: write HOST:PORT"):
            EndpointSetRequest.from_args(parsed("endpoint", "set", bad, "--max-in-flight", "1"))


def test_usage_takes_a_month_and_defaults_to_this_one() -> None:
    request = UsageRequest.from_args(parsed("usage", "acme", "--month", "2026-02"), date(2026, 12, 1))
    assert (request.first_day, request.last_day) == (date(2026, 2, 1), date(2026, 2, 28))
    december = UsageRequest.from_args(parsed("usage", "acme"), date(2026, 12, 15))
    assert (december.first_day, december.last_day) == (date(2026, 12, 1), date(2026, 12, 31))
    with pytest.raises(UsageError, match="--month '2026-13' is not a month like 2026-11"):
        UsageRequest.from_args(parsed("usage", "acme", "--month", "2026-13"), date(2026, 12, 1))


@pytest.mark.parametrize("month", ["", " "])
def test_an_empty_month_is_refused_not_taken_for_this_month(month: str) -> None:
    with pytest.raises(UsageError) as refused:
        UsageRequest.from_args(parsed("usage", "acme", "--month", month), date(2026, 12, 1))
    assert str(refused.value) == (
        "--month is empty: give a month like 2026-11, or leave --month out for this month")


def test_enable_endpoint_takes_an_optional_endpoint() -> None:
    assert EnableEndpointRequest.from_args(parsed("tenant", "enable-endpoint", "acme")).endpoint is None
    only = EnableEndpointRequest.from_args(
        parsed("tenant", "enable-endpoint", "acme", "--endpoint", "h.example:80"))
    assert only == EnableEndpointRequest("acme", "h.example:80")


def test_the_last_month_a_date_can_hold_has_no_following_month_to_count_back_from() -> None:
    request = UsageRequest.from_args(parsed("usage", "acme", "--month", "9999-12"), date(2026, 12, 1))
    assert (request.first_day, request.last_day) == (date(9999, 12, 1), date(9999, 12, 31))
    leap = UsageRequest.from_args(parsed("usage", "acme", "--month", "2028-02"), date(2026, 12, 1))
    assert leap.last_day == date(2028, 2, 29)


BIG = "9" * 400  # a float of it is inf
PER_SECOND = "requests per second, a whole number from 1 to 2147483647"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tenant", "rate-limit", "acme", "nan"], f"'nan': {PER_SECOND}"),
        (["tenant", "rate-limit", "acme", "inf"], f"'inf': {PER_SECOND}"),
        (["tenant", "set", "acme", "--broadcast-limit", "²"],
         "--broadcast-limit '²': a whole number of contacts (at most 2,147,483,647), or none"),
        (["tenant", "set", "acme", "--approval-threshold", "1²"],
         "--approval-threshold '1²': a whole number of contacts (at most 2,147,483,647), or none"),
        (["broadcasts", "show", "acme", "²"],
         "ID '²': a broadcast's number, as `reminderd broadcasts list` shows it"),
        (["broadcasts", "approve", "acme", "²"],
         "ID '²': a broadcast's number, as `reminderd broadcasts list` shows it"),
        (["cadence", "acme", "p", "--anchor", "9999-12-31T23:00", "--tz", "America/New_York"],
         "--anchor '9999-12-31T23:00' is outside the years 1 to 9999 in UTC"),
        (["cadence", "acme", "p", "--anchor", "0001-01-01T00:00", "--tz", "Asia/Kolkata"],
         "--anchor '0001-01-01T00:00' is outside the years 1 to 9999 in UTC"),
        (["cadence", "acme", "p", "--anchor", "0001-01-01T00:00+05:00", "--tz", "UTC"],
         "--anchor '0001-01-01T00:00+05:00' is outside the years 1 to 9999 in UTC"),
        (["cadence", "acme", "p", "--anchor", "2027-01-01T00:00Z", "--tz", "UTC", "--offsets", f"-{BIG}d"],
         f"--offsets '-{BIG}d': an offset is under 100 years before or after"),
        (["cadence", "acme", "p", "--anchor", "2027-01-01T00:00Z", "--tz", "UTC", "--offsets", "-7d,+36500d"],
         "--offsets '+36500d': an offset is under 100 years before or after"),
        (["cadence", "acme", "p", "--anchor", "2027-01-01T00:00Z", "--tz", "UTC",
          "--offsets", "-7d,-86399.99s"],
         "--offsets '-86399.99s': an offset is a whole number of seconds (its step's ref names it)"),
        (["cadence", "acme", "p", "--anchor", "2027-01-01T00:00Z", "--tz", "UTC", "--offsets", "-0.00001s"],
         "--offsets '-0.00001s': an offset is a whole number of seconds (its step's ref names it)"),
    ],
    ids=["rate-nan", "rate-inf", "limit-superscript", "threshold-superscript", "broadcast-id-superscript",
         "approve-superscript", "anchor-after-9999", "anchor-before-1", "aware-anchor-before-1", "offset-inf",
         "offset-over-100-years", "offset-rounded-to-a-day", "offset-with-an-exponent"],
)
def test_numbers_and_dates_out_of_any_range_are_one_line_exit_2(
    argv: list[str], message: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN passes every comparison false, "²" passes str.isdigit() yet not int(), a year past 9999
    overflows date arithmetic: each was a traceback. Refused before connecting."""
    assert main(argv) == EX_USAGE
    assert one_line(capsys.readouterr().err) == f"reminderd: error: {message}"
    assert connections == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["migrate", "--wait", "-1s"], "--wait '-1s': a duration cannot be negative"),
        (["contact", "show", "acme", "c1", "--recent", "-7d"], "--recent '-7d': a duration cannot be negative"),
        (["broadcast", "acme", "p", "--everyone", "--cron", "0 9 * * *", "--stage-ahead", "-1h"],
         "--stage-ahead '-1h': a duration cannot be negative"),
        (["tenant", "rotate-secret", "acme", "--grace", "-1h"], "--grace '-1h': a duration cannot be negative"),
    ],
    ids=["migrate-wait", "contact-recent", "broadcast-stage-ahead", "rotate-grace"],
)
def test_a_negative_duration_is_refused_by_the_duration_parser_not_by_argparse(
    argv: list[str], message: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse took `--wait -1s` for two options: "expected one argument"."""
    assert main(argv) == EX_USAGE
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"reminderd: error: {message}; ") and "expected one argument" not in line
    assert connections == []


def test_a_cadence_takes_its_signed_offsets_after_a_space_as_its_default_writes_them() -> None:
    from reminderd.arguments import CadenceRequest
    from reminderd.cli import _negative_values_attached

    argv = _negative_values_attached(["cadence", "acme", "p", "--anchor", "2027-01-15T00:00Z", "--tz", "UTC",
                                      "--offsets", "-30d,-1d", "--payload", "{}"])
    request = CadenceRequest.from_args(build_parser().parse_args(argv))
    assert request.offsets == ["-30 days -0 seconds", "-1 days -0 seconds"]
    exact = CadenceRequest.from_args(build_parser().parse_args(_negative_values_attached(
        ["cadence", "acme", "p", "--anchor", "2027-01-15T00:00Z", "--tz", "UTC",
         "--offsets", "-86399s,+1.0s,+1d1s", "--payload", "{}"])))
    assert exact.offsets == ["-0 days -86399 seconds", "0 days 1 seconds", "1 days 1 seconds"]


CASE_HINT = "timezone names are case-sensitive"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedule", "t", "r", "--at", "2027-01-01T09:00", "--tz", ""],
         "--tz is empty: name an IANA zone such as Europe/London or Asia/Kolkata"),
        (["schedule", "t", "r", "--in", "1h", "--tz", " "],
         "--tz is empty: name an IANA zone such as Europe/London or Asia/Kolkata"),
        (["preview", "--cron", "0 9 * * *", "--tz", ""],
         "--tz is empty: name an IANA zone such as Europe/London or Asia/Kolkata"),
        (["schedule", "t", "r", "--at", "2027-01-01T09:00", "--tz", "america/new_york"],
         f'--tz: unknown timezone "america/new_york"; {CASE_HINT}: America/New_York'),
        (["schedule", "t", "r", "--at", "2027-01-01T09:00 in america/new_york"],
         f'--at: unknown timezone "america/new_york"; {CASE_HINT}: America/New_York'),
        (["schedule", "t", "r", "--cron", "0 9 * * *", "--tz", "utc"],
         f'--tz: unknown timezone "utc"; {CASE_HINT}: UTC'),
        (["preview", "--cron", "0 9 * * *", "--tz", "EUROPE/LONDON"],
         f'--tz: unknown timezone "EUROPE/LONDON"; {CASE_HINT}: Europe/London'),
        (["tenant", "add", "acme", "--callback-url", "https://example.com/cb", "--timezone", "asia/kolkata"],
         f'--timezone: unknown timezone "asia/kolkata"; {CASE_HINT}: Asia/Kolkata'),
        (["schedule", "t", "r", "--in", "1h", "--tz", "Europe/London "],
         '--tz: unknown timezone "Europe/London "; write it without spaces around it'),
        (["schedule", "t", "r", "--in", "1h", "--tz", "Mars/Base"], '--tz: unknown timezone "Mars/Base"'),
    ],
    ids=["empty-tz", "blank-tz", "empty-preview-tz", "tz-case", "at-zone-case", "utc-case", "upper-case",
         "tenant-timezone-case", "spaces", "no-such-zone"],
)
def test_a_timezone_is_refused_naming_the_flag_it_came_from_with_the_databases_case_hint(
    argv: list[str], message: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--tz ""` blamed --at ('--at: unknown timezone ""'); a zone in the wrong case got no hint,
    where SQL's reminderd.check_timezone gives "Timezone names are case-sensitive: …"."""
    assert main(argv) == EX_USAGE
    assert one_line(capsys.readouterr().err) == f"reminderd: error: {message}"
    assert connections == []


def test_each_group_names_every_one_of_its_subcommands_in_help() -> None:
    """`reminderd --help` says a group's subcommands as the parser registers them (tenant's summary
    once left out list and enable-endpoint)."""
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    said = " ".join(parser.format_help().split())
    groups = 0
    for name, command in commands.choices.items():
        inner = [action for action in command._actions if isinstance(action, argparse._SubParsersAction)]
        if not inner:
            continue
        groups += 1
        listed = ", ".join(inner[0].choices)
        (entry,) = [entry for entry in commands._choices_actions if entry.dest == name]
        assert entry.help is not None and entry.help.endswith(f": {listed}"), name
        assert " ".join(entry.help.split()) in said.replace("- ", "-")  # wrapped at a hyphen
    assert groups >= 8
    tenant = [entry.help for entry in commands._choices_actions if entry.dest == "tenant"]
    assert tenant == ["manage tenants: add, list, grant, revoke, rotate-secret, set, enable-endpoint, holiday, "
                      "rate-limit"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--rrule", "DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;UNTIL=20200201T000000Z",
          "--tz", "Europe/Paris"],
         "its UNTIL 20200201T000000Z is already past"),
        (["--rrule", "DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;UNTIL=20200201", "--tz", "Europe/Paris"],
         "its UNTIL 20200201 is already past"),
        (["--rrule", "DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;COUNT=3", "--tz", "Europe/Paris"],
         "its COUNT 3 occurrences from DTSTART 2020-01-01T09:00:00 are all already past"),
        (["--rrule", "DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;UNTIL=20200201T000000Z", "--contact", "c1"],
         "its UNTIL 20200201T000000Z is already past"),
    ],
    ids=["until-utc", "until-date", "count", "contacts-zone"],
)
def test_an_rrule_with_no_occurrence_left_is_refused_before_connecting(
    argv: list[str], said: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An RRULE whose own UNTIL is past, or all of whose COUNT occurrences are, would finish
    without sending: refused in the CLI's words, nothing connected."""
    status = main(["schedule", "acme", "r1", *argv])
    assert (status, connections) == (EX_USAGE, [])
    assert one_line(capsys.readouterr().err) == (
        f"reminderd: error: --rrule ends before it starts: {said}; nothing would ever be sent")


def test_an_rrule_until_still_ahead_on_some_clock_reaches_for_the_database(
    connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A contact's zone is the database's to know: a wall-time UNTIL past in UTC but not yet in
    UTC-12 is left to it, at any time of the UTC day; with the row's own zone, UTC, it is refused
    here."""
    now = datetime.now(UTC)
    wall = (now - timedelta(hours=2)).strftime("%Y%m%dT%H%M%S")
    rule = f"FREQ=HOURLY;UNTIL={wall}"
    assert main(["schedule", "acme", "r1", "--rrule", rule, "--contact", "c1"]) == 1
    assert connections == ["postgresql://x@127.0.0.1:1/x"]
    capsys.readouterr()
    assert main(["schedule", "acme", "r1", "--rrule", rule, "--tz", "UTC"]) == EX_USAGE
    # Past on UTC's clock; in UTC's first two hours of a day, before today's DTSTART too.
    said = "it never fires" if (now - timedelta(hours=2)).date() < now.date() else "already past"
    assert said in capsys.readouterr().err and len(connections) == 1


@pytest.mark.parametrize(
    ("until", "utc_refusal"),
    [
        ("20261203T224800", "it never fires"),  # wall time: yesterday in UTC, today on UTC-12's clock
        ("20261204T100000Z", None),  # an instant still ahead: after every clock's midnight
    ],
)
def test_a_contacts_rrule_without_dtstart_is_judged_on_every_clock_just_after_utc_midnight(
    until: str, utc_refusal: str | None
) -> None:
    """00:48 UTC: UTC's day began 48 minutes ago, UTC-12's has 11 hours left. A rule anchored at
    the contact's midnight (unknown here) fires on UTC-12's clock, so the CLI leaves it to the
    database; anchored at UTC's own midnight, a wall-time UNTIL of yesterday never fires."""
    now = datetime(2026, 12, 4, 0, 48, tzinfo=UTC)
    rule = f"FREQ=HOURLY;UNTIL={until}"
    build = validation.ScheduleRequest.build
    request = build(tenant_id="acme", ref_id="r1", now=now, rrule=rule, contact_id="c1")
    assert request.recurrence is not None and request.timezone is None
    if utc_refusal is None:
        assert build(tenant_id="acme", ref_id="r1", now=now, rrule=rule, tz="UTC").recurrence is not None
    else:
        with pytest.raises(InvalidInput, match=utc_refusal):
            build(tenant_id="acme", ref_id="r1", now=now, rrule=rule, tz="UTC")


@pytest.mark.parametrize(
    ("zone", "why"),
    [
        ("localtime", "the zone of whichever host reads it (/etc/localtime)"),
        ("posixrules", "the rules POSIX TZ strings borrow"),
        ("Factory", "tzdata's placeholder for a zone not set"),
        ("posix/Europe/London", "a copy of Europe/London under another name: write Europe/London"),
        ("right/UTC", "a copy of UTC counting leap seconds: write UTC"),
    ],
)
def test_a_file_of_the_zone_directory_that_names_no_iana_zone_is_refused(
    zone: str, why: str, connections: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's zoneinfo reads these (localtime: whatever zone the host is in), so they were taken
    (migration 0032: the database refuses them too, and contacts files and the API with it)."""
    assert main(["schedule", "t", "r", "--cron", "0 9 * * *", "--tz", zone]) == EX_USAGE
    assert one_line(capsys.readouterr().err) == (
        f'reminderd: error: --tz: unknown timezone "{zone}": {why}, not an IANA zone')
    assert connections == []
    assert checked_contact(1, {"contact_id": "c1", "timezone": zone}).problem == (
        f"timezone {zone!r} is not an IANA zone (such as Europe/London)")
