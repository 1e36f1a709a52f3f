"""(14) contacts import, (15) staging a broadcast over 14 zones, (16) delivering each zone's wave.

(14) `reminderd contacts import` (the real CLI, a subprocess) of a CSV of contacts from several
    countries: E.164 phones, national ones with their country, a share with their own timezone.
(15) `reminderd.broadcast` of one wall time to every contact, spread over 14 zones: one statement,
    timed; then every zone's instant checked against Python's zoneinfo.
(16) The daemon delivering a broadcast's waves: the waves (14 zones) are staged for real, then
    moved to a few seconds apart (real zones' waves are hours apart; the daemon's job per wave is
    the same), and the lateness of the first `wave_n` receipts of each wave is measured.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import re
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from bench import ROOT
from bench.harness import (
    TENANT,
    Bench,
    CpuMeter,
    Databases,
    bench_daemon,
    describe_cpu,
    received_at_least,
    tenant_database,
    wait_for_quiet,
    wait_idle,
    wait_until,
)
from bench.report import fmt_rate, percentile, say, section
from reminderd.testing import CLI_COMMAND, die_with_parent

ZONES = [
    "Pacific/Auckland", "Australia/Sydney", "Asia/Tokyo", "Asia/Shanghai", "Asia/Kolkata", "Asia/Dubai",
    "Europe/Moscow", "Europe/Berlin", "Europe/London", "America/Sao_Paulo", "America/New_York",
    "America/Chicago", "America/Denver", "America/Los_Angeles",
]
# (phone prefix in E.164, digits to add, country) of real numbering plans; national ones below.
E164_PLANS = [("+1212555", 4, "US"), ("+1312555", 4, "US"), ("+14155", 6, "US"), ("+91987", 7, "IN"),
              ("+61293", 6, "AU"), ("+5511912", 6, "BR"), ("+7495", 7, "RU"), ("+4930", 8, "DE"),
              ("+4420794", 5, "GB"), ("+81312", 6, "JP")]
NATIONAL_PLANS = [("020 7946 ", 4, "GB"), ("(312) 555-", 4, "US"), ("98765 ", 5, "IN")]
_RATE = re.compile(r"in ([\d.]+) s, ([\d,]+)/s")


def write_contacts(path: Path, n: int) -> None:
    """n contacts: 70 % E.164 phones, 15 % national phones with their country, 15 % own timezone."""
    rng = random.Random(9)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["contact_id", "phone", "country", "timezone", "first_name"])
        for i in range(n):
            kind = rng.random()
            if kind < 0.70:
                prefix, digits, country = rng.choice(E164_PLANS)
                out.writerow([f"c{i}", prefix + "".join(rng.choice("0123456789") for _ in range(digits)), "",
                              "",
                              f"n{i}"])
            elif kind < 0.85:
                prefix, digits, country = rng.choice(NATIONAL_PLANS)
                out.writerow([f"c{i}", prefix + "".join(rng.choice("0123456789") for _ in range(digits)),
                              country,
                              "", f"n{i}"])
            else:
                out.writerow([f"c{i}", "", "", rng.choice(ZONES), f"n{i}"])


async def import_contacts(bench: Bench, dbs: Databases) -> None:
    n, report = bench.sizes.contacts_import_n, bench.report
    section(f"(14) contacts import: {n:,} contacts from a CSV (phones of 10 countries, national ones too)")
    with tempfile.TemporaryDirectory(prefix="reminderd-bench-") as directory:
        path = Path(directory) / "contacts.csv"
        write_contacts(path, n)
        async with tenant_database(dbs, bench.receiver, "import") as (_name, url, db):
            await db.execute("UPDATE reminderd.tenants SET timezone = 'UTC' WHERE id = $1", TENANT)
            await wait_for_quiet(bench.receiver.pid, dbs.postmaster_pid)
            meter = CpuMeter(None, bench.receiver.pid, dbs.postmaster_pid)
            cli_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *CLI_COMMAND, "--database-url", url, "contacts", "import", TENANT, str(path), cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
            )
            out, err = await asyncio.wait_for(process.communicate(), 300)
            wall_s = time.perf_counter() - started
            await _backends_gone(db)
            _, used = meter.stop()
            cli_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used["cli"] = (cli_after.ru_utime + cli_after.ru_stime
                           - cli_before.ru_utime - cli_before.ru_stime)
            used["other"] = max(0.0, used["other"] - used["cli"])
            if process.returncode != 0:
                raise RuntimeError(f"contacts import exited {process.returncode}: {err.decode()[-2000:]}")
            sources = await db.fetch("SELECT coalesce(timezone_source, 'tenant') AS source, count(*)"
                                     " FROM reminderd.contacts GROUP BY 1 ORDER BY 2 DESC")
            stored = sum(row["count"] for row in sources)
    said = out.decode().strip()
    found = _RATE.search(said)
    if found is None or stored != n:
        raise RuntimeError(f"unexpected import result ({stored:,} contacts stored): {said}")
    rate = float(found.group(2).replace(",", ""))
    say(said)
    say(f"wall time including the CLI's start: {wall_s:.2f}s ({fmt_rate(n / wall_s)}); zones by source: "
        + ", ".join(f"{row['source']} {row['count']:,}" for row in sources))
    say(describe_cpu(wall_s, used) + f"; per contact: cli {1e6 * used['cli'] / n:.1f} us, "
        f"postgres {1e6 * used['postgres'] / n:.1f} us")
    report.add("(14) contacts import", f"{rate:,.0f}/s", ">= 50,000/s", rate >= 50_000)


async def _backends_gone(db: asyncpg.Connection) -> None:
    """Until the CLI's backends have ended (bounded), so their CPU is counted."""
    async def gone() -> bool:
        left: int = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        return left == 0

    async def progress() -> str:
        return "the import's connections still open"

    await wait_until("the import's connections closed", gone, time.time() + 10, None, progress, 0.02)


async def _contacts_in_zones(db: asyncpg.Connection, per_zone: int) -> None:
    """per_zone contacts in each of ZONES (their own timezone field), loaded in batches."""
    items = [{"contact_id": f"{zone.split('/')[-1].lower()}_{i}", "timezone": zone}
             for zone in ZONES for i in range(per_zone)]
    for start in range(0, len(items), 20_000):
        await db.execute("SELECT reminderd.upsert_contacts($1, $2::jsonb)", TENANT,
                         json.dumps(items[start:start + 20_000]))


def _wall_in_days(days: int) -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, 9, 0)


async def stage(bench: Bench, dbs: Databases) -> None:
    n, report = bench.sizes.broadcast_n, bench.report
    per_zone = n // len(ZONES)
    total = per_zone * len(ZONES)
    section(f"(15) broadcast staging: {total:,} contacts over {len(ZONES)} zones, one call")
    async with tenant_database(dbs, bench.receiver, "stage") as (_name, _url, db):
        await _contacts_in_zones(db, per_zone)
        await db.execute("VACUUM ANALYZE reminderd.contacts")
        local_time = _wall_in_days(3)
        await wait_for_quiet(bench.receiver.pid, dbs.postmaster_pid)
        meter = CpuMeter(None, bench.receiver.pid, dbs.postmaster_pid)
        started = time.perf_counter()
        broadcast_id = await db.fetchval(
            "SELECT reminderd.broadcast($1, 'bf', local_time => $2, everyone => true, payload => $3::jsonb)",
            TENANT, local_time, '{"offer": "BF30", "text": "Everything 30% off, today only."}')
        staging_s = time.perf_counter() - started
        wall, used = meter.stop()
        waves = await db.fetch(
            "SELECT timezone, count(*), min(fire_at) AS first, max(fire_at) AS last"
            " FROM reminderd.scheduled_messages WHERE broadcast_id = $1 GROUP BY 1", broadcast_id)
        progress = await db.fetchrow("SELECT staged, waiting FROM reminderd.broadcasts WHERE id = $1",
                                     broadcast_id)
    wrong = [(w["timezone"], w["first"], w["last"]) for w in waves
             if not (w["first"] == w["last"] == local_time.replace(tzinfo=ZoneInfo(w["timezone"])))
             or w["count"] != per_zone]
    if len(waves) != len(ZONES) or wrong or progress["staged"] != total:
        raise RuntimeError(f"staged waves disagree with zoneinfo: {wrong or waves}")
    first = min(waves, key=lambda w: w["first"])
    say(f"staged {total:,} rows in {staging_s:.2f}s ({fmt_rate(total / staging_s)}); every zone's instant "
        f"equals zoneinfo's for {local_time:%Y-%m-%d %H:%M} (first {first['timezone']} at "
        f"{first['first'].astimezone(UTC):%Y-%m-%dT%H:%MZ}); progress: {progress['staged']:,} staged")
    say(describe_cpu(wall, used))
    report.add("(15) broadcast staging", f"{staging_s:.2f} s for {total:,}", "< 10 s", staging_s < 10)


async def waves(bench: Bench, dbs: Databases) -> None:
    wave_n, report, receiver = bench.sizes.wave_n, bench.report, bench.receiver
    per_zone = wave_n + wave_n // 5
    total = per_zone * len(ZONES)
    spacing_s = bench.sizes.wave_spacing_s
    section(f"(16) waves: a broadcast to {len(ZONES)} zones x {per_zone:,} contacts, waves {spacing_s:g}s "
            f"apart; "
            f"lateness of the first {wave_n:,} of each")
    async with tenant_database(dbs, receiver, "waves") as (name, url, db):
        await _contacts_in_zones(db, per_zone)
        broadcast_id = await db.fetchval(
            "SELECT reminderd.broadcast($1, 'bf', local_time => $2, everyone => true)", TENANT,
                _wall_in_days(3))
        async with bench_daemon(bench, url) as daemon:
            await wait_idle(daemon, dbs.admin, name)
            await wait_for_quiet(receiver.pid, dbs.postmaster_pid)
            start_at = time.time() + 6.0
            # Zone k's wave at start_at + k * spacing, in the order real zones would go.
            await db.execute(
                "UPDATE reminderd.scheduled_messages m SET fire_at = to_timestamp($2) + z.k * "
                "make_interval(secs => $3)"
                " FROM (SELECT timezone, dense_rank() OVER (ORDER BY min(fire_at)) - 1 AS k"
                "       FROM reminderd.scheduled_messages WHERE broadcast_id = $1 GROUP BY timezone) z"
                " WHERE m.broadcast_id = $1 AND m.timezone = z.timezone", broadcast_id, start_at, spacing_s)
            if time.time() > start_at:
                raise RuntimeError("moving the waves took longer than the headroom before the first")
            meter = CpuMeter(daemon.pid, receiver.pid, dbs.postmaster_pid)

            async def progress() -> str:
                return f"received {receiver.count():,} of {total:,}"

            deadline = start_at + len(ZONES) * spacing_s + 120
            await wait_until("every wave received", received_at_least(receiver, total), deadline, daemon,
                             progress)
            wall, used = meter.stop()
        arrivals = receiver.dump()
    by_wave: dict[str, list[float]] = {}
    for arrived, _webhook_id, _ref, scheduled in arrivals:
        by_wave.setdefault(scheduled, []).append(arrived)
    lateness = []
    for scheduled, times in sorted(by_wave.items()):
        due = datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp()
        first = sorted(t - due for t in times)[:wave_n]
        lateness.append((scheduled, percentile(first, 50), percentile(first, 99), max(first), len(times)))
    worst = max(lateness, key=lambda row: row[2])
    for scheduled, p50, p99, late_max, count in lateness:
        say(f"  wave {scheduled}: {count:,} received; first {wave_n:,}: p50 {1000 * p50:.0f} ms, "
            f"p99 {1000 * p99:.0f} ms, max {1000 * late_max:.0f} ms")
    say(describe_cpu(wall, used))
    if len(lateness) != len(ZONES) or min(row[1] for row in lateness) < 0:
        raise RuntimeError(f"expected {len(ZONES)} waves, none early: {lateness}")
    report.add("(16) wave lateness p99 (worst wave)", f"{1000 * worst[2]:.0f} ms", "< 1 s", worst[2] < 1.0)


async def run(bench: Bench, dbs: Databases) -> None:
    """(14), (15) and (16), each a failure of its own."""
    for title, scenario, limit_s in (("(14) contacts import", import_contacts, 600),
                                     ("(15) broadcast staging", stage, 600), ("(16) waves", waves, 900)):
        try:
            await asyncio.wait_for(scenario(bench, dbs), limit_s)
        except Exception as exc:
            bench.report.error(title, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run the bench: make bench (or .venv/bin/python bench/run.py)")
