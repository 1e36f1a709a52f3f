-- 0023 tenant isolation where a row named another tenant's: what an application role
-- (reminderd_app) or reminderd serve (reminderd_api) may write no longer points into another
-- tenant's data, and what only the daemon and the triggers count, they alone write (docs/sql.md,
-- "Tenant isolation"):
--   broadcasts     an occurrence names a broadcast of its own tenant (a foreign key on both
--                  columns, to broadcast_requests' new UNIQUE (tenant_id, id)); a message's
--                  broadcast_id too (count_inserts on INSERT, check_broadcast_of_row on UPDATE:
--                  23503, the same words for another tenant's id as for nobody's). The counts are
--                  written as the owner (count_inserts, count_broadcast_update: SECURITY DEFINER);
--                  applications read them and no longer insert them, nor change or delete a wave.
--                  complete_broadcasts, approve_broadcast, reject_broadcast, the view broadcasts
--                  and every read of waves and counts join on the tenant too.
--   message ids    an INSERT choosing an id past the sequence's last value is refused (42501):
--                  it was another tenant's next id, and their INSERTs failed on it. Nobody but the
--                  owner may UPDATE id.
--   claims         only a daemon moves a row into picked (refuse_pick, 42501); reminderd_app and
--                  reminderd_api may no longer UPDATE picked_at, picked_by or endpoint.
--   usage          usage_increments is written by count_inserts as the owner (and the daemon):
--                  applications read it; no count may be negative (CHECK, usage_days too).
-- Rows written before that break the new rules are repaired first: occurrences and counts filed
-- under a tenant other than their broadcast's are deleted (they were forged), a message naming
-- another tenant's broadcast forgets it, negative usage counts become 0. A row picked by no
-- daemon with a lease that never ends is given a lease that has ended, so the reaper frees it.
-- Run by migrations/versions/0023_tenant_bounds.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Repairs ----------------------------------------------------------------------------------------
DELETE FROM reminderd.broadcast_occurrences o
USING reminderd.broadcast_requests r
WHERE r.id = o.broadcast_id AND r.tenant_id <> o.tenant_id;
DELETE FROM reminderd.broadcast_counts k
USING reminderd.broadcast_requests r
WHERE r.id = k.broadcast_id AND r.tenant_id <> k.tenant_id;
-- As the owner, with the triggers that would count or check the change off for this statement.
ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER USER;
UPDATE reminderd.scheduled_messages m
SET broadcast_id = NULL
FROM reminderd.broadcast_requests r
WHERE r.id = m.broadcast_id AND r.tenant_id <> m.tenant_id;
UPDATE reminderd.scheduled_messages m
SET lease_expires_at = now()
WHERE m.status = 'picked' AND m.picked_by IS NULL AND m.lease_expires_at > now() + interval '1 day';
ALTER TABLE reminderd.scheduled_messages ENABLE TRIGGER USER;
UPDATE reminderd.usage_increments
SET scheduled = greatest(scheduled, 0), attempted = greatest(attempted, 0), delivered = greatest(delivered, 0),
    dead = greatest(dead, 0), expired = greatest(expired, 0), held = greatest(held, 0)
WHERE least(scheduled, attempted, delivered, dead, expired, held) < 0;
UPDATE reminderd.usage_days
SET scheduled = greatest(scheduled, 0), attempted = greatest(attempted, 0), delivered = greatest(delivered, 0),
    dead = greatest(dead, 0), expired = greatest(expired, 0), held = greatest(held, 0)
WHERE least(scheduled, attempted, delivered, dead, expired, held) < 0;

-- Constraints ------------------------------------------------------------------------------------
DROP INDEX reminderd.broadcast_requests_tenant;
ALTER TABLE reminderd.broadcast_requests ADD CONSTRAINT broadcast_requests_tenant UNIQUE (tenant_id, id);
ALTER TABLE reminderd.broadcast_occurrences DROP CONSTRAINT broadcast_occurrences_broadcast_id_fkey;
ALTER TABLE reminderd.broadcast_occurrences ADD CONSTRAINT broadcast_occurrences_broadcast_fkey
    FOREIGN KEY (tenant_id, broadcast_id) REFERENCES reminderd.broadcast_requests (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE reminderd.usage_increments ADD CONSTRAINT usage_increments_not_negative CHECK (
    scheduled >= 0 AND attempted >= 0 AND delivered >= 0 AND dead >= 0 AND expired >= 0 AND held >= 0);
ALTER TABLE reminderd.usage_days ADD CONSTRAINT usage_days_not_negative CHECK (
    scheduled >= 0 AND attempted >= 0 AND delivered >= 0 AND dead >= 0 AND expired >= 0 AND held >= 0);

-- Functions --------------------------------------------------------------------------------------
CREATE FUNCTION reminderd.count_inserts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    top_id     bigint;
    staged     boolean;  -- rows of a broadcast's occurrence
    broadcasts boolean;  -- rows naming a broadcast
    stray      record;
BEGIN
    SELECT max(n.id), bool_or(n.broadcast_id IS NOT NULL AND n.contact_id IS NOT NULL), bool_or(n.broadcast_id IS NOT NULL)
    INTO top_id, staged, broadcasts
    FROM changed_rows n;
    IF top_id > coalesce(pg_sequence_last_value('reminderd.scheduled_messages_id_seq'::regclass), 0) THEN
        RAISE EXCEPTION 'message id % is not yours to choose: reminderd.scheduled_messages_id_seq numbers the messages '
                        'and has not reached it', top_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave id out of the INSERT: its default numbers the row. A DBA restoring rows moves the sequence '
                         'past them first (SELECT setval(''reminderd.scheduled_messages_id_seq'', ...)).';
    END IF;
    IF broadcasts THEN
        SELECT n.tenant_id, n.broadcast_id INTO stray
        FROM (SELECT DISTINCT c.tenant_id, c.broadcast_id FROM changed_rows c WHERE c.broadcast_id IS NOT NULL) AS n
        WHERE NOT EXISTS (SELECT 1 FROM reminderd.broadcast_requests r
                          WHERE r.tenant_id = n.tenant_id AND r.id = n.broadcast_id)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'tenant "%" has no broadcast %: a message names a broadcast of its own tenant',
                stray.tenant_id, stray.broadcast_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Leave broadcast_id out: reminderd.broadcast() stages a broadcast''s messages itself.';
        END IF;
    END IF;
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
    INSERT INTO reminderd.usage_increments (tenant_id, scheduled)
    SELECT n.tenant_id, count(*) FROM changed_rows n GROUP BY n.tenant_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION reminderd.check_broadcast_of_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reminderd.broadcast_requests r
                   WHERE r.tenant_id = NEW.tenant_id AND r.id = NEW.broadcast_id) THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %: message % / % names a broadcast of its own tenant',
            NEW.tenant_id, NEW.broadcast_id, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Leave broadcast_id as it is: reminderd.broadcast() stages a broadcast''s messages itself.';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION reminderd.refuse_pick() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_has_role(current_user, 'reminderd_daemon', 'USAGE')
       OR pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'message % / % cannot be set to picked by role %: only a reminderd daemon claims messages',
        NEW.tenant_id, NEW.ref_id, current_user
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Leave status to the daemon: a pending message that is due is claimed at once.';
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

CREATE OR REPLACE FUNCTION reminderd.count_broadcast_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before text := reminderd.broadcast_state(OLD.status, OLD.last_event);
    after  text := reminderd.broadcast_state(NEW.status, NEW.last_event);
BEGIN
    INSERT INTO reminderd.broadcast_counts
        (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
    VALUES (NEW.broadcast_id, NEW.local_time, NEW.tenant_id,
            (after = 'waiting')::integer - (before = 'waiting')::integer,
            (after = 'held')::integer - (before = 'held')::integer,
            (after = 'sent')::integer - (before = 'sent')::integer,
            (after = 'failed')::integer - (before = 'failed')::integer,
            (after = 'expired')::integer - (before = 'expired')::integer,
            (after = 'cancelled')::integer - (before = 'cancelled')::integer);
    RETURN NULL;
END
$$;

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
        updated_at = now()
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

CREATE OR REPLACE FUNCTION reminderd.reject_broadcast(tenant_id text, broadcast_id bigint, actor text DEFAULT NULL,
                                           note text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    request   reminderd.broadcast_requests;
    who       text;
    cancelled integer;
BEGIN
    PERFORM reminderd.check_tenant(reject_broadcast.tenant_id);
    who := reminderd.acting_as(reject_broadcast.actor);
    SELECT * INTO request FROM reminderd.broadcast_requests r
    WHERE r.id = reject_broadcast.broadcast_id AND r.tenant_id = reject_broadcast.tenant_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %', reject_broadcast.tenant_id, reject_broadcast.broadcast_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF request.approval = 'rejected' THEN
        RETURN 0;
    ELSIF request.approval <> 'awaiting' THEN
        RAISE EXCEPTION 'broadcast % is not waiting for approval (it is %)', request.id,
            replace(request.approval, '_', ' ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'To stop it, cancel it: reminderd.cancel_broadcast(tenant, id).';
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'rejected', decided_by = who, decided_at = now(), decision_note = reject_broadcast.note,
        ended_at = coalesce(r.ended_at, now()), ended_reason = format('rejected by %s', who), updated_at = now()
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'rejected', lease_expires_at = NULL,
        last_error = format('broadcast %s rejected by %s', request.id, who) || coalesce(': ' || reject_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

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
               r.local_time IS NULL AS recurring, totals.*
        FROM reminderd.broadcast_occurrences o
        JOIN reminderd.broadcast_requests r ON r.id = o.broadcast_id AND r.tenant_id = o.tenant_id
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
            INSERT INTO reminderd.scheduled_messages
                (tenant_id, ref_id, fire_at, payload, callback_url, broadcast_id, category)
            VALUES (done.tenant_id,
                    done.ref_prefix || '#completed'
                        || CASE WHEN done.recurring THEN '#' || to_char(done.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END,
                    now(),
                    jsonb_build_object(
                        'event', 'broadcast.completed', 'broadcast_id', done.broadcast_id,
                        'ref_prefix', done.ref_prefix,
                        'occurrence', to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'),
                        'counts', jsonb_build_object(
                            'staged', done.sent + done.failed + done.expired + done.cancelled,
                            'sent', done.sent, 'failed', done.failed, 'expired', done.expired,
                            'cancelled', done.cancelled)),
                    done.callback_url, done.broadcast_id, 'transactional')
            RETURNING id INTO message_id;
        END IF;
        UPDATE reminderd.broadcast_occurrences o
        SET completed_at = now(), completion_message_id = message_id
        WHERE o.broadcast_id = done.broadcast_id AND o.occurrence = done.occurrence;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The view: counts and waves of the broadcast's own tenant.
CREATE OR REPLACE VIEW reminderd.broadcasts WITH (security_invoker = true) AS
SELECT b.id, b.tenant_id, b.ref_prefix,
       CASE WHEN b.everyone THEN 'everyone' WHEN b.audience IS NOT NULL THEN 'audience ' || b.audience
            ELSE cardinality(b.contact_ids) || ' contacts' END AS audience,
       b.local_time, b.cron, b.rrule, b.category, b.approval, b.created_by, b.created_at, b.decided_by, b.decided_at,
       coalesce(o.occurrences, 0) AS occurrences,
       coalesce(c.waiting + c.held + c.sent + c.failed + c.expired + c.cancelled, 0) AS staged,
       coalesce(c.waiting, 0) AS waiting, coalesce(c.held, 0) AS held, coalesce(c.sent, 0) AS sent,
       coalesce(c.failed, 0) AS failed, coalesce(c.expired, 0) AS expired, coalesce(c.cancelled, 0) AS cancelled,
       b.ended_at IS NOT NULL AND coalesce(c.waiting, 0) + coalesce(c.held, 0) = 0 AS done,
       b.next_occurrence, b.ended_at, b.ended_reason, b.last_error
FROM reminderd.broadcast_requests b
LEFT JOIN LATERAL (
    SELECT sum(k.waiting) AS waiting, sum(k.held) AS held, sum(k.sent) AS sent, sum(k.failed) AS failed,
           sum(k.expired) AS expired, sum(k.cancelled) AS cancelled
    FROM reminderd.broadcast_counts k
    WHERE k.broadcast_id = b.id AND k.tenant_id = b.tenant_id
) AS c ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS occurrences FROM reminderd.broadcast_occurrences x
    WHERE x.broadcast_id = b.id AND x.tenant_id = b.tenant_id
) AS o ON true;

-- Triggers ---------------------------------------------------------------------------------------
CREATE TRIGGER scheduled_messages_count_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_inserts();
CREATE TRIGGER scheduled_messages_broadcast_of_tenant
    BEFORE UPDATE OF broadcast_id, tenant_id ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.broadcast_id IS NOT NULL
          AND (NEW.broadcast_id IS DISTINCT FROM OLD.broadcast_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id))
    EXECUTE FUNCTION reminderd.check_broadcast_of_row();
CREATE TRIGGER scheduled_messages_picked_by_daemon_insert
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.status = 'picked')
    EXECUTE FUNCTION reminderd.refuse_pick();
CREATE TRIGGER scheduled_messages_picked_by_daemon_update
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.status = 'picked' AND OLD.status <> 'picked' AND NEW.picked_at IS NOT DISTINCT FROM OLD.picked_at)
    EXECUTE FUNCTION reminderd.refuse_pick();

-- Privileges and policies ------------------------------------------------------------------------
REVOKE UPDATE (id, picked_at, picked_by, endpoint) ON reminderd.scheduled_messages FROM reminderd_app, reminderd_api;
REVOKE UPDATE, DELETE ON reminderd.broadcast_occurrences FROM reminderd_app;
REVOKE INSERT ON reminderd.broadcast_counts FROM reminderd_app, reminderd_api;
REVOKE INSERT ON reminderd.usage_increments FROM reminderd_app, reminderd_api;
GRANT SELECT ON reminderd.usage_increments TO reminderd_app;
DROP POLICY app_own_tenants ON reminderd.broadcast_counts;
CREATE POLICY app_own_tenants ON reminderd.broadcast_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
DROP POLICY app_own_tenants ON reminderd.usage_increments;
CREATE POLICY app_own_tenants ON reminderd.usage_increments FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
-- Trigger functions: called by their triggers only (whose EXECUTE is not checked then).
REVOKE EXECUTE ON FUNCTION reminderd.count_inserts(), reminderd.check_broadcast_of_row(), reminderd.refuse_pick()
    FROM PUBLIC;
