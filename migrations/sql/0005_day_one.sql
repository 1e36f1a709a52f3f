-- 0005 day one: nothing silently accepted. A message already too late for its backfill policy (or
-- a recurring one whose `until` is past) is refused at insert instead of expiring unseen; errors a
-- newcomer meets read as sentences (a duplicate tenant, a holiday of an unknown tenant, a bad
-- callback URL or cron); a recurring row may be given its first fire_at when it is scheduled.
-- Run by migrations/versions/0005_day_one.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Settings the database's checks read: the daemon's defaults for rows without their own
-- (REMINDERD_BACKFILL, REMINDERD_MAX_LATENESS, REMINDERD_LOOKBACK). Keep them equal to the
-- daemon's; it warns at start when they differ.
INSERT INTO reminderd.config VALUES ('backfill', 'send'), ('max_lateness', '30 minutes'), ('lookback', '1 day')
ON CONFLICT (key) DO NOTHING;

-- Functions: checks shared by the API and the triggers -------------------------------------------

-- A duration for people, as the daemon writes them (reminderd/schedule/timing.py): 45s, 30m,
-- 6h 5m, 2d 3h.
CREATE FUNCTION reminderd.duration_text(duration interval) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN parts = '' OR (s > 0 AND d = 0 AND h = 0) THEN ltrim(parts || ' ' || s || 's') ELSE parts END
    FROM (SELECT d, h, s,
                 concat_ws(' ', CASE WHEN d > 0 THEN d || 'd' END, CASE WHEN h > 0 THEN h || 'h' END,
                           CASE WHEN m > 0 THEN m || 'm' END) AS parts
          FROM (SELECT total / 86400 AS d, total % 86400 / 3600 AS h, total % 3600 / 60 AS m, total % 60 AS s
                FROM (SELECT floor(extract(epoch FROM duration))::bigint AS total) AS seconds) AS split) AS said
$$;

-- Refuse a one-off that is already too late to be sent: the daemon would expire it at once. The
-- daemon's rule (reminderd/schedule/timing.py, arrival()): nothing at or beyond the lookback is
-- sent; under backfill 'send' a message at most max_lateness late is, under 'skip' at most a
-- minute (or max_lateness if smaller), under 'latest' anything inside the lookback. Policy and
-- lateness are the row's, else reminderd.config's. A message slightly late is accepted: sent now.
CREATE FUNCTION reminderd.check_arrival(
    tenant_id text, ref_id text, fire_at timestamptz, backfill text, max_lateness interval
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    late     interval := now() - check_arrival.fire_at;
    policy   text;
    lateness interval;
    lookback interval;
    allowed  interval;
    due      text := to_char(check_arrival.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
BEGIN
    IF check_arrival.fire_at IS NULL OR late <= interval '0' THEN
        RETURN;
    END IF;
    policy := coalesce(check_arrival.backfill, (SELECT value FROM reminderd.config WHERE key = 'backfill'), 'send');
    lateness := coalesce(check_arrival.max_lateness,
                         (SELECT value::interval FROM reminderd.config WHERE key = 'max_lateness'), interval '30 minutes');
    lookback := coalesce((SELECT value::interval FROM reminderd.config WHERE key = 'lookback'), interval '1 day');
    IF late >= lookback THEN
        RAISE EXCEPTION 'message % / % is too late to send: due %, % ago', check_arrival.tenant_id,
            check_arrival.ref_id, due, reminderd.duration_text(late)
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Nothing older than the lookback (%s: reminderd.config ''lookback'', '
                                  'REMINDERD_LOOKBACK) is ever sent, whatever the backfill policy; it '
                                  'would expire at once.', reminderd.duration_text(lookback)),
                  HINT = 'Schedule it for now or later.';
    END IF;
    allowed := CASE policy WHEN 'latest' THEN NULL
                           WHEN 'skip' THEN least(lateness, interval '60 seconds')
                           ELSE lateness END;
    IF late > allowed THEN
        RAISE EXCEPTION 'message % / % is too late to send: due %, % ago', check_arrival.tenant_id,
            check_arrival.ref_id, due, reminderd.duration_text(late)
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('backfill=%s sends a one-off at most %s late (%s); it would expire at once.',
                                  policy, reminderd.duration_text(allowed),
                                  CASE WHEN policy = 'skip' THEN 'on time: a minute, or max_lateness if smaller'
                                       WHEN check_arrival.max_lateness IS NOT NULL THEN 'its max_lateness'
                                       ELSE 'reminderd.config ''max_lateness'', REMINDERD_MAX_LATENESS' END),
                  HINT = 'Schedule it for now or later, or give it a larger max_lateness (or backfill '
                         '''latest'', up to the lookback) to send it this late.';
    END IF;
END
$$;

-- The first occurrence of a recurrence after `after`, computed in SQL: the seam through which
-- schedule_cron() and schedule_rrule() give a new recurring row its first fire_at. NULL for now:
-- the daemon plans it (reminderd/schedule, the code that times every later occurrence), within a
-- poll interval; the CLI passes the first fire_at it computed with that code. Once
-- reminderd.next_cron_occurrence(cron, timezone, after) exists, cron rows get it here.
CREATE FUNCTION reminderd.first_occurrence(cron text, rrule text, timezone text, after timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT NULL::timestamptz
$$;

-- Functions: scheduling ---------------------------------------------------------------------------

-- schedule_recurring gains first_fire_at: the row's first fire_at, when the caller computed it
-- (the CLI, with the daemon's code); else reminderd.first_occurrence(), else the daemon plans it.
DROP FUNCTION reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                           text, text, text, interval, integer);
CREATE FUNCTION reminderd.schedule_recurring(
    tenant_id text, ref_id text, cron text, rrule text, timezone text,
    payload jsonb, callback_url text, until timestamptz, max_runs integer, category text,
    calendar text, holiday_rule text, backfill text, max_lateness interval, max_attempts integer,
    first_fire_at timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
    due    timestamptz;
BEGIN
    IF num_nonnulls(schedule_recurring.cron, schedule_recurring.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of cron and rrule (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_tenant(schedule_recurring.tenant_id);
    IF schedule_recurring.first_fire_at < now() - interval '1 minute' THEN
        RAISE EXCEPTION 'first_fire_at % of message % / % is in the past',
            to_char(schedule_recurring.first_fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            schedule_recurring.tenant_id, schedule_recurring.ref_id
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Leave it NULL: the first occurrence after now is planned for you.';
    END IF;
    due := coalesce(schedule_recurring.first_fire_at,
                    reminderd.first_occurrence(schedule_recurring.cron, schedule_recurring.rrule,
                                               coalesce(schedule_recurring.timezone, 'UTC'), now()));
    IF due > schedule_recurring.until THEN
        RAISE EXCEPTION 'message % / % has no occurrence before its until %', schedule_recurring.tenant_id,
            schedule_recurring.ref_id,
            to_char(schedule_recurring.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Its first occurrence would be %s: it would finish without sending anything.',
                                  to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  HINT = 'Give a later until, or none.';
    END IF;
    PERFORM reminderd.cancel_live(schedule_recurring.tenant_id, schedule_recurring.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, cron, rrule, timezone, payload, callback_url, until, max_runs, category,
         calendar, holiday_rule, backfill, max_lateness, max_attempts, fire_at)
    VALUES (schedule_recurring.tenant_id, schedule_recurring.ref_id, schedule_recurring.cron,
            schedule_recurring.rrule, coalesce(schedule_recurring.timezone, 'UTC'),
            coalesce(schedule_recurring.payload, '{}'), schedule_recurring.callback_url,
            schedule_recurring.until, schedule_recurring.max_runs,
            coalesce(schedule_recurring.category, 'transactional'), schedule_recurring.calendar,
            schedule_recurring.holiday_rule, schedule_recurring.backfill, schedule_recurring.max_lateness,
            schedule_recurring.max_attempts, due)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- reschedule refuses a time already too late for the message's backfill policy, as insert does.
CREATE OR REPLACE FUNCTION reminderd.reschedule(tenant_id text, ref_id text, fire_at timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    moved   integer;
    message record;
BEGIN
    PERFORM reminderd.check_tenant(reschedule.tenant_id);
    IF reschedule.fire_at IS NULL THEN
        RAISE EXCEPTION 'fire_at must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_fire_at(reschedule.fire_at);
    FOR message IN
        SELECT m.backfill, m.max_lateness FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = reschedule.tenant_id AND m.ref_id = reschedule.ref_id
          AND m.status IN ('pending', 'paused') AND m.cron IS NULL AND m.rrule IS NULL
    LOOP
        PERFORM reminderd.check_arrival(reschedule.tenant_id, reschedule.ref_id, reschedule.fire_at,
                                        message.backfill, message.max_lateness);
    END LOOP;
    UPDATE reminderd.scheduled_messages
    SET fire_at = reschedule.fire_at, scheduled_for = NULL, attempts = 0, last_event = 'rescheduled',
        last_error = NULL, updated_at = now()
    WHERE tenant_id = reschedule.tenant_id AND ref_id = reschedule.ref_id
      AND status IN ('pending', 'paused');
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

-- Functions: what the triggers run ---------------------------------------------------------------

-- As before, plus: a callback_url that is not http(s) and a cron of the wrong shape are named in a
-- sentence (the error carries the constraint's name, callback_url_is_http or cron_shape, as the
-- constraint's own would).
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT reminderd.is_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%" for message % / %', NEW.timezone, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    IF NEW.callback_url !~* '^https?://[^/?#[:space:]]+' THEN
        RAISE EXCEPTION 'callback_url "%" of message % / % is not an http(s) URL', NEW.callback_url,
            NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'callback_url_is_http',
                  HINT = 'Give an absolute http:// or https:// URL, like https://example.com/hooks.';
    END IF;
    IF NEW.cron !~* '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$' THEN
        RAISE EXCEPTION 'cron "%" of message % / % is not five fields (minute hour day month weekday)',
            NEW.cron, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'cron_shape',
                  HINT = 'Five fields like ''0 9 * * 1-5'', six with a leading seconds field, or @hourly, @daily, '
                         '@weekly, @monthly, @yearly.';
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

-- A row that would be dead on arrival is refused: a one-off already too late for its backfill
-- policy (check_arrival), a recurring row whose until is already past.
CREATE FUNCTION reminderd.refuse_dead_on_arrival() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('pending', 'paused') THEN
        IF NEW.cron IS NULL AND NEW.rrule IS NULL THEN
            PERFORM reminderd.check_arrival(NEW.tenant_id, NEW.ref_id, NEW.fire_at, NEW.backfill, NEW.max_lateness);
        ELSIF NEW.until <= now() THEN
            RAISE EXCEPTION 'message % / % ends before it starts: its until % is already past', NEW.tenant_id,
                NEW.ref_id, to_char(NEW.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                USING ERRCODE = 'datetime_field_overflow',
                      DETAIL = 'A recurring message sends nothing after its until; this one would finish at once.',
                      HINT = 'Give an until in the future, or none.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- A tenant is checked with sentences before its constraints are (the errors carry their names):
-- one that already exists, an id, callback_url or calendar of the wrong shape.
CREATE FUNCTION reminderd.validate_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.id) THEN
        RAISE EXCEPTION 'tenant "%" already exists', NEW.id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'tenants_pkey',
                  HINT = 'Change it with UPDATE reminderd.tenants (or reminderd tenant set), or choose another id.';
    END IF;
    IF NEW.id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'tenant id "%" is not allowed', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_id_format',
                  DETAIL = 'A tenant id is letters, digits and _ . : -, starts with a letter or digit, and has at most 128 characters.';
    END IF;
    IF NEW.callback_url !~* '^https?://[^/?#[:space:]]+' THEN
        RAISE EXCEPTION 'callback_url "%" of tenant "%" is not an http(s) URL', NEW.callback_url, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_callback_url_is_http',
                  HINT = 'Give an absolute http:// or https:// URL, like https://example.com/hooks.';
    END IF;
    IF NEW.calendar !~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$' THEN
        RAISE EXCEPTION 'calendar "%" of tenant "%" is not a holiday calendar code', NEW.calendar, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_calendar_format',
                  HINT = 'A country code such as IN or GB, or a subdivision such as US-CA (the holidays package''s codes).';
    END IF;
    RETURN NEW;
END
$$;

-- A tenant's own day off names a tenant that exists (as reminderd tenant set says it: "unknown
-- tenant"), and has a name.
CREATE FUNCTION reminderd.validate_holiday() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenant_holidays_tenant_id_fkey',
                  HINT = 'Create it first (reminderd tenant add), and check this role acts for it.';
    END IF;
    IF NEW.name = '' THEN
        RAISE EXCEPTION 'the holiday % of tenant "%" has an empty name', NEW.day, NEW.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holiday_name_not_empty',
                  HINT = 'Say what the day is, e.g. ''Company day''.';
    END IF;
    RETURN NEW;
END
$$;

REVOKE EXECUTE ON FUNCTION
    reminderd.duration_text(interval),
    reminderd.check_arrival(text, text, timestamptz, text, interval),
    reminderd.first_occurrence(text, text, text, timestamptz),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz),
    reminderd.refuse_dead_on_arrival(),
    reminderd.validate_tenant(),
    reminderd.validate_holiday()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.duration_text(interval),
    reminderd.check_arrival(text, text, timestamptz, text, interval),
    reminderd.first_occurrence(text, text, text, timestamptz),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz),
    reminderd.refuse_dead_on_arrival(),
    reminderd.validate_tenant(),
    reminderd.validate_holiday()
TO reminderd_app, reminderd_daemon;

-- Triggers ---------------------------------------------------------------------------------------

-- Only rows already due at insert can be dead on arrival: the WHEN clause spares every other row
-- the function call.
CREATE TRIGGER scheduled_messages_arrival
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.fire_at <= now() OR NEW.until <= now())
    EXECUTE FUNCTION reminderd.refuse_dead_on_arrival();
DROP TRIGGER scheduled_messages_validate ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_validate
    BEFORE INSERT OR UPDATE OF timezone, callback_url, tenant_id, rrule, cron ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_message();
CREATE TRIGGER tenants_validate
    BEFORE INSERT OR UPDATE OF id, callback_url, calendar ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_tenant();
CREATE TRIGGER tenant_holidays_validate
    BEFORE INSERT OR UPDATE OF tenant_id, name ON reminderd.tenant_holidays
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_holiday();
