-- 0012 the HTTP API's scheduling, set-based: reminderd.schedule_set() schedules a batch's items
-- all at once (the refs' locks, one statement that checks the items and finds identical and live
-- rows, one UPDATE for the replaced, one INSERT for the new), and reminderd.schedule_many() tries
-- it first, falling back to its item-by-item path (unchanged) when a ref is given twice or any
-- item is refused. validate_message() skips check_timezone() for UTC.
-- Run by migrations/versions/0012_api_fast.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- What reminderd.schedule_set() says of one item: its position in the batch (from 1), its
-- message, and what happened, in schedule_item()'s words (created, replaced or unchanged).
CREATE TYPE reminderd.item_scheduled_v1 AS (
    item       integer,
    message_id bigint,
    result     text,
    status     text,
    fire_at    timestamptz
);
COMMENT ON TYPE reminderd.item_scheduled_v1 IS 'One item scheduled by reminderd.schedule_set().';

-- reminderd.schedule_set() for a batch of one one-off item (POST /v1/messages, when nothing else
-- arrives with it): the same steps, each a statement about one row (no contact, a wall time kept,
-- awaiting approval live, as there). Raises, without saying why, whatever schedule_item() would
-- refuse.
CREATE FUNCTION reminderd.schedule_one(tenant_id text, one reminderd.schedule_item_v1)
RETURNS reminderd.item_scheduled_v1
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due    timestamptz;
    same   record;
    live   bigint;
    doomed boolean;
    done   reminderd.item_scheduled_v1;
BEGIN
    due := coalesce(one.fire_at, now() + one.fire_in,
                    reminderd.local_instant(one.local_time, coalesce(one.timezone, 'UTC')));
    IF coalesce(one.ref_id, '') = '' OR num_nonnulls(one.fire_at, one.fire_in, one.local_time) <> 1
       OR one.fire_in < interval '0'
       OR due > now() + (SELECT c.value::interval FROM reminderd.config c WHERE c.key = 'horizon')
       OR NOT EXISTS (SELECT FROM reminderd.tenants t WHERE t.id = schedule_one.tenant_id)
    THEN
        RAISE EXCEPTION 'this item is scheduled by reminderd.schedule_item'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It is refused: schedule_many() says why.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule_one.tenant_id || chr(31) || one.ref_id, 0));
    SELECT m.id, m.status, m.fire_at INTO same
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule_one.tenant_id AND m.ref_id = one.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'sent')
      AND m.cron IS NULL AND m.rrule IS NULL
      AND m.payload = coalesce(one.payload, '{}')
      AND m.callback_url IS NOT DISTINCT FROM one.callback_url
      AND m.max_attempts IS NOT DISTINCT FROM one.max_attempts
      AND m.timezone = coalesce(one.timezone, 'UTC')
      AND m.contact_id IS NULL
      AND m.category = coalesce(one.category, 'transactional')
      AND m.calendar IS NOT DISTINCT FROM one.calendar
      AND m.holiday_rule IS NOT DISTINCT FROM one.holiday_rule
      AND m.backfill IS NOT DISTINCT FROM one.backfill
      AND m.max_lateness IS NOT DISTINCT FROM one.max_lateness
      AND CASE WHEN one.fire_in IS NULL
               THEN coalesce(m.scheduled_for, m.fire_at) = due
               ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                        - extract(epoch FROM one.fire_in)) < 1 END
    ORDER BY m.id DESC
    LIMIT 1;
    SELECT max(m.id) FILTER (WHERE m.extra_of IS NULL), count(*) > 0 INTO live, doomed
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule_one.tenant_id AND m.ref_id = one.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    IF same.id IS NOT NULL THEN
        done := ROW(1, same.id, CASE WHEN same.id = live OR (live IS NULL AND same.status = 'sent') THEN 'unchanged'
                                     WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END,
                    same.status, same.fire_at);
        RETURN done;
    END IF;
    IF doomed THEN
        UPDATE reminderd.scheduled_messages m
        SET status = 'cancelled', last_error = 'replaced by a new schedule', lease_expires_at = NULL,
            updated_at = now(), last_event = 'replaced'
        WHERE m.tenant_id = schedule_one.tenant_id AND m.ref_id = one.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    END IF;
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
         holiday_rule, backfill, max_lateness, local_time)
    VALUES (schedule_one.tenant_id, one.ref_id, due, coalesce(one.payload, '{}'), one.callback_url,
            one.max_attempts, coalesce(one.timezone, 'UTC'), coalesce(one.category, 'transactional'),
            one.calendar, one.holiday_rule, one.backfill, one.max_lateness, one.local_time)
    RETURNING 1, id, CASE WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END, status, fire_at INTO done;
    RETURN done;
END
$$;


-- Several messages at once, set-based: what reminderd.schedule_many() tries first. The rules of
-- reminderd.schedule_item() (so of schedule() and schedule_recurring()), the same replacement,
-- the same identical-call answer, rows, events and results, in a few statements for the whole
-- batch instead of a dozen per item: the refs' advisory locks (in a fixed order, so two batches
-- never deadlock on each other); one statement that checks every item and finds the identical
-- and the live rows; one UPDATE cancelling the live rows being replaced (as cancel_live() does);
-- one INSERT of the new messages. As schedule() since 0009: an item names no contact (the type
-- has no contact_id), so its zone is its own (timezone_source 'message'), a contact's message is
-- never identical to it, its wall time is kept in local_time, and a row awaiting approval is live
-- (replaced). Recurring items go through schedule_item() one by one, in the same transaction.
-- The refs must be distinct (given twice, the later item replaces the earlier one: that is the
-- item-by-item path's), and anything schedule_item() would refuse raises here too, without saying
-- which item: schedule_many() then undoes this call and schedules the items one by one, which
-- says which and why. Rows in no particular order.
CREATE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v1[])
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
    position  integer;
    done      record;
    one       reminderd.item_scheduled_v1;
BEGIN
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT DISTINCT hashtextextended(schedule_set.tenant_id || chr(31) || i.ref_id, 0) AS key
          FROM unnest(schedule_set.items) i
          ORDER BY 1) k;
    -- After the locks, so in a snapshot that sees every earlier call for these refs. same: the
    -- message an identical call made (schedule()'s rule); live: the ref's live row (not an extra
    -- occurrence); doomed: whether the ref has anything live that cancel_live() would cancel.
    SELECT NOT EXISTS (SELECT FROM reminderd.tenants t WHERE t.id = schedule_set.tenant_id)
           OR bool_or(coalesce(i.ref_id, '') = ''
                   OR (i.cron IS NULL AND i.rrule IS NULL
                       AND (num_nonnulls(i.fire_at, i.fire_in, i.local_time) <> 1 OR i.fire_in < interval '0'
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
           array_agg(i.ref_id) FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL AND live.doomed)
    INTO refused, recurring, kept, fresh, replacing
    FROM (SELECT u.*, u.ordinality::integer AS item,
                 CASE WHEN u.cron IS NULL AND u.rrule IS NULL
                      THEN coalesce(u.fire_at, now() + u.fire_in,
                                    reminderd.local_instant(u.local_time, coalesce(u.timezone, 'UTC'))) END AS due
          FROM unnest(schedule_set.items) WITH ORDINALITY AS u) i
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
          AND m.timezone = coalesce(i.timezone, 'UTC')
          AND m.contact_id IS NULL
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
        SELECT max(m.id) FILTER (WHERE m.extra_of IS NULL) AS id, count(*) > 0 AS doomed
        FROM reminderd.scheduled_messages m
        WHERE i.cron IS NULL AND i.rrule IS NULL
          AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
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
        UPDATE reminderd.scheduled_messages m
        SET status = 'cancelled', last_error = 'replaced by a new schedule', lease_expires_at = NULL,
            updated_at = now(), last_event = 'replaced'
        WHERE m.tenant_id = schedule_set.tenant_id AND m.ref_id = ANY (replacing)
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    END IF;
    RETURN QUERY
    WITH given AS (
        SELECT f.item, f.result, f.fire_at AS due, i.*
        FROM unnest(fresh) f
        JOIN unnest(schedule_set.items) WITH ORDINALITY AS i ON i.ordinality = f.item
    ), inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, local_time)
        SELECT schedule_set.tenant_id, g.ref_id, g.due, coalesce(g.payload, '{}'), g.callback_url, g.max_attempts,
               coalesce(g.timezone, 'UTC'), coalesce(g.category, 'transactional'), g.calendar, g.holiday_rule,
               g.backfill, g.max_lateness, g.local_time
        FROM given g
        ORDER BY g.item
        RETURNING id, ref_id, status, fire_at
    )
    SELECT g.item, n.id, g.result, n.status, n.fire_at
    FROM given g
    JOIN inserted n ON n.ref_id = g.ref_id;
END
$$;

-- Several messages in one call. All at once first (reminderd.schedule_set); when that refuses the
-- batch (a ref given twice, or any item refused) it is undone, and each item goes through
-- schedule_item in turn, as follows. atomic: the first error undoes the whole batch and is the
-- only item reported (one subtransaction for the batch). Otherwise each item stands alone (a
-- subtransaction each) and a failed one is reported with its SQLSTATE, message, detail, hint and
-- constraint (what reminderd.refusals turns into a sentence). Rows come out in the order of the
-- items.
CREATE OR REPLACE FUNCTION reminderd.schedule_many(
    tenant_id text, items reminderd.schedule_item_v1[], atomic boolean DEFAULT true
) RETURNS TABLE (item integer, message_id bigint, result text, status text, fire_at timestamptz,
                 error_sqlstate text, error_message text, error_hint text, error_detail text,
                 error_constraint text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    one       reminderd.schedule_item_v1;
    position  integer := 0;
    done      record;
    ids       bigint[] := '{}';
    results   text[] := '{}';
    statuses  text[] := '{}';
    fire_ats  timestamptz[] := '{}';
    states    text[] := '{}';
    messages  text[] := '{}';
    hints     text[] := '{}';
    details   text[] := '{}';
    names     text[] := '{}';
    e_state   text;
    e_message text;
    e_hint    text;
    e_detail  text;
    e_name    text;
BEGIN
    BEGIN
        -- A PL/pgSQL function's rows are all made before the first is returned (RETURN QUERY
        -- stores the whole result): when schedule_set() raises, none of its rows is returned.
        IF cardinality(schedule_many.items) = 1 AND (schedule_many.items[1]).cron IS NULL
           AND (schedule_many.items[1]).rrule IS NULL THEN
            RETURN QUERY SELECT s.item, s.message_id, s.result, s.status, s.fire_at, NULL::text, NULL::text,
                                NULL::text, NULL::text, NULL::text
                         FROM reminderd.schedule_one(schedule_many.tenant_id, schedule_many.items[1]) s;
        ELSE
            RETURN QUERY SELECT s.item, s.message_id, s.result, s.status, s.fire_at, NULL::text, NULL::text,
                                NULL::text, NULL::text, NULL::text
                         FROM reminderd.schedule_set(schedule_many.tenant_id, schedule_many.items) s
                         ORDER BY s.item;
        END IF;
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- refused, and undone: item by item below, which says which item and why
    END;
    PERFORM reminderd.check_tenant(schedule_many.tenant_id);
    IF schedule_many.atomic THEN
        BEGIN
            FOREACH one IN ARRAY coalesce(schedule_many.items, '{}') LOOP
                position := position + 1;
                done := reminderd.schedule_item(schedule_many.tenant_id, one);
                ids := ids || done.message_id;
                results := results || done.result;
                statuses := statuses || done.status;
                fire_ats := fire_ats || done.fire_at;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                                    e_hint = PG_EXCEPTION_HINT, e_detail = PG_EXCEPTION_DETAIL,
                                    e_name = CONSTRAINT_NAME;
            RETURN QUERY SELECT position, NULL::bigint, 'error'::text, NULL::text, NULL::timestamptz,
                                e_state, e_message, nullif(e_hint, ''), nullif(e_detail, ''), nullif(e_name, '');
            RETURN;
        END;
        RETURN QUERY SELECT n::integer, u.id, u.result, u.status, u.fire_at, NULL::text, NULL::text, NULL::text,
                            NULL::text, NULL::text
                     FROM unnest(ids, results, statuses, fire_ats) WITH ORDINALITY AS u(id, result, status, fire_at, n);
        RETURN;
    END IF;
    FOREACH one IN ARRAY coalesce(schedule_many.items, '{}') LOOP
        position := position + 1;
        BEGIN
            done := reminderd.schedule_item(schedule_many.tenant_id, one);
            ids := ids || done.message_id;
            results := results || done.result;
            statuses := statuses || done.status;
            fire_ats := fire_ats || done.fire_at;
            states := states || NULL::text;
            messages := messages || NULL::text;
            hints := hints || NULL::text;
            details := details || NULL::text;
            names := names || NULL::text;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                                    e_hint = PG_EXCEPTION_HINT, e_detail = PG_EXCEPTION_DETAIL,
                                    e_name = CONSTRAINT_NAME;
            ids := ids || NULL::bigint;
            results := results || 'error'::text;
            statuses := statuses || NULL::text;
            fire_ats := fire_ats || NULL::timestamptz;
            states := states || e_state;
            messages := messages || e_message;
            hints := hints || nullif(e_hint, '');
            details := details || nullif(e_detail, '');
            names := names || nullif(e_name, '');
        END;
    END LOOP;
    RETURN QUERY SELECT n::integer, u.id, u.result, u.status, u.fire_at, u.state, u.message, u.hint, u.detail,
                        u.name
                 FROM unnest(ids, results, statuses, fire_ats, states, messages, hints, details, names)
                      WITH ORDINALITY AS u(id, result, status, fire_at, state, message, hint, detail, name, n);
END
$$;


-- Row by row at insert: a message in UTC (most are) no longer calls check_timezone() to be told
-- that UTC is a timezone (a call with a SET clause, a few microseconds a row); the same refusals.
--
-- Reject what SQL can check at insert, with a message that names the problem (a callback_url or
-- cron of the wrong shape carries the name of the constraint it pre-empts): a timezone or a cron
-- the daemon could not read (check_timezone, check_cron: every field, and that it fires). An
-- RRULE without DTSTART is anchored at the local midnight of the day it was written, so INTERVAL
-- counts from a fixed day and times default to 00:00 (stored, so a DBA sees it).
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- NULL: the column's NOT NULL says so; UTC: check_timezone's first answer, without the call.
    IF NEW.timezone IS NOT NULL AND NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN
        PERFORM reminderd.check_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
    END IF;
    IF NEW.callback_url !~* '^https?://[^/?#[:space:]]+' THEN
        RAISE EXCEPTION 'callback_url "%" of message % / % is not an http(s) URL', NEW.callback_url,
            NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'callback_url_is_http',
                  HINT = 'Give an absolute http:// or https:// URL, like https://example.com/hooks.';
    END IF;
    IF NEW.cron IS NOT NULL THEN
        PERFORM reminderd.check_cron(NEW.cron, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
    END IF;
    IF NEW.callback_url IS NULL AND NOT EXISTS (
        SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id AND t.callback_url IS NOT NULL
    ) THEN
        IF NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id) THEN
            RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it first: reminderd tenant add ID --callback-url URL';
        END IF;
        RAISE EXCEPTION 'no callback_url for message % / %: the row has none and tenant "%" has no default',
            NEW.tenant_id, NEW.ref_id, NEW.tenant_id
            USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.rrule IS NOT NULL AND NEW.rrule !~* '(^|\n)\s*DTSTART' THEN
        IF NEW.rrule ~* 'COUNT=' THEN
            RAISE EXCEPTION 'the rrule of message % / % has COUNT but no DTSTART', NEW.tenant_id, NEW.ref_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'COUNT counts from DTSTART: give one (DTSTART:20261201T090000), or use max_runs instead.';
        END IF;
        NEW.rrule := 'DTSTART:'
                     || to_char(date_trunc('day', reminderd.wall_time(now(), NEW.timezone)), 'YYYYMMDD"T"HH24MISS')
                     || E'\n' || btrim(NEW.rrule, E' \t\r\n');
    END IF;
    RETURN NEW;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.schedule_set(text, reminderd.schedule_item_v1[]),
    reminderd.schedule_one(text, reminderd.schedule_item_v1) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.schedule_set(text, reminderd.schedule_item_v1[]),
    reminderd.schedule_one(text, reminderd.schedule_item_v1)
TO reminderd_app, reminderd_daemon, reminderd_api;
