"""EXPLAIN (ANALYZE, BUFFERS) of every statement the dashboard runs per page view, on
bench/dashboard_data.py's database (1,000,000 messages, 5,000,000 deliveries): run by
`bench/explain_views.py --dashboard`, printed into docs/sql.md.

Each statement runs as `reminderd serve` runs it (SET ROLE reminderd_api, so under its row-level
security policies), once as an operator sees it (all 50 tenants) and once as one tenant's key
does where the two differ; the plan of the median of three runs is printed with its (instrumented)
execution time, and the summary adds the median wall time of five plain runs. Exit status 1 when
a plan seq-scans scheduled_messages, deliveries or events.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from datetime import timedelta
from typing import Any

import asyncpg

from bench.dashboard_data import load
from bench.explain_views import DATABASE, say
from reminderd.dashboard_rows import FIRES
from reminderd.migrate import upgrade
from reminderd.queries import QUERIES
from reminderd.testing import throwaway_cluster

BIG_TABLE_SEQ_SCAN = re.compile(r"Seq Scan on (scheduled_messages|deliveries|events)\b")
EXECUTION = re.compile(r"Execution Time: ([0-9.]+) ms")
ONE = "t07"


async def timed(db: asyncpg.Connection, sql: str, *args: Any) -> float:
    """The median wall time of five runs of the statement itself (no EXPLAIN: its per-row timing
    inflates row-heavy plans), as reminderd_api, rolled back, in milliseconds."""
    samples = []
    for _ in range(5):
        transaction = db.transaction()
        await transaction.start()
        try:
            await db.execute("SET LOCAL ROLE reminderd_api")
            started = time.perf_counter()
            await db.fetch(sql, *args)
            samples.append(1000 * (time.perf_counter() - started))
        finally:
            await transaction.rollback()
    return statistics.median(samples)


async def explain(db: asyncpg.Connection, sql: str, *args: Any) -> tuple[str, float]:
    """The plan of the median of three runs (by execution time), as reminderd_api, rolled back."""
    runs = []
    for _ in range(3):
        transaction = db.transaction()
        await transaction.start()
        try:
            await db.execute("SET LOCAL ROLE reminderd_api")
            rows = await db.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
        finally:
            await transaction.rollback()
        plan = "\n".join(r[0] for r in rows)
        match = EXECUTION.search(plan)
        runs.append((float(match[1]) if match else float("nan"), plan))
    runs.sort(key=lambda run: run[0])
    return runs[1][1], statistics.median(run[0] for run in runs)


async def statements(db: asyncpg.Connection) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(title, named query, arguments) for every statement of every page, with realistic values."""
    now = await db.fetchval("SELECT now()")
    hour = now.replace(minute=0, second=0, microsecond=0)
    recurring = await db.fetchval(
        "SELECT message_id FROM reminderd.deliveries GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    dead = await db.fetchval("SELECT id FROM reminderd.scheduled_messages WHERE status = 'dead' LIMIT 1")
    newest = await db.fetch("SELECT id FROM reminderd.deliveries ORDER BY id DESC LIMIT 100")
    forever = await db.fetchval("SELECT 'infinity'::timestamptz")
    fires = list(FIRES)
    return [
        ("sign-in: the key by its prefix", "api_key_by_prefix", ("rk_abcdefghijkl",)),
        ("each request: the session's key, and whether it was signed out", "dashboard_session_key",
         ("rk_abcdefghijkl", "A" * 22)),
        ("overview: counts per tenant and status, operator: one half of 50 tenants", "overview_counts_of",
         ([f"t{i:02d}" for i in range(0, 50, 2)],)),
        ("overview: counts by status, one tenant", "overview_counts_tenant", (ONE,)),
        ("overview: the backlog per tenant, operator", "overview_backlog_all", ()),
        ("overview: the backlog, one tenant", "overview_backlog_tenant", (ONE,)),
        ("overview: fires in the last hour and day, operator", "overview_fires_all", ()),
        ("overview: fires, one tenant", "overview_fires_tenant", (ONE,)),
        ("overview: lateness buckets, operator", "overview_lateness_all", ()),
        ("overview: lateness buckets, one tenant", "overview_lateness_tenant", (ONE,)),
        ("upcoming: by hour for 48 h, every tenant", "upcoming_all",
         (hour, hour + timedelta(hours=48), "hour", "UTC")),
        ("upcoming: by hour for 48 h, one tenant", "upcoming_tenant",
         (hour, hour + timedelta(hours=48), "hour", "UTC", ONE)),
        ("upcoming: by minute for the next hour, every tenant", "upcoming_all",
         (now, now + timedelta(hours=1), "minute", "Asia/Kolkata")),
        ("upcoming: one bar's messages, every tenant", "upcoming_messages_all",
         (hour + timedelta(hours=5), hour + timedelta(hours=6), 200)),
        ("upcoming: one bar's messages, one tenant", "upcoming_messages_tenant",
         (hour + timedelta(hours=5), hour + timedelta(hours=6), 200, ONE)),
        ("upcoming: the timezone of a tenant's next message", "upcoming_timezone", (ONE,)),
        ("feed: the last 1,000 fires, every tenant", "feed_recent_all", (0, 0, 1000, fires, "", None, 1000)),
        ("feed: the last 1,000 fires, one tenant", "feed_recent_tenant",
         (0, 0, 1000, fires, "", None, 1000, ONE)),
        ("feed: retries only, among the newest 10,000 fires", "feed_recent_all",
         (0, 0, 1000, ["retry_scheduled"], "", None, 10_000)),
        ("feed: refs starting ref:12, among the newest 10,000 fires of one tenant", "feed_recent_tenant",
         (0, 0, 1000, fires, "ref:12", "ref:13", 10_000, ONE)),
        ("feed: where the stream starts (the newest fire of each table)", "feed_newest", ()),
        ("feed: the fires a NOTIFY named (100 deliveries)", "feed_entries", ([], [r["id"] for r in newest])),
        ("message search: by id", "search_by_id", (None, 123456)),
        ("message search: refs starting ref:1234, operator", "search_by_ref_all",
         ("ref:1234", "ref:1235", 100)),
        ("message search: refs starting ref:1234, one tenant", "search_by_ref_tenant",
         ("ref:1234", "ref:1235", 100, ONE)),
        ("message page: the message and its timing", "dashboard_message", (None, recurring, "send", 1800.0)),
        ("message page: its last 100 attempts (a recurring row with the most)", "dashboard_deliveries",
         (recurring,)),
        ("message page: its trail (events and the attempts' changes)", "dashboard_trail", (recurring,)),
        ("dead letters: newest first, operator", "dead_letters", (None, 0.0, 1e9, None, forever, 0, 100)),
        ("dead letters: error contains 503, dead over an hour, one tenant", "dead_letters",
         (ONE, 3600.0, 1e9, "503", forever, 0, 100)),
        ("dead letters: how many match, operator", "dead_letters_count", (None, 0.0, 1e9, None)),
        ("dead letters: the selected ones", "dead_letters_selected", (None, [dead])),
        ("overview: awaiting approval per tenant, operator", "overview_awaiting_all", ()),
        ("overview: awaiting approval, one tenant", "overview_awaiting_tenant", (ONE,)),
        ("broadcasts: newest first, operator", "dashboard_broadcasts_all", (2**63 - 1, 50, False)),
        ("broadcasts: awaiting approval, one tenant", "dashboard_broadcasts_tenant",
         (2**63 - 1, 50, True, ONE)),
        ("broadcast page: the broadcast", "dashboard_broadcast", (None, 1)),
        ("broadcast page: its waves", "dashboard_broadcast_waves", (1,)),
        ("broadcast page: what it would send per UTC hour", "dashboard_awaiting_hours", ([1],)),
    ]


async def main(rows: int, deliveries: int) -> int:
    with throwaway_cluster() as cluster:
        admin = await asyncpg.connect(cluster.url())
        await admin.execute(f"CREATE DATABASE {DATABASE}")
        await admin.close()
        url = cluster.url(DATABASE)
        await asyncio.to_thread(upgrade, url)
        db = await asyncpg.connect(url)
        try:
            await db.execute("SET jit = off")
            version = await db.fetchval("SHOW server_version")
            started = time.monotonic()
            counts = await load(db, messages=rows, deliveries=deliveries)
            say(f"PostgreSQL {version}; loaded in {time.monotonic() - started:.0f}s: "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
            sizes = await db.fetch(
                "SELECT c.relname, pg_size_pretty(pg_table_size(c.oid)) AS table_size,"
                " pg_size_pretty(pg_indexes_size(c.oid)) AS index_size FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'reminderd' AND c.relname IN ('scheduled_messages', 'deliveries', 'events')"
                " ORDER BY 1"
            )
            for size in sizes:
                say(f"{size['relname']}: {size['table_size']} table, {size['index_size']} indexes")
            say()
            flagged: list[str] = []
            timings: list[tuple[str, float, float]] = []
            for title, name, args in await statements(db):
                plan, execution_ms = await explain(db, QUERIES[name], *args)
                wall_ms = await timed(db, QUERIES[name], *args)
                say(f"--- {title} ({name}): {execution_ms:.2f} ms"
                    + ("   !! SEQ SCAN ON A BIG TABLE" if BIG_TABLE_SEQ_SCAN.search(plan) else ""))
                say(plan)
                say()
                timings.append((title, execution_ms, wall_ms))
                if BIG_TABLE_SEQ_SCAN.search(plan):
                    flagged.append(title)
        finally:
            await db.close()
    say("summary: EXPLAIN ANALYZE's execution time (median of three), and the plain run's wall time "
        "(median of five, from this client):")
    for title, execution_ms, wall_ms in timings:
        say(f"  {execution_ms:8.2f} ms  {wall_ms:8.2f} ms  {title}")
    say("summary: " + (f"Seq Scan on a big table in: {', '.join(flagged)}" if flagged
                       else "no dashboard statement seq-scans scheduled_messages, deliveries or events"))
    return 1 if flagged else 0
