-- 0030 recurrence ends and a contact's identity:
--   rrule      A recurring message whose RRULE's own UNTIL is already past was accepted, then
--              finished by the planner at its first planning without ever firing (dead on arrival,
--              "finished: the RRULE has no more occurrences"). admit_message now refuses it as it
--              refuses a past until (22008, "ends before it starts"; docs/sql.md, "Nothing dead on
--              arrival"), reading UNTIL=…Z as an instant and a floating date-time or a date (its
--              whole day) on the row's clock (reminderd.rrule_until, new). Only rows whose rrule
--              mentions UNTIL pay for it; a rule with an RDATE (which may still lie ahead) is left to
--              the planner. Rows already stored are untouched.
--   contacts   TRUNCATE reminderd.contacts (which fires no DELETE trigger) and an UPDATE of a
--              contact's contact_id or tenant_id left its live messages pointing at a contact that
--              is gone (0027 cancels them on DELETE only). Both are refused now (0A000), with a
--              hint to delete instead (docs/audiences.md, "Contacts").

-- The instant an RRULE's UNTIL ends it, or NULL (no UNTIL, or one it cannot read: check_message and
-- the daemon name those). RFC 5545: UNTIL=…Z is an instant; a floating date-time, or a date (its
-- whole day: until 23:59:59), is a wall time read in the row's `timezone` (rrule.py _until).
CREATE FUNCTION reminderd.rrule_until(rrule text, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    part constant text[] := regexp_match(rrule, '(?:^|[\n:;])\s*UNTIL\s*=\s*(\d{8})(?:T(\d{6})(Z?))?\s*(?:;|\r?\n|$)', 'i');
    digits text;
    month  int;
    wall   timestamp;
BEGIN
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    digits := part[1] || coalesce(part[2], '235959');
    month := substr(digits, 5, 2)::int;
    -- 20260230, 250000: not a time. Tested, not caught: an EXCEPTION block would cost every such row
    -- a subtransaction.
    IF substr(digits, 1, 4)::int = 0 OR month NOT BETWEEN 1 AND 12 OR substr(digits, 7, 2)::int NOT BETWEEN 1 AND
           extract(day FROM make_date(substr(digits, 1, 4)::int, month, 1) + interval '1 month - 1 day')
       OR substr(digits, 9, 2)::int > 23 OR substr(digits, 11, 2)::int > 59 OR substr(digits, 13, 2)::int > 59
    THEN
        RETURN NULL;
    END IF;
    wall := make_timestamp(substr(digits, 1, 4)::int, month, substr(digits, 7, 2)::int,
                           substr(digits, 9, 2)::int, substr(digits, 11, 2)::int, substr(digits, 13, 2)::int);
    IF part[3] <> '' THEN
        RETURN wall AT TIME ZONE 'UTC';
    END IF;
    RETURN reminderd.local_instant(wall, timezone);
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.rrule_until(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.rrule_until(text, text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;

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
            ELSIF NEW.rrule ~* 'UNTIL' AND NEW.rrule !~* '(^|\n)\s*RDATE'
                  AND reminderd.rrule_until(NEW.rrule, NEW.timezone) < now() THEN  -- its RRULE's own (migration 0030)
                RAISE EXCEPTION 'message % / % ends before it starts: its RRULE''s UNTIL % is already past',
                    NEW.tenant_id, NEW.ref_id,
                    upper(substring(NEW.rrule FROM '(?i)UNTIL\s*=\s*([0-9TZ]+)'))
                    USING ERRCODE = 'datetime_field_overflow',
                          DETAIL = format('UNTIL ends it at %s; a recurring message sends nothing after it, so this '
                                          'one would finish at once.',
                                          to_char(reminderd.rrule_until(NEW.rrule, NEW.timezone) AT TIME ZONE 'UTC',
                                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                          HINT = 'Give the RRULE an UNTIL in the future (UNTIL=…Z is in UTC, one without Z on the '
                                 'row''s clock), or none.';
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

-- TRUNCATE fires no DELETE trigger: it would leave live messages for contacts that are gone
-- (contacts_cancel_messages cancels them on DELETE only). Refused, saying to delete (migration 0030).
CREATE FUNCTION reminderd.refuse_contacts_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reminderd.contacts cannot be truncated: its contacts'' live messages would be left pointing at nobody'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Delete them instead (DELETE FROM reminderd.contacts, or reminderd.delete_contacts(tenant, ids)): '
                     'their live messages are cancelled.';
END
$$;

-- A contact's id is its identity: its messages and audience memberships name it by it, so moving
-- it would leave them pointing at nobody (migration 0030).
CREATE FUNCTION reminderd.refuse_contact_id_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'contact % / % cannot change its % to %: the id is its identity', OLD.tenant_id, OLD.contact_id,
        CASE WHEN NEW.contact_id IS DISTINCT FROM OLD.contact_id THEN 'contact_id' ELSE 'tenant_id' END,
        CASE WHEN NEW.contact_id IS DISTINCT FROM OLD.contact_id THEN NEW.contact_id ELSE NEW.tenant_id END
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Its messages and audiences name it by its id: delete it and add the other one '
                     '(its live messages are cancelled; schedule them again for the new id).';
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.refuse_contacts_truncate(), reminderd.refuse_contact_id_change() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.refuse_contacts_truncate(), reminderd.refuse_contact_id_change()
TO reminderd_app, reminderd_daemon, reminderd_api;

CREATE TRIGGER contacts_refuse_truncate
    BEFORE TRUNCATE ON reminderd.contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.refuse_contacts_truncate();
CREATE TRIGGER contacts_keep_id
    BEFORE UPDATE OF tenant_id, contact_id ON reminderd.contacts
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id OR OLD.contact_id IS DISTINCT FROM NEW.contact_id)
    EXECUTE FUNCTION reminderd.refuse_contact_id_change();
