"""EXPLAIN (ANALYZE, BUFFERS) of a contact's whole picture (reminderd.contact_messages) and of a
broadcast's progress (reminderd.broadcasts) on a scheduled_messages table of 10,000,000 rows, in a
throwaway PostgreSQL cluster (docs/sql.md, "A contact's messages on 10,000,000 rows").

    .venv/bin/python bench/explain_contacts.py                 # 10,000,000 rows, a few minutes
    .venv/bin/python bench/explain_contacts.py --rows 1000000  # smaller, same proportions

The table holds 1,000,000 contacts' messages (ten each on average, 70 % of all rows; the rest name
no contact), mostly sent history, some pending, cancelled, dead; one broadcast of 240,000 rows
among them. Loaded with INSERT ... SELECT generate_series (triggers off: session_replication_role
= replica; the broadcast's progress rows written as its triggers would), then VACUUM ANALYZE.
Exit status 1 when a plan reads scheduled_messages with a Seq Scan.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from reminderd.migrate import upgrade  # noqa: E402
from reminderd.testing import throwaway_cluster  # noqa: E402

DATABASE = "explain_contacts"
TENANTS = 50
CONTACTS = 1_000_000
BROADCAST_ROWS = 240_000
SEQ_SCAN = re.compile(r"Seq Scan on scheduled_messages")

LOAD = """
INSERT INTO reminderd.scheduled_messages
    (tenant_id, ref_id, fire_at, status, contact_id, timezone, timezone_source, updated_at, created_at,
     broadcast_id, local_time)
SELECT 't' || lpad((g % {tenants})::text, 2, '0'),
       'r:' || g,
       now() + ((g % 1000) - 700) * interval '1 hour',
       CASE WHEN g % 10 < 6 THEN 'sent' WHEN g % 10 < 8 THEN 'pending' WHEN g % 10 = 8 THEN 'cancelled'
            ELSE 'dead' END,
       CASE WHEN g % 10 < 7 THEN 'c' || (g % {contacts}) END,
       'Europe/London',
       CASE WHEN g % 10 < 7 THEN 'phone' ELSE 'message' END,
       now() - (g % 720) * interval '1 hour',
       now() - interval '30 days',
       CASE WHEN g <= {broadcast_rows} THEN 1 END,
       CASE WHEN g <= {broadcast_rows} THEN '2026-11-27 09:00'::timestamp END
FROM generate_series(1, {rows}) AS g
"""


async def explain(db: asyncpg.Connection, title: str, query: str, *args: object) -> bool:
    """Print the plan; whether it read scheduled_messages with a Seq Scan."""
    rows = await db.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
    plan = "\n".join(row[0] for row in rows)
    print(f"\n-- {title}\n{query}\n{plan}")
    return bool(SEQ_SCAN.search(plan))


async def main(rows: int) -> int:
    contacts = max(1, min(CONTACTS, rows // 10))
    with throwaway_cluster() as cluster:
        admin = await asyncpg.connect(cluster.url())
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        await admin.close()
        url = cluster.url(DATABASE)
        await asyncio.to_thread(upgrade, url)
        db = await asyncpg.connect(url, server_settings={"jit": "off"})
        try:
            started = time.monotonic()
            await db.execute("SET session_replication_role = replica")
            await db.execute("INSERT INTO reminderd.tenants (id, callback_url, timezone) SELECT 't' || "
                             "lpad(g::text, 2,"
                             " '0'), 'https://example.com/cb', 'UTC' FROM generate_series(0, $1 - 1) AS g",
                                 TENANTS)
            await db.execute(
                "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, everyone, local_time, "
                "created_by,"
                " ended_at) VALUES ('t01', 'bf', true, '2026-11-27 09:00', 'bench', now())")
            await db.execute(LOAD.format(tenants=TENANTS, contacts=contacts, rows=rows,
                                         broadcast_rows=min(BROADCAST_ROWS, rows)))
            # The broadcast's progress, as its triggers would have counted it (folded to one row).
            await db.execute(
                "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, waiting, "
                "sent, failed,"
                " cancelled) SELECT 1, '2026-11-27 09:00', 't01', count(*) FILTER (WHERE status = 'pending'),"
                " count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'dead'),"
                " count(*) FILTER (WHERE status = 'cancelled') FROM reminderd.scheduled_messages"
                " WHERE broadcast_id = 1")
            await db.execute("RESET session_replication_role")
            await db.execute("VACUUM ANALYZE")
            size = await db.fetchval("SELECT "
                                     "pg_size_pretty(pg_total_relation_size('reminderd.scheduled_messages'))")
            print(f"loaded {rows:,} rows ({contacts:,} contacts) in {time.monotonic() - started:.0f}s; "
                  f"scheduled_messages with its indexes: {size}")
            contact_id = "c" + str(contacts // 2)
            tenant_id = await db.fetchval(
                "SELECT tenant_id FROM reminderd.scheduled_messages WHERE contact_id = $1 LIMIT 1", contact_id)
            scans = [
                await explain(db, "a contact's messages (reminderd.contact_messages)",
                              "SELECT * FROM reminderd.contact_messages($1, $2)", tenant_id, contact_id),
                await explain(db, "the same, the query it runs (what the planner sees inlined)",
                              "SELECT * FROM reminderd.scheduled_messages m WHERE m.tenant_id = $1"
                              " AND m.contact_id = $2 AND (m.status IN ('pending', 'picked', 'paused',"
                              " 'awaiting_approval') OR m.updated_at >= now() - interval '7 days')"
                              " ORDER BY m.status NOT IN ('pending', 'picked', 'paused', 'awaiting_approval'),"
                              " m.fire_at, m.updated_at DESC LIMIT 100", tenant_id, contact_id),
                await explain(db, f"a broadcast's progress ({min(BROADCAST_ROWS, rows):,} rows): not a scan",
                              "SELECT * FROM reminderd.broadcasts WHERE id = 1"),
            ]
        finally:
            await db.close()
    return 1 if any(scans) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    sys.exit(asyncio.run(main(parser.parse_args().rows)))
