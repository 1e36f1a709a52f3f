"""A throwaway local PostgreSQL cluster, for the demo and the tests.

Uses the server binaries of an installed PostgreSQL (Debian: /usr/lib/postgresql/NN/bin). initdb
refuses to run as root, so as root only the server runs as the OS user `postgres`, in a temporary
directory it owns, on a free loopback port, with fsync off (nothing here needs to survive a crash).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "reminderd"


class ClusterError(RuntimeError):
    """The throwaway PostgreSQL cluster could not be started."""


def find_bindir() -> Path:
    """Where initdb and postgres live; newest major version first."""
    explicit = os.environ.get("REMINDERD_PG_BINDIR")
    candidates = [explicit] if explicit else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise ClusterError(
        "no PostgreSQL server binaries found (initdb): install them with "
        "`apt-get install postgresql-15`, or set REMINDERD_PG_BINDIR"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    datadir: Path
    port: int
    run_as: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def start(self) -> None:
        log = self.datadir.parent / "postgres.log"
        subprocess.run(
            self._command(
                str(self.bindir / "pg_ctl"), "start", "--wait", "--timeout=60", "--silent",
                "-D", str(self.datadir), "-l", str(log),
                "-o", f"-p {self.port} -k {self.datadir.parent}",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            self._command(
                str(self.bindir / "pg_ctl"), "stop", "--wait", "--silent", "-m", mode,
                "-D", str(self.datadir),
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """Start a fresh cluster on a free loopback port; stop it and delete its files on exit."""
    bindir = find_bindir()
    run_as = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="reminderd-pg-"))
    try:
        if run_as:
            shutil.chown(root, user=run_as)
        datadir = root / "data"
        cluster = Cluster(bindir, datadir, free_port(), run_as)
        _initdb(cluster)
        cluster.start()
        _wait_ready(cluster)
        try:
            yield cluster
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _initdb(cluster: Cluster) -> None:
    result = subprocess.run(
        cluster._command(
            str(cluster.bindir / "initdb"), "-D", str(cluster.datadir), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ClusterError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "shared_buffers": "256MB",
        "log_min_messages": "warning",
    }
    with open(cluster.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# reminderd throwaway cluster: speed over durability\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _wait_ready(cluster: Cluster, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(cluster.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(cluster.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.05)
    raise ClusterError(f"PostgreSQL did not accept connections on port {cluster.port}")
