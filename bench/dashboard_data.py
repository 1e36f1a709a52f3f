"""A database the size the dashboard must stay cheap at: 1,000,000 messages (bench/explain_views.py's
busy queue, 50 tenants) and 5,000,000 deliveries, each with the change it made (the write path of
migration 0007), a week of history, and the dashboard's aggregates as their triggers would have
kept them.

Loaded with INSERT ... SELECT generate_series, triggers off (session_replication_role = replica),
then VACUUM ANALYZE: a few minutes for the full size. Used by bench/explain_views.py --dashboard
(the plans in docs/sql.md) and by the bench's dashboard scenario (page render times).

History, on top of explain_views' 100,000 deliveries of sent messages:
- 2,000 recurring schedules (pending rows), each with its attempts: an every-few-minutes
  reminder's week, ~40 % of the deliveries;
- the rest spread over sent and dead messages: first attempts, a tenth of them retried (503) then
  delivered, dead letters' failed attempts;
- each attempt's change (fired, retry_scheduled or dead_lettered) on its own row, as the daemon
  records it; one in twenty first attempts held back by quiet hours before (a deferred event);
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
        "WITH schedules AS (SELECT id, tenant_id, ref_id FROM reminderd.scheduled_messages"
        "                   WHERE status = 'pending' ORDER BY id LIMIT $1)"
        " INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for,"
        " status_code, error, duration_ms, created_at, event, status, fire_at, actor)"
        " SELECT s.id, s.tenant_id, s.ref_id, 'msg_' || s.id || '_' || n, 1, at, 200, NULL, 15 + n % 40,"
        "        at + (n % 7) * interval '4 milliseconds', 'fired', 'pending', at + interval '5 minutes',"
        "        'reminderd_daemon'"
        " FROM schedules s CROSS JOIN generate_series(1, $2) n"
        " CROSS JOIN LATERAL (SELECT now() - n * interval '5 minutes' - (s.id % 300) * interval '1 second'"
        "                    AS at) t",
        RECURRING, per_schedule,
    )
    say(f"  {RECURRING * per_schedule:,} deliveries of recurring schedules ({time.monotonic() - started:.0f}s)")
    # One-off attempts over the week: sent and dead messages, one in ten retried first.
    rest = deliveries - already - RECURRING * per_schedule
    await db.execute(
        "WITH targets AS (SELECT id, tenant_id, ref_id, status, row_number() OVER () AS k"
        "                 FROM reminderd.scheduled_messages WHERE status IN ('sent', 'dead')),"
        " attempts AS ("
        "  SELECT t.id, t.tenant_id, t.ref_id, 'msg_' || t.id || '_' || g AS webhook_id,"
        "         1 + (g / 100000) % 3 AS attempt, due,"
        "         CASE WHEN t.status = 'dead' THEN 503 WHEN g % 10 = 0 THEN 503 ELSE 200 END AS status_code,"
        "         20 + g % 300 AS duration_ms, due + ((g * 7919) % 2000) * interval '1 millisecond' AS at,"
        "         t.status AS final"
        "  FROM generate_series(1::bigint, $1) g"
        "  JOIN targets t ON t.k = 1 + (g * 104729) % (SELECT count(*) FROM targets)"
        "  CROSS JOIN LATERAL (SELECT now() - ((g * 6151) % ($2 * 86400)) * interval '1 second' AS due) d)"
        " INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for,"
        " status_code, error, duration_ms, created_at, event, status, fire_at, reason, actor)"
        " SELECT a.id, a.tenant_id, a.ref_id, a.webhook_id, a.attempt, a.due, a.status_code,"
        "        CASE WHEN a.status_code <> 200 THEN 'HTTP 503: Service Unavailable' END, a.duration_ms, a.at,"
        "        CASE WHEN a.status_code = 200 THEN 'fired' WHEN a.final = 'dead' AND a.attempt = 3"
        "             THEN 'dead_lettered' ELSE 'retry_scheduled' END,"
        "        CASE WHEN a.status_code = 200 THEN 'sent' WHEN a.final = 'dead' AND a.attempt = 3 THEN 'dead'"
        "             ELSE 'pending' END,"
        "        a.due, CASE WHEN a.status_code <> 200 THEN 'attempt ' || a.attempt || ' failed: HTTP 503' END,"
        "        'reminderd_daemon'"
        " FROM attempts a",
        rest, DAYS,
    )
    say(f"  {rest:,} one-off deliveries ({time.monotonic() - started:.0f}s)")
    # One in twenty first attempts was held back by quiet hours first: an event, an hour before.
    await db.execute(
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor,"
        " created_at)"
        " SELECT d.message_id, d.tenant_id, d.ref_id, 'deferred', 'pending', d.scheduled_for,"
        "        'deferred to the end of quiet hours', 'reminderd_daemon', d.created_at - interval '1 hour'"
        " FROM reminderd.deliveries d WHERE d.attempt = 1 AND d.id % 20 = 0"
    )
    say(f"  deferred events ({time.monotonic() - started:.0f}s)")
    # The aggregates, as the triggers keep them (minutes for 3 hours, hours for 8 days).
    await db.execute(
        "INSERT INTO reminderd.fire_counts"
        " (period, starts_at, tenant_id, delivered, retried, dead, expired, held)"
        " SELECT p.period, date_trunc(p.period, e.created_at, 'UTC'), e.tenant_id,"
        "        count(*) FILTER (WHERE e.event = 'fired'),"
        "        count(*) FILTER (WHERE e.event = 'retry_scheduled'),"
        "        count(*) FILTER (WHERE e.event = 'dead_lettered'), 0,"
        "        count(*) FILTER (WHERE e.event = 'deferred')"
        " FROM (SELECT tenant_id, event, created_at FROM reminderd.deliveries WHERE event IS NOT NULL"
        "       UNION ALL SELECT tenant_id, event, created_at FROM reminderd.events WHERE event = 'deferred') e"
        " CROSS JOIN (VALUES ('minute', interval '3 hours'), ('hour', interval '8 days')) AS p(period, kept)"
        " WHERE e.created_at > now() - p.kept"
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
