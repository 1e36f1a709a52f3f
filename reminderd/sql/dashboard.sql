-- The statements of the dashboard (reminderd/dashboard.py, served by `reminderd serve`), by name.
-- Loaded by reminderd/queries.py into the same namespace as queries.sql: names are unique across
-- the files. Each reads an index or one of the aggregates the triggers keep (fire_counts,
-- lateness_counts), never the whole of scheduled_messages or deliveries: docs/sql.md has their
-- plans on 1,000,000 messages and 5,000,000 deliveries (bench/explain_views.py --dashboard).
-- $1 is always the tenants in view: one, for a tenant's key; all of them, for an operator's.

-- dashboard_key --
-- The key a sign-in presented (or a session names), found by its visible prefix; the server
-- compares the hash in constant time.
SELECT id, prefix, key_hash, tenant_id, name, scopes, revoked_at
FROM reminderd.api_keys
WHERE prefix = $1;

-- dashboard_tenants --
-- Every tenant, with the rules the upcoming page shades (quiet hours, calendar).
SELECT id, paused, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt
FROM reminderd.tenants
WHERE id = ANY ($1::text[])
ORDER BY id;

-- dashboard_all_tenant_ids --
SELECT id FROM reminderd.tenants ORDER BY id;

-- overview_counts --
-- Live and dead messages per tenant, and the pending ones already due (the backlog): one range of
-- the partial index scheduled_messages_overview per tenant, read without the table.
SELECT t.id AS tenant_id, c.pending, c.picked, c.paused, c.dead, c.due, c.oldest_due
FROM reminderd.tenants t
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE m.status = 'pending') AS pending,
           count(*) FILTER (WHERE m.status = 'picked') AS picked,
           count(*) FILTER (WHERE m.status = 'paused') AS paused,
           count(*) FILTER (WHERE m.status = 'dead') AS dead,
           count(*) FILTER (WHERE m.status = 'pending' AND m.fire_at <= now()) AS due,
           min(m.fire_at) FILTER (WHERE m.status = 'pending' AND m.fire_at <= now()) AS oldest_due
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = t.id AND m.status IN ('pending', 'picked', 'paused', 'dead')
) c
WHERE t.id = ANY ($1::text[])
ORDER BY t.id;

-- overview_fires --
-- Fires per tenant in the last hour (the current minute and the 59 before it) and the last 24
-- hours (the current hour and the 23 before it), from the aggregate fire_counts.
SELECT f.tenant_id,
       coalesce(sum(f.delivered) FILTER (WHERE f.period = 'minute'), 0)::bigint AS delivered_1h,
       coalesce(sum(f.retried) FILTER (WHERE f.period = 'minute'), 0)::bigint AS retried_1h,
       coalesce(sum(f.dead) FILTER (WHERE f.period = 'minute'), 0)::bigint AS dead_1h,
       coalesce(sum(f.expired) FILTER (WHERE f.period = 'minute'), 0)::bigint AS expired_1h,
       coalesce(sum(f.held) FILTER (WHERE f.period = 'minute'), 0)::bigint AS held_1h,
       coalesce(sum(f.delivered) FILTER (WHERE f.period = 'hour'), 0)::bigint AS delivered_24h,
       coalesce(sum(f.retried) FILTER (WHERE f.period = 'hour'), 0)::bigint AS retried_24h,
       coalesce(sum(f.dead) FILTER (WHERE f.period = 'hour'), 0)::bigint AS dead_24h,
       coalesce(sum(f.expired) FILTER (WHERE f.period = 'hour'), 0)::bigint AS expired_24h,
       coalesce(sum(f.held) FILTER (WHERE f.period = 'hour'), 0)::bigint AS held_24h
FROM reminderd.fire_counts f
WHERE ((f.period = 'minute' AND f.starts_at > date_trunc('minute', now(), 'UTC') - interval '1 hour')
       OR (f.period = 'hour' AND f.starts_at > date_trunc('hour', now(), 'UTC') - interval '24 hours'))
  AND f.tenant_id = ANY ($1::text[])
GROUP BY f.tenant_id;

-- overview_lateness --
-- Delivered attempts per tenant, window (the same two as overview_fires) and lateness bucket,
-- from the aggregate lateness_counts; the server reads the percentiles off these counts.
SELECT l.tenant_id, l.period = 'minute' AS last_hour, l.bucket, sum(l.delivered)::bigint AS delivered
FROM reminderd.lateness_counts l
WHERE ((l.period = 'minute' AND l.starts_at > date_trunc('minute', now(), 'UTC') - interval '1 hour')
       OR (l.period = 'hour' AND l.starts_at > date_trunc('hour', now(), 'UTC') - interval '24 hours'))
  AND l.tenant_id = ANY ($1::text[])
GROUP BY 1, 2, 3;

-- lateness_bounds_ms --
SELECT reminderd.lateness_bounds_ms();

-- database_now --
SELECT now();

-- upcoming_all --
-- Pending messages of every tenant by $3 ('hour' or 'minute', on the clock of timezone $4) with
-- fire_at in [$1, $2): the partial index scheduled_messages_due, read without the table.
SELECT date_trunc($3, m.fire_at, $4) AS starts_at, count(*) AS messages
FROM reminderd.scheduled_messages m
WHERE m.status = 'pending' AND m.fire_at >= $1 AND m.fire_at < $2
GROUP BY 1
ORDER BY 1;

-- upcoming_tenant --
-- The same for one tenant ($5): a range of scheduled_messages_overview.
SELECT date_trunc($3, m.fire_at, $4) AS starts_at, count(*) AS messages
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $5 AND m.status = 'pending' AND m.fire_at >= $1 AND m.fire_at < $2
GROUP BY 1
ORDER BY 1;

-- dashboard_message_columns --
-- A fragment: what the dashboard lists of a message.
m.id, m.tenant_id, m.ref_id, m.status, m.fire_at, m.scheduled_for, m.timezone, m.cron, m.rrule,
m.category, m.attempts, m.last_error, m.last_event, m.updated_at

-- upcoming_messages_all --
-- The messages of one bar: every tenant's pending messages with fire_at in [$1, $2), soonest
-- first (scheduled_messages_due).
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.status = 'pending' AND m.fire_at >= $1 AND m.fire_at < $2
ORDER BY m.fire_at, m.id
LIMIT $3;

-- upcoming_messages_tenant --
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $4 AND m.status = 'pending' AND m.fire_at >= $1 AND m.fire_at < $2
ORDER BY m.fire_at, m.id
LIMIT $3;

-- upcoming_timezone --
-- The timezone of a tenant's next pending message: the upcoming page shades quiet hours and
-- holidays on that clock unless asked for another.
SELECT m.timezone
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $1 AND m.status = 'pending' AND m.fire_at >= now()
ORDER BY m.fire_at
LIMIT 1;

-- tenant_holidays_between --
SELECT day, name
FROM reminderd.tenant_holidays
WHERE tenant_id = $1 AND day >= $2 AND day <= $3
ORDER BY day;

-- feed_columns --
-- A fragment: one fire as the live feed shows it.
e.id, e.created_at, e.message_id, e.tenant_id, e.ref_id, e.event, e.status, e.fire_at, left(e.reason, 300) AS reason

-- feed_recent_all --
-- The newest $2 fires of every tenant after event id $1, of the kinds $3, with refs in
-- [$4, $5) ($5 NULL: no upper end), newer than event id $6: a backward scan of events_fires.
SELECT {feed_columns}
FROM reminderd.events e
WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                  'holiday_skipped')
  AND e.id > greatest($1::bigint, $6::bigint)
  AND e.event = ANY ($3::text[])
  AND e.ref_id ~>=~ $4 AND ($5::text IS NULL OR e.ref_id ~<~ $5)
ORDER BY e.id DESC
LIMIT $2;

-- feed_recent_tenant --
-- The same for one tenant ($7): a backward scan of events_tenant_fires.
SELECT {feed_columns}
FROM reminderd.events e
WHERE e.tenant_id = $7
  AND e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                  'holiday_skipped')
  AND e.id > greatest($1::bigint, $6::bigint)
  AND e.event = ANY ($3::text[])
  AND e.ref_id ~>=~ $4 AND ($5::text IS NULL OR e.ref_id ~<~ $5)
ORDER BY e.id DESC
LIMIT $2;

-- feed_newest_event_id --
-- The newest audit event's id (the primary key's last entry): filtered feed queries look back
-- over a bounded number of events before it.
SELECT coalesce(max(id), 0) FROM reminderd.events;

-- feed_events --
-- The fires a NOTIFY named (primary key lookups).
SELECT {feed_columns}
FROM reminderd.events e
WHERE e.id = ANY ($1::bigint[])
  AND e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                  'holiday_skipped')
ORDER BY e.id;

-- search_by_id --
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.id = $2 AND m.tenant_id = ANY ($1::text[]);

-- search_by_ref --
-- Each tenant's messages with refs in [$2, $3) (a prefix; an exact ref is the range of itself and
-- its extensions): one range of scheduled_messages_tenant_ref per tenant, newest first.
SELECT page.*
FROM unnest($1::text[]) AS t(id)
CROSS JOIN LATERAL (
    SELECT {dashboard_message_columns}
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = t.id AND m.ref_id ~>=~ $2 AND m.ref_id ~<~ $3
    ORDER BY m.ref_id, m.id DESC
    LIMIT $4
) page
ORDER BY page.ref_id = $2 DESC, page.ref_id, page.id DESC
LIMIT $4;

-- dashboard_message --
-- One message, with its tenant's rules for the preview ($3/$4: the default backfill and max
-- lateness); no row for a tenant not in view.
SELECT m.id, m.tenant_id, m.ref_id, m.status, m.fire_at, m.scheduled_for, m.payload::text AS payload,
       m.callback_url, m.category, m.attempts, m.max_attempts, m.last_error, m.last_event, m.created_at,
       m.updated_at, m.sent_at, m.picked_at, m.lease_expires_at, m.paused_by, m.extra_of,
       m.backfill AS own_backfill, extract(epoch FROM m.max_lateness)::float8 AS own_max_lateness_s,
       t.paused AS tenant_paused, now() AS db_now,
       {timing_columns $3 $4}
FROM reminderd.scheduled_messages m
JOIN reminderd.tenants t ON t.id = m.tenant_id
WHERE m.id = $2 AND m.tenant_id = ANY ($1::text[]);

-- dashboard_deliveries --
-- A message's last 100 attempts, oldest first (deliveries_message).
SELECT id, attempt, webhook_id, scheduled_for, status_code, error, duration_ms, created_at
FROM (SELECT * FROM reminderd.deliveries d WHERE d.message_id = $1 ORDER BY d.id DESC LIMIT 100) d
ORDER BY id;

-- dashboard_events --
-- A message's audit trail, the last 200 events, oldest first (events_message).
SELECT id, created_at, event, status, fire_at, reason, actor, on_behalf_of
FROM (SELECT * FROM reminderd.events e WHERE e.message_id = $1 ORDER BY e.id DESC LIMIT 200) e
ORDER BY id;

-- dead_letters --
-- Dead letters of the tenants in view, newest first, dead for at least $2 and at most $3 seconds,
-- last_error containing $4 (NULL: any), below the cursor ($5, $6) = (dead since, id): the partial
-- index scheduled_messages_dead. One more than $7, so the page knows whether another follows.
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.status = 'dead' AND m.tenant_id = ANY ($1::text[])
  AND m.updated_at <= now() - make_interval(secs => $2) AND m.updated_at >= now() - make_interval(secs => $3)
  AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0)
  AND (m.updated_at, m.id) < ($5, $6)
ORDER BY m.updated_at DESC, m.id DESC
LIMIT $7 + 1;

-- dead_letters_count --
-- How many dead letters the same filter matches.
SELECT count(*)
FROM reminderd.scheduled_messages m
WHERE m.status = 'dead' AND m.tenant_id = ANY ($1::text[])
  AND m.updated_at <= now() - make_interval(secs => $2) AND m.updated_at >= now() - make_interval(secs => $3)
  AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0);

-- dead_letters_selected --
-- Of the ids $2, the dead letters of the tenants in view.
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.id = ANY ($2::bigint[]) AND m.status = 'dead' AND m.tenant_id = ANY ($1::text[])
ORDER BY m.updated_at DESC, m.id DESC;

-- act_for --
-- Inside an action's transaction: the audit trail's on_behalf_of for what follows in it.
SELECT set_config('reminderd.on_behalf_of', $1, true);

-- requeue_dead_ids --
-- Requeue the dead letters among the ids $2 of the tenants in view; how many went back to pending.
SELECT count(*) FILTER (WHERE reminderd.requeue(m.id) = 1)
FROM (SELECT id FROM reminderd.scheduled_messages
      WHERE id = ANY ($2::bigint[]) AND status = 'dead' AND tenant_id = ANY ($1::text[])
      ORDER BY id) m;

-- requeue_dead_matching --
-- Requeue the dead letters a filter matches (as dead_letters_count), at most $5 of them.
SELECT count(*) FILTER (WHERE reminderd.requeue(m.id) = 1)
FROM (SELECT id FROM reminderd.scheduled_messages m
      WHERE m.status = 'dead' AND m.tenant_id = ANY ($1::text[])
        AND m.updated_at <= now() - make_interval(secs => $2)
        AND m.updated_at >= now() - make_interval(secs => $3)
        AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0)
      ORDER BY m.id
      LIMIT $5) m;

-- dashboard_send_now --
SELECT reminderd.send_now($1, $2);

-- dashboard_pause --
SELECT reminderd.pause($1, $2);

-- dashboard_resume --
SELECT reminderd.resume($1, $2);

-- dashboard_cancel --
SELECT reminderd.cancel_message($1, $2);
