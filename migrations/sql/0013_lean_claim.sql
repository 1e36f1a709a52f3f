-- 0013 a leaner write path: what PostgreSQL does per message on the way in (the insert's triggers)
-- and on every change of it (the claim, the outcome), measured and cut (issue 13). Nothing here
-- changes what is accepted, refused or recorded.
-- Run by migrations/versions/0013_lean_claim.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- PostgreSQL checks every CHECK constraint on every UPDATE, whatever it changed: the claim and the
-- outcome each evaluated category_format, whose bounded repetition ({0,31}) is slow in PostgreSQL's
-- regex engine: 1.5 µs per check, 0.2 µs as below, the same rule (a lowercase letter, then letters,
-- digits, _ or -, at most 32 characters). Re-adding it checks the rows there once: a scan of the
-- table under its lock, ~0.3 s per million rows.
ALTER TABLE reminderd.scheduled_messages
    DROP CONSTRAINT category_format,
    ADD CONSTRAINT category_format CHECK (category ~ '^[a-z][a-z0-9_-]*$' AND char_length(category) <= 32);

-- Read by no query since 0006 (schedule() finds a retried call's message through
-- scheduled_messages_tenant_ref), yet written on every send.
DROP INDEX reminderd.scheduled_messages_sent_ref;

-- A due-now row is checked at insert (the arrival trigger): reminderd.config is read in one pass
-- (a scan of its few rows) instead of one query per setting, and the sentence's date is formatted
-- only for a refusal.
CREATE OR REPLACE FUNCTION reminderd.check_arrival(
    tenant_id text, ref_id text, fire_at timestamptz, backfill text, max_lateness interval
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    late     interval := now() - check_arrival.fire_at;
    policy   text;
    lateness interval;
    lookback interval;
    allowed  interval;
    due      text;  -- for the refusal's sentence
    setting  record;
    configured_lateness text;
    configured_lookback text;
BEGIN
    IF check_arrival.fire_at IS NULL OR late <= interval '0' THEN
        RETURN;
    END IF;
    -- reminderd.config in one pass: a query per setting would cost every due-now insert three.
    FOR setting IN
        SELECT c.key, c.value FROM reminderd.config c
    LOOP
        CASE setting.key
            WHEN 'backfill' THEN policy := setting.value;
            WHEN 'max_lateness' THEN configured_lateness := setting.value;
            WHEN 'lookback' THEN configured_lookback := setting.value;
            ELSE NULL;
        END CASE;
    END LOOP;
    policy := coalesce(check_arrival.backfill, policy, 'send');
    lateness := coalesce(check_arrival.max_lateness, configured_lateness::interval, interval '30 minutes');
    lookback := coalesce(configured_lookback::interval, interval '1 day');
    allowed := CASE policy WHEN 'latest' THEN NULL
                           WHEN 'skip' THEN least(lateness, interval '60 seconds')
                           ELSE lateness END;
    IF late >= lookback OR late > allowed THEN
        due := to_char(check_arrival.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
    END IF;
    IF late >= lookback THEN
        RAISE EXCEPTION 'message % / % is too late to send: due %, % ago', check_arrival.tenant_id,
            check_arrival.ref_id, due, reminderd.duration_text(late)
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Nothing older than the lookback (%s: reminderd.config ''lookback'', '
                                  'REMINDERD_LOOKBACK) is ever sent, whatever the backfill policy; it '
                                  'would expire at once.', reminderd.duration_text(lookback)),
                  HINT = 'Schedule it for now or later.';
    END IF;
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

-- The two other row triggers of every insert: UTC, the default zone, needs no check_timezone() (its
-- SET TimeZone clause costs a call); and each trigger asks reminderd.tenants only when the answer
-- matters, with a plain SELECT (a condition holding a subquery runs as a query every time).
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_has_default boolean;  -- NULL: no such tenant
BEGIN
    IF NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN  -- UTC needs no check; NULL: the column's NOT NULL says so
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

CREATE OR REPLACE FUNCTION reminderd.hold_for_paused_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_paused boolean;
BEGIN
    IF NEW.status = 'pending' THEN  -- a query only when it can matter (the condition: an expression)
        SELECT t.paused INTO tenant_paused FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        IF tenant_paused THEN
            NEW.status := 'paused';
            NEW.paused_by := 'tenant';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
