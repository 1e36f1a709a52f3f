-- 0028 cadences and broadcast approval (docs/audiences.md, "Cadences" and "Approval"):
--   cadences   Moving an anchor earlier left the old reminders live: schedule_cadence reported an
--              offset the new anchor puts in the past "skipped: in the past" while the message
--              planned for it by the earlier call stayed pending (reminders for a renewal that
--              already happened); the same with fewer offsets: a dropped offset's message stayed.
--              Now a past step cancels the live message of its ref planned for another time (one
--              due at that very time is the step's own, late: it stands), a live prefix:<offset>
--              message whose offset is no longer listed is cancelled (a row of its own in the
--              answer), each in the trail with its reason; the answer gains outcome (scheduled,
--              unchanged, replaced, skipped, cancelled) and cancelled_id (the message the call
--              cancelled or replaced).
--   approval   Approval and the limit were decided from a count read before the rows were staged:
--              a contact added in between (READ COMMITTED) got a broadcast past both; and a
--              recurring request that needed no approval when made never asked again however large
--              its waves grew. Now stage_broadcast decides from the rows its one statement stages:
--              over broadcast_limit a one-off is refused whole (54000) and a recurring wave passed
--              over saying why; over approval_threshold, unless the approval covered that many
--              (broadcast_requests.approved_contacts, new: the largest wave awaiting approval when
--              it was given), the wave is staged awaiting_approval and the request awaits approval
--              again.
-- Rows written before: messages unchanged (the next call for a cadence tidies it); an approved
-- broadcast's approved_contacts is its largest wave so far (none staged: its audience now).
-- Run by migrations/versions/0028_cadences_and_approval.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

DROP FUNCTION reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text, text, text,
                                         text, text, text, interval, integer);

-- Messages at offsets around an anchor instant (a renewal, an appointment), each at a local wall
-- time in the contact's zone (at_local; or the anchor's own time of day), refs prefix:-30d and so
-- on, cancellable together with cancel_matching(tenant, 'prefix:%'). The call says what the
-- cadence is now (migration 0028): the same call again returns the same messages ('unchanged');
-- a new anchor replaces them ('replaced', cancelled_id the message it replaced); an offset
-- already past creates nothing ('skipped'), and cancels the live message of its ref that was
-- planned for another time ('cancelled'; an earlier anchor must not leave reminders for a renewal
-- that already happened); a live prefix:<offset> message whose offset the call no longer lists
-- is cancelled too (a row of its own: 'cancelled', with that message's times). Each cancellation
-- is in the message's trail with its reason.
CREATE FUNCTION reminderd.schedule_cadence(
    tenant_id text, ref_prefix text, anchor timestamptz,
    offsets interval[] DEFAULT '{-30 days,-7 days,-1 day}', at_local time DEFAULT NULL,
    contact_id text DEFAULT NULL, payload jsonb DEFAULT '{}', timezone text DEFAULT NULL,
    callback_url text DEFAULT NULL, category text DEFAULT 'transactional', calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS TABLE (ref_id text, message_id bigint, fire_at timestamptz, local_time timestamp, skipped text,
                 outcome text, cancelled_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    zone text;
    step interval;
    wall timestamp;
    refs text[] := '{}';
    live record;
    known bigint[];
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
        cancelled_id := NULL;
        refs := refs || ref_id;
        PERFORM pg_advisory_xact_lock(hashtextextended(schedule_cadence.tenant_id || chr(31) || ref_id, 0));
        SELECT m.id, coalesce(m.scheduled_for, m.fire_at) AS due INTO live
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = schedule_cadence.tenant_id AND m.ref_id = schedule_cadence.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
        IF fire_at <= now() THEN
            message_id := NULL;
            skipped := 'in the past';
            outcome := 'skipped';
            -- Its live message, if it was planned for another time (an earlier anchor), is cancelled;
            -- one due at this very time is this step's own message, late (the same call again): it
            -- stands, and the daemon sends it under its backfill policy.
            IF live.id IS NOT NULL AND live.due IS DISTINCT FROM fire_at THEN
                PERFORM reminderd.cancel_live(schedule_cadence.tenant_id, ref_id,
                    format('cancelled: cadence %s now puts %s in the past (anchor %s)', schedule_cadence.ref_prefix,
                           ref_id, to_char(schedule_cadence.anchor AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
                outcome := 'cancelled';
                cancelled_id := live.id;
            ELSIF live.id IS NOT NULL THEN
                message_id := live.id;
                skipped := NULL;
                outcome := 'unchanged';
            END IF;
        ELSE
            SELECT array_agg(m.id) INTO known
            FROM reminderd.scheduled_messages m
            WHERE m.tenant_id = schedule_cadence.tenant_id AND m.ref_id = schedule_cadence.ref_id;
            message_id := reminderd.schedule(
                schedule_cadence.tenant_id, ref_id, payload => schedule_cadence.payload,
                callback_url => schedule_cadence.callback_url, max_attempts => schedule_cadence.max_attempts,
                local_time => wall, timezone => schedule_cadence.timezone, category => schedule_cadence.category,
                calendar => schedule_cadence.calendar, holiday_rule => schedule_cadence.holiday_rule,
                backfill => schedule_cadence.backfill, max_lateness => schedule_cadence.max_lateness,
                contact_id => schedule_cadence.contact_id);
            skipped := NULL;
            IF message_id = ANY (known) THEN
                outcome := 'unchanged';
            ELSIF live.id IS NOT NULL THEN
                outcome := 'replaced';
                cancelled_id := live.id;
            ELSE
                outcome := 'scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    -- The offsets this call no longer lists: their live messages (refs prefix:<an offset label>,
    -- one-off) are cancelled.
    FOR live IN
        SELECT m.id, m.ref_id, m.fire_at, m.timezone
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = schedule_cadence.tenant_id
          AND starts_with(m.ref_id, schedule_cadence.ref_prefix || ':')
          AND substr(m.ref_id, length(schedule_cadence.ref_prefix) + 2)
              ~ '^([+-]([0-9]+mo)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?|[+-]0)$'
          AND m.ref_id <> ALL (refs)
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
          AND m.cron IS NULL AND m.rrule IS NULL
        ORDER BY m.fire_at, m.id
    LOOP
        PERFORM reminderd.cancel_live(schedule_cadence.tenant_id, live.ref_id,
            format('cancelled: cadence %s no longer lists offset %s', schedule_cadence.ref_prefix,
                   substr(live.ref_id, length(schedule_cadence.ref_prefix) + 2)));
        ref_id := live.ref_id;
        message_id := NULL;
        fire_at := live.fire_at;
        local_time := reminderd.wall_time(live.fire_at, live.timezone);
        skipped := 'not in the cadence any more';
        outcome := 'cancelled';
        cancelled_id := live.id;
        RETURN NEXT;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text,
                                                      text, text, text, text, text, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text,
                                                     text, text, text, text, text, interval, integer)
TO reminderd_app, reminderd_daemon, reminderd_api;

ALTER TABLE reminderd.broadcast_requests ADD COLUMN approved_contacts bigint;
UPDATE reminderd.broadcast_requests r
SET approved_contacts = coalesce(
    (SELECT max(o.contacts) FROM reminderd.broadcast_occurrences o WHERE o.broadcast_id = r.id),
    (SELECT count(*) FROM reminderd.audience_contacts(r.tenant_id, r.audience, r.contact_ids, r.everyone)))
WHERE r.approval = 'approved';

-- Stage one occurrence of a broadcast (a one-off's only one; a recurring one's next, by the
-- daemon, which names the one after it as `following`). The audience as it stands now, one row per
-- contact at `occurrence` read in the contact's zone, in one statement. A recurring occurrence
-- that cannot be staged (the audience is empty or over the limit, contacts without a zone) is
-- passed over with the reason in last_error; one over the approval_threshold that its approval
-- did not cover (none needed, or approved for fewer) is staged awaiting_approval and the request
-- awaits approval again. Returns the rows staged.
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
    -- Approval and the limit are decided from the rows this statement stages (migration 0028), not
    -- from a count read before: a contact added in between (READ COMMITTED) cannot slip a wave past
    -- them, and a recurring request that needed no approval when it was made needs it for a wave
    -- over the threshold.
    WITH audience AS MATERIALIZED (
        SELECT a.contact_id, a.timezone, a.timezone_source
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a
        WHERE a.timezone IS NOT NULL
    ),
    size AS MATERIALIZED (
        SELECT count(*) AS contacts,
               coalesce(count(*) > tenant.approval_threshold, false)
               AND (request.approval = 'not_needed'
                    OR request.approval = 'approved' AND count(*) > coalesce(request.approved_contacts, 0)) AS over
        FROM audience
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
               coalesce(CASE WHEN request.approval = 'awaiting' OR size.over THEN 'awaiting_approval'
                             WHEN tenant.paused THEN 'paused' END, 'pending'),
               CASE WHEN tenant.paused AND request.approval <> 'awaiting' AND NOT size.over THEN 'tenant' END
        FROM audience a
        JOIN zones z ON z.timezone = a.timezone
        CROSS JOIN size
        WHERE size.contacts <= coalesce(tenant.broadcast_limit, size.contacts)
        RETURNING fire_at
    )
    SELECT count(inserted.fire_at), min(inserted.fire_at), max(inserted.fire_at), max(size.contacts), bool_or(size.over)
    INTO staged, first_at, last_at, contacts, over_threshold
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
        last_error = NULL,
        updated_at = now()
    WHERE r.id = request.id;
    RETURN staged;
END
$$;

-- A broadcast waiting for approval goes ahead once a different person approves it; its rows
-- become pending (those whose time has passed meanwhile follow their backfill policy). The
-- approval covers the largest wave awaiting it (approved_contacts, migration 0028).
CREATE OR REPLACE FUNCTION reminderd.approve_broadcast(tenant_id text, broadcast_id bigint, actor text DEFAULT NULL,
                                            note text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    request  reminderd.broadcast_requests;
    who      text;
    released integer;
BEGIN
    PERFORM reminderd.check_tenant(approve_broadcast.tenant_id);
    who := reminderd.acting_as(approve_broadcast.actor);
    SELECT * INTO request FROM reminderd.broadcast_requests r
    WHERE r.id = approve_broadcast.broadcast_id AND r.tenant_id = approve_broadcast.tenant_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %', approve_broadcast.tenant_id, approve_broadcast.broadcast_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF request.approval = 'approved' THEN
        RETURN 0;
    ELSIF request.approval = 'not_needed' THEN
        RAISE EXCEPTION 'broadcast % needs no approval', request.id USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF request.approval = 'rejected' THEN
        RAISE EXCEPTION 'broadcast % was rejected by % at %', request.id, request.decided_by, request.decided_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF who = request.created_by THEN
        RAISE EXCEPTION 'broadcast % was created by %: another person must approve it', request.id, who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'High volumes need a second person: ask someone else to approve it.';
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'approved', decided_by = who, decided_at = now(), decision_note = approve_broadcast.note,
        updated_at = now(),
        approved_contacts = coalesce(
            (SELECT max(w.contacts) FROM (SELECT count(*) AS contacts FROM reminderd.scheduled_messages m
                                          WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id
                                            AND m.status = 'awaiting_approval'
                                          GROUP BY m.local_time) AS w),
            (SELECT count(*) FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids,
                                                              request.everyone)))
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', last_event = 'approved',
        last_error = format('broadcast %s approved by %s', request.id, who)
                     || coalesce(': ' || approve_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id AND m.status = 'awaiting_approval';
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$$;
