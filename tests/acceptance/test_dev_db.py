"""`reminderd dev-db`: a database for the CLI in one step, kept across runs, on loopback with a
password, started, stopped and deleted by the real command (a subprocess) in a folder of its own.
(`eval "$(reminderd dev-db start --export)"` is run by tests/acceptance/test_readme.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from reminderd.migrate import head_revision
from reminderd.testing import CLI_COMMAND

pytestmark = pytest.mark.slow


def dev_db(data_home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERD_")}
    env["XDG_DATA_HOME"] = str(data_home)
    return subprocess.run([*CLI_COMMAND, "dev-db", *argv], env=env, capture_output=True, text=True, timeout=120)


async def fetch(url: str, query: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def test_start_creates_migrates_and_prints_the_url_then_stop_start_and_delete(tmp_path: Path) -> None:
    folder = tmp_path / "reminderd" / "dev-db"
    absent = dev_db(tmp_path, "status")
    assert (absent.returncode, absent.stdout) == (
        3, f"absent: `reminderd dev-db start` creates it (in {folder})\n"
    )

    first = dev_db(tmp_path, "start")
    assert first.returncode == 0, first.stderr
    [url] = first.stdout.splitlines()
    assert url.startswith("postgresql://reminderd:") and url.endswith("/reminderd")
    assert "@127.0.0.1:" in url
    assert "applied 0001," in first.stderr and f"(head {head_revision()})" in first.stderr
    try:
        assert asyncio.run(fetch(url, "SELECT version_num FROM reminderd.alembic_version")) == head_revision()
        assert asyncio.run(fetch(url, "SHOW listen_addresses")) == "127.0.0.1"  # loopback only
        assert asyncio.run(fetch(url, "SHOW fsync")) == "on"  # kept: durable, unlike the throwaway one
        without_password = url.replace(url.split("//")[1].split("@")[0], "reminderd")
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(fetch(without_password, "SELECT 1"))
        if os.geteuid() == 0:  # initdb refuses root: the server runs as postgres
            pid = int((Path(_cluster(tmp_path)) / "data" / "postmaster.pid").read_text().split()[0])
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
            assert uid == int(subprocess.check_output(["id", "-u", "postgres"], text=True))
        assert (folder / "state.json").stat().st_mode & 0o077 == 0  # the password is its owner's alone

        again = dev_db(tmp_path, "start", "--export")
        assert again.returncode == 0 and "already at head" in again.stderr
        assert again.stdout == f"export REMINDERD_DATABASE_URL={url}\n"  # the same database, idempotent
        assert dev_db(tmp_path, "url").stdout == f"{url}\n"
        running = dev_db(tmp_path, "status")
        assert running.returncode == 0 and running.stdout.startswith("running on 127.0.0.1:")

        assert dev_db(tmp_path, "stop").stderr == "reminderd dev-db: stopped\n"
        assert dev_db(tmp_path, "stop").stderr == "reminderd dev-db: not running\n"
        assert dev_db(tmp_path, "status").returncode == 3
        restarted = dev_db(tmp_path, "start")
        assert restarted.returncode == 0 and restarted.stdout == f"{url}\n"  # kept across runs
    finally:
        deleted = dev_db(tmp_path, "delete")
    assert deleted.stderr == f"reminderd dev-db: deleted {folder}\n"
    assert not folder.exists()
    assert dev_db(tmp_path, "url").returncode == 1


def _cluster(data_home: Path) -> str:
    import json

    state = json.loads((data_home / "reminderd" / "dev-db" / "state.json").read_text(encoding="utf-8"))
    return str(state["cluster_dir"])
