-- 0003 time done right: seconds in cron, RRULE, end conditions, local wall times, holiday calendars,
-- quiet hours by category, and a backfill policy per message.
-- Run by migrations/versions/0003_time.py in one transaction. History: once released, never edited;
-- a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Messages ---------------------------------------------------------------------------------------
ALTER TABLE reminderd.scheduled_messages
    DROP CONSTRAINT cron_has_five_fields,
    ADD CONSTRAINT cron_shape CHECK (
        cron ~* '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$'),
    -- An RFC 5545 recurrence: an RRULE line, optionally DTSTART, EXDATE and RDATE lines, all wall
    -- times in the row's timezone. Stored beside cron as the alternative recurrence.
    ADD COLUMN rrule text CONSTRAINT rrule_has_freq CHECK (rrule ~* '(^|\n)\s*(RRULE:)?FREQ='),
    ADD CONSTRAINT one_recurrence CHECK (cron IS NULL OR rrule IS NULL),
    DROP CONSTRAINT one_off_needs_fire_at,
    ADD CONSTRAINT one_off_needs_fire_at CHECK (cron IS NOT NULL OR rrule IS NOT NULL OR fire_at IS NOT NULL),
    -- End conditions of a recurring row: past `until`, or after `max_runs` occurrences fired, it
    -- ends 'finished'. runs counts occurrences fired (delivered, or given up after retries).
    ADD COLUMN until timestamptz,
    ADD COLUMN max_runs integer CONSTRAINT max_runs_positive CHECK (max_runs > 0),
    ADD COLUMN runs integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT end_conditions_need_recurrence CHECK (
        (until IS NULL AND max_runs IS NULL) OR cron IS NOT NULL OR rrule IS NOT NULL),
    -- Quiet hours hold back every category except the tenant's exempt ones (transactional).
    ADD COLUMN category text NOT NULL DEFAULT 'transactional'
        CONSTRAINT category_format CHECK (category ~ '^[a-z][a-z0-9_-]{0,31}$'),
    -- Holidays: a country or country-subdivision code of the `holidays` package (IN, US-CA, GB);
    -- NULL takes the tenant's. holiday_rule NULL takes the tenant's too.
    ADD COLUMN calendar text CONSTRAINT calendar_format CHECK (calendar ~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$'),
    ADD COLUMN holiday_rule text CONSTRAINT holiday_rule_is_known CHECK (holiday_rule IN ('skip', 'send')),
    -- After an outage: send (if at most max_lateness late), latest (only the most recent missed
    -- occurrence), skip (nothing late). NULL takes REMINDERD_BACKFILL / REMINDERD_MAX_LATENESS.
    ADD COLUMN backfill text CONSTRAINT backfill_is_known CHECK (backfill IN ('send', 'latest', 'skip')),
    ADD COLUMN max_lateness interval CONSTRAINT max_lateness_not_negative CHECK (max_lateness >= interval '0'),
    DROP CONSTRAINT status_is_known,
    ADD CONSTRAINT status_is_known CHECK (
        status IN ('pending', 'picked', 'sent', 'dead', 'cancelled', 'paused', 'expired', 'finished'));

COMMENT ON COLUMN reminderd.scheduled_messages.status IS
    'pending → picked → sent | dead; recurring rows go back to pending until finished '
    '(until passed, max_runs reached, RRULE exhausted); also cancelled, paused, expired (missed).';

DROP INDEX reminderd.scheduled_messages_finished;
CREATE INDEX scheduled_messages_finished ON reminderd.scheduled_messages (updated_at)
    WHERE status IN ('sent', 'cancelled', 'expired', 'dead', 'finished');

-- Tenants: default calendar and holiday rule, quiet hours ----------------------------------------
ALTER TABLE reminderd.tenants
    ADD COLUMN calendar text CONSTRAINT tenant_calendar_format CHECK (calendar ~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$'),
    ADD COLUMN holiday_rule text NOT NULL DEFAULT 'skip'
        CONSTRAINT tenant_holiday_rule_is_known CHECK (holiday_rule IN ('skip', 'send')),
    -- A daily window of the recipient's wall clock (the message's timezone); it may wrap midnight.
    ADD COLUMN quiet_start time,
    ADD COLUMN quiet_end time,
    ADD CONSTRAINT quiet_hours_complete CHECK (
        (quiet_start IS NULL AND quiet_end IS NULL) OR quiet_start <> quiet_end),
    ADD COLUMN quiet_exempt text[] NOT NULL DEFAULT '{transactional}';
GRANT SELECT (calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt) ON reminderd.tenants
    TO reminderd_app, reminderd_readonly;

-- A tenant's own days off, on top of its calendar's public holidays.
CREATE TABLE reminderd.tenant_holidays (
    tenant_id text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    day       date NOT NULL,
    name      text NOT NULL DEFAULT 'holiday' CONSTRAINT holiday_name_not_empty CHECK (name <> ''),
    PRIMARY KEY (tenant_id, day)
);
ALTER TABLE reminderd.tenant_holidays ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_own_tenants ON reminderd.tenant_holidays TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY read_all ON reminderd.tenant_holidays FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY daemon_all ON reminderd.tenant_holidays TO reminderd_daemon USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.tenant_holidays TO reminderd_app, reminderd_daemon;
GRANT SELECT ON reminderd.tenant_holidays TO reminderd_readonly;

-- Wall times --------------------------------------------------------------------------------------
-- The instant at which the clock in `timezone` first reads `local_time`; a wall time skipped by a
-- forward jump happens at the jump. The same rule as the daemon's (reminderd/schedule/wallclock.py).
-- PostgreSQL's own `local_time AT TIME ZONE tz` picks the later of a repeated time and moves a
-- skipped one past the gap by its length, so it is not used alone.
CREATE FUNCTION reminderd.local_instant(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    probe      timestamptz := local_time AT TIME ZONE 'UTC';
    offset_a   interval;
    offset_b   interval;
    first_try  timestamptz;
    second_try timestamptz;
    lo         timestamptz;
    hi         timestamptz;
    mid        timestamptz;
BEGIN
    IF NOT reminderd.is_timezone(timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%"', timezone USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    -- The offsets in force a day either side; the wall time is read under each.
    offset_a := (probe - interval '1 day') AT TIME ZONE timezone - (probe - interval '1 day') AT TIME ZONE 'UTC';
    offset_b := (probe + interval '1 day') AT TIME ZONE timezone - (probe + interval '1 day') AT TIME ZONE 'UTC';
    first_try := (local_time - offset_a) AT TIME ZONE 'UTC';
    second_try := (local_time - offset_b) AT TIME ZONE 'UTC';
    IF first_try AT TIME ZONE timezone = local_time AND second_try AT TIME ZONE timezone = local_time THEN
        RETURN least(first_try, second_try);
    ELSIF first_try AT TIME ZONE timezone = local_time THEN
        RETURN first_try;
    ELSIF second_try AT TIME ZONE timezone = local_time THEN
        RETURN second_try;
    END IF;
    -- Skipped: the jump lies between the two tries; find the second at which the offset changes.
    lo := least(first_try, second_try);
    hi := greatest(first_try, second_try);
    WHILE hi - lo > interval '1 second' LOOP
        mid := date_trunc('second', lo + (hi - lo) / 2);
        IF mid AT TIME ZONE timezone - mid AT TIME ZONE 'UTC' = lo AT TIME ZONE timezone - lo AT TIME ZONE 'UTC' THEN
            lo := mid;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    RETURN hi;
END
$$;

-- Validation --------------------------------------------------------------------------------------
-- As before, plus: an RRULE without DTSTART is anchored at the local midnight of the day it was
-- written, so INTERVAL counts from a fixed day and times default to 00:00 (stored, so a DBA sees it).
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT reminderd.is_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%" for message % / %', NEW.timezone, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
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
        NEW.rrule := 'DTSTART:' || to_char(date_trunc('day', now() AT TIME ZONE NEW.timezone), 'YYYYMMDD"T"HH24MISS')
                     || E'\n' || btrim(NEW.rrule, E' \t\r\n');
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER scheduled_messages_validate ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_validate
    BEFORE INSERT OR UPDATE OF timezone, callback_url, tenant_id, rrule ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_message();

-- Resumed recurring rows (cron or RRULE) are re-planned from now.
CREATE OR REPLACE FUNCTION reminderd.resume_rows(tenant_id text, ref_id text, scope text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    resumed integer;
BEGIN
    UPDATE reminderd.scheduled_messages
    SET status = 'pending', paused_by = NULL, last_event = 'resumed', updated_at = now(),
        fire_at = CASE WHEN cron IS NOT NULL OR rrule IS NOT NULL THEN NULL ELSE fire_at END,
        scheduled_for = CASE WHEN cron IS NOT NULL OR rrule IS NOT NULL THEN NULL ELSE scheduled_for END,
        attempts = CASE WHEN cron IS NOT NULL OR rrule IS NOT NULL THEN 0 ELSE attempts END
    WHERE tenant_id = resume_rows.tenant_id
      AND (resume_rows.ref_id IS NULL OR ref_id = resume_rows.ref_id)
      AND status = 'paused' AND paused_by = resume_rows.scope;
    GET DIAGNOSTICS resumed = ROW_COUNT;
    RETURN resumed;
END
$$;

CREATE OR REPLACE FUNCTION reminderd.prune(
    keep_finished interval, keep_dead interval, keep_history interval, batch integer DEFAULT 1000
) RETURNS TABLE (messages integer, deliveries integer, events integer)
LANGUAGE plpgsql AS $$
BEGIN
    messages := 0; deliveries := 0; events := 0;
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.prune')) THEN
        RETURN NEXT;  -- another daemon is pruning
        RETURN;
    END IF;
    DELETE FROM reminderd.scheduled_messages m
    WHERE m.id IN (
        SELECT id FROM reminderd.scheduled_messages
        WHERE (status IN ('sent', 'cancelled', 'expired', 'finished') AND updated_at < now() - keep_finished)
           OR (status = 'dead' AND updated_at < now() - keep_dead)
        LIMIT batch
    );
    GET DIAGNOSTICS messages = ROW_COUNT;
    DELETE FROM reminderd.deliveries d
    WHERE d.id IN (SELECT id FROM reminderd.deliveries WHERE created_at < now() - keep_history
                   ORDER BY created_at LIMIT batch);
    GET DIAGNOSTICS deliveries = ROW_COUNT;
    DELETE FROM reminderd.events e
    WHERE e.id IN (SELECT id FROM reminderd.events WHERE created_at < now() - keep_history
                   ORDER BY created_at LIMIT batch);
    GET DIAGNOSTICS events = ROW_COUNT;
    RETURN NEXT;
END
$$;

-- The SQL API: scheduling with the new options ---------------------------------------------------
-- One-off: exactly one of fire_at (an instant), fire_in (a delay) or local_time (a wall time in
-- `timezone`, e.g. '2026-12-24 09:00' in Asia/Kolkata). `timezone` is the recipient's: quiet
-- hours and holidays are read in it.
DROP FUNCTION reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer);
CREATE FUNCTION reminderd.schedule(
    tenant_id text, ref_id text, fire_at timestamptz DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    fire_in interval DEFAULT NULL, max_attempts integer DEFAULT NULL,
    local_time timestamp DEFAULT NULL, timezone text DEFAULT 'UTC',
    category text DEFAULT 'transactional', calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL,
    backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due      timestamptz;
    existing bigint;
    new_id   bigint;
BEGIN
    IF num_nonnulls(schedule.fire_at, schedule.fire_in, schedule.local_time) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of fire_at (an instant), fire_in (a delay) and local_time (a wall time in timezone)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schedule.fire_in < interval '0' THEN
        RAISE EXCEPTION 'fire_in must not be negative (got %)', schedule.fire_in
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM reminderd.check_tenant(schedule.tenant_id);
    due := coalesce(schedule.fire_at, now() + schedule.fire_in,
                    reminderd.local_instant(schedule.local_time, coalesce(schedule.timezone, 'UTC')));
    PERFORM reminderd.check_fire_at(due);
    -- A retried call (the same request again) returns the message the first call created, even if
    -- it is in flight or already sent, so a client that timed out and retries never causes a
    -- second send. Anything else replaces.
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule.tenant_id || chr(31) || schedule.ref_id, 0));
    SELECT m.id INTO existing
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule.tenant_id AND m.ref_id = schedule.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'sent')
      AND m.cron IS NULL AND m.rrule IS NULL
      AND m.payload = coalesce(schedule.payload, '{}')
      AND m.callback_url IS NOT DISTINCT FROM schedule.callback_url
      AND m.max_attempts IS NOT DISTINCT FROM schedule.max_attempts
      AND m.timezone = coalesce(schedule.timezone, 'UTC')
      AND m.category = coalesce(schedule.category, 'transactional')
      AND m.calendar IS NOT DISTINCT FROM schedule.calendar
      AND m.holiday_rule IS NOT DISTINCT FROM schedule.holiday_rule
      AND m.backfill IS NOT DISTINCT FROM schedule.backfill
      AND m.max_lateness IS NOT DISTINCT FROM schedule.max_lateness
      AND CASE WHEN schedule.fire_in IS NULL
               THEN coalesce(m.scheduled_for, m.fire_at) = due
               ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                        - extract(epoch FROM schedule.fire_in)) < 1 END
    ORDER BY m.id DESC
    LIMIT 1;
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    PERFORM reminderd.cancel_live(schedule.tenant_id, schedule.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
         holiday_rule, backfill, max_lateness)
    VALUES (schedule.tenant_id, schedule.ref_id, due, coalesce(schedule.payload, '{}'),
            schedule.callback_url, schedule.max_attempts, coalesce(schedule.timezone, 'UTC'),
            coalesce(schedule.category, 'transactional'), schedule.calendar, schedule.holiday_rule,
            schedule.backfill, schedule.max_lateness)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Recurring: exactly one of cron and rrule. Replaces the reference's live row.
CREATE FUNCTION reminderd.schedule_recurring(
    tenant_id text, ref_id text, cron text, rrule text, timezone text,
    payload jsonb, callback_url text, until timestamptz, max_runs integer, category text,
    calendar text, holiday_rule text, backfill text, max_lateness interval, max_attempts integer
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    IF num_nonnulls(schedule_recurring.cron, schedule_recurring.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of cron and rrule (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_tenant(schedule_recurring.tenant_id);
    PERFORM reminderd.cancel_live(schedule_recurring.tenant_id, schedule_recurring.ref_id, 'replaced by a new schedule');
    -- fire_at stays NULL: the daemon plans the first occurrence in the row's timezone.
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, cron, rrule, timezone, payload, callback_url, until, max_runs, category,
         calendar, holiday_rule, backfill, max_lateness, max_attempts)
    VALUES (schedule_recurring.tenant_id, schedule_recurring.ref_id, schedule_recurring.cron,
            schedule_recurring.rrule, coalesce(schedule_recurring.timezone, 'UTC'),
            coalesce(schedule_recurring.payload, '{}'), schedule_recurring.callback_url,
            schedule_recurring.until, schedule_recurring.max_runs,
            coalesce(schedule_recurring.category, 'transactional'), schedule_recurring.calendar,
            schedule_recurring.holiday_rule, schedule_recurring.backfill, schedule_recurring.max_lateness,
            schedule_recurring.max_attempts)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

DROP FUNCTION reminderd.schedule_cron(text, text, text, text, jsonb, text);
CREATE FUNCTION reminderd.schedule_cron(
    tenant_id text, ref_id text, cron text, timezone text DEFAULT 'UTC',
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    until timestamptz DEFAULT NULL, max_runs integer DEFAULT NULL, category text DEFAULT 'transactional',
    calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL,
    max_lateness interval DEFAULT NULL, max_attempts integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF cron IS NULL THEN
        RAISE EXCEPTION 'cron must not be NULL (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN reminderd.schedule_recurring(tenant_id, ref_id, cron, NULL, timezone, payload, callback_url,
        until, max_runs, category, calendar, holiday_rule, backfill, max_lateness, max_attempts);
END
$$;

CREATE FUNCTION reminderd.schedule_rrule(
    tenant_id text, ref_id text, rrule text, timezone text DEFAULT 'UTC',
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    until timestamptz DEFAULT NULL, max_runs integer DEFAULT NULL, category text DEFAULT 'transactional',
    calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL,
    max_lateness interval DEFAULT NULL, max_attempts integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF rrule IS NULL THEN
        RAISE EXCEPTION 'rrule must not be NULL (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN reminderd.schedule_recurring(tenant_id, ref_id, NULL, rrule, timezone, payload, callback_url,
        until, max_runs, category, calendar, holiday_rule, backfill, max_lateness, max_attempts);
END
$$;

GRANT EXECUTE ON FUNCTION
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer),
    reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                            text, interval, integer),
    reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                             text, interval, integer),
    reminderd.local_instant(timestamp, text)
TO reminderd_app, reminderd_daemon;

-- Functions created above got PUBLIC's default EXECUTE: only the grants made here remain.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reminderd FROM PUBLIC;
