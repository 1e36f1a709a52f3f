-- 0031 decisions: a rotation's secret and a broadcast's approval.
--   approval   approve_broadcast returned 0 (200 over HTTP) to the broadcast's own creator once
--              another person had approved it: its "approved already" answer came before the
--              creator check. Now the creator is refused (42501) whatever the approval; the same
--              decision again by another person still returns 0 and changes nothing (as
--              rejecting a rejected one does), deciding the other way is 55000.
--   secrets    An Idempotency-Key kept the answer of POST /v1/tenant/rotate-secret, the new signing
--              secret in plain text, for 24 hours, replayed to any key of the tenant and readable by
--              reminderd_api. The server now keeps only that the rotation was done (content_type
--              'reminderd/shown-once', an empty body: reminderd/api.py SHOWN_ONCE); the rows kept
--              before are turned into that, so none holds a secret any more.
-- Run by migrations/versions/0031_decisions.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- A rotation's answer only: the table keeps no route, but that answer is the only one whose JSON
-- (wire.dumps, compact) starts with its secret, and whose keys are exactly these two. Another answer
-- that merely holds such strings (a message's payload) is kept byte for byte. The bytes are read as
-- JSON only once they start so (CASE: the order is kept).
UPDATE reminderd.idempotency_keys
SET content_type = 'reminderd/shown-once', response_body = ''::bytea
WHERE CASE WHEN status_code = 200 AND substring(response_body FROM 1 FOR 17) = convert_to('{"secret":"whsec_', 'UTF8')
           THEN (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(convert_from(response_body, 'UTF8')::jsonb) AS k)
                = ARRAY['previous_secret_valid_until', 'secret']
           ELSE false END;

-- A broadcast waiting for approval goes ahead once a different person approves it; its rows
-- become pending (those whose time has passed meanwhile follow their backfill policy). The
-- approval covers the largest wave awaiting it (approved_contacts, migration 0028).
-- Approving an approved one again returns 0 and changes nothing (its decided_by stays), but never
-- for its creator (42501, migration 0031); one rejected or needing no approval is 55000.
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
