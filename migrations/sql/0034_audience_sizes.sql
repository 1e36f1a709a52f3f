-- 0034 audience sizes; a cancelled broadcast's approval (docs/audiences.md, docs/sql.md):
--   approval   cancel_broadcast left a broadcast awaiting approval 'awaiting' (and a one-off's
--              ended_reason 'staged') with every row cancelled: the overview asked for an approval
--              of nothing. Now its approval is 'cancelled' (a new value) and it ended 'cancelled'.
--              approve_broadcast refuses (55000) a broadcast that has nothing more to stage and no
--              row awaiting approval (its contacts were deleted).
--   audiences  GET /v1/audiences and `reminderd audience list` counted every member of the
--              tenant on each call (a seq scan of audience_members). audiences.members (new) is
--              kept by statement triggers on audience_members (insert, delete, update: whatever
--              changed the rows, a contact's deletion too) and read instead.
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

ALTER TABLE reminderd.audiences ADD COLUMN
    members bigint NOT NULL DEFAULT 0 CONSTRAINT audience_members_counted CHECK (members >= 0);

-- (migration 0034) audiences.members follows its rows, whatever changed them (add_to_audience,
-- remove_from_audience, a contact's deletion, plain SQL): one UPDATE per audience a statement
-- touched, in name order (two statements lock the same rows in the same order: no deadlock), each
-- adding the change to the row as it is when locked, so concurrent changes add up exactly.
CREATE FUNCTION reminderd.count_audience_members() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    change record;
BEGIN
    -- Each trigger names only its own transition tables (new_members, old_members).
    IF TG_OP = 'INSERT' THEN
        FOR change IN SELECT n.tenant_id, n.audience, count(*) AS delta FROM new_members n
                      GROUP BY 1, 2 ORDER BY 1, 2 LOOP
            UPDATE reminderd.audiences a SET members = a.members + change.delta
            WHERE a.tenant_id = change.tenant_id AND a.name = change.audience;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR change IN SELECT o.tenant_id, o.audience, -count(*) AS delta FROM old_members o
                      GROUP BY 1, 2 ORDER BY 1, 2 LOOP
            UPDATE reminderd.audiences a SET members = a.members + change.delta
            WHERE a.tenant_id = change.tenant_id AND a.name = change.audience;
        END LOOP;
    ELSE
        FOR change IN SELECT d.tenant_id, d.audience, sum(d.delta) AS delta
                      FROM (SELECT n.tenant_id, n.audience, 1 AS delta FROM new_members n
                            UNION ALL
                            SELECT o.tenant_id, o.audience, -1 FROM old_members o) AS d
                      GROUP BY 1, 2 HAVING sum(d.delta) <> 0 ORDER BY 1, 2 LOOP
            UPDATE reminderd.audiences a SET members = a.members + change.delta
            WHERE a.tenant_id = change.tenant_id AND a.name = change.audience;
        END LOOP;
    END IF;
    RETURN NULL;
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
REVOKE EXECUTE ON FUNCTION reminderd.count_audience_members() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.count_audience_members() TO reminderd_app, reminderd_daemon, reminderd_api;

UPDATE reminderd.audiences a
SET members = c.members
FROM (SELECT m.tenant_id, m.audience, count(*) AS members FROM reminderd.audience_members m GROUP BY 1, 2) AS c
WHERE a.tenant_id = c.tenant_id AND a.name = c.audience;
