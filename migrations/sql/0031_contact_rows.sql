-- 0031 contact rows (docs/audiences.md, "Messages for a contact"):
--   plain INSERT  A row naming a contact written by a plain INSERT or COPY (not schedule()) was
--                 read in UTC with timezone_source 'message' (the column's default), so a change of
--                 its contact's zone never re-planned it, and an unknown contact was taken. Now
--                 scheduled_messages.timezone has no default: a row that names no zone is given its
--                 contact's, as schedule() gives it (reminderd.message_timezone, with its source),
--                 or UTC when it names no contact; a row naming a contact that does not exist is
--                 refused (P0002, 'unknown contact "x" of tenant "acme"'). Rows without a contact
--                 pay one NULL test; a broadcast's rows are staged from their contacts as before.
-- Rows written before: unchanged (one that named a contact and was left at UTC cannot be told from
-- one that asked for UTC).
-- Run by migrations/versions/0031_contact_rows.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

ALTER TABLE reminderd.scheduled_messages ALTER COLUMN timezone DROP DEFAULT;

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
    -- A row naming a contact (migration 0031): with no zone of its own, the contact's, as schedule()
    -- reads it (message_timezone, with its source); an unknown contact is refused (P0002). A
    -- broadcast's rows were staged from their contacts. A row naming neither is UTC.
    IF NEW.contact_id IS NOT NULL AND NEW.broadcast_id IS NULL THEN
        IF NEW.timezone IS NULL THEN
            SELECT z.zone, z.source INTO NEW.timezone, NEW.timezone_source
            FROM reminderd.message_timezone(NEW.tenant_id, NEW.contact_id, NULL) AS z;
        ELSIF NOT EXISTS (SELECT FROM reminderd.contacts c
                          WHERE c.tenant_id = NEW.tenant_id AND c.contact_id = NEW.contact_id) THEN
            PERFORM reminderd.message_timezone(NEW.tenant_id, NEW.contact_id, NEW.timezone);  -- refuses it
        END IF;
    ELSIF NEW.timezone IS NULL THEN
        NEW.timezone := 'UTC';
    END IF;
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
