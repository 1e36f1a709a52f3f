"""systemd/*.service: the contract between the units and the daemon.

The daemon speaks the notify protocol (READY=1 after its first claim, WATCHDOG=1 while the claim
loop turns), drains for REMINDERD_SHUTDOWN_TIMEOUT on SIGTERM and exits 78 on a configuration
error; the units must expect exactly that, run it hardened, and migrate before it starts.
When `systemd-analyze` is installed, systemd itself also checks the files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from reminderd.exceptions import EX_CONFIG
from reminderd.settings import Settings
from reminderd.store import QUERY_DEADLINE_S
from reminderd.worker import LOOP_DEADLINE_S

UNITS = Path(__file__).resolve().parents[2] / "systemd"
DAEMON = UNITS / "reminderd.service"
MIGRATE = UNITS / "reminderd-migrate.service"
API = UNITS / "reminderd-api.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections to (key, value) assignments in order. Keys may repeat, as systemd allows."""
    unit: Unit = {}
    section: str | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, [])
            continue
        assert section is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        unit[section].append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    """Every assignment of `key`, after the last empty one (an empty assignment resets a list)."""
    found = [value for k, value in unit.get(section, []) if k == key]
    while "" in found:
        found = found[found.index("") + 1 :]
    return found


def value(unit: Unit, section: str, key: str) -> str | None:
    """The effective value of a single-valued key: the last assignment wins."""
    found = [v for k, v in unit.get(section, []) if k == key]
    return found[-1] if found else None


def words(unit: Unit, section: str, key: str) -> set[str]:
    return {word for v in values(unit, section, key) for word in v.split()}


_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "": 1.0, "s": 1.0, "sec": 1.0,
    "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}


def seconds(span: str) -> float:
    """A systemd time span ('45', '45s', '1min 30s', 'infinity') in seconds."""
    if span.strip() == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span.strip())
    assert parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+\s*", span), f"not a time span: {span!r}"
    return sum(float(number) * _SPAN_UNITS[unit] for number, unit in parts)


def load(path: Path) -> Unit:
    return parse_unit(path.read_text(encoding="utf-8"))


def default_shutdown_timeout_s() -> float:
    default = next(f.default for f in fields(Settings) if f.name == "shutdown_timeout_s")
    assert isinstance(default, float)
    return default


def test_the_parser_reads_repeats_resets_and_continuations() -> None:
    unit = parse_unit(
        "# comment\n[Service]\nA=1\nA=2\nL=x y\nL=\nL=z\nLong=a \\\n  b\n; other comment\n"
    )
    assert value(unit, "Service", "A") == "2"
    assert words(unit, "Service", "L") == {"z"}
    assert value(unit, "Service", "Long") == "a b"
    assert seconds("45") == 45 and seconds("1min 30s") == 90 and seconds("500ms") == 0.5


def test_the_daemon_unit_speaks_the_notify_protocol_with_a_watchdog() -> None:
    unit = load(DAEMON)
    assert value(unit, "Service", "Type") == "notify"
    assert value(unit, "Service", "NotifyAccess") == "main"
    assert seconds(value(unit, "Service", "WatchdogSec") or "") == 30
    assert values(unit, "Service", "ExecStart") == ["/usr/local/bin/reminderd run"]


def test_every_query_gives_up_before_the_watchdog_would_restart_the_daemon() -> None:
    # A database that hangs fails each query within QUERY_DEADLINE_S; the claim loop's turn (at most
    # three bounded calls) keeps its promise, so /healthz stays 200 and the pings go on. Only a loop
    # stuck for another reason misses LOOP_DEADLINE_S, and then the watchdog restarts it.
    watchdog_s = seconds(value(load(DAEMON), "Service", "WatchdogSec") or "")
    assert watchdog_s / 2 > QUERY_DEADLINE_S  # fails before the next ping is due
    assert 3 * QUERY_DEADLINE_S <= LOOP_DEADLINE_S < watchdog_s


def test_the_daemon_unit_restarts_on_failure_but_not_on_a_configuration_error() -> None:
    unit = load(DAEMON)
    assert value(unit, "Service", "Restart") == "on-failure"
    assert str(EX_CONFIG) in words(unit, "Service", "RestartPreventExitStatus")
    assert EX_CONFIG == 78


def test_the_daemon_unit_gives_the_drain_time_to_finish() -> None:
    unit = load(DAEMON)
    assert value(unit, "Service", "KillSignal") in {None, "SIGTERM", "SIGINT"}
    stop = value(unit, "Service", "TimeoutStopSec")
    assert stop is not None, "TimeoutStopSec must be set: systemd's default (90 s) is not a contract"
    assert seconds(stop) > default_shutdown_timeout_s(), (
        f"TimeoutStopSec={stop} must exceed REMINDERD_SHUTDOWN_TIMEOUT's default "
        f"({default_shutdown_timeout_s():g} s), or systemd kills a draining daemon"
    )


def test_the_daemon_runs_after_the_migrations_and_requires_them() -> None:
    unit = load(DAEMON)
    assert "reminderd-migrate.service" in words(unit, "Unit", "Requires")
    assert "reminderd-migrate.service" in words(unit, "Unit", "After")
    assert "multi-user.target" in words(unit, "Install", "WantedBy")


def test_the_migrate_unit_is_a_oneshot_running_migrate() -> None:
    unit = load(MIGRATE)
    assert value(unit, "Service", "Type") == "oneshot"
    assert values(unit, "Service", "ExecStart") == ["/usr/local/bin/reminderd migrate"]


def test_the_migrate_unit_keeps_the_reference_rows_in_its_cache_directory() -> None:
    # DynamicUser has no home: without these the rows are rebuilt (seconds) for every new database.
    unit = load(MIGRATE)
    assert value(unit, "Service", "CacheDirectory") == "reminderd"
    assert "XDG_CACHE_HOME=/var/cache" in words(unit, "Service", "Environment")


def test_the_api_unit_runs_serve_after_the_migrations_and_drains_on_sigterm() -> None:
    unit = load(API)
    assert values(unit, "Service", "ExecStart") == ["/usr/local/bin/reminderd serve"]
    assert values(unit, "Service", "EnvironmentFile") == ["/etc/reminderd/api.env"]
    assert "reminderd-migrate.service" in words(unit, "Unit", "Requires")
    assert "reminderd-migrate.service" in words(unit, "Unit", "After")
    assert value(unit, "Service", "Restart") == "on-failure"
    assert str(EX_CONFIG) in words(unit, "Service", "RestartPreventExitStatus")
    assert value(unit, "Service", "KillSignal") in {None, "SIGTERM", "SIGINT"}
    assert seconds(value(unit, "Service", "TimeoutStopSec") or "0") > default_shutdown_timeout_s()
    assert "multi-user.target" in words(unit, "Install", "WantedBy")


@pytest.mark.parametrize("path", [DAEMON, MIGRATE, API], ids=lambda p: p.name)
def test_every_unit_reads_an_environment_file_and_is_hardened(path: Path) -> None:
    unit = load(path)
    assert values(unit, "Service", "EnvironmentFile") in (["/etc/reminderd/env"], ["/etc/reminderd/api.env"])
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "SystemCallFilter": "@system-service",
    }
    for key, wanted in expected.items():
        assert value(unit, "Service", key) == wanted, f"{path.name}: {key}"
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= words(unit, "Service", "RestrictAddressFamilies")
    assert any(k == "CapabilityBoundingSet" for k, _ in unit["Service"]), "CapabilityBoundingSet unset"
    assert words(unit, "Service", "CapabilityBoundingSet") == set(), "capabilities must be empty"


if SYSTEMD_ANALYZE:
    systemd_analyze: str = SYSTEMD_ANALYZE  # found: the test below exists only then
    # Lines that mean systemd would ignore or misread part of a unit.
    BAD_LINE = re.compile(r"Unknown|Invalid|Failed to parse|Unsupported", re.IGNORECASE)

    def test_systemd_analyze_verify_finds_no_unknown_or_invalid_settings(tmp_path: Path) -> None:
        """Verify copies whose ExecStart is a real executable (reminderd may not be installed at
        /usr/local/bin here); both units side by side, so Requires= resolves."""
        assert not _verify(tmp_path / "units", extra=""), "systemd-analyze verify complained"
        # The check itself works: a misspelt key in a copy is reported.
        assert _verify(tmp_path / "typo", extra="\n[Service]\nRestartPreventExitStatuss=78\n")

    def _verify(directory: Path, *, extra: str) -> list[str]:
        directory.mkdir()
        real_binary = shutil.which("true") or "/bin/true"
        copies = []
        for path in (MIGRATE, DAEMON, API):
            text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={real_binary}", path.read_text(encoding="utf-8"))
            copy = directory / path.name
            copy.write_text(text + (extra if path == DAEMON else ""), encoding="utf-8")
            copies.append(str(copy))
        result = subprocess.run(
            [systemd_analyze, "verify", "--man=no", *copies],
            capture_output=True, text=True, timeout=60, cwd=directory,
        )
        return [line for line in (result.stdout + result.stderr).splitlines() if BAD_LINE.search(line)]
