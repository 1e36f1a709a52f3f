-- Every statement reminderd runs, by name. Loaded once by reminderd/queries.py.
-- Times come from the database clock (now()), never from the daemon's host.

-- timing_columns --
-- A fragment, not a statement: the columns reminderd/schedule/timing.py reads, included by the claim and
-- the planner as {timing_columns $n $m}, which number its $backfill and $max_lateness. Effective
-- values: the row's over its tenant's over the daemon's defaults.
m.timezone, m.cron, m.rrule, m.until, m.max_runs, m.runs,
coalesce(m.calendar, t.calendar) AS calendar, m.calendar IS NULL AS calendar_from_tenant,
coalesce(m.holiday_rule, t.holiday_rule) AS holiday_rule,
CASE WHEN coalesce(m.holiday_rule, t.holiday_rule) = 'skip' THEN ARRAY(
    SELECT h.day FROM reminderd.tenant_holidays h
    WHERE h.tenant_id = m.tenant_id AND h.day >= (coalesce(m.fire_at, now()) AT TIME ZONE 'UTC')::date - 2
    ORDER BY h.day LIMIT 400) END AS holiday_days,
CASE WHEN coalesce(m.holiday_rule, t.holiday_rule) = 'skip' THEN ARRAY(
    SELECT h.name FROM reminderd.tenant_holidays h
    WHERE h.tenant_id = m.tenant_id AND h.day >= (coalesce(m.fire_at, now()) AT TIME ZONE 'UTC')::date - 2
    ORDER BY h.day LIMIT 400) END AS holiday_names,
-- Quiet hours only for categories the tenant does not exempt.
CASE WHEN m.category <> ALL (t.quiet_exempt) THEN t.quiet_start END AS quiet_start,
CASE WHEN m.category <> ALL (t.quiet_exempt) THEN t.quiet_end END AS quiet_end,
coalesce(m.backfill, $backfill) AS backfill,
coalesce(extract(epoch FROM m.max_lateness)::float8, $max_lateness) AS max_lateness_s

-- claim --
-- Claim up to $2 due rows in one short transaction; committed before any HTTP call.
-- $1 lookback (s), $2 batch size, $3 lease (s), $6 the claiming daemon (reminderd.daemons.id).
-- attempts counts the attempt being made.
-- The daemon then decides, before any HTTP, whether the occurrence is sent now or held: deferred
-- (quiet hours), moved off a holiday, expired as too late (backfill policy) or finished.
WITH due AS (
    SELECT id
    FROM reminderd.scheduled_messages
    WHERE status = 'pending'
      AND fire_at <= now()
      AND fire_at > now() - make_interval(secs => $1)
    ORDER BY fire_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE reminderd.scheduled_messages AS m
SET status = 'picked',
    attempts = m.attempts + 1,
    picked_at = now(),
    picked_by = $6,
    lease_expires_at = now() + make_interval(secs => $3),
    updated_at = now()
FROM due, reminderd.tenants AS t
WHERE m.id = due.id
  AND t.id = m.tenant_id
RETURNING m.id, m.tenant_id, m.ref_id, m.payload::text AS payload,
          coalesce(m.callback_url, t.callback_url) AS callback_url,
          coalesce(m.scheduled_for, m.fire_at) AS scheduled_for, m.fire_at,
          m.attempts, m.max_attempts, t.signing_secret,
          CASE WHEN t.previous_secret_expires_at > now() THEN t.previous_signing_secret END
              AS previous_signing_secret,
          m.picked_at, m.contact_id, m.timezone_source, m.broadcast_id,
          {timing_columns $4 $5};

-- record_outcomes --
-- Log a batch of attempts and move each row on, in one round trip. A row is only moved when it
-- is still picked by the same claim: if its lease ran out and another daemon took it over, that
-- daemon owns it now. picked_at (the claiming transaction's time) is the fencing token: it
-- changes with every claim, unlike attempts, which restarts for each occurrence and on requeue.
-- $1: the batch, reminderd.outcome_v1[] (migration 0004).
-- Returns the ids of the rows moved on: the daemon logs the others as discarded.
--
-- Each attempt is one row in reminderd.deliveries: its answer, and the change it made (event,
-- status, fire_at, reason; NULL when it made none: the row was no longer this claim's). The row
-- points at it (last_delivery_id), so the audit trigger does not write that change to events
-- again (migration 0007). Rows held back before any request get their event from the trigger.
-- An attempt on a message deleted meanwhile is not logged (its ref is gone with it), nor one
-- already logged: a batch written again after an outage swallowed the reply to the first write
-- (which the server still committed) logs each attempt once. Such an attempt gets no delivery_id,
-- so it cannot claim a change it did not record (the first write moved its row already).
--
-- Rows are looked up by primary key, whatever the statistics say: the status is compared with a
-- column of the batch (held_status), a join condition. As a constant (m.status = 'picked') it was
-- a filter on scheduled_messages alone, which let the planner read the rows through the partial
-- index on picked rows; after ANALYZE saw none picked, that index looks empty, and the plan
-- walked it once per outcome (issue 13: statements of seconds).
WITH outcome AS MATERIALIZED (
    SELECT o.*, 'picked'::text AS held_status,
           CASE WHEN o.attempted  -- not for a message held back before any request
                 AND NOT EXISTS (SELECT 1 FROM reminderd.deliveries d  -- this claim's attempt, logged already
                                 WHERE d.message_id = o.message_id AND d.attempt = o.attempt
                                   AND d.webhook_id = o.webhook_id AND d.created_at >= o.picked_at)
                THEN nextval('reminderd.deliveries_id_seq') END AS delivery_id
    FROM unnest($1::reminderd.outcome_v1[]) AS o
),
moved AS (
    UPDATE reminderd.scheduled_messages AS m
    SET status = o.next_status,
        fire_at = CASE WHEN o.retry_in_s IS NOT NULL THEN now() + make_interval(secs => o.retry_in_s)
                       ELSE coalesce(o.next_fire_at, m.fire_at) END,
        -- A finished row keeps its occurrence (dead_letters shows it; requeue reuses the webhook-id).
        scheduled_for = CASE WHEN o.next_status IN ('sent', 'dead', 'expired', 'finished') THEN o.occurrence
                             ELSE o.next_scheduled_for END,
        attempts = CASE WHEN o.reset_attempts THEN 0
                        WHEN o.refund_attempt THEN m.attempts - 1
                        ELSE m.attempts END,
        runs = m.runs + CASE WHEN o.ran THEN 1 ELSE 0 END,
        sent_at = CASE WHEN o.delivered THEN now() ELSE m.sent_at END,
        last_error = o.last_error,
        last_event = o.event,
        lease_expires_at = NULL,
        updated_at = now(),
        last_delivery_id = coalesce(o.delivery_id, m.last_delivery_id)
    FROM outcome AS o
    WHERE m.id = o.message_id
      AND m.status = o.held_status
      AND m.picked_at = o.picked_at
    RETURNING m.id, o.delivery_id, m.ref_id, m.last_event, m.status, m.fire_at, m.last_error,
              m.tenant_id, m.broadcast_id, m.contact_id, m.local_time
),
-- A broadcast's progress (migration 0009): the rows the attempts moved, counted here once per
-- batch and wave (the counting trigger leaves them, as the audit trigger leaves their change to
-- deliveries). A picked row was 'waiting'; one a retry keeps waiting changes no count.
counted AS (
    INSERT INTO reminderd.broadcast_counts
        (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
    SELECT moved.broadcast_id, moved.local_time, moved.tenant_id, -count(*),
           count(*) FILTER (WHERE s.after = 'held'), count(*) FILTER (WHERE s.after = 'sent'),
           count(*) FILTER (WHERE s.after = 'failed'), count(*) FILTER (WHERE s.after = 'expired'),
           count(*) FILTER (WHERE s.after = 'cancelled')
    FROM moved
    CROSS JOIN LATERAL (SELECT reminderd.broadcast_state(moved.status, moved.last_event) AS after) AS s
    WHERE moved.delivery_id IS NOT NULL AND moved.broadcast_id IS NOT NULL AND moved.contact_id IS NOT NULL
      AND s.after <> 'waiting'
    GROUP BY 1, 2, 3
),
logged AS (
    INSERT INTO reminderd.deliveries
        (id, message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for, status_code, error, duration_ms,
         event, status, fire_at, reason)
    OVERRIDING SYSTEM VALUE
    SELECT o.delivery_id, o.message_id, o.tenant_id, r.ref_id, o.webhook_id, o.attempt, o.occurrence,
           o.status_code, o.error, o.duration_ms, moved.last_event, moved.status, moved.fire_at, moved.last_error
    FROM outcome AS o
    LEFT JOIN moved ON moved.delivery_id = o.delivery_id
    CROSS JOIN LATERAL (
        SELECT coalesce(moved.ref_id,
                        (SELECT m.ref_id FROM reminderd.scheduled_messages m WHERE m.id = o.message_id)) AS ref_id
    ) AS r
    WHERE o.delivery_id IS NOT NULL  -- an attempt made, and not logged already
      AND r.ref_id IS NOT NULL
)
SELECT moved.id FROM moved;

-- outcomes_written --
-- After a batch had to be written again (an outage swallowed a reply): which of the outcomes the
-- second write did not apply had been applied by the first. Such a row is still marked with the
-- claim's token and carries the outcome's event; a row rescued, reaped or cancelled meanwhile
-- does not. $1: the outcomes, reminderd.outcome_v1[].
SELECT m.id
FROM unnest($1::reminderd.outcome_v1[]) AS o
JOIN reminderd.scheduled_messages AS m ON m.id = o.message_id
WHERE m.picked_at = o.picked_at
  AND m.status <> 'picked'
  AND m.last_event = o.event;

-- release --
-- Shutdown: hand back claimed rows this daemon will not finish. Rows never attempted give their
-- attempt back; all keep their occurrence (same webhook-id) and are due again now, so the
-- lookback does not expire them. $1: the rows, reminderd.release_v1[].
UPDATE reminderd.scheduled_messages AS m
SET status = 'pending',
    attempts = m.attempts - CASE WHEN r.started THEN 0 ELSE 1 END,
    scheduled_for = coalesce(m.scheduled_for, m.fire_at),
    fire_at = now(),
    lease_expires_at = NULL,
    last_event = 'released',
    last_error = 'handed back at shutdown',
    updated_at = now()
FROM unnest($1::reminderd.release_v1[]) AS r
WHERE m.id = r.message_id
  AND m.status = 'picked'
  AND m.picked_at = r.picked_at;

-- reap_expired_leases --
-- A daemon died holding these: make them due again now, keeping their occurrence.
WITH expired AS (
    SELECT id
    FROM reminderd.scheduled_messages
    WHERE status = 'picked' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE reminderd.scheduled_messages AS m
SET status = 'pending',
    scheduled_for = coalesce(m.scheduled_for, m.fire_at),
    fire_at = now(),
    lease_expires_at = NULL,
    last_error = 'lease expired after attempt ' || m.attempts || ' (daemon stopped mid-flight); redelivering',
    last_event = 'lease_expired',
    updated_at = now()
FROM expired
WHERE m.id = expired.id
RETURNING m.id, m.tenant_id, m.ref_id, m.attempts;

-- The daemon registry ------------------------------------------------------------------------

-- heartbeat --
-- Register this daemon, or refresh its heartbeat: one short statement, a transaction of its own.
-- A row found missing is inserted again: the first beat, or another daemon declared this one dead
-- meanwhile (inserted says so). $1 id, $2 host, $3 pid, $4 version, $5 started_at (NULL: now),
-- $6 settings (jsonb), $7 stopping, $8 the database time of its last claim with rows.
INSERT INTO reminderd.daemons AS d
    (id, host, pid, version, started_at, heartbeat_at, stopping, settings, last_claim_at)
VALUES ($1, $2, $3, $4, coalesce($5, now()), now(), $7, $6::jsonb, $8)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(),
    stopping = excluded.stopping,
    last_claim_at = coalesce(excluded.last_claim_at, d.last_claim_at)
RETURNING d.heartbeat_at AS at, d.started_at, (d.xmax = 0) AS inserted;

-- deregister --
-- A clean exit: nothing is held any more.
DELETE FROM reminderd.daemons WHERE id = $1;

-- held_by --
-- What the database says daemon $1 holds: its picked rows and their claim tokens. Read through
-- scheduled_messages_leases (every picked row: a small set).
SELECT id, picked_at
FROM reminderd.scheduled_messages
WHERE status = 'picked' AND picked_by = $1;

-- hand_back --
-- Claimed rows the daemon never received (the claim's reply was lost): pending again, due now,
-- their attempt given back (it was never made), their occurrence kept. Only rows still picked by
-- that claim. $1: the rows, reminderd.release_v1[]; $2 the reason.
UPDATE reminderd.scheduled_messages AS m
SET status = 'pending',
    attempts = m.attempts - CASE WHEN r.started THEN 0 ELSE 1 END,
    scheduled_for = coalesce(m.scheduled_for, m.fire_at),
    fire_at = now(),
    lease_expires_at = NULL,
    last_event = 'released',
    last_error = $2,
    updated_at = now()
FROM unnest($1::reminderd.release_v1[]) AS r
WHERE m.id = r.message_id
  AND m.status = 'picked'
  AND m.picked_at = r.picked_at
RETURNING m.id, m.tenant_id, m.ref_id, m.attempts;

-- rescue_dead_daemons --
-- Daemons silent longer than their REMINDERD_DEAD_AFTER (and this daemon's) are dead: their picked
-- rows go back to pending, due now, keeping their occurrence (same webhook-id) and their attempt
-- count, as the lease reaper does; then their registry rows are deleted. One statement.
-- Only a daemon that is itself in touch with the database judges: its own heartbeat is fresh, and
-- its contact has been unbroken since $4 (the database's time), from before the silent daemon's
-- next heartbeat was due, or for at least its own dead_after. After the database itself stalled,
-- every daemon's heartbeat looks old, and none of them is dead. The judgement holds only within
-- the heartbeat it was made in ($5, the judge's heartbeat_at as its last beat left it): a rescue
-- sent just before a stall, which the server runs only once it resumes, finds the judge's
-- heartbeat old or already renewed, and does nothing.
-- $1 this daemon, $2 its dead_after (s), $3 its heartbeat (s), $4 its unbroken contact since,
-- $5 its last heartbeat_at.
WITH judge AS (
    SELECT 1
    FROM reminderd.daemons
    WHERE id = $1
      AND heartbeat_at = $5
      AND heartbeat_at > now() - make_interval(secs => 1.5 * $3)
),
dead AS (
    SELECT d.id, d.host, d.pid, d.heartbeat_at
    FROM reminderd.daemons AS d
    WHERE EXISTS (SELECT FROM judge)
      AND d.id <> $1
      AND d.heartbeat_at < now() - make_interval(secs => greatest($2, CASE
              WHEN jsonb_typeof(d.settings -> 'dead_after') = 'number' THEN (d.settings ->> 'dead_after')::float8 END))
      AND $4 <= greatest(
              d.heartbeat_at + make_interval(secs => CASE
                  WHEN jsonb_typeof(d.settings -> 'heartbeat') = 'number' THEN (d.settings ->> 'heartbeat')::float8
                  ELSE $3 END),
              now() - make_interval(secs => $2))
    FOR UPDATE OF d SKIP LOCKED
),
rescued AS (
    UPDATE reminderd.scheduled_messages AS m
    SET status = 'pending',
        scheduled_for = coalesce(m.scheduled_for, m.fire_at),
        fire_at = now(),
        lease_expires_at = NULL,
        last_error = format('rescued from daemon %s (%s, pid %s), silent since %s, after attempt %s; redelivering',
                            dead.id, dead.host, dead.pid,
                            to_char(dead.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                            m.attempts),
        last_event = 'rescued',
        updated_at = now()
    FROM dead
    WHERE m.status = 'picked'
      AND m.picked_by = dead.id
    RETURNING m.id, m.tenant_id, m.ref_id, m.attempts, m.picked_by
),
forgotten AS (
    DELETE FROM reminderd.daemons AS d
    USING dead
    WHERE d.id = dead.id
)
SELECT dead.id AS daemon_id, dead.host, dead.pid, dead.heartbeat_at, r.id, r.tenant_id, r.ref_id, r.attempts
FROM dead
LEFT JOIN rescued AS r ON r.picked_by = dead.id
ORDER BY dead.id, r.id;

-- daemons --
-- Every registered daemon, for `reminderd status` and the dashboard (the daemon_overview view).
SELECT id, host, pid, version, started_at, heartbeat_at, extract(epoch FROM silent_for)::float8 AS silent_for_s,
       state, held, last_claim_at
FROM reminderd.daemon_overview
ORDER BY started_at, id;

-- expire_missed --
-- One-off rows due longer ago than the lookback: expired with the reason, never fired late in an
-- avalanche. $1 lookback (s), $2 batch.
WITH missed AS (
    SELECT id
    FROM reminderd.scheduled_messages
    WHERE status = 'pending'
      AND cron IS NULL AND rrule IS NULL
      AND fire_at <= now() - make_interval(secs => $1)
    ORDER BY fire_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE reminderd.scheduled_messages AS m
SET status = 'expired',
    last_error = format('missed: due at %s, more than %s s before a daemon could send it (REMINDERD_LOOKBACK)',
                        to_char(coalesce(m.scheduled_for, m.fire_at) AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                        $1::float8),
    last_event = 'expired',
    updated_at = now()
FROM missed
WHERE m.id = missed.id
RETURNING m.id, m.tenant_id, m.ref_id, coalesce(m.scheduled_for, m.fire_at) AS scheduled_for;

-- recurring_to_plan --
-- Recurring rows needing a new fire_at: never planned (fire_at NULL), or their occurrence was
-- missed beyond the lookback. $1 lookback (s), $2 batch, $3 and $4 the default backfill and max
-- lateness. Also returns the database's now(). Two branches so each is a short range of the due
-- index.
WITH to_plan AS (
    (SELECT id
     FROM reminderd.scheduled_messages
     WHERE status = 'pending' AND fire_at IS NULL AND (cron IS NOT NULL OR rrule IS NOT NULL)
     LIMIT $2)
    UNION ALL
    (SELECT id
     FROM reminderd.scheduled_messages
     WHERE status = 'pending' AND fire_at <= now() - make_interval(secs => $1)
       AND (cron IS NOT NULL OR rrule IS NOT NULL)
     ORDER BY fire_at
     LIMIT $2)
)
SELECT m.id, m.tenant_id, m.ref_id, m.fire_at, now() AS db_now,
       {timing_columns $3 $4}
FROM to_plan
JOIN reminderd.scheduled_messages m ON m.id = to_plan.id
JOIN reminderd.tenants t ON t.id = m.tenant_id;

-- plan_recurring --
-- Set the planned fire_at (or dead-letter a poisoned row), only if nobody changed the row since it
-- was read (fire_at compared), so concurrent daemons cannot plan one row twice. $1: the plans,
-- reminderd.plan_v1[].
UPDATE reminderd.scheduled_messages AS m
SET fire_at = coalesce(p.next_fire_at, m.fire_at),
    status = p.next_status,
    scheduled_for = NULL,
    attempts = 0,
    last_error = p.last_error,
    last_event = p.event,
    updated_at = now()
FROM unnest($1::reminderd.plan_v1[]) AS p
WHERE m.id = p.message_id
  AND m.status = 'pending'
  AND m.fire_at IS NOT DISTINCT FROM p.seen_fire_at
RETURNING m.id, m.tenant_id, m.ref_id, m.status, m.fire_at, m.last_error;

-- seconds_until_next_due --
-- How long the claim loop may sleep: until the earliest pending row inside the lookback.
SELECT extract(epoch FROM min(fire_at) - clock_timestamp())::float8
FROM reminderd.scheduled_messages
WHERE status = 'pending'
  AND fire_at > now() - make_interval(secs => $1);

-- prune --
-- One batch of retention pruning (see reminderd.prune in the 0002 migration). $1 finished rows,
-- $2 dead rows, $3 deliveries and events: days to keep.
SELECT messages, deliveries, events
FROM reminderd.prune(make_interval(days => $1), make_interval(days => $2), make_interval(days => $3));

-- add_tenant --
INSERT INTO reminderd.tenants (id, callback_url, timezone)
VALUES ($1, $2, $3)
RETURNING signing_secret;

-- rotate_secret --
SELECT reminderd.rotate_secret($1, make_interval(secs => $2));

-- grant_tenant --
INSERT INTO reminderd.tenant_members (role_name, tenant_id)
SELECT r.rolname, t.id FROM pg_roles r, reminderd.tenants t WHERE r.rolname = $2 AND t.id = $1
ON CONFLICT DO NOTHING
RETURNING role_name;

-- revoke_tenant --
DELETE FROM reminderd.tenant_members WHERE tenant_id = $1 AND role_name = $2;

-- role_exists --
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1);

-- tenant_exists --
SELECT EXISTS (SELECT 1 FROM reminderd.tenants WHERE id = $1);

-- cancel --
SELECT reminderd.cancel($1, $2);

-- status_counts --
SELECT tenant_id, status, count(*) AS messages,
       min(fire_at) FILTER (WHERE status = 'pending') AS next_due
FROM reminderd.scheduled_messages
GROUP BY tenant_id, status
ORDER BY tenant_id, status;

-- queue_depth --
-- For the metrics, every 30 s: each count reads one partial index (paused rows: the live-ref one).
SELECT (SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'picked') AS picked,
       (SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'paused') AS paused,
       (SELECT count(*) FROM reminderd.scheduled_messages
        WHERE status = 'pending' AND fire_at <= now()) AS due_not_picked;

-- database_defaults --
-- The defaults the database's insert-time check reads (reminderd.check_arrival), for the daemon
-- to compare with its own REMINDERD_BACKFILL, REMINDERD_MAX_LATENESS and REMINDERD_LOOKBACK.
SELECT (SELECT value FROM reminderd.config WHERE key = 'backfill') AS backfill,
       (SELECT extract(epoch FROM value::interval)::float8 FROM reminderd.config
        WHERE key = 'max_lateness') AS max_lateness_s,
       (SELECT extract(epoch FROM value::interval)::float8 FROM reminderd.config
        WHERE key = 'lookback') AS lookback_s;

-- schema_revision --
SELECT version_num FROM reminderd.alembic_version;

-- schedule_one_off --
-- $12 a wall time (local_time) instead of $3, $13 the contact whose zone it is in.
SELECT reminderd.schedule($1, $2, $3, $4::jsonb, $5, timezone => $6, category => $7, calendar => $8,
                          holiday_rule => $9, backfill => $10, max_lateness => make_interval(secs => $11),
                          local_time => $12, contact_id => $13);

-- schedule_recurring --
-- $15: the first fire_at the CLI computed with the daemon's code (NULL: computed in SQL, else
-- planned by the daemon); $16 the contact whose zone it is in ($5 NULL: the contact's zone).
SELECT reminderd.schedule_recurring($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13,
                                    make_interval(secs => $14), NULL, first_fire_at => $15,
                                    contact_id => $16);

-- tenant_calendar --
-- What times a new recurring row's first occurrence as the daemon's planner would: the tenant's
-- holiday settings and its own days off from $2 on (the planner reads the same, timing_columns).
SELECT t.calendar, t.holiday_rule,
       ARRAY(SELECT h.day FROM reminderd.tenant_holidays h
             WHERE h.tenant_id = t.id AND h.day >= $2 ORDER BY h.day LIMIT 400) AS holiday_days,
       ARRAY(SELECT h.name FROM reminderd.tenant_holidays h
             WHERE h.tenant_id = t.id AND h.day >= $2 ORDER BY h.day LIMIT 400) AS holiday_names
FROM reminderd.tenants t
WHERE t.id = $1;

-- set_tenant --
-- $2: whether to set the calendar to $3 (NULL clears); $5: whether to set quiet hours to $6-$7;
-- $9, $11, $13: whether to set the timezone to $10, the broadcast limit to $12, the approval
-- threshold to $14 (NULL clears each).
UPDATE reminderd.tenants
SET calendar = CASE WHEN $2 THEN $3 ELSE calendar END,
    holiday_rule = coalesce($4, holiday_rule),
    quiet_start = CASE WHEN $5 THEN $6 ELSE quiet_start END,
    quiet_end = CASE WHEN $5 THEN $7 ELSE quiet_end END,
    quiet_exempt = coalesce($8, quiet_exempt),
    timezone = CASE WHEN $9 THEN $10 ELSE timezone END,
    broadcast_limit = CASE WHEN $11 THEN $12 ELSE broadcast_limit END,
    approval_threshold = CASE WHEN $13 THEN $14 ELSE approval_threshold END
WHERE id = $1
RETURNING calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt, timezone, broadcast_limit,
          approval_threshold;

-- add_holiday --
INSERT INTO reminderd.tenant_holidays (tenant_id, day, name) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, day) DO UPDATE SET name = excluded.name;

-- remove_holiday --
DELETE FROM reminderd.tenant_holidays WHERE tenant_id = $1 AND day = $2;

-- role_uses_app --
-- Whether a role may use reminderd_app's privileges (a member that inherits them), and whether it
-- is a member at all (a NOINHERIT member must SET ROLE reminderd_app first).
SELECT pg_has_role($1, 'reminderd_app', 'USAGE') AS inherits,
       pg_has_role($1, 'reminderd_app', 'MEMBER') AS member;

-- list_tenants --
-- Every tenant, its settings, and its messages waiting and dead: the counts read only live and
-- dead rows (the partial index scheduled_messages_overview), never the history of sent ones.
SELECT t.id, t.callback_url, t.calendar, t.holiday_rule, t.quiet_start, t.quiet_end, t.paused,
       coalesce(m.pending, 0) AS pending, coalesce(m.picked, 0) AS picked,
       coalesce(m.paused, 0) AS paused_messages, coalesce(m.dead, 0) AS dead
FROM reminderd.tenants t
LEFT JOIN (
    SELECT tenant_id,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'picked') AS picked,
           count(*) FILTER (WHERE status = 'paused') AS paused,
           count(*) FILTER (WHERE status = 'dead') AS dead
    FROM reminderd.scheduled_messages
    WHERE status IN ('pending', 'picked', 'paused', 'dead')
    GROUP BY tenant_id
) m ON m.tenant_id = t.id
ORDER BY t.id;

-- Audiences (issue 14; docs/audiences.md) ---------------------------------------------------------

-- reference_versions --
-- Which phonenumbers and tzdata the reference tables were built from (reminderd/phones.py).
SELECT source, version FROM reminderd.reference_versions;

-- clear_reference_tables --
-- Reloading (in one transaction with the loads below): readers wait a moment, never see them empty.
TRUNCATE reminderd.phone_plans, reminderd.phone_regions, reminderd.phone_prefixes, reminderd.phone_timezones,
         reminderd.countries;

-- load_phone_plans --
-- $1: the rows as one JSON array, read as the table's own row type.
INSERT INTO reminderd.phone_plans SELECT * FROM jsonb_populate_recordset(NULL::reminderd.phone_plans, $1::jsonb);

-- load_phone_regions --
INSERT INTO reminderd.phone_regions SELECT * FROM jsonb_populate_recordset(NULL::reminderd.phone_regions, $1::jsonb);

-- load_phone_prefixes --
INSERT INTO reminderd.phone_prefixes SELECT * FROM jsonb_populate_recordset(NULL::reminderd.phone_prefixes, $1::jsonb);

-- load_phone_timezones --
INSERT INTO reminderd.phone_timezones
SELECT * FROM jsonb_populate_recordset(NULL::reminderd.phone_timezones, $1::jsonb);

-- load_countries --
INSERT INTO reminderd.countries SELECT * FROM jsonb_populate_recordset(NULL::reminderd.countries, $1::jsonb);

-- record_reference_versions --
-- $1: {"phonenumbers": "9.0.43", "tzdata": "2026.6"}.
INSERT INTO reminderd.reference_versions (source, version)
SELECT key, value FROM jsonb_each_text($1::jsonb)
ON CONFLICT (source) DO UPDATE SET version = excluded.version, loaded_at = now();

-- analyze_reference_tables --
ANALYZE reminderd.phone_plans, reminderd.phone_regions, reminderd.phone_prefixes, reminderd.phone_timezones,
        reminderd.countries;

-- upsert_contacts --
-- $2: a JSON array of contacts (reminderd.upsert_contacts). How many were added or changed.
SELECT reminderd.upsert_contacts($1, $2::jsonb);

-- delete_contacts --
SELECT reminderd.delete_contacts($1, $2::text[]);

-- contact --
-- One contact, with the zone its messages get and why (its own fields', else the tenant's).
SELECT c.contact_id, c.timezone, c.phone, c.country, c.attributes::text AS attributes, c.resolved_timezone,
       c.timezone_source, coalesce(c.resolved_timezone, t.timezone) AS zone,
       coalesce(c.timezone_source, CASE WHEN t.timezone IS NOT NULL THEN 'tenant' END) AS zone_source,
       c.created_at, c.updated_at,
       ARRAY(SELECT m.audience FROM reminderd.audience_members m
             WHERE m.tenant_id = c.tenant_id AND m.contact_id = c.contact_id ORDER BY 1) AS audiences
FROM reminderd.contacts c
JOIN reminderd.tenants t ON t.id = c.tenant_id
WHERE c.tenant_id = $1 AND c.contact_id = $2;

-- contact_messages --
-- $3 how far back ended messages are shown (s), $4 at most this many rows.
SELECT * FROM reminderd.contact_messages($1, $2, make_interval(secs => $3), $4);

-- add_to_audience --
SELECT reminderd.add_to_audience($1, $2, $3::text[]);

-- remove_from_audience --
SELECT reminderd.remove_from_audience($1, $2, $3::text[]);

-- drop_audience --
SELECT reminderd.drop_audience($1, $2);

-- audiences --
SELECT a.name, a.created_at, count(m.contact_id) AS members
FROM reminderd.audiences a
LEFT JOIN reminderd.audience_members m ON m.tenant_id = a.tenant_id AND m.audience = a.name
WHERE a.tenant_id = $1
GROUP BY a.name, a.created_at
ORDER BY a.name;

-- broadcast --
SELECT reminderd.broadcast($1, $2, local_time => $3, audience => $4, payload => $5::jsonb, category => $6,
                           contact_ids => $7, everyone => $8, cron => $9, rrule => $10, until => $11,
                           callback_url => $12, calendar => $13, holiday_rule => $14, backfill => $15,
                           max_lateness => make_interval(secs => $16), notify => $17,
                           stage_ahead => make_interval(secs => $18), actor => $19);

-- broadcast_preview --
SELECT * FROM reminderd.broadcast_preview($1, $2, audience => $3, contact_ids => $4, everyone => $5);

-- approve_broadcast --
SELECT reminderd.approve_broadcast($1, $2, $3, $4);

-- reject_broadcast --
SELECT reminderd.reject_broadcast($1, $2, $3, $4);

-- cancel_broadcast --
SELECT reminderd.cancel_broadcast($1, $2);

-- broadcasts --
-- A tenant's broadcasts, newest first, with their progress ($2: only this one, when not NULL).
SELECT * FROM reminderd.broadcasts
WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id = $2)
ORDER BY id DESC
LIMIT 200;

-- broadcast_occurrences --
SELECT occurrence, contacts, first_fire_at, last_fire_at, staged_at, completed_at, completion_message_id
FROM reminderd.broadcast_occurrences
WHERE broadcast_id = $1
ORDER BY occurrence DESC
LIMIT 50;

-- schedule_cadence --
SELECT * FROM reminderd.schedule_cadence($1, $2, $3, $4::text[]::interval[], at_local => $5, contact_id => $6,
                                         payload => $7::jsonb, timezone => $8, callback_url => $9,
                                         category => $10);

-- recurring_broadcasts --
-- The daemon's broadcast stager (housekeeping.py): recurring broadcasts still to stage.
SELECT b.id, b.tenant_id, b.ref_prefix, b.cron, b.rrule, b.until, b.next_occurrence,
       extract(epoch FROM b.stage_ahead)::float8 AS stage_ahead_s, now() AS db_now
FROM reminderd.broadcast_requests b
WHERE b.ended_at IS NULL AND b.local_time IS NULL
ORDER BY b.id
LIMIT 100;

-- broadcast_zones --
-- The zones of a broadcast's audience as it stands.
SELECT DISTINCT a.timezone
FROM reminderd.broadcast_requests b
CROSS JOIN LATERAL reminderd.audience_contacts(b.tenant_id, b.audience, b.contact_ids, b.everyone) AS a
WHERE b.id = $1 AND a.timezone IS NOT NULL;

-- plan_broadcast --
-- A recurring broadcast's first occurrence (a wall time), unless another daemon planned it first.
UPDATE reminderd.broadcast_requests
SET next_occurrence = $2, updated_at = now()
WHERE id = $1 AND next_occurrence IS NULL AND ended_at IS NULL;

-- skip_broadcast_occurrence --
-- An occurrence passed over without staging ($4: why), the next one is $3 (NULL: none, it ends).
UPDATE reminderd.broadcast_requests
SET next_occurrence = $3, last_error = $4,
    ended_at = CASE WHEN $3::timestamp IS NULL THEN now() END,
    ended_reason = CASE WHEN $3::timestamp IS NULL THEN 'no more occurrences' END,
    updated_at = now()
WHERE id = $1 AND next_occurrence = $2 AND ended_at IS NULL;

-- end_broadcast --
UPDATE reminderd.broadcast_requests
SET ended_at = now(), ended_reason = $2, next_occurrence = NULL, updated_at = now()
WHERE id = $1 AND ended_at IS NULL;

-- stage_broadcast --
SELECT reminderd.stage_broadcast($1, $2, $3);

-- complete_broadcasts --
SELECT broadcast_id, tenant_id, occurrence, message_id FROM reminderd.complete_broadcasts();
