-- 0007 the write path paid once per attempt: an attempt's row in reminderd.deliveries also records
-- the change it made (event, status, fire_at, reason, actor), so the daemon writes one row per
-- callback instead of a delivery and an event; the UPDATE triggers are row-level with a WHEN
-- clause, so a claim builds no transition tables; reminderd.trail reads events and deliveries as
-- one story. Deliveries now outlive their message, like events: both are the trail, pruned by age.
-- Run by migrations/versions/0007_write_path.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- An attempt is part of the audit trail: what it made of the message, and whose it was.
ALTER TABLE reminderd.deliveries
    ADD COLUMN ref_id text,
    ADD COLUMN event  text,
    ADD COLUMN status text,
    ADD COLUMN fire_at timestamptz,
    ADD COLUMN reason text,
    ADD COLUMN actor  name;
ALTER TABLE reminderd.deliveries ALTER COLUMN actor SET DEFAULT current_user;
-- Every delivery so far has its message (they were deleted with it): its ref comes from there.
-- Their changes are in reminderd.events already, written by the old statement-level trigger.
UPDATE reminderd.deliveries d SET ref_id = m.ref_id
FROM reminderd.scheduled_messages m
WHERE m.id = d.message_id;
ALTER TABLE reminderd.deliveries ALTER COLUMN ref_id SET NOT NULL;
-- The trail outlives the messages: deliveries are pruned by age, like events, not with their message.
ALTER TABLE reminderd.deliveries DROP CONSTRAINT deliveries_message_id_fkey;
CREATE INDEX deliveries_tenant_ref ON reminderd.deliveries (tenant_id, ref_id, id);

-- The attempt whose outcome last moved the row: its deliveries row records that change, so the
-- audit trigger skips it. Only the daemon (and the owner) may set it: an application role, or the
-- API server's, could otherwise hide a change of its own from the trail.
ALTER TABLE reminderd.scheduled_messages ADD COLUMN last_delivery_id bigint;
COMMENT ON COLUMN reminderd.scheduled_messages.last_delivery_id IS
    'The reminderd.deliveries row of the attempt that last moved this row; that row records the '
    'change, so reminderd.events does not repeat it. Set by the daemon only.';
REVOKE UPDATE ON reminderd.scheduled_messages FROM reminderd_app, reminderd_api;
GRANT UPDATE (id, tenant_id, ref_id, payload, callback_url, fire_at, cron, timezone, status, attempts,
              max_attempts, last_error, created_at, updated_at, picked_at, sent_at, lease_expires_at,
              scheduled_for, last_event, paused_by, rrule, until, max_runs, runs, category, calendar,
              holiday_rule, backfill, max_lateness, extra_of)
    ON reminderd.scheduled_messages TO reminderd_app, reminderd_api;
-- record_outcomes numbers each attempt before writing it (the row's last_delivery_id points at it).
GRANT USAGE ON SEQUENCE reminderd.deliveries_id_seq TO reminderd_daemon;

-- Row-level UPDATE triggers: a statement-level trigger with transition tables made PostgreSQL copy
-- every updated row twice, the claim's included, only for the trigger to find nothing to record.
-- A WHEN clause is checked per row before anything is queued: a claim, and an attempt's outcome
-- (recorded in deliveries), queue nothing.
DROP TRIGGER scheduled_messages_audit_update ON reminderd.scheduled_messages;
DROP TRIGGER scheduled_messages_notify_update ON reminderd.scheduled_messages;

CREATE OR REPLACE FUNCTION reminderd.audit_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    VALUES (NEW.id, NEW.tenant_id, NEW.ref_id,
            CASE WHEN NEW.last_event IS DISTINCT FROM OLD.last_event OR NEW.updated_at > OLD.updated_at
                 THEN coalesce(NEW.last_event, 'updated') ELSE 'updated' END,
            NEW.status, NEW.fire_at,
            CASE WHEN NEW.last_event IS DISTINCT FROM OLD.last_event OR NEW.updated_at > OLD.updated_at
                 THEN NEW.last_error ELSE format('status %s -> %s', OLD.status, NEW.status) END,
            current_user);
    RETURN NULL;
END
$$;

CREATE FUNCTION reminderd.notify_row_due_soon() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.fire_at IS NULL THEN
        PERFORM pg_notify('reminderd_due', 'plan');
    ELSE
        PERFORM pg_notify('reminderd_due', extract(epoch FROM NEW.fire_at)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER scheduled_messages_audit_update
    AFTER UPDATE ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.status <> 'picked'
          AND NEW.last_delivery_id IS NOT DISTINCT FROM OLD.last_delivery_id
          AND (NEW.status IS DISTINCT FROM OLD.status
               OR NEW.fire_at IS DISTINCT FROM OLD.fire_at
               OR NEW.last_event IS DISTINCT FROM OLD.last_event
               OR NEW.updated_at > OLD.updated_at))
    EXECUTE FUNCTION reminderd.audit_update();
CREATE TRIGGER scheduled_messages_notify_update
    AFTER UPDATE ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.status = 'pending'
          AND (NEW.fire_at IS NULL OR NEW.fire_at < clock_timestamp() + interval '10 minutes')
          AND (OLD.status IS DISTINCT FROM 'pending' OR NEW.fire_at IS DISTINCT FROM OLD.fire_at))
    EXECUTE FUNCTION reminderd.notify_row_due_soon();

REVOKE EXECUTE ON FUNCTION reminderd.notify_row_due_soon() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.notify_row_due_soon() TO reminderd_app, reminderd_daemon, reminderd_api;

-- The trail of every message: its events and its attempts, each attempt with the change it made.
CREATE VIEW reminderd.trail WITH (security_invoker = true) AS
SELECT e.created_at AS at, e.message_id, e.tenant_id, e.ref_id, e.event, e.status, e.fire_at, e.reason,
       e.actor, NULL::integer AS attempt, NULL::text AS webhook_id, NULL::integer AS status_code,
       NULL::text AS error, NULL::integer AS duration_ms, e.id AS event_id, NULL::bigint AS delivery_id
FROM reminderd.events e
UNION ALL
SELECT d.created_at, d.message_id, d.tenant_id, d.ref_id, d.event, d.status, d.fire_at, d.reason,
       d.actor, d.attempt, d.webhook_id, d.status_code, d.error, d.duration_ms, NULL, d.id
FROM reminderd.deliveries d;
COMMENT ON VIEW reminderd.trail IS
    'Everything that happened to each message: reminderd.events and the attempts of reminderd.deliveries '
    '(attempt set), each attempt with the change it made (event NULL when it made none). '
    'ORDER BY at, event_id, delivery_id.';
GRANT SELECT ON reminderd.trail TO reminderd_readonly, reminderd_app, reminderd_daemon;
-- The HTTP API's message history and stats read the trail (the attempts' changes are not in events).
GRANT SELECT ON reminderd.trail TO reminderd_api;

-- The last 1,000 attempts: the ref is on the delivery itself now (its message may be pruned).
CREATE OR REPLACE VIEW reminderd.recent_deliveries WITH (security_invoker = true) AS
SELECT d.id, d.created_at, d.message_id, d.tenant_id, d.ref_id, d.webhook_id, d.attempt, d.scheduled_for,
       d.status_code, d.error, d.duration_ms,
       CASE WHEN d.status_code BETWEEN 200 AND 299 THEN 'delivered' ELSE 'failed' END AS outcome
FROM (SELECT * FROM reminderd.deliveries ORDER BY id DESC LIMIT 1000) d
ORDER BY d.id DESC;
