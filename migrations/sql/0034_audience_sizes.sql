-- 0034 audience sizes; a cancelled broadcast's approval (docs/audiences.md, docs/sql.md):
--   approval   cancel_broadcast left a broadcast awaiting approval 'awaiting' (and a one-off's
--              ended_reason 'staged') with every row cancelled: the overview asked for an approval
--              of nothing. Now its approval is 'cancelled' (a new value) and it ended 'cancelled'.
--              approve_broadcast refuses (55000) a broadcast that has nothing more to stage and no
--              row awaiting approval (its contacts were deleted).
--   audiences  GET /v1/audiences and `reminderd audience list` counted every member of the
--              tenant on each call (a seq scan of audience_members). Now statement triggers on
--              audience_members (insert, delete, update: whatever changed the rows, a contact's
--              deletion too) append each list's change to audience_member_counts (new), whose few
--              rows per list are summed instead, and the daemon folds them
--              (fold_audience_member_counts). Appended, not a counter updated in place: membership
--              changes share no lock (no deadlock). TRUNCATE of audience_members, which fires no
--              DELETE trigger, is refused (0A000) as 0030 refuses it for contacts.
-- Rows written before: every audience's members counted once, after the triggers exist (their
-- CREATE TRIGGER locks audience_members against writes until this transaction commits, so no
-- change falls between the count and the triggers). A broadcast awaiting approval that
-- cancel_broadcast cancelled is approval 'cancelled', ended 'cancelled'.
-- Run by migrations/versions/0034_audience_sizes.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

ALTER TABLE reminderd.broadcast_requests DROP CONSTRAINT approval_is_known;
ALTER TABLE reminderd.broadcast_requests ADD CONSTRAINT approval_is_known
    CHECK (approval IN ('not_needed', 'awaiting', 'approved', 'rejected', 'cancelled'));

UPDATE reminderd.broadcast_requests r
SET approval = 'cancelled', ended_reason = 'cancelled', updated_at = now()
WHERE r.approval = 'awaiting' AND r.ended_at IS NOT NULL
  AND NOT EXISTS (SELECT FROM reminderd.scheduled_messages m
                  WHERE m.broadcast_id = r.id AND m.status = 'awaiting_approval' AND m.tenant_id = r.tenant_id)
  AND EXISTS (SELECT FROM reminderd.scheduled_messages m
              WHERE m.broadcast_id = r.id AND m.tenant_id = r.tenant_id AND m.status = 'cancelled'
                AND m.last_error = format('broadcast %s cancelled', r.id));

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
    IF request.approval = 'not_needed' THEN
        RAISE EXCEPTION 'broadcast % needs no approval', request.id USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF request.approval = 'rejected' THEN
        RAISE EXCEPTION 'broadcast % was rejected by % at %', request.id, request.decided_by, request.decided_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The creator is refused before "approved already": their own approval is never an answer.
    IF who = request.created_by THEN
        RAISE EXCEPTION 'broadcast % was created by %: another person must approve it', request.id, who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'High volumes need a second person: ask someone else to approve it.';
    END IF;
    IF request.approval = 'approved' THEN
        RETURN 0;  -- the same decision again: nothing changes
    END IF;
    -- (migration 0034) Staged, nothing more to stage, and none of its rows awaits approval (its
    -- contacts were deleted): an approval would release nothing (scheduled_messages_broadcast).
    IF request.ended_at IS NOT NULL AND NOT EXISTS (
        SELECT FROM reminderd.scheduled_messages m
        WHERE m.broadcast_id = request.id AND m.status = 'awaiting_approval' AND m.tenant_id = request.tenant_id
    ) THEN
        RAISE EXCEPTION 'broadcast % has nothing left to approve: none of its messages awaits approval', request.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Its contacts were deleted or its messages cancelled: make a new broadcast to send again.';
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

CREATE OR REPLACE FUNCTION reminderd.cancel_broadcast(tenant_id text, broadcast_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cancelled integer;
BEGIN
    PERFORM reminderd.check_tenant(cancel_broadcast.tenant_id);
    PERFORM FROM reminderd.broadcast_requests r
    WHERE r.id = cancel_broadcast.broadcast_id AND r.tenant_id = cancel_broadcast.tenant_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %', cancel_broadcast.tenant_id, cancel_broadcast.broadcast_id
            USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'cancelled', lease_expires_at = NULL,
        last_error = format('broadcast %s cancelled', cancel_broadcast.broadcast_id), updated_at = now()
    WHERE m.broadcast_id = cancel_broadcast.broadcast_id AND m.tenant_id = cancel_broadcast.tenant_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    UPDATE reminderd.broadcast_requests r
    SET ended_at = coalesce(r.ended_at, now()),
        ended_reason = CASE WHEN r.ended_reason IS NULL OR (r.ended_reason = 'staged' AND cancelled > 0)
                            OR r.approval = 'awaiting' THEN 'cancelled' ELSE r.ended_reason END,
        approval = CASE WHEN r.approval = 'awaiting' THEN 'cancelled' ELSE r.approval END,
        next_occurrence = NULL, updated_at = now()
    WHERE r.id = cancel_broadcast.broadcast_id AND r.tenant_id = cancel_broadcast.tenant_id;
    RETURN cancelled;
END
$$;

-- (migration 0034) Each list's size, kept as changes appended per statement (the broadcast_counts
-- pattern, docs/audiences.md): a list holds the sum of its rows' delta. A change of members only
-- appends a row, never updates one in place, so unrelated membership changes share no lock and
-- cannot deadlock (a count kept in the audiences row made each change hold that row until commit).
-- The daemon folds a list's changes into one now and then (fold_audience_member_counts). Written by
-- the triggers (as the owner) and the fold only. No foreign key: a dropped list's changes add up to
-- nothing and are folded away.
CREATE TABLE reminderd.audience_member_counts (
    tenant_id text NOT NULL,
    audience  text NOT NULL,
    delta     bigint NOT NULL
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX audience_member_counts_audience ON reminderd.audience_member_counts (tenant_id, audience);
ALTER TABLE reminderd.audience_member_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_own_tenants ON reminderd.audience_member_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY read_all ON reminderd.audience_member_counts FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY daemon_all ON reminderd.audience_member_counts TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.audience_member_counts FOR SELECT TO reminderd_api USING (true);
GRANT SELECT ON reminderd.audience_member_counts TO reminderd_app, reminderd_readonly, reminderd_api;
GRANT SELECT, INSERT, DELETE ON reminderd.audience_member_counts TO reminderd_daemon;

-- The change each statement made to each list it touched (add_to_audience, remove_from_audience, a
-- contact's or a list's deletion, plain SQL): one row per list, appended.
CREATE FUNCTION reminderd.count_audience_members() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Each trigger names only its own transition tables (new_members, old_members).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT n.tenant_id, n.audience, count(*) FROM new_members n GROUP BY 1, 2;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT o.tenant_id, o.audience, -count(*) FROM old_members o GROUP BY 1, 2;
    ELSE
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT d.tenant_id, d.audience, sum(d.delta)
        FROM (SELECT n.tenant_id, n.audience, 1 AS delta FROM new_members n
              UNION ALL
              SELECT o.tenant_id, o.audience, -1 FROM old_members o) AS d
        GROUP BY 1, 2 HAVING sum(d.delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- Up to `batch` lists with more than `fold_above` changes (or whose changes add up to nothing, a
-- dropped list's) folded into one change each. A change committed while it runs is not in its
-- snapshot: neither deleted nor summed, it stays. One caller at a time. Returns the lists folded.
CREATE FUNCTION reminderd.fold_audience_member_counts(batch integer DEFAULT 100, fold_above integer DEFAULT 20)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    list   record;
    folded integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.fold_audience_member_counts')) THEN
        RETURN 0;
    END IF;
    FOR list IN
        SELECT k.tenant_id, k.audience FROM reminderd.audience_member_counts k
        GROUP BY 1, 2 HAVING count(*) > fold_audience_member_counts.fold_above OR sum(k.delta) = 0
        LIMIT fold_audience_member_counts.batch
    LOOP
        WITH gone AS (
            DELETE FROM reminderd.audience_member_counts k
            WHERE k.tenant_id = list.tenant_id AND k.audience = list.audience
            RETURNING k.delta
        )
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT list.tenant_id, list.audience, sum(g.delta) FROM gone g HAVING sum(g.delta) <> 0;
        folded := folded + 1;
    END LOOP;
    RETURN folded;
END
$$;

-- TRUNCATE fires no DELETE trigger: it would leave the counts of every list as they were. Refused,
-- saying to delete (migration 0034).
CREATE FUNCTION reminderd.refuse_audience_members_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reminderd.audience_members cannot be truncated: the audiences'' member counts would be left wrong'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Delete them instead (DELETE FROM reminderd.audience_members, or reminderd.drop_audience(tenant, '
                     'name)): the counts follow.';
END
$$;

-- An audience's member count (migration 0034).
CREATE TRIGGER audience_members_count_insert
    AFTER INSERT ON reminderd.audience_members REFERENCING NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_audience_members();
CREATE TRIGGER audience_members_count_delete
    AFTER DELETE ON reminderd.audience_members REFERENCING OLD TABLE AS old_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_audience_members();
CREATE TRIGGER audience_members_count_update
    AFTER UPDATE ON reminderd.audience_members REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_audience_members();
CREATE TRIGGER audience_members_refuse_truncate
    BEFORE TRUNCATE ON reminderd.audience_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.refuse_audience_members_truncate();
REVOKE EXECUTE ON FUNCTION reminderd.count_audience_members(), reminderd.fold_audience_member_counts(integer, integer),
    reminderd.refuse_audience_members_truncate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.count_audience_members(), reminderd.refuse_audience_members_truncate()
TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.fold_audience_member_counts(integer, integer) TO reminderd_daemon;

-- Every list's members counted once, after the triggers exist (see the header).
INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
SELECT m.tenant_id, m.audience, count(*) FROM reminderd.audience_members m GROUP BY 1, 2;
