-- 0018 version 1 of the batch items, as what it is: version 2 without a contact. Migration 0014
-- copied schedule_item, schedule_one, schedule_set and schedule_many for schedule_item_v2 and kept
-- the version 1 copies for the servers of the previous release during a rolling upgrade; the two
-- copies of each made the same decisions for an item without a contact (a NULL contact_id is the
-- version 1 path of every version 2 function). The version 1 functions now hand their items to the
-- version 2 functions, with a NULL contact, and return what those return in the version 1 shape:
-- the same rows, results, errors (message, DETAIL, HINT, SQLSTATE) and audit trail, one body each.
-- Signatures, privileges and comments stay.
-- Run by migrations/versions/0018_v1_items.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Version 1 items as version 2 ones, without a contact, in their order (NULL stays NULL).
CREATE FUNCTION reminderd.as_items_v2(items reminderd.schedule_item_v1[]) RETURNS reminderd.schedule_item_v2[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN items IS NOT NULL THEN ARRAY(
        SELECT ROW((items[k]).*, NULL)::reminderd.schedule_item_v2
        FROM generate_subscripts(items, 1) AS k
        ORDER BY k) END
$$;

CREATE OR REPLACE FUNCTION reminderd.schedule_item(tenant_id text, one reminderd.schedule_item_v1,
    OUT message_id bigint, OUT result text, OUT status text, OUT fire_at timestamptz)
LANGUAGE sql AS $$
    SELECT s.message_id, s.result, s.status, s.fire_at
    FROM reminderd.schedule_item(schedule_item.tenant_id, ROW((one).*, NULL)::reminderd.schedule_item_v2) AS s
$$;

CREATE OR REPLACE FUNCTION reminderd.schedule_one(tenant_id text, one reminderd.schedule_item_v1)
RETURNS reminderd.item_scheduled_v1
LANGUAGE sql AS $$
    SELECT reminderd.schedule_one(schedule_one.tenant_id, ROW((one).*, NULL)::reminderd.schedule_item_v2)
$$;

CREATE OR REPLACE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v1[])
RETURNS SETOF reminderd.item_scheduled_v1
LANGUAGE sql AS $$
    SELECT * FROM reminderd.schedule_set(schedule_set.tenant_id, reminderd.as_items_v2(items))
$$;

CREATE OR REPLACE FUNCTION reminderd.schedule_many(
    tenant_id text, items reminderd.schedule_item_v1[], atomic boolean DEFAULT true
) RETURNS TABLE (item integer, message_id bigint, result text, status text, fire_at timestamptz,
                 error_sqlstate text, error_message text, error_hint text, error_detail text,
                 error_constraint text)
LANGUAGE sql AS $$
    SELECT s.item, s.message_id, s.result, s.status, s.fire_at, s.error_sqlstate, s.error_message, s.error_hint,
           s.error_detail, s.error_constraint
    FROM reminderd.schedule_many(schedule_many.tenant_id, reminderd.as_items_v2(items), atomic) AS s
$$;

REVOKE EXECUTE ON FUNCTION reminderd.as_items_v2(reminderd.schedule_item_v1[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.as_items_v2(reminderd.schedule_item_v1[])
TO reminderd_app, reminderd_daemon, reminderd_api;
