"""`reminderd run` as a service: systemd's notify protocol, SIGHUP, readiness across a database
restart, `reminderd config`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support import fast_daemon_env, poll_until, settled

from reminderd.testing import CLI_COMMAND, Cluster, Receiver, free_port, running_daemon

pytestmark = pytest.mark.slow


async def test_notify_protocol_ready_watchdog_stopping(
    database_url: str, tenant: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received: list[str] = []

    async def next_message() -> str:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 15)
        received.append(data.decode())
        return received[-1]

    env = fast_daemon_env(database_url, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    try:
        async with running_daemon(env) as process:
            assert (await next_message()).startswith("READY=1")
            assert await next_message() == "WATCHDOG=1"
            assert await next_message() == "WATCHDOG=1"  # keeps pinging while the loop runs
            process.send_signal(signal.SIGTERM)
            while (await next_message()) != "STOPPING=1":
                pass
            assert await process.exit_code() == 0
    finally:
        sock.close()
    assert received[0].startswith("READY=1\nSTATUS=")


async def test_sighup_reopens_the_log_file(database_url: str, tenant: str, tmp_path: Path) -> None:
    log_file = tmp_path / "reminderd.log"
    env = fast_daemon_env(database_url, REMINDERD_LOG_FILE=str(log_file))
    async with running_daemon(env) as process:
        await poll_until(lambda: _logged(log_file, "ready"))
        log_file.rename(tmp_path / "reminderd.log.1")  # what logrotate does
        process.send_signal(signal.SIGHUP)
        await poll_until(lambda: _logged(log_file, "reloaded"))
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
    assert "stopped" in _events(log_file)
    assert "starting" in _events(tmp_path / "reminderd.log.1")


async def test_sighup_reloads_the_log_level_from_the_config_file(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, tmp_path: Path
) -> None:
    config = tmp_path / "reminderd.toml"
    config.write_text('log_level = "info"\n')
    env = fast_daemon_env(database_url)
    env.pop("REMINDERD_LOG_LEVEL", None)
    env["REMINDERD_CONFIG"] = str(config)
    async with running_daemon(env) as process:
        await process.wait_logged("ready")
        await db.execute("SELECT reminderd.schedule('acme', 'loud', now())")
        await process.wait_logged("fired")
        config.write_text('log_level = "warning"\n')
        process.send_signal(signal.SIGHUP)
        await process.wait_logged("reloaded")
        await db.execute("SELECT reminderd.schedule('acme', 'quiet', now())")
        await poll_until(settled(db, "quiet", "sent"))
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
    delivered = [line["ref"] for line in process.events("fired")]
    assert delivered == ["loud"]  # the second delivery happened, at a level no longer logged
    assert [r.message["ref_id"] for r in receiver.received] == ["loud", "quiet"]


def _events(path: Path) -> list[str]:
    """The events of a JSON log file, in order."""
    return [json.loads(line)["event"] for line in path.read_text().splitlines() if line.startswith("{")]


async def _logged(path: Path, event: str) -> bool:
    return path.exists() and event in _events(path)  # noqa: ASYNC240 (a small local file)


async def test_readyz_goes_503_then_200_across_a_database_restart_and_nothing_is_lost(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, pg_cluster: Cluster
) -> None:
    port = free_port()
    env = fast_daemon_env(database_url, REMINDERD_HTTP_PORT=str(port))
    ready_url = f"http://127.0.0.1:{port}/readyz"
    await db.close()
    async with running_daemon(env) as process, aiohttp.ClientSession() as http:

        async def readiness(expected: int) -> bool:
            try:
                async with http.get(ready_url) as response:
                    return response.status == expected
            except aiohttp.ClientConnectionError:
                return False

        await poll_until(lambda: readiness(200))
        pg_cluster.stop("fast")
        try:
            await poll_until(lambda: readiness(503), timeout_s=20)
        finally:
            pg_cluster.start()
        await poll_until(lambda: readiness(200), timeout_s=30)

        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute("SELECT reminderd.schedule('acme', 'after-restart', now())")
            row = await poll_until(settled(connection, "after-restart", "sent"), timeout_s=30)
        finally:
            await connection.close()
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
    assert row["attempts"] == 1
    assert [r.message["ref_id"] for r in receiver.received] == ["after-restart"]


def test_config_shows_effective_settings_masked_with_their_source(tmp_path: Path) -> None:
    config = tmp_path / "reminderd.toml"
    config.write_text('poll_interval = 5\nallowed_callback_networks = ["10.0.0.0/8"]\nconcurrency = 8\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERD_")}
    env["REMINDERD_DATABASE_URL"] = "postgresql://app:hunter2@db.internal/app"
    env["REMINDERD_CONCURRENCY"] = "16"  # the environment wins over the file
    result = subprocess.run(
        [*CLI_COMMAND, "--config", str(config), "config"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert "hunter2" not in result.stdout
    assert lines["REMINDERD_DATABASE_URL"] == "postgresql://app:***@db.internal/app  # env"
    assert lines["REMINDERD_POLL_INTERVAL"] == f"5.0  # config file {config}"
    assert lines["REMINDERD_CONCURRENCY"] == "16  # env"
    assert lines["REMINDERD_ALLOWED_CALLBACK_NETWORKS"].startswith("10.0.0.0/8  # config file")
    assert lines["REMINDERD_LEASE"] == "300.0  # default"


def test_config_file_with_an_unknown_key_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "reminderd.toml"
    config.write_text("pol_interval = 5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERD_")}
    env["REMINDERD_DATABASE_URL"] = "postgresql://app@db.internal/app"
    result = subprocess.run(
        [*CLI_COMMAND, "--config", str(config), "run"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 78
    assert "unknown setting 'pol_interval'" in result.stderr
