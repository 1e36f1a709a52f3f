-- 0033 guards on broadcast and contact rows (docs/sql.md, docs/audiences.md):
--   completion  One tenant's live message with the ref of another's completion callback
--               (bf#completed) stopped complete_broadcasts for every tenant: the unique violation
--               rolled back the whole batch, every time. Now each wave's callback is inserted on its
--               own; a wave whose callback cannot be (its ref taken, say) is completed all the same,
--               without one, and its broadcast's last_error says why. A paused tenant's callback is
--               created paused by 'tenant', as any row inserted while it is paused.
--   broadcast   A hand UPDATE of a broadcast's row (its timezone, category, ...) skipped every check
--   rows        (scheduled_messages_validate ran only for rows of no broadcast): now checked as any row.
--   ranges      A time the daemon cannot read (scheduled_for 10000-01-01: Python's datetime ends at
--               9999) or a counter its next +1 overflows (attempts, runs 2147483647), written by
--               hand, wedged the claim or resent a row forever. Now refused in a sentence (22008,
--               22003) on INSERT and UPDATE: triggers whose WHEN clauses test the bounds, so a row
--               within them calls nothing; a value a row already had is left alone.
--   contacts    Any text was taken as a contact's resolved_timezone (an UPDATE of it alone, or a
--               session setting reminderd.contacts_resolved itself): a recurring broadcast to it never
--               staged. Now the zones each statement writes are checked once each (statement
--               triggers), whatever the session says.
-- Rows written before: messages and counters are left as they are (only a new value is refused);
-- contacts whose timezone or resolved_timezone is no zone (each distinct zone checked once): a
-- posix/ copy of a zone is given its IANA name (posix/Asia/Kolkata is Asia/Kolkata: their messages
-- keep their times); localtime, posixrules and Factory are left as they are; any other is resolved
-- again from what is left (their own zone dropped, then phone, country, tenant). Each kind is
-- counted in a WARNING; should a change fail (a contact left without a zone its messages need),
-- those contacts stay as they were, with a WARNING.
-- Run by migrations/versions/0033_row_guards.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- The daemon, now and then: fold each occurrence's count rows (more than fold_above) into one, and
-- mark occurrences whose rows have all ended completed, queueing the broadcast.completed callback
-- for those whose broadcast asked for one (a message like any other: signed, retried, audited;
-- created paused by 'tenant' while its tenant is paused, as any row inserted then is). Each wave on
-- its own (migration 0033): one whose callback cannot be queued (its ref taken by a live message,
-- say) is completed all the same, without one, and its broadcast's last_error says why; a passing
-- error (a deadlock, a lock timeout) fails the round instead, and the wave is tried again.
-- One caller at a time. Returns the occurrences completed.
CREATE OR REPLACE FUNCTION reminderd.complete_broadcasts(batch integer DEFAULT 100, fold_above integer DEFAULT 20)
RETURNS TABLE (broadcast_id bigint, tenant_id text, occurrence timestamp, message_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    folded record;
    done   record;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.complete_broadcasts')) THEN
        RETURN;
    END IF;
    FOR folded IN
        SELECT k.broadcast_id, k.occurrence FROM reminderd.broadcast_counts k
        GROUP BY 1, 2 HAVING count(*) > complete_broadcasts.fold_above LIMIT complete_broadcasts.batch
    LOOP
        WITH gone AS (
            DELETE FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = folded.broadcast_id AND k.occurrence = folded.occurrence
            RETURNING k.*
        )
        INSERT INTO reminderd.broadcast_counts
            (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
        SELECT g.broadcast_id, g.occurrence, g.tenant_id, sum(g.waiting), sum(g.held), sum(g.sent), sum(g.failed),
               sum(g.expired), sum(g.cancelled)
        FROM gone g
        GROUP BY 1, 2, 3;
    END LOOP;
    FOR done IN
        SELECT o.broadcast_id, o.occurrence, r.tenant_id, o.contacts, r.ref_prefix, r.notify, r.callback_url,
               r.local_time IS NULL AS recurring, t.paused AS tenant_paused, totals.*
        FROM reminderd.broadcast_occurrences o
        JOIN reminderd.broadcast_requests r ON r.id = o.broadcast_id AND r.tenant_id = o.tenant_id
        JOIN reminderd.tenants t ON t.id = r.tenant_id
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(k.waiting), 0) AS waiting, coalesce(sum(k.held), 0) AS held,
                   coalesce(sum(k.sent), 0) AS sent, coalesce(sum(k.failed), 0) AS failed,
                   coalesce(sum(k.expired), 0) AS expired, coalesce(sum(k.cancelled), 0) AS cancelled
            FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = o.broadcast_id AND k.occurrence = o.occurrence AND k.tenant_id = r.tenant_id
        ) AS totals
        WHERE o.completed_at IS NULL AND totals.waiting + totals.held = 0
        ORDER BY o.staged_at
        LIMIT complete_broadcasts.batch
        FOR UPDATE OF o SKIP LOCKED
    LOOP
        broadcast_id := done.broadcast_id;
        tenant_id := done.tenant_id;
        occurrence := done.occurrence;
        message_id := NULL;
        IF done.notify THEN
            BEGIN
                INSERT INTO reminderd.scheduled_messages
                    (tenant_id, ref_id, fire_at, payload, callback_url, broadcast_id, category, status, paused_by,
                     last_error)
                VALUES (done.tenant_id,
                        done.ref_prefix || '#completed'
                            || CASE WHEN done.recurring THEN '#' || to_char(done.occurrence, 'YYYYMMDD"T"HH24MI')
                                    ELSE '' END,
                        now(),
                        jsonb_build_object(
                            'event', 'broadcast.completed', 'broadcast_id', done.broadcast_id,
                            'ref_prefix', done.ref_prefix,
                            'occurrence', to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'),
                            'counts', jsonb_build_object(
                                'staged', done.sent + done.failed + done.expired + done.cancelled,
                                'sent', done.sent, 'failed', done.failed, 'expired', done.expired,
                                'cancelled', done.cancelled)),
                        done.callback_url, done.broadcast_id, 'transactional',
                        CASE WHEN done.tenant_paused THEN 'paused' ELSE 'pending' END,
                        CASE WHEN done.tenant_paused THEN 'tenant' END,
                        CASE WHEN done.tenant_paused THEN 'tenant paused' END)
                RETURNING id INTO message_id;
            -- This wave only, for an error that says the row cannot be written (its ref taken, a
            -- value or a trigger refusing it): completed without its callback, and why. A passing
            -- one (deadlock, lock timeout, serialization failure, cancel, shutdown) is the round's:
            -- raised, so the wave waits for the next round and gets its callback then.
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception OR no_data_found
                           OR program_limit_exceeded OR insufficient_privilege OR feature_not_supported THEN
                UPDATE reminderd.broadcast_requests r
                SET last_error = format('broadcast.completed callback of occurrence %s not queued: %s',
                                        to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'), SQLERRM),
                    updated_at = now()
                WHERE r.id = done.broadcast_id AND r.tenant_id = done.tenant_id;
            END;
        END IF;
        UPDATE reminderd.broadcast_occurrences o
        SET completed_at = now(), completion_message_id = message_id
        WHERE o.broadcast_id = done.broadcast_id AND o.occurrence = done.occurrence;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Refuse a row whose times or counters the daemon could not read or move on (migration 0033): a
-- time outside 0001-01-02 .. 9999-12-30 UTC (Python's datetime, which the daemon reads them in,
-- ends at 9999-12-31; a day each side for a zone's offset) is refused in a sentence (22008), and an
-- attempts or runs outside 0 .. 1000000000 (22003: each claim adds 1 to attempts, each occurrence
-- to runs, and an integer ends at 2147483647). Only a value being written: on UPDATE, one that did
-- not change is left alone, so a row written before can still be moved on or ended. Called by the
-- triggers scheduled_messages_values_in_range_*, whose WHEN clauses test the same bounds.
CREATE FUNCTION reminderd.refuse_out_of_range() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    subject constant text := format('message %s / %s', NEW.tenant_id, NEW.ref_id);
    low     constant timestamptz := timestamptz '0001-01-02 00:00+00';
    high    constant timestamptz := timestamptz '9999-12-30 00:00+00';
    times   constant text[] := ARRAY['fire_at', 'scheduled_for', 'until', 'created_at', 'updated_at', 'picked_at',
                                     'sent_at', 'lease_expires_at'];
    given   timestamptz[] := ARRAY[NEW.fire_at, NEW.scheduled_for, NEW.until, NEW.created_at, NEW.updated_at,
                                   NEW.picked_at, NEW.sent_at, NEW.lease_expires_at];
    was     timestamptz[] := CASE WHEN TG_OP = 'UPDATE'
                                  THEN ARRAY[OLD.fire_at, OLD.scheduled_for, OLD.until, OLD.created_at,
                                             OLD.updated_at, OLD.picked_at, OLD.sent_at, OLD.lease_expires_at]
                                  ELSE '{}' END;
BEGIN
    FOR k IN 1 .. array_length(times, 1) LOOP
        IF given[k] NOT BETWEEN low AND high AND given[k] IS DISTINCT FROM was[k] THEN
            RAISE EXCEPTION '% % of % is outside the years the daemon can read',
                times[k], CASE WHEN NOT isfinite(given[k]) THEN given[k]::text
                               ELSE to_char(given[k] AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                                    || CASE WHEN given[k] < timestamptz '0001-01-01 00:00+00' THEN ' BC' ELSE '' END END,
                subject
                USING ERRCODE = 'datetime_field_overflow',
                      DETAIL = 'The daemon reads times between 0001-01-02 and 9999-12-30 UTC.',
                      HINT = 'Give a time in that range, like now() + interval ''1 hour''.';
        END IF;
    END LOOP;
    IF NEW.local_time NOT BETWEEN (low AT TIME ZONE 'UTC') AND (high AT TIME ZONE 'UTC')
       AND (TG_OP = 'INSERT' OR NEW.local_time IS DISTINCT FROM OLD.local_time)
    THEN
        RAISE EXCEPTION 'local_time % of % is outside the years the daemon can read', NEW.local_time, subject
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = 'The daemon reads wall times between 0001-01-02 and 9999-12-30.',
                  HINT = 'Give a wall time, like ''2026-12-24 09:00''.';
    END IF;
    IF NEW.attempts NOT BETWEEN 0 AND 1000000000 AND (TG_OP = 'INSERT' OR NEW.attempts IS DISTINCT FROM OLD.attempts)
    THEN
        RAISE EXCEPTION 'attempts % of % is outside 0 to 1000000000', NEW.attempts, subject
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = 'Each claim adds 1 to attempts, and an integer ends at 2147483647.',
                  HINT = 'Leave attempts to the daemon: reminderd.requeue() of a dead message sets it back to 0.';
    END IF;
    IF NEW.runs NOT BETWEEN 0 AND 1000000000 AND (TG_OP = 'INSERT' OR NEW.runs IS DISTINCT FROM OLD.runs) THEN
        RAISE EXCEPTION 'runs % of % is outside 0 to 1000000000', NEW.runs, subject
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = 'Each occurrence fired adds 1 to runs, and an integer ends at 2147483647.',
                  HINT = 'Leave runs to the daemon; max_runs ends a recurring message after that many occurrences.';
    END IF;
    RETURN NEW;
END
$$;

-- After each statement that writes contacts, however it was written (migration 0033): the zones
-- it wrote (timezone, resolved_timezone) are ones the daemon can read, each distinct zone checked
-- once, so the bulk path (upsert_contact_rows, which resolves zones itself and says so with
-- reminderd.contacts_resolved, skipping resolve_contact) pays one check per zone, not per contact,
-- and a session that sets reminderd.contacts_resolved itself, or an UPDATE of resolved_timezone
-- alone, cannot write a zone that is none (a recurring broadcast could never stage). On UPDATE a
-- value the contact already had is left alone. Before contacts_replan (names): its messages are
-- not moved to a zone this refuses.
CREATE FUNCTION reminderd.check_contact_zones() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT z.zone INTO bad
    FROM (SELECT DISTINCT u.zone
          FROM changed_contacts n CROSS JOIN LATERAL (VALUES (n.timezone), (n.resolved_timezone)) AS u (zone)
          WHERE u.zone NOT IN ('UTC', 'Etc/UTC')
          OFFSET 0) AS z  -- OFFSET 0: each distinct zone checked once
    WHERE NOT reminderd.is_timezone(z.zone)
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT n.tenant_id, n.contact_id, CASE WHEN n.timezone = bad.zone THEN 'timezone' ELSE 'resolved_timezone' END
                   AS field, bad.zone AS zone
        INTO bad
        FROM changed_contacts n
        WHERE bad.zone IN (n.timezone, n.resolved_timezone)
        LIMIT 1;
    ELSE
        SELECT n.tenant_id, n.contact_id,
               CASE WHEN n.timezone = bad.zone AND n.timezone IS DISTINCT FROM o.timezone THEN 'timezone'
                    ELSE 'resolved_timezone' END AS field,
               bad.zone AS zone
        INTO bad
        FROM changed_contacts n
        JOIN previous_contacts o ON o.tenant_id = n.tenant_id AND o.contact_id = n.contact_id
        WHERE (n.timezone = bad.zone AND n.timezone IS DISTINCT FROM o.timezone)
           OR (n.resolved_timezone = bad.zone AND n.resolved_timezone IS DISTINCT FROM o.resolved_timezone)
        LIMIT 1;
        IF NOT FOUND THEN  -- only values the contacts already had
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'unknown timezone "%" for contact % / % (its %)', bad.zone, bad.tenant_id, bad.contact_id, bad.field
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'The daemon reads a contact''s resolved_timezone to place its messages; it works it out from '
                       'the contact''s timezone, phone or country.',
              HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata, and set the contact''s timezone '
                     '(reminderd.upsert_contacts): its resolved_timezone follows.';
END
$$;

-- What the triggers of every role's writes call (migration 0033).
REVOKE EXECUTE ON FUNCTION reminderd.refuse_out_of_range(), reminderd.check_contact_zones() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.refuse_out_of_range(), reminderd.check_contact_zones()
TO reminderd_app, reminderd_daemon, reminderd_api;

DROP TRIGGER scheduled_messages_validate ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_validate
    BEFORE UPDATE OF timezone, callback_url, tenant_id, rrule, cron, ref_id, local_time, until, max_runs,
                     max_attempts, category, calendar, holiday_rule, backfill, max_lateness
    ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_message();
-- Times and counters the daemon could not read or move on (reminderd.refuse_out_of_range(),
-- migration 0033): the WHEN clauses test the bounds, so a row within them calls nothing. After
-- the validate triggers (names): a time that is not finite keeps their sentence.
CREATE TRIGGER scheduled_messages_values_in_range_insert
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.fire_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.scheduled_for NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.until NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.local_time NOT BETWEEN '0001-01-02 00:00' AND '9999-12-30 00:00'
          OR NEW.created_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.updated_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.picked_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.sent_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.lease_expires_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.attempts NOT BETWEEN 0 AND 1000000000 OR NEW.runs NOT BETWEEN 0 AND 1000000000)
    EXECUTE FUNCTION reminderd.refuse_out_of_range();
CREATE TRIGGER scheduled_messages_values_in_range_update
    BEFORE UPDATE OF fire_at, scheduled_for, until, local_time, created_at, updated_at, picked_at, sent_at,
                     lease_expires_at, attempts, runs
    ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.fire_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.scheduled_for NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.until NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.local_time NOT BETWEEN '0001-01-02 00:00' AND '9999-12-30 00:00'
          OR NEW.created_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.updated_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.picked_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.sent_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.lease_expires_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.attempts NOT BETWEEN 0 AND 1000000000 OR NEW.runs NOT BETWEEN 0 AND 1000000000)
    EXECUTE FUNCTION reminderd.refuse_out_of_range();

-- The zones each statement wrote, however it was written (reminderd.check_contact_zones(), 0033).
CREATE TRIGGER contacts_check_zones_insert
    AFTER INSERT ON reminderd.contacts
    REFERENCING NEW TABLE AS changed_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.check_contact_zones();
CREATE TRIGGER contacts_check_zones_update
    AFTER UPDATE ON reminderd.contacts
    REFERENCING OLD TABLE AS previous_contacts NEW TABLE AS changed_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.check_contact_zones();

-- Contacts written before with a zone that is none (0032 refuses them now). Nothing moves a message
-- without saying so: each kind is counted in a WARNING (reminderd migrate prints it).
--   posix/X   an exact copy of X (check_timezone's HINT says "Use X"): the contact is given X, its
--             messages keep their times (the replan finds the same instants) and take the name.
--   localtime, posixrules, Factory   the zone of whichever host reads the file: left as they are
--             (only the operator knows which zone was meant), named with their count.
--   any other that names no zone at all (written with the triggers off): resolved again from the
--             contact's phone, country or tenant (contacts_resolve), as the daemon cannot read it.
DO $$
DECLARE
    bad       text[];
    copies    text[];
    host_made text[];
    changed   bigint;
    left_in   text;
BEGIN
    SELECT array_agg(z.zone) FILTER (WHERE z.zone LIKE 'posix/%' AND reminderd.is_timezone(substr(z.zone, 7))),
           array_agg(z.zone) FILTER (WHERE z.zone IN ('localtime', 'posixrules', 'Factory')),
           array_agg(z.zone) FILTER (WHERE NOT (z.zone LIKE 'posix/%' AND reminderd.is_timezone(substr(z.zone, 7)))
                                       AND z.zone NOT IN ('localtime', 'posixrules', 'Factory'))
    INTO copies, host_made, bad
    FROM (SELECT DISTINCT u.zone
          FROM reminderd.contacts c CROSS JOIN LATERAL (VALUES (c.timezone), (c.resolved_timezone)) AS u (zone)
          WHERE u.zone NOT IN ('UTC', 'Etc/UTC')
          OFFSET 0) AS z
    WHERE NOT reminderd.is_timezone(z.zone);
    IF copies IS NOT NULL THEN
        BEGIN
            UPDATE reminderd.contacts c SET timezone = substr(c.timezone, 7), phone = c.phone
            WHERE c.timezone = ANY (copies);
            GET DIAGNOSTICS changed = ROW_COUNT;
            IF changed > 0 THEN
                RAISE WARNING '% contact% with a posix/ zone given its IANA name (%)', changed,
                              CASE WHEN changed = 1 THEN '' ELSE 's' END, array_to_string(copies, ', ')
                    USING DETAIL = 'posix/X is a copy of X: their messages keep their times.';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'contacts with the zones % left as they were: %', copies, SQLERRM;
        END;
    END IF;
    SELECT count(DISTINCT (c.tenant_id, c.contact_id)), string_agg(DISTINCT u.zone, ', ' ORDER BY u.zone)
    INTO changed, left_in
    FROM reminderd.contacts c CROSS JOIN LATERAL (VALUES (c.timezone), (c.resolved_timezone)) AS u (zone)
    WHERE u.zone = ANY (host_made || copies);
    IF changed > 0 THEN
        RAISE WARNING '% contact% left in the zone of no IANA name (%)', changed,
                      CASE WHEN changed = 1 THEN '' ELSE 's' END, left_in
            USING DETAIL = 'localtime, posixrules and Factory are the zone of whichever host reads them; '
                           'their messages were left as they were.',
                  HINT = 'Set each one''s timezone to the IANA name meant (reminderd.upsert_contacts): '
                         'its messages follow.';
    END IF;
    IF bad IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        UPDATE reminderd.contacts c
        SET timezone = CASE WHEN c.timezone = ANY (bad) THEN NULL ELSE c.timezone END, phone = c.phone
        WHERE c.timezone = ANY (bad) OR c.resolved_timezone = ANY (bad);
        GET DIAGNOSTICS changed = ROW_COUNT;
        RAISE WARNING '% contact% with a zone that is none (%) resolved again from phone, country or tenant',
                      changed, CASE WHEN changed = 1 THEN '' ELSE 's' END, array_to_string(bad, ', ')
            USING DETAIL = 'The daemon cannot read such a zone: their messages were planned again in the new one.';
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'contacts with the zones % left as they were: %', bad, SQLERRM;
    END;
END
$$;
