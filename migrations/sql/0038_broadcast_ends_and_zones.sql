-- 0038 broadcast ends and zones (docs/audiences.md, docs/time.md):
--   until      a recurring broadcast's until (and its RRULE's UNTIL=…Z, an instant) was compared with
--              each occurrence's first zone's instant, and that occurrence then went to every zone:
--              a contact west of it was sent a wave after the until (09:00 in Pago Pago is 20:00Z,
--              hours after an until of 12:00Z that Kiritimati's 09:00 came before). Now it ends each
--              contact on their own: stage_broadcast stages the contacts whose instant of the
--              occurrence is not after broadcast_end(until, rrule), as the daemon's planner
--              (schedule.Waves.reached) plans; the broadcast goes on while an occurrence reaches
--              anyone. An UNTIL without Z was and is a wall time on every contact's clock.
--   zones      one contact whose zone this server's tz database cannot read (copied by logical
--              replication from a primary with newer tzdata, restored from a dump, written before
--              0033 checked contacts' zones) failed the whole staging: a one-off refused whole
--              (22023 unknown timezone), a recurring wave retried and failed at every round, the
--              dry run refused. Now local_instant_if_readable gives such a zone no instant: that
--              contact's row is staged dead with a last_error naming the zone and the contact (its
--              audit event says the same), the others are staged as ever, and broadcast_preview
--              returns the zone with fire_at NULL (the API's dry run counts unreadable_timezone).
--              Such a contact is staged dead once per broadcast: later waves pass over it (the
--              broadcast's last_error says how many), and approval and the limit count only the
--              rows sent. requeue refuses a dead row whose zone is unreadable (22023; requeue_dead
--              skips it, with a NOTICE); a staged-dead row whose zone is readable now goes to its
--              wall time's instant (now if that passed), not to when it was staged.
-- Rows written before: left as they are (waves already staged keep their rows); a recurring
-- broadcast's next occurrence is staged by the new rules.
-- Run by migrations/versions/0038_broadcast_ends_and_zones.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- The instant at which the clock in `timezone` first reads `local_time`, as
-- reminderd.local_instant(), or NULL when this server's tz database cannot read `timezone`
-- (migration 0038): a contact's zone checked when it was written elsewhere or earlier (copied by
-- logical replication, which fires no trigger, from a primary whose tzdata has a zone this
-- server's lacks; restored from a dump; written before 0033 checked contacts' zones). A broadcast
-- stages such a contact's row dead saying why, instead of failing for the whole audience.
CREATE FUNCTION reminderd.local_instant_if_readable(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE sql STABLE STRICT AS $$
    SELECT CASE WHEN reminderd.is_timezone(local_instant_if_readable.timezone)
                THEN reminderd.local_instant(local_instant_if_readable.local_time, local_instant_if_readable.timezone) END
$$;

-- The instant a recurring broadcast's occurrences end by, or NULL (migration 0038): the earlier of
-- its until and its RRULE's UNTIL=…Z (RFC 5545: an instant). It ends each contact on their own: an
-- occurrence is sent to a contact only when its instant in the contact's zone is not later
-- (stage_broadcast; the daemon's schedule.Waves.reached), so a contact east of UTC is not cut a day
-- early nor one west of it sent a day late. An UNTIL without Z is a wall time on every contact's
-- clock: the recurrence itself stops there, for everyone at the same wall time.
CREATE FUNCTION reminderd.broadcast_end(until timestamptz, rrule text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT least(broadcast_end.until,
                 CASE WHEN broadcast_end.rrule ~* '(^|[\n:;])\s*UNTIL\s*=\s*\d{8}T\d{6}Z'
                      THEN reminderd.rrule_until(broadcast_end.rrule, 'UTC') END)
$$;

REVOKE EXECUTE ON FUNCTION reminderd.local_instant_if_readable(timestamp, text),
    reminderd.broadcast_end(timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.local_instant_if_readable(timestamp, text),
    reminderd.broadcast_end(timestamptz, text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;

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
    sendable  bigint;  -- contacts in a zone this server can read: those it would send to
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
    -- The limit and the approval count only the contacts it would send to: one in a zone this
    -- server cannot read is staged dead, and sent nothing.
    SELECT coalesce(sum((z->>'contacts')::bigint), 0),
           coalesce(sum((z->>'contacts')::bigint) FILTER (WHERE z->>'timezone' IS NULL), 0),
           coalesce(sum((z->>'contacts')::bigint) FILTER (WHERE reminderd.is_timezone(z->>'timezone')), 0),
           count(*)
    INTO contacts, zoneless, sendable, zones
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
    IF tenant.broadcast_limit IS NOT NULL AND sendable > tenant.broadcast_limit THEN
        RAISE EXCEPTION 'broadcast "%" would send to % contacts; tenant "%" allows at most % in one broadcast',
            broadcast.ref_prefix, reminderd.thousands(sendable), broadcast.tenant_id,
            reminderd.thousands(tenant.broadcast_limit)
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('%s contacts over %s zones.', reminderd.thousands(contacts), zones),
                  HINT = 'Split the audience, or raise the limit: reminderd tenant set TENANT --broadcast-limit N.';
    END IF;
    IF broadcast.local_time IS NULL THEN
        -- Refused here as a message's recurrence is at insert (migration 0024), not ended by the
        -- daemon's stager once accepted: a cron it could not read, COUNT without DTSTART, an until past.
        IF broadcast.cron IS NOT NULL THEN
            PERFORM reminderd.check_cron(broadcast.cron, format('broadcast "%s" of tenant "%s"', broadcast.ref_prefix,
                                                                broadcast.tenant_id));
        END IF;
        IF broadcast.rrule !~* '(^|\n)\s*DTSTART' AND broadcast.rrule ~* 'COUNT=' THEN
            RAISE EXCEPTION 'the rrule of broadcast "%" of tenant "%" has COUNT but no DTSTART', broadcast.ref_prefix,
                broadcast.tenant_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'COUNT counts from DTSTART: give one (DTSTART:20261201T090000, a wall time on each '
                             'contact''s clock), or end it with until or UNTIL instead.';
        END IF;
        IF NOT isfinite(broadcast.until) THEN  -- as its trigger would (migration 0022): not a time
            PERFORM reminderd.refuse_infinite_time('until', broadcast.until::text,
                                                   format('broadcast "%s" of tenant "%s"', broadcast.ref_prefix,
                                                          broadcast.tenant_id));
        END IF;
        IF broadcast.until <= now() THEN
            RAISE EXCEPTION 'broadcast "%" of tenant "%" ends before it starts: its until % is already past',
                broadcast.ref_prefix, broadcast.tenant_id,
                coalesce(to_char(broadcast.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), broadcast.until::text)
                USING ERRCODE = 'datetime_field_overflow',
                      DETAIL = 'A recurring broadcast stages nothing after its until; this one would end at once.',
                      HINT = 'Give an until in the future, or none.';
        END IF;
        per_hour := reminderd.fires_per_hour(broadcast.cron, anchored);
        IF per_hour > 1 THEN
            RAISE EXCEPTION '% fires up to % times an hour: each occurrence would send to % contacts, % messages an hour',
                coalesce('cron ' || quote_literal(broadcast.cron), 'the rrule'), per_hour, reminderd.thousands(contacts),
                reminderd.thousands(per_hour * contacts)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A recurring broadcast fires at most once an hour.';
        END IF;
    ELSE
        -- Every zone's instant of the wall time: none in the past, none beyond the horizon (a zone
        -- this server cannot read has none: its contacts are staged dead, migration 0038).
        SELECT count(*) AS zones, sum(z.contacts)::bigint AS contacts,
               string_agg(format('%s: %s contacts at %s', z.timezone, reminderd.thousands(z.contacts),
                                 to_char(z.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')), '; '
                          ORDER BY z.fire_at) AS detail
        INTO late
        FROM (SELECT e->>'timezone' AS timezone, (e->>'contacts')::bigint AS contacts,
                     reminderd.local_instant_if_readable(broadcast.local_time, e->>'timezone') AS fire_at
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
                     reminderd.local_instant_if_readable(broadcast.local_time, e->>'timezone') AS fire_at
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
            coalesce(CASE WHEN sendable > tenant.approval_threshold THEN 'awaiting' END, 'not_needed'), who)
    RETURNING id INTO new_id;
    IF broadcast.local_time IS NOT NULL THEN
        PERFORM reminderd.stage_broadcast(new_id, broadcast.local_time);
    ELSE
        PERFORM pg_notify('reminderd_due', 'plan');  -- the daemon plans and stages its occurrences
    END IF;
    RETURN new_id;
END
$$;

-- Stage one occurrence of a broadcast (a one-off's only one; a recurring one's next, by the
-- daemon, which names the one after it as `following`). The audience as it stands now, one row per
-- contact at `occurrence` read in the contact's zone, in one statement: for a recurring one, the
-- contacts whose instant of it is not after its end (broadcast_end: until, UNTIL=…Z), each by
-- their own; a contact whose zone this server's tz database cannot read is staged dead, its
-- last_error saying so, and the others as ever (migration 0038). A recurring occurrence
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
    over_threshold boolean;
    ends_at   timestamptz;
    unreadable bigint;   -- contacts in a zone this server cannot read
    passed_over bigint;  -- of those, the ones staged dead at an earlier occurrence: not again
BEGIN
    SELECT * INTO request FROM reminderd.broadcast_requests r WHERE r.id = stage_broadcast.broadcast_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no broadcast with id %', stage_broadcast.broadcast_id USING ERRCODE = 'no_data_found';
    END IF;
    recurring := request.local_time IS NULL;
    -- The columns it reads, by name: a role may read a tenant's settings and not its secret.
    SELECT t.id, t.broadcast_limit, t.approval_threshold, t.callback_url, t.paused
    INTO tenant.id, tenant.broadcast_limit, tenant.approval_threshold, tenant.callback_url, tenant.paused
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
    ends_at := CASE WHEN recurring THEN reminderd.broadcast_end(request.until, request.rrule) END;
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
        -- Those in a zone this server cannot read are sent nothing: not counted against the limit.
        SELECT coalesce(sum(z.contacts), 0), coalesce(sum(z.contacts) FILTER (WHERE z.timezone IS NULL), 0),
               coalesce(sum(z.contacts) FILTER (WHERE z.timezone IS NOT NULL AND NOT reminderd.is_timezone(z.timezone)),
                        0)
        INTO contacts, zoneless, unreadable
        FROM (SELECT a.timezone, count(*) AS contacts
              FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids,
                                               request.everyone) AS a
              GROUP BY a.timezone) AS z;
        problem := CASE WHEN contacts = 0 THEN 'the audience is empty'
                        WHEN zoneless > 0 THEN format('%s contacts have no timezone and the tenant has no default',
                                                      reminderd.thousands(zoneless))
                        WHEN contacts - unreadable > tenant.broadcast_limit
                            THEN format('%s contacts, over the tenant''s limit of %s',
                                        reminderd.thousands(contacts - unreadable),
                                        reminderd.thousands(tenant.broadcast_limit)) END;
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
    -- Approval and the limit are decided from the rows this statement stages (migration 0028), not
    -- from a count read before: a contact added in between (READ COMMITTED) cannot slip a wave past
    -- them, and a recurring request that needed no approval when it was made needs it for a wave
    -- over the threshold.
    WITH audience AS MATERIALIZED (
        SELECT a.contact_id, a.timezone, a.timezone_source
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a
        WHERE a.timezone IS NOT NULL
    ),
    zones AS MATERIALIZED (  -- each zone's instant computed once, not once per contact; NULL: unreadable here
        SELECT z.timezone, reminderd.local_instant_if_readable(stage_broadcast.occurrence, z.timezone) AS fire_at
        FROM (SELECT DISTINCT timezone FROM audience) AS z
    ),
    reached AS MATERIALIZED (  -- those the occurrence is sent to: ends_at ends each on their own instant
        SELECT a.contact_id, a.timezone, a.timezone_source, z.fire_at,
               -- In a zone unreadable here, and staged dead at an earlier occurrence: not again
               -- (migration 0038), but counted (passed_over).
               z.fire_at IS NULL AND EXISTS (
                   SELECT FROM reminderd.scheduled_messages m
                   WHERE m.broadcast_id = request.id AND m.status = 'dead' AND m.tenant_id = request.tenant_id
                     AND m.contact_id = a.contact_id AND m.picked_at IS NULL) AS passed_over
        FROM audience a
        JOIN zones z ON z.timezone = a.timezone
        WHERE coalesce(z.fire_at <= ends_at, true)
    ),
    size AS MATERIALIZED (  -- the rows it sends: approval and the limit count no dead one (migration 0038)
        SELECT count(*) FILTER (WHERE fire_at IS NOT NULL) AS contacts,
               count(*) FILTER (WHERE passed_over) AS passed_over,
               coalesce(count(*) FILTER (WHERE fire_at IS NOT NULL) > tenant.approval_threshold, false)
               AND (request.approval = 'not_needed'
                    OR request.approval = 'approved'
                       AND count(*) FILTER (WHERE fire_at IS NOT NULL) > coalesce(request.approved_contacts, 0)) AS over
        FROM reached
    ),
    inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, contact_id, timezone_source, local_time, broadcast_id, status,
             paused_by, last_error)
        SELECT request.tenant_id,
               request.ref_prefix || ':' || a.contact_id
                   || CASE WHEN recurring THEN '#' || to_char(stage_broadcast.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END,
               coalesce(a.fire_at, now()), request.payload, request.callback_url, request.max_attempts, a.timezone,
               request.category, request.calendar, request.holiday_rule, request.backfill, request.max_lateness,
               a.contact_id, a.timezone_source, stage_broadcast.occurrence, request.id,
               CASE WHEN a.fire_at IS NULL THEN 'dead'  -- its zone is unreadable here: dead, saying why
                    WHEN request.approval = 'awaiting' OR size.over THEN 'awaiting_approval'
                    WHEN tenant.paused THEN 'paused' ELSE 'pending' END,
               CASE WHEN a.fire_at IS NOT NULL AND tenant.paused AND request.approval <> 'awaiting' AND NOT size.over
                    THEN 'tenant' END,
               CASE WHEN a.fire_at IS NULL
                    THEN format('timezone "%s" of contact %s is unknown to this database server''s tz database: '
                                '%s has no instant there; correct the contact''s timezone, or update the server''s '
                                'tzdata', a.timezone, a.contact_id, to_char(stage_broadcast.occurrence,
                                                                            'YYYY-MM-DD HH24:MI')) END
        FROM reached a
        CROSS JOIN size
        WHERE size.contacts <= coalesce(tenant.broadcast_limit, size.contacts) AND NOT a.passed_over
        RETURNING fire_at, status
    )
    SELECT count(inserted.fire_at), min(inserted.fire_at) FILTER (WHERE inserted.status <> 'dead'),
           max(inserted.fire_at) FILTER (WHERE inserted.status <> 'dead'), max(size.contacts), bool_or(size.over),
           max(size.passed_over)
    INTO staged, first_at, last_at, contacts, over_threshold, passed_over
    FROM size LEFT JOIN inserted ON true;
    IF contacts > tenant.broadcast_limit THEN
        problem := format('%s contacts, over the tenant''s limit of %s', reminderd.thousands(contacts),
                          reminderd.thousands(tenant.broadcast_limit));
        IF NOT recurring THEN
            RAISE EXCEPTION 'broadcast "%" would send to % contacts; tenant "%" allows at most % in one broadcast',
                request.ref_prefix, reminderd.thousands(contacts), request.tenant_id,
                reminderd.thousands(tenant.broadcast_limit)
                USING ERRCODE = 'program_limit_exceeded',
                      DETAIL = 'The audience grew while the broadcast was staged.',
                      HINT = 'Split the audience, or raise the limit: reminderd tenant set TENANT --broadcast-limit N.';
        END IF;
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
    IF over_threshold THEN
        UPDATE reminderd.broadcast_requests r SET approval = 'awaiting', updated_at = now() WHERE r.id = request.id;
    END IF;
    INSERT INTO reminderd.broadcast_occurrences
        (broadcast_id, occurrence, tenant_id, contacts, first_fire_at, last_fire_at)
    VALUES (request.id, stage_broadcast.occurrence, request.tenant_id, staged, first_at, last_at);
    UPDATE reminderd.broadcast_requests r
    SET next_occurrence = CASE WHEN recurring THEN stage_broadcast.following END,
        ended_at = CASE WHEN NOT recurring OR stage_broadcast.following IS NULL THEN now() END,
        ended_reason = CASE WHEN NOT recurring THEN 'staged'
                            WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
        last_error = CASE WHEN passed_over > 0 THEN format(
            'occurrence %s staged without %s contacts in a zone this database server cannot read: each was '
            'staged dead once, at an earlier occurrence (correct their timezone, or update the server''s tzdata)',
            to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'), reminderd.thousands(passed_over)) END,
        updated_at = now()
    WHERE r.id = request.id;
    RETURN staged;
END
$$;

-- What a broadcast at local_time would send, without staging anything (the CLI's --dry-run): per
-- zone, its instant (NULL for a zone this server cannot read: those contacts would be staged dead,
-- migration 0038) and how many contacts, by where their zone came from.
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
        SELECT a.timezone, reminderd.local_instant_if_readable(broadcast_preview.local_time, a.timezone), count(*),
               count(*) FILTER (WHERE a.timezone_source = 'contact'), count(*) FILTER (WHERE a.timezone_source = 'phone'),
               count(*) FILTER (WHERE a.timezone_source = 'country'), count(*) FILTER (WHERE a.timezone_source = 'tenant')
        FROM reminderd.audience_contacts(broadcast_preview.tenant_id, broadcast_preview.audience,
                                         broadcast_preview.contact_ids, coalesce(broadcast_preview.everyone, false)) AS a
        GROUP BY a.timezone
        ORDER BY 2 NULLS FIRST, 1;
END
$$;

-- A dead row goes back to pending, due now, attempts reset (same occurrence: same webhook-id).
-- One that died after delivery (died_delivered) is not sent again by mistake: a one-off is
-- refused (55000) unless `resend`; a recurring one, unless `resend`, goes to its next occurrence
-- (fire_at NULL: the daemon plans its first occurrence after now), not to the delivered one.
-- (migration 0038) One in a zone this server's tz database cannot read is refused (22023): it
-- has no instant of its local time. A broadcast's row staged dead for that reason (never claimed)
-- whose zone is readable now goes to its wall time's instant in its zone, or now if that passed.
CREATE OR REPLACE FUNCTION reminderd.requeue(message_id bigint, resend boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    message  reminderd.scheduled_messages;
    onward   boolean;
    placed   boolean;
    requeued integer;
BEGIN
    SELECT * INTO message FROM reminderd.scheduled_messages m WHERE m.id = requeue.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no message with id %', requeue.message_id USING ERRCODE = 'no_data_found';
    END IF;
    onward := NOT requeue.resend AND reminderd.died_delivered(message);
    -- A broadcast's row staged dead, never claimed: its zone was unreadable then (migration 0038).
    placed := message.broadcast_id IS NOT NULL AND message.contact_id IS NOT NULL AND message.picked_at IS NULL
              AND message.local_time IS NOT NULL;
    IF message.status = 'dead' AND NOT reminderd.is_timezone(message.timezone) THEN
        RAISE EXCEPTION 'message % / % (id %) is in timezone "%", which this database server''s tz database '
                        'cannot read: requeued, it would be sent at no instant of its local time',
                        message.tenant_id, message.ref_id, message.id, message.timezone
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its dead reason: %s', coalesce(message.last_error, '(none recorded)')),
                  HINT = CASE WHEN message.contact_id IS NOT NULL
                              THEN format('Correct the timezone of contact %s (its next messages use it), or update '
                                          'the server''s tzdata and requeue it then.', message.contact_id)
                              ELSE 'Update the server''s tzdata and requeue it then, or schedule it again in a '
                                   'zone this server can read.' END;
    END IF;
    IF onward AND message.cron IS NULL AND message.rrule IS NULL THEN
        RAISE EXCEPTION 'message % / % (id %) was delivered before it died: requeueing it would send it again',
                        message.tenant_id, message.ref_id, message.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its dead reason: %s', coalesce(message.last_error, '(none recorded)')),
                  HINT = format('Pass resend => true to send it again: SELECT reminderd.requeue(%s, resend => true);',
                                message.id);
    END IF;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', attempts = 0,
        scheduled_for = CASE WHEN onward OR placed THEN NULL ELSE coalesce(m.scheduled_for, m.fire_at) END,
        fire_at = CASE WHEN onward THEN NULL
                       WHEN placed THEN greatest(reminderd.local_instant(m.local_time, m.timezone), now())
                       ELSE now() END,
        last_event = 'requeued',
        last_error = CASE WHEN onward THEN 'requeued to its next occurrence (the last was delivered) from: '
                          ELSE 'requeued from: ' END || coalesce(m.last_error, ''),
        updated_at = now()
    WHERE m.id = requeue.message_id AND m.status = 'dead'
      AND NOT EXISTS (SELECT 1 FROM reminderd.scheduled_messages live
                      WHERE live.tenant_id = m.tenant_id AND live.ref_id = m.ref_id
                        AND live.status IN ('pending', 'picked', 'paused', 'awaiting_approval'));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;

-- A tenant's rows that died at or after `since`, requeued (requeue); one-offs that died after
-- delivery are skipped (a NOTICE says how many: requeue each with resend => true to send it again),
-- and so are rows in a zone this server cannot read (migration 0038: a NOTICE too).
CREATE OR REPLACE FUNCTION reminderd.requeue_dead(tenant_id text, since timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    requeued integer := 0;
    skipped  integer := 0;
    zoneless integer := 0;
    message  record;
BEGIN
    PERFORM reminderd.check_tenant(requeue_dead.tenant_id);
    FOR message IN
        SELECT m.id, reminderd.died_delivered(m) AND m.cron IS NULL AND m.rrule IS NULL AS delivered,
               NOT reminderd.is_timezone(m.timezone) AS unreadable
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = requeue_dead.tenant_id AND m.status = 'dead' AND m.updated_at >= requeue_dead.since
        ORDER BY m.id
    LOOP
        IF message.unreadable THEN
            zoneless := zoneless + 1;
        ELSIF message.delivered THEN
            skipped := skipped + 1;
        ELSE
            requeued := requeued + reminderd.requeue(message.id);
        END IF;
    END LOOP;
    IF skipped > 0 THEN
        RAISE NOTICE '% dead message(s) of tenant % skipped: delivered before they died', skipped, requeue_dead.tenant_id
            USING HINT = 'Requeue one with reminderd.requeue(id, resend => true) to send it again.';
    END IF;
    IF zoneless > 0 THEN
        RAISE NOTICE '% dead message(s) of tenant % skipped: in a zone this database server cannot read', zoneless,
            requeue_dead.tenant_id
            USING HINT = 'Correct their contacts'' timezone, or update the server''s tzdata and requeue them then.';
    END IF;
    RETURN requeued;
END
$$;

CREATE OR REPLACE FUNCTION reminderd.record_inserts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest  timestamptz;
    unplanned boolean;
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    SELECT n.id, n.tenant_id, n.ref_id, coalesce(n.last_event, 'created'), n.status, n.fire_at,
           CASE WHEN n.status = 'paused' THEN 'tenant is paused'
                WHEN n.status = 'awaiting_approval' THEN format('broadcast %s awaits approval', n.broadcast_id)
                WHEN n.status = 'dead' THEN n.last_error  -- a broadcast's row staged dead (migration 0038)
                WHEN n.contact_id IS NOT NULL
                    THEN format('contact %s: timezone %s (%s)', n.contact_id, n.timezone, n.timezone_source) END,
           current_user
    FROM changed_rows n;
    SELECT min(n.fire_at) FILTER (WHERE n.status = 'pending'),
           bool_or(n.fire_at IS NULL) FILTER (WHERE n.status = 'pending')
    INTO earliest, unplanned
    FROM changed_rows n;
    IF unplanned THEN
        PERFORM pg_notify('reminderd_due', 'plan');
    ELSIF earliest < clock_timestamp() + interval '10 minutes' THEN
        PERFORM pg_notify('reminderd_due', extract(epoch FROM earliest)::text);
    END IF;
    RETURN NULL;
END
$$;

