-- 0006 the HTTP API (`reminderd serve`): API keys, idempotency keys, a per-tenant rate limit, send
-- now, the batch and by-id functions the API calls, the indexes its listing and schedule()'s
-- identical-call lookup read, and the reminderd_api role it connects as.
-- Run by migrations/versions/0006_api.py in one transaction. History: once released, never edited;
-- a schema change is a new migration (and an edit of reminderd/sql/schema.sql).
--
-- On a large scheduled_messages table the two CREATE INDEX below block writes while they build
-- (about a second per million rows here); run it in a quiet moment.

-- Tenants: how many API requests per second each of the tenant's keys may make.
ALTER TABLE reminderd.tenants
    ADD COLUMN api_rate_limit integer CONSTRAINT api_rate_limit_positive CHECK (api_rate_limit > 0);
COMMENT ON COLUMN reminderd.tenants.api_rate_limit IS
    'Requests per second each API key of the tenant may make (per reminderd serve process); '
    'NULL takes REMINDERD_API_RATE_LIMIT.';

-- Messages: an extra occurrence of a recurring row, sent now (send_now), is a one-off row of the
-- same ref that names its schedule here. No foreign key: pruning a finished schedule must not
-- scan for its extras, and the extra's own history stands on its own.
ALTER TABLE reminderd.scheduled_messages ADD COLUMN extra_of bigint;
COMMENT ON COLUMN reminderd.scheduled_messages.extra_of IS
    'Set on an extra occurrence sent now (reminderd.send_now): the id of the recurring row it is an '
    'extra occurrence of. Such a row does not count as the ref''s live row.';

-- At most one live row per reference, not counting an extra occurrence; at most one live extra
-- occurrence per schedule.
DROP INDEX reminderd.scheduled_messages_live_ref;
CREATE UNIQUE INDEX scheduled_messages_live_ref ON reminderd.scheduled_messages (tenant_id, ref_id)
    WHERE status IN ('pending', 'picked', 'paused') AND extra_of IS NULL;
CREATE UNIQUE INDEX scheduled_messages_live_extra ON reminderd.scheduled_messages (extra_of)
    WHERE status IN ('pending', 'picked', 'paused') AND extra_of IS NOT NULL;
-- A tenant's messages by ref (equality, and prefixes through the ~>=~ ~<~ operators, whatever the
-- database's collation), newest first within a ref. schedule() finds the message an identical
-- call created through it (its status list matches neither partial index above).
CREATE INDEX scheduled_messages_tenant_ref
    ON reminderd.scheduled_messages (tenant_id, ref_id text_pattern_ops, id);
-- A tenant's messages in one status, newest first: GET /v1/messages pages through it.
CREATE INDEX scheduled_messages_tenant_status ON reminderd.scheduled_messages (tenant_id, status, id);

-- API keys: rk_<12 visible characters>_<43 secret characters>, stored as the SHA-256 of the whole
-- key; the prefix finds the row, the hash is compared in constant time by the server. A key with
-- no tenant is an operator's (all tenants: the dashboard). Only reminderd_api reads this table.
CREATE TABLE reminderd.api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text NOT NULL CONSTRAINT api_key_prefix_format CHECK (prefix ~ '^rk_[a-z2-7]{12}$'),
    key_hash     bytea NOT NULL CONSTRAINT api_key_hash_is_sha256 CHECK (octet_length(key_hash) = 32),
    tenant_id    text REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CONSTRAINT api_key_name_format CHECK (name ~ '^\S(.{0,98}\S)?$'),
    -- read: GET routes; write: everything else.
    scopes       text[] NOT NULL CONSTRAINT api_key_scopes_known CHECK (
                     scopes <@ ARRAY['read', 'write'] AND 'read' = ANY (scopes)),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,            -- written in batches by the server (a few seconds late)
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX api_keys_prefix ON reminderd.api_keys (prefix);
CREATE INDEX api_keys_tenant ON reminderd.api_keys (tenant_id);
COMMENT ON TABLE reminderd.api_keys IS
    'API keys of reminderd serve: a SHA-256 of each key, never the key. tenant_id NULL: an operator key.';

-- Idempotency-Key: the first successful answer to a write, kept 24 hours and replayed byte for
-- byte to a retry with the same key and the same request. Written in the transaction of the write.
CREATE TABLE reminderd.idempotency_keys (
    tenant_id     text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    key           text NOT NULL CONSTRAINT idempotency_key_format CHECK (key ~ '^[\x21-\x7e]{1,255}$'),
    request_hash  bytea NOT NULL,        -- SHA-256 of the method, the path and the body
    status_code   integer NOT NULL,
    content_type  text NOT NULL,
    response_body bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON reminderd.idempotency_keys (created_at);

-- What POST /v1/messages and /v1/messages/batch pass: one item to schedule, as reminderd.schedule()
-- or reminderd.schedule_recurring() take it. Versioned like the daemon's batch types.
CREATE TYPE reminderd.schedule_item_v1 AS (
    ref_id       text,
    fire_at      timestamptz,
    fire_in      interval,
    local_time   timestamp,
    cron         text,
    rrule        text,
    timezone     text,
    payload      jsonb,
    callback_url text,
    category     text,
    max_attempts integer,
    calendar     text,
    holiday_rule text,
    backfill     text,
    max_lateness interval,
    until        timestamptz,
    max_runs     integer,
    -- a recurring item's first occurrence, computed by the caller (the API, with the daemon's
    -- code: the tenant's holidays skipped); NULL: reminderd.first_occurrence(), else the planner
    first_fire_at timestamptz
);
COMMENT ON TYPE reminderd.schedule_item_v1 IS 'One message to schedule in a batch (reminderd.schedule_many).';

-- One item: through reminderd.schedule() or reminderd.schedule_recurring(), so with the same rules,
-- the same replacement and the same identical-call answer as a call of its own. result: created,
-- replaced (the ref's live message was cancelled for it) or unchanged (an identical call: the
-- message it created).
CREATE FUNCTION reminderd.schedule_item(tenant_id text, one reminderd.schedule_item_v1,
    OUT message_id bigint, OUT result text, OUT status text, OUT fire_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    live bigint;
BEGIN
    IF coalesce(one.ref_id, '') = '' THEN
        RAISE EXCEPTION 'ref_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The lock schedule() takes too: the live row read here is the one it would replace.
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule_item.tenant_id || chr(31) || one.ref_id, 0));
    SELECT m.id INTO live FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule_item.tenant_id AND m.ref_id = one.ref_id
      AND m.status IN ('pending', 'picked', 'paused') AND m.extra_of IS NULL;
    IF one.cron IS NULL AND one.rrule IS NULL THEN
        message_id := reminderd.schedule(
            schedule_item.tenant_id, one.ref_id, one.fire_at, coalesce(one.payload, '{}'), one.callback_url,
            one.fire_in, one.max_attempts, one.local_time, coalesce(one.timezone, 'UTC'),
            coalesce(one.category, 'transactional'), one.calendar, one.holiday_rule, one.backfill, one.max_lateness);
    ELSE
        message_id := reminderd.schedule_recurring(
            schedule_item.tenant_id, one.ref_id, one.cron, one.rrule, coalesce(one.timezone, 'UTC'),
            coalesce(one.payload, '{}'), one.callback_url, one.until, one.max_runs,
            coalesce(one.category, 'transactional'), one.calendar, one.holiday_rule, one.backfill,
            one.max_lateness, one.max_attempts, one.first_fire_at);
    END IF;
    SELECT m.status, m.fire_at INTO status, fire_at FROM reminderd.scheduled_messages m WHERE m.id = message_id;
    -- A new row is pending (or paused, for a paused tenant); a sent one was there before.
    result := CASE WHEN message_id = live OR (live IS NULL AND status = 'sent') THEN 'unchanged'
                   WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END;
END
$$;

-- Several messages in one call, each by schedule_item. atomic: the first error undoes the whole
-- batch and is the only item reported (one subtransaction for the batch). Otherwise each item
-- stands alone (a subtransaction each) and a failed one is reported with its SQLSTATE, message,
-- detail, hint and constraint (what reminderd.refusals turns into a sentence). Rows come out in the
-- order of the items.
CREATE FUNCTION reminderd.schedule_many(
    tenant_id text, items reminderd.schedule_item_v1[], atomic boolean DEFAULT true
) RETURNS TABLE (item integer, message_id bigint, result text, status text, fire_at timestamptz,
                 error_sqlstate text, error_message text, error_hint text, error_detail text,
                 error_constraint text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    one       reminderd.schedule_item_v1;
    position  integer := 0;
    done      record;
    ids       bigint[] := '{}';
    results   text[] := '{}';
    statuses  text[] := '{}';
    fire_ats  timestamptz[] := '{}';
    states    text[] := '{}';
    messages  text[] := '{}';
    hints     text[] := '{}';
    details   text[] := '{}';
    names     text[] := '{}';
    e_state   text;
    e_message text;
    e_hint    text;
    e_detail  text;
    e_name    text;
BEGIN
    PERFORM reminderd.check_tenant(schedule_many.tenant_id);
    IF schedule_many.atomic THEN
        BEGIN
            FOREACH one IN ARRAY coalesce(schedule_many.items, '{}') LOOP
                position := position + 1;
                done := reminderd.schedule_item(schedule_many.tenant_id, one);
                ids := ids || done.message_id;
                results := results || done.result;
                statuses := statuses || done.status;
                fire_ats := fire_ats || done.fire_at;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                                    e_hint = PG_EXCEPTION_HINT, e_detail = PG_EXCEPTION_DETAIL,
                                    e_name = CONSTRAINT_NAME;
            RETURN QUERY SELECT position, NULL::bigint, 'error'::text, NULL::text, NULL::timestamptz,
                                e_state, e_message, nullif(e_hint, ''), nullif(e_detail, ''), nullif(e_name, '');
            RETURN;
        END;
        RETURN QUERY SELECT n::integer, u.id, u.result, u.status, u.fire_at, NULL::text, NULL::text, NULL::text,
                            NULL::text, NULL::text
                     FROM unnest(ids, results, statuses, fire_ats) WITH ORDINALITY AS u(id, result, status, fire_at, n);
        RETURN;
    END IF;
    FOREACH one IN ARRAY coalesce(schedule_many.items, '{}') LOOP
        position := position + 1;
        BEGIN
            done := reminderd.schedule_item(schedule_many.tenant_id, one);
            ids := ids || done.message_id;
            results := results || done.result;
            statuses := statuses || done.status;
            fire_ats := fire_ats || done.fire_at;
            states := states || NULL::text;
            messages := messages || NULL::text;
            hints := hints || NULL::text;
            details := details || NULL::text;
            names := names || NULL::text;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                                    e_hint = PG_EXCEPTION_HINT, e_detail = PG_EXCEPTION_DETAIL,
                                    e_name = CONSTRAINT_NAME;
            ids := ids || NULL::bigint;
            results := results || 'error'::text;
            statuses := statuses || NULL::text;
            fire_ats := fire_ats || NULL::timestamptz;
            states := states || e_state;
            messages := messages || e_message;
            hints := hints || nullif(e_hint, '');
            details := details || nullif(e_detail, '');
            names := names || nullif(e_name, '');
        END;
    END LOOP;
    RETURN QUERY SELECT n::integer, u.id, u.result, u.status, u.fire_at, u.state, u.message, u.hint, u.detail,
                        u.name
                 FROM unnest(ids, results, statuses, fire_ats, states, messages, hints, details, names)
                      WITH ORDINALITY AS u(id, result, status, fire_at, state, message, hint, detail, name, n);
END
$$;

-- Send now: a pending or paused one-off is due now (one already picked is on its way); a recurring
-- row gets one extra occurrence now, a one-off row of the same ref (its own id, so its own
-- webhook-id) whose extra_of names the schedule, which is left as it was. The daemon's checks
-- before any send still apply to it: quiet hours (unless the category is exempt), holidays, a
-- paused tenant. Returns the id of the message that goes out; NULL when the ref has no live
-- message. Called again while the extra occurrence is still waiting, it returns that one.
CREATE FUNCTION reminderd.send_now(tenant_id text, ref_id text) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    message reminderd.scheduled_messages;
    extra   bigint;
BEGIN
    PERFORM reminderd.check_tenant(send_now.tenant_id);
    IF coalesce(send_now.ref_id, '') = '' THEN
        RAISE EXCEPTION 'ref_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(send_now.tenant_id || chr(31) || send_now.ref_id, 0));
    SELECT * INTO message FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = send_now.tenant_id AND m.ref_id = send_now.ref_id
      AND m.status IN ('pending', 'picked', 'paused') AND m.extra_of IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF message.cron IS NULL AND message.rrule IS NULL THEN
        -- A retry keeps its occurrence (scheduled_for), so its webhook-id too.
        UPDATE reminderd.scheduled_messages m
        SET status = 'pending', paused_by = NULL, fire_at = now(), last_event = 'sent_now', last_error = NULL,
            updated_at = now()
        WHERE m.id = message.id AND m.status IN ('pending', 'paused');
        RETURN message.id;
    END IF;
    SELECT m.id INTO extra FROM reminderd.scheduled_messages m
    WHERE m.extra_of = message.id AND m.status IN ('pending', 'picked', 'paused');
    IF FOUND THEN
        RETURN extra;
    END IF;
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
         holiday_rule, backfill, max_lateness, extra_of, last_event)
    VALUES (message.tenant_id, message.ref_id, now(), message.payload, message.callback_url, message.max_attempts,
            message.timezone, message.category, message.calendar, message.holiday_rule, message.backfill,
            message.max_lateness, message.id, 'sent_now')
    RETURNING id INTO extra;
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    VALUES (message.id, message.tenant_id, message.ref_id, 'sent_now', message.status, message.fire_at,
            format('extra occurrence now: message %s; the schedule is unchanged', extra), current_user);
    RETURN extra;
END
$$;

-- Cancel one message by id (its ref's live row, or an extra occurrence); 0 when it is not live or
-- not this tenant's. Serialised with schedule() on the ref, like cancel().
CREATE FUNCTION reminderd.cancel_message(tenant_id text, message_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ref       text;
    cancelled integer;
BEGIN
    SELECT m.ref_id INTO ref FROM reminderd.scheduled_messages m
    WHERE m.id = cancel_message.message_id AND m.tenant_id = cancel_message.tenant_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(cancel_message.tenant_id || chr(31) || ref, 0));
    UPDATE reminderd.scheduled_messages
    SET status = 'cancelled', last_error = 'cancelled', last_event = 'cancelled', lease_expires_at = NULL,
        updated_at = now()
    WHERE id = cancel_message.message_id AND tenant_id = cancel_message.tenant_id
      AND status IN ('pending', 'picked', 'paused');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

-- A new payload for the ref's pending or paused message (not one in flight): the next send carries it.
CREATE FUNCTION reminderd.set_payload(tenant_id text, ref_id text, payload jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    changed integer;
BEGIN
    PERFORM reminderd.check_tenant(set_payload.tenant_id);
    IF set_payload.payload IS NULL THEN
        RAISE EXCEPTION 'payload must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE reminderd.scheduled_messages
    SET payload = set_payload.payload, last_event = 'edited', last_error = NULL, updated_at = now()
    WHERE tenant_id = set_payload.tenant_id AND ref_id = set_payload.ref_id AND extra_of IS NULL
      AND status IN ('pending', 'paused');
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END
$$;

-- Rotation for the API role, which may not read any signing secret: it gets the new one once, and
-- until when the old one still signs (read after the rotation, in a statement of its own: a
-- subquery beside the call would see the row as it was before it).
CREATE FUNCTION reminderd.api_rotate_secret(tenant_id text, grace interval,
    OUT secret text, OUT previous_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    secret := reminderd.rotate_secret(api_rotate_secret.tenant_id, api_rotate_secret.grace);
    SELECT t.previous_secret_expires_at INTO previous_until
    FROM reminderd.tenants t WHERE t.id = api_rotate_secret.tenant_id;
END
$$;

-- The role `reminderd serve` connects as (through a login role granted it): every tenant's
-- messages, since each request acts for the tenant of its API key; no signing secret, no role
-- mapping, no pruning, no DELETE of messages.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reminderd_api') THEN
        CREATE ROLE reminderd_api NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA reminderd TO reminderd_api;

CREATE POLICY api_all ON reminderd.tenants TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.tenant_holidays FOR SELECT TO reminderd_api USING (true);
CREATE POLICY api_all ON reminderd.scheduled_messages TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.deliveries FOR SELECT TO reminderd_api USING (true);
CREATE POLICY api_all ON reminderd.events TO reminderd_api USING (true) WITH CHECK (actor = current_user);

GRANT SELECT (id, callback_url, created_at, paused, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt,
              previous_secret_expires_at, api_rate_limit)
    ON reminderd.tenants TO reminderd_api;
GRANT UPDATE (callback_url, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt, paused)
    ON reminderd.tenants TO reminderd_api;
GRANT SELECT (api_rate_limit) ON reminderd.tenants TO reminderd_app, reminderd_readonly;
GRANT SELECT, INSERT, UPDATE ON reminderd.scheduled_messages TO reminderd_api;
GRANT SELECT ON reminderd.tenant_holidays, reminderd.deliveries, reminderd.config TO reminderd_api;
-- /readyz compares the schema's revision with the code's (Alembic's table: not in schema.sql).
GRANT SELECT ON reminderd.alembic_version TO reminderd_api;
GRANT SELECT, INSERT ON reminderd.events TO reminderd_api;
GRANT SELECT ON reminderd.api_keys TO reminderd_api;
GRANT UPDATE (last_used_at) ON reminderd.api_keys TO reminderd_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.idempotency_keys TO reminderd_api;

REVOKE EXECUTE ON FUNCTION
    reminderd.schedule_item(text, reminderd.schedule_item_v1),
    reminderd.schedule_many(text, reminderd.schedule_item_v1[], boolean),
    reminderd.send_now(text, text),
    reminderd.cancel_message(text, bigint),
    reminderd.set_payload(text, text, jsonb),
    reminderd.api_rotate_secret(text, interval)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.schedule_item(text, reminderd.schedule_item_v1),
    reminderd.schedule_many(text, reminderd.schedule_item_v1[], boolean),
    reminderd.send_now(text, text),
    reminderd.cancel_message(text, bigint),
    reminderd.set_payload(text, text, jsonb)
TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.is_timezone(text),
    reminderd.check_tenant(text),
    reminderd.check_fire_at(timestamptz),
    reminderd.local_instant(timestamp, text),
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz),
    reminderd.duration_text(interval),
    reminderd.check_arrival(text, text, timestamptz, text, interval),
    reminderd.first_occurrence(text, text, text, timestamptz),
    reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                            text, interval, integer),
    reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                             text, interval, integer),
    reminderd.cancel_live(text, text, text),
    reminderd.cancel(text, text),
    reminderd.cancel_matching(text, text),
    reminderd.pause(text, text),
    reminderd.resume_rows(text, text, text),
    reminderd.resume(text, text),
    reminderd.reschedule(text, text, timestamptz),
    reminderd.requeue(bigint),
    reminderd.requeue_dead(text, timestamptz),
    reminderd.pause_tenant(text),
    reminderd.resume_tenant(text),
    reminderd.api_rotate_secret(text, interval),
    reminderd.validate_message(),
    reminderd.refuse_dead_on_arrival(),
    reminderd.validate_tenant(),
    reminderd.validate_holiday(),
    reminderd.check_payload(),
    reminderd.hold_for_paused_tenant(),
    reminderd.notify_due_soon(),
    reminderd.audit_insert(),
    reminderd.audit_update(),
    reminderd.check_timezone(text, text),
    reminderd.first_reading(timestamp),
    reminderd.offset_change(timestamptz, timestamptz),
    reminderd.wall_time(timestamptz, text),
    reminderd.cron_parse(text),
    reminderd.cron_next_wall(timestamp, bigint, bigint, bigint, bigint, bigint, integer, bigint, bigint),
    reminderd.next_cron_occurrence(text, text, timestamptz),
    reminderd.check_cron(text, text)
TO reminderd_api;
