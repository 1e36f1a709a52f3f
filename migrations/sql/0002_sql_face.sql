-- 0002 the SQL face: roles and row-level security per tenant, secret rotation, audit trail, more of
-- the SQL API (bulk cancel, pause/resume, reschedule, requeue), DBA views, table tuning.
-- Run by migrations/versions/0002_sql_face.py in one transaction. History: once released, never edited;
-- a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Roles ------------------------------------------------------------------------------------------
-- Group roles that cannot log in; operators grant them to login roles:
--   GRANT reminderd_app TO booking_service;   -- then: reminderd tenant grant acme booking_service
-- Roles are cluster-wide, so a second database on the same cluster reuses them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reminderd_app') THEN
        CREATE ROLE reminderd_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reminderd_readonly') THEN
        CREATE ROLE reminderd_readonly NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reminderd_daemon') THEN
        CREATE ROLE reminderd_daemon NOLOGIN;
    END IF;
END
$$;

-- Which database role acts for which tenant.
CREATE TABLE reminderd.tenant_members (
    role_name  name NOT NULL,
    tenant_id  text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant_id)
);

-- Tenants the current role acts for: those mapped to it or to a role it is a member of. Decided
-- by current_user alone, which a session cannot change at will (SET ROLE only reaches roles it
-- was granted): no session variable can switch tenants.
CREATE VIEW reminderd.my_tenants WITH (security_barrier) AS
SELECT m.tenant_id
FROM reminderd.tenant_members m
JOIN pg_roles r ON r.rolname = m.role_name
WHERE pg_has_role(r.oid, 'MEMBER');

-- Tenants: secrets rotate with a grace period, tenants can be paused --------------------------------
ALTER TABLE reminderd.tenants
    ADD COLUMN previous_signing_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- Messages: the event a writer recorded last; why a row is paused --------------------------------
ALTER TABLE reminderd.scheduled_messages
    ADD COLUMN last_event text,
    ADD COLUMN paused_by text CONSTRAINT paused_by_is_known CHECK (paused_by IN ('message', 'tenant'));

-- A payload over 256 KiB is refused (a callback is a nudge, not a file transfer).
CREATE FUNCTION reminderd.check_payload() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_column_size(NEW.payload) > 262144 THEN
        RAISE EXCEPTION 'payload of message % / % is % bytes; at most 262144 (256 KiB)',
            NEW.tenant_id, NEW.ref_id, pg_column_size(NEW.payload)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER scheduled_messages_payload_size
    BEFORE INSERT OR UPDATE OF payload ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.check_payload();

-- New rows of a paused tenant are held too.
CREATE FUNCTION reminderd.hold_for_paused_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' AND EXISTS (
        SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id AND t.paused
    ) THEN
        NEW.status := 'paused';
        NEW.paused_by := 'tenant';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER scheduled_messages_hold_paused_tenant
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.hold_for_paused_tenant();
-- …and so are rows that would become pending again while it is paused: a retry of a message that
-- was in flight when the tenant was paused, or a message resumed on its own.
CREATE TRIGGER scheduled_messages_hold_paused_tenant_update
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')
    EXECUTE FUNCTION reminderd.hold_for_paused_tenant();

-- Audit trail ------------------------------------------------------------------------------------
CREATE TABLE reminderd.events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bigint NOT NULL,          -- no foreign key: the trail outlives pruned messages
    tenant_id  text NOT NULL,
    ref_id     text NOT NULL,
    event      text NOT NULL,            -- created, replaced, cancelled, paused, resumed, rescheduled,
                                         -- fired, retry_scheduled, dead_lettered, expired, requeued, …
    status     text NOT NULL,            -- the status after the event
    fire_at    timestamptz,              -- fire_at after the event
    reason     text,
    actor      name NOT NULL,            -- the database role that did it
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_message ON reminderd.events (message_id, id);
CREATE INDEX events_tenant_ref ON reminderd.events (tenant_id, ref_id, id);
CREATE INDEX events_created ON reminderd.events (created_at);

-- One INSERT per statement, not per row: the daemon's batches stay batches.
CREATE FUNCTION reminderd.audit_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    SELECT n.id, n.tenant_id, n.ref_id, coalesce(n.last_event, 'created'), n.status, n.fire_at,
           CASE WHEN n.status = 'paused' THEN 'tenant is paused' END, current_user
    FROM changed_rows n;
    RETURN NULL;
END
$$;
CREATE TRIGGER scheduled_messages_audit_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.audit_insert();

-- Every change of status, fire_at or last_event, except a claim (deliveries logs attempts). The
-- event is what the writer put in last_event; a plain UPDATE by hand that did not say is
-- recorded as 'updated' with the status change as its reason.
CREATE FUNCTION reminderd.audit_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    SELECT n.id, n.tenant_id, n.ref_id,
           CASE WHEN n.last_event IS DISTINCT FROM o.last_event OR n.updated_at > o.updated_at
                THEN coalesce(n.last_event, 'updated') ELSE 'updated' END,
           n.status, n.fire_at,
           CASE WHEN n.last_event IS DISTINCT FROM o.last_event OR n.updated_at > o.updated_at
                THEN n.last_error ELSE format('status %s -> %s', o.status, n.status) END,
           current_user
    FROM changed_rows n
    JOIN previous_rows o ON o.id = n.id
    WHERE n.status <> 'picked'
      AND (n.status IS DISTINCT FROM o.status
           OR n.fire_at IS DISTINCT FROM o.fire_at
           OR n.last_event IS DISTINCT FROM o.last_event
           OR n.updated_at > o.updated_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER scheduled_messages_audit_update
    AFTER UPDATE ON reminderd.scheduled_messages
    REFERENCING OLD TABLE AS previous_rows NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.audit_update();

-- Row-level security -----------------------------------------------------------------------------
ALTER TABLE reminderd.scheduled_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.tenant_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.tenants ENABLE ROW LEVEL SECURITY;

-- `= ANY (ARRAY(subquery))` is evaluated once per statement and can drive an index on tenant_id;
-- `IN (subquery)` would be checked row by row.
CREATE POLICY app_own_tenants ON reminderd.scheduled_messages TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.deliveries FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.events FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
-- Audit rows are written by the triggers as the acting role: an app may add its own tenant's,
-- in its own name only.
CREATE POLICY app_own_tenants_write ON reminderd.events FOR INSERT TO reminderd_app
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)) AND actor = current_user);
CREATE POLICY app_own_tenants ON reminderd.tenants FOR SELECT TO reminderd_app
    USING (id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY own_membership ON reminderd.tenant_members FOR SELECT TO reminderd_app
    USING (role_name IN (SELECT rolname FROM pg_roles WHERE pg_has_role(oid, 'MEMBER')));

CREATE POLICY read_all ON reminderd.scheduled_messages FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.deliveries FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.events FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.tenants FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.tenant_members FOR SELECT TO reminderd_readonly USING (true);

CREATE POLICY daemon_all ON reminderd.scheduled_messages TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.deliveries TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.events TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.tenants TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.tenant_members TO reminderd_daemon USING (true) WITH CHECK (true);

-- Privileges -------------------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA reminderd FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reminderd FROM PUBLIC;
GRANT USAGE ON SCHEMA reminderd TO reminderd_app, reminderd_readonly, reminderd_daemon;

-- Nobody but the daemon (and the owner) may read a signing secret: column privileges.
GRANT SELECT (id, callback_url, created_at, paused) ON reminderd.tenants TO reminderd_app, reminderd_readonly;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.scheduled_messages TO reminderd_app;
GRANT SELECT ON reminderd.deliveries, reminderd.tenant_members, reminderd.my_tenants TO reminderd_app;
GRANT SELECT, INSERT ON reminderd.events TO reminderd_app;

GRANT SELECT ON reminderd.scheduled_messages, reminderd.deliveries, reminderd.events,
                reminderd.tenant_members, reminderd.alembic_version TO reminderd_readonly;

GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.scheduled_messages, reminderd.deliveries,
                reminderd.events TO reminderd_daemon;
GRANT SELECT, INSERT, UPDATE ON reminderd.tenants TO reminderd_daemon;
GRANT SELECT, INSERT, DELETE ON reminderd.tenant_members TO reminderd_daemon;
GRANT SELECT ON reminderd.alembic_version, reminderd.my_tenants TO reminderd_daemon;

-- Settings a DBA can change with SQL ---------------------------------------------------------------
CREATE TABLE reminderd.config (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO reminderd.config VALUES ('horizon', '90 days');
GRANT SELECT ON reminderd.config TO reminderd_app, reminderd_readonly, reminderd_daemon;

-- The SQL API ------------------------------------------------------------------------------------
-- Errors use these SQLSTATEs (documented in docs/sql.md):
--   23503 foreign_key_violation   unknown tenant (cancel and cancel_matching return 0 instead)
--   22023 invalid_parameter_value empty ref, bad timezone, bad interval, both/neither of fire_at and fire_in
--   22004 null_value_not_allowed  a required argument is NULL
--   22008 datetime_field_overflow fire_at beyond the horizon
--   54000 program_limit_exceeded  payload over 256 KiB
--   P0002 no_data_found           no such message (requeue of an unknown id)

CREATE FUNCTION reminderd.check_tenant(tenant_id text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tenant_id IS NULL OR NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = check_tenant.tenant_id) THEN
        RAISE EXCEPTION 'unknown tenant "%"', tenant_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Create it first (reminderd tenant add), and check this role acts for it.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION reminderd.cancel_live(tenant_id text, ref_id text, reason text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cancelled integer;
BEGIN
    -- No tenant check: cancelling is safe to repeat, and a tenant this role cannot see (or that
    -- does not exist) simply has nothing live to cancel: 0.
    IF coalesce(cancel_live.ref_id, '') = '' THEN
        RAISE EXCEPTION 'ref_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(cancel_live.tenant_id || chr(31) || cancel_live.ref_id, 0));
    UPDATE reminderd.scheduled_messages
    SET status = 'cancelled', last_error = cancel_live.reason, lease_expires_at = NULL, updated_at = now(),
        last_event = CASE WHEN cancel_live.reason LIKE 'replaced%' THEN 'replaced' ELSE 'cancelled' END
    WHERE tenant_id = cancel_live.tenant_id AND ref_id = cancel_live.ref_id
      AND status IN ('pending', 'picked', 'paused');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

CREATE FUNCTION reminderd.check_fire_at(fire_at timestamptz) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    horizon interval := (SELECT value::interval FROM reminderd.config WHERE key = 'horizon');
BEGIN
    IF fire_at > now() + horizon THEN
        RAISE EXCEPTION 'fire_at % is further ahead than the horizon of %', fire_at, horizon
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'A DBA can change it: UPDATE reminderd.config SET value = ''180 days'' WHERE key = ''horizon''';
    END IF;
END
$$;

DROP FUNCTION reminderd.schedule(text, text, timestamptz, jsonb, text);
CREATE FUNCTION reminderd.schedule(
    tenant_id text, ref_id text, fire_at timestamptz DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    fire_in interval DEFAULT NULL, max_attempts integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due      timestamptz;
    existing bigint;
    new_id   bigint;
BEGIN
    IF (schedule.fire_at IS NULL) = (schedule.fire_in IS NULL) THEN
        RAISE EXCEPTION 'give exactly one of fire_at (an instant) and fire_in (a delay)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schedule.fire_in < interval '0' THEN
        RAISE EXCEPTION 'fire_in must not be negative (got %)', schedule.fire_in
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM reminderd.check_tenant(schedule.tenant_id);
    due := coalesce(schedule.fire_at, now() + schedule.fire_in);
    PERFORM reminderd.check_fire_at(due);
    -- A retried call (the same request again: same instant or delay, payload, URL and attempts)
    -- returns the message the first call created, even if it is in flight or already sent, so a
    -- client that timed out and retries never causes a second send. Anything else replaces.
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule.tenant_id || chr(31) || schedule.ref_id, 0));
    SELECT m.id INTO existing
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule.tenant_id AND m.ref_id = schedule.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'sent')
      AND m.cron IS NULL
      AND m.payload = coalesce(schedule.payload, '{}')
      AND m.callback_url IS NOT DISTINCT FROM schedule.callback_url
      AND m.max_attempts IS NOT DISTINCT FROM schedule.max_attempts
      AND CASE WHEN schedule.fire_at IS NOT NULL
               THEN coalesce(m.scheduled_for, m.fire_at) = schedule.fire_at
               ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                        - extract(epoch FROM schedule.fire_in)) < 1 END
    ORDER BY m.id DESC
    LIMIT 1;
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    PERFORM reminderd.cancel_live(schedule.tenant_id, schedule.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts)
    VALUES (schedule.tenant_id, schedule.ref_id, due, coalesce(schedule.payload, '{}'),
            schedule.callback_url, schedule.max_attempts)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Cancel every live message whose ref matches a LIKE pattern ('booking_b7d2:%'). Idempotent.
CREATE FUNCTION reminderd.cancel_matching(tenant_id text, ref_pattern text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cancelled integer;
BEGIN
    IF coalesce(cancel_matching.ref_pattern, '') = '' THEN
        RAISE EXCEPTION 'ref_pattern must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE reminderd.scheduled_messages
    SET status = 'cancelled', last_error = 'cancelled by pattern ' || cancel_matching.ref_pattern,
        last_event = 'cancelled', lease_expires_at = NULL, updated_at = now()
    WHERE tenant_id = cancel_matching.tenant_id AND ref_id LIKE cancel_matching.ref_pattern
      AND status IN ('pending', 'picked', 'paused');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

CREATE FUNCTION reminderd.pause(tenant_id text, ref_id text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    paused integer;
BEGIN
    PERFORM reminderd.check_tenant(pause.tenant_id);
    UPDATE reminderd.scheduled_messages
    SET status = 'paused', paused_by = 'message', last_event = 'paused', last_error = NULL, updated_at = now()
    WHERE tenant_id = pause.tenant_id AND ref_id = pause.ref_id AND status = 'pending';
    GET DIAGNOSTICS paused = ROW_COUNT;
    RETURN paused;
END
$$;

-- Resumed rows do not fire a backlog: a recurring row is re-planned from now (the daemon picks its
-- next occurrence after now); a one-off keeps its fire_at, so one missed by more than the lookback
-- expires instead of firing late.
CREATE FUNCTION reminderd.resume_rows(tenant_id text, ref_id text, scope text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    resumed integer;
BEGIN
    UPDATE reminderd.scheduled_messages
    SET status = 'pending', paused_by = NULL, last_event = 'resumed', updated_at = now(),
        fire_at = CASE WHEN cron IS NOT NULL THEN NULL ELSE fire_at END,
        scheduled_for = CASE WHEN cron IS NOT NULL THEN NULL ELSE scheduled_for END,
        attempts = CASE WHEN cron IS NOT NULL THEN 0 ELSE attempts END
    WHERE tenant_id = resume_rows.tenant_id
      AND (resume_rows.ref_id IS NULL OR ref_id = resume_rows.ref_id)
      AND status = 'paused' AND paused_by = resume_rows.scope;
    GET DIAGNOSTICS resumed = ROW_COUNT;
    RETURN resumed;
END
$$;

CREATE FUNCTION reminderd.resume(tenant_id text, ref_id text) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM reminderd.check_tenant(tenant_id);
    RETURN reminderd.resume_rows(tenant_id, ref_id, 'message');
END
$$;

CREATE FUNCTION reminderd.pause_tenant(tenant_id text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    paused integer;
BEGIN
    PERFORM reminderd.check_tenant(pause_tenant.tenant_id);
    UPDATE reminderd.tenants SET paused = true WHERE id = pause_tenant.tenant_id;
    UPDATE reminderd.scheduled_messages
    SET status = 'paused', paused_by = 'tenant', last_event = 'paused', last_error = 'tenant paused',
        updated_at = now()
    WHERE tenant_id = pause_tenant.tenant_id AND status = 'pending';
    GET DIAGNOSTICS paused = ROW_COUNT;
    RETURN paused;
END
$$;

CREATE FUNCTION reminderd.resume_tenant(tenant_id text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM reminderd.check_tenant(resume_tenant.tenant_id);
    UPDATE reminderd.tenants SET paused = false WHERE id = resume_tenant.tenant_id;
    RETURN reminderd.resume_rows(resume_tenant.tenant_id, NULL, 'tenant');
END
$$;

CREATE FUNCTION reminderd.reschedule(tenant_id text, ref_id text, fire_at timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    moved integer;
BEGIN
    PERFORM reminderd.check_tenant(reschedule.tenant_id);
    IF reschedule.fire_at IS NULL THEN
        RAISE EXCEPTION 'fire_at must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_fire_at(reschedule.fire_at);
    UPDATE reminderd.scheduled_messages
    SET fire_at = reschedule.fire_at, scheduled_for = NULL, attempts = 0, last_event = 'rescheduled',
        last_error = NULL, updated_at = now()
    WHERE tenant_id = reschedule.tenant_id AND ref_id = reschedule.ref_id
      AND status IN ('pending', 'paused');
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

-- A dead row goes back to pending, due now, attempts reset (same occurrence: same webhook-id).
CREATE FUNCTION reminderd.requeue(message_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reminderd.scheduled_messages m WHERE m.id = requeue.message_id) THEN
        RAISE EXCEPTION 'no message with id %', requeue.message_id USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', attempts = 0, scheduled_for = coalesce(m.scheduled_for, m.fire_at),
        fire_at = now(), last_event = 'requeued', last_error = 'requeued from: ' || coalesce(m.last_error, ''),
        updated_at = now()
    WHERE m.id = requeue.message_id AND m.status = 'dead'
      AND NOT EXISTS (SELECT 1 FROM reminderd.scheduled_messages live
                      WHERE live.tenant_id = m.tenant_id AND live.ref_id = m.ref_id
                        AND live.status IN ('pending', 'picked', 'paused'));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;

CREATE FUNCTION reminderd.requeue_dead(tenant_id text, since timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    requeued integer := 0;
    message  record;
BEGIN
    PERFORM reminderd.check_tenant(requeue_dead.tenant_id);
    FOR message IN
        SELECT id FROM reminderd.scheduled_messages
        WHERE tenant_id = requeue_dead.tenant_id AND status = 'dead' AND updated_at >= requeue_dead.since
        ORDER BY id
    LOOP
        requeued := requeued + reminderd.requeue(message.id);
    END LOOP;
    RETURN requeued;
END
$$;

-- Secret rotation: a new secret now, the old one still signs for `grace`.
CREATE FUNCTION reminderd.rotate_secret(tenant_id text, grace interval DEFAULT '24 hours') RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fresh text := reminderd.generate_secret();
BEGIN
    PERFORM reminderd.check_tenant(rotate_secret.tenant_id);
    UPDATE reminderd.tenants
    SET previous_signing_secret = signing_secret,
        previous_secret_expires_at = now() + rotate_secret.grace,
        signing_secret = fresh
    WHERE id = rotate_secret.tenant_id;
    RETURN fresh;
END
$$;

GRANT EXECUTE ON FUNCTION
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer),
    reminderd.schedule_cron(text, text, text, text, jsonb, text),
    reminderd.cancel(text, text),
    reminderd.cancel_live(text, text, text),
    reminderd.cancel_matching(text, text),
    reminderd.pause(text, text),
    reminderd.resume(text, text),
    reminderd.resume_rows(text, text, text),
    reminderd.reschedule(text, text, timestamptz),
    reminderd.requeue(bigint),
    reminderd.requeue_dead(text, timestamptz),
    reminderd.check_tenant(text),
    reminderd.check_fire_at(timestamptz),
    reminderd.is_timezone(text),
    reminderd.validate_message(),
    reminderd.notify_due_soon(),
    reminderd.check_payload(),
    reminderd.hold_for_paused_tenant(),
    reminderd.audit_insert(),
    reminderd.audit_update()
TO reminderd_app, reminderd_daemon;
GRANT EXECUTE ON FUNCTION reminderd.pause_tenant(text), reminderd.resume_tenant(text),
    reminderd.rotate_secret(text, interval), reminderd.generate_secret()
TO reminderd_daemon;

-- Views for DBAs -----------------------------------------------------------------------------------
-- Live messages and dead letters per tenant and status (finished history is not counted here:
-- SELECT status, count(*) … GROUP BY 1 does that, at the price of reading the whole table).
CREATE VIEW reminderd.queue_overview AS
SELECT tenant_id, status, count(*) AS messages,
       min(fire_at) FILTER (WHERE fire_at <= now()) AS oldest_due,
       min(fire_at) FILTER (WHERE fire_at > now()) AS next_due
FROM reminderd.scheduled_messages
WHERE status IN ('pending', 'picked', 'paused', 'dead')
GROUP BY tenant_id, status;

CREATE VIEW reminderd.due_now AS
SELECT id, tenant_id, ref_id, fire_at, now() - fire_at AS late_by, attempts, last_error
FROM reminderd.scheduled_messages
WHERE status = 'pending' AND fire_at <= now();

CREATE VIEW reminderd.stuck AS
SELECT id, tenant_id, ref_id, picked_at, lease_expires_at, now() - lease_expires_at AS overdue_by, attempts
FROM reminderd.scheduled_messages
WHERE status = 'picked' AND lease_expires_at < now();

CREATE VIEW reminderd.dead_letters AS
SELECT id, tenant_id, ref_id, coalesce(scheduled_for, fire_at) AS scheduled_for, attempts, last_error,
       updated_at AS dead_since
FROM reminderd.scheduled_messages
WHERE status = 'dead';

CREATE VIEW reminderd.upcoming_by_hour AS
SELECT tenant_id, date_trunc('hour', fire_at) AS hour, count(*) AS messages
FROM reminderd.scheduled_messages
WHERE status = 'pending' AND fire_at >= date_trunc('hour', now()) AND fire_at < now() + interval '48 hours'
GROUP BY tenant_id, date_trunc('hour', fire_at);

CREATE VIEW reminderd.recent_deliveries AS
SELECT d.id, d.created_at, d.message_id, d.tenant_id, m.ref_id, d.webhook_id, d.attempt, d.scheduled_for,
       d.status_code, d.error, d.duration_ms,
       CASE WHEN d.status_code BETWEEN 200 AND 299 THEN 'delivered' ELSE 'failed' END AS outcome
FROM (SELECT * FROM reminderd.deliveries ORDER BY id DESC LIMIT 1000) d
LEFT JOIN reminderd.scheduled_messages m ON m.id = d.message_id
ORDER BY d.id DESC;

-- The views run with their owner's rights; narrow them to what each role may see.
ALTER VIEW reminderd.queue_overview SET (security_invoker = true);
ALTER VIEW reminderd.due_now SET (security_invoker = true);
ALTER VIEW reminderd.stuck SET (security_invoker = true);
ALTER VIEW reminderd.dead_letters SET (security_invoker = true);
ALTER VIEW reminderd.upcoming_by_hour SET (security_invoker = true);
ALTER VIEW reminderd.recent_deliveries SET (security_invoker = true);
GRANT SELECT ON reminderd.queue_overview, reminderd.due_now, reminderd.stuck, reminderd.dead_letters,
    reminderd.upcoming_by_hour, reminderd.recent_deliveries TO reminderd_readonly, reminderd_app, reminderd_daemon;

-- Indexes for the views and for pruning history in small batches.
CREATE INDEX scheduled_messages_finished ON reminderd.scheduled_messages (updated_at)
    WHERE status IN ('sent', 'cancelled', 'expired', 'dead');
-- queue_overview reads this instead of the table: counts per tenant and status without history.
CREATE INDEX scheduled_messages_overview ON reminderd.scheduled_messages (tenant_id, status, fire_at)
    WHERE status IN ('pending', 'picked', 'paused', 'dead');
CREATE INDEX deliveries_created ON reminderd.deliveries (created_at);
CREATE INDEX scheduled_messages_dead ON reminderd.scheduled_messages (updated_at) WHERE status = 'dead';
-- schedule() finds a sent message again when a client retries the call that created it.
CREATE INDEX scheduled_messages_sent_ref ON reminderd.scheduled_messages (tenant_id, ref_id)
    WHERE status = 'sent';

-- Retention: finished rows and old history, pruned in small batches by the daemon (or by hand:
-- SELECT * FROM reminderd.prune('7 days', '30 days', '30 days')). One pruner at a time: the
-- others skip while the advisory lock is held. Call again while it returns a full batch.
CREATE FUNCTION reminderd.prune(
    keep_finished interval, keep_dead interval, keep_history interval, batch integer DEFAULT 1000
) RETURNS TABLE (messages integer, deliveries integer, events integer)
LANGUAGE plpgsql AS $$
BEGIN
    messages := 0; deliveries := 0; events := 0;
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.prune')) THEN
        RETURN NEXT;  -- another daemon is pruning
        RETURN;
    END IF;
    DELETE FROM reminderd.scheduled_messages m
    WHERE m.id IN (
        SELECT id FROM reminderd.scheduled_messages
        WHERE (status IN ('sent', 'cancelled', 'expired') AND updated_at < now() - keep_finished)
           OR (status = 'dead' AND updated_at < now() - keep_dead)
        LIMIT batch
    );
    GET DIAGNOSTICS messages = ROW_COUNT;
    DELETE FROM reminderd.deliveries d
    WHERE d.id IN (SELECT id FROM reminderd.deliveries WHERE created_at < now() - keep_history
                   ORDER BY created_at LIMIT batch);
    GET DIAGNOSTICS deliveries = ROW_COUNT;
    DELETE FROM reminderd.events e
    WHERE e.id IN (SELECT id FROM reminderd.events WHERE created_at < now() - keep_history
                   ORDER BY created_at LIMIT batch);
    GET DIAGNOSTICS events = ROW_COUNT;
    RETURN NEXT;
END
$$;
GRANT EXECUTE ON FUNCTION reminderd.prune(interval, interval, interval, integer) TO reminderd_daemon;

-- Tuning the hot table ----------------------------------------------------------------------------
-- Every message is updated several times (claim, outcome, retries). Those updates change status,
-- which every partial index's predicate reads, so they are not HOT: each leaves a dead tuple and
-- new index entries. fillfactor 80 keeps room on each page so the new version usually lands on
-- the same page (less scattering, cheaper vacuum). Autovacuum runs at 2 % dead rows instead of
-- 20 %, so a big queue does not carry millions of dead tuples between vacuums, and analyzes often
-- because fire_at moves constantly.
ALTER TABLE reminderd.scheduled_messages SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
-- deliveries and events are append-only: vacuum for visibility (index-only scans), not space.
ALTER TABLE reminderd.deliveries SET (autovacuum_vacuum_insert_scale_factor = 0.05);
ALTER TABLE reminderd.events SET (autovacuum_vacuum_insert_scale_factor = 0.05);

-- Functions created above got PUBLIC's default EXECUTE: only the grants made here remain.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reminderd FROM PUBLIC;
