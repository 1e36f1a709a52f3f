-- 0014 issue 14's HTTP face: reminderd serve (the role reminderd_api) reads and writes contacts,
-- audiences, broadcasts and cadences as the daemon role does (every tenant's rows; the server
-- scopes each statement to its key's tenant), names the person it acts for (the API key) when
-- it saves, approves or rejects a broadcast, and schedules messages for a contact in a batch:
-- reminderd.schedule_item_v2 is schedule_item_v1 with a contact_id, and schedule_many() for it
-- says each message's zone and where it came from.
-- Run by migrations/versions/0014_api_contacts.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- What POST /v1/messages and /v1/messages/batch pass since 0014 (reminderd.schedule_many): one
-- item to schedule, as reminderd.schedule() or reminderd.schedule_recurring() take it. Version 1
-- stays, for servers of the previous release during a rolling upgrade.
CREATE TYPE reminderd.schedule_item_v2 AS (
    ref_id       text,
    fire_at      timestamptz,
    fire_in      interval,
    local_time   timestamp,
    cron         text,
    rrule        text,
    timezone     text,
    payload      jsonb,
    callback_url text,
    category     text,
    max_attempts integer,
    calendar     text,
    holiday_rule text,
    backfill     text,
    max_lateness interval,
    until        timestamptz,
    max_runs     integer,
    -- a recurring item's first occurrence, computed by the caller (the API, with the daemon's
    -- code: the tenant's holidays skipped); NULL: reminderd.first_occurrence(), else the planner
    first_fire_at timestamptz,
    -- the contact it is for: without a timezone, the message is read in the contact's zone
    contact_id   text
);
COMMENT ON TYPE reminderd.schedule_item_v2 IS 'One message to schedule in a batch (reminderd.schedule_many), perhaps for a contact.';

-- One item: through reminderd.schedule() or reminderd.schedule_recurring(), so with the same rules,
-- the same replacement and the same identical-call answer as a call of its own. result: created,
-- replaced (the ref's live message was cancelled for it) or unchanged (an identical call: the
-- message it created).
CREATE FUNCTION reminderd.schedule_item(tenant_id text, one reminderd.schedule_item_v2,
    OUT message_id bigint, OUT result text, OUT status text, OUT fire_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    live bigint;
BEGIN
    IF coalesce(one.ref_id, '') = '' THEN
        RAISE EXCEPTION 'ref_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The lock schedule() takes too: the live row read here is the one it would replace.
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule_item.tenant_id || chr(31) || one.ref_id, 0));
    SELECT m.id INTO live FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule_item.tenant_id AND m.ref_id = one.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval') AND m.extra_of IS NULL;
    IF one.cron IS NULL AND one.rrule IS NULL THEN
        message_id := reminderd.schedule(
            schedule_item.tenant_id, one.ref_id, one.fire_at, coalesce(one.payload, '{}'), one.callback_url,
            one.fire_in, one.max_attempts, one.local_time,
            CASE WHEN one.contact_id IS NULL THEN coalesce(one.timezone, 'UTC') ELSE one.timezone END,
            coalesce(one.category, 'transactional'), one.calendar, one.holiday_rule, one.backfill, one.max_lateness,
            one.contact_id);
    ELSE
        message_id := reminderd.schedule_recurring(
            schedule_item.tenant_id, one.ref_id, one.cron, one.rrule,
            CASE WHEN one.contact_id IS NULL THEN coalesce(one.timezone, 'UTC') ELSE one.timezone END,
            coalesce(one.payload, '{}'), one.callback_url, one.until, one.max_runs,
            coalesce(one.category, 'transactional'), one.calendar, one.holiday_rule, one.backfill,
            one.max_lateness, one.max_attempts, one.first_fire_at, one.contact_id);
    END IF;
    SELECT m.status, m.fire_at INTO status, fire_at FROM reminderd.scheduled_messages m WHERE m.id = message_id;
    -- A new row is pending (or paused, for a paused tenant); a sent one was there before.
    result := CASE WHEN message_id = live OR (live IS NULL AND status = 'sent') THEN 'unchanged'
                   WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END;
END
$$;

-- reminderd.schedule_set() for a batch of one one-off item (POST /v1/messages, when nothing else
-- arrives with it): the same steps, each a statement about one row (no contact, a wall time kept,
-- awaiting approval live, as there). Raises, without saying why, whatever schedule_item() would
-- refuse.
CREATE FUNCTION reminderd.schedule_one(tenant_id text, one reminderd.schedule_item_v2)
RETURNS reminderd.item_scheduled_v1
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due    timestamptz;
    same   record;
    live   bigint;
    doomed boolean;
    zone   text := coalesce(one.timezone, 'UTC');
    source text := 'message';
    done   reminderd.item_scheduled_v1;
BEGIN
    IF one.contact_id IS NOT NULL THEN
        SELECT z.zone, z.source INTO zone, source
        FROM reminderd.message_timezone(schedule_one.tenant_id, one.contact_id, one.timezone) AS z;
    END IF;
    due := coalesce(one.fire_at, now() + one.fire_in, reminderd.local_instant(one.local_time, zone));
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
      AND m.timezone = zone
      AND m.contact_id IS NOT DISTINCT FROM one.contact_id
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
         holiday_rule, backfill, max_lateness, local_time, contact_id, timezone_source)
    VALUES (schedule_one.tenant_id, one.ref_id, due, coalesce(one.payload, '{}'), one.callback_url,
            one.max_attempts, zone, coalesce(one.category, 'transactional'),
            one.calendar, one.holiday_rule, one.backfill, one.max_lateness, one.local_time, one.contact_id,
            source)
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
CREATE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v2[])
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
           array_agg(i.ref_id) FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL AND live.doomed),
           array_agg(i.zone ORDER BY i.item), array_agg(i.source ORDER BY i.item)
    INTO refused, recurring, kept, fresh, replacing, zones, sources
    FROM (SELECT z.*,
                 CASE WHEN z.cron IS NULL AND z.rrule IS NULL
                      THEN coalesce(z.fire_at, now() + z.fire_in, reminderd.local_instant(z.local_time, z.zone)) END AS due
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

-- Several messages in one call. All at once first (reminderd.schedule_set); when that refuses the
-- batch (a ref given twice, or any item refused) it is undone, and each item goes through
-- schedule_item in turn, as follows. atomic: the first error undoes the whole batch and is the
-- only item reported (one subtransaction for the batch). Otherwise each item stands alone (a
-- subtransaction each) and a failed one is reported with its SQLSTATE, message, detail, hint and
-- constraint (what reminderd.refusals turns into a sentence). Rows come out in the order of the
-- items.
CREATE FUNCTION reminderd.schedule_many(
    tenant_id text, items reminderd.schedule_item_v2[], atomic boolean DEFAULT true
) RETURNS TABLE (item integer, message_id bigint, result text, status text, fire_at timestamptz,
                 error_sqlstate text, error_message text, error_hint text, error_detail text,
                 error_constraint text, timezone text, timezone_source text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fast      reminderd.item_scheduled_v1[];
    one       reminderd.schedule_item_v2;
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
            fast := ARRAY[reminderd.schedule_one(schedule_many.tenant_id, schedule_many.items[1])];
        ELSE
            SELECT array_agg(s ORDER BY s.item) INTO fast
            FROM reminderd.schedule_set(schedule_many.tenant_id, schedule_many.items) s;
        END IF;
        -- A statement of its own, so that it sees the rows just written: each message's zone.
        RETURN QUERY SELECT s.item, s.message_id, s.result, s.status, s.fire_at, NULL::text, NULL::text,
                            NULL::text, NULL::text, NULL::text, m.timezone, m.timezone_source
                     FROM unnest(fast) s
                     LEFT JOIN reminderd.scheduled_messages m ON m.id = s.message_id
                     ORDER BY s.item;
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
                                e_state, e_message, nullif(e_hint, ''), nullif(e_detail, ''), nullif(e_name, ''),
                                NULL::text, NULL::text;
            RETURN;
        END;
        RETURN QUERY SELECT n::integer, u.id, u.result, u.status, u.fire_at, NULL::text, NULL::text, NULL::text,
                            NULL::text, NULL::text, m.timezone, m.timezone_source
                     FROM unnest(ids, results, statuses, fire_ats) WITH ORDINALITY AS u(id, result, status, fire_at, n)
                     LEFT JOIN reminderd.scheduled_messages m ON m.id = u.id
                     ORDER BY n;
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
                        u.name, m.timezone, m.timezone_source
                 FROM unnest(ids, results, statuses, fire_ats, states, messages, hints, details, names)
                      WITH ORDINALITY AS u(id, result, status, fire_at, state, message, hint, detail, name, n)
                 LEFT JOIN reminderd.scheduled_messages m ON m.id = u.id
                 ORDER BY n;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.schedule_item(text, reminderd.schedule_item_v2),
    reminderd.schedule_one(text, reminderd.schedule_item_v2),
    reminderd.schedule_set(text, reminderd.schedule_item_v2[]),
    reminderd.schedule_many(text, reminderd.schedule_item_v2[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.schedule_item(text, reminderd.schedule_item_v2),
    reminderd.schedule_one(text, reminderd.schedule_item_v2),
    reminderd.schedule_set(text, reminderd.schedule_item_v2[]),
    reminderd.schedule_many(text, reminderd.schedule_item_v2[], boolean)
TO reminderd_app, reminderd_daemon, reminderd_api;

-- Who is acting: the database role, or, for the daemon role (the CLI connects as it) and the API
-- server's role (which names the API key a request came with), the person it names. An
-- application role always acts as itself, so it cannot approve its own broadcast under another
-- name.
CREATE OR REPLACE FUNCTION reminderd.acting_as(actor text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF actor IS NULL THEN
        RETURN current_user;
    END IF;
    IF btrim(actor) = '' OR length(actor) > 200 THEN
        RAISE EXCEPTION 'actor must be a name of 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (pg_has_role(current_user, 'reminderd_daemon', 'MEMBER')
            OR pg_has_role(current_user, 'reminderd_api', 'MEMBER')) THEN
        RAISE EXCEPTION 'role % may not act as "%"', current_user, actor
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave actor out: an application role acts as itself (current_user).';
    END IF;
    RETURN actor;
END
$$;

-- reminderd_api: every tenant's contacts, audiences and broadcasts, as the daemon role; the
-- reference tables the database resolves a contact's zone with; the broadcasts' progress.
CREATE POLICY api_all ON reminderd.contacts TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.audiences TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.audience_members TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.broadcast_requests TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.broadcast_occurrences TO reminderd_api USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.contacts, reminderd.audiences, reminderd.audience_members,
    reminderd.broadcast_requests, reminderd.broadcast_occurrences TO reminderd_api;
GRANT SELECT ON reminderd.reference_versions, reminderd.phone_plans, reminderd.phone_regions,
    reminderd.phone_prefixes, reminderd.phone_timezones, reminderd.countries, reminderd.broadcasts
    TO reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.national_number(text, text[], text, integer, text, text, integer[], integer[]),
    reminderd.phone_timezone(text),
    reminderd.resolve_contact(),
    reminderd.upsert_contacts(text, jsonb),
    reminderd.delete_contacts(text, text[]),
    reminderd.replan_for_contacts(),
    reminderd.add_to_audience(text, text, text[]),
    reminderd.remove_from_audience(text, text, text[]),
    reminderd.drop_audience(text, text),
    reminderd.audience_contacts(text, text, text[], boolean),
    reminderd.acting_as(text),
    reminderd.cron_field_values(text, integer, integer),
    reminderd.fires_per_hour(text, text),
    reminderd.thousands(bigint),
    reminderd.broadcast(text, text, timestamp, text, jsonb, text, text[], boolean, text, text, timestamptz, text,
                        text, text, text, interval, integer, boolean, interval, text),
    reminderd.stage_broadcast(bigint, timestamp, timestamp),
    reminderd.broadcast_preview(text, timestamp, text, text[], boolean),
    reminderd.approve_broadcast(text, bigint, text, text),
    reminderd.reject_broadcast(text, bigint, text, text),
    reminderd.cancel_broadcast(text, bigint),
    reminderd.offset_label(interval),
    reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text, text, text, text,
                               text, text, interval, integer),
    reminderd.contact_messages(text, text, interval, integer)
TO reminderd_api;

-- broadcast() and stage_broadcast() read the tenant's columns they use by name, not *: the API's
-- role may read a tenant's settings, never its signing secret. Otherwise as in 0009.
CREATE OR REPLACE FUNCTION reminderd.broadcast(
    tenant_id text, ref_prefix text, local_time timestamp DEFAULT NULL, audience text DEFAULT NULL,
    payload jsonb DEFAULT '{}', category text DEFAULT 'marketing', contact_ids text[] DEFAULT NULL,
    everyone boolean DEFAULT false, cron text DEFAULT NULL, rrule text DEFAULT NULL,
    until timestamptz DEFAULT NULL, callback_url text DEFAULT NULL, calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL, notify boolean DEFAULT false, stage_ahead interval DEFAULT '1 hour',
    actor text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    tenant    reminderd.tenants;
    who       text;
    anchored  text;
    previous  reminderd.broadcast_requests;
    missing   text[];
    contacts  bigint;
    zoneless  bigint;
    zones     bigint;
    late      record;
    per_hour  integer;
    new_id    bigint;
    live_refs bigint;
    by_zone   jsonb;
BEGIN
    PERFORM reminderd.check_tenant(broadcast.tenant_id);
    IF num_nonnulls(broadcast.audience, broadcast.contact_ids) + coalesce(broadcast.everyone, false)::integer <> 1 THEN
        RAISE EXCEPTION 'give exactly one audience: audience (a named list), contact_ids (an array) or everyone => true'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF num_nonnulls(broadcast.local_time, broadcast.cron, broadcast.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of local_time (a wall time, read in each contact''s zone), cron and rrule'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF broadcast.ref_prefix IS NULL OR broadcast.ref_prefix !~ '^[^%#[:space:]]{1,100}$' THEN
        RAISE EXCEPTION 'ref_prefix % must be 1 to 100 characters without spaces, %% or #',
            coalesce(quote_literal(broadcast.ref_prefix), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF broadcast.audience IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM reminderd.audiences a WHERE a.tenant_id = broadcast.tenant_id AND a.name = broadcast.audience
    ) THEN
        RAISE EXCEPTION 'unknown audience "%" of tenant "%"', broadcast.audience, broadcast.tenant_id
            USING ERRCODE = 'no_data_found', HINT = 'Create it by adding contacts: reminderd.add_to_audience(tenant, name, contact_ids).';
    END IF;
    who := reminderd.acting_as(broadcast.actor);
    -- The columns it reads, by name: a role may read a tenant's settings and not its secret.
    SELECT t.id, t.broadcast_limit, t.approval_threshold INTO tenant.id, tenant.broadcast_limit, tenant.approval_threshold
    FROM reminderd.tenants t WHERE t.id = broadcast.tenant_id;
    -- An RRULE without DTSTART counts from today's midnight (as reminderd.validate_message does).
    anchored := CASE WHEN broadcast.rrule IS NOT NULL AND broadcast.rrule !~* '(^|\n)\s*DTSTART'
                     THEN 'DTSTART:' || to_char(date_trunc('day', now() AT TIME ZONE 'UTC'), 'YYYYMMDD"T"HH24MISS')
                          || E'\n' || btrim(broadcast.rrule, E' \t\r\n')
                     ELSE broadcast.rrule END;

    -- One broadcast per prefix at a time; the same call again returns it.
    PERFORM pg_advisory_xact_lock(hashtextextended(broadcast.tenant_id || chr(31) || '#broadcast' || chr(31)
                                                   || broadcast.ref_prefix, 0));
    SELECT * INTO previous FROM reminderd.broadcast_requests r
    WHERE r.tenant_id = broadcast.tenant_id AND r.ref_prefix = broadcast.ref_prefix AND r.approval <> 'rejected'
      AND (r.ended_at IS NULL OR EXISTS (
          SELECT 1 FROM reminderd.scheduled_messages m
          WHERE m.broadcast_id = r.id AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')))
    ORDER BY r.id DESC
    LIMIT 1;
    IF FOUND THEN
        IF (previous.audience, previous.contact_ids, previous.everyone, previous.local_time, previous.cron,
            previous.rrule, previous.until, previous.payload, previous.callback_url, previous.category,
            previous.calendar, previous.holiday_rule, previous.backfill, previous.max_lateness,
            previous.max_attempts, previous.notify, previous.stage_ahead)
           IS NOT DISTINCT FROM
           (broadcast.audience, broadcast.contact_ids, coalesce(broadcast.everyone, false), broadcast.local_time,
            broadcast.cron, anchored, broadcast.until, coalesce(broadcast.payload, '{}'), broadcast.callback_url,
            coalesce(broadcast.category, 'marketing'), broadcast.calendar, broadcast.holiday_rule, broadcast.backfill,
            broadcast.max_lateness, broadcast.max_attempts, coalesce(broadcast.notify, false),
            coalesce(broadcast.stage_ahead, interval '1 hour')) THEN
            RETURN previous.id;
        END IF;
        RAISE EXCEPTION 'broadcast % of tenant "%" already uses ref_prefix "%" and is not done',
            previous.id, broadcast.tenant_id, broadcast.ref_prefix
            USING ERRCODE = 'unique_violation',
                  HINT = 'Cancel it first (reminderd.cancel_broadcast(tenant, id)), or choose another ref_prefix.';
    END IF;
    IF broadcast.local_time IS NOT NULL THEN
        SELECT count(*) INTO live_refs FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = broadcast.tenant_id
          AND m.ref_id LIKE replace(replace(replace(broadcast.ref_prefix, '\', '\\'), '_', '\_'), '%', '\%') || ':%'
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
        IF live_refs > 0 THEN
            RAISE EXCEPTION '% live messages of tenant "%" already have refs "%:…"', reminderd.thousands(live_refs),
                broadcast.tenant_id, broadcast.ref_prefix
                USING ERRCODE = 'unique_violation',
                      HINT = format('Cancel them first (reminderd.cancel_matching(%L, %L)), or choose another ref_prefix.',
                                    broadcast.tenant_id, broadcast.ref_prefix || ':%');
        END IF;
    END IF;

    -- The audience: who, how many, and whether each has a zone.
    IF broadcast.contact_ids IS NOT NULL THEN
        SELECT array_agg(given.id ORDER BY given.id) INTO missing
        FROM (SELECT DISTINCT unnest(broadcast.contact_ids) AS id) AS given
        WHERE NOT EXISTS (SELECT 1 FROM reminderd.contacts c
                          WHERE c.tenant_id = broadcast.tenant_id AND c.contact_id = given.id);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION '% of the contact_ids are not contacts of tenant "%": %', cardinality(missing),
                broadcast.tenant_id,
                array_to_string(missing[1:5], ', ') || CASE WHEN cardinality(missing) > 5 THEN ', …' ELSE '' END
                USING ERRCODE = 'no_data_found', HINT = 'Add them first: reminderd.upsert_contacts.';
        END IF;
    END IF;
    -- One pass over the audience: how many contacts in each zone (and without one).
    SELECT coalesce(jsonb_agg(jsonb_build_object('timezone', z.timezone, 'contacts', z.contacts)), '[]')
    INTO by_zone
    FROM (SELECT a.timezone, count(*) AS contacts
          FROM reminderd.audience_contacts(broadcast.tenant_id, broadcast.audience, broadcast.contact_ids,
                                           coalesce(broadcast.everyone, false)) AS a
          GROUP BY a.timezone) AS z;
    SELECT coalesce(sum((z->>'contacts')::bigint), 0),
           coalesce(sum((z->>'contacts')::bigint) FILTER (WHERE z->>'timezone' IS NULL), 0), count(*)
    INTO contacts, zoneless, zones
    FROM jsonb_array_elements(by_zone) AS z;
    IF contacts = 0 THEN
        RAISE EXCEPTION 'the audience of broadcast "%" is empty', broadcast.ref_prefix
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF zoneless > 0 THEN
        RAISE EXCEPTION '% of the % contacts have no timezone, and tenant "%" has no default',
            reminderd.thousands(zoneless), reminderd.thousands(contacts), broadcast.tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set one: reminderd tenant set TENANT --timezone Europe/London (or give the contacts a timezone, phone or country).';
    END IF;
    IF tenant.broadcast_limit IS NOT NULL AND contacts > tenant.broadcast_limit THEN
        RAISE EXCEPTION 'broadcast "%" would send to % contacts; tenant "%" allows at most % in one broadcast',
            broadcast.ref_prefix, reminderd.thousands(contacts), broadcast.tenant_id,
            reminderd.thousands(tenant.broadcast_limit)
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('%s contacts over %s zones.', reminderd.thousands(contacts), zones),
                  HINT = 'Split the audience, or raise the limit: reminderd tenant set TENANT --broadcast-limit N.';
    END IF;
    IF broadcast.local_time IS NULL THEN
        per_hour := reminderd.fires_per_hour(broadcast.cron, anchored);
        IF per_hour > 1 THEN
            RAISE EXCEPTION '% fires up to % times an hour: each occurrence would send to % contacts, % messages an hour',
                coalesce('cron ' || quote_literal(broadcast.cron), 'the rrule'), per_hour, reminderd.thousands(contacts),
                reminderd.thousands(per_hour * contacts)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A recurring broadcast fires at most once an hour.';
        END IF;
    ELSE
        -- Every zone's instant of the wall time: none in the past, none beyond the horizon.
        SELECT count(*) AS zones, sum(z.contacts)::bigint AS contacts,
               string_agg(format('%s: %s contacts at %s', z.timezone, reminderd.thousands(z.contacts),
                                 to_char(z.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')), '; '
                          ORDER BY z.fire_at) AS detail
        INTO late
        FROM (SELECT e->>'timezone' AS timezone, (e->>'contacts')::bigint AS contacts,
                     reminderd.local_instant(broadcast.local_time, e->>'timezone') AS fire_at
              FROM jsonb_array_elements(by_zone) AS e
              OFFSET 0) AS z
        WHERE z.fire_at <= now();
        IF late.zones > 0 THEN
            RAISE EXCEPTION 'broadcast "%" at % would send % of its % messages in the past (% of its % zones)',
                broadcast.ref_prefix, to_char(broadcast.local_time, 'YYYY-MM-DD HH24:MI'),
                reminderd.thousands(late.contacts), reminderd.thousands(contacts), late.zones, zones
                USING ERRCODE = 'invalid_parameter_value', DETAIL = late.detail,
                      HINT = 'Choose a later local_time: the zone whose clock is furthest ahead sends first.';
        END IF;
        SELECT count(*) AS zones, sum(z.contacts)::bigint AS contacts,
               string_agg(format('%s: %s contacts at %s', z.timezone, reminderd.thousands(z.contacts),
                                 to_char(z.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')), '; '
                          ORDER BY z.fire_at) AS detail
        INTO late
        FROM (SELECT e->>'timezone' AS timezone, (e->>'contacts')::bigint AS contacts,
                     reminderd.local_instant(broadcast.local_time, e->>'timezone') AS fire_at
              FROM jsonb_array_elements(by_zone) AS e
              OFFSET 0) AS z
        WHERE z.fire_at > now() + (SELECT value::interval FROM reminderd.config WHERE key = 'horizon');
        IF late.zones > 0 THEN
            RAISE EXCEPTION 'broadcast "%" at % would send % of its % messages beyond the horizon of %',
                broadcast.ref_prefix, to_char(broadcast.local_time, 'YYYY-MM-DD HH24:MI'),
                reminderd.thousands(late.contacts), reminderd.thousands(contacts),
                (SELECT value FROM reminderd.config WHERE key = 'horizon')
                USING ERRCODE = 'datetime_field_overflow', DETAIL = late.detail,
                      HINT = 'A DBA can change it: UPDATE reminderd.config SET value = ''180 days'' WHERE key = ''horizon''';
        END IF;
    END IF;

    INSERT INTO reminderd.broadcast_requests AS r
        (tenant_id, ref_prefix, audience, contact_ids, everyone, local_time, cron, rrule, until, payload,
         callback_url, category, calendar, holiday_rule, backfill, max_lateness, max_attempts, notify,
         stage_ahead, approval, created_by)
    VALUES (broadcast.tenant_id, broadcast.ref_prefix, broadcast.audience, broadcast.contact_ids,
            coalesce(broadcast.everyone, false), broadcast.local_time, broadcast.cron, anchored, broadcast.until,
            coalesce(broadcast.payload, '{}'), broadcast.callback_url, coalesce(broadcast.category, 'marketing'),
            broadcast.calendar, broadcast.holiday_rule, broadcast.backfill, broadcast.max_lateness,
            broadcast.max_attempts, coalesce(broadcast.notify, false), coalesce(broadcast.stage_ahead, interval '1 hour'),
            coalesce(CASE WHEN contacts > tenant.approval_threshold THEN 'awaiting' END, 'not_needed'), who)
    RETURNING id INTO new_id;
    IF broadcast.local_time IS NOT NULL THEN
        PERFORM reminderd.stage_broadcast(new_id, broadcast.local_time);
    ELSE
        PERFORM pg_notify('reminderd_due', 'plan');  -- the daemon plans and stages its occurrences
    END IF;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION reminderd.stage_broadcast(broadcast_id bigint, occurrence timestamp, following timestamp DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    request   reminderd.broadcast_requests;
    tenant    reminderd.tenants;
    recurring boolean;
    contacts  bigint;
    zoneless  bigint;
    problem   text;
    staged    integer;
    first_at  timestamptz;
    last_at   timestamptz;
BEGIN
    SELECT * INTO request FROM reminderd.broadcast_requests r WHERE r.id = stage_broadcast.broadcast_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no broadcast with id %', stage_broadcast.broadcast_id USING ERRCODE = 'no_data_found';
    END IF;
    recurring := request.local_time IS NULL;
    -- The columns it reads, by name: a role may read a tenant's settings and not its secret.
    SELECT t.id, t.broadcast_limit, t.callback_url, t.paused INTO tenant.id, tenant.broadcast_limit, tenant.callback_url,
                                                                  tenant.paused
    FROM reminderd.tenants t WHERE t.id = request.tenant_id;
    IF request.callback_url IS NULL AND tenant.callback_url IS NULL THEN
        RAISE EXCEPTION 'no callback_url for broadcast "%": it has none and tenant "%" has no default',
            request.ref_prefix, request.tenant_id
            USING ERRCODE = 'not_null_violation';
    END IF;
    -- Staged already (or by another daemon just now), or over: nothing to do.
    IF request.ended_at IS NOT NULL OR request.approval = 'rejected'
       OR (recurring AND request.next_occurrence IS DISTINCT FROM stage_broadcast.occurrence)
       OR EXISTS (SELECT 1 FROM reminderd.broadcast_occurrences o
                  WHERE o.broadcast_id = request.id AND o.occurrence = stage_broadcast.occurrence) THEN
        RETURN 0;
    END IF;
    IF recurring THEN
        SELECT count(*), count(*) FILTER (WHERE a.timezone IS NULL) INTO contacts, zoneless
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a;
        problem := CASE WHEN contacts = 0 THEN 'the audience is empty'
                        WHEN zoneless > 0 THEN format('%s contacts have no timezone and the tenant has no default',
                                                      reminderd.thousands(zoneless))
                        WHEN contacts > tenant.broadcast_limit THEN format('%s contacts, over the tenant''s limit of %s',
                            reminderd.thousands(contacts), reminderd.thousands(tenant.broadcast_limit)) END;
        IF problem IS NOT NULL THEN
            UPDATE reminderd.broadcast_requests r
            SET next_occurrence = stage_broadcast.following,
                last_error = format('occurrence %s not staged: %s', to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'),
                                    problem),
                ended_at = CASE WHEN stage_broadcast.following IS NULL THEN now() END,
                ended_reason = CASE WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
                updated_at = now()
            WHERE r.id = request.id;
            RETURN 0;
        END IF;
    END IF;
    WITH audience AS MATERIALIZED (
        SELECT a.contact_id, a.timezone, a.timezone_source
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a
        WHERE a.timezone IS NOT NULL
    ),
    zones AS MATERIALIZED (  -- each zone's instant computed once, not once per contact
        SELECT z.timezone, reminderd.local_instant(stage_broadcast.occurrence, z.timezone) AS fire_at
        FROM (SELECT DISTINCT timezone FROM audience) AS z
    ),
    inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, contact_id, timezone_source, local_time, broadcast_id, status,
             paused_by)
        SELECT request.tenant_id,
               request.ref_prefix || ':' || a.contact_id
                   || CASE WHEN recurring THEN '#' || to_char(stage_broadcast.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END,
               z.fire_at, request.payload, request.callback_url, request.max_attempts, a.timezone, request.category,
               request.calendar, request.holiday_rule, request.backfill, request.max_lateness, a.contact_id,
               a.timezone_source, stage_broadcast.occurrence, request.id,
               coalesce(CASE WHEN request.approval = 'awaiting' THEN 'awaiting_approval'
                             WHEN tenant.paused THEN 'paused' END, 'pending'),
               CASE WHEN tenant.paused AND request.approval <> 'awaiting' THEN 'tenant' END
        FROM audience a
        JOIN zones z ON z.timezone = a.timezone
        RETURNING fire_at
    )
    SELECT count(*), min(fire_at), max(fire_at) INTO staged, first_at, last_at FROM inserted;
    INSERT INTO reminderd.broadcast_occurrences
        (broadcast_id, occurrence, tenant_id, contacts, first_fire_at, last_fire_at)
    VALUES (request.id, stage_broadcast.occurrence, request.tenant_id, staged, first_at, last_at);
    UPDATE reminderd.broadcast_requests r
    SET next_occurrence = CASE WHEN recurring THEN stage_broadcast.following END,
        ended_at = CASE WHEN NOT recurring OR stage_broadcast.following IS NULL THEN now() END,
        ended_reason = CASE WHEN NOT recurring THEN 'staged'
                            WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
        last_error = NULL,
        updated_at = now()
    WHERE r.id = request.id;
    RETURN staged;
END
$$;
