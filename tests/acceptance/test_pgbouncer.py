"""The real `reminderd run` behind a real PgBouncer in transaction pooling mode.

PgBouncer in transaction mode hands each transaction to any server connection: no session state
(prepared statements, LISTEN) survives between transactions. With REMINDERD_PGBOUNCER=1 the daemon
turns its statement cache off and LISTENs only on REMINDERD_LISTEN_DATABASE_URL (a direct
connection), or, without one, only polls. Both must deliver every message exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from support import all_sent, fast_daemon_env, insert_due, poll_until

from reminderd.testing import ClusterError, Receiver, find_bindir, free_port, running_daemon

pytestmark = pytest.mark.slow

ALIAS = "reminderd_via_bouncer"  # the [databases] name the daemon connects to: not the real one
ROWS = 200


@dataclass
class Bouncer:
    port: int
    user: str
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{ALIAS}"

    def admin(self, command: str) -> list[dict[str, str]]:
        """Run SHOW … on PgBouncer's admin console (simple query protocol only: psql speaks it)."""
        result = subprocess.run(
            [_psql(), "-X", "-A", "-F", "\t", "-P", "footer=off", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-d", "pgbouncer", "-c", command],
            capture_output=True, text=True, timeout=10, env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        assert result.returncode == 0, f"{command} on the admin console failed: {result.stderr}"
        header, *rows = result.stdout.splitlines()
        names = header.split("\t")
        return [dict(zip(names, row.split("\t"), strict=True)) for row in rows]


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):
        found = "/usr/sbin/pgbouncer"  # Debian's, when /usr/sbin is not on PATH
    if found is None:
        pytest.fail(
            "pgbouncer is not installed: `apt-get install pgbouncer` (.ci/setup installs it); "
            "these tests need a real PgBouncer in transaction mode",
            pytrace=False,
        )
    return found


def _psql() -> str:
    with contextlib.suppress(ClusterError):
        candidate = find_bindir() / "psql"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("psql")
    if found is None:
        pytest.fail("psql is not installed (it reads PgBouncer's admin console): install postgresql-client",
                    pytrace=False)
    return found


def _config(server_url: str, port: int, directory: Path) -> tuple[str, str]:
    """pgbouncer.ini and its auth file: clients are trusted; the server is reached as in the URL."""
    server = urlsplit(server_url)
    user = unquote(server.username or "postgres")
    target = [f"host={server.hostname or '127.0.0.1'}", f"port={server.port or 5432}",
              f"dbname={server.path.lstrip('/')}", f"user={user}"]
    if server.password:
        target.append(f"password={unquote(server.password)}")
    ini = f"""\
[databases]
{ALIAS} = {' '.join(target)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / 'users.txt'}
admin_users = {user}
pool_mode = transaction
; one server connection for all the daemon's clients: every transaction is multiplexed onto it
default_pool_size = 1
max_client_conn = 100
logfile = {directory / 'pgbouncer.log'}
"""
    return ini, user


@pytest.fixture
async def bouncer(database_url: str) -> AsyncIterator[Bouncer]:
    """PgBouncer on a free port in front of this test's database, in transaction pooling mode."""
    process, running, directory = _start_pgbouncer(database_url)
    try:
        await _wait_accepting(process, running)
        yield running
    finally:
        _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _start_pgbouncer(database_url: str) -> tuple[subprocess.Popen[bytes], Bouncer, Path]:
    """PgBouncer refuses to run as root: then it runs as the OS user postgres, in a directory of
    its own (pytest's tmp_path sits under a directory only root may enter)."""
    binary = _pgbouncer_binary()
    as_root = os.geteuid() == 0
    directory = Path(tempfile.mkdtemp(prefix="reminderd-pgbouncer-"))
    port = free_port()
    ini, user = _config(database_url, port, directory)
    (directory / "pgbouncer.ini").write_text(ini, encoding="utf-8")
    (directory / "users.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
    if as_root:
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, user="postgres", group="postgres")
    run_as = "postgres" if as_root else None
    process = subprocess.Popen(
        [binary, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        user=run_as, group=run_as, extra_groups=[] if as_root else None,
    )
    return process, Bouncer(port, user, directory / "pgbouncer.log"), directory


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _wait_accepting(process: subprocess.Popen[bytes], running: Bouncer, timeout_s: float = 15) -> None:
    """Until a query goes through PgBouncer to PostgreSQL and back."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pgbouncer exited with {process.returncode}: {_tail(running.log)}", pytrace=False)
        try:
            connection = await asyncpg.connect(running.url, statement_cache_size=0, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.05)
            continue
        try:
            await connection.execute("SELECT 1")
            return
        finally:
            await connection.close()
    pytest.fail(f"pgbouncer did not accept connections within {timeout_s}s ({last!r}): {_tail(running.log)}",
                pytrace=False)


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:])
    except OSError:
        return "(no log)"


async def _schedule(db: asyncpg.Connection) -> float:
    """ROWS due rows, then one due a second from now; returns that one's fire_at (unix seconds)."""
    await insert_due(db, ROWS)
    fire_at = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
        "VALUES ('acme', 'soon', now() + interval '1 second') RETURNING fire_at"
    )
    return float(fire_at.timestamp())


def _stats(bouncer: Bouncer) -> dict[str, str]:
    rows = [row for row in bouncer.admin("SHOW STATS") if row["database"] == ALIAS]
    assert len(rows) == 1, bouncer.admin("SHOW STATS")
    return rows[0]


async def _direct_connections(db: asyncpg.Connection, application_name: str, bouncer: Bouncer) -> int:
    """Sessions with this application_name that are not PgBouncer's own server connections (a
    server connection keeps the name its first client set: the daemon's pool does not RESET ALL)."""
    via_bouncer = [int(s["local_port"]) for s in bouncer.admin("SHOW SERVERS") if s["database"] == ALIAS]
    count: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = $1 AND NOT client_port = ANY($2::int[])",
        application_name, via_bouncer,
    )
    return count


def _assert_multiplexed(bouncer: Bouncer) -> None:
    """The daemon's pool opened several client connections, all served by PgBouncer's single
    server connection: its transactions really were interleaved on one PostgreSQL session."""
    clients = [c for c in bouncer.admin("SHOW CLIENTS") if c["database"] == ALIAS]
    servers = [c for c in bouncer.admin("SHOW SERVERS") if c["database"] == ALIAS]
    assert len(clients) >= 2 and len(servers) == 1, (clients, servers)


def _assert_exactly_once(receiver: Receiver) -> None:
    per_ref = Counter(item.message["ref_id"] for item in receiver.received)
    assert len(per_ref) == ROWS + 1, f"{len(per_ref)} distinct messages arrived"
    assert set(per_ref.values()) == {1}, {ref: n for ref, n in per_ref.items() if n > 1}


def _assert_no_database_errors(log: list[dict[str, object]]) -> None:
    errors = [line for line in log if line.get("level") == "error" or line.get("event") == "listen_failed"]
    assert not errors, errors[:5]


async def test_behind_pgbouncer_with_a_direct_listen_connection_delivers_each_message_once(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, bouncer: Bouncer
) -> None:
    before = int(_stats(bouncer)["total_xact_count"])
    # A long poll interval: only a NOTIFY on the direct LISTEN connection can make these prompt.
    env = fast_daemon_env(bouncer.url, REMINDERD_PGBOUNCER="1", REMINDERD_LISTEN_DATABASE_URL=database_url,
                     REMINDERD_POLL_INTERVAL="30")
    async with running_daemon(env) as process:
        await process.wait_logged("ready")
        clients = [c for c in bouncer.admin("SHOW CLIENTS") if c["database"] == ALIAS]
        assert clients and all(c["user"] == bouncer.user for c in clients), clients
        assert await _direct_connections(db, "reminderd-listen", bouncer) == 1  # LISTEN bypasses PgBouncer
        assert await _direct_connections(db, "reminderd", bouncer) == 0  # the pool does not

        soon_fire_at = await _schedule(db)
        await poll_until(all_sent(db, ROWS + 1), timeout_s=15)
        _assert_multiplexed(bouncer)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
        log = process.log

    _assert_exactly_once(receiver)
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == ROWS + 1
    soon = next(item for item in receiver.received if item.message["ref_id"] == "soon")
    assert soon.received_at - soon_fire_at < 5, "the 1 s row waited for a poll: NOTIFY did not arrive"
    _assert_no_database_errors(log)
    # The claims and outcome batches went through PgBouncer.
    assert int(_stats(bouncer)["total_xact_count"]) - before >= 4


async def test_behind_pgbouncer_without_a_listen_url_polls_and_delivers_each_message_once(
    db: asyncpg.Connection, receiver: Receiver, tenant: str, bouncer: Bouncer
) -> None:
    before = int(_stats(bouncer)["total_xact_count"])
    env = fast_daemon_env(bouncer.url, REMINDERD_PGBOUNCER="1")  # poll every 0.2 s, no LISTEN at all
    async with running_daemon(env) as process:
        await process.wait_logged("ready")
        assert await _direct_connections(db, "reminderd-listen", bouncer) == 0
        assert await _direct_connections(db, "reminderd", bouncer) == 0

        await _schedule(db)
        await poll_until(all_sent(db, ROWS + 1), timeout_s=15)
        _assert_multiplexed(bouncer)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
        log = process.log

    _assert_exactly_once(receiver)
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == ROWS + 1
    _assert_no_database_errors(log)
    assert int(_stats(bouncer)["total_xact_count"]) - before >= 10  # polls, claims, outcomes
