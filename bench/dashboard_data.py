"""A database the size the dashboard must stay cheap at: 1,000,000 messages (bench/explain_views.py's
busy queue, 50 tenants) and 5,000,000 deliveries with their audit events, a week of history,
and the dashboard's aggregates as their triggers would have kept them.

Loaded with INSERT ... SELECT generate_series, triggers off (session_replication_role = replica),
then VACUUM ANALYZE: a few minutes for the full size. Used by bench/explain_views.py --dashboard
(the plans in docs/sql.md) and by the bench's dashboard scenario (page render times).

History, on top of explain_views' 100,000 deliveries of sent messages:
- 2,000 recurring schedules (pending rows), each with its attempts: an every-few-minutes
  reminder's week, ~40 % of the deliveries;
- the rest spread over sent and dead messages: first attempts, a tenth of them retried (503) then
  delivered, dead letters' failed attempts;
- one audit event per attempt (fired, retry_scheduled or dead_lettered) at the attempt's time;
- fire_counts and lateness_counts computed from those, as the triggers keep them.
"""

from __future__ import annotations

import time

import asyncpg

from bench.explain_views import load as load_queue
from bench.report import say

RECURRING = 2_000
DAYS = 7


async def load(db: asyncpg.Connection, *, messages: int = 1_000_000, deliveries: int = 5_000_000
               ) -> dict[str, int]:
    """Fill an empty migrated database; the row counts by kind."""
    started = time.monotonic()
    counts = await load_queue(db, messages)
    say(f"  queue loaded in {time.monotonic() - started:.0f}s")
    await db.execute("SET session_replication_role = replica")
    await db.execute("SET maintenance_work_mem = '256MB'")
    await db.execute("SET work_mem = '256MB'")
    already = counts["deliveries"]
    recurring_share = (deliveries - already) * 2 // 5
    per_schedule = max(1, recurring_share // RECURRING)
    # Recurring schedules: the first RECURRING pending rows, attempts every 5 minutes, newest now.
    await db.execute(
        "WITH schedules AS (SELECT id, tenant_id FROM reminderd.scheduled_messages"
        "                   WHERE status = 'pending' ORDER BY id LIMIT $1)"
        " INSERT INTO reminderd.deliveries (message_id, tenant_id, webhook_id, attempt, scheduled_for,"
        " status_code, error, duration_ms, created_at)"
        " SELECT s.id, s.tenant_id, 'msg_' || s.id || '_' || n, 1, at, 200, NULL, 15 + n % 40,"
        "        at + (n % 7) * interval '4 milliseconds'"
        " FROM schedules s CROSS JOIN generate_series(1, $2) n"
        " CROSS JOIN LATERAL (SELECT now() - n * interval '5 minutes' - (s.id % 300) * interval '1 second'"
        "                    AS at) t",
        RECURRING, per_schedule,
    )
    say(f"  {RECURRING * per_schedule:,} deliveries of recurring schedules ({time.monotonic() - started:.0f}s)")
    # One-off attempts over the week: sent and dead messages, one in ten retried first.
    rest = deliveries - already - RECURRING * per_schedule
    await db.execute(
        "WITH targets AS (SELECT id, tenant_id, status, row_number() OVER () AS k"
        "                 FROM reminderd.scheduled_messages WHERE status IN ('sent', 'dead'))"
        " INSERT INTO reminderd.deliveries (message_id, tenant_id, webhook_id, attempt, scheduled_for,"
        " status_code, error, duration_ms, created_at)"
        " SELECT t.id, t.tenant_id, 'msg_' || t.id || '_' || g, 1 + (g / 100000) % 3, due,"
        "        CASE WHEN t.status = 'dead' THEN 503 WHEN g % 10 = 0 THEN 503 ELSE 200 END,"
        "        CASE WHEN t.status = 'dead' OR g % 10 = 0 THEN 'HTTP 503: Service Unavailable' END,"
        "        20 + g % 300, due + ((g * 7919) % 2000) * interval '1 millisecond'"
        " FROM generate_series(1::bigint, $1) g"
        " JOIN targets t ON t.k = 1 + (g * 104729) % (SELECT count(*) FROM targets)"
        " CROSS JOIN LATERAL (SELECT now() - ((g * 6151) % ($2 * 86400)) * interval '1 second' AS due) d",
        rest, DAYS,
    )
    say(f"  {rest:,} one-off deliveries ({time.monotonic() - started:.0f}s)")
    # One audit event per attempt, at its time.
    await db.execute(
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor,"
        " created_at)"
        " SELECT d.message_id, d.tenant_id, 'ref:' || d.message_id,"
        "        CASE WHEN d.status_code = 200 THEN 'fired' WHEN m.status = 'dead' AND d.attempt = 3"
        "             THEN 'dead_lettered' ELSE 'retry_scheduled' END,"
        "        CASE WHEN d.status_code = 200 THEN 'sent' ELSE 'pending' END, d.scheduled_for,"
        "        CASE WHEN d.status_code <> 200 THEN 'attempt ' || d.attempt || ' failed: HTTP 503' END,"
        "        'reminderd_daemon', d.created_at"
        " FROM reminderd.deliveries d JOIN reminderd.scheduled_messages m ON m.id = d.message_id"
    )
    say(f"  audit events of the attempts ({time.monotonic() - started:.0f}s)")
    # The aggregates, as the triggers keep them (minutes for 3 hours, hours for 8 days).
    await db.execute(
        "INSERT INTO reminderd.fire_counts"
        " (period, starts_at, tenant_id, delivered, retried, dead, expired, held)"
        " SELECT p.period, date_trunc(p.period, e.created_at, 'UTC'), e.tenant_id,"
        "        count(*) FILTER (WHERE e.event = 'fired'),"
        "        count(*) FILTER (WHERE e.event = 'retry_scheduled'),"
        "        count(*) FILTER (WHERE e.event = 'dead_lettered'), 0, 0"
        " FROM reminderd.events e"
        " CROSS JOIN (VALUES ('minute', interval '3 hours'), ('hour', interval '8 days')) AS p(period, kept)"
        " WHERE e.created_at > now() - p.kept"
        "   AND e.event IN ('fired', 'retry_scheduled', 'dead_lettered')"
        " GROUP BY 1, 2, 3"
    )
    await db.execute(
        "INSERT INTO reminderd.lateness_counts (period, starts_at, tenant_id, bucket, delivered)"
        " SELECT p.period, date_trunc(p.period, d.created_at, 'UTC'), d.tenant_id,"
        "        width_bucket(extract(epoch FROM d.created_at - d.scheduled_for)::float8 * 1000,"
        "                     reminderd.lateness_bounds_ms()), count(*)"
        " FROM reminderd.deliveries d"
        " CROSS JOIN (VALUES ('minute', interval '3 hours'), ('hour', interval '8 days')) AS p(period, kept)"
        " WHERE d.created_at > now() - p.kept AND d.status_code BETWEEN 200 AND 299"
        " GROUP BY 1, 2, 3, 4"
    )
    await db.execute("RESET session_replication_role")
    await db.execute("RESET work_mem")
    # The throwaway cluster commits asynchronously (synchronous_commit off): VACUUM may mark a page
    # all-visible only once the commits of its rows are flushed, so flush them first; else every
    # index-only scan would visit the table.
    await db.execute("CHECKPOINT")
    for table in ("scheduled_messages", "deliveries", "events", "fire_counts", "lateness_counts"):
        await db.execute(f"VACUUM ANALYZE reminderd.{table}")
    say(f"  aggregates and VACUUM ANALYZE ({time.monotonic() - started:.0f}s)")
    for table in ("deliveries", "events", "fire_counts", "lateness_counts"):
        counts[table] = await db.fetchval(f"SELECT count(*) FROM reminderd.{table}")
    return counts
