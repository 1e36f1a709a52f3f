-- The statements of `reminderd serve` (and of `reminderd api-key`), by name. Loaded by
-- reminderd/queries.py into the same namespace as queries.sql: names are unique across both.
-- Every statement about messages is scoped to the tenant of the request's API key ($1): a
-- message of another tenant is never read or changed, and answers as one that does not exist.

-- api_key_by_prefix --
-- The key a request presented, found by its visible prefix; the server compares the hash.
SELECT k.id, k.prefix, k.key_hash, k.tenant_id, k.name, k.scopes, k.revoked_at, t.api_rate_limit
FROM reminderd.api_keys k
LEFT JOIN reminderd.tenants t ON t.id = k.tenant_id
WHERE k.prefix = $1;

-- api_keys_used --
-- last_used_at for the keys used since the last write, in one statement every few seconds.
UPDATE reminderd.api_keys SET last_used_at = now() WHERE id = ANY ($1::bigint[]);

-- create_api_key --
INSERT INTO reminderd.api_keys (prefix, key_hash, tenant_id, name, scopes)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, prefix, tenant_id, name, scopes, created_at, last_used_at, revoked_at;

-- list_api_keys --
-- $1: one tenant's keys, or NULL for every key (operators' too).
SELECT id, prefix, tenant_id, name, scopes, created_at, last_used_at, revoked_at
FROM reminderd.api_keys
WHERE $1::text IS NULL OR tenant_id = $1
ORDER BY tenant_id NULLS FIRST, created_at, id;

-- revoke_api_key --
UPDATE reminderd.api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE prefix = $1
RETURNING id, prefix, tenant_id, name, scopes, created_at, last_used_at, revoked_at;

-- idempotency_lock --
-- Inside the write's transaction: false while another request with this key is running.
SELECT pg_try_advisory_xact_lock(hashtextextended('reminderd idempotency' || chr(31) || $1 || chr(31) || $2, 0));

-- idempotency_lookup --
-- After the lock, in a statement of its own (so with a snapshot that sees a commit made just
-- before the lock was taken): the stored answer, if any, of the last 24 hours.
SELECT request_hash, status_code, content_type, response_body
FROM reminderd.idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND created_at > now() - interval '24 hours';

-- idempotency_save --
INSERT INTO reminderd.idempotency_keys (tenant_id, key, request_hash, status_code, content_type, response_body)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id, key) DO UPDATE
SET request_hash = excluded.request_hash, status_code = excluded.status_code,
    content_type = excluded.content_type, response_body = excluded.response_body, created_at = now();

-- idempotency_prune --
-- Keys older than 24 hours, in batches of $1.
DELETE FROM reminderd.idempotency_keys
WHERE ctid = ANY (ARRAY(SELECT ctid FROM reminderd.idempotency_keys
                        WHERE created_at < now() - interval '24 hours' LIMIT $1));

-- schedule_many --
-- $2: reminderd.schedule_item_v2[] (migration 0014: an item may name a contact); $3 atomic.
SELECT item, message_id, result, status, fire_at, error_sqlstate, error_message, error_hint, error_detail,
       error_constraint, timezone, timezone_source
FROM reminderd.schedule_many($1, $2::reminderd.schedule_item_v2[], $3);

-- message_columns --
-- A fragment: what the API shows of a message.
m.id, m.ref_id, m.status, m.fire_at, m.scheduled_for, m.timezone, m.cron, m.rrule, m.until, m.max_runs,
m.runs, m.category, m.callback_url, m.max_attempts, m.attempts, m.calendar, m.holiday_rule, m.backfill,
extract(epoch FROM m.max_lateness)::float8 AS max_lateness_s, m.last_error, m.last_event, m.created_at,
m.updated_at, m.sent_at, m.extra_of, m.contact_id, m.timezone_source, m.payload::text AS payload

-- get_message --
SELECT {message_columns}
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $1 AND m.id = $2;

-- message_deliveries --
-- A message's last 100 attempts, oldest first (deliveries_message).
SELECT attempt, webhook_id, scheduled_for, status_code, error, duration_ms, created_at
FROM (SELECT * FROM reminderd.deliveries d
      WHERE d.message_id = $2 AND d.tenant_id = $1
      ORDER BY d.attempt DESC, d.id DESC LIMIT 100) d
ORDER BY created_at, id;

-- message_events --
-- A message's audit trail, the last 200 changes, oldest first: its events and the changes its
-- attempts made, as reminderd.trail tells them (an attempt's change is on its deliveries row, not
-- in events: migration 0007). The trail's two halves are read by message (events_message,
-- deliveries_message).
SELECT at AS created_at, event, status, fire_at, reason, actor
FROM (SELECT * FROM reminderd.trail t
      WHERE t.message_id = $2 AND t.tenant_id = $1 AND t.event IS NOT NULL
      ORDER BY t.at DESC, t.event_id DESC NULLS LAST, t.delivery_id DESC LIMIT 200) t
ORDER BY at, event_id, delivery_id;

-- list_newest --
-- Newest first in the statuses $2: for each status, the first $4 entries of
-- scheduled_messages_tenant_status below the cursor id $3, then the newest $4 of those.
-- $5/$6 bound fire_at (-infinity/infinity: no bound; $7 true also keeps rows without a fire_at).
-- The tenant is matched as = ANY (ARRAY[$1]), not = $1, and is the first sort key: an equality
-- with a constant would drop it from the order as redundant, and the primary key, read backwards,
-- would then give the order too. A plan may pick that walk when the statistics make a status
-- look common (a tenant holding most of the table): for each status it has no row in, the walk
-- read to the table's end. As written, only scheduled_messages_tenant_status gives the order.
SELECT page.*
FROM unnest($2::text[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT {message_columns}
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = ANY (ARRAY[$1::text]) AND m.status = s.status AND m.id < $3
      AND ((m.fire_at >= $5 AND m.fire_at < $6) OR (m.fire_at IS NULL AND $7))
    ORDER BY m.tenant_id DESC, m.id DESC
    LIMIT $4
) page
ORDER BY page.id DESC
LIMIT $4;

-- list_soonest --
-- Soonest first, live or dead statuses $2 (the partial index scheduled_messages_overview), after
-- the cursor ($3, $4) = (fire_at, id), fire_at in [$6, $7).
SELECT page.*
FROM unnest($2::text[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT {message_columns}
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = $1 AND m.status = s.status
      AND m.status IN ('pending', 'picked', 'paused', 'dead')
      AND m.fire_at >= $6 AND m.fire_at < $7
      AND (m.fire_at, m.id) > ($3, $4)
    ORDER BY m.fire_at, m.id
    LIMIT $5
) page
ORDER BY page.fire_at, page.id
LIMIT $5;

-- list_by_ref --
-- One ref's messages, or every ref from $2 (inclusive) to $3 (exclusive) in byte order (a prefix
-- range), in the statuses $4; newest first ($5 false) below the cursor id $6, or soonest first ($5
-- true) after ($7, $6). fire_at bounds $8/$9/$10 as in list_newest. The range is read first, from
-- scheduled_messages_tenant_ref (MATERIALIZED: else the planner may walk the primary key backwards
-- and filter, which is slow when the prefix is rare), then sorted: a page costs what the refs
-- matching the prefix cost, not what the tenant's history does.
WITH matched AS MATERIALIZED (
    SELECT {message_columns}
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = $1 AND m.ref_id ~>=~ $2 AND m.ref_id ~<~ $3
      AND m.status = ANY ($4::text[])
      AND ((m.fire_at >= $8 AND m.fire_at < $9) OR (m.fire_at IS NULL AND $10))
      AND CASE WHEN $5 THEN m.fire_at IS NOT NULL AND (m.fire_at, m.id) > ($7, $6) ELSE m.id < $6 END
)
SELECT * FROM matched
ORDER BY CASE WHEN $5 THEN fire_at END, CASE WHEN $5 THEN id END, CASE WHEN NOT $5 THEN id END DESC
LIMIT $11;

-- cancel_message --
SELECT reminderd.cancel_message($1, $2);

-- cancel_matching --
SELECT reminderd.cancel_matching($1, $2);

-- live_ref_of --
-- The ref of a message that is its ref's live row (not an extra occurrence), with its status; no
-- row for another tenant's or an unknown id.
SELECT m.ref_id, m.status, m.extra_of, m.cron IS NOT NULL OR m.rrule IS NOT NULL AS recurring
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $1 AND m.id = $2;

-- pause_ref --
SELECT reminderd.pause($1, $2);

-- resume_ref --
SELECT reminderd.resume($1, $2);

-- reschedule_ref --
SELECT reminderd.reschedule($1, $2, $3);

-- reschedule_ref_in --
-- A delay from the database's clock.
SELECT reminderd.reschedule($1, $2, now() + make_interval(secs => $3));

-- reschedule_ref_local --
-- A wall time in the message's own timezone.
SELECT reminderd.reschedule($1, $2, reminderd.local_instant($3, m.timezone))
FROM reminderd.scheduled_messages m
WHERE m.tenant_id = $1 AND m.ref_id = $2 AND m.status IN ('pending', 'paused') AND m.extra_of IS NULL;

-- set_payload --
SELECT reminderd.set_payload($1, $2, $3::jsonb);

-- requeue_message --
-- Only this tenant's message: reminderd.requeue() itself takes any id. $3 resend (one that died
-- delivered: without it a one-off is refused, 55000, and a recurring one moves to its next occurrence).
SELECT reminderd.requeue(m.id, resend => $3)
FROM reminderd.scheduled_messages m WHERE m.tenant_id = $1 AND m.id = $2;

-- send_now --
SELECT reminderd.send_now($1, $2);

-- send_now_timing --
-- What the daemon will decide about the message send_now made due, read like the claim reads
-- it ($3/$4: the default backfill and max lateness), with the database's clock.
SELECT m.id, m.ref_id, m.status, m.fire_at, m.attempts, m.extra_of,
       coalesce(m.scheduled_for, m.fire_at) AS occurrence, now() AS db_now, t.paused AS tenant_paused,
       {timing_columns $3 $4}
FROM reminderd.scheduled_messages m
JOIN reminderd.tenants t ON t.id = m.tenant_id
WHERE m.tenant_id = $1 AND m.id = $2;

-- api_tenant --
SELECT id, callback_url, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt, paused, api_rate_limit,
       previous_secret_expires_at
FROM reminderd.tenants
WHERE id = $1;

-- set_callback_url --
UPDATE reminderd.tenants SET callback_url = $2 WHERE id = $1;

-- pause_tenant --
SELECT reminderd.pause_tenant($1);

-- resume_tenant --
SELECT reminderd.resume_tenant($1);

-- api_rotate_secret --
-- The new secret, and previous_until: when the old one stops signing (the function reads it back
-- after rotating; a subquery here would read the row from before the call).
SELECT secret, previous_until FROM reminderd.api_rotate_secret($1, make_interval(secs => $2));

-- stats_counts --
-- Messages by status, for each status in $2 (every status reminderd.lifecycle.Status names, so a
-- new one is never left out): each count one range of scheduled_messages_tenant_status.
SELECT s.status, (SELECT count(*) FROM reminderd.scheduled_messages m
                  WHERE m.tenant_id = $1 AND m.status = s.status) AS messages
FROM unnest($2::text[]) AS s(status);

-- stats_upcoming --
-- Pending messages by hour for the next 48 hours (scheduled_messages_overview).
SELECT date_trunc('hour', fire_at) AS hour, count(*) AS messages
FROM reminderd.scheduled_messages
WHERE tenant_id = $1 AND status = 'pending'
  AND fire_at >= date_trunc('hour', now()) AND fire_at < now() + interval '48 hours'
GROUP BY 1
ORDER BY 1;

-- stats_rates --
-- Delivered, retried and dead-lettered in the last hour and day, from the audit trail: the attempts'
-- changes (deliveries_created) and the rest of events (events_created), as reminderd.trail has them.
SELECT count(*) FILTER (WHERE event = 'fired' AND created_at > now() - interval '1 hour') AS delivered_1h,
       count(*) FILTER (WHERE event = 'retry_scheduled' AND created_at > now() - interval '1 hour') AS retried_1h,
       count(*) FILTER (WHERE event = 'dead_lettered' AND created_at > now() - interval '1 hour') AS dead_1h,
       count(*) FILTER (WHERE event = 'fired') AS delivered_24h,
       count(*) FILTER (WHERE event = 'retry_scheduled') AS retried_24h,
       count(*) FILTER (WHERE event = 'dead_lettered') AS dead_24h
FROM (SELECT t.at AS created_at, t.event FROM reminderd.trail t
      WHERE t.at > now() - interval '24 hours' AND t.tenant_id = $1
        AND t.event IN ('fired', 'retry_scheduled', 'dead_lettered')) changes;

-- stats_lateness --
-- Delivered attempts of the last day: how late, in milliseconds (deliveries_created).
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
FROM (SELECT extract(epoch FROM d.created_at - d.scheduled_for) * 1000 AS ms
      FROM reminderd.deliveries d
      WHERE d.created_at > now() - interval '24 hours' AND d.tenant_id = $1
        AND d.status_code BETWEEN 200 AND 299) late;

-- set_api_rate_limit --
-- `reminderd tenant rate-limit`: the tenant's own limit per key, NULL for the server's default.
UPDATE reminderd.tenants SET api_rate_limit = $2 WHERE id = $1;

-- act_for --
-- Inside a write's transaction (an API route's, a dashboard action's): the audit trail's
-- on_behalf_of (migration 0011) for what follows in it, "prefix (name)" of the API key.
SELECT set_config('reminderd.on_behalf_of', $1, true);
