-- 0022 broadcasts' times and values, where 0021 left PostgreSQL's own errors or a stager failing
-- at every round (docs/sql.md, "Errors and SQLSTATEs"):
--   wall times               broadcast_preview given -infinity or infinity said "cannot subtract
--                            infinite timestamps"; a wall time near the end of time (294276-12-31 in
--                            a zone behind UTC) "timestamp out of range", in broadcast_preview,
--                            broadcast, schedule and schedule_cadence alike. Now 22008 naming
--                            local_time, with a HINT (check_local_time, called by local_instant).
--   recurring broadcasts     an until that is not finite, a stage_ahead of a million years: taken,
--                            then the daemon's stager failed on them at every round. Now refused when
--                            written (validate_broadcast_request: 22008, 22023).
--   written before 0021      a recurring broadcast whose values its messages could not have
--                            (max_attempts 0, backfill 'bogus', a calendar 'xx', a payload over
--                            256 KiB) failed at staging each time an occurrence came: stage_broadcast
--                            now ends such a one once, with the reason (ended_reason, last_error).
-- Rows written before: live recurring broadcasts holding such values or times are repaired or ended
-- at the end, each with the reason.
-- Run by migrations/versions/0022_broadcast_times.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- The helpers ----------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION reminderd.refuse_infinite_time(field text, shown text, subject text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION '% % of % is not a finite time', field, shown, coalesce(subject, 'this call')
        USING ERRCODE = 'datetime_field_overflow',
              HINT = CASE field
                         WHEN 'local_time' THEN 'Give a wall time, like ''2026-12-24 09:00''.'
                         WHEN 'first_fire_at' THEN 'Leave it NULL: the first occurrence after now is planned for you.'
                         WHEN 'until' THEN 'Give the time it ends at, or NULL for no end.'
                         WHEN 'anchor' THEN 'Give the time its offsets count from, like a renewal date: '
                                            '''2027-03-01 00:00+00''.'
                         ELSE 'Give a time to send it at, like now() + interval ''1 hour''.' END;
END
$$;

-- Refuse (22008) a wall time no zone can place: not finite (refuse_infinite_time), or so near the
-- end of time that a zone's offset takes it past (migration 0022). `subject` says whose it is.
CREATE FUNCTION reminderd.check_local_time(local_time timestamp, subject text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT isfinite(local_time) THEN
        PERFORM reminderd.refuse_infinite_time('local_time', local_time::text, subject);
    ELSIF local_time NOT BETWEEN timestamp '4714-11-26 00:00 BC' AND timestamp '294276-12-30 00:00' THEN
        RAISE EXCEPTION 'local_time % of % is past the range of time a zone can place (4714 BC to 294276 AD)',
            local_time, coalesce(subject, 'this call')
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Give a wall time, like ''2026-12-24 09:00''.';
    END IF;
END
$$;

-- The instant at which the clock in `timezone` first reads `local_time`; a wall time skipped by a
-- forward jump happens at the jump: reminderd.first_reading(), the rule cron times follow too.
CREATE OR REPLACE FUNCTION reminderd.local_instant(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- restored on return; set to `timezone` below
AS $$
BEGIN
    -- Not finite, or so near the end of time that a zone's offset takes it past (migration 0022):
    -- refused naming the field, not "timestamp out of range" / "cannot subtract infinite timestamps".
    IF local_time NOT BETWEEN timestamp '4714-11-26 00:00 BC' AND timestamp '294276-12-30 00:00' THEN
        PERFORM reminderd.check_local_time(local_time);
    END IF;
    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);
    RETURN reminderd.first_reading(local_time);
END
$$;

-- Where wall times come in ----------------------------------------------------------------------

-- What a broadcast at local_time would send, without staging anything (the CLI's --dry-run): per
-- zone, its instant and how many contacts, by where their zone came from.
CREATE OR REPLACE FUNCTION reminderd.broadcast_preview(
    tenant_id text, local_time timestamp, audience text DEFAULT NULL, contact_ids text[] DEFAULT NULL,
    everyone boolean DEFAULT false
) RETURNS TABLE (timezone text, fire_at timestamptz, contacts bigint, from_contact bigint, from_phone bigint,
                 from_country bigint, from_tenant bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    -- A wall time that is not finite, or past the range of time (migration 0022), refused naming it.
    PERFORM reminderd.check_local_time(broadcast_preview.local_time,
                                       format('the broadcast preview of tenant "%s"', broadcast_preview.tenant_id));
    RETURN QUERY
        SELECT a.timezone, reminderd.local_instant(broadcast_preview.local_time, a.timezone), count(*),
               count(*) FILTER (WHERE a.timezone_source = 'contact'), count(*) FILTER (WHERE a.timezone_source = 'phone'),
               count(*) FILTER (WHERE a.timezone_source = 'country'), count(*) FILTER (WHERE a.timezone_source = 'tenant')
        FROM reminderd.audience_contacts(broadcast_preview.tenant_id, broadcast_preview.audience,
                                         broadcast_preview.contact_ids, coalesce(broadcast_preview.everyone, false)) AS a
        GROUP BY a.timezone
        ORDER BY 2 NULLS FIRST, 1;
END
$$;

-- Recurring broadcasts -------------------------------------------------------------------------

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
    -- Times the stager could not count with (migration 0022): an until that is not finite, a
    -- stage_ahead of more than a year (it is subtracted from each occurrence's first instant).
    IF NOT isfinite(NEW.until) AND (TG_OP = 'INSERT' OR NEW.until IS DISTINCT FROM OLD.until) THEN
        PERFORM reminderd.refuse_infinite_time('until', NEW.until::text,
                                               format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id));
    END IF;
    IF NEW.stage_ahead > interval '366 days' AND (TG_OP = 'INSERT' OR NEW.stage_ahead IS DISTINCT FROM OLD.stage_ahead) THEN
        RAISE EXCEPTION 'stage_ahead % of broadcast "%" of tenant "%" is more than a year', NEW.stage_ahead,
            NEW.ref_prefix, NEW.tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long before an occurrence its messages are written, like 1 hour (at most 366 days).';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER broadcast_requests_validate ON reminderd.broadcast_requests;
CREATE TRIGGER broadcast_requests_validate
    BEFORE INSERT OR UPDATE OF callback_url, category, calendar, holiday_rule, backfill, max_lateness, max_attempts,
                               until, stage_ahead
    ON reminderd.broadcast_requests
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_broadcast_request();

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
    -- Values its messages could not have (check_message_values), a payload over 256 KiB: a request
    -- written before migration 0021 refused them ends here, once, saying why (migration 0022),
    -- instead of failing at every occurrence. A one-off's were checked when it was written.
    IF recurring THEN
        BEGIN
            PERFORM reminderd.check_message_values(format('broadcast "%s" of tenant "%s"', request.ref_prefix,
                                                          request.tenant_id),
                                                   NULL, NULL, request.max_attempts, request.category, request.calendar,
                                                   request.holiday_rule, request.backfill, request.max_lateness,
                                                   'broadcast_category_format');
        EXCEPTION WHEN check_violation THEN
            problem := SQLERRM;
        END;
        IF problem IS NULL AND pg_column_size(request.payload::text::jsonb) > 262144 THEN  -- as written, not as stored
            problem := format('its payload is %s bytes; at most 262144 (256 KiB)', pg_column_size(request.payload::text::jsonb));
        END IF;
        IF problem IS NOT NULL THEN
            UPDATE reminderd.broadcast_requests r
            SET next_occurrence = NULL, ended_at = now(), ended_reason = 'cannot be staged: ' || problem,
                last_error = format('occurrence %s not staged: %s', to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'),
                                    problem),
                updated_at = now()
            WHERE r.id = request.id;
            RETURN 0;
        END IF;
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

-- Who may call it (functions get PUBLIC EXECUTE by default): every role that places a wall time.
REVOKE EXECUTE ON FUNCTION reminderd.check_local_time(timestamp, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.check_local_time(timestamp, text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;

-- Recurring broadcasts written before, which 0021 took -------------------------------------------

-- An until of 'infinity' is no end: NULL, said in last_error. One of '-infinity' is past: ended.
UPDATE reminderd.broadcast_requests
SET until = NULL, updated_at = now(),
    last_error = 'until infinity is no time (refused since migration 0022): it recurs with no end'
WHERE ended_at IS NULL AND local_time IS NULL AND until = 'infinity';
UPDATE reminderd.broadcast_requests
SET ended_at = now(), next_occurrence = NULL, updated_at = now(),
    ended_reason = 'cannot be staged: until -infinity is no time (refused since migration 0022)',
    last_error = 'until -infinity is no time (refused since migration 0022)'
WHERE ended_at IS NULL AND local_time IS NULL AND until = '-infinity';
-- A stage_ahead of more than a year: a year, said in last_error.
UPDATE reminderd.broadcast_requests
SET stage_ahead = interval '366 days', updated_at = now(),
    last_error = format('stage_ahead %s is more than a year (refused since migration 0022): 366 days', stage_ahead)
WHERE ended_at IS NULL AND local_time IS NULL AND stage_ahead > interval '366 days';
-- Values its messages could not have, a payload over 256 KiB: ended with the reason, as the
-- stager now ends one (stage_broadcast), instead of failing at each occurrence.
DO $$
DECLARE
    request record;
    problem text;
BEGIN
    FOR request IN
        SELECT * FROM reminderd.broadcast_requests r
        WHERE r.ended_at IS NULL AND r.local_time IS NULL
        ORDER BY r.id
    LOOP
        problem := NULL;
        BEGIN
            PERFORM reminderd.check_message_values(format('broadcast "%s" of tenant "%s"', request.ref_prefix,
                                                          request.tenant_id),
                                                   NULL, NULL, request.max_attempts, request.category, request.calendar,
                                                   request.holiday_rule, request.backfill, request.max_lateness,
                                                   'broadcast_category_format');
        EXCEPTION WHEN check_violation THEN
            problem := SQLERRM;
        END;
        IF problem IS NULL AND pg_column_size(request.payload::text::jsonb) > 262144 THEN  -- as written, not as stored
            problem := format('its payload is %s bytes; at most 262144 (256 KiB)', pg_column_size(request.payload::text::jsonb));
        END IF;
        IF problem IS NOT NULL THEN
            UPDATE reminderd.broadcast_requests r
            SET ended_at = now(), next_occurrence = NULL, updated_at = now(),
                ended_reason = format('cannot be staged: %s (refused since migration 0021)', problem),
                last_error = format('%s (refused since migration 0021)', problem)
            WHERE r.id = request.id;
        END IF;
    END LOOP;
END
$$;
