-- Every statement reminderd runs, by name. Loaded once by reminderd/queries.py.
-- Times come from the database clock (now()), never from the daemon's host.

-- timing_columns --
-- A fragment, not a statement: the columns reminderd/schedule/timing.py reads, included by the claim and
-- the planner as {timing_columns $n $m}, which number its $backfill and $max_lateness. Effective
-- values: the row's over its tenant's over the daemon's defaults.
m.timezone, m.cron, m.rrule, m.max_runs, m.runs,
-- An until beyond the years Python holds reads as NULL here (the claim dead-letters such a row: readable_times).
CASE WHEN m.until BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z' OR m.until IN ('infinity', '-infinity')
     THEN m.until END AS until,
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

-- readable_times --
-- A fragment, not a statement: a claimed row's scheduled_for and fire_at, and `unreadable`, why the
-- daemon cannot make a job of it (NULL for every ordinary row: the first test fails). A value an
-- application wrote by hand beyond the years Python holds (1 to 9999) would fail the decoding of
-- the whole reply, every row of the claim with it; an attempts at 1000000000, the schema's limit
-- (refuse_out_of_range, migration 0033), cannot count one more, nor one below 0 (written before
-- that limit): the claim leaves it there. Such a row is returned without those times, and the
-- daemon dead-letters it (dead_letter_unreadable) naming the column and its value.
CASE WHEN coalesce(m.scheduled_for, m.fire_at) BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z'
     THEN coalesce(m.scheduled_for, m.fire_at) END AS scheduled_for,
CASE WHEN m.fire_at BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z' THEN m.fire_at END AS fire_at,
CASE WHEN m.attempts BETWEEN 0 AND 999999999
          AND coalesce(m.scheduled_for, m.fire_at) BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z'
          AND m.fire_at BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z'
          AND (m.until IS NULL OR m.until BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z'
               OR m.until IN ('infinity', '-infinity')) THEN NULL
     WHEN m.attempts >= 1000000000
          THEN format('attempts = %s: at or beyond 1000000000, no further attempt can be counted', m.attempts)
     WHEN m.attempts < 0
          THEN format('attempts = %s: below 0, no count of attempts', m.attempts)
     WHEN NOT coalesce(m.scheduled_for, m.fire_at) BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z'
          THEN format('scheduled_for = %s: outside the years 1 to 9999 the daemon can read',
                      coalesce(m.scheduled_for, m.fire_at))
     WHEN NOT m.fire_at BETWEEN '0001-01-01 00:00Z' AND '9999-12-31 23:59:59.999999Z'
          THEN format('fire_at = %s: outside the years 1 to 9999 the daemon can read', m.fire_at)
     ELSE format('until = %s: outside the years 1 to 9999 the daemon can read', m.until) END AS unreadable

-- due_candidates --
-- A fragment, not a statement: the fair choice of due rows the claims share, as CTEs ending in
-- every_due (every due row, when they fit in one batch) and fair_share (each due tenant's share,
-- when they do not), both locked FOR UPDATE SKIP LOCKED, and heads (the skip scan). Included as
-- {due_candidates $2 $1 $7}: its parameters in order of first use are $batch, $lookback, $cursor.
-- Are more rows due than one batch holds? If not, each of them is claimed and nobody waits.
backlog AS (
    SELECT count(*) > $batch AS fair
    FROM (SELECT 1 FROM reminderd.scheduled_messages
          WHERE status = 'pending' AND fire_at <= now() AND fire_at > now() - make_interval(secs => $lookback)
          ORDER BY fire_at  -- along scheduled_messages_due, whatever the statistics say
          LIMIT $batch + 1) AS due
),
every_due AS (
    SELECT id, tenant_id, priority, fire_at, callback_url, last_event = 'held' AS was_held
    FROM reminderd.scheduled_messages
    WHERE status = 'pending' AND fire_at <= now() AND fire_at > now() - make_interval(secs => $lookback)
      AND NOT (SELECT fair FROM backlog)
    ORDER BY fire_at
    LIMIT $batch
    FOR UPDATE SKIP LOCKED
),
-- The skip scan: the oldest pending row of each (tenant, priority), one index descent each,
-- starting after the tenant $cursor where this daemon's previous scan stopped (NULL: the first) and
-- coming round to the start once; at most 4 × $batch of them, so a claim's cost does not grow with the
-- number of tenants (the next claim goes on from where this one stopped).
heads AS (
    SELECT 1 AS step, first.* FROM (
        SELECT * FROM (
            (SELECT false AS wrapped, tenant_id, priority, fire_at
             FROM reminderd.scheduled_messages
             WHERE status = 'pending' AND (SELECT fair FROM backlog) AND tenant_id > coalesce($cursor, '')
             ORDER BY tenant_id, priority, fire_at
             LIMIT 1)
            UNION ALL
            (SELECT true, tenant_id, priority, fire_at
             FROM reminderd.scheduled_messages
             WHERE status = 'pending' AND (SELECT fair FROM backlog)
             ORDER BY tenant_id, priority, fire_at
             LIMIT 1)
        ) AS candidates LIMIT 1
    ) AS first
    UNION ALL
    SELECT h.step + 1, next.*
    FROM heads AS h
    CROSS JOIN LATERAL (
        SELECT * FROM (
            (SELECT h.wrapped AS wrapped, m.tenant_id, m.priority, m.fire_at
             FROM reminderd.scheduled_messages AS m
             WHERE m.status = 'pending' AND (m.tenant_id, m.priority) > (h.tenant_id, h.priority)
             ORDER BY m.tenant_id, m.priority, m.fire_at
             LIMIT 1)
            UNION ALL
            (SELECT true, m.tenant_id, m.priority, m.fire_at
             FROM reminderd.scheduled_messages AS m
             WHERE m.status = 'pending' AND NOT h.wrapped
             ORDER BY m.tenant_id, m.priority, m.fire_at
             LIMIT 1)
        ) AS candidates LIMIT 1
    ) AS next
    WHERE h.step < 4 * $batch AND NOT (next.wrapped AND next.tenant_id > coalesce($cursor, ''))
),
due_tenants AS (
    SELECT tenant_id, min(fire_at) AS oldest, min(step) AS step,
           bool_or(priority = 0) AS due_0, bool_or(priority = 1) AS due_1, bool_or(priority = 2) AS due_2
    FROM heads
    WHERE fire_at <= now()
    GROUP BY tenant_id
    ORDER BY step  -- round-robin: from the tenant after the one served last
    LIMIT $batch
),
shares AS (
    SELECT d.*, ceil($batch::float8 / count(*) OVER ())::integer AS share FROM due_tenants AS d
),
-- Each due tenant's share: its transactional rows first, then other categories, marketing last.
fair_share AS (
    SELECT c.id, s.tenant_id, c.priority, c.fire_at, c.callback_url, c.was_held
    FROM shares AS s
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT m.id, m.priority, m.fire_at, m.callback_url, m.last_event = 'held' AS was_held
            FROM reminderd.scheduled_messages AS m
            WHERE s.due_0 AND m.tenant_id = s.tenant_id AND m.priority = 0 AND m.status = 'pending'
              AND m.fire_at <= now() AND m.fire_at > now() - make_interval(secs => $lookback)
            ORDER BY m.fire_at
            LIMIT s.share
            FOR UPDATE OF m SKIP LOCKED) AS p0
        UNION ALL
        SELECT * FROM (
            SELECT m.id, m.priority, m.fire_at, m.callback_url, m.last_event = 'held' AS was_held
            FROM reminderd.scheduled_messages AS m
            WHERE s.due_1 AND m.tenant_id = s.tenant_id AND m.priority = 1 AND m.status = 'pending'
              AND m.fire_at <= now() AND m.fire_at > now() - make_interval(secs => $lookback)
            ORDER BY m.fire_at
            LIMIT s.share
            FOR UPDATE OF m SKIP LOCKED) AS p1
        UNION ALL
        SELECT * FROM (
            SELECT m.id, m.priority, m.fire_at, m.callback_url, m.last_event = 'held' AS was_held
            FROM reminderd.scheduled_messages AS m
            WHERE s.due_2 AND m.tenant_id = s.tenant_id AND m.priority = 2 AND m.status = 'pending'
              AND m.fire_at <= now() AND m.fire_at > now() - make_interval(secs => $lookback)
            ORDER BY m.fire_at
            LIMIT s.share
            FOR UPDATE OF m SKIP LOCKED) AS p2
        LIMIT s.share
    ) AS c
)

-- claim --
-- Claim up to $2 due rows in one short transaction; committed before any HTTP call. $1 lookback
-- (s), $2 batch size, $3 lease (s), $4 and $5 the default backfill and max lateness, $6 the
-- max_in_flight of an endpoint without its own (the daemon passes 2147483647: none, each daemon's
-- REMINDERD_CONCURRENCY bounds its own callbacks), $7 the tenant this daemon's previous skip scan
-- stopped at (`scanned_to`; NULL at first), $8 the claiming daemon (reminderd.daemons.id, stamped
-- as picked_by). attempts counts the attempt being made. The frequency caps count a message's
-- contact_id when it names one (docs/audiences.md), else its recipient: `recipient` below. docs/sql.md ("The claim") explains each step; in short:
-- 1. Fair between tenants. When more rows are due than one batch holds, every tenant with due
--    rows gets an equal share, found by a skip scan over the tenants' queues (with more due
--    tenants than rows in a batch, one row each, round-robin: the next claim goes on after the
--    tenant served last); otherwise every due row fits and is taken. Within a tenant, transactional rows (priority 0) go before others,
--    marketing (2) last, then the oldest first; across tenants, rows go round by round.
-- 2. Bounded. A tenant's max_per_second and max_per_hour, an endpoint's max_in_flight (all daemons
--    together; default $6) and max_per_second, and a tenant endpoint's open circuit hold rows back: they
--    stay pending, in order, and the first rows held say so (last_error, last_event 'held').
--    Budgets are per-tenant and per-endpoint rows locked FOR UPDATE SKIP LOCKED: a daemon never
--    waits for another; one that finds a budget being granted leaves that tenant or endpoint to
--    the other daemon's claim this time.
-- 3. The result: the claimed rows, each with `held`, a JSON summary of what was held back and
--    when to look again (one row with NULL columns when nothing was claimed).
-- The daemon then decides, before any HTTP, whether the occurrence is sent now or held: deferred
-- (quiet hours), moved off a holiday, expired as too late (backfill policy), finished, or over a
-- frequency cap.
WITH RECURSIVE
{due_candidates $2 $1 $7},
-- Candidates in claim order: a tenant's `turn` is its round (its 1st row, its 2nd, …).
candidates AS MATERIALIZED (
    SELECT c.*,
           row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.fire_at, c.id) AS turn,
           CASE WHEN c.callback_url IS NULL THEN t.callback_endpoint ELSE reminderd.endpoint_of(c.callback_url) END
               AS endpoint,
           t.max_per_second, t.max_per_hour
    FROM (SELECT * FROM every_due UNION ALL SELECT * FROM fair_share) AS c
    JOIN reminderd.tenants AS t ON t.id = c.tenant_id
),
-- Tenant budgets: how many more rows each limited tenant may send now.
tenant_locked AS (
    SELECT b.tenant_id,
           reminderd.window_at(b.second_counts, b.second_slot, reminderd.second_slot(now()), 51) AS second_counts,
           reminderd.window_at(b.hour_counts, b.hour_slot, reminderd.hour_slot(now()), 61) AS hour_counts
    FROM reminderd.tenant_budgets AS b
    WHERE b.tenant_id IN (SELECT tenant_id FROM candidates
                          WHERE max_per_second IS NOT NULL OR max_per_hour IS NOT NULL)
    FOR UPDATE SKIP LOCKED
),
tenant_allowance AS (
    SELECT t.id AS tenant_id, t.max_per_second, t.max_per_hour, l.second_counts, l.hour_counts,
           l.tenant_id IS NULL AS busy,
           CASE WHEN l.tenant_id IS NULL THEN 0
                ELSE greatest(0, least(coalesce(t.max_per_second - reminderd.window_sum(l.second_counts), $2),
                                       coalesce(t.max_per_hour - reminderd.window_sum(l.hour_counts), $2))) END
               AS allowance,
           -- the limit that binds: the one with less room left
           CASE WHEN coalesce(t.max_per_second - reminderd.window_sum(l.second_counts), $2)
                     <= coalesce(t.max_per_hour - reminderd.window_sum(l.hour_counts), $2)
                THEN 'tenant_per_second' ELSE 'tenant_per_hour' END AS binding
    FROM (SELECT DISTINCT tenant_id FROM candidates WHERE max_per_second IS NOT NULL OR max_per_hour IS NOT NULL) AS c
    JOIN reminderd.tenants AS t ON t.id = c.tenant_id
    LEFT JOIN tenant_locked AS l ON l.tenant_id = c.tenant_id
),
-- Endpoints: callbacks in flight (all daemons) and the rolling second, for each candidate endpoint.
endpoint_locked AS (
    SELECT e.endpoint, e.max_in_flight, e.max_per_second, e.grant_xids, e.grant_counts,
           reminderd.window_at(e.second_counts, e.second_slot, reminderd.second_slot(now()), 51) AS second_counts
    FROM reminderd.endpoints AS e
    WHERE e.endpoint IN (SELECT endpoint FROM candidates)
      AND (e.max_in_flight IS NOT NULL OR e.max_per_second IS NOT NULL OR $6 < 2147483647)
    FOR UPDATE SKIP LOCKED
),
endpoint_allowance AS (
    SELECT c.endpoint, e.max_per_second, e.second_counts,
           -- Registered but being granted by another daemon right now, or too many grants since
           -- this statement's snapshot to count them: left to the other daemon this time.
           known.endpoint IS NOT NULL
           AND (known.max_in_flight IS NOT NULL OR known.max_per_second IS NOT NULL OR $6 < 2147483647)
           AND (e.endpoint IS NULL OR (
               cardinality(e.grant_xids) >= 16
               AND NOT pg_visible_in_snapshot(e.grant_xids[1]::text::xid8, pg_current_snapshot()))) AS busy,
           coalesce(e.max_in_flight, known.max_in_flight, $6)
               - (SELECT count(*) FROM reminderd.scheduled_messages AS p
                  WHERE p.status = 'picked' AND p.endpoint = c.endpoint)
               -- grants committed after this statement's snapshot: their rows are not seen picked
               - coalesce((SELECT sum(e.grant_counts[i]) FROM generate_subscripts(e.grant_xids, 1) AS i
                           WHERE NOT pg_visible_in_snapshot(e.grant_xids[i]::text::xid8, pg_current_snapshot())), 0)
               AS in_flight_room,
           coalesce(e.max_per_second - reminderd.window_sum(e.second_counts), $2) AS rate_room
    FROM (SELECT DISTINCT endpoint FROM candidates WHERE endpoint IS NOT NULL) AS c
    LEFT JOIN reminderd.endpoints AS known ON known.endpoint = c.endpoint
    LEFT JOIN endpoint_locked AS e ON e.endpoint = c.endpoint
),
new_endpoints AS (
    INSERT INTO reminderd.endpoints (endpoint)
    SELECT endpoint FROM endpoint_allowance a
    WHERE NOT EXISTS (SELECT 1 FROM reminderd.endpoints e WHERE e.endpoint = a.endpoint)
    ON CONFLICT DO NOTHING
),
-- Each candidate judged: claimed, or held back and why.
judged AS MATERIALIZED (
    SELECT c.*, h.consecutive_failures AS endpoint_failures,
           CASE WHEN h.circuit_open_until IS NULL THEN 'closed' ELSE 'half_open' END AS circuit,
           CASE
               WHEN h.disabled_at IS NOT NULL THEN 'endpoint_disabled'
               WHEN h.circuit_open_until > now() THEN 'circuit_open'
               WHEN ta.busy OR ea.busy THEN 'busy'
               WHEN ta.tenant_id IS NOT NULL AND c.turn > ta.allowance THEN ta.binding
           END AS held_by,
           ta.allowance AS tenant_allowance, ea.in_flight_room, ea.rate_room,
           h.circuit_open_until IS NOT NULL AS probing,
           h.circuit_open_until
    FROM candidates AS c
    LEFT JOIN tenant_allowance AS ta ON ta.tenant_id = c.tenant_id
    LEFT JOIN endpoint_allowance AS ea ON ea.endpoint = c.endpoint
    LEFT JOIN reminderd.endpoint_health AS h ON h.tenant_id = c.tenant_id AND h.endpoint = c.endpoint
),
-- Rows that passed their tenant, ranked per endpoint (and per tenant endpoint while it is probed).
ranked AS (
    SELECT j.*,
           row_number() OVER (PARTITION BY j.endpoint ORDER BY j.turn, j.priority, j.fire_at, j.id) AS endpoint_rank,
           row_number() OVER (PARTITION BY j.tenant_id, j.endpoint ORDER BY j.turn, j.priority, j.fire_at, j.id)
               AS probe_rank
    FROM judged AS j
    WHERE j.held_by IS NULL
),
fitting AS (
    SELECT r.*,
           CASE
               WHEN r.endpoint IS NULL THEN NULL
               WHEN r.endpoint_rank > r.rate_room THEN 'endpoint_per_second'
               WHEN r.endpoint_rank > r.in_flight_room THEN 'endpoint_in_flight'
               WHEN r.probing AND (r.probe_rank > 1 OR EXISTS (
                   SELECT 1 FROM reminderd.scheduled_messages AS p
                   WHERE p.status = 'picked' AND p.endpoint = r.endpoint AND p.tenant_id = r.tenant_id))
                   THEN 'circuit_half_open'
           END AS over
    FROM ranked AS r
),
chosen AS (
    SELECT f.id, f.endpoint, f.was_held, coalesce(f.endpoint_failures, 0) AS endpoint_failures, f.circuit
    FROM fitting AS f
    WHERE f.over IS NULL
    ORDER BY f.turn, f.priority, f.fire_at
    LIMIT $2
),
held AS (
    SELECT j.id, j.tenant_id, j.endpoint, j.was_held, j.circuit_open_until,
           coalesce(j.held_by, f.over, 'batch_full') AS reason
    FROM judged AS j
    LEFT JOIN fitting AS f ON f.id = j.id
    WHERE j.id NOT IN (SELECT id FROM chosen)
),
-- The rows held by a limit or a failing endpoint say so, once per row and reason.
marked AS (
    UPDATE reminderd.scheduled_messages AS m
    SET last_event = 'held',
        last_error = CASE h.reason
            WHEN 'tenant_per_second' THEN format('held: tenant %s is at its max_per_second (%s)', m.tenant_id,
                                                 (SELECT max_per_second FROM reminderd.tenants WHERE id = m.tenant_id))
            WHEN 'tenant_per_hour' THEN format('held: tenant %s is at its max_per_hour (%s)', m.tenant_id,
                                               (SELECT max_per_hour FROM reminderd.tenants WHERE id = m.tenant_id))
            WHEN 'endpoint_per_second' THEN format('held: endpoint %s is at its max_per_second', h.endpoint)
            WHEN 'circuit_open' THEN format('held: the circuit of endpoint %s is open (it keeps failing)', h.endpoint)
            ELSE format('held: endpoint %s is disabled', h.endpoint) END
    FROM held AS h
    WHERE m.id = h.id
      AND h.reason IN ('tenant_per_second', 'tenant_per_hour', 'endpoint_per_second', 'circuit_open',
                       'endpoint_disabled')
      AND m.last_event IS DISTINCT FROM 'held'
    RETURNING m.id, m.tenant_id
),
held_usage AS (
    INSERT INTO reminderd.usage_increments (tenant_id, held)
    SELECT tenant_id, count(*) FROM marked GROUP BY tenant_id
),
-- The grants: added to the budgets this statement locked, in the newest slot. A window never
-- moves back: a claim that started before another committed (its now() is older than the slot
-- that claim wrote) adds to that newer slot, whose counts window_at handed back unshifted.
tenant_spent AS (
    UPDATE reminderd.tenant_budgets AS b
    SET second_slot = greatest(b.second_slot, reminderd.second_slot(now())),
        second_counts = l.second_counts[1:50] || (l.second_counts[51] + g.rows),
        hour_slot = greatest(b.hour_slot, reminderd.hour_slot(now())),
        hour_counts = l.hour_counts[1:60] || (l.hour_counts[61] + g.rows)
    FROM (SELECT m.tenant_id, count(*)::integer AS rows
          FROM chosen AS c JOIN reminderd.scheduled_messages AS m ON m.id = c.id GROUP BY m.tenant_id) AS g
    JOIN tenant_locked AS l ON l.tenant_id = g.tenant_id
    WHERE b.tenant_id = g.tenant_id
),
endpoint_spent AS (
    UPDATE reminderd.endpoints AS e
    SET second_slot = greatest(e.second_slot, reminderd.second_slot(now())),
        second_counts = l.second_counts[1:50] || (l.second_counts[51] + g.rows),
        grant_xids = (l.grant_xids || pg_current_xact_id()::text::bigint)[greatest(1, cardinality(l.grant_xids) - 14):],
        grant_counts = (l.grant_counts || g.rows)[greatest(1, cardinality(l.grant_counts) - 14):]
    FROM (SELECT endpoint, count(*)::integer AS rows FROM chosen WHERE endpoint IS NOT NULL GROUP BY endpoint) AS g
    JOIN endpoint_locked AS l ON l.endpoint = g.endpoint
    WHERE e.endpoint = g.endpoint
),
claimed AS (
    UPDATE reminderd.scheduled_messages AS m
    SET status = 'picked',
        attempts = m.attempts + CASE WHEN m.attempts BETWEEN 0 AND 999999999 THEN 1 ELSE 0 END,  -- else unreadable below
        picked_at = now(),
        picked_by = $8,
        lease_expires_at = now() + make_interval(secs => $3),
        updated_at = now(),
        endpoint = c.endpoint
    FROM chosen AS c, reminderd.tenants AS t
    WHERE m.id = c.id
      AND t.id = m.tenant_id
    RETURNING m.id, m.tenant_id, m.ref_id, m.payload::text AS payload,
              coalesce(m.callback_url, t.callback_url) AS callback_url,
              {readable_times},
              m.attempts, m.max_attempts, t.signing_secret,
              CASE WHEN t.previous_secret_expires_at > now() THEN t.previous_signing_secret END
                  AS previous_signing_secret,
              CASE WHEN t.earlier_secret_expires_at > now() THEN t.earlier_signing_secret END
                  AS earlier_signing_secret,
              m.picked_at, m.endpoint, c.was_held, c.endpoint_failures, c.circuit,
              coalesce(m.contact_id, m.recipient) AS recipient, m.category, m.contact_id, m.timezone_source,
              m.broadcast_id,
              t.frequency_cap_policy,
              {timing_columns $4 $5}
),
summary AS (
    SELECT jsonb_agg(jsonb_build_object(
               'tenant', s.tenant_id, 'reason', s.reason, 'rows', s.rows, 'marked', s.marked,
               'retry_in_s', s.retry_in_s)) AS held
    FROM (
        SELECT h.tenant_id, h.reason, count(*) AS rows,
               count(*) FILTER (WHERE h.id IN (SELECT id FROM marked)) AS marked,
               min(CASE h.reason
                   WHEN 'tenant_per_second' THEN reminderd.window_frees_in(ta.second_counts, 0.02,
                                                                           extract(epoch FROM now())::float8)
                   WHEN 'tenant_per_hour' THEN reminderd.window_frees_in(ta.hour_counts, 60,
                                                                         extract(epoch FROM now())::float8)
                   WHEN 'endpoint_per_second' THEN reminderd.window_frees_in(ea.second_counts, 0.02,
                                                                             extract(epoch FROM now())::float8)
                   WHEN 'circuit_open' THEN extract(epoch FROM h.circuit_open_until - now())::float8
                   WHEN 'endpoint_disabled' THEN NULL
                   WHEN 'batch_full' THEN 0
                   WHEN 'busy' THEN 0.002
                   ELSE 0.05 END) AS retry_in_s
        FROM held AS h
        LEFT JOIN tenant_allowance AS ta ON ta.tenant_id = h.tenant_id
        LEFT JOIN endpoint_allowance AS ea ON ea.endpoint = h.endpoint
        GROUP BY h.tenant_id, h.reason
    ) AS s
)
SELECT c.*, f.max_messages AS cap_max, extract(epoch FROM f.per)::float8 AS cap_per_s, s.held,
       -- Where the next claim's scan starts: after the last tenant served when some due tenants
       -- had to wait, else after the last one scanned.
       CASE WHEN (SELECT count(*) FROM due_tenants) >= $2
            THEN (SELECT tenant_id FROM due_tenants ORDER BY step DESC LIMIT 1)
            ELSE (SELECT tenant_id FROM heads ORDER BY step DESC LIMIT 1) END AS scanned_to
FROM summary AS s
LEFT JOIN claimed AS c ON true
LEFT JOIN reminderd.frequency_caps AS f
    ON c.recipient IS NOT NULL AND f.tenant_id = c.tenant_id AND f.category = c.category;

-- claim_fair --
-- The claim when no tenant or endpoint has a limit and no tenant endpoint's circuit is open or
-- half-open (the daemon checks every second: bounded_sending): fair between tenants and by
-- priority as the claim above, without its budgets. The same parameters, the same result.
WITH RECURSIVE
{due_candidates $2 $1 $7},
candidates AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.fire_at, c.id) AS turn
    FROM (SELECT * FROM every_due UNION ALL SELECT * FROM fair_share) AS c
),
chosen AS (
    SELECT id, was_held FROM candidates ORDER BY turn, priority, fire_at LIMIT $2
),
claimed AS (
    UPDATE reminderd.scheduled_messages AS m
    SET status = 'picked',
        attempts = m.attempts + CASE WHEN m.attempts BETWEEN 0 AND 999999999 THEN 1 ELSE 0 END,  -- else unreadable below
        picked_at = now(),
        picked_by = $8,
        lease_expires_at = now() + make_interval(secs => $3),
        updated_at = now(),
        endpoint = CASE WHEN m.callback_url IS NULL THEN t.callback_endpoint
                        ELSE reminderd.endpoint_of(m.callback_url) END
    FROM chosen AS c, reminderd.tenants AS t
    WHERE m.id = c.id
      AND t.id = m.tenant_id
    RETURNING m.id, m.tenant_id, m.ref_id, m.payload::text AS payload,
              coalesce(m.callback_url, t.callback_url) AS callback_url,
              {readable_times},
              m.attempts, m.max_attempts, t.signing_secret,
              CASE WHEN t.previous_secret_expires_at > now() THEN t.previous_signing_secret END
                  AS previous_signing_secret,
              CASE WHEN t.earlier_secret_expires_at > now() THEN t.earlier_signing_secret END
                  AS earlier_signing_secret,
              m.picked_at, m.endpoint, c.was_held, 0 AS endpoint_failures, 'closed' AS circuit,
              coalesce(m.contact_id, m.recipient) AS recipient, m.category, m.contact_id, m.timezone_source,
              m.broadcast_id, t.frequency_cap_policy,
              {timing_columns $4 $5}
)
SELECT c.*, f.max_messages AS cap_max, extract(epoch FROM f.per)::float8 AS cap_per_s, NULL::jsonb AS held,
       CASE WHEN (SELECT count(*) FROM due_tenants) >= $2
            THEN (SELECT tenant_id FROM due_tenants ORDER BY step DESC LIMIT 1)
            ELSE (SELECT tenant_id FROM heads ORDER BY step DESC LIMIT 1) END AS scanned_to
FROM (SELECT $6::integer) AS one  -- $6 (the default max_in_flight) unused here: one parameter list
LEFT JOIN claimed AS c ON true
LEFT JOIN reminderd.frequency_caps AS f
    ON c.recipient IS NOT NULL AND f.tenant_id = c.tenant_id AND f.category = c.category;

-- bounded_sending --
-- Whether the full claim is needed: a tenant or an endpoint has a limit, or a tenant endpoint's
-- circuit is open or half-open, or it is disabled.
SELECT EXISTS (SELECT 1 FROM reminderd.tenants WHERE max_per_second IS NOT NULL OR max_per_hour IS NOT NULL)
    OR EXISTS (SELECT 1 FROM reminderd.endpoints WHERE max_in_flight IS NOT NULL OR max_per_second IS NOT NULL)
    OR EXISTS (SELECT 1 FROM reminderd.endpoint_health
               WHERE circuit_open_until IS NOT NULL OR disabled_at IS NOT NULL);

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
--
-- A row locked by another transaction (an application's UPDATE left open) is waited for 1 s at
-- most (lock_timeout, set for this statement's transaction before any row is locked: the one-time
-- filter below), well within the daemon's 8 s deadline: the statement then fails with 55P03 and
-- the daemon records the batch's other rows at once and that row's outcome once it is free
-- (locked_messages), instead of taking the wait for an outage and retrying the whole batch.
WITH outcome AS MATERIALIZED (
    SELECT o.*, 'picked'::text AS held_status,
           CASE WHEN o.attempted  -- not for a message held back before any request
                 AND NOT EXISTS (SELECT 1 FROM reminderd.deliveries d  -- this claim's attempt, logged already
                                 WHERE d.message_id = o.message_id AND d.attempt = o.attempt
                                   AND d.webhook_id = o.webhook_id AND d.created_at >= o.picked_at)
                THEN nextval('reminderd.deliveries_id_seq') END AS delivery_id
    FROM unnest($1::reminderd.outcome_v1[]) AS o
    WHERE (SELECT set_config('lock_timeout', '1s', true)) IS NOT NULL
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
        runs = m.runs + CASE WHEN o.ran AND m.runs < 1000000000 THEN 1 ELSE 0 END,  -- stays at the limit (0033)
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
    RETURNING id, tenant_id
),
-- Usage metering (reminderd.usage_daily migration 0010): one increment per tenant in the batch.
-- attempted and delivered count the attempts logged above (a batch written again counts each
-- once), dead and expired the rows moved there (not an outcome discarded).
metered AS (
    INSERT INTO reminderd.usage_increments (tenant_id, attempted, delivered, dead, expired)
    SELECT tenant_id, sum(attempted), sum(delivered), sum(dead), sum(expired)
    FROM (
        SELECT logged.tenant_id, 1 AS attempted, CASE WHEN o.delivered THEN 1 ELSE 0 END AS delivered,
               0 AS dead, 0 AS expired
        FROM logged
        JOIN outcome AS o ON o.delivery_id = logged.id
        UNION ALL
        SELECT moved.tenant_id, 0, 0, CASE moved.last_event WHEN 'dead_lettered' THEN 1 ELSE 0 END,
               CASE moved.last_event WHEN 'expired' THEN 1 ELSE 0 END
        FROM moved
        WHERE moved.last_event IN ('dead_lettered', 'expired')
    ) AS usage
    GROUP BY tenant_id
)
SELECT moved.id FROM moved;

-- locked_messages --
-- Of the messages $1 (bigint[]), those another transaction holds locked now: their outcomes wait
-- (record_outcomes failed on one of them with 55P03). Nothing waits here (SKIP LOCKED), and the
-- locks this statement takes are gone when it ends. A message deleted meanwhile is not locked: its
-- outcome is written (and discarded) with the others.
WITH free AS (
    SELECT m.id FROM reminderd.scheduled_messages AS m
    WHERE m.id = ANY($1::bigint[])
    FOR NO KEY UPDATE SKIP LOCKED
)
SELECT m.id FROM reminderd.scheduled_messages AS m
WHERE m.id = ANY($1::bigint[]) AND m.id NOT IN (SELECT id FROM free);

-- extend_leases --
-- While the daemon's outcome write waits out a lock on a table it writes other than the messages'
-- rows (worker._wait_out_lock), the rows it holds keep their lease, so the lease reaper does not
-- hand them to a claim that would send them again. Only rows still picked by the same claim (the
-- fencing token, as record_outcomes); a row another transaction holds locked is skipped, not
-- waited for (the reaper skips it too). A lease only grows. $1 the ids (bigint[]), $2 their
-- claims' picked_at (timestamptz[]), $3 the lease (s). Returns the ids extended.
WITH free AS (
    SELECT m.id
    FROM reminderd.scheduled_messages AS m
    JOIN unnest($1::bigint[], $2::timestamptz[]) AS held (id, picked_at)
      ON held.id = m.id AND held.picked_at = m.picked_at
    WHERE m.status = 'picked'
    FOR NO KEY UPDATE OF m SKIP LOCKED
)
UPDATE reminderd.scheduled_messages AS m
SET lease_expires_at = greatest(m.lease_expires_at, now() + make_interval(secs => $3))
FROM free
WHERE m.id = free.id
RETURNING m.id;

-- dead_letter_unreadable --
-- A claimed row the daemon cannot make a job of (`unreadable` in the claim, or a value its code
-- refused): dead, without an attempt (the claim's count of one is given back), the reason in
-- last_error, so it stops coming back to every claim. Fenced by the claim's token as
-- record_outcomes is. $1 the message, $2 its picked_at, $3 the reason. Returns its id when moved.
WITH dead AS (
    UPDATE reminderd.scheduled_messages AS m
    SET status = 'dead',
        last_event = 'dead_lettered',
        last_error = $3,
        -- At the limit the claim counted none (readable_times); a row it took there from 999999999
        -- keeps the 1000000000 too, one attempt too many at a count no retry policy reaches.
        attempts = CASE WHEN m.attempts BETWEEN 1 AND 999999999 THEN m.attempts - 1 ELSE m.attempts END,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE m.id = $1 AND m.status = 'picked' AND m.picked_at = $2
    RETURNING m.id, m.tenant_id
),
metered AS (
    INSERT INTO reminderd.usage_increments (tenant_id, dead)
    SELECT tenant_id, 1 FROM dead
)
SELECT id FROM dead;

-- dead_letter_refused --
-- The last resort for a delivered outcome the database refused, when its dead letter written by
-- record_outcomes was refused too (a table it writes besides the row refused this row's part: a
-- user's trigger on reminderd.deliveries, say): the row alone is dead-lettered with the reason,
-- so a message the receiver accepted is not sent again at every lease (one not delivered is left
-- to its lease instead, and retried). The attempt is not logged
-- in reminderd.deliveries nor metered (the reason says what it was: HTTP status, attempt); the
-- audit trigger records the change in reminderd.events. sent_at marks a delivered one for
-- reminderd.died_delivered. Fenced by the claim's token as record_outcomes is. $1 the message,
-- $2 its picked_at, $3 the reason, $4 whether it was delivered. Returns its id when moved.
UPDATE reminderd.scheduled_messages AS m
SET status = 'dead',
    last_event = 'dead_lettered',
    last_error = $3,
    sent_at = CASE WHEN $4 THEN now() ELSE m.sent_at END,
    lease_expires_at = NULL,
    updated_at = now()
WHERE m.id = $1 AND m.status = 'picked' AND m.picked_at = $2
RETURNING m.id;

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
-- avalanche (also rows a sending limit held that long: the lookback is the hard limit). $1
-- lookback (s), $2 batch. Counted in the usage (expired).
WITH missed AS (
    SELECT id
    FROM reminderd.scheduled_messages
    WHERE status = 'pending'
      AND cron IS NULL AND rrule IS NULL
      AND fire_at <= now() - make_interval(secs => $1)
    ORDER BY fire_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
-- A claim judges a batch's worth at the head of each tenant's queue and marks those a limit holds
-- (last_event 'held'). The rows in line behind them wait for the same limit unmarked: a limit
-- their tenant or endpoint is at (or, for a rate, granted rows under since this row was due)
-- names it here, and the usage counts them held, once (the marked ones were counted then).
behind AS (
    SELECT missed.id,
           CASE
               WHEN t.max_per_hour IS NOT NULL AND reminderd.window_sum(reminderd.window_at(
                        b.hour_counts, b.hour_slot, reminderd.hour_slot(now()), 61)) >= t.max_per_hour
                   THEN format('tenant %s''s max_per_hour (%s)', t.id, t.max_per_hour)
               WHEN t.max_per_second IS NOT NULL AND b.second_slot >= reminderd.second_slot(m.fire_at)
                   THEN format('tenant %s''s max_per_second (%s)', t.id, t.max_per_second)
               WHEN h.disabled_at IS NOT NULL THEN format('endpoint %s, disabled', h.endpoint)
               WHEN h.circuit_open_until > now() THEN format('the open circuit of endpoint %s', h.endpoint)
               WHEN e.max_per_second IS NOT NULL AND e.second_slot >= reminderd.second_slot(m.fire_at)
                   THEN format('endpoint %s''s max_per_second (%s)', e.endpoint, e.max_per_second)
           END AS limited_by
    FROM missed
    JOIN reminderd.scheduled_messages AS m ON m.id = missed.id
    JOIN reminderd.tenants AS t ON t.id = m.tenant_id
    CROSS JOIN LATERAL (SELECT coalesce(m.endpoint, CASE WHEN m.callback_url IS NULL THEN t.callback_endpoint
                                                         ELSE reminderd.endpoint_of(m.callback_url) END) AS endpoint) AS r
    LEFT JOIN reminderd.tenant_budgets AS b ON b.tenant_id = t.id
    LEFT JOIN reminderd.endpoint_health AS h ON h.tenant_id = t.id AND h.endpoint = r.endpoint
    LEFT JOIN reminderd.endpoints AS e ON e.endpoint = r.endpoint
    WHERE m.last_event IS DISTINCT FROM 'held'
),
expired AS (
UPDATE reminderd.scheduled_messages AS m
SET status = 'expired',
    last_error = format('missed: due at %s, more than %s s before a daemon could send it (REMINDERD_LOOKBACK)%s',
                        to_char(coalesce(m.scheduled_for, m.fire_at) AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                        $1::float8,
                        CASE WHEN m.last_event = 'held' THEN '; held back by a sending limit until then: '
                                                             || m.last_error
                             WHEN behind.limited_by IS NOT NULL
                                 THEN '; held back by a sending limit until then: in line behind rows held by '
                                      || behind.limited_by
                             ELSE '' END),
    last_event = 'expired',
    updated_at = now()
FROM missed
LEFT JOIN behind ON behind.id = missed.id
WHERE m.id = missed.id
RETURNING m.id, m.tenant_id, m.ref_id, coalesce(m.scheduled_for, m.fire_at) AS scheduled_for,
          behind.limited_by IS NOT NULL AS held_behind
),
counted AS (
    INSERT INTO reminderd.usage_increments (tenant_id, expired, held)
    SELECT tenant_id, count(*), count(*) FILTER (WHERE held_behind) FROM expired GROUP BY tenant_id
)
SELECT id, tenant_id, ref_id, scheduled_for FROM expired;

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
-- Reloading (in one transaction with the COPYs of Store.load_reference_data): readers wait a moment,
-- never see them empty.
TRUNCATE reminderd.phone_plans, reminderd.phone_regions, reminderd.phone_prefixes, reminderd.phone_timezones,
         reminderd.countries;

-- reference_column_types --
-- The type of each column of the reference tables ($1: their names), as format_type() writes it
-- and "?" after it when the column may be NULL ("text?"): Store.load_reference_data writes their
-- binary COPY data by it (reminderd/copybinary.py).
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN '' ELSE '?' END AS type_name
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'reminderd'::regnamespace AND c.relname = ANY($1::text[])
  AND a.attnum > 0 AND NOT a.attisdropped;

-- drop_reference_indexes --
-- In the transaction that truncated it, before its COPY: phone_prefixes' 203,000 rows are indexed
-- once they are all in (build_reference_indexes), a sorted build instead of two B-tree insertions a
-- row. Nobody sees the table without them: TRUNCATE's lock keeps readers waiting until the commit.
ALTER TABLE reminderd.phone_prefixes DROP CONSTRAINT phone_prefixes_pkey;
DROP INDEX reminderd.phone_prefixes_any_region;

-- build_reference_indexes --
-- phone_prefixes' indexes again, exactly as reminderd/sql/schema.sql declares them (the schema test
-- compares a migrated database, which has had its reference data loaded, with schema.sql's).
ALTER TABLE reminderd.phone_prefixes ADD CONSTRAINT phone_prefixes_pkey
    PRIMARY KEY (country_code, position, leading_digits, prefix);
CREATE INDEX phone_prefixes_any_region ON reminderd.phone_prefixes (country_code, prefix);

-- record_reference_versions --
-- $1: {"phonenumbers": "9.0.43", "tzdata": "2026.6"}.
INSERT INTO reminderd.reference_versions (source, version)
SELECT key, value FROM jsonb_each_text($1::jsonb)
ON CONFLICT (source) DO UPDATE SET version = excluded.version, loaded_at = now();

-- analyze_reference_tables --
ANALYZE reminderd.phone_plans, reminderd.phone_regions, reminderd.phone_prefixes, reminderd.phone_timezones,
        reminderd.countries;

-- has_holiday_calendars --
-- Whether the schema has reminderd.holiday_calendars (migration 0035): a database migrated to an
-- older revision has its phone tables loaded without it.
SELECT to_regclass('reminderd.holiday_calendars') IS NOT NULL;

-- clear_holiday_calendars --
-- Reloading the holiday calendars (in one transaction with load_holiday_calendars).
DELETE FROM reminderd.holiday_calendars;

-- load_holiday_calendars --
-- $1: the codes the installed holidays package knows (IN, US-CA), $2: its version.
WITH added AS (
    INSERT INTO reminderd.holiday_calendars (code, country, subdivision)
    SELECT code, split_part(code, '-', 1), nullif(split_part(code, '-', 2), '')
    FROM unnest($1::text[]) AS code
)
INSERT INTO reminderd.reference_versions (source, version) VALUES ('holidays', $2)
ON CONFLICT (source) DO UPDATE SET version = excluded.version, loaded_at = now();

-- upsert_contacts --
-- $2: a JSON array of contacts (reminderd.upsert_contacts). How many were added or changed.
SELECT reminderd.upsert_contacts($1, $2::jsonb);

-- upsert_contact_rows --
-- $2: the contacts as one typed array (reminderd.upsert_contact_rows, what `reminderd contacts
-- import` sends). How many were added or changed.
SELECT reminderd.upsert_contact_rows($1, $2::reminderd.contact_v1[]);

-- upsert_contacts_counted --
-- The same, and how many of the contacts $3 (the batch's ids) existed before it (the statement's
-- snapshot is taken before the function writes): the HTTP API's new and changed.
SELECT reminderd.upsert_contacts($1, $2::jsonb) AS written,
       (SELECT count(*) FROM reminderd.contacts c WHERE c.tenant_id = $1 AND c.contact_id = ANY ($3::text[]))
           AS existed;

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
-- A tenant's lists with their sizes (the sum of the few changes audience_member_counts holds for
-- each, appended by a trigger and folded by the daemon: migration 0034), never a count of members.
SELECT a.name, a.created_at,
       coalesce((SELECT sum(k.delta) FROM reminderd.audience_member_counts k
                 WHERE k.tenant_id = a.tenant_id AND k.audience = a.name), 0)::bigint AS members
FROM reminderd.audiences a
WHERE a.tenant_id = $1
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
-- A broadcast's waves, of its own tenant only (migration 0023).
SELECT occurrence, contacts, first_fire_at, last_fire_at, staged_at, completed_at, completion_message_id
FROM reminderd.broadcast_occurrences o
WHERE o.broadcast_id = $1
  AND o.tenant_id = (SELECT r.tenant_id FROM reminderd.broadcast_requests r WHERE r.id = $1)
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

-- fold_audience_member_counts --
SELECT reminderd.fold_audience_member_counts();
-- Fair and bounded sending (migration 0010) ------------------------------------------------------

-- reserve_contact_sends --
-- Frequency caps: reserve the sends of a batch, exactly across daemons. $1: reminderd.contact_send_v1[].
SELECT webhook_id, granted, frees_at FROM reminderd.reserve_contact_sends($1::reminderd.contact_send_v1[]);

-- add_endpoint_health --
-- The health rows a batch of observations needs. $1 tenants, $2 endpoints (pairwise).
INSERT INTO reminderd.endpoint_health (tenant_id, endpoint)
SELECT tenant_id, endpoint FROM unnest($1::text[], $2::text[]) AS o (tenant_id, endpoint)
ON CONFLICT DO NOTHING;

-- lock_endpoint_health --
-- In the transaction that writes them back: the rows, locked, in one order (no deadlocks), and
-- the database's clock.
SELECT h.*, now() AS db_now
FROM reminderd.endpoint_health AS h
JOIN unnest($1::text[], $2::text[]) AS o (tenant_id, endpoint)
    ON h.tenant_id = o.tenant_id AND h.endpoint = o.endpoint
ORDER BY h.tenant_id, h.endpoint
FOR UPDATE OF h;

-- write_endpoint_health --
-- $1: reminderd.endpoint_health_v1[].
UPDATE reminderd.endpoint_health AS h
SET consecutive_failures = w.consecutive_failures, failing_since = w.failing_since,
    last_failure_at = w.last_failure_at, last_error = w.last_error, last_success_at = w.last_success_at,
    circuit_open_until = w.circuit_open_until, circuit_opens = w.circuit_opens,
    disabled_at = w.disabled_at, disabled_reason = w.disabled_reason, updated_at = now()
FROM unnest($1::reminderd.endpoint_health_v1[]) AS w
WHERE h.tenant_id = w.tenant_id AND h.endpoint = w.endpoint;

-- disable_endpoint --
SELECT reminderd.disable_endpoint($1, $2, $3);

-- enable_endpoint --
SELECT reminderd.enable_endpoint($1, $2);

-- endpoint_states --
-- Tenant endpoints that are not simply healthy, and every endpoint with a limit: for
-- `reminderd status` and the metrics.
SELECT h.tenant_id, h.endpoint, h.consecutive_failures, h.failing_since, h.last_error,
       h.circuit_open_until, h.disabled_at, h.disabled_reason,
       CASE WHEN h.disabled_at IS NOT NULL THEN 'disabled'
            WHEN h.circuit_open_until > now() THEN 'open'
            WHEN h.circuit_open_until IS NOT NULL THEN 'half_open'
            WHEN h.consecutive_failures > 0 THEN 'failing'
            ELSE 'closed' END AS state,
       e.max_in_flight, e.max_per_second,
       (SELECT count(*) FROM reminderd.scheduled_messages p WHERE p.status = 'picked' AND p.endpoint = h.endpoint)
           AS in_flight
FROM reminderd.endpoint_health AS h
LEFT JOIN reminderd.endpoints AS e ON e.endpoint = h.endpoint
WHERE h.consecutive_failures > 0 OR h.circuit_open_until IS NOT NULL OR h.disabled_at IS NOT NULL
UNION ALL
SELECT NULL, e.endpoint, NULL, NULL, NULL, NULL, NULL, NULL, 'limited', e.max_in_flight, e.max_per_second,
       (SELECT count(*) FROM reminderd.scheduled_messages p WHERE p.status = 'picked' AND p.endpoint = e.endpoint)
FROM reminderd.endpoints AS e
WHERE e.max_in_flight IS NOT NULL OR e.max_per_second IS NOT NULL
ORDER BY 2, 1 NULLS FIRST;

-- set_endpoint --
-- $2, $4: whether to set max_in_flight to $3 and max_per_second to $5 (NULL clears).
INSERT INTO reminderd.endpoints AS e (endpoint, max_in_flight, max_per_second)
VALUES ($1, CASE WHEN $2 THEN $3::integer END, CASE WHEN $4 THEN $5::integer END)
ON CONFLICT (endpoint) DO UPDATE
SET max_in_flight = CASE WHEN $2 THEN $3::integer ELSE e.max_in_flight END,
    max_per_second = CASE WHEN $4 THEN $5::integer ELSE e.max_per_second END
RETURNING endpoint, max_in_flight, max_per_second;

-- set_tenant_limits --
-- $2, $4: whether to set max_per_second to $3 and max_per_hour to $5 (NULL clears); $6 the
-- frequency-cap policy (NULL keeps it).
UPDATE reminderd.tenants
SET max_per_second = CASE WHEN $2 THEN $3 ELSE max_per_second END,
    max_per_hour = CASE WHEN $4 THEN $5 ELSE max_per_hour END,
    frequency_cap_policy = coalesce($6, frequency_cap_policy)
WHERE id = $1
RETURNING max_per_second, max_per_hour, frequency_cap_policy;

-- set_frequency_cap --
INSERT INTO reminderd.frequency_caps (tenant_id, category, max_messages, per)
VALUES ($1, $2, $3, make_interval(secs => $4))
ON CONFLICT (tenant_id, category) DO UPDATE SET max_messages = excluded.max_messages, per = excluded.per;

-- remove_frequency_cap --
DELETE FROM reminderd.frequency_caps WHERE tenant_id = $1 AND category = $2;

-- frequency_caps --
SELECT category, max_messages, extract(epoch FROM per)::float8 AS per_s
FROM reminderd.frequency_caps WHERE tenant_id = $1 ORDER BY category;

-- roll_up_usage --
-- Fold up to $1 usage increments into usage_days, in one short transaction. Daemons doing this
-- at once take different increments (SKIP LOCKED).
WITH moved AS (
    DELETE FROM reminderd.usage_increments
    WHERE id IN (SELECT id FROM reminderd.usage_increments ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING *
),
folded AS (
    INSERT INTO reminderd.usage_days AS u (tenant_id, day, scheduled, attempted, delivered, dead, expired, held)
    SELECT tenant_id, day, sum(scheduled), sum(attempted), sum(delivered), sum(dead), sum(expired), sum(held)
    FROM moved
    GROUP BY tenant_id, day
    ON CONFLICT (tenant_id, day) DO UPDATE
    SET scheduled = u.scheduled + excluded.scheduled, attempted = u.attempted + excluded.attempted,
        delivered = u.delivered + excluded.delivered, dead = u.dead + excluded.dead,
        expired = u.expired + excluded.expired, held = u.held + excluded.held
)
SELECT count(*) FROM moved;

-- usage --
-- One tenant's usage per day from $2 to $3 (dates, inclusive).
SELECT tenant_id, day, scheduled, attempted, delivered, dead, expired, held
FROM reminderd.usage_daily
WHERE tenant_id = $1 AND day BETWEEN $2 AND $3
ORDER BY day;

-- usage_today --
-- Every tenant's usage today (UTC), for the metrics.
SELECT tenant_id, day, scheduled, attempted, delivered, dead, expired, held
FROM reminderd.usage_daily
WHERE day = (now() AT TIME ZONE 'UTC')::date
ORDER BY tenant_id;

-- prune_contact_sends --
-- Sends older than their cap's window no longer count: $1 at a time.
DELETE FROM reminderd.contact_sends
WHERE webhook_id IN (SELECT webhook_id FROM reminderd.contact_sends WHERE expires_at < now() LIMIT $1);
