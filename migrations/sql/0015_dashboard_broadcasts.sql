-- 0015 the dashboard's broadcasts (issue 14 in the dashboard of issue 12): `reminderd serve`
-- shows each broadcast with its progress and waves, and its operators approve, reject and cancel
-- them, each in the name of the API key signed in.
--   acting_as            reminderd_api, like reminderd_daemon, names the person it acts for (the
--                        key that signed in): a second person's approval is a second key's.
--   reminderd_api        reads broadcast_requests, broadcast_occurrences and the broadcasts view;
--                        calls approve_broadcast, reject_broadcast and cancel_broadcast (which
--                        update a broadcast's request row: the columns they change only).
--   broadcast_requests_tenant    a tenant's broadcasts newest first: the broadcasts page.
--   broadcast_requests_awaiting  the broadcasts waiting for approval: the overview's call to action.
-- Run by migrations/versions/0015_dashboard_broadcasts.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).
-- broadcast_requests holds one row per broadcast: its indexes build in moments.

CREATE OR REPLACE FUNCTION reminderd.acting_as(actor text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF actor IS NULL THEN
        RETURN current_user;
    END IF;
    IF btrim(actor) = '' OR length(actor) > 200 THEN
        RAISE EXCEPTION 'actor must be a name of 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (pg_has_role(current_user, 'reminderd_daemon', 'MEMBER')
            OR pg_has_role(current_user, 'reminderd_api', 'MEMBER')) THEN
        RAISE EXCEPTION 'role % may not act as "%"', current_user, actor
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave actor out: an application role acts as itself (current_user).';
    END IF;
    RETURN actor;
END
$$;

CREATE INDEX broadcast_requests_tenant ON reminderd.broadcast_requests (tenant_id, id);
CREATE INDEX broadcast_requests_awaiting ON reminderd.broadcast_requests (tenant_id, id)
    WHERE approval = 'awaiting';

-- reminderd_api: every tenant's broadcasts; the server scopes each query to its key's tenant.
CREATE POLICY api_all ON reminderd.broadcast_requests TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.broadcast_occurrences FOR SELECT TO reminderd_api USING (true);
GRANT SELECT ON reminderd.broadcast_requests, reminderd.broadcast_occurrences, reminderd.broadcasts
    TO reminderd_api;
GRANT UPDATE (approval, decided_by, decided_at, decision_note, next_occurrence, ended_at, ended_reason, updated_at)
    ON reminderd.broadcast_requests TO reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.acting_as(text),
    reminderd.approve_broadcast(text, bigint, text, text),
    reminderd.reject_broadcast(text, bigint, text, text),
    reminderd.cancel_broadcast(text, bigint)
TO reminderd_api;
