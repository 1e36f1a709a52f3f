"""Every way a database URL can be wrong is one line on stderr naming the problem and where the URL
came from: exit 78 when the URL must change, 1 when the server cannot be reached. From `status`,
`schedule`, `migrate` (in-process) and `run` (the daemon, a subprocess), against a real server whose
pg_hba.conf asks one role for a password and refuses another."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from reminderd.cli import main
from reminderd.exceptions import EX_CONFIG
from reminderd.testing import Cluster, daemon_env, running_daemon

PASSWORD_ROLE = "reminderd_pw_test"
REFUSED_ROLE = "reminderd_hba_refused"
COMMANDS = [["status"], ["schedule", "acme", "r1", "--in", "1h"], ["migrate", "--wait", "0"]]


def with_url(url: str, *, user: str | None = None, database: str | None = None, port: int | None = None,
             host: str | None = None, query: str | None = None) -> str:
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    name, _, old_port = hostport.rpartition(":")
    netloc = f"{user or userinfo}@{host or name}:{port or old_port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path,
                                     query=query if query is not None else parts.query))


@pytest.fixture(scope="module")
def strict_roles(pg_server: tuple[str, Cluster | None]) -> Iterator[str]:
    """The server's URL, with two roles pg_hba.conf treats strictly: one must give its password
    (scram), the other is refused outright. Lines are added first, for those roles only."""
    server_url, cluster = pg_server
    if cluster is None:
        pytest.skip("needs the throwaway cluster: the test changes its pg_hba.conf")
    hba = cluster.datadir / "pg_hba.conf"
    original = hba.read_text(encoding="utf-8")
    rules = (f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
             f"host all {REFUSED_ROLE} 127.0.0.1/32 reject\n")
    hba.write_text(rules + original, encoding="utf-8")

    async def setup(*statements: str) -> None:
        connection = await asyncpg.connect(server_url)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(setup(
        f"DROP ROLE IF EXISTS {PASSWORD_ROLE}", f"DROP ROLE IF EXISTS {REFUSED_ROLE}",
        f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right'", f"CREATE ROLE {REFUSED_ROLE} LOGIN",
        "SELECT pg_reload_conf()",
    ))
    try:
        yield server_url
    finally:
        hba.write_text(original, encoding="utf-8")
        asyncio.run(setup("SELECT pg_reload_conf()", f"DROP ROLE {PASSWORD_ROLE}", f"DROP ROLE {REFUSED_ROLE}"))


def wrong_urls(server_url: str, database_url: str) -> list[tuple[str, str, int]]:
    """(URL, the one line expected after "reminderd: ", exit status)."""
    database = urlsplit(database_url).path.lstrip("/")
    return [
        (with_url(database_url, database="nosuchdb"),
         'database "nosuchdb" does not exist (--database-url)', EX_CONFIG),
        (with_url(database_url, user="nobody_here"),
         'role "nobody_here" does not exist (--database-url)', EX_CONFIG),
        (with_url(database_url, user=f"{PASSWORD_ROLE}:wrong"),
         f'password authentication failed for user "{PASSWORD_ROLE}" (--database-url)', EX_CONFIG),
        (with_url(database_url, user=REFUSED_ROLE),
         f'pg_hba.conf rejects connection for host "127.0.0.1", user "{REFUSED_ROLE}", database "{database}", '
         "no encryption (--database-url)", EX_CONFIG),
        (with_url(database_url, host="no-such-host.invalid"),
         'unknown host "no-such-host.invalid": the name does not resolve (--database-url)', EX_CONFIG),
        (with_url(database_url, query="sslmode=require"),
         f"the server at 127.0.0.1:{urlsplit(database_url).port} does not accept SSL, which the URL's sslmode "
         "asks for (--database-url; remove sslmode, or enable ssl on the server)", EX_CONFIG),
        (with_url(database_url, port=1), "cannot reach the database at 127.0.0.1:1: connection refused "
                                         "(--database-url)", 1),
    ]


CASES = ["no such database", "no such role", "wrong password", "pg_hba.conf reject", "unknown host",
         "ssl refused", "nothing listening"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda argv: argv[0])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASES)
def test_a_wrong_database_url_is_one_line_naming_the_problem_and_the_setting(
    strict_roles: str, database_url: str, command: list[str], case: int, capsys: pytest.CaptureFixture[str],
) -> None:
    url, expected, status = wrong_urls(strict_roles, database_url)[case]
    assert main(["--database-url", url, *command]) == status
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"reminderd: {expected}"]


def test_the_right_password_gets_past_pg_hba(strict_roles: str, database_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The strict rules above refuse only what they should: the same role with its password
    connects, and, having no grants, is told on one line what its role lacks (a configuration
    error too: the URL names a role without reminderd's privileges)."""
    url = with_url(database_url, user=f"{PASSWORD_ROLE}:right")
    assert main(["--database-url", url, "status"]) == EX_CONFIG
    assert capsys.readouterr().err == (
        "reminderd: permission denied for schema reminderd (--database-url; its role needs reminderd_app, "
        "reminderd_readonly or reminderd_daemon: docs/sql.md, Roles)\n"
    )


def test_the_setting_named_is_where_the_url_came_from(
    strict_roles: str, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REMINDERD_DATABASE_URL", with_url(database_url, database="nosuchdb"))
    assert main(["status"]) == EX_CONFIG
    assert capsys.readouterr().err == 'reminderd: database "nosuchdb" does not exist (REMINDERD_DATABASE_URL)\n'


@pytest.mark.parametrize("command", COMMANDS, ids=lambda argv: argv[0])
def test_a_malformed_url_or_a_query_parameter_the_server_refuses_is_exit_78(
    database_url: str, command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The reviewer's: a port asyncpg reads as int('5432:5') was a 56-line traceback, a query
    parameter the server refuses (libpq's connect_timeout) "unrecognized configuration parameter",
    exit 1. Both are the URL's fault: one line naming the setting, exit 78, no password."""
    password = urlsplit(database_url).password or "no-password"
    malformed = database_url.replace(f":{urlsplit(database_url).port}/", f":{urlsplit(database_url).port}:5/")
    monkeypatch.setenv("REMINDERD_DATABASE_URL", malformed)
    assert main(command) == EX_CONFIG
    out, err = capsys.readouterr()
    assert (out, err.count("\n")) == ("", 1)
    assert err.startswith("reminderd: configuration error: REMINDERD_DATABASE_URL=postgresql://")
    assert err.endswith(f": port '{urlsplit(database_url).port}:5' is not a port number (1-65535)\n")
    monkeypatch.setenv("REMINDERD_DATABASE_URL", with_url(database_url, query="connect_timeout=abc"))
    assert main(command) == EX_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ('reminderd: unrecognized configuration parameter "connect_timeout" (REMINDERD_DATABASE_URL; '
                   "a query parameter asyncpg does not know is sent to the server as a setting: remove it)\n")
    assert password not in err


@pytest.mark.slow
async def test_the_daemon_exits_78_on_a_wrong_password_instead_of_retrying(
    strict_roles: str, database_url: str
) -> None:
    url = with_url(database_url, user=f"{PASSWORD_ROLE}:wrong")
    async with running_daemon(daemon_env(url)) as process:
        assert await process.exit_code() == EX_CONFIG
    [error] = process.events("configuration_error")
    assert error["error"] == (
        f'REMINDERD_DATABASE_URL: password authentication failed for user "{PASSWORD_ROLE}"'
    )
    assert "wrong" not in process.output()  # the password is never logged
