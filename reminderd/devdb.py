"""`reminderd dev-db`: a PostgreSQL for trying reminderd from the command line, in one step.

The same local cluster the demo and the tests start (reminderd.testing), but kept across runs:
durable (fsync on), on 127.0.0.1 only, with a password, in a per-user folder
($XDG_DATA_HOME/reminderd/dev-db, else ~/.local/share/reminderd/dev-db). `start` creates it the
first time, starts it, creates and migrates the database `reminderd` in it, and prints its URL:

    eval "$(reminderd dev-db start --export)"     # sets REMINDERD_DATABASE_URL

As root the server runs as the OS user postgres (initdb refuses root); when postgres cannot reach
the per-user folder (root's home is private) the cluster's files live in postgres's home instead,
and the folder records where.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .testing import (
    SUPERUSER,
    Cluster,
    ClusterError,
    create_database,
    find_bindir,
    free_port,
    initdb,
    wait_ready,
)

if TYPE_CHECKING:
    from .migrate import Migrated

DATABASE = "reminderd"
STATE_FILE = "state.json"
EX_NOT_RUNNING = 3  # `status` of a database that is stopped or not created (as pg_ctl status says it)
# Durable, unlike the throwaway cluster: this one is kept. A small instance for one developer.
DEV_SETTINGS = {"max_connections": "50", "shared_buffers": "128MB"}

Say = Callable[[str], None]


def folder(environ: dict[str, str] | None = None) -> Path:
    """The per-user folder: $XDG_DATA_HOME/reminderd/dev-db, else ~/.local/share/reminderd/dev-db."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "reminderd" / "dev-db"


@dataclass(frozen=True)
class State:
    """What the folder remembers of its cluster (state.json, readable by its owner only)."""

    port: int
    password: str
    cluster_dir: str  # holds data/, postgres.log and the server's socket
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def cluster(self) -> Cluster:
        return Cluster(find_bindir(), Path(self.cluster_dir) / "data", self.port, self.run_as)


class DevDatabase:
    def __init__(self, path: Path | None = None, say: Say | None = None) -> None:
        self.path = path or folder()
        self._say = say or (lambda line: print(f"reminderd dev-db: {line}", file=sys.stderr))

    # What is there -------------------------------------------------------------------------------

    def state(self) -> State | None:
        try:
            return State(**json.loads((self.path / STATE_FILE).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"{self.path / STATE_FILE} is not readable ({exc}): `reminderd dev-db delete` "
                               "and start again") from None

    def running(self, state: State) -> bool:
        cluster = state.cluster()
        result = subprocess.run(
            cluster._command(str(cluster.bindir / "pg_ctl"), "status", "-D", str(cluster.datadir)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return result.returncode == 0

    # Start, stop, delete -------------------------------------------------------------------------

    def start(self) -> tuple[State, Migrated]:
        """Create the cluster if there is none, start it unless it runs, create and migrate the
        database: the state, and what the migration did. Safe to repeat."""
        state = self.state() or self._create()
        if self.running(state):
            self._say(f"running on 127.0.0.1:{state.port}")
        else:
            state = self._start(state)
        self._ensure_database(state)
        from .migrate import migrate  # alembic: only when migrating

        done = migrate(state.url, setting="reminderd dev-db", wait_s=10, say=self._say)
        self._say(str(done))
        return state, done

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        state = self.state()
        if state is None or not self.running(state):
            return False
        state.cluster().stop("fast")
        return True

    def delete(self) -> bool:
        """Stop the server and delete its files and the folder; False when there was none."""
        state = self.state()
        if state is None and not self.path.exists():
            return False
        if state is not None:
            if self.running(state):
                state.cluster().stop("fast")
            shutil.rmtree(state.cluster_dir, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    # How -----------------------------------------------------------------------------------------

    def _create(self) -> State:
        run_as = "postgres" if os.geteuid() == 0 else None
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o711)  # the server's user may pass through; state.json is the owner's alone
        cluster_dir = self._cluster_dir(run_as)
        state = State(port=free_port(), password=secrets.token_urlsafe(18), cluster_dir=str(cluster_dir),
                      run_as=run_as)
        self._say(f"creating a PostgreSQL cluster in {cluster_dir}")
        password_file = cluster_dir / "password"
        password_file.write_text(state.password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        try:
            if run_as:
                shutil.chown(password_file, user=run_as)
            initdb(Cluster(find_bindir(), cluster_dir / "data", state.port, run_as), settings=DEV_SETTINGS,
                   password_file=password_file,
                   comment="reminderd dev-db: kept across runs, loopback only")
        except BaseException:
            shutil.rmtree(cluster_dir, ignore_errors=True)
            raise
        finally:
            password_file.unlink(missing_ok=True)
        self._save(state)
        return state

    def _cluster_dir(self, run_as: str | None) -> Path:
        """Where the cluster's files go: in the folder, unless the server's user cannot reach it."""
        inside = self.path / "cluster"
        if run_as is None or _reachable_by(run_as, self.path):
            target = inside
        else:  # root's home is private: the server's user keeps the files in its own home
            home = Path(pwd.getpwnam(run_as).pw_dir)
            if not home.exists():
                home.mkdir(parents=True)
                shutil.chown(home, user=run_as, group=run_as)
            shared = home / "reminderd-dev-db"
            shared.mkdir(exist_ok=True)
            shutil.chown(shared, user=run_as, group=run_as)
            target = shared / hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:12]
            self._say(f"{run_as} cannot reach {self.path}: keeping the cluster in {target}")
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        if run_as:
            shutil.chown(target, user=run_as, group=run_as)
        return target

    def _start(self, state: State) -> State:
        cluster = state.cluster()
        if not _port_free(state.port):
            state = State(free_port(), state.password, state.cluster_dir, state.run_as)
            self._say(f"port {cluster.port} is taken: moving to {state.port} (the URL changes)")
            self._save(state)
            cluster = state.cluster()
        try:
            cluster.start()
        except subprocess.CalledProcessError:
            log = Path(state.cluster_dir) / "postgres.log"
            raise ClusterError(f"PostgreSQL did not start: see {log}") from None
        wait_ready(cluster)
        self._say(f"started on 127.0.0.1:{state.port}")
        return state

    def _ensure_database(self, state: State) -> None:
        if asyncio.run(create_database(state.url.rpartition("/")[0] + "/postgres", DATABASE)):
            self._say(f"created the database {DATABASE}")

    def _save(self, state: State) -> None:
        target = self.path / STATE_FILE
        temporary = target.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as out:
            json.dump(asdict(state), out, indent=2)
        temporary.replace(target)


def _reachable_by(user: str, path: Path) -> bool:
    """Whether `user` may enter `path` (every directory on the way there)."""
    result = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return result.returncode == 0


def _port_free(port: int) -> bool:
    """Whether the server could listen on `port` (it sets SO_REUSEADDR too: its own connections
    left in TIME_WAIT by the last stop do not count)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def export_line(url: str) -> str:
    """A line for `eval`: export REMINDERD_DATABASE_URL='postgresql://…'."""
    return f"export REMINDERD_DATABASE_URL={shlex.quote(url)}"


def describe(state: State | None, running: bool, path: Path) -> dict[str, Any]:
    """`reminderd dev-db status --json`."""
    if state is None:
        return {"state": "absent", "folder": str(path)}
    return {"state": "running" if running else "stopped", "folder": str(path), "port": state.port,
            "cluster": state.cluster_dir, "url": state.url}
