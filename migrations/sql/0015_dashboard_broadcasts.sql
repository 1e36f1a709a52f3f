-- 0015 the dashboard's broadcasts (issue 14 in the dashboard of issue 12): `reminderd serve`
-- shows each broadcast with its progress and waves, and its operators approve, reject and cancel
-- them, each in the name of the API key signed in. What reminderd_api needs for that (naming the
-- key it acts for through acting_as, reading broadcasts and their waves, approve_broadcast,
-- reject_broadcast, cancel_broadcast) came with the HTTP API's broadcasts in 0014; here, the
-- indexes the pages read:
--   broadcast_requests_tenant    a tenant's broadcasts newest first: the broadcasts page.
--   broadcast_requests_awaiting  the broadcasts waiting for approval: the overview's call to action.
-- Run by migrations/versions/0015_dashboard_broadcasts.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).
-- broadcast_requests holds one row per broadcast: its indexes build in moments.

CREATE INDEX broadcast_requests_tenant ON reminderd.broadcast_requests (tenant_id, id);
CREATE INDEX broadcast_requests_awaiting ON reminderd.broadcast_requests (tenant_id, id)
    WHERE approval = 'awaiting';
