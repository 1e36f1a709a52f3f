-- 0027 cadences: a call says what the cadence is now (docs/audiences.md, "Cadences").
--   Moving an anchor earlier left the old reminders live: schedule_cadence reported an offset the
--   new anchor puts in the past "skipped: in the past" while the message planned for it (by the
--   earlier call, for the old anchor) stayed pending, and the customer got reminders for a renewal
--   that already happened. The same with fewer offsets: a dropped offset's message stayed. Now a
--   past step cancels the live message of its ref planned for another time (one due at that very
--   time is the step's own, late: it stands), a live prefix:<offset> message whose offset is no
--   longer listed is cancelled (a row of its own in the answer), each in the trail with its reason;
--   the answer gains outcome (scheduled, unchanged, replaced, skipped, cancelled) and cancelled_id
--   (the message the call cancelled or replaced).
-- Rows written before: unchanged; the next call for a cadence tidies it.
-- Run by migrations/versions/0027_cadence_replaces.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

DROP FUNCTION reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text, text, text,
                                         text, text, text, interval, integer);

-- Messages at offsets around an anchor instant (a renewal, an appointment), each at a local wall
-- time in the contact's zone (at_local; or the anchor's own time of day), refs prefix:-30d and so
-- on, cancellable together with cancel_matching(tenant, 'prefix:%'). The call says what the
-- cadence is now (migration 0027): the same call again returns the same messages ('unchanged');
-- a new anchor replaces them ('replaced', cancelled_id the message it replaced); an offset
-- already past creates nothing ('skipped'), and cancels the live message of its ref that was
-- planned for another time ('cancelled'; an earlier anchor must not leave reminders for a renewal
-- that already happened); a live prefix:<offset> message whose offset the call no longer lists
-- is cancelled too (a row of its own: 'cancelled', with that message's times). Each cancellation
-- is in the message's trail with its reason.
CREATE FUNCTION reminderd.schedule_cadence(
    tenant_id text, ref_prefix text, anchor timestamptz,
    offsets interval[] DEFAULT '{-30 days,-7 days,-1 day}', at_local time DEFAULT NULL,
    contact_id text DEFAULT NULL, payload jsonb DEFAULT '{}', timezone text DEFAULT NULL,
    callback_url text DEFAULT NULL, category text DEFAULT 'transactional', calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS TABLE (ref_id text, message_id bigint, fire_at timestamptz, local_time timestamp, skipped text,
                 outcome text, cancelled_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    zone text;
    step interval;
    wall timestamp;
    refs text[] := '{}';
    live record;
    known bigint[];
BEGIN
    PERFORM reminderd.check_tenant(schedule_cadence.tenant_id);
    IF coalesce(schedule_cadence.ref_prefix, '') = '' OR schedule_cadence.anchor IS NULL
       OR coalesce(cardinality(schedule_cadence.offsets), 0) = 0 THEN
        RAISE EXCEPTION 'a cadence needs a ref_prefix, an anchor and at least one offset'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Times that are no time (migration 0021), before any arithmetic on them: an anchor that is not
    -- finite, an offset past what a timestamp holds.
    IF NOT isfinite(schedule_cadence.anchor) THEN
        PERFORM reminderd.refuse_infinite_time('anchor', schedule_cadence.anchor::text,
                                               format('cadence "%s" of tenant "%s"', schedule_cadence.ref_prefix,
                                                      schedule_cadence.tenant_id));
    END IF;
    SELECT o INTO step FROM unnest(schedule_cadence.offsets) AS o
    WHERE o NOT BETWEEN interval '-200000 years' AND interval '200000 years'
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'offset % of cadence "%" of tenant "%" takes it out of the range of time', step,
            schedule_cadence.ref_prefix, schedule_cadence.tenant_id
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Give offsets of days or weeks from the anchor, like -30 days, -7 days, -1 day.';
    END IF;
    SELECT z.zone INTO zone
    FROM reminderd.message_timezone(schedule_cadence.tenant_id, schedule_cadence.contact_id, schedule_cadence.timezone) AS z;
    FOREACH step IN ARRAY schedule_cadence.offsets LOOP
        wall := reminderd.wall_time(schedule_cadence.anchor, zone) + step;
        IF schedule_cadence.at_local IS NOT NULL THEN
            wall := wall::date + schedule_cadence.at_local;
        END IF;
        ref_id := schedule_cadence.ref_prefix || ':' || reminderd.offset_label(step);
        local_time := wall;
        fire_at := reminderd.local_instant(wall, zone);
        cancelled_id := NULL;
        refs := refs || ref_id;
        PERFORM pg_advisory_xact_lock(hashtextextended(schedule_cadence.tenant_id || chr(31) || ref_id, 0));
        SELECT m.id, coalesce(m.scheduled_for, m.fire_at) AS due INTO live
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = schedule_cadence.tenant_id AND m.ref_id = schedule_cadence.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
        IF fire_at <= now() THEN
            message_id := NULL;
            skipped := 'in the past';
            outcome := 'skipped';
            -- Its live message, if it was planned for another time (an earlier anchor), is cancelled;
            -- one due at this very time is this step's own message, late (the same call again): it
            -- stands, and the daemon sends it under its backfill policy.
            IF live.id IS NOT NULL AND live.due IS DISTINCT FROM fire_at THEN
                PERFORM reminderd.cancel_live(schedule_cadence.tenant_id, ref_id,
                    format('cancelled: cadence %s now puts %s in the past (anchor %s)', schedule_cadence.ref_prefix,
                           ref_id, to_char(schedule_cadence.anchor AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
                outcome := 'cancelled';
                cancelled_id := live.id;
            ELSIF live.id IS NOT NULL THEN
                message_id := live.id;
                skipped := NULL;
                outcome := 'unchanged';
            END IF;
        ELSE
            SELECT array_agg(m.id) INTO known
            FROM reminderd.scheduled_messages m
            WHERE m.tenant_id = schedule_cadence.tenant_id AND m.ref_id = schedule_cadence.ref_id;
            message_id := reminderd.schedule(
                schedule_cadence.tenant_id, ref_id, payload => schedule_cadence.payload,
                callback_url => schedule_cadence.callback_url, max_attempts => schedule_cadence.max_attempts,
                local_time => wall, timezone => schedule_cadence.timezone, category => schedule_cadence.category,
                calendar => schedule_cadence.calendar, holiday_rule => schedule_cadence.holiday_rule,
                backfill => schedule_cadence.backfill, max_lateness => schedule_cadence.max_lateness,
                contact_id => schedule_cadence.contact_id);
            skipped := NULL;
            IF message_id = ANY (known) THEN
                outcome := 'unchanged';
            ELSIF live.id IS NOT NULL THEN
                outcome := 'replaced';
                cancelled_id := live.id;
            ELSE
                outcome := 'scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    -- The offsets this call no longer lists: their live messages (refs prefix:<an offset label>,
    -- one-off) are cancelled.
    FOR live IN
        SELECT m.id, m.ref_id, m.fire_at, m.timezone
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = schedule_cadence.tenant_id
          AND starts_with(m.ref_id, schedule_cadence.ref_prefix || ':')
          AND substr(m.ref_id, length(schedule_cadence.ref_prefix) + 2)
              ~ '^([+-]([0-9]+mo)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?|[+-]0)$'
          AND m.ref_id <> ALL (refs)
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
          AND m.cron IS NULL AND m.rrule IS NULL
        ORDER BY m.fire_at, m.id
    LOOP
        PERFORM reminderd.cancel_live(schedule_cadence.tenant_id, live.ref_id,
            format('cancelled: cadence %s no longer lists offset %s', schedule_cadence.ref_prefix,
                   substr(live.ref_id, length(schedule_cadence.ref_prefix) + 2)));
        ref_id := live.ref_id;
        message_id := NULL;
        fire_at := live.fire_at;
        local_time := reminderd.wall_time(live.fire_at, live.timezone);
        skipped := 'not in the cadence any more';
        outcome := 'cancelled';
        cancelled_id := live.id;
        RETURN NEXT;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text,
                                                      text, text, text, text, text, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text,
                                                     text, text, text, text, text, interval, integer)
TO reminderd_app, reminderd_daemon, reminderd_api;
