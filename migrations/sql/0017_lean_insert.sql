-- 0017 a lean insert: one BEFORE INSERT row trigger on scheduled_messages instead of five, and one
-- AFTER INSERT statement trigger instead of four. Every call of a plpgsql trigger function has a
-- fixed cost, and the five row triggers read the same tenant row three times; the statement
-- triggers each paid their set-up for the one row of the API's common single-row INSERT. The
-- decisions, their order, the errors (message, DETAIL, HINT, SQLSTATE), the changes to the row
-- and the rows and notifications written after the statement are those of the triggers replaced.
-- The UPDATE triggers keep their functions (hold_for_paused_tenant, check_payload,
-- validate_message, hold_for_disabled_endpoint); the insert-only functions go.
-- Run by migrations/versions/0017_lean_insert.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Admit a new row, making what were five triggers' decisions in their order (they fired in the
-- order of their names): refuse it if it is dead on arrival (was scheduled_messages_arrival:
-- refuse_dead_on_arrival), hold it for a disabled endpoint (hold_disabled_endpoint), hold it for a
-- paused tenant (hold_paused_tenant), refuse a payload over 256 KiB (payload_size), validate it
-- (validate: validate_message). A broadcast's rows are held and checked by stage_broadcast for all
-- its rows at once (one staged late follows its backfill policy when claimed): for them only the
-- endpoint hold and the payload size apply, as before. The tenant's row is read once, with whether
-- it has a disabled endpoint; reminderd.config only for a one-off already late.
CREATE FUNCTION reminderd.admit_message() RETURNS trigger
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
        IF NEW.callback_url !~* '^https?://[^/?#[:space:]]+' THEN
            RAISE EXCEPTION 'callback_url "%" of message % / % is not an http(s) URL', NEW.callback_url,
                NEW.tenant_id, NEW.ref_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'callback_url_is_http',
                      HINT = 'Give an absolute http:// or https:// URL, like https://example.com/hooks.';
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

-- After each INSERT statement, what were four statement triggers, in their order (audit_insert,
-- count_broadcast_inserts, notify_due_soon, count_scheduled): the audit trail (one INSERT per
-- statement, not per row, so the daemon's batches stay batches), the broadcasts' counts (one row
-- per occurrence the statement staged, with how many rows are in each state), the wake-up for the
-- daemons (when a row is due within 10 minutes, their poll interval at most, or a cron row needs
-- planning: one notification per statement) and the tenants' usage (scheduled: new messages).
CREATE FUNCTION reminderd.record_inserts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest  timestamptz;
    unplanned boolean;
    staged    boolean;  -- rows of a broadcast's occurrence
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    SELECT n.id, n.tenant_id, n.ref_id, coalesce(n.last_event, 'created'), n.status, n.fire_at,
           CASE WHEN n.status = 'paused' THEN 'tenant is paused'
                WHEN n.status = 'awaiting_approval' THEN format('broadcast %s awaits approval', n.broadcast_id)
                WHEN n.contact_id IS NOT NULL
                    THEN format('contact %s: timezone %s (%s)', n.contact_id, n.timezone, n.timezone_source) END,
           current_user
    FROM changed_rows n;
    SELECT min(n.fire_at) FILTER (WHERE n.status = 'pending'),
           bool_or(n.fire_at IS NULL) FILTER (WHERE n.status = 'pending'),
           bool_or(n.broadcast_id IS NOT NULL AND n.contact_id IS NOT NULL)
    INTO earliest, unplanned, staged
    FROM changed_rows n;
    IF staged THEN
        INSERT INTO reminderd.broadcast_counts
            (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
        SELECT n.broadcast_id, n.local_time, n.tenant_id,
               count(*) FILTER (WHERE s.state = 'waiting'), count(*) FILTER (WHERE s.state = 'held'),
               count(*) FILTER (WHERE s.state = 'sent'), count(*) FILTER (WHERE s.state = 'failed'),
               count(*) FILTER (WHERE s.state = 'expired'), count(*) FILTER (WHERE s.state = 'cancelled')
        FROM changed_rows n
        CROSS JOIN LATERAL (SELECT reminderd.broadcast_state(n.status, n.last_event) AS state) AS s
        WHERE n.broadcast_id IS NOT NULL AND n.contact_id IS NOT NULL
        GROUP BY 1, 2, 3;
    END IF;
    IF unplanned THEN
        PERFORM pg_notify('reminderd_due', 'plan');
    ELSIF earliest < clock_timestamp() + interval '10 minutes' THEN
        PERFORM pg_notify('reminderd_due', extract(epoch FROM earliest)::text);
    END IF;
    INSERT INTO reminderd.usage_increments (tenant_id, scheduled)
    SELECT n.tenant_id, count(*) FROM changed_rows n GROUP BY n.tenant_id;
    RETURN NULL;
END
$$;

DROP TRIGGER scheduled_messages_arrival ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_hold_disabled_endpoint ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_hold_paused_tenant ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_audit_insert ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_count_broadcast_insert ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_notify_insert ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_usage_insert ON reminderd.scheduled_messages;
-- The payload's size and the validation stay on UPDATE, with the same names (so the BEFORE UPDATE
-- triggers fire in the same order as before).
CREATE OR REPLACE TRIGGER scheduled_messages_payload_size
    BEFORE UPDATE OF payload ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.check_payload();
CREATE OR REPLACE TRIGGER scheduled_messages_validate
    BEFORE UPDATE OF timezone, callback_url, tenant_id, rrule, cron ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL) EXECUTE FUNCTION reminderd.validate_message();

CREATE TRIGGER scheduled_messages_admit
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.admit_message();
CREATE TRIGGER scheduled_messages_record_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.record_inserts();

DROP FUNCTION reminderd.refuse_dead_on_arrival();
DROP FUNCTION reminderd.audit_insert();
DROP FUNCTION reminderd.count_broadcast_inserts();
DROP FUNCTION reminderd.notify_due_soon();
DROP FUNCTION reminderd.count_scheduled();

-- As the functions they replace: the roles whose inserts run them.
REVOKE EXECUTE ON FUNCTION reminderd.admit_message(), reminderd.record_inserts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.admit_message(), reminderd.record_inserts()
    TO reminderd_app, reminderd_daemon, reminderd_api;
