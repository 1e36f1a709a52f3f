"""What every scenario runs on: the daemon as a process, CPU meters, databases, and waits.

The throwaway cluster and the daemon process come from reminderd.testing (the tests and the demo
use the same); the receiver is bench/receiver.py, a separate fast process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from bench import ROOT
from bench.receiver import ReceiverProcess
from bench.report import Report, say
from reminderd.migrate import upgrade
from reminderd.testing import (
    Cluster,
    DaemonProcess,
    add_tenant,
    daemon_env,
    die_with_parent,
    free_port,
    running_daemon,
    server_processes,
)

CONCURRENCY = 64
TENANT = "bench"
TEMPLATE_DB = "bench_template"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY_HZ = 500
NOISY_CORES = 0.25  # CPU used by other processes above which a measurement is marked noisy

# ~150 bytes of JSON payload (as PostgreSQL prints jsonb), the same shape in (1) and (2).
PAYLOAD_SQL = (
    "jsonb_build_object('kind', 'reminder', 'user_id', {i}, 'channel', 'email', "
    "'to', 'alice@example.com', 'text', 'Your table for two is booked for 19:30 tomorrow.')"
)


@dataclass(frozen=True)
class Sizes:
    ceiling_n: int
    deliver_n: int
    timer_n: int
    timer_span_s: float
    burst_n: int
    backlog_n: int
    write_path_n: int
    contacts_import_n: int = 100_000  # (14)
    broadcast_n: int = 240_000  # (15)
    wave_n: int = 5_000  # (16): the receipts of each wave whose lateness is measured
    wave_spacing_s: float = 3.0
    fair_n: int = 100_000  # (15) tenant A's wave


FULL = Sizes(ceiling_n=10_000, deliver_n=10_000, timer_n=200, timer_span_s=20.0, burst_n=5_000,
             backlog_n=10_000_000, write_path_n=20_000)
QUICK = Sizes(ceiling_n=2_000, deliver_n=2_000, timer_n=50, timer_span_s=5.0, burst_n=1_000,
              backlog_n=100_000, write_path_n=5_000, contacts_import_n=10_000, broadcast_n=24_000, wave_n=500,
              wave_spacing_s=1.5, fair_n=10_000)


@dataclass(frozen=True)
class Bench:
    """What every scenario gets: the sizes of this run, the receiver, the report to add to, and the
    settings given with --daemon-env for every daemon."""

    sizes: Sizes
    receiver: ReceiverProcess
    report: Report
    daemon_settings: Mapping[str, str]
    api_log_level: str = "warning"  # `reminderd serve`'s: info adds its line per request


# CPU -----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            after_comm = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(after_comm[11]) + int(after_comm[12])) / CLK_TCK


def reaped_cpu_seconds(pid: int) -> float:
    """cutime + cstime of one process: the CPU of its children that ended and were waited for
    (a PostgreSQL backend whose connection closed, in its postmaster's), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            after_comm = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(after_comm[13]) + int(after_comm[14])) / CLK_TCK


def postgres_pids(postmaster: int | None) -> list[int]:
    """The bench cluster's postmaster and its children (not other PostgreSQL servers here)."""
    return server_processes(postmaster)


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot, all cores."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU seconds used by the daemon, the receiver, PostgreSQL and this bench over a window."""

    def __init__(self, daemon_pid: int | None, receiver_pid: int, postmaster_pid: int | None) -> None:
        self.pids = {"daemon": daemon_pid, "receiver": receiver_pid, "bench": os.getpid()}
        self.postmaster_pid = postmaster_pid
        self.started_wall = time.time()
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items() if pid}
        # Backends that ended within the window count too (a CLI's connections), in the postmaster's
        # reaped children's CPU.
        sample["postgres"] = sum(cpu_seconds(pid) for pid in postgres_pids(self.postmaster_pid)) + (
            reaped_cpu_seconds(self.postmaster_pid) if self.postmaster_pid else 0.0)
        sample["machine"] = machine_busy_seconds()
        return sample

    def stop(self) -> tuple[float, dict[str, float]]:
        end = self._sample()
        wall = time.time() - self.started_wall
        used = {name: end[name] - self.start.get(name, 0.0) for name in end}
        machine = used.pop("machine")
        # Everything else on the machine (other test runs, kernel work not charged to a process):
        # noise when it is large.
        used["other"] = max(0.0, machine - sum(used.values()))
        return wall, used


async def wait_for_quiet(receiver_pid: int, postmaster_pid: int | None, max_wait_s: float = 30.0) -> float:
    """Wait (bounded) until other processes use less than NOISY_CORES; return their last share."""
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter(None, receiver_pid, postmaster_pid)
        await asyncio.sleep(0.5)
        wall, used = meter.stop()
        other = used["other"] / wall
        if other < NOISY_CORES:
            return other
        if time.monotonic() > deadline:
            say(f"warning: other processes keep using {100 * other:.0f}% of a core; measuring anyway")
            return other
        say(f"waiting for the machine to settle: other processes use {100 * other:.0f}% of a core")
        await asyncio.sleep(2.0)


def noisy(wall: float, used: dict[str, float]) -> bool:
    return used.get("other", 0.0) / wall >= NOISY_CORES


def describe_cpu(wall: float, used: dict[str, float]) -> str:
    parts = [f"{name} {seconds:.2f}s ({100 * seconds / wall:.0f}%)" for name, seconds in used.items()]
    total = sum(used.values())
    return (f"CPU over {wall:.2f}s wall: " + ", ".join(parts)
            + f"; total {100 * total / wall:.0f}% of one core (2 cores = 200%)")


def describe_per_delivery(n: int, used: dict[str, float]) -> str:
    parts = [f"{name} {1e6 * seconds / n:.0f}" for name, seconds in used.items()
             if name != "other" and seconds > 0]
    return "CPU per delivery (us): " + ", ".join(parts)


# The daemon ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_daemon(bench: Bench, database_url: str, *, log_level: str = "warning",
                       to_devnull: bool = False) -> AsyncIterator[DaemonProcess]:
    """The real `reminderd run` with CONCURRENCY and defaults otherwise, plus --daemon-env; its last
    50 lines kept for error messages. Stopped (SIGTERM) on the way out."""
    settings = {
        "REMINDERD_CONCURRENCY": str(CONCURRENCY),
        "REMINDERD_LOG_LEVEL": log_level,
        # The health/metrics endpoint on a free port: the default (9464) may be taken by
        # another daemon on this machine, and the daemon exits when it cannot listen.
        "REMINDERD_HTTP_PORT": str(free_port()),
    }
    env = daemon_env(database_url, **{**settings, **bench.daemon_settings})
    async with running_daemon(env, stdout_to_devnull=to_devnull, keep_lines=50, cwd=ROOT) as daemon:
        yield daemon


async def wait_idle(daemon: DaemonProcess, admin: asyncpg.Connection, database: str,
                    timeout_s: float = 30.0) -> float:
    """Wait until the daemon LISTENs (its claim loop starts right after), then let it settle.

    Returns the seconds from spawn to listening (interpreter start, imports, connecting).
    """
    started = time.monotonic()
    while True:
        daemon.check_alive()
        listening = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
            "AND application_name = 'reminderd-listen'", database,
        )
        if listening:
            break
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the daemon did not connect within {timeout_s} s:\n{daemon.output()}")
        await asyncio.sleep(0.02)
    ready_s = time.monotonic() - started
    await asyncio.sleep(0.5)  # first claim and housekeeping pass done: idle
    daemon.check_alive()
    return ready_s


async def daemon_counters(daemon: DaemonProcess) -> dict[str, float]:
    """The daemon's Prometheus counters, summed over label sets ({} when unavailable)."""
    port = daemon.env.get("REMINDERD_HTTP_PORT", "0")
    if port == "0":
        return {}
    totals: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak) and VmRSS of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in {"VmHWM", "VmRSS"}:
                values[key] = int(rest.split()[0])
    return values


async def start_py_spy(pid: int, output: Path) -> asyncio.subprocess.Process:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", str(PY_SPY_HZ), "--nonblocking", "--format", "raw",
        "--output", str(output), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )


async def finish_py_spy(spy: asyncio.subprocess.Process) -> None:
    try:
        _, err = await asyncio.wait_for(spy.communicate(), 30)
    except TimeoutError:
        spy.kill()
        raise RuntimeError("py-spy did not finish within 30 s after the daemon stopped") from None
    if spy.returncode not in (0, None):
        say(f"py-spy exited with {spy.returncode}: {err.decode(errors='replace').strip()[-500:]}")


# Databases -----------------------------------------------------------------------------------------


class Databases:
    """One throwaway cluster, a migrated template, and a fresh clone per scenario."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._admin: asyncpg.Connection | None = None
        self._made = 0

    @property
    def admin(self) -> asyncpg.Connection:
        """A connection to the cluster's `postgres` database."""
        if self._admin is None:
            raise RuntimeError("Databases.setup() has not run")
        return self._admin

    @property
    def postmaster_pid(self) -> int | None:
        return self.cluster.postmaster_pid()

    async def setup(self) -> None:
        self._admin = await asyncpg.connect(self.cluster.url("postgres"))
        await self._admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        await asyncio.to_thread(upgrade, self.cluster.url(TEMPLATE_DB))

    async def enable_pg_stat_statements(self) -> None:
        """Restart the cluster with pg_stat_statements loaded (profiling only: it costs a little)."""
        await self.admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        await self.admin.close()
        await asyncio.to_thread(self.cluster.stop, "fast")
        await asyncio.to_thread(self.cluster.start)
        self._admin = await asyncpg.connect(self.cluster.url("postgres"))

    async def fresh(self, label: str) -> tuple[str, str]:
        """A new clone of the template: (database name, URL). Then a CHECKPOINT: the shared buffers
        the earlier scenarios (and the clone itself) dirtied are written now, not by this
        scenario's backends as they evict them (see `drop`)."""
        self._made += 1
        name = f"bench_{self._made}_{label}"
        await self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        await self.admin.execute("CHECKPOINT")
        return name, self.cluster.url(name)

    async def drop(self, name: str) -> None:
        """Drop a clone a scenario is done with: its buffers are discarded unwritten, and
        autovacuum does not clean up its rows on the next scenario's CPU. Without this and the
        CHECKPOINT of `fresh`, each scenario paid for the ones before it: (11) measured PostgreSQL
        at 120 us per callback for whichever daemon count ran first and at 205 to 276 us for the
        others, 1 and 2 daemons alike; with them, 105 to 122 us whatever the order."""
        await self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()


@contextlib.asynccontextmanager
async def tenant_database(
    dbs: Databases, receiver: ReceiverProcess, label: str
) -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    """A fresh clone holding the bench tenant (its callbacks go to `receiver`, whose count is
    reset), and a connection to it: (database name, URL, connection)."""
    name, url = await dbs.fresh(label)
    db = await asyncpg.connect(url)
    try:
        await add_tenant(db, TENANT, receiver.url)
        receiver.reset()
        yield name, url, db
    finally:
        await db.close()
        await dbs.drop(name)


# Waits ---------------------------------------------------------------------------------------------


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], deadline: float,
                     daemon: DaemonProcess | None, progress: Callable[[], Awaitable[str]],
                     interval_s: float = 0.05) -> None:
    """Poll `check` until true; fail loudly (with progress and daemon output) at the deadline."""
    while not await check():
        if daemon is not None:
            daemon.check_alive()
        if time.time() > deadline:
            detail = await progress()
            tail = f"\ndaemon output:\n{daemon.output()}" if daemon is not None else ""
            raise TimeoutError(f"{what} not reached in time ({detail}){tail}")
        await asyncio.sleep(interval_s)


def received_at_least(receiver: ReceiverProcess, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return receiver.count() >= n

    return check


def sent_at_least(db: asyncpg.Connection, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        sent: int = await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'sent'")
        return sent >= n

    return check
