"""`reminderd migrate` says what it did ("applied 0001, 0002 (head 0002)", "already at head 0002"),
and, against a database that is down, how long it will keep trying, then one line per retry."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from reminderd.cli import main
from reminderd.migrate import alembic_config, head_revision, upgrade

EVERY_REVISION = [  # oldest first
    script.revision
    for script in reversed(list(ScriptDirectory.from_config(alembic_config("postgresql://unused")).walk_revisions()))
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_migrate_names_the_revisions_it_applied_then_says_it_is_at_head(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    head = head_revision()
    assert EVERY_REVISION[-1] == head and EVERY_REVISION[0] == "0001"

    status, out, err = run(capsys, "migrate", "--database-url", empty_database_url)
    assert (status, err) == (0, "")
    assert out == f"reminderd: applied {', '.join(EVERY_REVISION)} (head {head})\n"

    status, out, err = run(capsys, "migrate", "--database-url", empty_database_url)
    assert (status, out, err) == (0, f"reminderd: already at head {head}\n", "")


def test_migrate_from_an_older_revision_names_only_the_newer_ones(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upgrade(empty_database_url, "0002") == ["0001", "0002"]
    status, out, _ = run(capsys, "migrate", "--database-url", empty_database_url)
    assert status == 0
    assert out == f"reminderd: applied {', '.join(EVERY_REVISION[2:])} (head {head_revision()})\n"


def test_against_a_database_that_is_down_migrate_says_how_long_it_keeps_trying(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, "migrate", "--database-url", "postgresql://x@127.0.0.1:1/x", "--wait", "3s")
    assert (status, out) == (1, "")
    first, *retries, last = err.splitlines()
    assert first == ("reminderd: cannot reach the database at 127.0.0.1:1: connection refused "
                     "(--database-url); retrying for up to 3s")
    assert 1 <= len(retries) <= 4  # backoff 0.5 s, 1 s, 2 s, … within 3 s: one line each
    assert all(line.startswith("reminderd: still unreachable (connection refused); next try in ")
               for line in retries)
    assert last == ("reminderd: cannot reach the database at 127.0.0.1:1: connection refused; gave up after 3s "
                    "(--database-url)")


def test_migrate_wait_0_tries_once(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "migrate", "--database-url", "postgresql://x@127.0.0.1:1/x", "--wait", "0")
    assert status == 1
    assert err == "reminderd: cannot reach the database at 127.0.0.1:1: connection refused (--database-url)\n"


def test_a_bad_wait_is_refused_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "migrate", "--database-url", "postgresql://x@127.0.0.1:1/x", "--wait", "soon")
    assert status == 2
    assert err.startswith("reminderd: error: --wait 'soon': ") and err.count("\n") == 1


def test_migrate_reads_the_url_as_the_daemon_does(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """sslmode and other libpq parameters mean the same to `migrate` as to `run` (asyncpg reads the
    URL in both), instead of reaching asyncpg's connect() as unknown arguments."""
    status, out, err = run(capsys, "migrate", "--database-url", f"{empty_database_url}?sslmode=disable")
    assert (status, err) == (0, "")
    assert out.startswith("reminderd: applied 0001, ")
