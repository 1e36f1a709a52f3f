-- 0024 a recurring broadcast refused at insert, as a message's recurrence is, where it was accepted
-- and then never sent (the daemon's stager ended it: 'cannot recur: invalid cron …', 'no occurrence
-- ahead', or a COUNT counted from an implicit DTSTART already past in the zone furthest ahead):
--   a cron the daemon could not read   22023 (23514 cron_shape), reminderd.check_cron's sentence
--   an rrule with COUNT, no DTSTART    22023 'the rrule of broadcast "c3" of tenant "acme" has COUNT but
--                                      no DTSTART', HINT: give one, or end it with until or UNTIL
--   an until already past              22008 'broadcast "b" of tenant "acme" ends before it starts: its
--                                      until 2026-12-01T09:00:00Z is already past'
-- in reminderd.broadcast (docs/audiences.md, docs/sql.md). Broadcasts written before keep moving: the
-- stager still ends one that cannot recur, with the reason.
-- Run by migrations/versions/0024_broadcast_recurrence_refusals.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

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
