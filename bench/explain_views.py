"""EXPLAIN (ANALYZE, BUFFERS) of every DBA view (migration 0002) and of the claim query, on a
scheduled_messages table of about 1,000,000 rows, in a throwaway PostgreSQL cluster.

    .venv/bin/python bench/explain_views.py              # ~1,000,000 rows
    .venv/bin/python bench/explain_views.py --rows 200000  # smaller, same proportions
    .venv/bin/python bench/explain_views.py --dashboard    # the dashboard's queries instead, on
                                                           # 1,000,000 messages and 5,000,000 deliveries

The table is shaped like a busy production queue: mostly future-dated pending rows, ~30 % sent
history, some cancelled/expired/dead/paused rows, a few due now, some picked with expired leases;
~100,000 deliveries and ~300,000 audit events. Loaded with INSERT ... SELECT generate_series (triggers
off: session_replication_role = replica), then VACUUM ANALYZE.

With --dashboard the database is bench/dashboard_data.py's (a week of history on top: 5,000,000
deliveries with their audit events, and the dashboard's aggregates) and the plans are those of
reminderd/sql/dashboard.sql's statements, as `reminderd serve` runs them (as reminderd_api), for
an operator (all 50 tenants) and for one tenant; a Seq Scan on scheduled_messages, deliveries or
events is flagged there.

Each plan is printed; a "Seq Scan on scheduled_messages" is flagged. The live views (due_now,
stuck, upcoming_by_hour, queue_overview, dead_letters, recent_deliveries) must not need one. The
views are also explained as an application role under row-level security. Exit status 1 when a live
view seq-scans the big table, else 0. Plans are from a run with jit = off (JIT compilation of the
aggregates otherwise adds its own time and noise).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from reminderd.migrate import upgrade  # noqa: E402
from reminderd.queries import QUERIES  # noqa: E402
from reminderd.testing import throwaway_cluster  # noqa: E402

DATABASE = "explain_views"
TENANTS = 50
APP_ROLE = "explain_views_app"  # mapped to tenant t00 for the row-level security runs
SEQ_SCAN = re.compile(r"Seq Scan on scheduled_messages")

LIVE_VIEWS = ("due_now", "stuck", "upcoming_by_hour", "queue_overview", "dead_letters", "recent_deliveries")

# Fractions of the rows, by status (the rest is future-dated pending).
SHARES = {
    "sent": 0.30,
    "cancelled": 0.02,
    "expired": 0.01,
    "dead": 0.005,
    "paused": 0.02,
    "picked_expired": 0.001,
    "picked": 0.002,
    "due": 0.002,
}

# Column expressions (over g, the row number) for each kind of row.
DEFAULTS = {
    "status": "'pending'", "fire_at": "now()", "updated_at": "now()", "created_at": "now() - interval '1 day'",
    "attempts": "0", "picked_at": "NULL", "lease_expires_at": "NULL", "sent_at": "NULL", "paused_by": "NULL",
    "last_error": "NULL", "last_event": "NULL",
}
SPREAD = "((g * 7919) % {}) * interval '1 second'"  # spread over that many seconds, shuffled
SHAPES: dict[str, dict[str, str]] = {
    "pending": {"fire_at": f"now() + interval '1 minute' + {SPREAD.format(30 * 86400)}",
                "updated_at": f"now() - {SPREAD.format(86400)}"},
    "due": {"fire_at": f"now() - {SPREAD.format(60)}"},
    "paused": {"status": "'paused'", "paused_by": "'message'", "last_event": "'paused'",
               "fire_at": f"now() + {SPREAD.format(10 * 86400)}", "updated_at": "now() - interval '2 days'"},
    "picked": {"status": "'picked'", "attempts": "1", "fire_at": f"now() - {SPREAD.format(5)}",
               "picked_at": "now()", "lease_expires_at": "now() + interval '5 minutes'"},
    "picked_expired": {"status": "'picked'", "attempts": "1", "fire_at": "now() - interval '20 minutes'",
                       "picked_at": "now() - interval '15 minutes'",
                       "updated_at": "now() - interval '15 minutes'",
                       "lease_expires_at": f"now() - interval '5 minutes' - {SPREAD.format(600)}"},
    "sent": {"status": "'sent'", "attempts": "1", "last_event": "'fired'",
             "fire_at": f"now() - {SPREAD.format(7 * 86400)}",
             "updated_at": f"now() - {SPREAD.format(7 * 86400)}",
             "sent_at": f"now() - {SPREAD.format(7 * 86400)}"},
    "cancelled": {"status": "'cancelled'", "last_event": "'cancelled'", "last_error": "'cancelled'",
                  "fire_at": f"now() + {SPREAD.format(86400)}",
                  "updated_at": f"now() - {SPREAD.format(14 * 86400)}"},
    "expired": {"status": "'expired'", "last_event": "'expired'", "last_error": "'missed'",
                "fire_at": f"now() - {SPREAD.format(14 * 86400)}",
                "updated_at": f"now() - {SPREAD.format(14 * 86400)}"},
    "dead": {"status": "'dead'", "attempts": "8", "last_event": "'dead_lettered'",
             "last_error": "'gave up after 8 attempts: HTTP 503'",
             "fire_at": f"now() - {SPREAD.format(30 * 86400)}",
             "updated_at": f"now() - {SPREAD.format(30 * 86400)}"},
}

EXTRA_QUERIES = {
    "claim (QUERIES['claim'], lookback 1 day, batch 100, lease 300 s)": (
        QUERIES["claim"], (86400.0, 100, 300.0, "send", 1800.0, 2147483647, None, None),
    ),
    "why didn't it fire (events of one ref)": (
        "SELECT * FROM reminderd.events WHERE tenant_id = $1 AND ref_id = $2 ORDER BY id", ("t07", "ref:7"),
    ),
    "why didn't it fire (the trail of one ref: events and attempts)": (
        "SELECT * FROM reminderd.trail WHERE tenant_id = $1 AND ref_id = $2 ORDER BY at, event_id, delivery_id",
        ("t07", "ref:7"),
    ),
    "one tenant's due_now (WHERE tenant_id = 't07')": (
        "SELECT * FROM reminderd.due_now WHERE tenant_id = $1", ("t07",),
    ),
    "one tenant's dead letters (WHERE tenant_id = 't07')": (
        "SELECT * FROM reminderd.dead_letters WHERE tenant_id = $1", ("t07",),
    ),
}

# GET /v1/messages (reminderd/sql/api.sql): each page reads index ranges only, however deep.
ALL_STATUSES = ["pending", "picked", "sent", "dead", "cancelled", "paused", "expired", "finished"]
NEVER = datetime.min.replace(tzinfo=UTC)
FOREVER = datetime.max.replace(tzinfo=UTC)
API_QUERIES: dict[str, tuple[str, tuple[object, ...]]] = {
    "GET /v1/messages (newest first, every status, first page of 50)": (
        QUERIES["list_newest"], ("t07", ALL_STATUSES, 2**63 - 1, 50, NEVER, FOREVER, True),
    ),
    "GET /v1/messages (newest first, a page deep in the middle: cursor id 500,000)": (
        QUERIES["list_newest"], ("t07", ALL_STATUSES, 500_000, 50, NEVER, FOREVER, True),
    ),
    "GET /v1/messages?status=dead (newest first)": (
        QUERIES["list_newest"], ("t07", ["dead"], 2**63 - 1, 50, NEVER, FOREVER, True),
    ),
    "GET /v1/messages?order=soonest (pending, picked, paused)": (
        QUERIES["list_soonest"], ("t07", ["pending", "picked", "paused"], NEVER, 0, 50, NEVER, FOREVER),
    ),
    "GET /v1/messages?ref_prefix=ref:7 (newest first)": (
        QUERIES["list_by_ref"], ("t07", "ref:7", "ref:8", ALL_STATUSES, False, 2**63 - 1, NEVER, NEVER, FOREVER,
                                 True, 50),
    ),
    "GET /v1/messages?ref=ref:7 (one ref's history)": (
        QUERIES["list_by_ref"], ("t07", "ref:7", "ref:7\x01", ALL_STATUSES, False, 2**63 - 1, NEVER, NEVER,
                                 FOREVER, True, 50),
    ),
    "GET /v1/messages/{id}": (QUERIES["get_message"], ("t07", 7)),
    "schedule()'s identical-call lookup (through scheduled_messages_tenant_ref)": (
        "SELECT m.id FROM reminderd.scheduled_messages m WHERE m.tenant_id = $1 AND m.ref_id = $2"
        " AND m.status IN ('pending', 'picked', 'paused', 'sent') AND m.cron IS NULL AND m.rrule IS NULL"
        " ORDER BY m.id DESC LIMIT 1", ("t07", "ref:7"),
    ),
}


def say(text: str = "") -> None:
    print(text, flush=True)


async def load(db: asyncpg.Connection, rows: int) -> dict[str, int]:
    counts = {kind: int(rows * share) for kind, share in SHARES.items()}
    counts["pending"] = rows - sum(counts.values())
    await db.execute("SET session_replication_role = replica")  # bulk load: no per-row triggers
    await db.execute(
        "INSERT INTO reminderd.tenants (id, callback_url)"
        " SELECT 't' || lpad(g::text, 2, '0'), 'https://t' || g || '.example/hooks'"
        " FROM generate_series(0, $1 - 1) g", TENANTS,
    )
    offset = 0
    for kind, shape in SHAPES.items():
        columns = {**DEFAULTS, **shape}
        await db.execute(
            f"INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, payload, {', '.join(columns)})"
            f" SELECT 't' || lpad((g % {TENANTS})::text, 2, '0'), 'ref:' || g,"
            f" jsonb_build_object('booking', g, 'to', '+4470000' || g), {', '.join(columns.values())}"
            " FROM generate_series($1::bigint, $2::bigint) g",
            offset + 1, offset + counts[kind],
        )
        offset += counts[kind]
    # ~100,000 deliveries: the latest attempts of sent messages.
    deliveries = min(100_000, counts["sent"])
    await db.execute(
        "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for,"
        " status_code, error, duration_ms, created_at, event, status)"
        " SELECT id, tenant_id, ref_id, 'msg_' || id || '_' || (extract(epoch FROM fire_at) * 1000)::bigint, 1,"
        " fire_at, 200, NULL, 20 + id % 300, updated_at, 'fired', 'sent'"
        " FROM reminderd.scheduled_messages WHERE status = 'sent' ORDER BY updated_at LIMIT $1", deliveries,
    )
    # ~300,000 audit events.
    await db.execute(
        "INSERT INTO reminderd.events"
        " (message_id, tenant_id, ref_id, event, status, fire_at, actor, created_at)"
        " SELECT id, tenant_id, ref_id, 'created', 'pending', fire_at, 'booking_service', created_at"
        " FROM reminderd.scheduled_messages ORDER BY id LIMIT $1", min(300_000, rows),
    )
    await db.execute("RESET session_replication_role")
    await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")
    await db.execute("VACUUM ANALYZE reminderd.deliveries")
    await db.execute("VACUUM ANALYZE reminderd.events")
    await db.execute("VACUUM ANALYZE reminderd.tenants")
    counts["deliveries"] = deliveries
    counts["events"] = min(300_000, rows)
    return counts


async def explain(db: asyncpg.Connection, sql: str, *args: object) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) in a transaction rolled back (the claim is an UPDATE)."""
    transaction = db.transaction()
    await transaction.start()
    try:
        rows = await db.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    finally:
        await transaction.rollback()
    return "\n".join(r[0] for r in rows)


def report(title: str, plan: str, pattern: re.Pattern[str] = SEQ_SCAN) -> bool:
    """Print one plan; True when it seq-scans scheduled_messages (or what `pattern` names)."""
    seq = bool(pattern.search(plan))
    say(f"--- {title}{'   !! SEQ SCAN ON A BIG TABLE' if seq else ''}")
    say(plan)
    say()
    return seq


async def main(rows: int) -> int:
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
            counts = await load(db, rows)
            say(f"PostgreSQL {version}; loaded in {time.monotonic() - started:.1f}s: "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
            size = await db.fetchval(
                "SELECT pg_size_pretty(pg_table_size('reminderd.scheduled_messages'))"
                " || ' table, '"
                " || pg_size_pretty(pg_indexes_size('reminderd.scheduled_messages')) || ' indexes'"
            )
            total = await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages")
            say(f"scheduled_messages: {total:,} rows, {size}")
            say()

            flagged: list[str] = []
            for view in LIVE_VIEWS:
                query = f"SELECT * FROM reminderd.{view}"
                if report(query, await explain(db, query)):
                    flagged.append(view)
            for title, (sql, args) in EXTRA_QUERIES.items():
                if report(title, await explain(db, sql, *args)) and title.startswith("claim"):
                    flagged.append("claim")
            for title, (statement, parameters) in API_QUERIES.items():
                if report(title, await explain(db, statement, *parameters)):
                    flagged.append(title)

            # The same views as an application role: row-level security adds the tenant filter.
            await db.execute(f"CREATE ROLE {APP_ROLE} NOLOGIN IN ROLE reminderd_app")
            await db.execute("INSERT INTO reminderd.tenant_members (role_name, tenant_id) VALUES ($1, 't00')",
                             APP_ROLE)
            await db.execute(f"SET ROLE {APP_ROLE}")
            for view in LIVE_VIEWS:
                plan = await explain(db, f"SELECT * FROM reminderd.{view}")
                if report(f"SELECT * FROM reminderd.{view}   (as {APP_ROLE}, RLS: tenant t00)", plan):
                    flagged.append(f"{view} (as app role)")
            await db.execute("RESET ROLE")
            await db.execute(f"DELETE FROM reminderd.tenant_members WHERE role_name = '{APP_ROLE}'")
            await db.execute(f"DROP ROLE {APP_ROLE}")
        finally:
            await db.close()
    say("summary: " + (f"Seq Scan on scheduled_messages in: {', '.join(flagged)}" if flagged
                       else "no live view or claim seq-scans scheduled_messages"))
    return 1 if flagged else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in scheduled_messages")
    parser.add_argument("--dashboard", action="store_true",
                        help="the dashboard's queries, with --deliveries attempts of history")
    parser.add_argument("--deliveries", type=int, default=5_000_000, help="rows in deliveries (--dashboard)")
    arguments = parser.parse_args()
    if arguments.dashboard:
        from bench.explain_dashboard import main as dashboard_main

        raise SystemExit(asyncio.run(dashboard_main(arguments.rows, arguments.deliveries)))
    raise SystemExit(asyncio.run(main(arguments.rows)))
