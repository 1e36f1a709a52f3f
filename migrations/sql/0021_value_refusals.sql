-- 0021 values refused in sentences, where PostgreSQL's own errors named no row (docs/sql.md,
-- "Errors and SQLSTATEs": a message naming the row, a HINT, a documented SQLSTATE):
--   times that are no time   -infinity, infinity, a delay past what a timestamptz holds (294276 AD):
--                            "cannot subtract infinite timestamps" / "timestamp out of range", or a
--                            row that never fires. Now 22008 naming the message and the field, in
--                            schedule, schedule_recurring (first_fire_at), reschedule, schedule_one
--                            and schedule_set (refused: schedule_many says why), broadcast,
--                            schedule_cadence, and plain INSERT and UPDATE (check_message).
--   CHECK constraints        max_attempts 0, a category of capitals, backfill 'bogus', an rrule
--                            without FREQ, …: "new row … violates check constraint" and a DETAIL of
--                            the row's 40 columns. Now pre-empted by the triggers (admit_message,
--                            validate_message, validate_broadcast_request) with the constraint's
--                            name, 23514, one line naming the message and the value, and a HINT
--                            (check_message, check_message_values); only when a quick test finds
--                            something wrong, so a valid row pays one expression. The constraints stay.
--   phones                   "hello world" was taken as a contact's phone, and gave no zone. Now a
--                            given phone must be +<country code> <number> (reminderd.is_phone):
--                            22023, in upsert_contact_rows (so upsert_contacts) naming the element,
--                            and in the contacts' trigger; phone_timezone reads a vertical tab as the
--                            separator it meant (E'\v' was the letter v).
-- Rows written before, which 0020 took: they stay, and keep moving (a time, a phone is checked when
-- it is written again). Live ones whose time could never be right are repaired at the end: a
-- one-off due at 'infinity' is dead-lettered with the reason (it would never fire, and it broke the
-- claim loop's sleep); a recurring row whose fire_at is not finite is planned again; a wall time
-- that is not finite is dropped (its contact's zone could not change). A one-off due at
-- '-infinity' is left to the expirer.
-- Run by migrations/versions/0021_value_refusals.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- The helpers ----------------------------------------------------------------------------------

DROP FUNCTION reminderd.check_fire_at(timestamptz);  -- now with whose it is, and how it was given

-- Refuse (22008) a time that is not finite (-infinity, infinity: PostgreSQL's own error would be
-- "cannot subtract infinite timestamps", or the row would never fire), in a sentence naming it and
-- whose it is ('fire_at -infinity of message acme / r1 is not a finite time'), the HINT saying what
-- to give instead. `field` names it as its caller took it (fire_at, first_fire_at, local_time,
-- anchor), `shown` is its value as text, `subject` whose it is.
CREATE FUNCTION reminderd.refuse_infinite_time(field text, shown text, subject text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION '% % of % is not a finite time', field, shown, coalesce(subject, 'this call')
        USING ERRCODE = 'datetime_field_overflow',
              HINT = CASE field
                         WHEN 'local_time' THEN 'Give a wall time, like ''2026-12-24 09:00''.'
                         WHEN 'first_fire_at' THEN 'Leave it NULL: the first occurrence after now is planned for you.'
                         WHEN 'anchor' THEN 'Give the time its offsets count from, like a renewal date: '
                                            '''2027-03-01 00:00+00''.'
                         ELSE 'Give a time to send it at, like now() + interval ''1 hour''.' END;
END
$$;

-- Refuse (22008) a fire_at that is not finite (refuse_infinite_time), or further ahead than the
-- horizon (reminderd.config 'horizon'). `subject` says whose it is ('message acme / r1'); `given`
-- how the caller gave it, when not as this instant ('fire_in 1000000 years': a delay that would
-- overflow a timestamptz is refused as beyond the horizon, its caller passing an instant past it).
CREATE FUNCTION reminderd.check_fire_at(fire_at timestamptz, subject text DEFAULT NULL, given text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    horizon interval := (SELECT value::interval FROM reminderd.config WHERE key = 'horizon');
BEGIN
    IF NOT isfinite(fire_at) THEN
        PERFORM reminderd.refuse_infinite_time('fire_at', fire_at::text, subject);
    END IF;
    IF fire_at > now() + horizon THEN
        RAISE EXCEPTION '% is further ahead than the horizon of %',
            coalesce(given, 'fire_at ' || fire_at::text) || coalesce(' of ' || subject, ''), horizon
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'A DBA can change it: UPDATE reminderd.config SET value = ''180 days'' WHERE key = ''horizon''';
    END IF;
END
$$;

-- Refuse a value a CHECK constraint of scheduled_messages would (migration 0021), in a sentence of
-- one line naming it and whose it is ('max_attempts 0 of message acme / r1 is less than 1'): 23514
-- carrying the constraint's name, as the constraint's own error would, with a HINT saying what is
-- allowed, where PostgreSQL's own would name no row and list its 40 columns in a DETAIL. Text
-- values are shown as JSON strings, so a newline in one stays on the line. `subject` says whose
-- they are ('message acme / r1', 'broadcast "bf" of tenant "acme"'); category_constraint names the
-- constraint of the category (a broadcast's is broadcast_category_format). Values the constraints
-- take raise nothing. The triggers call it only when a quick test says a value is wrong, so a valid
-- row never pays for it.
CREATE FUNCTION reminderd.check_message_values(
    subject text, rrule text, max_runs integer, max_attempts integer, category text, calendar text,
    holiday_rule text, backfill text, max_lateness interval, category_constraint text DEFAULT 'category_format'
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF rrule !~* '(^|\n)\s*(RRULE:)?FREQ=' THEN
        RAISE EXCEPTION 'rrule % of % has no FREQ', to_jsonb(rrule)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'rrule_has_freq',
                  HINT = 'An RRULE says how often it repeats, like FREQ=WEEKLY;BYDAY=MO: FREQ is YEARLY, MONTHLY, '
                         'WEEKLY, DAILY, HOURLY, MINUTELY or SECONDLY.';
    END IF;
    IF max_runs < 1 THEN
        RAISE EXCEPTION 'max_runs % of % is less than 1', max_runs, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_runs_positive',
                  HINT = 'Give how many occurrences it sends, at least 1, or NULL for no limit.';
    END IF;
    IF max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts % of % is less than 1', max_attempts, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_attempts_positive',
                  HINT = 'Give at least 1 attempt, or NULL for the daemon''s REMINDERD_MAX_ATTEMPTS.';
    END IF;
    IF category !~ '^[a-z][a-z0-9_-]*$' OR char_length(category) > 32 THEN
        RAISE EXCEPTION 'category % of % is not a category name', to_jsonb(category)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = category_constraint,
                  HINT = 'A category is lower-case letters, digits, _ and -, starting with a letter, at most 32 '
                         'characters, like marketing.';
    END IF;
    IF calendar !~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$' THEN
        RAISE EXCEPTION 'calendar % of % is not a holiday calendar code', to_jsonb(calendar)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'calendar_format',
                  HINT = 'A country code such as IN or GB, or a subdivision such as US-CA (the holidays package''s '
                         'codes); NULL takes the tenant''s.';
    END IF;
    IF holiday_rule NOT IN ('skip', 'send') THEN
        RAISE EXCEPTION 'holiday_rule % of % is not skip or send', to_jsonb(holiday_rule)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holiday_rule_is_known',
                  HINT = 'skip moves a message off its holidays, send sends on them; NULL takes the tenant''s rule.';
    END IF;
    IF backfill NOT IN ('send', 'latest', 'skip') THEN
        RAISE EXCEPTION 'backfill % of % is not send, latest or skip', to_jsonb(backfill)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'backfill_is_known',
                  HINT = 'After an outage: send (what is at most max_lateness late), latest (only the most recent '
                         'missed occurrence) or skip (nothing late); NULL takes REMINDERD_BACKFILL.';
    END IF;
    IF max_lateness < interval '0' THEN
        RAISE EXCEPTION 'max_lateness % of % is negative', max_lateness, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_lateness_not_negative',
                  HINT = 'Give how late it may still be sent, 0 or more, like 30 minutes; NULL takes '
                         'REMINDERD_MAX_LATENESS.';
    END IF;
END
$$;

-- Refuse a message row (`m`, being written; `old`, what it was, for an UPDATE) that its CHECK
-- constraints would, in sentences (23514 and the constraint's name, as check_message_values), and
-- a new fire_at or local_time that is not finite (22008, refuse_infinite_time). The row's shape
-- first (an empty ref, no time to fire at, two recurrences, end conditions of a one-off), then its
-- values. A time written before migration 0021 checked them is left alone (only a changed one is
-- refused), so such a row can still be changed otherwise. Called by admit_message and
-- validate_message when their quick test finds something wrong.
CREATE FUNCTION reminderd.check_message(m reminderd.scheduled_messages, old reminderd.scheduled_messages DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    subject constant text := format('message %s / %s', m.tenant_id, m.ref_id);
BEGIN
    IF m.ref_id = '' THEN
        RAISE EXCEPTION 'a message of tenant "%" has an empty ref_id', m.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ref_id_not_empty',
                  HINT = 'Name it, like booking:b7d2:24h: its ref is how it is cancelled, moved or replaced.';
    END IF;
    IF NOT isfinite(m.fire_at) AND m.fire_at IS DISTINCT FROM old.fire_at THEN
        PERFORM reminderd.refuse_infinite_time('fire_at', m.fire_at::text, subject);
    END IF;
    IF NOT isfinite(m.local_time) AND m.local_time IS DISTINCT FROM old.local_time THEN
        PERFORM reminderd.refuse_infinite_time('local_time', m.local_time::text, subject);
    END IF;
    IF m.cron IS NULL AND m.rrule IS NULL THEN
        IF m.fire_at IS NULL THEN
            RAISE EXCEPTION '% has no fire_at, cron or rrule', subject
                USING ERRCODE = 'check_violation', CONSTRAINT = 'one_off_needs_fire_at',
                      HINT = 'Give a one-off message its fire_at, or a recurring one a cron or an rrule.';
        END IF;
        IF m.until IS NOT NULL OR m.max_runs IS NOT NULL THEN
            RAISE EXCEPTION '% has % but no cron or rrule', subject,
                CASE WHEN m.max_runs IS NULL THEN 'an until' WHEN m.until IS NULL THEN 'a max_runs'
                     ELSE 'an until and a max_runs' END
                USING ERRCODE = 'check_violation', CONSTRAINT = 'end_conditions_need_recurrence',
                      HINT = 'until and max_runs end a recurring message: give it a cron or an rrule, or leave them '
                             'NULL.';
        END IF;
    ELSIF m.cron IS NOT NULL AND m.rrule IS NOT NULL THEN
        RAISE EXCEPTION '% has both a cron and an rrule', subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'one_recurrence',
                  HINT = 'A message recurs by one of them: give the cron or the rrule.';
    END IF;
    PERFORM reminderd.check_message_values(subject, m.rrule, m.max_runs, m.max_attempts, m.category, m.calendar,
                                           m.holiday_rule, m.backfill, m.max_lateness);
END
$$;

-- Is `phone` written as a phone number, +<country code> <number>: a + and then digits (the first
-- not 0, at least three), with the separators reminderd.phone_timezone() reads past anywhere
-- (ASCII white space, parentheses, dots, dashes, slashes: "+44 (0)20 7946-0018")? NULL for NULL.
-- The rule the contacts' trigger and upsert_contact_rows refuse a phone by (migration 0021), and
-- reminderd/contact_files.py checks for the CLI and the HTTP API after writing a national number
-- in E.164. A number written so but not valid is still a phone: its zone falls through.
CREATE FUNCTION reminderd.is_phone(phone text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- E.164 (as the CLI and the API send it) first: without translate(), a quarter of the time.
    SELECT phone ~ '^\+[1-9][0-9]{2,}$' OR translate(phone, E' \t\n\r\f\x0b().-/', '') ~ '^\+[1-9][0-9]{2,}$'
$$;

-- Where times come in ----------------------------------------------------------------------------

-- One-off: exactly one of fire_at (an instant), fire_in (a delay) or local_time (a wall time in
-- `timezone`, e.g. '2026-12-24 09:00' in Asia/Kolkata). `timezone` is the recipient's: quiet
-- hours and holidays are read in it. With contact_id and no timezone, the zone is the contact's
-- (docs/audiences.md); a wall time is kept in local_time, to be placed again if that zone changes.
CREATE OR REPLACE FUNCTION reminderd.schedule(
    tenant_id text, ref_id text, fire_at timestamptz DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    fire_in interval DEFAULT NULL, max_attempts integer DEFAULT NULL,
    local_time timestamp DEFAULT NULL, timezone text DEFAULT NULL,
    category text DEFAULT 'transactional', calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL,
    backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL, contact_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due      timestamptz;
    existing bigint;
    new_id   bigint;
    zone     text;
    source   text;
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
    SELECT z.zone, z.source INTO zone, source
    FROM reminderd.message_timezone(schedule.tenant_id, schedule.contact_id, schedule.timezone) AS z;
    -- Times that are no time, before any arithmetic on them (migration 0021): a wall time that is not
    -- finite, a delay past what a timestamptz holds (294276 AD), refused as beyond the horizon.
    IF NOT isfinite(schedule.local_time) THEN
        PERFORM reminderd.refuse_infinite_time('local_time', schedule.local_time::text,
                                               format('message %s / %s', schedule.tenant_id, schedule.ref_id));
    ELSIF schedule.fire_in > interval '200000 years' THEN
        PERFORM reminderd.check_fire_at(now() + interval '200000 years',
                                        format('message %s / %s', schedule.tenant_id, schedule.ref_id),
                                        format('fire_in %s', schedule.fire_in));
    END IF;
    due := coalesce(schedule.fire_at, now() + schedule.fire_in, reminderd.local_instant(schedule.local_time, zone));
    PERFORM reminderd.check_fire_at(due, format('message %s / %s', schedule.tenant_id, schedule.ref_id));
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
      AND m.timezone = zone
      AND m.contact_id IS NOT DISTINCT FROM schedule.contact_id
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
         holiday_rule, backfill, max_lateness, contact_id, timezone_source, local_time)
    VALUES (schedule.tenant_id, schedule.ref_id, due, coalesce(schedule.payload, '{}'),
            schedule.callback_url, schedule.max_attempts, zone,
            coalesce(schedule.category, 'transactional'), schedule.calendar, schedule.holiday_rule,
            schedule.backfill, schedule.max_lateness, schedule.contact_id, source, schedule.local_time)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Recurring: exactly one of cron and rrule. Replaces the reference's live row. Its first fire_at
-- is first_fire_at when the caller computed it (the CLI, with the daemon's code), else
-- reminderd.first_occurrence() unless a holiday may fall on it, else the daemon plans it. Its
-- timezone and cron are checked first, with the sentences a plain INSERT gets. Given a contact_id
-- (and no timezone), its zone is the contact's, as for schedule().
CREATE OR REPLACE FUNCTION reminderd.schedule_recurring(
    tenant_id text, ref_id text, cron text, rrule text, timezone text,
    payload jsonb, callback_url text, until timestamptz, max_runs integer, category text,
    calendar text, holiday_rule text, backfill text, max_lateness interval, max_attempts integer,
    first_fire_at timestamptz DEFAULT NULL, contact_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id  bigint;
    due     timestamptz;
    zone    text;
    source  text;
    subject text := format('message %s / %s', schedule_recurring.tenant_id, schedule_recurring.ref_id);
    tenant  record;
BEGIN
    IF num_nonnulls(schedule_recurring.cron, schedule_recurring.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of cron and rrule (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_tenant(schedule_recurring.tenant_id);
    SELECT z.zone, z.source INTO zone, source
    FROM reminderd.message_timezone(schedule_recurring.tenant_id, schedule_recurring.contact_id,
                                    schedule_recurring.timezone) AS z;
    PERFORM reminderd.check_timezone(zone, subject);
    PERFORM reminderd.check_cron(schedule_recurring.cron, subject);
    IF NOT isfinite(schedule_recurring.first_fire_at) THEN  -- migration 0021
        PERFORM reminderd.refuse_infinite_time('first_fire_at', schedule_recurring.first_fire_at::text, subject);
    END IF;
    IF schedule_recurring.first_fire_at < now() - interval '1 minute' THEN
        RAISE EXCEPTION 'first_fire_at % of message % / % is in the past',
            to_char(schedule_recurring.first_fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            schedule_recurring.tenant_id, schedule_recurring.ref_id
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Leave it NULL: the first occurrence after now is planned for you.';
    END IF;
    due := coalesce(schedule_recurring.first_fire_at,
                    reminderd.first_occurrence(schedule_recurring.cron, schedule_recurring.rrule, zone, now()));
    IF due > schedule_recurring.until AND schedule_recurring.until > now() THEN  -- past: the insert says so
        RAISE EXCEPTION 'message % / % has no occurrence before its until %', schedule_recurring.tenant_id,
            schedule_recurring.ref_id,
            to_char(schedule_recurring.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Its first occurrence would be %s: it would finish without sending anything.',
                                  to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  HINT = 'Give a later until, or none.';
    END IF;
    -- Holidays (holiday_rule 'skip', the row's or its tenant's) move a first occurrence that falls
    -- on one. SQL knows a tenant's own days off but not public calendars (Python's holidays
    -- package): with a calendar, or a day off on that local day, the daemon's planner times it.
    IF schedule_recurring.first_fire_at IS NULL AND due IS NOT NULL THEN
        SELECT t.calendar, t.holiday_rule INTO tenant
        FROM reminderd.tenants t WHERE t.id = schedule_recurring.tenant_id;
        IF coalesce(schedule_recurring.holiday_rule, tenant.holiday_rule) = 'skip'
           AND (coalesce(schedule_recurring.calendar, tenant.calendar) IS NOT NULL
                OR EXISTS (SELECT FROM reminderd.tenant_holidays h
                           WHERE h.tenant_id = schedule_recurring.tenant_id
                             AND h.day = reminderd.wall_time(due, zone)::date))
        THEN
            due := NULL;
        END IF;
    END IF;
    PERFORM reminderd.cancel_live(schedule_recurring.tenant_id, schedule_recurring.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, cron, rrule, timezone, payload, callback_url, until, max_runs, category,
         calendar, holiday_rule, backfill, max_lateness, max_attempts, fire_at, contact_id, timezone_source)
    VALUES (schedule_recurring.tenant_id, schedule_recurring.ref_id, schedule_recurring.cron,
            schedule_recurring.rrule, zone, coalesce(schedule_recurring.payload, '{}'),
            schedule_recurring.callback_url,
            schedule_recurring.until, schedule_recurring.max_runs,
            coalesce(schedule_recurring.category, 'transactional'), schedule_recurring.calendar,
            schedule_recurring.holiday_rule, schedule_recurring.backfill, schedule_recurring.max_lateness,
            schedule_recurring.max_attempts, due, schedule_recurring.contact_id, source)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

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
    PERFORM reminderd.check_fire_at(reschedule.fire_at, format('message %s / %s', reschedule.tenant_id,
                                                               reschedule.ref_id));
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

-- reminderd.schedule_set() for a batch of one one-off item (POST /v1/messages, when nothing else
-- arrives with it): the same steps, each a statement about one row (no contact, a wall time kept,
-- awaiting approval live, as there). Raises, without saying why, whatever schedule_item() would
-- refuse.
CREATE OR REPLACE FUNCTION reminderd.schedule_one(tenant_id text, one reminderd.schedule_item_v2)
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
    -- A time that is no time (migration 0021: not finite, or a delay past what a timestamptz holds)
    -- stands for infinity here, and is refused below, so that schedule_item says why.
    due := coalesce(one.fire_at,
                    CASE WHEN one.fire_in > interval '200000 years' THEN 'infinity' ELSE now() + one.fire_in END,
                    CASE WHEN NOT isfinite(one.local_time) THEN 'infinity'
                         ELSE reminderd.local_instant(one.local_time, zone) END);
    IF coalesce(one.ref_id, '') = '' OR num_nonnulls(one.fire_at, one.fire_in, one.local_time) <> 1
       OR one.fire_in < interval '0' OR NOT isfinite(due)
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

-- A broadcast: one message per contact of the audience at local_time in each contact's own zone
-- (refs prefix:contact_id), or, with cron or rrule, one such wave per occurrence, each staged by
-- the daemon to the audience as it stands then. Refused whole, with the reason and the counts,
-- when a send would be in the past or beyond the horizon, when the audience is larger than the
-- tenant's broadcast_limit, or when a recurring one fires more often than hourly. Above the
-- tenant's approval_threshold its rows wait as awaiting_approval until another person approves.
-- Calling it again with the same arguments returns the same broadcast. Returns its id.
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
    IF NOT isfinite(broadcast.local_time) THEN  -- migration 0021: before any zone reads it
        PERFORM reminderd.refuse_infinite_time('local_time', broadcast.local_time::text,
                                               format('broadcast "%s" of tenant "%s"', broadcast.ref_prefix,
                                                      broadcast.tenant_id));
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

-- Messages at offsets around an anchor instant (a renewal, an appointment), each at a local wall
-- time in the contact's zone (at_local; or the anchor's own time of day), refs prefix:-30d and so
-- on, cancellable together with cancel_matching(tenant, 'prefix:%'). An offset already past is
-- skipped and says so; the rest are scheduled as reminderd.schedule would (same call again:
-- the same messages).
CREATE OR REPLACE FUNCTION reminderd.schedule_cadence(
    tenant_id text, ref_prefix text, anchor timestamptz,
    offsets interval[] DEFAULT '{-30 days,-7 days,-1 day}', at_local time DEFAULT NULL,
    contact_id text DEFAULT NULL, payload jsonb DEFAULT '{}', timezone text DEFAULT NULL,
    callback_url text DEFAULT NULL, category text DEFAULT 'transactional', calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS TABLE (ref_id text, message_id bigint, fire_at timestamptz, local_time timestamp, skipped text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    zone text;
    step interval;
    wall timestamp;
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
        IF fire_at <= now() THEN
            message_id := NULL;
            skipped := 'in the past';
        ELSE
            message_id := reminderd.schedule(
                schedule_cadence.tenant_id, ref_id, payload => schedule_cadence.payload,
                callback_url => schedule_cadence.callback_url, max_attempts => schedule_cadence.max_attempts,
                local_time => wall, timezone => schedule_cadence.timezone, category => schedule_cadence.category,
                calendar => schedule_cadence.calendar, holiday_rule => schedule_cadence.holiday_rule,
                backfill => schedule_cadence.backfill, max_lateness => schedule_cadence.max_lateness,
                contact_id => schedule_cadence.contact_id);
            skipped := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The triggers' functions, and the columns their triggers fire on ---------------------------------

-- Reject what SQL can check at insert, with a message that names the problem (a callback_url or
-- cron of the wrong shape carries the name of the constraint it pre-empts): a value the row's
-- CHECK constraints would refuse, or a new fire_at or local_time that is not finite
-- (check_message), a new or changed callback_url that is not one (check_callback_url), a timezone
-- or a cron the daemon could not read (check_timezone, check_cron: every field, and that it
-- fires). An RRULE without DTSTART is anchored at the local midnight of the day it was written,
-- so INTERVAL counts from a fixed day and times default to 00:00 (stored, so a DBA sees it).
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_has_default boolean;  -- NULL: no such tenant
BEGIN
    -- The row's CHECK constraints, and a new time that is not finite, in sentences (check_message):
    -- one quick test, true only when something is wrong (migration 0021).
    IF NEW.ref_id = '' OR NEW.max_attempts < 1 OR NEW.max_runs < 1 OR NEW.max_lateness < interval '0'
       OR (NOT isfinite(NEW.fire_at) AND NEW.fire_at IS DISTINCT FROM OLD.fire_at)
       OR (NOT isfinite(NEW.local_time) AND NEW.local_time IS DISTINCT FROM OLD.local_time)
       OR (NEW.cron IS NULL AND NEW.rrule IS NULL AND (NEW.fire_at IS NULL OR NEW.until IS NOT NULL
                                                      OR NEW.max_runs IS NOT NULL))
       OR (NEW.cron IS NOT NULL AND NEW.rrule IS NOT NULL)
       OR NEW.rrule !~* '(^|\n)\s*(RRULE:)?FREQ='
       OR (NEW.category NOT IN ('transactional', 'marketing')
           AND (NEW.category !~ '^[a-z][a-z0-9_-]*$' OR char_length(NEW.category) > 32))
       OR NEW.calendar !~ '^[A-Z][A-Z](-[A-Z0-9]+)?$' OR char_length(NEW.calendar) > 13
       OR NEW.holiday_rule NOT IN ('skip', 'send') OR NEW.backfill NOT IN ('send', 'latest', 'skip')
    THEN
        PERFORM reminderd.check_message(NEW, OLD);
    END IF;
    IF NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN  -- UTC needs no check; NULL: the column's NOT NULL says so
        PERFORM reminderd.check_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
    END IF;
    -- Only a new or changed URL: a row written before 0019 checked URLs keeps moving on.
    IF NEW.callback_url IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.callback_url IS DISTINCT FROM OLD.callback_url) THEN
        PERFORM reminderd.check_callback_url(NEW.callback_url, format('message %s / %s', NEW.tenant_id, NEW.ref_id),
                                             'callback_url_is_http');
    END IF;
    IF NEW.cron IS NOT NULL THEN
        PERFORM reminderd.check_cron(NEW.cron, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
    END IF;
    IF NEW.callback_url IS NULL THEN  -- then the tenant's default is needed: one query
        SELECT t.callback_url IS NOT NULL INTO tenant_has_default FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        IF tenant_has_default IS NULL THEN
            RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it first: reminderd tenant add ID --callback-url URL';
        ELSIF NOT tenant_has_default THEN
            RAISE EXCEPTION 'no callback_url for message % / %: the row has none and tenant "%" has no default',
                NEW.tenant_id, NEW.ref_id, NEW.tenant_id
                USING ERRCODE = 'not_null_violation';
        END IF;
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

-- Admit a new row (trigger scheduled_messages_admit), deciding in this order: refuse a value its
-- CHECK constraints would, or a time that is not finite (check_message, in sentences); refuse it
-- if it is dead on arrival (a one-off already too late, by check_arrival's rule and in its words;
-- a recurring row whose until is past), hold it for a disabled endpoint (as
-- hold_for_disabled_endpoint), hold it for a paused tenant (as hold_for_paused_tenant), refuse a
-- payload over 256 KiB (as check_payload), validate it (as validate_message). A broadcast's rows
-- are held and checked by stage_broadcast for all its rows at once (one staged late follows its
-- backfill policy when claimed): for them only the endpoint hold and the payload size apply. One
-- function, not one trigger each: every call has a fixed cost. The tenant's row is read once, with
-- whether it has a disabled endpoint; reminderd.config only for a one-off already late.
CREATE OR REPLACE FUNCTION reminderd.admit_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    late                interval;  -- a one-off already due: how late (NULL: nothing to check)
    tenant_found        boolean;
    tenant_paused       boolean;
    tenant_url          text;
    endpoint_disabled   boolean := false;
    reason              text;
    policy              text;
    lateness            interval;
    configured_lateness text;
    configured_lookback text;
BEGIN
    IF NEW.broadcast_id IS NULL THEN
        -- The row's CHECK constraints, and a time that is not finite, in sentences (check_message),
        -- before anything reads them (migration 0021). Two quick tests, so that a valid row pays for
        -- no call and a row without options for few column reads: does it set anything a constraint
        -- checks, then is something wrong (calendar's {1,10} spelt as a cheaper test)?
        IF num_nonnulls(NEW.max_attempts, NEW.max_runs, NEW.max_lateness, NEW.local_time, NEW.calendar,
                        NEW.holiday_rule, NEW.backfill, NEW.rrule, NEW.until) > 0
           OR NEW.category NOT IN ('transactional', 'marketing') OR NEW.ref_id = ''
           OR NOT isfinite(NEW.fire_at) OR (NEW.fire_at IS NULL AND NEW.cron IS NULL)
        THEN
            IF NEW.ref_id = '' OR NEW.max_attempts < 1 OR NEW.max_runs < 1 OR NEW.max_lateness < interval '0'
               OR NOT isfinite(NEW.fire_at) OR NOT isfinite(NEW.local_time)
               OR (NEW.cron IS NULL AND NEW.rrule IS NULL AND (NEW.fire_at IS NULL OR NEW.until IS NOT NULL
                                                              OR NEW.max_runs IS NOT NULL))
               OR (NEW.cron IS NOT NULL AND NEW.rrule IS NOT NULL)
               OR NEW.rrule !~* '(^|\n)\s*(RRULE:)?FREQ='
               OR (NEW.category NOT IN ('transactional', 'marketing')
                   AND (NEW.category !~ '^[a-z][a-z0-9_-]*$' OR char_length(NEW.category) > 32))
               OR NEW.calendar !~ '^[A-Z][A-Z](-[A-Z0-9]+)?$' OR char_length(NEW.calendar) > 13
               OR NEW.holiday_rule NOT IN ('skip', 'send') OR NEW.backfill NOT IN ('send', 'latest', 'skip')
            THEN
                PERFORM reminderd.check_message(NEW);
            END IF;
        END IF;
        -- Dead on arrival: a one-off (pending or paused) already too late (check_arrival's rule),
        -- a recurring row whose until is already past.
        IF NEW.status IN ('pending', 'paused') THEN
            IF NEW.cron IS NULL AND NEW.rrule IS NULL THEN
                IF NEW.fire_at < now() THEN
                    late := now() - NEW.fire_at;
                END IF;
            ELSIF NEW.until <= now() THEN
                RAISE EXCEPTION 'message % / % ends before it starts: its until % is already past', NEW.tenant_id,
                    NEW.ref_id, to_char(NEW.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                    USING ERRCODE = 'datetime_field_overflow',
                          DETAIL = 'A recurring message sends nothing after its until; this one would finish at once.',
                          HINT = 'Give an until in the future, or none.';
            END IF;
        END IF;
        -- The tenant's row and whether it has a disabled endpoint, in one query.
        SELECT t.paused, t.callback_url, EXISTS (
                   SELECT FROM reminderd.endpoint_health h WHERE h.tenant_id = t.id AND h.disabled_at IS NOT NULL)
        INTO tenant_paused, tenant_url, endpoint_disabled
        FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        tenant_found := FOUND;
        endpoint_disabled := NEW.status = 'pending' AND endpoint_disabled;
        IF late IS NOT NULL THEN  -- reminderd.config's defaults, in one pass
            SELECT max(c.value) FILTER (WHERE c.key = 'backfill'), max(c.value) FILTER (WHERE c.key = 'max_lateness'),
                   max(c.value) FILTER (WHERE c.key = 'lookback')
            INTO policy, configured_lateness, configured_lookback
            FROM reminderd.config c;
            policy := coalesce(NEW.backfill, policy, 'send');
            lateness := coalesce(NEW.max_lateness, configured_lateness::interval, interval '30 minutes');
            IF late >= coalesce(configured_lookback::interval, interval '1 day')
               OR late > (CASE policy WHEN 'latest' THEN NULL
                                      WHEN 'skip' THEN least(lateness, interval '60 seconds')
                                      ELSE lateness END)
            THEN  -- refused, in check_arrival's words
                PERFORM reminderd.check_arrival(NEW.tenant_id, NEW.ref_id, NEW.fire_at, NEW.backfill, NEW.max_lateness);
            END IF;
        END IF;
    ELSIF NEW.status = 'pending' THEN
        endpoint_disabled := EXISTS (
            SELECT FROM reminderd.endpoint_health h WHERE h.tenant_id = NEW.tenant_id AND h.disabled_at IS NOT NULL);
        IF endpoint_disabled AND NEW.callback_url IS NULL THEN
            SELECT t.callback_url INTO tenant_url FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        END IF;
    END IF;
    -- Held for a disabled endpoint ('paused' by 'endpoint'), as hold_for_disabled_endpoint holds.
    IF endpoint_disabled THEN
        SELECT h.disabled_reason INTO reason
        FROM reminderd.endpoint_health h
        WHERE h.tenant_id = NEW.tenant_id AND h.disabled_at IS NOT NULL
          AND h.endpoint = reminderd.endpoint_of(coalesce(NEW.callback_url, tenant_url));
        IF FOUND THEN
            NEW.status := 'paused';
            NEW.paused_by := 'endpoint';
            NEW.last_error := 'endpoint disabled: ' || coalesce(reason, 'see reminderd.endpoint_health');
        END IF;
    END IF;
    -- Held for a paused tenant, as hold_for_paused_tenant holds.
    IF NEW.broadcast_id IS NULL AND NEW.status = 'pending' AND tenant_paused THEN
        NEW.status := 'paused';
        NEW.paused_by := 'tenant';
    END IF;
    -- check_payload's limit.
    IF pg_column_size(NEW.payload) > 262144 THEN
        RAISE EXCEPTION 'payload of message % / % is % bytes; at most 262144 (256 KiB)',
            NEW.tenant_id, NEW.ref_id, pg_column_size(NEW.payload)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- validate_message's checks, the tenant's default callback_url as read above.
    IF NEW.broadcast_id IS NULL THEN
        IF NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN  -- UTC needs no check; NULL: the column's NOT NULL says so
            PERFORM reminderd.check_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
        END IF;
        IF NEW.callback_url IS NOT NULL THEN
            PERFORM reminderd.check_callback_url(NEW.callback_url,
                                                 format('message %s / %s', NEW.tenant_id, NEW.ref_id),
                                                 'callback_url_is_http');
        END IF;
        IF NEW.cron IS NOT NULL THEN
            PERFORM reminderd.check_cron(NEW.cron, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
        END IF;
        IF NEW.callback_url IS NULL THEN  -- then the tenant's default is needed
            IF NOT tenant_found THEN
                RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                    USING ERRCODE = 'foreign_key_violation',
                          HINT = 'Create it first: reminderd tenant add ID --callback-url URL';
            ELSIF tenant_url IS NULL THEN
                RAISE EXCEPTION 'no callback_url for message % / %: the row has none and tenant "%" has no default',
                    NEW.tenant_id, NEW.ref_id, NEW.tenant_id
                    USING ERRCODE = 'not_null_violation';
            END IF;
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
    END IF;
    RETURN NEW;
END
$$;

-- A broadcast's callback_url is checked as a message's is (check_callback_url), and the values its
-- messages will carry as theirs are (check_message_values), when they are written: its rows, which
-- stage_broadcast writes with them, are not checked one by one.
CREATE OR REPLACE FUNCTION reminderd.validate_broadcast_request() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.callback_url IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.callback_url IS DISTINCT FROM OLD.callback_url) THEN
        PERFORM reminderd.check_callback_url(NEW.callback_url,
                                             format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id),
                                             'broadcast_callback_url_is_http');
    END IF;
    -- What its messages will carry, as a message's values are checked (check_message_values,
    -- migration 0021): refused here, not when its rows are staged.
    IF TG_OP = 'INSERT' OR (NEW.category, NEW.calendar, NEW.holiday_rule, NEW.backfill, NEW.max_lateness,
                            NEW.max_attempts)
                           IS DISTINCT FROM (OLD.category, OLD.calendar, OLD.holiday_rule, OLD.backfill,
                                             OLD.max_lateness, OLD.max_attempts) THEN
        PERFORM reminderd.check_message_values(format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id),
                                               NULL, NULL, NEW.max_attempts, NEW.category, NEW.calendar,
                                               NEW.holiday_rule, NEW.backfill, NEW.max_lateness,
                                               'broadcast_category_format');
    END IF;
    RETURN NEW;
END
$$;

-- validate_message also when a column whose constraint it pre-empts is set (none is, by the
-- daemon's own updates), and when fire_at is set to a time that is not finite: the WHEN clause
-- tests that, so the daemon's updates of fire_at call nothing. A broadcast's values, as its URL.
DROP TRIGGER scheduled_messages_validate ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_validate
    BEFORE UPDATE OF timezone, callback_url, tenant_id, rrule, cron, ref_id, local_time, until, max_runs,
                     max_attempts, category, calendar, holiday_rule, backfill, max_lateness
    ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL) EXECUTE FUNCTION reminderd.validate_message();
CREATE TRIGGER scheduled_messages_validate_fire_at
    BEFORE UPDATE OF fire_at ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NOT isfinite(NEW.fire_at) AND NEW.fire_at IS DISTINCT FROM OLD.fire_at)
    EXECUTE FUNCTION reminderd.validate_message();
DROP TRIGGER broadcast_requests_validate ON reminderd.broadcast_requests;
CREATE TRIGGER broadcast_requests_validate
    BEFORE INSERT OR UPDATE OF callback_url, category, calendar, holiday_rule, backfill, max_lateness, max_attempts
    ON reminderd.broadcast_requests
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_broadcast_request();

-- Phones -----------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION reminderd.phone_timezone(phone text) RETURNS TABLE (timezone text)
LANGUAGE sql STABLE AS $$
    -- A few LATERAL steps, each computed once per number (OFFSET 0 where a flattened query would
    -- repeat an expression); upsert_contact_rows inlines it for each distinct phone of a batch.
    SELECT CASE WHEN choice.mask & 1 = 0 THEN NULL
                WHEN choice.mask & 2 <> 0 THEN code.country_timezone
                WHEN choice.mask & 4 <> 0 THEN choice.zone
                WHEN choice.mask & 8 <> 0 THEN
                    CASE WHEN code.geographic_mobile THEN choice.zone ELSE code.country_timezone END
           END
    -- OFFSET 0: the number without separators computed once, not once per use (a quarter of the
    -- function's time).
    -- (\x0b: the vertical tab; E'\v' would be the letter v, as it was before migration 0021.)
    FROM (SELECT translate(phone, E' \t\n\r\f\x0b().-/', '') AS written OFFSET 0) AS given
    -- The calling code (the shortest leading 1-3 digits that are one; none starts with 0), and a
    -- national prefix written after it ("+44 (0)20 …"), matched.
    CROSS JOIN LATERAL (
        SELECT p.*, substr(given.written, length(p.country_code::text) + 2) AS rest,
               regexp_match(substr(given.written, length(p.country_code::text) + 2),
                            '^(' || p.national_prefix || ')') AS m
        FROM reminderd.phone_plans p
        WHERE given.written ~ '^\+[1-9][0-9]{2,}$' AND length(given.written) <= 250
          AND p.country_code IN (substr(given.written, 2, 1)::integer, substr(given.written, 2, 2)::integer,
                                 substr(given.written, 2, 3)::integer)
        ORDER BY p.country_code
        LIMIT 1
    ) AS code
    -- The national number: what follows the code, or without the national prefix (rare: its own
    -- function, reminderd.national_number).
    CROSS JOIN LATERAL (
        SELECT nsn, length(nsn) AS digits
        FROM (SELECT CASE WHEN code.m IS NULL THEN code.rest
                          ELSE reminderd.national_number(code.rest, code.m, code.national_prefix,
                                                         code.national_prefix_groups, code.national_prefix_rule,
                                                         code.viable, code.lengths, code.local_lengths) END AS nsn
              WHERE length(code.rest) >= 2) AS chosen
        WHERE length(nsn) BETWEEN 2 AND 17
        OFFSET 0
    ) AS number
    -- Its row in the first region of the code (one index lookup: the last prefix not after it).
    LEFT JOIN LATERAL (
        SELECT last.masks[number.digits] AS mask, last.timezone
        FROM (SELECT x.prefix, x.masks, x.timezone
              FROM reminderd.phone_prefixes x
              WHERE x.country_code = code.country_code AND x.position = 1 AND NOT x.leading_digits
                AND x.prefix <= number.nsn
              ORDER BY x.prefix DESC
              LIMIT 1) AS last
        WHERE starts_with(number.nsn, last.prefix)
    ) AS first_region ON true
    -- That region is the number's when the code has no other, or when it is valid there and the
    -- region is not told by leading digits. Otherwise the regions in phonenumbers' order: the first
    -- whose leading digits the number starts with, or that has none and where it is valid. Then
    -- what kind of number it is there (mask: 1 valid, 2 tied to no place, 4 fixed line, 8 mobile)
    -- and the zone of a place-bound number there.
    CROSS JOIN LATERAL (
        SELECT coalesce(pick[1]::integer, 0) AS mask, pick[2] AS zone
        FROM (SELECT CASE
            WHEN code.regions = 1 OR (NOT code.first_region_has_leading_digits AND first_region.mask & 1 = 1
                                      AND first_region.mask & 14 <> 0)
                THEN ARRAY[first_region.mask::text, first_region.timezone]
            ELSE (
                SELECT ARRAY[y.mask::text, y.timezone]
                FROM (SELECT x.position, bool_or(x.leading_digits) AS led, bool_or(r.has_leading_digits) AS has_leading,
                             (array_agg(x.masks[number.digits] ORDER BY length(x.prefix) DESC)
                                  FILTER (WHERE NOT x.leading_digits))[1] AS mask,
                             (array_agg(x.timezone ORDER BY length(x.prefix) DESC)
                                  FILTER (WHERE NOT x.leading_digits))[1] AS timezone
                      FROM reminderd.phone_prefixes x
                      JOIN reminderd.phone_regions r ON r.country_code = x.country_code AND r.position = x.position
                      WHERE x.country_code = code.country_code
                        AND x.prefix = ANY ((ARRAY[
                            left(number.nsn, 0), left(number.nsn, 1), left(number.nsn, 2), left(number.nsn, 3),
                            left(number.nsn, 4), left(number.nsn, 5), left(number.nsn, 6), left(number.nsn, 7),
                            left(number.nsn, 8), left(number.nsn, 9), left(number.nsn, 10), left(number.nsn, 11),
                            left(number.nsn, 12), left(number.nsn, 13), left(number.nsn, 14), left(number.nsn, 15),
                            left(number.nsn, 16), left(number.nsn, 17)])[1:least(number.digits, code.longest_prefix) + 1])
                      GROUP BY x.position) AS y
                WHERE y.led OR (NOT y.has_leading AND y.mask & 1 = 1 AND y.mask & 14 <> 0)
                ORDER BY y.position
                LIMIT 1)
            END AS pick
            OFFSET 0) AS chosen
    ) AS choice
    WHERE choice.mask & 1 = 1
$$;

-- A contact's zone from its own fields: its timezone, else its phone's, else its country's (NULL:
-- the tenant's, read when a message needs it). Before each row written by plain SQL;
-- upsert_contact_rows resolves whole batches itself and says so (reminderd.contacts_resolved).
-- A new or changed phone that is not +<country code> <number> (reminderd.is_phone) is refused
-- (22023, migration 0021); one written before keeps its row moving.
CREATE OR REPLACE FUNCTION reminderd.resolve_contact() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.phone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.phone IS DISTINCT FROM OLD.phone) THEN
        IF length(NEW.phone) > 250 THEN
            RAISE EXCEPTION 'phone of contact % / % is % characters; at most 250', NEW.tenant_id, NEW.contact_id,
                length(NEW.phone)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'phone_length',
                      HINT = 'A phone is written +<country code> <number>, like +44 20 7946 0018.';
        ELSIF NOT reminderd.is_phone(NEW.phone) THEN
            RAISE EXCEPTION 'phone % of contact % / % is not +<country code> <number>', to_jsonb(NEW.phone)::text,
                NEW.tenant_id, NEW.contact_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A phone is written +<country code> <number>, like +44 20 7946 0018: a +, then digits, '
                             'with spaces, dashes, dots, slashes or parentheses between them if you like.';
        END IF;
    END IF;
    IF NEW.country IS NOT NULL AND NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = NEW.country) THEN
        RAISE EXCEPTION 'unknown country "%" for contact % / %', NEW.country, NEW.tenant_id, NEW.contact_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an ISO 3166 alpha-2 code such as GB, IN or US (reminderd.countries lists them).';
    END IF;
    IF NEW.timezone IS NOT NULL THEN
        IF NOT reminderd.is_timezone(NEW.timezone) THEN
            RAISE EXCEPTION 'unknown timezone "%" for contact % / %', NEW.timezone, NEW.tenant_id, NEW.contact_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
        END IF;
        NEW.resolved_timezone := NEW.timezone;
        NEW.timezone_source := 'contact';
        RETURN NEW;
    END IF;
    NEW.resolved_timezone := (SELECT z.timezone FROM reminderd.phone_timezone(NEW.phone) AS z);
    NEW.timezone_source := CASE WHEN NEW.resolved_timezone IS NOT NULL THEN 'phone' END;
    IF NEW.resolved_timezone IS NULL THEN
        NEW.resolved_timezone := (SELECT c.timezone FROM reminderd.countries c WHERE c.country = NEW.country);
        NEW.timezone_source := CASE WHEN NEW.resolved_timezone IS NOT NULL THEN 'country' END;
    END IF;
    RETURN NEW;
END
$$;

-- Contacts, many at once, as reminderd.upsert_contacts() takes them (the same rules, the same
-- errors: one bad element refuses the batch, named by its position). Returns how many contacts
-- were added or changed; a contact given twice takes its last element. The zone of a contact is
-- worked out only when what it is worked out from changed, and each distinct phone once.
CREATE OR REPLACE FUNCTION reminderd.upsert_contact_rows(tenant_id text, contacts reminderd.contact_v1[]) RETURNS integer
LANGUAGE plpgsql
-- A plan for each batch as it is: a generic plan, which PL/pgSQL switches to after five calls,
-- knows neither the batch's size nor its tenant's, and took 15 times as long.
SET plan_cache_mode = force_custom_plan SET jit = off AS $$
#variable_conflict use_column
DECLARE
    bad     record;
    written integer;
    careful boolean := false;
BEGIN
    PERFORM reminderd.check_tenant(upsert_contact_rows.tenant_id);
    -- Timezones and countries: each distinct value once.
    SELECT z.value INTO bad
    FROM (SELECT DISTINCT c.timezone AS value FROM unnest(upsert_contact_rows.contacts) AS c
          WHERE c.timezone IS NOT NULL OFFSET 0) AS z  -- OFFSET 0: each distinct zone checked once
    WHERE NOT reminderd.is_timezone(z.value)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown timezone "%" in the batch', bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    SELECT k.value INTO bad
    FROM (SELECT DISTINCT upper(c.country) AS value FROM unnest(upsert_contact_rows.contacts) AS c
          WHERE c.country IS NOT NULL) AS k
    WHERE k.value ~ '^[A-Z]{2}$'  -- not two letters: the table's constraint, its element named below
      AND NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = k.value)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown country "%" in the batch', bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Use an ISO 3166 alpha-2 code such as GB, IN or US (reminderd.countries lists them).';
    END IF;

    -- The element rules (contact_id, phone, country, attributes) are the table's constraints: a
    -- batch that breaks one is looked at again only then, to name its first bad element
    -- (checking each element first cost as much as the regular expression twice). A phone given
    -- must be one (reminderd.is_phone, migration 0021), which no constraint says (a contact whose
    -- phone was written before keeps moving): tested first, named the same way.
    -- Contacts not there when looked up are added with a plain INSERT (ON CONFLICT's speculative
    -- insertion cost 2-3 us a row more); one added meanwhile by another transaction makes the
    -- batch go again, carefully: every contact through ON CONFLICT.
    LOOP
    BEGIN
        IF EXISTS (SELECT FROM unnest(upsert_contact_rows.contacts) AS c
                   WHERE c.has_phone AND btrim(c.phone) <> '' AND NOT reminderd.is_phone(c.phone)) THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation';  -- named below
        END IF;
        -- Resolved here for the whole batch: the row trigger stands aside for this statement.
        PERFORM set_config('reminderd.contacts_resolved', 'on', true);
        WITH latest AS (
            -- A contact given twice: its last element wins.
            SELECT DISTINCT ON (c.contact_id) c.*
            FROM unnest(upsert_contact_rows.contacts) WITH ORDINALITY AS c
            ORDER BY c.contact_id, c.ordinality DESC
        ),
        merged AS (
            SELECT l.contact_id,
                   CASE WHEN l.has_timezone THEN l.timezone ELSE c.timezone END AS timezone,
                   CASE WHEN l.has_phone THEN nullif(btrim(l.phone), '') ELSE c.phone END AS phone,
                   CASE WHEN l.has_country THEN upper(l.country) ELSE c.country END AS country,
                   CASE WHEN l.has_attributes THEN coalesce(l.attributes, '{}') ELSE coalesce(c.attributes, '{}') END
                       AS attributes,
                   c.contact_id IS NOT NULL AS known,
                   c.timezone AS was_timezone, c.phone AS was_phone, c.country AS was_country,
                   c.attributes AS was_attributes, c.resolved_timezone AS was_resolved, c.timezone_source AS was_source
            FROM latest l
            -- One index lookup per contact given, never a scan of the tenant's contacts (OFFSET 0: not
            -- flattened into a join the planner may hash).
            LEFT JOIN LATERAL (
                SELECT * FROM reminderd.contacts c
                WHERE c.tenant_id = upsert_contact_rows.tenant_id AND c.contact_id = l.contact_id
                OFFSET 0
            ) AS c ON true
        ),
        judged AS (
            SELECT m.*, m.known AND m.timezone IS NOT DISTINCT FROM m.was_timezone
                        AND m.phone IS NOT DISTINCT FROM m.was_phone AND m.country IS NOT DISTINCT FROM m.was_country
                        AS same_inputs
            FROM merged m
        ),
        -- A phone is read only when it matters (no own timezone, and what the zone is worked out from
        -- changed), and each distinct phone once.
        by_phone AS (
            SELECT p.phone, z.timezone
            FROM (SELECT DISTINCT j.phone FROM judged j
                  WHERE j.timezone IS NULL AND NOT j.same_inputs AND j.phone IS NOT NULL) AS p
            CROSS JOIN LATERAL reminderd.phone_timezone(p.phone) AS z
        ),
        resolved AS (
            SELECT j.contact_id, j.known, j.timezone, j.phone, j.country, j.attributes,
                   CASE WHEN j.timezone IS NOT NULL THEN j.timezone
                        WHEN j.same_inputs THEN j.was_resolved
                        ELSE coalesce(p.timezone, k.timezone) END AS resolved_timezone,
                   CASE WHEN j.timezone IS NOT NULL THEN 'contact'
                        WHEN j.same_inputs THEN j.was_source
                        WHEN p.timezone IS NOT NULL THEN 'phone'
                        WHEN k.timezone IS NOT NULL THEN 'country' END AS timezone_source
            FROM judged j
            LEFT JOIN by_phone p ON p.phone = j.phone AND j.timezone IS NULL AND NOT j.same_inputs
            LEFT JOIN reminderd.countries k ON k.country = j.country
            -- A contact given as it is stays as it is: not even locked by ON CONFLICT (nothing written).
            WHERE NOT (j.same_inputs AND j.attributes = j.was_attributes)
        ),
        added AS (
            INSERT INTO reminderd.contacts
                (tenant_id, contact_id, timezone, phone, country, attributes, resolved_timezone, timezone_source)
            SELECT upsert_contact_rows.tenant_id, r.contact_id, r.timezone, r.phone, r.country, r.attributes,
                   r.resolved_timezone, r.timezone_source
            FROM resolved r
            WHERE NOT r.known AND NOT careful
            RETURNING 1
        ),
        changed AS (
            INSERT INTO reminderd.contacts AS c
                (tenant_id, contact_id, timezone, phone, country, attributes, resolved_timezone, timezone_source)
            SELECT upsert_contact_rows.tenant_id, r.contact_id, r.timezone, r.phone, r.country, r.attributes,
                   r.resolved_timezone, r.timezone_source
            FROM resolved r
            WHERE r.known OR careful
            ON CONFLICT (tenant_id, contact_id) DO UPDATE
            SET timezone = excluded.timezone, phone = excluded.phone, country = excluded.country,
                attributes = excluded.attributes, resolved_timezone = excluded.resolved_timezone,
                timezone_source = excluded.timezone_source, updated_at = now()
            WHERE (c.timezone, c.phone, c.country, c.attributes)
                  IS DISTINCT FROM (excluded.timezone, excluded.phone, excluded.country, excluded.attributes)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM added) + (SELECT count(*) FROM changed) INTO written;
        EXIT;
    EXCEPTION WHEN unique_violation THEN
        IF careful THEN
            RAISE;
        END IF;
        careful := true;  -- a contact added meanwhile: again
    WHEN check_violation OR not_null_violation THEN
        SELECT given.n, given.contact_id, given.why INTO bad
        FROM (SELECT c.ordinality AS n, c.contact_id, CASE
                  WHEN c.contact_id IS NULL THEN 'has no "contact_id" string'
                  WHEN c.contact_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$' THEN
                      'has a contact_id with characters other than letters, digits and _ . : @ + - (at most 128, starting with a letter or digit)'
                  WHEN length(c.phone) > 250 THEN '"phone" is longer than 250 characters'
                  WHEN c.has_phone AND btrim(c.phone) <> '' AND NOT reminderd.is_phone(c.phone) THEN
                      format('has phone %s, which is not +<country code> <number>', to_jsonb(c.phone))
                  WHEN c.country !~ '^[A-Za-z]{2}$' THEN '"country" is not a two-letter ISO 3166 code'
                  WHEN jsonb_typeof(c.attributes) <> 'object' THEN '"attributes" is not a JSON object'
                  END AS why
              FROM unnest(upsert_contact_rows.contacts) WITH ORDINALITY AS c) AS given
        WHERE given.why IS NOT NULL
        ORDER BY given.n
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'contact % of the batch (contact_id %) %', bad.n,
                coalesce(to_jsonb(bad.contact_id)::text, 'missing'), bad.why
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Nothing in this batch was changed.',
                      HINT = CASE WHEN bad.why LIKE 'has phone %'
                                  THEN 'A phone is written +<country code> <number>, like +44 20 7946 0018: a +, then '
                                       'digits, with spaces, dashes, dots, slashes or parentheses between them if you like.'
                                  ELSE 'Each contact: {"contact_id": "cust_8f", "timezone": "Europe/London", '
                                       '"phone": "+447700900123", "country": "GB", "attributes": {…}}; every field but '
                                       'contact_id is optional.' END;
        END IF;
        RAISE;  -- not an element's (a trigger's refusal): as it was
    END;
    END LOOP;
    PERFORM set_config('reminderd.contacts_resolved', 'off', true);
    RETURN written;
END
$$;

-- Who may call them (functions get PUBLIC EXECUTE by default): the phone rule is pure, any role may
-- ask it; the checks are what the functions and triggers of every role's writes call.
REVOKE EXECUTE ON FUNCTION
    reminderd.refuse_infinite_time(text, text, text),
    reminderd.check_fire_at(timestamptz, text, text),
    reminderd.check_message_values(text, text, integer, integer, text, text, text, text, interval, text),
    reminderd.check_message(reminderd.scheduled_messages, reminderd.scheduled_messages),
    reminderd.is_phone(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.check_fire_at(timestamptz, text, text)
TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.is_phone(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.refuse_infinite_time(text, text, text),
    reminderd.check_message_values(text, text, integer, integer, text, text, text, text, interval, text),
    reminderd.check_message(reminderd.scheduled_messages, reminderd.scheduled_messages)
TO reminderd_app, reminderd_daemon, reminderd_api;

-- Rows 0020 took whose time could never be right -----------------------------------------------

-- A recurring row whose fire_at is not finite (first_fire_at 'infinity', an UPDATE to '-infinity'):
-- planned again by the daemon from now, as a row never planned is.
UPDATE reminderd.scheduled_messages
SET fire_at = NULL, last_event = 'updated', updated_at = now(),
    last_error = format('fire_at %s is no time it can fire at (refused since migration 0021): planned again',
                        fire_at)
WHERE status IN ('pending', 'paused') AND (cron IS NOT NULL OR rrule IS NOT NULL) AND NOT isfinite(fire_at);
-- A one-off due at 'infinity' would never fire, and kept the claim loop from sleeping
-- (seconds_until_next_due): dead-lettered with the reason, where dead_letters shows it. One due at
-- '-infinity' is older than any lookback: the expirer expires it, saying so.
UPDATE reminderd.scheduled_messages
SET status = 'dead', last_event = 'dead_lettered', updated_at = now(), lease_expires_at = NULL,
    last_error = 'fire_at infinity is no time it can fire at (refused since migration 0021): requeue it to send '
                 'it now, or cancel it'
WHERE status IN ('pending', 'paused', 'awaiting_approval') AND cron IS NULL AND rrule IS NULL
  AND fire_at = 'infinity';
-- A wall time that is not finite cannot be placed again when its contact's zone changes (the
-- re-planning would fail, and with it the contact's update): dropped, the message keeps its fire_at.
UPDATE reminderd.scheduled_messages
SET local_time = NULL
WHERE status IN ('pending', 'paused', 'awaiting_approval') AND NOT isfinite(local_time);
