"""reminderd benchmark: one run, one report, every number measured on this machine.

    .venv/bin/python bench/run.py            # full run, a few minutes
    .venv/bin/python bench/run.py --quick    # smaller sizes, a smoke run
    .venv/bin/python bench/run.py --profile  # also py-spy the daemon during one extra delivery run

Scenarios (see bench/README.md for what each number means):
 (1) HTTP ceiling: a plain aiohttp client, signing each body, POSTing to the bench receiver.
 (2) reminderd delivering due rows to the same receiver (log level warning, then info to /dev/null).
 (3) timer precision of an idle daemon: lateness of messages spread over the next seconds.
 (4) burst: many rows due at one instant.
 (5) claim cost vs backlog: EXPLAIN (ANALYZE, BUFFERS) of the claim with 0 and 1M future rows.
 (6) daemon peak RSS (VmHWM) at the end of (2).

Exit status: 0 every target passed, 1 some target failed, 2 a scenario could not run (error/timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for entry in (str(ROOT), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import uvloop  # noqa: E402
from receiver import ReceiverProcess  # noqa: E402

from reminderd.migrate import upgrade  # noqa: E402
from reminderd.queries import QUERIES  # noqa: E402
from reminderd.signing import generate_secret, sign  # noqa: E402
from reminderd.testing import Cluster, free_port, throwaway_cluster  # noqa: E402

CONCURRENCY = 64
TENANT = "bench"
TEMPLATE_DB = "bench_template"
DAEMON_ENV: dict[str, str] = {}  # --daemon-env KEY=VALUE: settings to try on every daemon
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY_HZ = 500

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


FULL = Sizes(ceiling_n=10_000, deliver_n=10_000, timer_n=200, timer_span_s=20.0, burst_n=5_000,
             backlog_n=1_000_000)
QUICK = Sizes(ceiling_n=2_000, deliver_n=2_000, timer_n=50, timer_span_s=5.0, burst_n=1_000,
              backlog_n=100_000)


# Report -----------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    value: str
    target: str = "-"
    status: str = "INFO"  # PASS, FAIL, INFO or ERROR


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, metric: str, value: str, target: str = "-", ok: bool | None = None) -> None:
        status = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append(Row(metric, value, target, status))

    def error(self, scenario: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.errors.append(f"{scenario}: {text}")
        self.rows.append(Row(scenario, "did not complete", "-", "ERROR"))
        say(f"!! {scenario} FAILED: {text}")

    def print_summary(self) -> None:
        widths = [max(len(r.metric) for r in self.rows), max(len(r.value) for r in self.rows),
                  max(len(r.target) for r in self.rows), 6]
        widths = [max(w, len(h)) for w, h in zip(widths, ("metric", "value", "target", "result"), strict=True)]
        line = "  ".join("-" * w for w in widths)
        say("")
        say("=" * len(line))
        say("SUMMARY")
        say("=" * len(line))
        say("  ".join(h.ljust(w) for h, w in zip(("metric", "value", "target", "result"), widths, strict=True)))
        say(line)
        for r in self.rows:
            cells = (r.metric, r.value, r.target, r.status)
            say("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
        say(line)
        statuses = Counter(r.status for r in self.rows)
        say(", ".join(f"{statuses[kind]} {kind}" for kind in ("PASS", "FAIL", "ERROR", "INFO")))
        for text in self.errors:
            say(f"error: {text}")

    def exit_code(self) -> int:
        if any(r.status == "ERROR" for r in self.rows):
            return 2
        return 1 if any(r.status == "FAIL" for r in self.rows) else 0


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say("")
    say(f"== {title} " + "=" * max(0, 90 - len(title)))


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}/s"


# Processes and CPU ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            after_comm = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(after_comm[11]) + int(after_comm[12])) / CLK_TCK


POSTMASTER: dict[str, int] = {}  # {"pid": …} once the bench's own cluster runs


def postgres_pids() -> list[int]:
    """The bench cluster's postmaster and its children (not other PostgreSQL servers here)."""
    postmaster = POSTMASTER.get("pid")
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


class CpuMeter:
    """CPU seconds used by the daemon, the receiver, PostgreSQL and this bench over a window."""

    def __init__(self, daemon_pid: int | None, receiver_pid: int) -> None:
        self.pids = {"daemon": daemon_pid, "receiver": receiver_pid, "bench": os.getpid()}
        self.started_wall = time.time()
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items() if pid}
        sample["postgres"] = sum(cpu_seconds(pid) for pid in postgres_pids())
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


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot, all cores."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


NOISY_CORES = 0.25  # CPU used by other processes above which a measurement is marked noisy


async def wait_for_quiet(receiver_pid: int, max_wait_s: float = 30.0) -> float:
    """Wait (bounded) until other processes use less than NOISY_CORES; return their last share."""
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter(None, receiver_pid)
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


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the bench dies, so no daemon outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Daemon:
    """`python -m reminderd.cli run` as a subprocess; its output drained (kept: the last lines)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.http_port = 0
        self.tail: deque[str] = deque(maxlen=50)
        self._readers = [asyncio.create_task(self._drain(stream))
                         for stream in (process.stdout, process.stderr) if stream is not None]

    @classmethod
    async def start(cls, database_url: str, *, log_level: str = "warning", to_devnull: bool = False,
                    extra_env: dict[str, str] | None = None) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERD_")}
        env.update(
            REMINDERD_DATABASE_URL=database_url,
            REMINDERD_ALLOWED_CALLBACK_NETWORKS="127.0.0.0/8",
            REMINDERD_CONCURRENCY=str(CONCURRENCY),
            REMINDERD_LOG_LEVEL=log_level,
            # The health/metrics endpoint on a free port: the default (9464) may be taken by
            # another daemon on this machine, and the daemon exits when it cannot listen.
            REMINDERD_HTTP_PORT=str(free_port()),
        )
        env.update(extra_env or {})
        env.update(DAEMON_ENV)
        http_port = int(env["REMINDERD_HTTP_PORT"])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reminderd.cli", "run", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL if to_devnull else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent,
        )
        daemon = cls(process)
        daemon.http_port = http_port
        return daemon

    async def metrics(self) -> dict[str, float]:
        """The daemon's Prometheus counters, summed over label sets ({} when unavailable)."""
        if not self.http_port:
            return {}
        totals: dict[str, float] = {}
        try:
            async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{self.http_port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
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

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.tail.append(line.decode(errors="replace").rstrip())

    def output(self) -> str:
        return "\n".join(self.tail) or "(no output)"

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise RuntimeError(f"the daemon exited with status {self.process.returncode}:\n{self.output()}")

    async def wait_idle(self, admin: asyncpg.Connection, database: str, timeout_s: float = 30.0) -> float:
        """Wait until the daemon LISTENs (its claim loop starts right after), then let it settle.

        Returns the seconds from spawn to listening (interpreter start, imports, connecting).
        """
        started = time.monotonic()
        while True:
            self.check_alive()
            listening = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND application_name = 'reminderd-listen'", database,
            )
            if listening:
                break
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the daemon did not connect within {timeout_s} s:\n{self.output()}")
            await asyncio.sleep(0.02)
        ready_s = time.monotonic() - started
        await asyncio.sleep(0.5)  # first claim and housekeeping pass done: idle
        self.check_alive()
        return ready_s

    def memory_kb(self) -> dict[str, int]:
        values = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in {"VmHWM", "VmRSS"}:
                    values[key] = int(rest.split()[0])
        return values

    async def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._readers), 5)
        return self.process.returncode or 0


@contextlib.asynccontextmanager
async def running_daemon(database_url: str, **kwargs: Any) -> AsyncIterator[Daemon]:
    daemon = await Daemon.start(database_url, **kwargs)
    try:
        yield daemon
    finally:
        await daemon.stop()


# Database ---------------------------------------------------------------------------------------


class Databases:
    """One throwaway cluster, a migrated template, and a fresh clone per scenario."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.admin: asyncpg.Connection | None = None
        self._made = 0

    async def setup(self) -> None:
        self.admin = await asyncpg.connect(self.cluster.url("postgres"))
        await self.admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        await asyncio.to_thread(upgrade, self.cluster.url(TEMPLATE_DB))

    async def enable_pg_stat_statements(self) -> None:
        """Restart the cluster with pg_stat_statements loaded (profiling only: it costs a little)."""
        assert self.admin is not None
        await self.admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        await self.admin.close()
        await asyncio.to_thread(self.cluster.stop, "fast")
        await asyncio.to_thread(self.cluster.start)
        self.admin = await asyncpg.connect(self.cluster.url("postgres"))
        with contextlib.suppress(OSError, ValueError, IndexError):
            POSTMASTER["pid"] = int((self.cluster.datadir / "postmaster.pid").read_text().split()[0])

    async def fresh(self, label: str) -> tuple[str, str]:
        assert self.admin is not None
        self._made += 1
        name = f"bench_{self._made}_{label}"
        await self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        return name, self.cluster.url(name)

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()


async def add_tenant(db: asyncpg.Connection, callback_url: str) -> str:
    secret = generate_secret()
    await db.execute(
        "INSERT INTO reminderd.tenants (id, callback_url, signing_secret) VALUES ($1, $2, $3)",
        TENANT, callback_url, secret,
    )
    return secret


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], deadline: float,
                     daemon: Daemon | None, progress: Callable[[], Awaitable[str]],
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


# (1) HTTP ceiling -------------------------------------------------------------------------------


BODY_FORMAT = (
    b'{"id":%d,"tenant_id":"bench","ref_id":"ceiling:%d","scheduled_for":"2026-11-23T09:30:00.000Z",'
    b'"attempt":1,"payload":{"to": "alice@example.com", "kind": "reminder", "text": "Your table for two '
    b'is booked for 19:30 tomorrow.", "channel": "email", "user_id": %d}}'
)


async def http_ceiling(receiver: ReceiverProcess, n: int, report: Report, runs: int = 3) -> float:
    section(f"(1) HTTP ceiling: plain aiohttp client, {n:,} signed POSTs, concurrency {CONCURRENCY}, "
            f"median of {runs} runs")
    say(f"body {len(BODY_FORMAT % (0, 0, 0))} bytes, signed with reminderd.signing.sign per request")
    rates = []
    for run in range(1, runs + 1):
        await wait_for_quiet(receiver.pid)
        rate, wall, used = await asyncio.wait_for(_ceiling_run(receiver, n), 120)
        rates.append(rate)
        say(f"run {run}: {n:,} POSTs in {n / rate:.3f}s -> {fmt_rate(rate)}; {describe_cpu(wall, used)}")
        say(f"       {describe_per_delivery(n, used)}")
    rate = percentile(rates, 50)
    say(f"HTTP ceiling (median): {fmt_rate(rate)}")
    report.add("(1) HTTP ceiling (aiohttp client -> receiver)", fmt_rate(rate))
    return rate


async def _ceiling_run(receiver: ReceiverProcess, n: int) -> tuple[float, float, dict[str, float]]:
    receiver.reset()
    secret = generate_secret()
    failures = 0
    ids = iter(range(1, n + 1))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        timeout=aiohttp.ClientTimeout(total=10),
        headers={"user-agent": "reminderd-bench", "content-type": "application/json"},
    ) as session:

        async def worker() -> None:
            nonlocal failures
            for i in ids:
                body = BODY_FORMAT % (i, i, i)
                webhook_id = f"msg_{i}_1795426200000"
                timestamp_s = int(time.time())
                headers = {
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(timestamp_s),
                    "webhook-signature": sign(secret, webhook_id, timestamp_s, body),
                }
                async with session.post(receiver.url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1

        meter = CpuMeter(None, receiver.pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        wall, used = meter.stop()
    received = receiver.count()
    if failures or received != n:
        raise RuntimeError(f"{failures} non-200 answers, receiver counted {received} of {n}")
    return n / elapsed, wall, used


class _Row(dict):  # type: ignore[type-arg]
    """A claim row for Job.from_row: columns this bench does not know about read as NULL."""

    def __missing__(self, key: str) -> None:
        return None


async def callback_client_ceiling(receiver: ReceiverProcess, n: int, report: Report) -> float:
    """The daemon's own CallbackClient.send (URL check, signing, headers, guarded connector),
    without the database: splits the gap between (1) and (2) into HTTP side and pipeline side."""
    from datetime import UTC, datetime

    from reminderd.callback import CallbackClient
    from reminderd.jobs import Job
    from reminderd.settings import Settings

    section(f"(1b) reminderd's CallbackClient alone (no database): {n:,} jobs, concurrency {CONCURRENCY}")
    settings = Settings.from_env({
        "REMINDERD_DATABASE_URL": "postgresql://bench@127.0.0.1/unused",
        "REMINDERD_ALLOWED_CALLBACK_NETWORKS": "127.0.0.0/8",
        "REMINDERD_CONCURRENCY": str(CONCURRENCY),
    })
    secret = generate_secret()
    occurrence = datetime.now(UTC)
    payload = ('{"to": "alice@example.com", "kind": "reminder", "text": "Your table for two is booked '
               'for 19:30 tomorrow.", "channel": "email", "user_id": 1}')
    jobs = [
        Job.from_row(_Row(id=i, tenant_id=TENANT, ref_id=f"client:{i}", payload=payload,
                          callback_url=receiver.url, scheduled_for=occurrence, cron=None, timezone="UTC",
                          attempts=1, max_attempts=None, signing_secret=secret))
        for i in range(1, n + 1)
    ]
    await wait_for_quiet(receiver.pid)
    receiver.reset()
    client = CallbackClient(settings)
    failures: list[str] = []
    try:
        queue = iter(jobs)

        async def worker() -> None:
            for job in queue:
                result = await client.send(job)
                if not result.delivered:
                    failures.append(result.error or "?")

        meter = CpuMeter(None, receiver.pid)
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 120)
        elapsed = time.perf_counter() - started
        wall, used = meter.stop()
    finally:
        await client.close()
    if failures or receiver.count() != n:
        raise RuntimeError(
            f"{len(failures)} failed ({failures[:3]}), receiver counted {receiver.count()} of {n}")
    rate = n / elapsed
    say(f"{n:,} sends in {elapsed:.3f}s -> {fmt_rate(rate)}; {describe_cpu(wall, used)}")
    say(describe_per_delivery(n, used))
    report.add("(1b) CallbackClient.send alone (no DB)", fmt_rate(rate))
    return rate


# (2) + (6) delivery throughput ------------------------------------------------------------------


@dataclass
class DeliveryResult:
    rate: float
    first_to_last_rate: float
    elapsed_s: float
    vm_hwm_kb: int
    vm_rss_kb: int
    noisy: bool


@contextlib.asynccontextmanager
async def tenant_database(
    dbs: Databases, receiver: ReceiverProcess, label: str
) -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    """A fresh clone holding the bench tenant (its callbacks go to `receiver`, whose count is
    reset), and a connection to it: (database name, URL, connection)."""
    name, url = await dbs.fresh(label)
    db = await asyncpg.connect(url)
    try:
        await add_tenant(db, receiver.url)
        receiver.reset()
        yield name, url, db
    finally:
        await db.close()


def received_at_least(receiver: ReceiverProcess, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return receiver.count() >= n

    return check


def sent_at_least(db: asyncpg.Connection, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        sent: int = await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'sent'")
        return sent >= n

    return check


async def deliver(dbs: Databases, receiver: ReceiverProcess, n: int, *, log_level: str, to_devnull: bool,
                  label: str, profile_to: Path | None = None, audit: bool = True) -> DeliveryResult:
    assert dbs.admin is not None
    statements: list[asyncpg.Record] = []
    async with tenant_database(dbs, receiver, label) as (name, url, db):
        if not audit:  # what the audit trail (reminderd.events) costs: the same run without it
            await db.execute(
                "ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER scheduled_messages_audit_insert, "
                "DISABLE TRIGGER scheduled_messages_audit_update"
            )
        if profile_to is not None:
            await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        async with running_daemon(url, log_level=log_level, to_devnull=to_devnull) as daemon:
            ready_s = await daemon.wait_idle(dbs.admin, name)
            spy = None
            if profile_to is not None:
                spy = await start_py_spy(daemon.pid, profile_to)
                await asyncio.sleep(1.0)  # let py-spy attach before the load starts
            await wait_for_quiet(receiver.pid)
            if profile_to is not None:
                await db.execute("SELECT pg_stat_statements_reset()")
            meter = CpuMeter(daemon.pid, receiver.pid)
            before_insert = time.time()
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', 'deliver:' || i, now(), {PAYLOAD_SQL.format(i='i')} "
                "FROM generate_series(1, $1) AS i",
                n,
            )
            committed = time.time()  # the rows exist for the daemon from here on

            all_received = received_at_least(receiver, n)
            all_sent = sent_at_least(db, n)

            async def progress() -> str:
                statuses = await db.fetch(
                    "SELECT status, count(*) FROM reminderd.scheduled_messages GROUP BY status")
                return f"received {receiver.count()}, rows by status {dict(statuses)}"

            deadline = committed + 120
            await wait_until("all received", all_received, deadline, daemon, progress)
            await wait_until("all rows sent", all_sent, deadline, daemon, progress, interval_s=0.02)
            wall, used = meter.stop()
            memory = daemon.memory_kb()
            last_sent = await db.fetchval(
                "SELECT extract(epoch FROM max(sent_at))::float8 FROM reminderd.scheduled_messages")
            deliveries = await db.fetchval("SELECT count(*) FROM reminderd.deliveries")
            durations = await db.fetchrow(
                "SELECT avg(duration_ms)::float8 AS mean, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM reminderd.deliveries")
            counters = await daemon.metrics()
            if spy is not None:
                await daemon.stop()
                await finish_py_spy(spy)
                statements = await db.fetch(
                    "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND query NOT ILIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 12")
        arrivals = receiver.dump()

    times = [row[0] for row in arrivals]
    ids = Counter(row[1] for row in arrivals)
    duplicates = sum(count - 1 for count in ids.values() if count > 1)
    first, last = min(times), max(times)
    done = max(last, last_sent)
    elapsed = done - committed
    rate = n / elapsed
    first_to_last = (n - 1) / (last - first) if last > first else float("inf")
    say(f"daemon listening {ready_s:.2f}s after spawn; rows inserted in {committed - before_insert:.3f}s")
    say(f"commit -> first receipt {1000 * (first - committed):.1f} ms; commit -> last receipt "
        f"{last - committed:.3f}s; commit -> all rows 'sent' {last_sent - committed:.3f}s")
    say(f"received {len(arrivals):,} ({len(ids):,} distinct webhook-ids, {duplicates} duplicates), "
        f"deliveries rows {deliveries:,}")
    say(f"throughput commit -> all sent: {fmt_rate(rate)}; first -> last receipt: {fmt_rate(first_to_last)}")
    say(describe_cpu(wall, used))
    say(describe_per_delivery(n, used))
    say("callback latency as the daemon measured it (deliveries.duration_ms): "
        f"mean {durations['mean']:.1f} ms, "
        f"p50 {durations['p50']:.0f} ms, p99 {durations['p99']:.0f} ms")
    claims = counters.get("reminderd_claim_batch_size_count")
    if claims:
        rows = counters.get("reminderd_claim_batch_size_sum", 0.0)
        say(f"claim queries (daemon metrics, whole run incl. idle polls): {claims:.0f}, "
            f"{rows / claims:.1f} rows per claim on average")
    say(f"daemon memory at the end: VmHWM {memory['VmHWM'] / 1024:.1f} MB, "
        f"VmRSS {memory['VmRSS'] / 1024:.1f} MB")
    if statements:
        say("PostgreSQL time by statement during the run (pg_stat_statements: server execution time, "
            "triggers included in their statement):")
        say(f"  {'calls':>6} {'total ms':>9} {'ms/call':>8} {'rows':>7}  statement")
        for row in statements:
            text = " ".join(row["query"].split())
            total_ms, calls = row["total_exec_time"], row["calls"]
            say(f"  {calls:>6} {total_ms:>9.1f} {total_ms / calls:>8.3f} {row['rows']:>7}  {text[:110]}")
    if duplicates or len(ids) != n or deliveries != n:
        raise RuntimeError(f"delivery was not exactly once: {len(ids)} ids, {duplicates} duplicates, "
                           f"{deliveries} deliveries rows for {n} messages")
    if noisy(wall, used):
        say(f"warning: other processes used {100 * used['other'] / wall:.0f}% of a core during this run: "
            "the rate above is pessimistic")
    return DeliveryResult(rate, first_to_last, elapsed, memory["VmHWM"], memory["VmRSS"], noisy(wall, used))


async def start_py_spy(pid: int, output: Path) -> asyncio.subprocess.Process:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", str(PY_SPY_HZ), "--nonblocking", "--format", "raw",
        "--output", str(output), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )


async def finish_py_spy(spy: asyncio.subprocess.Process) -> None:
    try:
        _, err = await asyncio.wait_for(spy.communicate(), 30)
    except TimeoutError:
        spy.kill()
        raise RuntimeError("py-spy did not finish within 30 s after the daemon stopped") from None
    if spy.returncode not in (0, None):
        say(f"py-spy exited with {spy.returncode}: {err.decode(errors='replace').strip()[-500:]}")


def print_profile(raw: Path, top: int = 25) -> None:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";")
                  if frame and not frame.startswith("process ")]
        if not frames:
            frames = ["(no Python frame: native code) (native)"]
        own[frames[-1]] += count
        by_area[_area(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        say("py-spy recorded no samples")
        return
    say(f"py-spy: {total:,} busy samples (idle excluded) at {PY_SPY_HZ} Hz; raw stacks in {raw}")
    say("self time by area:")
    for area, count in by_area.most_common(12):
        say(f"  {100 * count / total:5.1f}%  {area}")
    say(f"top {top} functions by self time:")
    for frame, count in own.most_common(top):
        say(f"  {100 * count / total:5.1f}%  {frame}")
    say(f"top {top} functions by inclusive time (excluding the event loop's own frames):")
    shown = 0
    for frame, count in inclusive.most_common():
        if any(skip in frame for skip in ("<module>", "run (asyncio", "run_forever", "_run_once",
                                          "_run (asyncio/events", "main (reminderd/cli",
                                          "_run_daemon", "_event_loop_run", "_run_module",
                                          "run (uvloop", "runners.py")):
            continue
        say(f"  {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break


def _frame_name(frame: str) -> str:
    """'send (reminderd/callback.py:131)' -> 'send (reminderd/callback.py)', shortening site-packages."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _area(frame: str) -> str:
    path = frame.partition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    if top.endswith(".py"):
        return f"stdlib {top}"
    return top or "?"


# (3) timer precision ----------------------------------------------------------------------------


async def timer_precision(dbs: Databases, receiver: ReceiverProcess, sizes: Sizes, report: Report) -> None:
    n, span = sizes.timer_n, sizes.timer_span_s
    section(f"(3) timer precision: {n} messages at random instants over the next {span:g}s, "
            "idle daemon, default poll interval 2s")
    assert dbs.admin is not None
    async with tenant_database(dbs, receiver, "timer") as (name, url, db):
        async with running_daemon(url) as daemon:
            await daemon.wait_idle(dbs.admin, name)
            rng = random.Random(20261123)
            base = time.time() + 1.0  # headroom for the insert itself
            fire_at = {f"timer:{k}": base + rng.uniform(0, span) for k in range(n)}
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', ref, to_timestamp(at), {PAYLOAD_SQL.format(i='0')} "
                "FROM unnest($1::text[], $2::float8[]) AS u(ref, at)",
                list(fire_at), list(fire_at.values()),
            )
            inserted = time.time()
            if inserted > min(fire_at.values()):
                raise RuntimeError("the insert took longer than the headroom before the first message")

            all_received = received_at_least(receiver, n)

            async def progress() -> str:
                return f"received {receiver.count()} of {n}"

            await wait_until("all timer messages received", all_received, max(fire_at.values()) + 15,
                             daemon, progress)
            await asyncio.sleep(0.3)  # anything arriving twice would show up now
        arrivals = receiver.dump()

    lateness_ms = []
    seen: Counter[str] = Counter()
    for arrived, _webhook_id, ref, _scheduled in arrivals:
        seen[ref] += 1
        if seen[ref] == 1:
            lateness_ms.append(1000 * (arrived - fire_at[ref]))
    early = sum(1 for late in lateness_ms if late < 0)
    duplicates = sum(count - 1 for count in seen.values())
    p50, p99, worst = percentile(lateness_ms, 50), percentile(lateness_ms, 99), max(lateness_ms)
    say(f"received {len(arrivals)} ({duplicates} duplicates, {early} early)")
    say(f"lateness (receipt - fire_at): min {min(lateness_ms):.1f} ms, p50 {p50:.1f} ms, p90 "
        f"{percentile(lateness_ms, 90):.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    report.add("(3) timer lateness p50", f"{p50:.1f} ms")
    report.add("(3) timer lateness p99", f"{p99:.1f} ms", "< 50 ms", p99 < 50)
    report.add("(3) timer lateness max", f"{worst:.1f} ms")
    report.add("(3) delivered early / twice", f"{early} / {duplicates}", "0 / 0",
               early == 0 and duplicates == 0)


# (4) burst --------------------------------------------------------------------------------------


async def burst(dbs: Databases, receiver: ReceiverProcess, sizes: Sizes, report: Report) -> None:
    n = sizes.burst_n
    section(f"(4) burst: {n:,} rows due at the same instant T, inserted while the daemon idles")
    assert dbs.admin is not None
    async with tenant_database(dbs, receiver, "burst") as (name, url, db):
        async with running_daemon(url) as daemon:
            await daemon.wait_idle(dbs.admin, name)
            await wait_for_quiet(receiver.pid)
            due = time.time() + 2.5
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', 'burst:' || i, to_timestamp($2), {PAYLOAD_SQL.format(i='i')} "
                "FROM generate_series(1, $1) AS i",
                n, due,
            )
            inserted = time.time()
            if inserted > due:
                raise RuntimeError("the insert took longer than the headroom before T")
            meter = CpuMeter(daemon.pid, receiver.pid)

            all_received = received_at_least(receiver, n)
            all_sent = sent_at_least(db, n)

            async def progress() -> str:
                return f"received {receiver.count()} of {n}"

            await wait_until("burst received", all_received, due + 60, daemon, progress)
            await wait_until("burst rows sent", all_sent, due + 60, daemon, progress, interval_s=0.02)
            wall, used = meter.stop()
            last_sent = await db.fetchval(
                "SELECT extract(epoch FROM max(sent_at))::float8 FROM reminderd.scheduled_messages")
        arrivals = receiver.dump()
    times = sorted(row[0] for row in arrivals)
    first, last = times[0] - due, times[-1] - due
    distinct = len({row[1] for row in arrivals})
    say(f"inserted {due - inserted:.2f}s before T; received {len(times):,} ({distinct:,} distinct ids)")
    say(f"first receipt T+{1000 * first:.1f} ms; median T+{percentile([t - due for t in times], 50):.3f}s; "
        f"last receipt T+{last:.3f}s; all rows 'sent' T+{last_sent - due:.3f}s")
    say(f"drain rate over the burst: {fmt_rate(n / (times[-1] - due))}")
    say(describe_cpu(wall, used) + " (window includes the idle wait until T)")
    if first < 0:
        raise RuntimeError(f"a burst message arrived {-1000 * first:.1f} ms before T")
    report.add("(4) burst first receipt after T", f"{1000 * first:.1f} ms")
    report.add("(4) burst last receipt after T", f"{last:.3f} s", "< 1.5 s", last < 1.5)


# (5) claim cost vs backlog ----------------------------------------------------------------------


@dataclass
class PlanStats:
    execution_ms: float
    planning_ms: float
    hit: int
    read: int
    dirtied: int
    rows: int
    scans: list[str]
    text: str

    @property
    def buffers(self) -> int:
        return self.hit + self.read

    def seq_scans(self, relation: str | None = None) -> list[str]:
        return [s for s in self.scans if s.startswith("Seq Scan") and (relation is None or relation in s)]


def _plan_stats(document: Any) -> PlanStats:
    top = document[0] if isinstance(document, list) else document
    plan = top["Plan"]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node.get("Node Type", "")
        if "Scan" in kind:
            target = node.get("Relation Name") or node.get("CTE Name") or ""
            index = f" using {node['Index Name']}" if node.get("Index Name") else ""
            scans.append(f"{kind} on {target}{index}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return PlanStats(
        execution_ms=float(top.get("Execution Time", 0.0)),
        planning_ms=float(top.get("Planning Time", 0.0)),
        hit=int(plan.get("Shared Hit Blocks", 0)),
        read=int(plan.get("Shared Read Blocks", 0)),
        dirtied=int(plan.get("Shared Dirtied Blocks", 0)),
        rows=int(plan.get("Actual Rows", 0)),
        scans=scans,
        text="",
    )


async def explain_rolled_back(db: asyncpg.Connection, statement: str, *args: Any,
                              setup: str | None = None, runs: int = 5) -> PlanStats:
    """EXPLAIN (ANALYZE, BUFFERS) inside transactions that are rolled back; the median run by time."""

    async def rolled_back(options: str) -> list[Any]:
        transaction = db.transaction()
        await transaction.start()
        try:
            if setup:
                await db.execute(setup)
            return list(await db.fetch(f"EXPLAIN ({options}) {statement}", *args))
        finally:
            await transaction.rollback()

    samples = []
    for _ in range(runs):
        raw = (await rolled_back("ANALYZE, BUFFERS, FORMAT JSON"))[0][0]
        samples.append(_plan_stats(json.loads(raw) if isinstance(raw, str) else raw))
    samples.sort(key=lambda s: s.execution_ms)
    median = samples[len(samples) // 2]
    median.text = "\n".join(r[0] for r in await rolled_back("ANALYZE, BUFFERS, COSTS OFF, TIMING OFF"))
    return median


# lookback_s, batch_size, lease_s, backfill, max lateness: the daemon's defaults
CLAIM_ARGS = (86400.0, 100, 300.0, "send", 1800.0)


async def claim_cost(dbs: Databases, sizes: Sizes, report: Report) -> None:
    backlog = sizes.backlog_n
    section(f"(5) claim cost vs backlog: 100 due rows + 0, then + {backlog:,} future pending rows")
    _name, url = await dbs.fresh("claim")
    db = await asyncpg.connect(url, command_timeout=600)
    try:
        await add_tenant(db, "http://127.0.0.1:9/unused")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
            f"SELECT '{TENANT}', 'due:' || i, now() - interval '1 second', {PAYLOAD_SQL.format(i='i')} "
            "FROM generate_series(1, 100) AS i"
        )
        await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")
        # Both a custom plan (parameters known) and the generic plan a long-lived prepared
        # statement may switch to after five runs (asyncpg caches prepared statements).
        await db.execute(f"PREPARE bench_claim(float8, bigint, float8, text, float8) AS {QUERIES['claim']}")
        execute = "EXECUTE bench_claim(86400, 100, 300, 'send', 1800)"
        results: dict[tuple[int, str], PlanStats] = {}
        for mode in ("custom", "generic"):
            results[(0, mode)] = await explain_rolled_back(
                db, execute, setup=f"SET LOCAL plan_cache_mode = force_{mode}_plan")

        started = time.time()
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
            f"SELECT '{TENANT}', 'future:' || i, now() + interval '1 hour' + i * interval '1 second', "
            f"{PAYLOAD_SQL.format(i='i')} FROM generate_series(1, $1) AS i",
            backlog,
        )
        inserted_s = time.time() - started
        # The 100 rows must still be due inside the lookback (120 s) however long the insert took.
        await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '1 second' "
                         "WHERE ref_id LIKE 'due:%'")
        await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")
        say(f"inserted {backlog:,} future rows in {inserted_s:.1f}s (trigger-validated INSERT ... SELECT "
            f"generate_series), then VACUUM ANALYZE")
        for mode in ("custom", "generic"):
            results[(backlog, mode)] = await explain_rolled_back(
                db, execute, setup=f"SET LOCAL plan_cache_mode = force_{mode}_plan")
        await db.execute("DEALLOCATE bench_claim")

        for (size, mode), stats in results.items():
            say(f"backlog {size:>9,} {mode:>7} plan: execution {stats.execution_ms:.3f} ms (median of 5), "
                f"planning {stats.planning_ms:.3f} ms, buffers hit {stats.hit} read {stats.read} "
                f"dirtied {stats.dirtied}, rows claimed {stats.rows}")
            say(f"{'':>26}scans: {'; '.join(stats.scans)}")
        say(f"claim plan at backlog {backlog:,} (custom, EXPLAIN ANALYZE BUFFERS, COSTS/TIMING OFF):")
        for line in results[(backlog, "custom")].text.splitlines():
            say(f"    {line}")

        for mode in ("custom", "generic"):
            empty, full = results[(0, mode)], results[(backlog, mode)]
            seq = full.seq_scans("scheduled_messages")
            flat_buffers = full.buffers <= 2 * empty.buffers + 50
            flat_time = full.execution_ms <= max(3 * empty.execution_ms, empty.execution_ms + 2.0)
            report.add(f"(5) claim exec time 0 -> {backlog // 1000:,}k backlog ({mode})",
                       f"{empty.execution_ms:.2f} -> {full.execution_ms:.2f} ms", "flat", flat_time)
            report.add(f"(5) claim buffers 0 -> {backlog // 1000:,}k backlog ({mode})",
                       f"{empty.buffers} -> {full.buffers}", "flat", flat_buffers)
            report.add(f"(5) Seq Scan on scheduled_messages ({mode})",
                       "yes: " + "; ".join(seq) if seq else "none", "none", not seq)
            at_zero = empty.seq_scans("scheduled_messages")
            report.add(f"(5) Seq Scan on scheduled_messages, no backlog ({mode})",
                       "yes (100-row table: cheapest plan)" if at_zero else "none")
            other = [s for s in full.seq_scans() if "scheduled_messages" not in s]
            if other:
                say(f"note ({mode}): {'; '.join(other)} (a one-row table: harmless)")

        # The daemon's other periodic statements against the same backlog (information only).
        say("the daemon's other periodic statements at this backlog (rolled back, median of 3):")
        periodic = {
            "seconds_until_next_due (every idle claim-loop pass)": ("seconds_until_next_due", (86400.0,)),
            "expire_missed (housekeeping, every poll)": ("expire_missed", (86400.0, 1000)),
            "reap_expired_leases (housekeeping, every poll)": ("reap_expired_leases", (1000,)),
            "recurring_to_plan (housekeeping, every poll)":
                ("recurring_to_plan", (86400.0, 500, "send", 1800.0)),
        }
        for label, (query, args) in periodic.items():
            stats = await explain_rolled_back(db, QUERIES[query], *args, runs=3)
            seq = stats.seq_scans("scheduled_messages")
            say(f"  {label}: {stats.execution_ms:.3f} ms, buffers {stats.buffers}"
                + (f", SEQ SCAN ({'; '.join(seq)})" if seq else f", {'; '.join(stats.scans)}"))
            report.add(f"(5) {query} at {backlog // 1000:,}k backlog",
                       f"{stats.execution_ms:.2f} ms" + (" (Seq Scan)" if seq else ""))
    finally:
        await db.close()


# Orchestration ----------------------------------------------------------------------------------


def environment() -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    uvloop_version = getattr(uvloop, "__version__", "?")
    return (f"reminderd {commit}{' (+ local changes)' if dirty else ''}; Python {platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}, asyncpg {asyncpg.__version__}, uvloop {uvloop_version}; "
            f"{os.cpu_count()} CPUs ({cpu})")


async def scenarios(args: argparse.Namespace, sizes: Sizes, receiver: ReceiverProcess, report: Report) -> None:
    ceiling: float | None = None
    try:
        ceiling = await http_ceiling(receiver, sizes.ceiling_n, report)
    except Exception as exc:
        report.error("(1) HTTP ceiling", exc)
    try:
        await callback_client_ceiling(receiver, sizes.ceiling_n, report)
    except Exception as exc:
        report.error("(1b) CallbackClient alone", exc)

    section("PostgreSQL: throwaway cluster, migrated template database")
    started = time.time()
    with throwaway_cluster() as cluster:
        dbs = Databases(cluster)
        await dbs.setup()
        assert dbs.admin is not None
        with contextlib.suppress(OSError, ValueError, IndexError):
            POSTMASTER["pid"] = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        version = await dbs.admin.fetchval("SHOW server_version")
        say(f"PostgreSQL {version} on port {cluster.port}, ready and migrated in {time.time() - started:.1f}s "
            "(fsync off, synchronous_commit off)")
        try:
            for log_level, to_devnull, audit, title in (
                ("warning", False, True, "REMINDERD_LOG_LEVEL=warning"),
                ("info", True, True, "default info logging, stdout to /dev/null"),
                ("warning", False, False, "REMINDERD_LOG_LEVEL=warning, audit triggers disabled"),
            ):
                n = sizes.deliver_n
                section(f"(2) reminderd delivering {n:,} due rows, concurrency {CONCURRENCY}, {title}")
                label = log_level if audit else "noaudit"
                try:
                    result = await asyncio.wait_for(
                        deliver(dbs, receiver, n, log_level=log_level, to_devnull=to_devnull, label=label,
                                audit=audit),
                        180,
                    )
                except Exception as exc:
                    report.error(f"(2) delivery, {label}", exc)
                    continue
                tag = "warning" if log_level == "warning" else "info>/dev/null"
                tag += "" if audit else ", no audit"
                mark = " (noisy)" if result.noisy else ""
                report.add(f"(2) reminderd deliveries/s (log {tag})", fmt_rate(result.rate) + mark, "> 3,000/s",
                           result.rate > 3000)
                report.add(f"(2) reminderd first->last receipt/s (log {tag})",
                           fmt_rate(result.first_to_last_rate))
                if ceiling:
                    ratio = result.rate / ceiling
                    say(f"ratio to the HTTP ceiling: {ratio:.2f}")
                    report.add(f"(2) ratio to HTTP ceiling (log {tag})", f"{ratio:.2f}{mark}", ">= 0.8",
                               ratio >= 0.8)
                report.add(f"(6) daemon peak RSS VmHWM (log {tag})", f"{result.vm_hwm_kb / 1024:.1f} MB",
                           "< 100 MB", result.vm_hwm_kb < 100 * 1024)

            for title, run, limit_s in (
                ("(3) timer precision", timer_precision, sizes.timer_span_s + 60),
                ("(4) burst", burst, 120),
                ("(5) claim cost", None, 900),
            ):
                try:
                    if run is None:
                        await asyncio.wait_for(claim_cost(dbs, sizes, report), limit_s)
                    else:
                        await asyncio.wait_for(run(dbs, receiver, sizes, report), limit_s)
                except Exception as exc:
                    report.error(title, exc)

            if args.profile:
                section(f"profile: py-spy on the daemon during one more {sizes.deliver_n:,}-row delivery "
                        "(warning; not counted above)")
                raw = Path(tempfile.mkdtemp(prefix="reminderd-bench-")) / "daemon.pyspy.txt"
                try:
                    await dbs.enable_pg_stat_statements()
                    await asyncio.wait_for(
                        deliver(dbs, receiver, sizes.deliver_n, log_level="warning", to_devnull=False,
                                label="profile", profile_to=raw),
                        240,
                    )
                    print_profile(raw)
                except Exception as exc:
                    report.error("profile", exc)
                    traceback.print_exc()
        finally:
            await dbs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--profile", action="store_true",
                        help="also run py-spy on the daemon during one extra delivery run")
    parser.add_argument("--daemon-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a REMINDERD_* setting for every daemon the bench starts (repeatable)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for item in args.daemon_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("REMINDERD_"):
            parser.error(f"--daemon-env {item!r}: expected REMINDERD_NAME=VALUE")
        DAEMON_ENV[key] = value

    say(f"reminderd bench ({'quick' if args.quick else 'full'} run): {environment()}")
    say(f"sizes: {sizes}")
    with open("/proc/loadavg", encoding="ascii") as handle:
        load = handle.read().split()[:3]
    say(f"load average before the run: {' '.join(load)} (other work on this 2-core machine skews every "
        "number; 'other' in the CPU lines below is CPU used outside the bench's processes)")
    report = Report()
    started = time.time()
    receiver = ReceiverProcess()
    say(f"receiver: pid {receiver.pid} at {receiver.url} (asyncio.Protocol on uvloop, its own process)")

    async def guarded() -> None:
        # SIGTERM or Ctrl-C cancels the scenarios, so every daemon, the cluster and the receiver
        # are cleaned up by their own finally blocks.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        await scenarios(args, sizes, receiver, report)

    try:
        uvloop.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: cleaning up")
        report.rows.append(Row("bench", "interrupted", "-", "ERROR"))
    except Exception as exc:
        traceback.print_exc()
        report.error("bench", exc)
    finally:
        receiver.stop()
    report.print_summary()
    say(f"total bench time {time.time() - started:.0f}s; exit status {report.exit_code()}")
    return report.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
