-- The statements of the dashboard (reminderd/dashboard.py, served by `reminderd serve`), by name.
-- Loaded by reminderd/queries.py into the same namespace as queries.sql: names are unique across
-- the files. Each reads an index or one of the aggregates the triggers keep (fire_counts,
-- lateness_counts), never the whole of scheduled_messages or deliveries: docs/sql.md has their
-- plans on 1,000,000 messages and 5,000,000 deliveries (bench/explain_views.py --dashboard).
-- The tenants in view are one (a tenant's key, or an operator looking at one tenant) or all of
-- them (an operator): statements whose plans differ come in two, `_all` and `_tenant`; the others
-- take the tenant as $1, NULL for all of them, where the row is found by its id first.

-- dashboard_session_key --
-- Each dashboard request: the key its session signed in with, found by its prefix $1 (as
-- api_key_by_prefix), and whether that session, by its nonce $2, was signed out (POST /logout;
-- dashboard_signouts_pkey): one round trip for both.
SELECT k.id, k.prefix, k.key_hash, k.tenant_id, k.name, k.scopes, k.revoked_at, t.api_rate_limit,
       EXISTS (SELECT FROM reminderd.dashboard_signouts s WHERE s.nonce = $2) AS signed_out
FROM reminderd.api_keys k
LEFT JOIN reminderd.tenants t ON t.id = k.tenant_id
WHERE k.prefix = $1;

-- dashboard_sign_out --
-- POST /logout: the session with nonce $1, of key $2, signed out until $3 (when it expires
-- anyway). The same statement deletes at most 100 sign-outs an hour past their session's expiry
-- (dashboard_signouts_expires; the hour a margin for the servers' clocks against this one), so
-- the table keeps about the last 13 hours' sign-outs with no housekeeping. Signing out a session
-- twice changes nothing.
WITH pruned AS (
    DELETE FROM reminderd.dashboard_signouts
    WHERE nonce = ANY (ARRAY(
        SELECT nonce FROM reminderd.dashboard_signouts
        WHERE expires_at < now() - interval '1 hour'
        ORDER BY expires_at
        LIMIT 100))
    RETURNING 1
), signed_out AS (
    INSERT INTO reminderd.dashboard_signouts (nonce, key_id, expires_at)
    VALUES ($1, $2, $3)
    ON CONFLICT (nonce) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM signed_out) = 1 AS signed_out, (SELECT count(*) FROM pruned) AS pruned;

-- dashboard_tenants --
-- The tenants in view ($1 NULL: every one), with the rules the upcoming page shades.
SELECT id, paused, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt
FROM reminderd.tenants
WHERE $1::text IS NULL OR id = $1
ORDER BY id;

-- tenant_ids --
SELECT id FROM reminderd.tenants ORDER BY id;

-- overview_counts_of --
-- Live and dead messages of the tenants $1 by status: one index-only range of the partial index
-- scheduled_messages_overview per tenant, counted by status as it is read (in index order). The
-- server splits every tenant in two such lists and counts them on two connections at once.
SELECT t.id AS tenant_id, c.status, c.messages
FROM unnest($1::text[]) AS t(id)
CROSS JOIN LATERAL (
    SELECT m.status, count(*) AS messages
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = t.id AND m.status IN ('pending', 'picked', 'paused', 'dead')
    GROUP BY m.status
) c;

-- overview_counts_tenant --
SELECT $1::text AS tenant_id, m.status, count(*) AS messages
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $1 AND m.status IN ('pending', 'picked', 'paused', 'dead')
GROUP BY m.status;

-- overview_backlog_all --
-- Per tenant, the pending messages already due (not picked yet) and the oldest one's fire_at: the
-- due end of each tenant's range of scheduled_messages_overview.
SELECT t.id AS tenant_id, c.due, c.oldest_due
FROM reminderd.tenants t
CROSS JOIN LATERAL (
    SELECT count(*) AS due, min(m.fire_at) AS oldest_due
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = t.id AND m.status = 'pending' AND m.fire_at <= now()
) c;

-- overview_backlog_tenant --
SELECT $1::text AS tenant_id, count(*) AS due, min(m.fire_at) AS oldest_due
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $1 AND m.status = 'pending' AND m.fire_at <= now();

-- overview_awaiting_all --
-- Per tenant, its messages awaiting approval (a range of scheduled_messages_tenant_status, read
-- without the table) and its broadcasts awaiting approval (the partial index
-- broadcast_requests_awaiting); only tenants with either. A broadcast with nothing more to stage
-- and no row left awaiting (its contacts were deleted) is not asked for: approving it is refused
-- (a few rows of scheduled_messages_broadcast per broadcast awaiting).
SELECT t.id AS tenant_id, c.messages, b.broadcasts
FROM reminderd.tenants t
CROSS JOIN LATERAL (
    SELECT count(*) AS messages
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = t.id AND m.status = 'awaiting_approval'
) c
CROSS JOIN LATERAL (
    SELECT count(*) AS broadcasts
    FROM reminderd.broadcast_requests r
    WHERE r.tenant_id = t.id AND r.approval = 'awaiting'
      AND (r.ended_at IS NULL OR EXISTS (SELECT FROM reminderd.scheduled_messages m
                                         WHERE m.broadcast_id = r.id AND m.status = 'awaiting_approval'
                                           AND m.tenant_id = r.tenant_id))
) b
WHERE c.messages > 0 OR b.broadcasts > 0;

-- overview_awaiting_tenant --
SELECT $1::text AS tenant_id,
       (SELECT count(*) FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = $1 AND m.status = 'awaiting_approval') AS messages,
       (SELECT count(*) FROM reminderd.broadcast_requests r
        WHERE r.tenant_id = $1 AND r.approval = 'awaiting'
          AND (r.ended_at IS NULL OR EXISTS (SELECT FROM reminderd.scheduled_messages m
                                             WHERE m.broadcast_id = r.id AND m.status = 'awaiting_approval'
                                               AND m.tenant_id = r.tenant_id))) AS broadcasts;

-- fire_counts_columns --
-- A fragment: fires per tenant in the last hour (the current minute and the 59 before it) and the
-- last 24 hours (the current hour and the 23 before it), from the aggregate fire_counts.
c.tenant_id,
coalesce(sum(c.delivered) FILTER (WHERE c.period = 'minute'), 0)::bigint AS delivered_1h,
coalesce(sum(c.retried) FILTER (WHERE c.period = 'minute'), 0)::bigint AS retried_1h,
coalesce(sum(c.dead) FILTER (WHERE c.period = 'minute'), 0)::bigint AS dead_1h,
coalesce(sum(c.expired) FILTER (WHERE c.period = 'minute'), 0)::bigint AS expired_1h,
coalesce(sum(c.held) FILTER (WHERE c.period = 'minute'), 0)::bigint AS held_1h,
coalesce(sum(c.delivered) FILTER (WHERE c.period = 'hour'), 0)::bigint AS delivered_24h,
coalesce(sum(c.retried) FILTER (WHERE c.period = 'hour'), 0)::bigint AS retried_24h,
coalesce(sum(c.dead) FILTER (WHERE c.period = 'hour'), 0)::bigint AS dead_24h,
coalesce(sum(c.expired) FILTER (WHERE c.period = 'hour'), 0)::bigint AS expired_24h,
coalesce(sum(c.held) FILTER (WHERE c.period = 'hour'), 0)::bigint AS held_24h

-- counts_window --
-- A fragment: the rows of an aggregate (c) in those two windows (two ranges of its primary key).
((c.period = 'minute' AND c.starts_at > date_trunc('minute', now(), 'UTC') - interval '1 hour')
 OR (c.period = 'hour' AND c.starts_at > date_trunc('hour', now(), 'UTC') - interval '24 hours'))

-- overview_fires_all --
SELECT {fire_counts_columns}
FROM reminderd.fire_counts c
WHERE {counts_window}
GROUP BY c.tenant_id;

-- overview_fires_tenant --
SELECT {fire_counts_columns}
FROM reminderd.fire_counts c
WHERE {counts_window} AND c.tenant_id = $1
GROUP BY c.tenant_id;

-- overview_lateness_all --
-- Delivered attempts per tenant, window and lateness bucket, from the aggregate lateness_counts;
-- the server reads the percentiles off these counts.
SELECT c.tenant_id, c.period = 'minute' AS last_hour, c.bucket, sum(c.delivered)::bigint AS delivered
FROM reminderd.lateness_counts c
WHERE {counts_window}
GROUP BY 1, 2, 3;

-- overview_lateness_tenant --
SELECT c.tenant_id, c.period = 'minute' AS last_hour, c.bucket, sum(c.delivered)::bigint AS delivered
FROM reminderd.lateness_counts c
WHERE {counts_window} AND c.tenant_id = $1
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

-- fires --
-- A fragment: the events that are fires, as the partial indexes events_fires, events_tenant_fires,
-- deliveries_fires and deliveries_tenant_fires (and the trigger function count_fires) name them.
('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred', 'holiday_skipped')

-- feed_columns --
-- A fragment: one fire as the live feed shows it, from events or deliveries (f), after its id.
f.created_at, f.message_id, f.tenant_id, f.ref_id, f.event, f.status, f.fire_at, left(f.reason, 300) AS reason

-- feed_filter --
-- A fragment: the fires of the kinds $kinds with refs in [$ref_from, $ref_to) ($ref_to NULL: no upper end).
f.event = ANY ($kinds::text[]) AND f.ref_id ~>=~ $ref_from AND ($ref_to::text IS NULL OR f.ref_id ~<~ $ref_to)

-- feed_recent_all --
-- The newest $3 fires of every tenant after the cursor ($1 an event id, $2 a delivery id: each of
-- the trail's two tables numbers its rows in its own sequence), of the kinds $4, with refs in
-- [$5, $6), among the newest $7 fires of each table ($7 = $3 when nothing is filtered): those
-- are an index-only backward scan of events_fires and of deliveries_fires, each candidate then
-- read by its primary key and filtered; newest first (by time, then id).
WITH event_candidates AS MATERIALIZED (
    SELECT f.id FROM reminderd.events f
    WHERE f.event IN {fires} AND f.id > $1
    ORDER BY f.id DESC
    LIMIT $7
),
delivery_candidates AS MATERIALIZED (
    SELECT f.id FROM reminderd.deliveries f
    WHERE f.event IN {fires} AND f.id > $2
    ORDER BY f.id DESC
    LIMIT $7
)
SELECT fire.*
FROM (
    SELECT e.* FROM event_candidates c
    CROSS JOIN LATERAL (
        SELECT f.id AS event_id, NULL::bigint AS delivery_id, {feed_columns} FROM reminderd.events f
        WHERE f.id = c.id AND {feed_filter $4 $5 $6}
        OFFSET 0  -- one primary key lookup per candidate, never a join over the whole table
    ) e
    UNION ALL
    SELECT d.* FROM delivery_candidates c
    CROSS JOIN LATERAL (
        SELECT NULL::bigint AS event_id, f.id AS delivery_id, {feed_columns} FROM reminderd.deliveries f
        WHERE f.id = c.id AND {feed_filter $4 $5 $6}
        OFFSET 0
    ) d
) fire
ORDER BY fire.created_at DESC, fire.event_id DESC, fire.delivery_id DESC
LIMIT $3;

-- feed_recent_tenant --
-- The same for one tenant ($8): index-only backward scans of events_tenant_fires and
-- deliveries_tenant_fires.
WITH event_candidates AS MATERIALIZED (
    SELECT f.id FROM reminderd.events f
    WHERE f.tenant_id = $8 AND f.event IN {fires} AND f.id > $1
    ORDER BY f.id DESC
    LIMIT $7
),
delivery_candidates AS MATERIALIZED (
    SELECT f.id FROM reminderd.deliveries f
    WHERE f.tenant_id = $8 AND f.event IN {fires} AND f.id > $2
    ORDER BY f.id DESC
    LIMIT $7
)
SELECT fire.*
FROM (
    SELECT e.* FROM event_candidates c
    CROSS JOIN LATERAL (
        SELECT f.id AS event_id, NULL::bigint AS delivery_id, {feed_columns} FROM reminderd.events f
        WHERE f.id = c.id AND {feed_filter $4 $5 $6}
        OFFSET 0  -- one primary key lookup per candidate, never a join over the whole table
    ) e
    UNION ALL
    SELECT d.* FROM delivery_candidates c
    CROSS JOIN LATERAL (
        SELECT NULL::bigint AS event_id, f.id AS delivery_id, {feed_columns} FROM reminderd.deliveries f
        WHERE f.id = c.id AND {feed_filter $4 $5 $6}
        OFFSET 0
    ) d
) fire
ORDER BY fire.created_at DESC, fire.event_id DESC, fire.delivery_id DESC
LIMIT $3;

-- feed_newest --
-- The feed's cursor now: the newest fire's id in events and in deliveries (0: none yet), the
-- end of events_fires and of deliveries_fires.
SELECT coalesce((SELECT max(f.id) FROM reminderd.events f WHERE f.event IN {fires}), 0) AS event_id,
       coalesce((SELECT max(f.id) FROM reminderd.deliveries f WHERE f.event IN {fires}), 0) AS delivery_id;

-- feed_entries --
-- The fires a NOTIFY named: events $1, deliveries $2 (primary key lookups), each table's in order.
SELECT f.id AS event_id, NULL::bigint AS delivery_id, {feed_columns}
FROM reminderd.events f
WHERE f.id = ANY ($1::bigint[]) AND f.event IN {fires}
UNION ALL
SELECT NULL::bigint, f.id, {feed_columns}
FROM reminderd.deliveries f
WHERE f.id = ANY ($2::bigint[]) AND f.event IN {fires}
ORDER BY event_id, delivery_id;

-- search_by_id --
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.id = $2 AND ($1::text IS NULL OR m.tenant_id = $1);

-- search_by_ref_all --
-- Every tenant's messages with refs in [$1, $2) (a prefix; an exact ref is the range of itself and
-- its extensions): one range of scheduled_messages_tenant_ref per tenant, the exact ref first,
-- then by ref, newest first.
SELECT page.*
FROM reminderd.tenants t
CROSS JOIN LATERAL (
    SELECT {dashboard_message_columns}
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = t.id AND m.ref_id ~>=~ $1 AND m.ref_id ~<~ $2
    ORDER BY m.ref_id, m.id DESC
    LIMIT $3
) page
ORDER BY page.ref_id = $1 DESC, page.ref_id, page.id DESC
LIMIT $3;

-- search_by_ref_tenant --
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $4 AND m.ref_id ~>=~ $1 AND m.ref_id ~<~ $2
ORDER BY m.ref_id = $1 DESC, m.ref_id, m.id DESC
LIMIT $3;

-- dashboard_message --
-- One message, with its tenant's rules for the preview ($3/$4: the default backfill and max
-- lateness); no row for a tenant not in view.
SELECT m.id, m.tenant_id, m.ref_id, m.status, m.fire_at, m.scheduled_for, m.payload::text AS payload,
       m.callback_url, m.category, m.attempts, m.max_attempts, m.last_error, m.last_event, m.created_at,
       m.updated_at, m.sent_at, m.picked_at, m.lease_expires_at, m.paused_by, m.extra_of, m.broadcast_id,
       m.backfill AS own_backfill, extract(epoch FROM m.max_lateness)::float8 AS own_max_lateness_s,
       t.paused AS tenant_paused, now() AS db_now,
       {timing_columns $3 $4}
FROM reminderd.scheduled_messages m
JOIN reminderd.tenants t ON t.id = m.tenant_id
WHERE m.id = $2 AND ($1::text IS NULL OR m.tenant_id = $1);

-- dashboard_deliveries --
-- A message's last 100 attempts, oldest first (deliveries_message): of its tenant $2, as the trail
-- outlives a deleted message and its id may be another tenant's since.
SELECT id, attempt, webhook_id, scheduled_for, status_code, error, duration_ms, created_at
FROM (SELECT * FROM reminderd.deliveries d WHERE d.message_id = $1 AND d.tenant_id = $2
      ORDER BY d.id DESC LIMIT 100) d
ORDER BY id;

-- dashboard_trail --
-- A message's trail, the last 200 entries, oldest first: its events (events_message) and the
-- changes its attempts made (deliveries_message; an attempt that changed nothing is only an
-- attempt), in the trail's order; of its tenant $2, as dashboard_deliveries.
SELECT t.*
FROM (
    SELECT *
    FROM ((SELECT e.id AS event_id, NULL::bigint AS delivery_id, e.created_at, e.event, e.status, e.fire_at,
                  e.reason, e.actor, e.on_behalf_of
           FROM reminderd.events e WHERE e.message_id = $1 AND e.tenant_id = $2 ORDER BY e.id DESC LIMIT 200)
          UNION ALL
          (SELECT NULL::bigint, d.id, d.created_at, d.event, d.status, d.fire_at, d.reason, d.actor, NULL::text
           FROM reminderd.deliveries d WHERE d.message_id = $1 AND d.tenant_id = $2 AND d.event IS NOT NULL
           ORDER BY d.id DESC LIMIT 200)) newest
    ORDER BY created_at DESC, event_id DESC, delivery_id DESC
    LIMIT 200
) t
ORDER BY t.created_at, t.event_id, t.delivery_id;

-- dead_letters --
-- Dead letters of the tenants in view, newest first, dead for at least $2 and at most $3 seconds,
-- last_error containing $4 (NULL: any), below the cursor ($5, $6) = (dead since, id): the partial
-- index scheduled_messages_dead (dead letters only: pruned after REMINDERD_DEAD_RETENTION_DAYS).
-- One more than $7, so the page knows whether another follows.
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.status = 'dead' AND ($1::text IS NULL OR m.tenant_id = $1)
  AND m.updated_at <= now() - make_interval(secs => $2) AND m.updated_at >= now() - make_interval(secs => $3)
  AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0)
  AND (m.updated_at, m.id) < ($5, $6)
ORDER BY m.updated_at DESC, m.id DESC
LIMIT $7 + 1;

-- dead_letters_count --
-- How many dead letters the same filter matches.
SELECT count(*)
FROM reminderd.scheduled_messages m
WHERE m.status = 'dead' AND ($1::text IS NULL OR m.tenant_id = $1)
  AND m.updated_at <= now() - make_interval(secs => $2) AND m.updated_at >= now() - make_interval(secs => $3)
  AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0);

-- dead_letters_selected --
-- Of the ids $2, the dead letters of the tenants in view.
SELECT {dashboard_message_columns}
FROM reminderd.scheduled_messages m
WHERE m.id = ANY ($2::bigint[]) AND m.status = 'dead' AND ($1::text IS NULL OR m.tenant_id = $1)
ORDER BY m.updated_at DESC, m.id DESC;

-- requeue_dead_ids --
-- Requeue the dead letters among the ids $2 of the tenants in view (reminderd.requeue, lowest id
-- first): how many went back to pending (requeued), how many of those went to their next
-- occurrence instead of the delivered one (onward: recurring rows that died after delivery), how
-- many were not requeued because their ref has a live message again (blocked), how many one-offs
-- were skipped because they died after delivery (delivered: requeueing would send them again;
-- reminderd.requeue(id, resend => true) does it on purpose), and how many because their zone is one
-- this database server cannot read (unreadable: requeue refuses them, migration 0038).
WITH chosen AS (
    SELECT d.id, reminderd.died_delivered(d) AS died_delivered, d.cron IS NULL AND d.rrule IS NULL AS one_off,
           NOT reminderd.is_timezone(d.timezone) AS unreadable
    FROM reminderd.scheduled_messages d
    WHERE d.id = ANY ($2::bigint[]) AND d.status = 'dead' AND ($1::text IS NULL OR d.tenant_id = $1)
), done AS (
    SELECT reminderd.requeue(c.id) AS requeued, c.died_delivered AS onward
    FROM chosen c
    WHERE NOT (c.died_delivered AND c.one_off) AND NOT c.unreadable
    ORDER BY c.id
)
SELECT coalesce(sum(d.requeued), 0)::integer AS requeued,
       coalesce(sum(d.requeued) FILTER (WHERE d.onward), 0)::integer AS onward,
       (count(*) - coalesce(sum(d.requeued), 0))::integer AS blocked,
       (SELECT count(*) FROM chosen c WHERE c.died_delivered AND c.one_off AND NOT c.unreadable)::integer
           AS delivered,
       (SELECT count(*) FROM chosen c WHERE c.unreadable)::integer AS unreadable
FROM done d;

-- dead_letters_mark --
-- What a "Requeue N dead letters?" page counts: how many dead letters the filter matches (as
-- dead_letters_count) at or below the mark ($5, $6) = (dead since, id) (NULL: any), and the
-- newest of them, the mark its Yes carries (so a letter that dies after the page was drawn is
-- not requeued by it).
WITH matching AS (
    SELECT m.updated_at, m.id
    FROM reminderd.scheduled_messages m
    WHERE m.status = 'dead' AND ($1::text IS NULL OR m.tenant_id = $1)
      AND m.updated_at <= now() - make_interval(secs => $2)
      AND m.updated_at >= now() - make_interval(secs => $3)
      AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0)
      AND ($5::timestamptz IS NULL OR (m.updated_at, m.id) <= ($5, $6::bigint))
)
SELECT (SELECT count(*) FROM matching) AS matching, newest.updated_at AS newest_at, newest.id AS newest_id
FROM (SELECT 1) one
LEFT JOIN (SELECT * FROM matching ORDER BY updated_at DESC, id DESC LIMIT 1) newest ON true;

-- requeue_dead_matching --
-- Requeue the dead letters a filter matches (as dead_letters_count), only those at or below the
-- mark ($6, $7) = (dead since, id) when one is given (dead_letters_mark): at most $5 of them,
-- lowest id first, counted as requeue_dead_ids. The one-offs that died after delivery and the rows
-- in a zone this server cannot read are left out before the $5 are taken (taken, they would be
-- taken again at every press, and those after them never reached), and counted apart, up to $5 of
-- each (a count of $5: at least that many).
WITH matching AS NOT MATERIALIZED (
    SELECT m.id, reminderd.died_delivered(m) AS died_delivered, m.cron IS NULL AND m.rrule IS NULL AS one_off,
           m.timezone
    FROM reminderd.scheduled_messages m
    WHERE m.status = 'dead' AND ($1::text IS NULL OR m.tenant_id = $1)
      AND m.updated_at <= now() - make_interval(secs => $2)
      AND m.updated_at >= now() - make_interval(secs => $3)
      AND ($4::text IS NULL OR strpos(lower(m.last_error), lower($4)) > 0)
      AND ($6::timestamptz IS NULL OR (m.updated_at, m.id) <= ($6, $7::bigint))
), done AS (
    SELECT reminderd.requeue(c.id) AS requeued, c.died_delivered AS onward
    FROM matching c
    WHERE NOT (c.died_delivered AND c.one_off) AND reminderd.is_timezone(c.timezone)
    ORDER BY c.id
    LIMIT $5
)
SELECT coalesce(sum(d.requeued), 0)::integer AS requeued,
       coalesce(sum(d.requeued) FILTER (WHERE d.onward), 0)::integer AS onward,
       (count(*) - coalesce(sum(d.requeued), 0))::integer AS blocked,
       (SELECT count(*) FROM (SELECT FROM matching c WHERE c.died_delivered AND c.one_off
                              AND reminderd.is_timezone(c.timezone) LIMIT $5) s)::integer AS delivered,
       (SELECT count(*) FROM (SELECT FROM matching c WHERE NOT reminderd.is_timezone(c.timezone) LIMIT $5) s
       )::integer AS unreadable
FROM done d;

-- dashboard_send_now --
SELECT reminderd.send_now($1, $2);

-- dashboard_pause --
SELECT reminderd.pause($1, $2);

-- dashboard_resume --
SELECT reminderd.resume($1, $2);

-- dashboard_cancel --
SELECT reminderd.cancel_message($1, $2);

-- dashboard_broadcasts_all --
-- Every tenant's broadcasts with their progress (the view reminderd.broadcasts), newest first,
-- below the cursor $1 (an id), only those awaiting approval when $3 (not one done: its rows are
-- gone, nothing is left to approve): the primary key read backwards, the progress of each a few
-- rows of broadcast_counts. One more than $2, so the page knows whether another follows.
SELECT *
FROM reminderd.broadcasts b
WHERE b.id < $1 AND (NOT $3 OR (b.approval = 'awaiting' AND NOT b.done))
ORDER BY b.id DESC
LIMIT $2 + 1;

-- dashboard_broadcasts_tenant --
-- The same for one tenant ($4): broadcast_requests_tenant read backwards.
SELECT *
FROM reminderd.broadcasts b
WHERE b.tenant_id = $4 AND b.id < $1 AND (NOT $3 OR (b.approval = 'awaiting' AND NOT b.done))
ORDER BY b.id DESC
LIMIT $2 + 1;

-- dashboard_broadcast --
-- One broadcast with its progress and what it asked for; no row for a tenant not in view.
SELECT b.*, r.payload::text AS payload, r.until, r.notify, r.callback_url, r.calendar, r.decision_note,
       extract(epoch FROM r.stage_ahead)::float8 AS stage_ahead_s
FROM reminderd.broadcasts b
JOIN reminderd.broadcast_requests r ON r.id = b.id
WHERE b.id = $2 AND ($1::text IS NULL OR b.tenant_id = $1);

-- dashboard_broadcast_waves --
-- A broadcast's waves (occurrences), newest first, the last 50, each with its rows' progress
-- (broadcast_counts_occurrence).
SELECT o.occurrence, o.contacts, o.first_fire_at, o.last_fire_at, o.staged_at, o.completed_at,
       o.completion_message_id,
       coalesce(c.waiting, 0) AS waiting, coalesce(c.held, 0) AS held, coalesce(c.sent, 0) AS sent,
       coalesce(c.failed, 0) AS failed, coalesce(c.expired, 0) AS expired, coalesce(c.cancelled, 0) AS cancelled
FROM reminderd.broadcast_occurrences o
LEFT JOIN LATERAL (
    SELECT sum(k.waiting) AS waiting, sum(k.held) AS held, sum(k.sent) AS sent, sum(k.failed) AS failed,
           sum(k.expired) AS expired, sum(k.cancelled) AS cancelled
    FROM reminderd.broadcast_counts k
    WHERE k.broadcast_id = o.broadcast_id AND k.occurrence = o.occurrence AND k.tenant_id = o.tenant_id
) c ON true
WHERE o.broadcast_id = $1
  AND o.tenant_id = (SELECT r.tenant_id FROM reminderd.broadcast_requests r WHERE r.id = $1)
ORDER BY o.occurrence DESC
LIMIT 50;

-- dashboard_awaiting_hours --
-- What the broadcasts $1 would send, per UTC hour, once approved: their rows awaiting approval
-- (scheduled_messages_broadcast), counted by the hour they fire in.
SELECT m.broadcast_id, date_trunc('hour', m.fire_at, 'UTC') AS hour, count(*) AS sends
FROM reminderd.scheduled_messages m
WHERE m.broadcast_id = ANY ($1::bigint[]) AND m.status = 'awaiting_approval'
GROUP BY 1, 2
ORDER BY 1, 2;

-- prune_counts --
-- The daemon's housekeeping: the aggregates' minutes after 3 hours, hours after 8 days.
SELECT reminderd.prune_counts();
