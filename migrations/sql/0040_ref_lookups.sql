-- 0040 schedule_many's lookups by ref, whatever the statistics (docs/sql.md, bench/README.md (7)):
--   schedule_set plans its statements once per connection (generic plans, kept for the
--   connection's life). Planned on an empty table, as a new installation's pooled connections
--   plan them, the lookup of each item's live rows and the UPDATE of the replaced ones read the
--   tenant's whole range of scheduled_messages_tenant_status and filtered by ref: 1.8 ms an item
--   at 20,000 rows, a batch of 1,000 in 1.8 s (1,000 messages/s where 28,000 was the rate),
--   growing with the tenant until the connection was closed. Now both read each ref's rows in the
--   order of scheduled_messages_tenant_ref (tenant_id, ref_id, id), as the identical-call lookup
--   already did, and the UPDATE changes the rows it found by id. Same results, rows and trail.
--   (schedule_one, a batch of one, keeps its statements: PL/pgSQL's plan cache chose their
--   plans well in the same tests, tests/integration/test_schedule_set_plans.py.)
-- Run by migrations/versions/0040_ref_lookups.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

CREATE OR REPLACE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v2[])
RETURNS SETOF reminderd.item_scheduled_v1
LANGUAGE plpgsql
-- Its statements are planned once, not at each call: a custom plan for a batch of a few items
-- would cost more than writing them (their generic plans suit 1 to 1,000 items alike).
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    refused   boolean;
    recurring integer[];                    -- positions of the recurring items
    kept      reminderd.item_scheduled_v1[];  -- one-offs an identical call made: their message
    fresh     reminderd.item_scheduled_v1[];  -- one-offs to insert, fire_at their due instant
    replacing text[];                       -- the refs whose live rows the fresh ones replace
    zones     text[];                       -- each item's zone and its source, by position
    sources   text[];
    position  integer;
    done      record;
    one       reminderd.item_scheduled_v1;
BEGIN
    -- The refs' locks, then (migration 0036) the lock reminderd.broadcast() takes on the prefix of
    -- each completion-callback ref: the order schedule() takes them in (its ref's, then its
    -- trigger's), each set sorted.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT false AS prefix, hashtextextended(schedule_set.tenant_id || chr(31) || i.ref_id, 0) AS key
          FROM unnest(schedule_set.items) i
          UNION
          SELECT true, hashtextextended(schedule_set.tenant_id || chr(31) || '#broadcast' || chr(31)
                                        || split_part(i.ref_id, '#', 1), 0)
          FROM unnest(schedule_set.items) i
          WHERE i.ref_id ~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$'
          ORDER BY 1, 2) k;
    -- After the locks, so in a snapshot that sees every earlier call for these refs. same: the
    -- message an identical call made (schedule()'s rule); live: the ref's live row (not an extra
    -- occurrence); doomed: whether the ref has anything live that cancel_live() would cancel.
    SELECT NOT EXISTS (SELECT FROM reminderd.tenants t WHERE t.id = schedule_set.tenant_id)
           OR bool_or(coalesce(i.ref_id, '') = ''
                   OR (i.cron IS NULL AND i.rrule IS NULL
                       AND (num_nonnulls(i.fire_at, i.fire_in, i.local_time) <> 1 OR i.fire_in < interval '0'
                            OR NOT isfinite(i.due)
                            OR i.due > now() + (SELECT c.value::interval FROM reminderd.config c
                                                WHERE c.key = 'horizon'))))
               OR count(DISTINCT i.ref_id) <> count(*),
           array_agg(i.item) FILTER (WHERE i.cron IS NOT NULL OR i.rrule IS NOT NULL),
           array_agg(ROW(i.item, same.id,
                         CASE WHEN same.id = live.id OR (live.id IS NULL AND same.status = 'sent') THEN 'unchanged'
                              WHEN live.id IS NOT NULL THEN 'replaced' ELSE 'created' END,
                         same.status, same.fire_at)::reminderd.item_scheduled_v1)
               FILTER (WHERE same.id IS NOT NULL),
           array_agg(ROW(i.item, NULL, CASE WHEN live.id IS NOT NULL THEN 'replaced' ELSE 'created' END,
                         NULL, i.due)::reminderd.item_scheduled_v1)
               FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL),
           array_agg(i.ref_id) FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL AND live.doomed),
           array_agg(i.zone ORDER BY i.item), array_agg(i.source ORDER BY i.item)
    INTO refused, recurring, kept, fresh, replacing, zones, sources
    FROM (SELECT z.*,
                 -- A time that is no time (migration 0021) stands for infinity: refused above.
                 CASE WHEN z.cron IS NULL AND z.rrule IS NULL
                      THEN coalesce(z.fire_at,
                                    CASE WHEN z.fire_in > interval '200000 years' THEN 'infinity'
                                         ELSE now() + z.fire_in END,
                                    CASE WHEN NOT isfinite(z.local_time) THEN 'infinity'
                                         ELSE reminderd.local_instant(z.local_time, z.zone) END) END AS due
          FROM (SELECT u.*, u.ordinality::integer AS item,
                       coalesce(c.zone[1], coalesce(u.timezone, 'UTC')) AS zone,
                       coalesce(c.zone[2], 'message') AS source
                FROM unnest(schedule_set.items) WITH ORDINALITY AS u
                -- A contact's zone (reminderd.message_timezone: P0002 for an unknown one), only for
                -- the items that name one.
                LEFT JOIN LATERAL (
                    SELECT ARRAY[t.zone, t.source] AS zone
                    FROM reminderd.message_timezone(schedule_set.tenant_id, u.contact_id, u.timezone) AS t
                    WHERE u.contact_id IS NOT NULL
                ) c ON true) z) i
    LEFT JOIN LATERAL (
        SELECT m.id, m.status, m.fire_at
        FROM reminderd.scheduled_messages m
        WHERE i.cron IS NULL AND i.rrule IS NULL
          AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'sent')
          AND m.cron IS NULL AND m.rrule IS NULL
          AND m.payload = coalesce(i.payload, '{}')
          AND m.callback_url IS NOT DISTINCT FROM i.callback_url
          AND m.max_attempts IS NOT DISTINCT FROM i.max_attempts
          AND m.timezone = i.zone
          AND m.contact_id IS NOT DISTINCT FROM i.contact_id
          AND m.category = coalesce(i.category, 'transactional')
          AND m.calendar IS NOT DISTINCT FROM i.calendar
          AND m.holiday_rule IS NOT DISTINCT FROM i.holiday_rule
          AND m.backfill IS NOT DISTINCT FROM i.backfill
          AND m.max_lateness IS NOT DISTINCT FROM i.max_lateness
          AND CASE WHEN i.fire_in IS NULL
                   THEN coalesce(m.scheduled_for, m.fire_at) = i.due
                   ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                            - extract(epoch FROM i.fire_in)) < 1 END
        ORDER BY m.id DESC
        LIMIT 1
    ) same ON true
    LEFT JOIN LATERAL (
        -- In the order of scheduled_messages_tenant_ref (tenant_id, ref_id, id), as same's ORDER
        -- BY: its generic plan, made once per connection, then reads the ref's rows from that
        -- index whatever the statistics said when it was made. Unordered, a plan made on an empty
        -- table read the tenant's whole range of scheduled_messages_tenant_status for each item
        -- (migration 0040).
        SELECT max(l.id) FILTER (WHERE l.extra_of IS NULL) AS id, count(*) > 0 AS doomed
        FROM (SELECT m.id, m.extra_of
              FROM reminderd.scheduled_messages m
              WHERE i.cron IS NULL AND i.rrule IS NULL
                AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
                AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
              ORDER BY m.id DESC) l
    ) live ON true;
    IF refused THEN
        RAISE EXCEPTION 'this batch is scheduled item by item (reminderd.schedule_item)'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A ref is given twice, or an item is refused: schedule_many() says which.';
    END IF;
    FOREACH position IN ARRAY coalesce(recurring, '{}') LOOP
        done := reminderd.schedule_item(schedule_set.tenant_id, schedule_set.items[position]);
        one := ROW(position, done.message_id, done.result, done.status, done.fire_at);
        RETURN NEXT one;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(kept);
    IF fresh IS NULL THEN
        RETURN;
    END IF;
    IF replacing IS NOT NULL THEN
        -- Each ref's live rows found as live found them, then updated by id (migration 0040).
        UPDATE reminderd.scheduled_messages m
        SET status = 'cancelled', last_error = 'replaced by a new schedule', lease_expires_at = NULL,
            updated_at = now(), last_event = 'replaced'
        FROM (SELECT l.id
              FROM unnest(replacing) AS r (ref_id)
              CROSS JOIN LATERAL (
                  SELECT d.id
                  FROM reminderd.scheduled_messages d
                  WHERE d.tenant_id = schedule_set.tenant_id AND d.ref_id = r.ref_id
                    AND d.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
                  ORDER BY d.id DESC) l) AS doomed
        WHERE m.id = doomed.id AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    END IF;
    RETURN QUERY
    WITH given AS (
        SELECT f.item, f.result, f.fire_at AS due, i.*
        FROM unnest(fresh) f
        JOIN unnest(schedule_set.items) WITH ORDINALITY AS i ON i.ordinality = f.item
    ), inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, local_time, contact_id, timezone_source)
        SELECT schedule_set.tenant_id, g.ref_id, g.due, coalesce(g.payload, '{}'), g.callback_url, g.max_attempts,
               zones[g.item], coalesce(g.category, 'transactional'), g.calendar, g.holiday_rule,
               g.backfill, g.max_lateness, g.local_time, g.contact_id, sources[g.item]
        FROM given g
        ORDER BY g.item
        RETURNING id, ref_id, status, fire_at
    )
    SELECT g.item, n.id, g.result, n.status, n.fire_at
    FROM given g
    JOIN inserted n ON n.ref_id = g.ref_id;
END
$$;
