-- 0005 day one: nothing silently accepted. A message already too late for its backfill policy (or
-- a recurring one whose `until` is past) is refused at insert instead of expiring unseen; errors a
-- newcomer meets read as sentences (a duplicate tenant, a holiday of an unknown tenant, a bad
-- callback URL or cron: every field, as the daemon reads it); a zone is one the daemon reads
-- (case-sensitive; CET with its summer time); the daemon's cron in SQL (next_cron_occurrence)
-- gives a cron row its first fire_at when it is scheduled.
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

-- Functions: time ---------------------------------------------------------------------------------
-- The daemon's time rules (reminderd/schedule/) in SQL, held to its answers by tests: which zone
-- names it reads, the instant a wall time is first read, and the next fire of a cron. Wall times
-- are read through the TimeZone setting, set for the duration of a call by a function's SET
-- clause (which restores it), never with `AT TIME ZONE zone`: that reads CET, EET, MET and WET as
-- PostgreSQL's fixed-offset abbreviations, where the tz database (and Python) give them summer
-- time, and takes abbreviations such as PST that are no zone at all.

-- Refuse (22023) a zone the daemon cannot read: Python's zoneinfo reads tz database files by name,
-- so a zone is an IANA name spelt as its file is. PostgreSQL alone would also take
-- "america/new_york" (its names are case-insensitive; the HINT gives the right spelling), POSIX
-- rules such as "UTC+3" (whose sign is the opposite of ISO 8601's) and "+05". `subject` ("message
-- acme / r1") says whose zone it is.
CREATE FUNCTION reminderd.check_timezone(timezone text, subject text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC'  -- restored on return: the check tries the zone
AS $$
DECLARE
    problem   constant text := format('unknown timezone "%s"', timezone) || coalesce(' for ' || subject, '');
    hint      constant text := 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    canonical text;
BEGIN
    IF timezone IN ('UTC', 'Etc/UTC') THEN
        RETURN;
    ELSIF timezone IS NULL THEN
        RAISE EXCEPTION 'timezone must not be NULL%', coalesce(' for ' || subject, '')
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF timezone !~ '^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$' THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value', HINT = hint;
    END IF;
    BEGIN
        PERFORM set_config('TimeZone', timezone, true);
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM, HINT = hint;
    END;
    canonical := current_setting('TimeZone');
    IF canonical <> timezone OR (timezone ~ '[0-9]' AND timezone !~ '[a-z]'
        AND timezone NOT IN ('EST5EDT', 'CST6CDT', 'MST7MDT', 'PST8PDT', 'GMT0', 'GMT+0', 'GMT-0')
        AND NOT EXISTS (SELECT FROM pg_timezone_names z WHERE z.name = timezone))
    THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value',
            HINT = CASE WHEN lower(canonical) = lower(timezone) AND canonical <> upper(timezone)
                        THEN format('Timezone names are case-sensitive: %s.', canonical)
                        ELSE hint END;
    END IF;
END
$$;

-- Is `name` a zone the daemon can read? reminderd.check_timezone() as a yes or no.
CREATE OR REPLACE FUNCTION reminderd.is_timezone(name text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF name IS NULL THEN
        RETURN false;
    END IF;
    PERFORM reminderd.check_timezone(name);
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;

-- The clock ---------------------------------------------------------------------------------------

-- The instant at which the clock of the session's TimeZone first reads `wall`; for a wall time
-- skipped by a forward jump, the jump (wallclock.py _instants(...)[0]). PostgreSQL's own
-- wall::timestamptz picks the later reading of a repeated time, and moves a skipped one on by the
-- length of the gap. Assumes, as PostgreSQL does, that clock changes are at least 48 hours apart
-- (true of every zone since 1970).
CREATE FUNCTION reminderd.first_reading(wall timestamp) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    utc_wall constant timestamptz := wall AT TIME ZONE interval '0';
    reading  timestamptz := wall::timestamptz;
    prior    interval;
    earlier  timestamptz;
BEGIN
    IF reading::timestamp <> wall THEN  -- skipped: `reading` is past the jump
        RETURN reminderd.offset_change(
            utc_wall - (reading::timestamp - (reading AT TIME ZONE interval '0')), reading);
    END IF;
    prior := (utc_wall - interval '1 day')::timestamp - ((utc_wall - interval '1 day') AT TIME ZONE interval '0');
    earlier := utc_wall - prior;
    IF earlier < reading AND earlier::timestamp = wall THEN  -- repeated: its first reading
        RETURN earlier;
    END IF;
    RETURN reading;
END
$$;

-- The whole second in (before, after] at which the session's UTC offset becomes the one in force at
-- `after`: a bisection over whole seconds, step for step as wallclock.py _jump().
CREATE FUNCTION reminderd.offset_change(before timestamptz, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    lo     bigint := trunc(extract(epoch FROM before));
    hi     bigint := trunc(extract(epoch FROM after));
    target constant interval := after::timestamp - (after AT TIME ZONE interval '0');
    mid    bigint;
    probe  timestamptz;
BEGIN
    WHILE hi - lo > 1 LOOP
        mid := (lo + hi) >> 1;
        probe := to_timestamp(mid);
        IF probe::timestamp - (probe AT TIME ZONE interval '0') = target THEN
            hi := mid;
        ELSE
            lo := mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(hi);
END
$$;

-- The wall clock in `timezone` at `instant` (wallclock.py wall()).
CREATE FUNCTION reminderd.wall_time(instant timestamptz, timezone text) RETURNS timestamp
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- restored on return; set to `timezone` below
AS $$
BEGIN
    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);
    RETURN instant::timestamp;
END
$$;

-- The instant at which the clock in `timezone` first reads `local_time`; a wall time skipped by a
-- forward jump happens at the jump: reminderd.first_reading(), the rule cron times follow too.
CREATE OR REPLACE FUNCTION reminderd.local_instant(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- restored on return; set to `timezone` below
AS $$
BEGIN
    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);
    RETURN reminderd.first_reading(local_time);
END
$$;

-- reminderd.next_cron_occurrence(cron, timezone, after): the first instant strictly after `after` at
-- which `cron`, read in the IANA `timezone`, fires. The SQL twin of the daemon's time core, and
-- agrees with it exactly:
--   reminderd/schedule/wallclock.py  next_instant(parse_cron(cron), load_timezone(timezone), after)
-- (tests/integration/test_sql_cron.py compares the two over generated crons, zones and instants).
--
-- The cron language is croniter's, as reminderd/schedule/cron.py uses it: 5 fields (minute hour
-- day-of-month month day-of-week) or 6 with a leading seconds field; @yearly @annually @monthly
-- @weekly @daily @midnight @hourly; names JAN-DEC and SUN-SAT (any case); lists, ranges, steps
-- (*/15, 10-50/5, 10/5); day of week 0 and 7 are Sunday; L (last day of the month), L5 or 5L (the
-- last Friday), 15W (the weekday nearest the 15th), 1#1 (the first Monday); ? for * in the day
-- fields. When both day of month and day of week are restricted a day matching either fires
-- (croniter's day_or), with croniter's own readings of # and W there. H and R fields are refused,
-- and so is what cron.py's check_fields refuses before croniter sees it (W1, MON-FRI#1, # or L
-- beside plain days of the week).
--
-- Clock changes follow docs/time.md: a wall time skipped by a forward jump fires at the jump; a wall
-- time repeated by a backward jump fires once, at its first reading, unless the hour field covers all
-- 24 hours (*, 0-23, "*,5"): then at every real instant it is read.
--
-- Limits, as croniter's: a search looks at most 50 years ahead of where it starts. A cron that
-- cannot fire in the 50 years from 2000-01-01 ("0 0 30 2 *") is refused as never firing; one whose
-- next fire is more than 50 years ahead raises too. Bad input raises SQLSTATE 22023
-- (invalid_parameter_value) with a one-line message, e.g.
--     invalid cron "61 * * * *": minute 61 is out of range 0–59
-- NULL in, NULL out (STRICT). Needs PostgreSQL 14 or later (bit_count).

-- The cron's fields as bit masks. seconds, minutes, hours, months: bit n set when the field allows
-- n (a field of * has all bits).
-- days: NULL for *, else bit d for day d and bit 0 for L; nearest_weekday: the day of "15W".
-- weekdays: NULL for *, else bit w for weekday w (0 = Sunday); nth_weekdays: NULL, or bit 8*w + n
-- for "w#n" (n = 1..5) and 8*w + 6 for "Lw". every_hour: the hour field covers all 24 hours (a *
-- among its items, or every hour listed), so a repeated hour fires twice. with_seconds: the cron
-- has a seconds field.
CREATE FUNCTION reminderd.cron_parse(
    cron text,
    OUT seconds bigint, OUT minutes bigint, OUT hours bigint, OUT months bigint,
    OUT days bigint, OUT nearest_weekday integer, OUT weekdays bigint, OUT nth_weekdays bigint,
    OUT every_hour boolean, OUT with_seconds boolean
)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    -- Python's str.split() and str.strip() whitespace (str.isspace), built from code points so the
    -- class does not depend on standard_conforming_strings.
    space constant text := '[' || chr(9) || '-' || chr(13) || chr(28) || '-' || chr(32)
        || CASE WHEN getdatabaseencoding() = 'UTF8'
                THEN chr(133) || chr(160) || chr(5760) || chr(8192) || '-' || chr(8202) || chr(8232)
                     || chr(8233) || chr(8239) || chr(8287) || chr(12288)
                ELSE '' END || ']';
    -- Lower case as Python's str.lower() does for what can become a valid token: ASCII letters, and
    -- the Kelvin sign (U+212A), which lowers to "k" (so "@WEE\u212ALY" is @weekly to Python).
    upper_letters constant text := 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' || CASE WHEN getdatabaseencoding() = 'UTF8'
                                                                         THEN chr(8490) ELSE '' END;
    lower_letters constant text := 'abcdefghijklmnopqrstuvwxyzk';
    month_names constant text[] := '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}';
    weekday_names constant text[] := '{sun,mon,tue,wed,thu,fri,sat}';
    -- "w#n" (one day, a number or a name; never a range) and "Lw" (one digit), as cron.py reads them.
    weekday_pattern constant text := '^(?:([a-z0-9_]+)#([0-9]+)|(l)([0-9]))$';
    range_pattern constant text := '^([^-]+)-([^-/]+)(/([0-9]+))?$';
    hint constant text := 'A cron is 5 fields (minute hour day-of-month month day-of-week) or 6 with a '
        'leading seconds field, e.g. "0 9 * * MON-FRI"; see docs/time.md.';
    stripped   text;
    fields     text[];
    typed      text[];  -- the fields as written, for messages
    typed_items text[];
    n          integer;
    kind       text;
    label      text;
    field      text;
    day_text   text;
    weekday_text text;
    lo         integer;
    hi         integer;
    len_all    integer;
    items      text[];
    item       text;
    shown      text;
    e          text;
    t          text;
    m          text[];
    nth        integer;
    low_text   text;
    high_text  text;
    low        integer;
    high       integer;
    step       integer;
    with_step  boolean;
    v          integer;
    last_v     integer;
    to_skip    integer;
    bits       bigint;
    mask       bigint;
    nth_mask   bigint;
    star_item  boolean;
    elements   integer;
    collapsed  boolean;
    is_star    boolean;
    full_mask  bigint;
    specials   integer;
    allowed    text;
    range_text text;
BEGIN
    stripped := regexp_replace(cron, '^' || space || '+|' || space || '+$', '', 'g');
    CASE translate(stripped, upper_letters, lower_letters)
        WHEN '@yearly', '@annually' THEN stripped := '0 0 1 1 *';
        WHEN '@monthly' THEN stripped := '0 0 1 * *';
        WHEN '@weekly' THEN stripped := '0 0 * * 0';
        WHEN '@daily', '@midnight' THEN stripped := '0 0 * * *';
        WHEN '@hourly' THEN stripped := '0 * * * *';
        ELSE NULL;
    END CASE;
    fields := CASE WHEN stripped = '' THEN '{}'::text[] ELSE regexp_split_to_array(stripped, space || '+') END;
    n := cardinality(fields);
    typed := fields;
    IF n NOT IN (5, 6) THEN
        RAISE EXCEPTION 'invalid cron "%": expected 5 fields (minute hour day month weekday) or 6 with a leading seconds field, got %',
            cron, n USING ERRCODE = 'invalid_parameter_value', HINT = hint;
    END IF;
    FOREACH field IN ARRAY fields LOOP
        IF field ~ '^[rR]' THEN
            RAISE EXCEPTION 'invalid cron "%": random (R) fields are not supported', cron
                USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END IF;
    END LOOP;
    -- Quartz's "5L" (the last Friday) is croniter's "L5".
    IF fields[n] ~ '[0-7][lL]' THEN
        fields[n] := regexp_replace(fields[n], '(^|,)([0-7])[lL](?=,|$)', E'\\1L\\2', 'g');
    END IF;
    FOR i IN 1..n LOOP
        fields[i] := translate(fields[i], upper_letters, lower_letters);
    END LOOP;
    day_text := fields[n - 2];
    weekday_text := fields[n];
    with_seconds := n = 6;
    seconds := 1;  -- second 0, for a 5-field cron
    nearest_weekday := NULL;
    nth_weekdays := NULL;

    FOR i IN 1..n LOOP
        kind := CASE WHEN n = 6 THEN (ARRAY['second', 'minute', 'hour', 'day', 'month', 'weekday'])[i]
                     ELSE (ARRAY['minute', 'hour', 'day', 'month', 'weekday'])[i] END;
        label := CASE kind WHEN 'day' THEN 'day of month' WHEN 'weekday' THEN 'day of week' ELSE kind END;
        lo := CASE WHEN kind IN ('day', 'month') THEN 1 ELSE 0 END;
        hi := CASE kind WHEN 'hour' THEN 23 WHEN 'day' THEN 31 WHEN 'month' THEN 12 WHEN 'weekday' THEN 6 ELSE 59 END;
        len_all := hi - lo + 1;
        range_text := CASE kind WHEN 'weekday' THEN '0–7 (0 and 7 are Sunday)' ELSE lo || '–' || hi END;
        allowed := CASE kind WHEN 'month' THEN 'a month (1–12 or JAN–DEC)'
                             WHEN 'weekday' THEN 'a day of the week (0–7, SUN–SAT, 1#2 or L5)'
                             WHEN 'day' THEN 'a day of the month (1–31, L or 15W)'
                             ELSE format('a number (%s–%s)', lo, hi) END;
        field := fields[i];
        mask := 0;
        nth_mask := 0;
        star_item := false;
        specials := 0;

        IF field ~ '^h([(][0-9]+-[0-9]+[)])?(/[0-9]+)?$' THEN
            RAISE EXCEPTION 'invalid cron "%": % "%": hashed (H) values are not supported', cron, label, typed[i]
                USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END IF;
        IF position('?' IN field) > 0 THEN
            IF kind NOT IN ('day', 'weekday') THEN
                RAISE EXCEPTION 'invalid cron "%": % "%": ? is only for day of month or day of week',
                    cron, label, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            ELSIF field <> '?' THEN
                RAISE EXCEPTION 'invalid cron "%": % "%": ? stands alone (it means *)',
                    cron, label, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            END IF;
            field := '*';
        END IF;

        items := string_to_array(field, ',');
        typed_items := CASE WHEN field = '*' THEN ARRAY[typed[i]] ELSE string_to_array(typed[i], ',') END;
        FOR j IN 1..cardinality(items) LOOP
            item := items[j];
            shown := typed_items[j];
            e := item;
            nth := NULL;
            IF item = '*' THEN
                star_item := true;
                CONTINUE;
            ELSIF item = '' THEN
                RAISE EXCEPTION 'invalid cron "%": % "%" has an empty list item', cron, label, typed[i]
                    USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            END IF;
            IF item ~ '^[0-9]+$' THEN  -- the common case; the patterns below all need a letter or sign
                t := item;
            ELSE
                IF kind = 'weekday' THEN
                    m := regexp_match(e, weekday_pattern);
                    IF m IS NOT NULL THEN
                        IF m[1] IS NOT NULL THEN
                            IF m[2] !~ '^0*[1-5]$' THEN
                                RAISE EXCEPTION 'invalid cron "%": day of week "%": # takes 1–5 (1#1 is the first Monday of the month)',
                                    cron, shown USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                            END IF;
                            e := m[1];
                            nth := m[2]::integer;
                        ELSE
                            e := m[4];
                            nth := 6;  -- L: the last such day of the month
                        END IF;
                        specials := specials + 1;
                    END IF;
                END IF;

                IF kind = 'day' THEN
                    m := regexp_match(e, '^([0-9]+)w$');
                    IF m IS NOT NULL THEN
                        t := m[1];
                        IF length(ltrim(t, '0')) > 2 OR t::integer NOT BETWEEN 1 AND 31 THEN
                            RAISE EXCEPTION 'invalid cron "%": day of month "%": W takes a day 1–31 (15W is the weekday nearest the 15th)',
                                cron, shown USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                        END IF;
                        IF cardinality(items) > 1 THEN
                            RAISE EXCEPTION 'invalid cron "%": day of month "%": W takes a single day, not a list',
                                cron, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                        END IF;
                        nearest_weekday := t::integer;
                        mask := mask | (1::bigint << nearest_weekday);
                        CONTINUE;
                    END IF;
                END IF;

                -- A range, a step, or both: "10-50/5", "*/15", "10/5" (from 10 to the field's end).
                t := e;
                IF t ~ '^[*]/.' THEN
                    t := lo || '-' || hi || substr(t, 2);
                END IF;
                m := regexp_match(t, range_pattern);
                with_step := false;
                IF m IS NULL THEN
                    t := regexp_replace(e, '^(.+)/(.+)$', E'\\1-' || hi || E'/\\2');
                    m := regexp_match(t, range_pattern);
                    with_step := m IS NOT NULL;
                END IF;

                IF m IS NOT NULL THEN
                    low_text := m[1];
                    high_text := CASE WHEN kind = 'day' AND m[2] = 'l' THEN '31' ELSE m[2] END;
                    FOREACH t IN ARRAY ARRAY[low_text, high_text] LOOP
                        IF t !~ '^[0-9]+$' AND NOT (kind = 'month' AND t = ANY (month_names))
                           AND NOT (kind = 'weekday' AND t = ANY (weekday_names)) THEN
                            RAISE EXCEPTION 'invalid cron "%": % "%": "%" is not %', cron, label, shown, t,
                                CASE kind WHEN 'month' THEN 'a month (1–12 or JAN–DEC)'
                                          WHEN 'weekday' THEN 'a day of the week (0–7 or SUN–SAT)'
                                          ELSE format('a number (%s–%s)', lo, hi) END
                                USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                        END IF;
                    END LOOP;
                    IF ltrim(coalesce(m[4], '1'), '0') = '' THEN
                        RAISE EXCEPTION 'invalid cron "%": % "%": the step must be at least 1', cron, label, shown
                            USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                    END IF;
                    -- Steps past the field's width all mean "the first value only".
                    step := CASE WHEN length(ltrim(coalesce(m[4], '1'), '0')) > 3 THEN 1000 ELSE coalesce(m[4], '1')::integer END;
                    low := CASE WHEN low_text ~ '^[0-9]+$' THEN CASE WHEN length(ltrim(low_text, '0')) > 3 THEN 1000 ELSE low_text::integer END
                                WHEN kind = 'month' THEN array_position(month_names, low_text)
                                ELSE array_position(weekday_names, low_text) - 1 END;
                    high := CASE WHEN high_text ~ '^[0-9]+$' THEN CASE WHEN length(ltrim(high_text, '0')) > 3 THEN 1000 ELSE high_text::integer END
                                 WHEN kind = 'month' THEN array_position(month_names, high_text)
                                 ELSE array_position(weekday_names, high_text) - 1 END;
                    IF kind = 'weekday' THEN  -- 7 is Sunday too
                        low := CASE WHEN low = 7 THEN 0 ELSE low END;
                        high := CASE WHEN high = 7 THEN 0 ELSE high END;
                    END IF;
                    IF greatest(low, high) > hi THEN
                        RAISE EXCEPTION 'invalid cron "%": % % in "%" is out of range %', cron, label,
                            CASE WHEN high > hi THEN high_text ELSE low_text END, shown,
                            range_text USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                    END IF;
                    -- croniter's readings: "5-5" is the whole field, while "59/15" (59 = the field's
                    -- end) is 59 alone; a range whose end is below its start wraps around, and its
                    -- second part starts where croniter starts it.
                    IF low = high AND NOT with_step THEN
                        low := lo;
                        high := hi;
                    END IF;
                    IF low < lo THEN
                        RAISE EXCEPTION 'invalid cron "%": % % in "%" is out of range %', cron, label, low, shown, range_text
                            USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                    END IF;
                    bits := 0;
                    IF low = high THEN
                        bits := 1::bigint << low;
                    ELSIF low > high THEN
                        FOR v IN low..hi BY step LOOP
                            bits := bits | (1::bigint << v);
                        END LOOP;
                        last_v := low + (hi - low) / step * step;
                        to_skip := CASE WHEN last_v - lo + step > len_all AND hi - last_v < step
                                        THEN step - (hi - last_v) ELSE 0 END;
                        FOR v IN lo + to_skip..high BY step LOOP
                            bits := bits | (1::bigint << v);
                        END LOOP;
                    ELSE
                        FOR v IN low..high BY step LOOP
                            bits := bits | (1::bigint << v);
                        END LOOP;
                    END IF;
                    mask := mask | bits;
                    CONTINUE;
                END IF;

            END IF;

            -- A single value: a number, a name, L (day of month) or *.
            IF t LIKE '-%' THEN
                RAISE EXCEPTION 'invalid cron "%": % "%": negative numbers are not allowed', cron, label, shown
                    USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            ELSIF t = '*' THEN
                star_item := true;
            ELSIF t ~ '^[0-9]+$' THEN
                v := CASE WHEN length(ltrim(t, '0')) > 3 THEN 1000 ELSE t::integer END;
                IF kind = 'weekday' AND v = 7 THEN
                    v := 0;
                END IF;
                IF v NOT BETWEEN lo AND hi THEN
                    RAISE EXCEPTION 'invalid cron "%": % % is out of range %', cron, label, t,
                        range_text USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                END IF;
                mask := mask | (1::bigint << v);
            ELSIF kind = 'month' AND t = ANY (month_names) THEN
                mask := mask | (1::bigint << array_position(month_names, t));
            ELSIF kind = 'weekday' AND t = ANY (weekday_names) THEN
                v := array_position(weekday_names, t) - 1;
                mask := mask | (1::bigint << v);
            ELSIF kind = 'day' AND t = 'l' THEN
                mask := mask | 1;
                CONTINUE;
            ELSE
                RAISE EXCEPTION 'invalid cron "%": % "%" is not %', cron, label, shown, allowed
                    USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            END IF;
            IF nth IS NOT NULL THEN
                nth_mask := nth_mask | (1::bigint << (8 * v + nth));
            END IF;
        END LOOP;
        IF specials > 0 AND specials < cardinality(items) THEN  -- as cron.py: all or none
            RAISE EXCEPTION 'invalid cron "%": day of week "%": # and L cannot be mixed with plain days of the week',
                cron, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END IF;

        -- croniter reads a field listing every value as * ... except day of month (or day of week)
        -- when the other day field has no *: then it stays a list, and the two are OR-ed.
        elements := bit_count(mask::bit(64))::integer + star_item::integer;
        collapsed := elements = len_all
            AND NOT ((kind = 'day' AND position('*' IN weekday_text) = 0)
                     OR (kind = 'weekday' AND position('*' IN day_text) = 0));
        is_star := star_item OR collapsed;
        full_mask := ((1::bigint << (hi + 1)) - 1) & ~((1::bigint << lo) - 1);
        CASE kind
            WHEN 'second' THEN seconds := CASE WHEN is_star THEN full_mask ELSE mask END;
            WHEN 'minute' THEN minutes := CASE WHEN is_star THEN full_mask ELSE mask END;
            WHEN 'hour' THEN
                hours := CASE WHEN is_star THEN full_mask ELSE mask END;
                every_hour := is_star;  -- every hour covered: a repeated hour fires at each reading
            WHEN 'month' THEN months := CASE WHEN is_star THEN full_mask ELSE mask END;
            WHEN 'day' THEN days := CASE WHEN is_star THEN NULL ELSE mask END;
            ELSE
                weekdays := CASE WHEN is_star THEN NULL ELSE mask END;
                IF specials > 0 THEN
                    nth_weekdays := nth_mask;
                END IF;
        END CASE;
    END LOOP;

    -- As croniter (and so parse_cron) does: a cron must fire within 50 years of 2000-01-01.
    IF (days IS NOT NULL OR nth_weekdays IS NOT NULL) AND reminderd.cron_next_wall(
        CASE WHEN with_seconds THEN timestamp '2000-01-01 00:00:01' ELSE timestamp '2000-01-01 00:01' END,
        seconds, minutes, hours, months, days, nearest_weekday, weekdays, nth_weekdays) IS NULL
    THEN
        RAISE EXCEPTION 'invalid cron "%": it never fires', cron
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'No day matches its day of month, month and day of week in 50 years from 2000-01-01.',
                  HINT = 'Check the day against the month: there is no 30 February, and no 31st in April, June, September or November.';
    END IF;
END
$$;

-- The first wall time at or after `start` that the fields of reminderd.cron_parse() allow; NULL when
-- none comes within 50 calendar years (croniter's limit). croniter's rules for the day fields: both
-- restricted, a day matching either fires; with # or W there, each side keeps its # or W and both
-- sides must be able to fire.
CREATE FUNCTION reminderd.cron_next_wall(
    start timestamp, seconds bigint, minutes bigint, hours bigint, months bigint,
    days bigint, nearest_weekday integer, weekdays bigint, nth_weekdays bigint
) RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    y          integer := extract(year FROM start);
    mo         integer := extract(month FROM start);
    d          integer := extract(day FROM start);
    h          integer := extract(hour FROM start);
    mi         integer := extract(minute FROM start);
    s          integer := floor(extract(second FROM start));
    last_year  integer := least(y + 50, 9999);
    day_or     boolean := days IS NOT NULL AND weekdays IS NOT NULL;
    one        constant bigint := 1;
    days_in    integer;
    first_dow  integer;
    valid      bigint;
    by_day     bigint;
    by_weekday bigint;
    candidates bigint;
    rotated    bigint;
    bits       bigint;
    wd         integer;
    wd_dow     integer;
    first_day  integer;
    dd         integer;
    hh         integer;
    mm         integer;
    ss         integer;
    either     timestamp;
    other      timestamp;
BEGIN
    IF start IS NULL OR seconds IS NULL OR minutes IS NULL OR hours IS NULL OR months IS NULL THEN
        RETURN NULL;
    END IF;
    IF day_or AND (nth_weekdays IS NOT NULL OR nearest_weekday IS NOT NULL) THEN
        either := reminderd.cron_next_wall(start, seconds, minutes, hours, months, days, nearest_weekday, NULL, nth_weekdays);
        other := reminderd.cron_next_wall(start, seconds, minutes, hours, months, NULL, nearest_weekday, weekdays, nth_weekdays);
        RETURN CASE WHEN either IS NULL OR other IS NULL THEN NULL ELSE least(either, other) END;
    END IF;
    LOOP
        IF y > last_year THEN
            RETURN NULL;
        END IF;
        IF (months >> mo) & 1 = 0 THEN  -- on to the next allowed month
            bits := months & (-one << mo);
            IF bits = 0 THEN
                y := y + 1;
                bits := months;
            END IF;
            mo := bit_count(((bits & -bits) - 1)::bit(64));
            d := 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        days_in := CASE WHEN mo = 2 THEN CASE WHEN (y % 4 = 0 AND y % 100 <> 0) OR y % 400 = 0 THEN 29 ELSE 28 END
                        WHEN mo IN (4, 6, 9, 11) THEN 30 ELSE 31 END;
        first_dow := ((make_date(y, mo, 1) - date '2000-01-02') % 7 + 7) % 7;  -- 0 = Sunday
        valid := (one << (days_in + 1)) - 2;
        -- Days of this month allowed by the day-of-month field (bit d for day d) ...
        IF nearest_weekday IS NOT NULL THEN
            wd := least(nearest_weekday, days_in);
            wd_dow := (first_dow + wd - 1) % 7;
            wd := CASE WHEN wd_dow = 6 THEN CASE WHEN wd > 1 THEN wd - 1 ELSE wd + 2 END
                       WHEN wd_dow = 0 THEN CASE WHEN wd < days_in THEN wd + 1 ELSE wd - 2 END
                       ELSE wd END;
            by_day := one << wd;
        ELSIF days IS NULL THEN
            by_day := valid;
        ELSE
            by_day := (days & valid) | CASE WHEN days & 1 = 1 THEN one << days_in ELSE 0 END;
        END IF;
        -- ... and by the day-of-week field.
        IF nth_weekdays IS NOT NULL THEN
            by_weekday := 0;
            FOR w IN 0..6 LOOP
                bits := (nth_weekdays >> (8 * w)) & 255;
                CONTINUE WHEN bits = 0;
                first_day := 1 + (w - first_dow + 7) % 7;
                FOR k IN 1..5 LOOP
                    IF (bits >> k) & 1 = 1 AND first_day + 7 * (k - 1) <= days_in THEN
                        by_weekday := by_weekday | (one << (first_day + 7 * (k - 1)));
                    END IF;
                END LOOP;
                IF (bits >> 6) & 1 = 1 THEN
                    by_weekday := by_weekday | (one << (first_day + 7 * ((days_in - first_day) / 7)));
                END IF;
            END LOOP;
        ELSIF weekdays IS NULL THEN
            by_weekday := valid;
        ELSE
            rotated := ((weekdays >> first_dow) | (weekdays << (7 - first_dow))) & 127;  -- bit j: day j + 1
            -- (PostgreSQL gives | & << >> one precedence, left to right: hence the brackets.)
            by_weekday := ((rotated | (rotated << 7) | (rotated << 14) | (rotated << 21) | (rotated << 28)) << 1) & valid;
        END IF;
        candidates := CASE WHEN day_or THEN by_day | by_weekday ELSE by_day & by_weekday END;
        candidates := candidates & (-one << d);
        WHILE candidates <> 0 LOOP
            dd := bit_count(((candidates & -candidates) - 1)::bit(64));
            IF dd > d THEN
                d := dd; h := 0; mi := 0; s := 0;
            END IF;
            -- The first time of day at or after h:mi:s.
            bits := hours & (-one << h);
            WHILE bits <> 0 LOOP
                hh := bit_count(((bits & -bits) - 1)::bit(64));
                bits := minutes & (-one << CASE WHEN hh = h THEN mi ELSE 0 END);
                WHILE bits <> 0 LOOP
                    mm := bit_count(((bits & -bits) - 1)::bit(64));
                    bits := seconds & (-one << CASE WHEN hh = h AND mm = mi THEN s ELSE 0 END);
                    IF bits <> 0 THEN
                        ss := bit_count(((bits & -bits) - 1)::bit(64));
                        RETURN make_timestamp(y, mo, dd, hh, mm, ss);
                    END IF;
                    bits := minutes & (-one << (mm + 1));
                END LOOP;
                bits := hours & (-one << (hh + 1));
            END LOOP;
            candidates := candidates & (candidates - 1);
            d := dd + 1; h := 0; mi := 0; s := 0;
        END LOOP;
        mo := mo + 1;
        d := 1; h := 0; mi := 0; s := 0;
        IF mo > 12 THEN
            mo := 1;
            y := y + 1;
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION reminderd.next_cron_occurrence(cron text, timezone text, after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- saved and restored around each call; set to `timezone` below
AS $$
DECLARE
    window_size constant interval := interval '3 hours';  -- wider than any clock change
    tiny        constant interval := interval '1 microsecond';
    max_restarts constant integer := 8;
    f           record;
    unit        interval;
    unit_name   text;
    cursor_wall timestamp;
    candidate   timestamp;
    instant     timestamptz;
    first       timestamptz;
    jump        timestamptz;
    best        timestamptz;
    found       timestamptz;
    zone_offset interval;
    actual      interval;
    elsewhere   interval;
    offsets     interval[];
    tried       interval[] := '{}';
BEGIN
    IF NOT isfinite(after) THEN
        RAISE EXCEPTION 'after must be a finite instant, not %', after USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO f FROM reminderd.cron_parse(cron);

    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);

    -- croniter steps from a wall time to the first one strictly after it, in whole minutes (or
    -- seconds); the DST rules below are wallclock.py's next_instant, step for step.
    unit := CASE WHEN f.with_seconds THEN interval '1 second' ELSE interval '1 minute' END;
    unit_name := CASE WHEN f.with_seconds THEN 'second' ELSE 'minute' END;

    IF NOT f.every_hour THEN
        -- First readings (or jumps) never run backwards: the first wall time after `after`'s own
        -- that maps to a later instant is the answer. Wall times repeated after a backward jump,
        -- first read before `after`, are passed over in one step.
        cursor_wall := after::timestamp;
        FOR attempt IN 1..max_restarts LOOP
            candidate := reminderd.cron_next_wall(date_trunc(unit_name, cursor_wall + unit),
                f.seconds, f.minutes, f.hours, f.months, f.days, f.nearest_weekday, f.weekdays, f.nth_weekdays);
            IF candidate IS NULL THEN
                RAISE EXCEPTION 'cron "%" does not fire in the 50 years after % in %', cron, cursor_wall, timezone
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'The search looks 50 years ahead, as croniter''s does, and not past the year 9999.';
            END IF;
            instant := reminderd.first_reading(candidate);
            IF instant > after THEN
                RETURN instant;
            END IF;
            jump := reminderd.offset_change(instant, after);
            cursor_wall := (jump AT TIME ZONE interval '0')
                + (instant::timestamp - (instant AT TIME ZONE interval '0')) - tiny;
        END LOOP;
        RAISE EXCEPTION 'no fire time found for cron "%" in % after %', cron, timezone, after AT TIME ZONE interval '0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Every real instant a wall time is read (and the jump over skipped ones): the earliest over
    -- the UTC offsets in force near `after`, and over any era a candidate lands in.
    offsets := ARRAY[
        (after - window_size)::timestamp - ((after - window_size) AT TIME ZONE interval '0'),
        after::timestamp - (after AT TIME ZONE interval '0'),
        (after + window_size)::timestamp - ((after + window_size) AT TIME ZONE interval '0')];
    WHILE cardinality(offsets) > 0 LOOP
        zone_offset := offsets[cardinality(offsets)];
        offsets := offsets[1:cardinality(offsets) - 1];
        CONTINUE WHEN zone_offset = ANY (tried);
        tried := tried || zone_offset;
        -- The first instant after `after` at which the clock, showing UTC+zone_offset, reads one of
        -- the cron's wall times (or the jump over a skipped one); or, when this offset's era is
        -- over by then, the offset in force there, to be tried too.
        found := NULL;
        elsewhere := NULL;
        cursor_wall := (after AT TIME ZONE interval '0') + zone_offset;
        FOR attempt IN 1..max_restarts + 1 LOOP
            IF attempt > max_restarts THEN
                RAISE EXCEPTION 'no fire time found for cron "%" in % after %', cron, timezone, after AT TIME ZONE interval '0'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            candidate := reminderd.cron_next_wall(date_trunc(unit_name, cursor_wall + unit),
                f.seconds, f.minutes, f.hours, f.months, f.days, f.nearest_weekday, f.weekdays, f.nth_weekdays);
            IF candidate IS NULL THEN
                RAISE EXCEPTION 'cron "%" does not fire in the 50 years after % in %', cron, cursor_wall, timezone
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'The search looks 50 years ahead, as croniter''s does, and not past the year 9999.';
            END IF;
            instant := (candidate - zone_offset) AT TIME ZONE interval '0';
            actual := instant::timestamp - (instant AT TIME ZONE interval '0');
            IF actual = zone_offset THEN
                found := instant;
                EXIT;
            END IF;
            first := reminderd.first_reading(candidate);
            IF first::timestamp = candidate THEN  -- a real wall time, but read under another offset
                IF (instant + window_size)::timestamp - ((instant + window_size) AT TIME ZONE interval '0')
                   <> zone_offset THEN
                    elsewhere := actual;  -- this offset's era is over
                    EXIT;
                END IF;
                jump := reminderd.offset_change(instant, instant + window_size);  -- or soon to begin
                cursor_wall := (jump AT TIME ZONE interval '0') + zone_offset - tiny;
            ELSIF first > after THEN  -- skipped by a forward jump: it fires at the jump
                found := first;
                EXIT;
            ELSE  -- skipped, and the jump is past: go on from the end of the gap
                cursor_wall := first::timestamp - tiny;
            END IF;
        END LOOP;
        IF found IS NOT NULL AND (best IS NULL OR found < best) THEN
            best := found;
        END IF;
        IF elsewhere IS NOT NULL THEN
            offsets := offsets || elsewhere;
        END IF;
    END LOOP;
    RETURN best;  -- NULL only where wallclock.py returns None too
END
$$;

-- Pure: every role may call them (a DBA's read-only role too); no PUBLIC execute, as everywhere.
REVOKE EXECUTE ON FUNCTION
    reminderd.check_timezone(text, text),
    reminderd.first_reading(timestamp),
    reminderd.offset_change(timestamptz, timestamptz),
    reminderd.wall_time(timestamptz, text),
    reminderd.cron_parse(text),
    reminderd.cron_next_wall(timestamp, bigint, bigint, bigint, bigint, bigint, integer, bigint, bigint),
    reminderd.next_cron_occurrence(text, text, timestamptz)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.check_timezone(text, text),
    reminderd.first_reading(timestamp),
    reminderd.offset_change(timestamptz, timestamptz),
    reminderd.wall_time(timestamptz, text),
    reminderd.cron_parse(text),
    reminderd.cron_next_wall(timestamp, bigint, bigint, bigint, bigint, bigint, integer, bigint, bigint),
    reminderd.next_cron_occurrence(text, text, timestamptz)
TO reminderd_app, reminderd_daemon, reminderd_readonly;

-- Functions: checks and the first occurrence -----------------------------------------------------

-- Refuse a cron the daemon could not read, in a sentence: one of the wrong shape (23514, carrying
-- the name of the constraint cron_shape, as the constraint's own error would), a bad field or one
-- that never fires (22023, in reminderd.cron_parse()'s words: `invalid cron "61 * * * *": minute
-- 61 is out of range 0–59`). `subject` ("message acme / r1") says whose cron it is.
CREATE FUNCTION reminderd.check_cron(cron text, subject text) RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    IF cron !~* '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$' THEN
        RAISE EXCEPTION 'cron "%" of % is not five fields (minute hour day month weekday)', cron, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'cron_shape',
                  HINT = 'Five fields like ''0 9 * * 1-5'', six with a leading seconds field, or @hourly, @daily, '
                         '@weekly, @monthly, @yearly.';
    END IF;
    PERFORM reminderd.cron_parse(cron);
END
$$;

-- The first occurrence of a recurrence after `after`, computed in SQL: how schedule_cron() gives a
-- new cron row its first fire_at (holidays aside: see schedule_recurring). NULL for an RRULE: the
-- daemon's planner, woken by the NOTIFY 'plan' the insert sends, computes it with the code that
-- times every later occurrence (reminderd/schedule), within a poll interval.
CREATE FUNCTION reminderd.first_occurrence(cron text, rrule text, timezone text, after timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT reminderd.next_cron_occurrence(cron, timezone, after)
$$;

-- Functions: scheduling ---------------------------------------------------------------------------

-- schedule_recurring gains first_fire_at: the row's first fire_at, when the caller computed it
-- (the CLI, with the daemon's code); else reminderd.first_occurrence(), unless a holiday may fall
-- on it; else the daemon plans it. Its timezone and cron are checked first, with the sentences a
-- plain INSERT gets.
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
    new_id  bigint;
    due     timestamptz;
    zone    text := coalesce(schedule_recurring.timezone, 'UTC');
    subject text := format('message %s / %s', schedule_recurring.tenant_id, schedule_recurring.ref_id);
    tenant  record;
BEGIN
    IF num_nonnulls(schedule_recurring.cron, schedule_recurring.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of cron and rrule (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_tenant(schedule_recurring.tenant_id);
    PERFORM reminderd.check_timezone(zone, subject);
    PERFORM reminderd.check_cron(schedule_recurring.cron, subject);
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
         calendar, holiday_rule, backfill, max_lateness, max_attempts, fire_at)
    VALUES (schedule_recurring.tenant_id, schedule_recurring.ref_id, schedule_recurring.cron,
            schedule_recurring.rrule, zone, coalesce(schedule_recurring.payload, '{}'),
            schedule_recurring.callback_url,
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

-- As before, plus: a callback_url that is not http(s) is named in a sentence (the error carries
-- the constraint's name, callback_url_is_http, as the constraint's own would); the timezone is one
-- the daemon reads (check_timezone: "america/new_york" is refused, with the right spelling); a
-- cron is one the daemon reads (check_cron: its shape, each field, and that it fires); a missing
-- DTSTART is the local midnight read as the daemon reads the zone.
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.timezone IS NOT NULL THEN  -- NULL: the column's NOT NULL says so
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
    reminderd.check_cron(text, text),
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
    reminderd.check_cron(text, text),
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
