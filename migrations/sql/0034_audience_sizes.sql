-- 0034 audience sizes; a cancelled broadcast's approval (docs/audiences.md, docs/sql.md):
--   approval   cancel_broadcast left a broadcast awaiting approval 'awaiting' (and a one-off's
--              ended_reason 'staged') with every row cancelled: the overview asked for an approval
--              of nothing. Now its approval is 'cancelled' (a new value) and it ended 'cancelled'.
--              approve_broadcast refuses (55000) a broadcast that has nothing more to stage and no
--              row awaiting approval (its contacts were deleted).
-- Rows written before: a broadcast awaiting approval that cancel_broadcast cancelled is 'cancelled'.
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
