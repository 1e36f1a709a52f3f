-- 0010 fair and bounded sending: a claim fair between tenants and by category priority; tenant
-- and endpoint limits that hold rows back (never drop them); per-contact frequency caps; the
-- health of each tenant's endpoints (circuit breaker, disabling); usage metering per tenant and day.
-- Run by migrations/versions/0010_fair_sending.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Messages ----------------------------------------------------------------------------------------

-- priority: what a tenant's share of a claim takes first. Derived from the category, so it is
-- never out of step with it (adding a stored column rewrites the table once, here).
ALTER TABLE reminderd.scheduled_messages
    ADD COLUMN priority smallint NOT NULL GENERATED ALWAYS AS (
        CASE category WHEN 'transactional' THEN 0 WHEN 'marketing' THEN 2 ELSE 1 END) STORED,
    -- Who the message is for, as the frequency caps count it (a phone number, an e-mail, your
    -- own contact id). NULL: no cap applies.
    ADD COLUMN recipient text CONSTRAINT recipient_format CHECK (recipient <> '' AND length(recipient) <= 256),
    -- The endpoint (host:port) of the claim's callback, set by each claim: in-flight counts read it.
    ADD COLUMN endpoint text;

ALTER TABLE reminderd.scheduled_messages DROP CONSTRAINT paused_by_is_known;
ALTER TABLE reminderd.scheduled_messages ADD CONSTRAINT paused_by_is_known
    CHECK (paused_by IN ('message', 'tenant', 'endpoint'));

-- 0007 grants UPDATE on scheduled_messages column by column (every column but last_delivery_id):
-- the application roles may update the columns added here too (priority is computed: naming it in
-- an UPDATE is refused all the same).
GRANT UPDATE (priority, recipient, endpoint) ON reminderd.scheduled_messages TO reminderd_app, reminderd_api;

COMMENT ON COLUMN reminderd.scheduled_messages.priority IS
    'From the category: 0 transactional, 1 any other, 2 marketing. Within its tenant''s share of a '
    'claim a row of a lower number goes first, then the oldest fire_at.';

-- The fair claim: per tenant, per priority, the oldest due rows first.
CREATE INDEX scheduled_messages_fair ON reminderd.scheduled_messages (tenant_id, priority, fire_at)
    WHERE status = 'pending';
-- Callbacks in flight per endpoint, across all daemons.
CREATE INDEX scheduled_messages_in_flight ON reminderd.scheduled_messages (endpoint) WHERE status = 'picked';

-- Tenants: limits, the frequency-cap policy, the endpoint of their callback_url ---------------------

-- host:port of a callback URL, the port written out (80, 443), the host lower-case; NULL for
-- what is not an http(s) URL.
CREATE FUNCTION reminderd.endpoint_of(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    part text[] := regexp_match(url, '^(https?)://(?:[^/?#@]*@)?(\[[^]/?#]*\]|[^:/?#]+)(?::([0-9]+))?', 'i');
BEGIN
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN lower(part[2]) || ':' || coalesce(part[3], CASE lower(part[1]) WHEN 'http' THEN '80' WHEN 'https' THEN '443' END);
END
$$;


ALTER TABLE reminderd.tenants
    ADD COLUMN max_per_second integer CONSTRAINT max_per_second_positive CHECK (max_per_second > 0),
    ADD COLUMN max_per_hour integer CONSTRAINT max_per_hour_positive CHECK (max_per_hour > 0),
    ADD COLUMN frequency_cap_policy text NOT NULL DEFAULT 'defer'
        CONSTRAINT frequency_cap_policy_is_known CHECK (frequency_cap_policy IN ('defer', 'skip')),
    -- host:port of callback_url, for the claim (computed once, on write).
    ADD COLUMN callback_endpoint text GENERATED ALWAYS AS (reminderd.endpoint_of(callback_url)) STORED;

GRANT SELECT (max_per_second, max_per_hour, frequency_cap_policy, callback_endpoint) ON reminderd.tenants
    TO reminderd_app, reminderd_readonly;

-- Rolling windows of sends ------------------------------------------------------------------------

-- A rolling window of send counts: one count per slot, oldest first, the last one for slot
-- `newest`. Moved on to slot `now_slot`, older slots fall off and new ones start at 0.
CREATE FUNCTION reminderd.window_at(counts integer[], newest bigint, now_slot bigint, slots integer)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF counts IS NULL OR cardinality(counts) <> slots OR now_slot - newest >= slots THEN
        RETURN array_fill(0, ARRAY[slots]);
    ELSIF now_slot <= newest THEN
        RETURN counts;
    END IF;
    RETURN counts[(now_slot - newest + 1)::integer : slots] || array_fill(0, ARRAY[(now_slot - newest)::integer]);
END
$$;

CREATE FUNCTION reminderd.window_sum(counts integer[]) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    total integer := 0;
    count integer;
BEGIN
    FOREACH count IN ARRAY coalesce(counts, '{}') LOOP
        total := total + count;
    END LOOP;
    RETURN total;
END
$$;

-- Seconds until the window's oldest counted send falls off it (slot width `width_s`), or NULL.
CREATE FUNCTION reminderd.window_frees_in(counts integer[], width_s float8, now_s float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(counts), 0) LOOP
        IF counts[i] > 0 THEN
            RETURN i * width_s - (now_s - floor(now_s / width_s) * width_s);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- The slot of an instant in the one-second window (20 ms slots) and the one-hour window (1 min).
-- These helpers are PL/pgSQL: their plans are cached for the session, where a SQL function's
-- would be planned again by each claim.
CREATE FUNCTION reminderd.second_slot(at timestamptz) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN floor(extract(epoch FROM at) * 50)::bigint; END $$;
CREATE FUNCTION reminderd.hour_slot(at timestamptz) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN floor(extract(epoch FROM at) / 60)::bigint; END $$;

-- A tenant's sends in its rolling second (51 slots of 20 ms: never less than a second) and its
-- rolling hour (61 slots of a minute), for tenants with a limit. The claim locks a tenant's row
-- (FOR UPDATE SKIP LOCKED: a daemon never waits for another) and adds the rows it grants.
CREATE TABLE reminderd.tenant_budgets (
    tenant_id     text PRIMARY KEY REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    second_slot   bigint NOT NULL DEFAULT 0,
    second_counts integer[] NOT NULL DEFAULT '{}',
    hour_slot     bigint NOT NULL DEFAULT 0,
    hour_counts   integer[] NOT NULL DEFAULT '{}'
);
INSERT INTO reminderd.tenant_budgets (tenant_id) SELECT id FROM reminderd.tenants;

-- A tenant's budget row, and its callback endpoint's row (so that even its first claims count
-- the callbacks in flight exactly), exist from the start.
CREATE FUNCTION reminderd.add_tenant_budget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reminderd.tenant_budgets (tenant_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    IF reminderd.endpoint_of(NEW.callback_url) IS NOT NULL THEN
        INSERT INTO reminderd.endpoints (endpoint) VALUES (reminderd.endpoint_of(NEW.callback_url))
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_budget AFTER INSERT OR UPDATE OF callback_url ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.add_tenant_budget();

-- Endpoints ---------------------------------------------------------------------------------------


-- A callback endpoint (host:port) shared by every tenant whose callbacks go there: its limits,
-- across all daemons, and the claim's bookkeeping. The claim adds a row for an endpoint it has
-- not seen; an operator sets the limits (reminderd endpoint set).
CREATE TABLE reminderd.endpoints (
    endpoint      text PRIMARY KEY CONSTRAINT endpoint_format CHECK (endpoint ~ '^[^:/?#[:space:]]+:[0-9]{1,5}$'
                                                                     OR endpoint ~ '^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$'),
    -- Claimed callbacks at once (in flight or about to be), all daemons together; NULL: no such
    -- limit (each daemon sends at most its REMINDERD_CONCURRENCY).
    max_in_flight integer CONSTRAINT max_in_flight_positive CHECK (max_in_flight > 0),
    max_per_second integer CONSTRAINT endpoint_max_per_second_positive CHECK (max_per_second > 0),
    -- The claim's bookkeeping: sends in the rolling second, and its latest grants (a claim counts
    -- the in-flight rows it sees plus the grants committed since its snapshot was taken).
    second_slot   bigint NOT NULL DEFAULT 0,
    second_counts integer[] NOT NULL DEFAULT '{}',
    grant_xids    bigint[] NOT NULL DEFAULT '{}',
    grant_counts  integer[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO reminderd.endpoints (endpoint)
SELECT DISTINCT reminderd.endpoint_of(callback_url) FROM reminderd.tenants
WHERE reminderd.endpoint_of(callback_url) IS NOT NULL;

-- The health of a tenant's endpoint, as the daemons saw its answers: the circuit breaker and
-- disabling. A row exists once an attempt failed; a success after failures resets it.
CREATE TABLE reminderd.endpoint_health (
    tenant_id            text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    endpoint             text NOT NULL,
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since        timestamptz,          -- the first failure after the last success
    last_failure_at      timestamptz,
    last_error           text,
    last_success_at      timestamptz,
    -- Open: no callback goes there until circuit_open_until; then one probe at a time (half-open)
    -- until one is delivered (closed: NULL). circuit_opens counts the openings in a row.
    circuit_open_until   timestamptz,
    circuit_opens        integer NOT NULL DEFAULT 0,
    -- Disabled (410 Gone, or failing for REMINDERD_ENDPOINT_DISABLE_AFTER): its rows are paused
    -- until reminderd.enable_endpoint().
    disabled_at          timestamptz,
    disabled_reason      text,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, endpoint)
);

-- A batch of what the daemon saw of endpoints (endpoint_health written back in one round trip).
CREATE TYPE reminderd.endpoint_health_v1 AS (
    tenant_id            text,
    endpoint             text,
    consecutive_failures integer,
    failing_since        timestamptz,
    last_failure_at      timestamptz,
    last_error           text,
    last_success_at      timestamptz,
    circuit_open_until   timestamptz,
    circuit_opens        integer,
    disabled_at          timestamptz,
    disabled_reason      text
);
COMMENT ON TYPE reminderd.endpoint_health_v1 IS 'The health of one tenant endpoint as the daemon writes it back.';

-- New rows, and rows becoming pending again, for a disabled endpoint are held ('paused' by
-- 'endpoint'), as for a paused tenant. The common case (no disabled endpoint) costs one index probe.
CREATE FUNCTION reminderd.hold_for_disabled_endpoint() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    reason text;
BEGIN
    IF NEW.status = 'pending' AND EXISTS (
        SELECT 1 FROM reminderd.endpoint_health h WHERE h.tenant_id = NEW.tenant_id AND h.disabled_at IS NOT NULL
    ) THEN
        SELECT h.disabled_reason INTO reason
        FROM reminderd.endpoint_health h
        WHERE h.tenant_id = NEW.tenant_id AND h.disabled_at IS NOT NULL
          AND h.endpoint = reminderd.endpoint_of(coalesce(
              NEW.callback_url, (SELECT t.callback_url FROM reminderd.tenants t WHERE t.id = NEW.tenant_id)));
        IF FOUND THEN
            NEW.status := 'paused';
            NEW.paused_by := 'endpoint';
            NEW.last_error := 'endpoint disabled: ' || coalesce(reason, 'see reminderd.endpoint_health');
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER scheduled_messages_hold_disabled_endpoint
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.hold_for_disabled_endpoint();
CREATE TRIGGER scheduled_messages_hold_disabled_endpoint_update
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')
    EXECUTE FUNCTION reminderd.hold_for_disabled_endpoint();

-- Disable a tenant's endpoint and pause its rows (the daemon does this on 410 Gone or after
-- REMINDERD_ENDPOINT_DISABLE_AFTER of failures). The rows paused.
CREATE FUNCTION reminderd.disable_endpoint(tenant_id text, endpoint text, reason text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    paused integer;
BEGIN
    PERFORM reminderd.check_tenant(disable_endpoint.tenant_id);
    INSERT INTO reminderd.endpoint_health AS h (tenant_id, endpoint, disabled_at, disabled_reason)
    VALUES (disable_endpoint.tenant_id, disable_endpoint.endpoint, now(), disable_endpoint.reason)
    ON CONFLICT (tenant_id, endpoint) DO UPDATE
        SET disabled_at = coalesce(h.disabled_at, now()), disabled_reason = excluded.disabled_reason, updated_at = now();
    UPDATE reminderd.scheduled_messages m
    SET status = 'paused', paused_by = 'endpoint', last_event = 'endpoint_disabled',
        last_error = 'endpoint disabled: ' || disable_endpoint.reason, updated_at = now()
    FROM reminderd.tenants t
    WHERE m.tenant_id = disable_endpoint.tenant_id AND m.status = 'pending' AND t.id = m.tenant_id
      AND reminderd.endpoint_of(coalesce(m.callback_url, t.callback_url)) = disable_endpoint.endpoint;
    GET DIAGNOSTICS paused = ROW_COUNT;
    RETURN paused;
END
$$;

-- Turn a tenant's endpoint (NULL: all of them) back on and resume the rows it paused. The first
-- callback goes alone (the circuit starts half-open), then the rest as the limits allow. As with
-- resume_tenant, a recurring row is planned again from now and a one-off keeps its fire_at (one
-- missed by more than the lookback expires, too late for its backfill policy). The rows resumed.
CREATE FUNCTION reminderd.enable_endpoint(tenant_id text, endpoint text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    resumed integer;
BEGIN
    PERFORM reminderd.check_tenant(enable_endpoint.tenant_id);
    UPDATE reminderd.endpoint_health h
    SET disabled_at = NULL, disabled_reason = NULL, consecutive_failures = 0, failing_since = NULL,
        circuit_open_until = CASE WHEN h.disabled_at IS NOT NULL THEN now() ELSE h.circuit_open_until END,
        circuit_opens = 0, updated_at = now()
    WHERE h.tenant_id = enable_endpoint.tenant_id
      AND (enable_endpoint.endpoint IS NULL OR h.endpoint = enable_endpoint.endpoint);
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', paused_by = NULL, last_event = 'resumed', last_error = 'endpoint enabled',
        updated_at = now(),
        fire_at = CASE WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL ELSE m.fire_at END,
        scheduled_for = CASE WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL ELSE m.scheduled_for END,
        attempts = CASE WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN 0 ELSE m.attempts END
    FROM reminderd.tenants t
    WHERE m.tenant_id = enable_endpoint.tenant_id AND m.status = 'paused' AND m.paused_by = 'endpoint'
      AND t.id = m.tenant_id
      AND (enable_endpoint.endpoint IS NULL
           OR reminderd.endpoint_of(coalesce(m.callback_url, t.callback_url)) = enable_endpoint.endpoint);
    GET DIAGNOSTICS resumed = ROW_COUNT;
    RETURN resumed;
END
$$;

-- Frequency caps ----------------------------------------------------------------------------------

-- At most max_messages of a category per recipient per rolling `per` (2 marketing a day). Over
-- the cap the tenant's frequency_cap_policy defers the message until the cap allows it, or skips it.
CREATE TABLE reminderd.frequency_caps (
    tenant_id    text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    category     text NOT NULL CONSTRAINT frequency_cap_category_format CHECK (category ~ '^[a-z][a-z0-9_-]{0,31}$'),
    max_messages integer NOT NULL CONSTRAINT max_messages_positive CHECK (max_messages > 0),
    per          interval NOT NULL CONSTRAINT per_in_range CHECK (per > interval '0' AND per <= interval '366 days'),
    PRIMARY KEY (tenant_id, category)
);

-- The sends the caps count: one row per message occurrence (its webhook-id), reserved by the
-- daemon just before the request; pruned once past the cap's window.
CREATE TABLE reminderd.contact_sends (
    webhook_id text PRIMARY KEY,
    tenant_id  text NOT NULL,
    recipient  text NOT NULL,
    category   text NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX contact_sends_recipient ON reminderd.contact_sends (tenant_id, recipient, category, sent_at);
CREATE INDEX contact_sends_expires ON reminderd.contact_sends (expires_at);

-- One message the daemon is about to send to a capped recipient.
CREATE TYPE reminderd.contact_send_v1 AS (
    webhook_id   text,
    tenant_id    text,
    recipient    text,
    category     text,
    max_messages integer,
    per_s        float8
);
COMMENT ON TYPE reminderd.contact_send_v1 IS 'A send to reserve under a frequency cap (reserve_contact_sends).';

-- Reserve sends under the caps, exactly, whatever the number of daemons: one recipient's
-- reservations are serialised by a transaction-level advisory lock, and each count is read after
-- it is taken. A message already reserved (a retry of its occurrence) keeps its reservation.
-- For each request: granted, or the instant the cap allows another send.
CREATE FUNCTION reminderd.reserve_contact_sends(requests reminderd.contact_send_v1[])
RETURNS TABLE (webhook_id text, granted boolean, frees_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r    reminderd.contact_send_v1;
    sent integer;
BEGIN
    FOR r IN SELECT * FROM unnest(requests) ORDER BY tenant_id, recipient, category, webhook_id LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(
            'reminderd.contact_sends' || chr(31) || r.tenant_id || chr(31) || r.recipient || chr(31) || r.category, 0));
        webhook_id := r.webhook_id;
        frees_at := NULL;
        IF EXISTS (SELECT 1 FROM reminderd.contact_sends s WHERE s.webhook_id = r.webhook_id) THEN
            granted := true;
        ELSE
            SELECT count(*) INTO sent FROM reminderd.contact_sends s
            WHERE s.tenant_id = r.tenant_id AND s.recipient = r.recipient AND s.category = r.category
              AND s.sent_at > now() - make_interval(secs => r.per_s);
            granted := sent < r.max_messages;
            IF granted THEN
                INSERT INTO reminderd.contact_sends (webhook_id, tenant_id, recipient, category, expires_at)
                VALUES (r.webhook_id, r.tenant_id, r.recipient, r.category, now() + make_interval(secs => r.per_s));
            ELSE
                -- The cap allows another send once enough of those in the window have aged out.
                SELECT s.sent_at + make_interval(secs => r.per_s) INTO frees_at
                FROM reminderd.contact_sends s
                WHERE s.tenant_id = r.tenant_id AND s.recipient = r.recipient AND s.category = r.category
                  AND s.sent_at > now() - make_interval(secs => r.per_s)
                ORDER BY s.sent_at DESC
                OFFSET r.max_messages - 1 LIMIT 1;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Usage metering ----------------------------------------------------------------------------------

-- Usage per tenant and UTC day. Writers append increments (one row per batch or statement, so
-- nobody waits for anybody); the daemons fold them into usage_days every few seconds. The view
-- reminderd.usage_daily adds both: it is always current. Nothing here is pruned with the deliveries.
CREATE TABLE reminderd.usage_days (
    tenant_id text NOT NULL,
    day       date NOT NULL,
    scheduled bigint NOT NULL DEFAULT 0,
    attempted bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    dead      bigint NOT NULL DEFAULT 0,
    expired   bigint NOT NULL DEFAULT 0,
    held      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE reminderd.usage_increments (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL,
    day       date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
    scheduled integer NOT NULL DEFAULT 0,
    attempted integer NOT NULL DEFAULT 0,
    delivered integer NOT NULL DEFAULT 0,
    dead      integer NOT NULL DEFAULT 0,
    expired   integer NOT NULL DEFAULT 0,
    held      integer NOT NULL DEFAULT 0
);

-- scheduled: new messages, counted once per INSERT statement.
CREATE FUNCTION reminderd.count_scheduled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reminderd.usage_increments (tenant_id, scheduled)
    SELECT n.tenant_id, count(*) FROM changed_rows n GROUP BY n.tenant_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER scheduled_messages_usage_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_scheduled();

CREATE VIEW reminderd.usage_daily WITH (security_invoker = true) AS
SELECT tenant_id, day, sum(scheduled)::bigint AS scheduled, sum(attempted)::bigint AS attempted,
       sum(delivered)::bigint AS delivered, sum(dead)::bigint AS dead, sum(expired)::bigint AS expired,
       sum(held)::bigint AS held
FROM (
    SELECT tenant_id, day, scheduled, attempted, delivered, dead, expired, held FROM reminderd.usage_days
    UNION ALL
    SELECT tenant_id, day, scheduled, attempted, delivered, dead, expired, held FROM reminderd.usage_increments
) AS usage
GROUP BY tenant_id, day;

-- Roles, row-level security and privileges --------------------------------------------------------

ALTER TABLE reminderd.tenant_budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.endpoint_health ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.frequency_caps ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.contact_sends ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.usage_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.usage_increments ENABLE ROW LEVEL SECURITY;
-- endpoints has no row-level security: it holds no tenant's rows.

CREATE POLICY app_own_tenants ON reminderd.endpoint_health FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.frequency_caps TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.usage_days FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.usage_increments TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));

CREATE POLICY read_all ON reminderd.tenant_budgets FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.endpoint_health FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.frequency_caps FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.contact_sends FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.usage_days FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.usage_increments FOR SELECT TO reminderd_readonly USING (true);

CREATE POLICY daemon_all ON reminderd.tenant_budgets TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.endpoint_health TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.frequency_caps TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.contact_sends TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.usage_days TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.usage_increments TO reminderd_daemon USING (true) WITH CHECK (true);

GRANT SELECT ON reminderd.endpoints, reminderd.endpoint_health, reminderd.usage_days, reminderd.usage_daily
    TO reminderd_app, reminderd_readonly;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.frequency_caps TO reminderd_app;
GRANT INSERT ON reminderd.usage_increments TO reminderd_app;  -- the count_scheduled trigger, as the app
GRANT SELECT ON reminderd.tenant_budgets, reminderd.frequency_caps, reminderd.contact_sends,
    reminderd.usage_increments TO reminderd_readonly;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.tenant_budgets, reminderd.endpoints, reminderd.endpoint_health,
    reminderd.frequency_caps, reminderd.contact_sends, reminderd.usage_days, reminderd.usage_increments
    TO reminderd_daemon;

REVOKE EXECUTE ON FUNCTION
    reminderd.window_at(integer[], bigint, bigint, integer),
    reminderd.window_sum(integer[]),
    reminderd.window_frees_in(integer[], float8, float8),
    reminderd.second_slot(timestamptz),
    reminderd.hour_slot(timestamptz),
    reminderd.add_tenant_budget(),
    reminderd.endpoint_of(text),
    reminderd.hold_for_disabled_endpoint(),
    reminderd.disable_endpoint(text, text, text),
    reminderd.enable_endpoint(text, text),
    reminderd.reserve_contact_sends(reminderd.contact_send_v1[]),
    reminderd.count_scheduled()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.endpoint_of(text),
    reminderd.add_tenant_budget(),
    reminderd.hold_for_disabled_endpoint(),
    reminderd.count_scheduled()
TO reminderd_app, reminderd_daemon;
-- The claim's and the operator's, reminderd_daemon's alone.
GRANT EXECUTE ON FUNCTION
    reminderd.window_at(integer[], bigint, bigint, integer),
    reminderd.window_sum(integer[]),
    reminderd.window_frees_in(integer[], float8, float8),
    reminderd.second_slot(timestamptz),
    reminderd.hour_slot(timestamptz),
    reminderd.disable_endpoint(text, text, text),
    reminderd.enable_endpoint(text, text),
    reminderd.reserve_contact_sends(reminderd.contact_send_v1[])
TO reminderd_daemon;

-- reminderd_api (migration 0006): its inserts of messages and its changes of a tenant run the
-- triggers above; it may read and set a tenant's limits (PATCH /v1/tenant).
CREATE POLICY api_all ON reminderd.tenant_budgets FOR INSERT TO reminderd_api WITH CHECK (true);
CREATE POLICY api_all ON reminderd.endpoint_health FOR SELECT TO reminderd_api USING (true);
CREATE POLICY api_all ON reminderd.frequency_caps TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.usage_days FOR SELECT TO reminderd_api USING (true);
CREATE POLICY api_all ON reminderd.usage_increments TO reminderd_api USING (true) WITH CHECK (true);
GRANT SELECT (max_per_second, max_per_hour, frequency_cap_policy, callback_endpoint) ON reminderd.tenants
    TO reminderd_api;
GRANT UPDATE (max_per_second, max_per_hour, frequency_cap_policy) ON reminderd.tenants TO reminderd_api;
GRANT SELECT ON reminderd.endpoints, reminderd.endpoint_health, reminderd.usage_days, reminderd.usage_daily
    TO reminderd_api;
GRANT INSERT ON reminderd.tenant_budgets, reminderd.endpoints TO reminderd_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.frequency_caps TO reminderd_api;
GRANT SELECT, INSERT ON reminderd.usage_increments TO reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.endpoint_of(text),
    reminderd.add_tenant_budget(),
    reminderd.hold_for_disabled_endpoint(),
    reminderd.count_scheduled()
TO reminderd_api;
