"""The harness that tests, `reminderd demo` and the benchmark share.

- `throwaway_cluster()`: a local PostgreSQL cluster on a free loopback port, deleted on exit
  (`initdb`, `wait_ready` and `Cluster` also serve `reminderd dev-db`, which keeps one).
- `Receiver`: a real HTTP receiver that records each callback, checks its signature and answers as
  scripted.
- `DaemonProcess` / `running_daemon()`: the real `reminderd run` in a subprocess, its output read as
  it is written.
- `add_tenant()`: a tenant inserted with plain SQL; `add_api_key()`: an API key for it (or an
  operator's), the key returned.

It imports only reminderd's own dependencies (the demo runs without the dev extras): no pytest, no
standardwebhooks (signatures are checked with `reminderd.signing.verify`).

The cluster uses the server binaries of an installed PostgreSQL (Debian: /usr/lib/postgresql/NN/bin).
initdb refuses to run as root, so as root only the server runs as the OS user `postgres`, in a
temporary directory it owns, with fsync off (nothing here needs to survive a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from .signing import verify

# The throwaway cluster ----------------------------------------------------------------------------

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

    def postmaster_pid(self) -> int | None:
        """The running server's process id (None when it is not running)."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def server_pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, …)."""
        return server_processes(self.postmaster_pid())

    def freeze(self) -> list[int]:
        """SIGSTOP the whole server, as a host that hangs would: connections stay open, queries
        neither fail nor answer, new connections are accepted by the kernel and never served.
        Every backend calls setsid(), so one signal to the postmaster's process group would miss
        them: the postmaster is stopped first (it can start no one new), then each of its
        children. Returns the processes stopped, for `thaw`."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            raise ClusterError("the cluster is not running")
        os.kill(postmaster, signal.SIGSTOP)
        stopped = [postmaster]
        for pid in server_processes(postmaster)[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        return stopped

    def thaw(self, stopped: list[int]) -> None:
        """SIGCONT what `freeze` stopped, the postmaster last."""
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

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


def server_processes(postmaster: int | None) -> list[int]:
    """A PostgreSQL server's postmaster and its children (and no other server's), from /proc."""
    if postmaster is None:
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == postmaster:
                pids.append(int(entry))
    return pids


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
        initdb(cluster)
        cluster.start()
        wait_ready(cluster)
        try:
            yield cluster
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# The throwaway cluster trades durability for speed; nothing in it needs to survive a crash.
THROWAWAY_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
}


def initdb(
    cluster: Cluster, *, settings: Mapping[str, str] = THROWAWAY_SETTINGS, password_file: Path | None = None,
    comment: str = "reminderd throwaway cluster: speed over durability",
) -> None:
    """Create the cluster's data directory: superuser SUPERUSER, UTF-8, listening on 127.0.0.1
    only, with `settings` added to postgresql.conf. Without `password_file` every connection is
    trusted; with it, TCP connections need that password (scram-sha-256) and the local socket,
    in a directory only the cluster's owner can enter, stays trusted."""
    auth = ["--auth=trust"] if password_file is None else [
        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}",
    ]
    result = subprocess.run(
        cluster._command(
            str(cluster.bindir / "initdb"), "-D", str(cluster.datadir), "-U", SUPERUSER,
            *auth, "--encoding=UTF8", "--locale=C", "--no-sync",
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ClusterError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    conf = {"listen_addresses": "'127.0.0.1'", "log_min_messages": "warning", **settings}
    with open(cluster.datadir / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write(f"\n# {comment}\n")
        handle.writelines(f"{key} = {value}\n" for key, value in conf.items())


def wait_ready(cluster: Cluster, timeout_s: float = 30.0) -> None:
    """Return once the cluster accepts connections on its port."""
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


async def create_database(admin_url: str, name: str) -> bool:
    """Create the database `name` through the superuser connection `admin_url`, unless it exists;
    whether it was created."""
    connection = await asyncpg.connect(admin_url)
    try:
        if await connection.fetchval("SELECT true FROM pg_database WHERE datname = $1", name):
            return False
        await connection.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await connection.close()


# The receiver ---------------------------------------------------------------------------------------

Answer = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]
"""An HTTP status, optionally with response headers and a body."""


@dataclass
class Received:
    """One request as it arrived, and what the receiver answered."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    headers: dict[str, str]
    received_at: float  # time.time()
    status: int  # the status the receiver answered
    verified: bool | None  # the signature checked against the receiver's secret; None without a secret

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A real HTTP receiver on a free loopback port, answering every path and method.

    It answers 200 unless `script[ref_id]` lists answers to give first (one per request), checks
    each signature when it knows the tenant's `secret`, and holds every request `delay_s` before
    answering (to keep callbacks in flight), and then until `before_answer(request)` returns.
    Requests are recorded on arrival, and `on_receive` is called with each.
    """

    secret: str | None = None
    script: dict[str, list[Answer]] = field(default_factory=dict)
    delay_s: float = 0.0
    on_receive: Callable[[Received], None] | None = None
    before_answer: Callable[[Received], Awaitable[None]] | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""
    in_flight: int = 0  # requests received and not yet answered
    max_in_flight: int = 0  # the most there ever were at once
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callbacks"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        signature = request.headers.get("webhook-signature", "")
        ref = _ref_of(body)
        answers = self.script.get(ref)
        answer = answers.pop(0) if answers else 200
        status, headers, body_out = _parts(answer)
        verified = None
        if self.secret is not None:
            verified = _verified(self.secret, webhook_id, timestamp, body, signature)
        item = Received(
            webhook_id=webhook_id,
            timestamp=timestamp,
            signature=signature,
            body=body,
            headers=dict(request.headers),
            received_at=time.time(),
            status=status,
            verified=verified,
        )
        async with self._changed:
            self.received.append(item)  # on arrival: in flight counts as received
            self._changed.notify_all()
        if self.on_receive is not None:
            self.on_receive(item)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # holding the request open is what is under test
            if self.before_answer is not None:
                await self.before_answer(item)
        finally:
            self.in_flight -= 1
        return web.Response(status=status, headers=headers, body=body_out)

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 15) -> None:
        """Wait until `predicate(received)` holds; TimeoutError saying what arrived if it never does."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.received)), timeout_s)
            except TimeoutError:
                got = len(self.received)
                raise TimeoutError(
                    f"receiver got {got} callbacks: condition not met within {timeout_s} s"
                ) from None

    def by_ref(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = defaultdict(list)
        for item in self.received:
            grouped[item.message["ref_id"]].append(item)
        return grouped


def _ref_of(body: bytes) -> str:
    if not body:
        return ""
    try:
        ref = json.loads(body).get("ref_id", "")
    except (ValueError, AttributeError):
        return ""
    return ref if isinstance(ref, str) else ""


def _parts(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    if isinstance(answer, int):
        return answer, {}, b"scripted answer"
    if len(answer) == 2:
        return answer[0], answer[1], b"scripted answer"
    return answer


def _verified(secret: str, webhook_id: str, timestamp: str, body: bytes, signature: str) -> bool:
    try:
        return verify(secret, webhook_id, int(timestamp), body, signature)
    except ValueError:  # no timestamp, or a webhook-id that cannot have been signed
        return False


# The daemon process ---------------------------------------------------------------------------------

CLI_COMMAND = (sys.executable, "-m", "reminderd.cli")


def daemon_env(database_url: str, **variables: str) -> dict[str, str]:
    """This process's environment without its REMINDERD_* variables, plus the database URL, callbacks
    to loopback addresses allowed, and `variables` (full names: REMINDERD_CONCURRENCY="8")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERD_")}
    env.update(REMINDERD_DATABASE_URL=database_url, REMINDERD_ALLOWED_CALLBACK_NETWORKS="127.0.0.0/8")
    env.update(variables)
    return env


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL when this process dies, so no daemon outlives it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class DaemonProcess:
    """`reminderd run` in a subprocess whose output is read as it is written (a full pipe would block
    the daemon's log writes). Lines are kept in `lines` (the last `keep_lines` of them when given)."""

    def __init__(self, process: asyncio.subprocess.Process, env: Mapping[str, str],
                 keep_lines: int | None = None) -> None:
        self.process = process
        self.env = dict(env)  # what it was started with
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self._logged = asyncio.Condition()
        self._readers = [asyncio.create_task(self._read(stream))
                         for stream in (process.stdout, process.stderr) if stream is not None]

    @classmethod
    async def start(cls, env: Mapping[str, str], *, stdout_to_devnull: bool = False,
                    keep_lines: int | None = None, cwd: Path | None = None,
                    command: str = "run") -> DaemonProcess:
        """Spawn the daemon (or, with command="serve", the HTTP API) with exactly `env` (see
        `daemon_env`); stderr is read with stdout, or alone when stdout goes to /dev/null."""
        process = await asyncio.create_subprocess_exec(
            *CLI_COMMAND, command, env=dict(env), cwd=cwd,
            stdout=asyncio.subprocess.DEVNULL if stdout_to_devnull else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stdout_to_devnull else asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        return cls(process, env, keep_lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            async with self._logged:
                self.lines.append(raw.decode(errors="replace"))
                self._logged.notify_all()

    @property
    def log(self) -> list[dict[str, object]]:
        """The JSON log lines, parsed."""
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def events(self, event: str) -> list[dict[str, object]]:
        return [line for line in self.log if line.get("event") == event]

    async def wait_logged(self, event: str, timeout_s: float = 20) -> None:
        await self.wait_for_log(lambda _: bool(self.events(event)), timeout_s)

    async def wait_for_log(
        self, predicate: Callable[[list[dict[str, object]]], bool], timeout_s: float = 20
    ) -> None:
        """Wait until `predicate(the JSON lines so far)` holds."""
        async with self._logged:
            await asyncio.wait_for(self._logged.wait_for(lambda: predicate(self.log)), timeout_s)

    def output(self) -> str:
        """The output kept, for an error message."""
        return "".join(self.lines).rstrip() or "(no output)"

    def check_alive(self) -> None:
        """RuntimeError with the daemon's output when it has exited."""
        if self.process.returncode is not None:
            raise RuntimeError(f"the daemon exited with status {self.process.returncode}:\n{self.output()}")

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.kill()

    async def exit_code(self, timeout_s: float = 20) -> int:
        """Wait for the daemon to exit by itself and its output to be read."""
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        await asyncio.wait_for(asyncio.gather(*self._readers), timeout_s)
        return code

    async def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; its exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._readers), 5)
        return self.process.returncode or 0


@contextlib.asynccontextmanager
async def running_daemon(
    env: Mapping[str, str], *, stdout_to_devnull: bool = False, keep_lines: int | None = None,
    cwd: Path | None = None, command: str = "run",
) -> AsyncIterator[DaemonProcess]:
    """A `DaemonProcess` (see `DaemonProcess.start`), stopped on the way out (SIGTERM, then SIGKILL)."""
    daemon = await DaemonProcess.start(env, stdout_to_devnull=stdout_to_devnull, keep_lines=keep_lines, cwd=cwd,
                                       command=command)
    try:
        yield daemon
    finally:
        await daemon.stop()


# Rows ----------------------------------------------------------------------------------------------


async def add_tenant(db: asyncpg.Connection, tenant_id: str = "t1",
                     callback_url: str | None = "https://example.com/cb", *,
                     signing_secret: str | None = None) -> str:
    """Insert a tenant with plain SQL; its signing secret (the database generates one unless given)."""
    if signing_secret is None:
        generated: str = await db.fetchval(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ($1, $2) RETURNING signing_secret",
            tenant_id, callback_url,
        )
        return generated
    await db.execute(
        "INSERT INTO reminderd.tenants (id, callback_url, signing_secret) VALUES ($1, $2, $3)",
        tenant_id, callback_url, signing_secret,
    )
    return signing_secret


async def add_api_key(db: asyncpg.Connection, tenant_id: str | None, *, name: str = "test",
                      read_only: bool = False) -> str:
    """An API key for `tenant_id` (None: an operator key), inserted with plain SQL; the key itself."""
    from .apikeys import generate

    made = generate()
    await db.execute(
        "INSERT INTO reminderd.api_keys (prefix, key_hash, tenant_id, name, scopes)"
        " VALUES ($1, $2, $3, $4, $5)",
        made.prefix, made.key_hash, tenant_id, name, ["read"] if read_only else ["read", "write"],
    )
    return made.key


async def api_login_role(database_url: str, role: str) -> None:
    """A login role granted reminderd_api only (what `reminderd serve` connects as), unless it exists."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = " + _literal(role) + ") THEN "
            f'CREATE ROLE "{role}" LOGIN IN ROLE reminderd_api; END IF; END $$'
        )
    finally:
        await connection.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def new_api_key(database_url: str, tenant_id: str | None, *, name: str = "test") -> str:
    """add_api_key() on a connection of its own."""
    connection = await asyncpg.connect(database_url)
    try:
        return await add_api_key(connection, tenant_id, name=name)
    finally:
        await connection.close()


async def api_listening_port(process: DaemonProcess, timeout_s: float = 20) -> int:
    """The port a `reminderd serve` process logged it listens on (REMINDERD_API_PORT=0 picks one)."""
    await process.wait_logged("listening", timeout_s)
    port = process.events("listening")[-1]["port"]
    assert isinstance(port, int)
    return port
