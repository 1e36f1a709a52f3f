-- The reminderd schema as it stands after the last migration (0010), in one file, for reading.
--
-- Three things describe the schema, each with one job:
--   migrations/sql/NNNN_*.sql   the history. `reminderd migrate` (Alembic) runs each file once, in
--                               order, to bring a live database and its data up to date.
--   reminderd/sql/schema.sql    this file: the current state, grouped by topic, for a DBA to read.
--   tests/integration/test_schema.py   builds one database from this file and one from the
--                               migrations and fails when their catalogs differ (tables, columns,
--                               constraints, indexes, functions, triggers, policies, views, grants,
--                               comments).
-- So a schema change is a new migration plus the same change here; the test says when they differ.
--
-- Loaded into an empty database (psql -f), this file builds the same schema the migrations do,
-- minus Alembic's own table, reminderd.alembic_version (version_num: the revision applied last;
-- reminderd_readonly and reminderd_daemon may read it). To install or upgrade reminderd, run
-- `reminderd migrate`, not this file.
--
-- Contents: schema · tables · indexes · types (the daemon's batches) · roles, row-level security
-- and table privileges · functions (the SQL API, its helpers, the trigger functions) · triggers ·
-- views for DBAs.

CREATE SCHEMA reminderd;

-- A Standard Webhooks secret: whsec_ + base64 of 32 bytes from the server's strong random source
-- (gen_random_uuid() draws on pg_strong_random; no pgcrypto needed). Defined first: it is the
-- default of tenants.signing_secret.
CREATE FUNCTION reminderd.generate_secret() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT 'whsec_' || encode(
        substring(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) FROM 1 FOR 32),
        'base64')
$$;

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

-- Tables ------------------------------------------------------------------------------------------
-- Columns are listed in their physical order (the order SELECT * returns them in), which is the
-- order the migrations added them.

-- A tenant: one sender of messages (an app, or a customer of yours), with its own signing secret
-- and the defaults of its messages.
CREATE TABLE reminderd.tenants (
    id                         text PRIMARY KEY
                               CONSTRAINT tenant_id_format CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    -- The default callback of the tenant's messages; a message's own callback_url wins.
    callback_url               text
                               CONSTRAINT tenant_callback_url_is_http CHECK (callback_url ~* '^https?://[^/?#[:space:]]+'),
    signing_secret             text NOT NULL DEFAULT reminderd.generate_secret(),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    -- Secret rotation (rotate_secret): the old secret still signs, beside the new one, until it expires.
    previous_signing_secret    text,
    previous_secret_expires_at timestamptz,
    -- A paused tenant's messages are held ('paused', paused_by 'tenant'), new ones too.
    paused                     boolean NOT NULL DEFAULT false,
    -- Holidays: a country or country-subdivision code of the `holidays` package (IN, US-CA, GB).
    calendar                   text CONSTRAINT tenant_calendar_format CHECK (calendar ~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$'),
    holiday_rule               text NOT NULL DEFAULT 'skip'
                               CONSTRAINT tenant_holiday_rule_is_known CHECK (holiday_rule IN ('skip', 'send')),
    -- Quiet hours: a daily window of the recipient's wall clock (the message's timezone); it may
    -- wrap midnight. They hold back every category except the exempt ones.
    quiet_start                time,
    quiet_end                  time,
    quiet_exempt               text[] NOT NULL DEFAULT '{transactional}',
    CONSTRAINT quiet_hours_complete CHECK ((quiet_start IS NULL AND quiet_end IS NULL) OR quiet_start <> quiet_end),
    -- Sending limits (see "Fair and bounded sending" below): over them rows wait, in order.
    max_per_second             integer CONSTRAINT max_per_second_positive CHECK (max_per_second > 0),
    max_per_hour               integer CONSTRAINT max_per_hour_positive CHECK (max_per_hour > 0),
    -- Over a frequency cap: defer the message until the cap allows it, or skip it.
    frequency_cap_policy       text NOT NULL DEFAULT 'defer'
                               CONSTRAINT frequency_cap_policy_is_known CHECK (frequency_cap_policy IN ('defer', 'skip')),
    -- host:port of callback_url, for the claim (computed once, on write).
    callback_endpoint          text GENERATED ALWAYS AS (reminderd.endpoint_of(callback_url)) STORED
);

-- Which database role acts for which tenant (see my_tenants below).
CREATE TABLE reminderd.tenant_members (
    role_name  name NOT NULL,
    tenant_id  text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant_id)
);

-- A tenant's own days off, on top of its calendar's public holidays.
CREATE TABLE reminderd.tenant_holidays (
    tenant_id text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    day       date NOT NULL,
    name      text NOT NULL DEFAULT 'holiday' CONSTRAINT holiday_name_not_empty CHECK (name <> ''),
    PRIMARY KEY (tenant_id, day)
);

-- The messages: one row per one-off message, or per recurring schedule (cron or RRULE) whose
-- fire_at moves on to the next occurrence each time one fires.
--
-- Every message is updated several times (claim, outcome, retries). Those updates change status,
-- which every partial index's predicate reads, so they are not HOT: each leaves a dead tuple and
-- new index entries. fillfactor 80 keeps room on each page so the new version usually lands on
-- the same page (less scattering, cheaper vacuum). Autovacuum runs at 2 % dead rows instead of
-- 20 %, so a big queue does not carry millions of dead tuples between vacuums, and analyzes often
-- because fire_at moves constantly.
CREATE TABLE reminderd.scheduled_messages (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES reminderd.tenants (id),
    ref_id           text NOT NULL CONSTRAINT ref_id_not_empty CHECK (ref_id <> ''),
    payload          jsonb NOT NULL DEFAULT '{}',
    callback_url     text CONSTRAINT callback_url_is_http CHECK (callback_url ~* '^https?://[^/?#[:space:]]+'),
    fire_at          timestamptz,          -- next due instant; NULL only for a recurring row not yet planned
    -- Five fields, six with seconds first, or a nickname (@daily).
    cron             text CONSTRAINT cron_shape CHECK (
                         cron ~* '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$'),
    timezone         text NOT NULL DEFAULT 'UTC',  -- the recipient's: cron, RRULE and quiet hours read it
    status           text NOT NULL DEFAULT 'pending' CONSTRAINT status_is_known CHECK (
                         status IN ('pending', 'picked', 'sent', 'dead', 'cancelled', 'paused', 'expired', 'finished')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer CONSTRAINT max_attempts_positive CHECK (max_attempts > 0),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    picked_at        timestamptz,
    sent_at          timestamptz,
    lease_expires_at timestamptz,          -- set while picked: after it, another daemon may redeliver
    scheduled_for    timestamptz,          -- set while retrying: the occurrence (fire_at holds the retry time)
    last_event       text,                 -- the event the writer recorded last: the audit trail's name for it
    paused_by        text,
    -- An RFC 5545 recurrence: an RRULE line, optionally DTSTART, EXDATE and RDATE lines, all wall
    -- times in the row's timezone. Stored beside cron as the alternative recurrence.
    rrule            text CONSTRAINT rrule_has_freq CHECK (rrule ~* '(^|\n)\s*(RRULE:)?FREQ='),
    -- End conditions of a recurring row: past `until`, or after `max_runs` occurrences fired, it
    -- ends 'finished'. runs counts occurrences fired (delivered, or given up after retries).
    until            timestamptz,
    max_runs         integer CONSTRAINT max_runs_positive CHECK (max_runs > 0),
    runs             integer NOT NULL DEFAULT 0,
    -- Quiet hours hold back every category except the tenant's exempt ones (transactional).
    category         text NOT NULL DEFAULT 'transactional'
                         CONSTRAINT category_format CHECK (category ~ '^[a-z][a-z0-9_-]{0,31}$'),
    -- Holidays: NULL takes the tenant's calendar; holiday_rule NULL takes the tenant's too.
    calendar         text CONSTRAINT calendar_format CHECK (calendar ~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$'),
    holiday_rule     text CONSTRAINT holiday_rule_is_known CHECK (holiday_rule IN ('skip', 'send')),
    -- After an outage: send (if at most max_lateness late), latest (only the most recent missed
    -- occurrence), skip (nothing late). NULL takes REMINDERD_BACKFILL / REMINDERD_MAX_LATENESS.
    backfill         text CONSTRAINT backfill_is_known CHECK (backfill IN ('send', 'latest', 'skip')),
    max_lateness     interval CONSTRAINT max_lateness_not_negative CHECK (max_lateness >= interval '0'),
    CONSTRAINT one_off_needs_fire_at CHECK (cron IS NOT NULL OR rrule IS NOT NULL OR fire_at IS NOT NULL),
    CONSTRAINT one_recurrence CHECK (cron IS NULL OR rrule IS NULL),
    CONSTRAINT end_conditions_need_recurrence CHECK (
        (until IS NULL AND max_runs IS NULL) OR cron IS NOT NULL OR rrule IS NOT NULL),
    -- What a tenant's share of a claim takes first: 0 transactional, 1 any other category, 2 marketing.
    priority         smallint NOT NULL GENERATED ALWAYS AS (
                         CASE category WHEN 'transactional' THEN 0 WHEN 'marketing' THEN 2 ELSE 1 END) STORED,
    -- Who the message is for, as the frequency caps count it. NULL: no cap applies.
    recipient        text CONSTRAINT recipient_format CHECK (recipient <> '' AND length(recipient) <= 256),
    -- The endpoint (host:port) of the claim's callback, set by each claim: in-flight counts read it.
    endpoint         text,
    -- message: pause(); tenant: pause_tenant(); endpoint: its endpoint is disabled.
    CONSTRAINT paused_by_is_known CHECK (paused_by IN ('message', 'tenant', 'endpoint'))
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

COMMENT ON COLUMN reminderd.scheduled_messages.status IS
    'pending → picked → sent | dead; recurring rows go back to pending until finished '
    '(until passed, max_runs reached, RRULE exhausted); also cancelled, paused, expired (missed).';
COMMENT ON COLUMN reminderd.scheduled_messages.priority IS
    'From the category: 0 transactional, 1 any other, 2 marketing. Within its tenant''s share of a '
    'claim a row of a lower number goes first, then the oldest fire_at.';
COMMENT ON COLUMN reminderd.scheduled_messages.scheduled_for IS
    'The occurrence being retried or redelivered; NULL when fire_at is the occurrence itself. '
    'The webhook-id derives from it, so every retry of one occurrence carries the same id.';

-- One row per HTTP attempt: its answer (or the error), and how long it took. deliveries and
-- events are append-only: autovacuum runs on them for visibility (index-only scans), not space.
CREATE TABLE reminderd.deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    bigint NOT NULL REFERENCES reminderd.scheduled_messages (id) ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    webhook_id    text NOT NULL,
    attempt       integer NOT NULL,
    scheduled_for timestamptz NOT NULL,
    status_code   integer,                 -- NULL when no HTTP answer came back
    error         text,
    duration_ms   integer NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);

-- The audit trail: every change of a message's status or fire_at, written by the triggers below.
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
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);

-- Settings a DBA can change with SQL.
CREATE TABLE reminderd.config (
    key   text PRIMARY KEY,
    value text NOT NULL
);
-- How far ahead a message may be scheduled (check_fire_at).
INSERT INTO reminderd.config VALUES ('horizon', '90 days');
-- The daemon's defaults for rows without their own (REMINDERD_BACKFILL, REMINDERD_MAX_LATENESS,
-- REMINDERD_LOOKBACK), as the checks at insert read them (check_arrival). Keep them equal to the
-- daemon's; it warns at start when they differ.
INSERT INTO reminderd.config VALUES ('backfill', 'send'), ('max_lateness', '30 minutes'), ('lookback', '1 day');

-- Indexes -----------------------------------------------------------------------------------------
-- Most rows are future-dated or finished history, so the hot paths read partial indexes.

-- The claim reads only due pending rows.
CREATE INDEX scheduled_messages_due ON reminderd.scheduled_messages (fire_at) WHERE status = 'pending';
-- Leases to reap after a daemon died.
CREATE INDEX scheduled_messages_leases ON reminderd.scheduled_messages (lease_expires_at)
    WHERE status = 'picked';
-- At most one live row per reference: scheduling again replaces, it never adds a second send.
CREATE UNIQUE INDEX scheduled_messages_live_ref ON reminderd.scheduled_messages (tenant_id, ref_id)
    WHERE status IN ('pending', 'picked', 'paused');
-- schedule() finds a sent message again when a client retries the call that created it.
CREATE INDEX scheduled_messages_sent_ref ON reminderd.scheduled_messages (tenant_id, ref_id)
    WHERE status = 'sent';
-- queue_overview reads this instead of the table: counts per tenant and status without history.
CREATE INDEX scheduled_messages_overview ON reminderd.scheduled_messages (tenant_id, status, fire_at)
    WHERE status IN ('pending', 'picked', 'paused', 'dead');
-- For the views and for pruning history in small batches.
CREATE INDEX scheduled_messages_finished ON reminderd.scheduled_messages (updated_at)
    WHERE status IN ('sent', 'cancelled', 'expired', 'dead', 'finished');
CREATE INDEX scheduled_messages_dead ON reminderd.scheduled_messages (updated_at) WHERE status = 'dead';
-- The fair claim: per tenant, per priority, the oldest due rows first.
CREATE INDEX scheduled_messages_fair ON reminderd.scheduled_messages (tenant_id, priority, fire_at)
    WHERE status = 'pending';
-- Callbacks in flight per endpoint, across all daemons.
CREATE INDEX scheduled_messages_in_flight ON reminderd.scheduled_messages (endpoint) WHERE status = 'picked';

CREATE INDEX deliveries_message ON reminderd.deliveries (message_id, attempt);
CREATE INDEX deliveries_created ON reminderd.deliveries (created_at);

CREATE INDEX events_message ON reminderd.events (message_id, id);
CREATE INDEX events_tenant_ref ON reminderd.events (tenant_id, ref_id, id);
CREATE INDEX events_created ON reminderd.events (created_at);

-- Types -------------------------------------------------------------------------------------------
-- The daemon's batch writes (queries.sql: record_outcomes, plan_recurring, release) each pass one
-- array of a composite type, one element per row, instead of one array per field. Versioned
-- names: a released type is never altered; a change adds `_v2` beside it, so daemons of the
-- previous release keep writing with `_v1` during a rolling upgrade.

-- One attempt's outcome (or a claimed row held back before any request), as record_outcomes writes
-- it: the attempt logged in reminderd.deliveries, the row moved on.
CREATE TYPE reminderd.outcome_v1 AS (
    message_id         bigint,
    picked_at          timestamptz,  -- the claim's fencing token
    attempt            integer,
    tenant_id          text,
    webhook_id         text,
    occurrence         timestamptz,
    attempted          boolean,      -- false: held back before any request, no attempt logged
    status_code        integer,
    error              text,
    duration_ms        integer,
    event              text,         -- the audit trail's event (last_event)
    next_status        text,
    next_fire_at       timestamptz,  -- NULL keeps fire_at (or uses retry_in_s)
    retry_in_s         float8,       -- from the database clock at recording time
    next_scheduled_for timestamptz,
    reset_attempts     boolean,
    refund_attempt     boolean,      -- the claim counted an attempt that was not made
    ran                boolean,      -- a recurring occurrence fired: counts for max_runs
    delivered          boolean,
    last_error         text
);
COMMENT ON TYPE reminderd.outcome_v1 IS 'One outcome in a batch the daemon records (record_outcomes).';

-- A recurring row's next fire_at, written only if the row still has the fire_at it was read with.
CREATE TYPE reminderd.plan_v1 AS (
    message_id   bigint,
    seen_fire_at timestamptz,
    next_fire_at timestamptz,
    next_status  text,
    event        text,
    last_error   text
);
COMMENT ON TYPE reminderd.plan_v1 IS 'One recurring row planned by the daemon (plan_recurring).';

-- A claimed row handed back at shutdown.
CREATE TYPE reminderd.release_v1 AS (
    message_id bigint,
    picked_at  timestamptz,
    started    boolean  -- its request may have gone out: the attempt counts
);
COMMENT ON TYPE reminderd.release_v1 IS 'One claimed row the daemon hands back at shutdown (release).';

-- Roles, row-level security and table privileges --------------------------------------------------
-- Group roles that cannot log in; operators grant them to login roles:
--   GRANT reminderd_app TO booking_service;   -- then: reminderd tenant grant acme booking_service
-- reminderd_app acts for its tenants only; reminderd_readonly reads everything but secrets;
-- reminderd_daemon runs the daemon. Roles are cluster-wide, so a second database on the same
-- cluster reuses them.
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

-- Tenants the current role acts for: those mapped to it or to a role it is a member of. Decided
-- by current_user alone, which a session cannot change at will (SET ROLE only reaches roles it
-- was granted): no session variable can switch tenants.
CREATE VIEW reminderd.my_tenants WITH (security_barrier) AS
SELECT m.tenant_id
FROM reminderd.tenant_members m
JOIN pg_roles r ON r.rolname = m.role_name
WHERE pg_has_role(r.oid, 'MEMBER');

ALTER TABLE reminderd.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.tenant_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.tenant_holidays ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.scheduled_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.events ENABLE ROW LEVEL SECURITY;
-- config has no row-level security: it holds no tenant's rows.

-- reminderd_app: its own tenants' rows. `= ANY (ARRAY(subquery))` is evaluated once per
-- statement and can drive an index on tenant_id; `IN (subquery)` would be checked row by row.
CREATE POLICY app_own_tenants ON reminderd.tenants FOR SELECT TO reminderd_app
    USING (id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY own_membership ON reminderd.tenant_members FOR SELECT TO reminderd_app
    USING (role_name IN (SELECT rolname FROM pg_roles WHERE pg_has_role(oid, 'MEMBER')));
CREATE POLICY app_own_tenants ON reminderd.tenant_holidays TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
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

-- reminderd_readonly: every row.
CREATE POLICY read_all ON reminderd.tenants FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.tenant_members FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.tenant_holidays FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.scheduled_messages FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.deliveries FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.events FOR SELECT TO reminderd_readonly USING (true);

-- reminderd_daemon: every row, for everything its table privileges allow.
CREATE POLICY daemon_all ON reminderd.tenants TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.tenant_members TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.tenant_holidays TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.scheduled_messages TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.deliveries TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.events TO reminderd_daemon USING (true) WITH CHECK (true);

GRANT USAGE ON SCHEMA reminderd TO reminderd_app, reminderd_readonly, reminderd_daemon;

-- Nobody but the daemon (and the owner) may read a signing secret: column privileges.
GRANT SELECT (id, callback_url, created_at, paused, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt,
              max_per_second, max_per_hour, frequency_cap_policy, callback_endpoint)
    ON reminderd.tenants TO reminderd_app, reminderd_readonly;

GRANT SELECT ON reminderd.tenant_members, reminderd.my_tenants, reminderd.deliveries, reminderd.config
    TO reminderd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.tenant_holidays, reminderd.scheduled_messages TO reminderd_app;
GRANT SELECT, INSERT ON reminderd.events TO reminderd_app;

GRANT SELECT ON reminderd.tenant_members, reminderd.tenant_holidays, reminderd.scheduled_messages,
    reminderd.deliveries, reminderd.events, reminderd.config TO reminderd_readonly;

GRANT SELECT, INSERT, UPDATE ON reminderd.tenants TO reminderd_daemon;
GRANT SELECT, INSERT, DELETE ON reminderd.tenant_members TO reminderd_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.tenant_holidays, reminderd.scheduled_messages,
    reminderd.deliveries, reminderd.events TO reminderd_daemon;
GRANT SELECT ON reminderd.my_tenants, reminderd.config TO reminderd_daemon;

-- Functions ---------------------------------------------------------------------------------------
-- The SQL API's errors use these SQLSTATEs (documented in docs/sql.md):
--   23503 foreign_key_violation   unknown tenant (cancel and cancel_matching return 0 instead)
--   22023 invalid_parameter_value empty ref, bad timezone, bad interval, not exactly one of
--                                 fire_at, fire_in and local_time
--   22004 null_value_not_allowed  a required argument is NULL
--   22008 datetime_field_overflow fire_at beyond the horizon, or already too late for the
--                                 message's backfill policy; a recurring row's until already past
--   23505 unique_violation        a tenant that already exists; a second live row for a ref
--   23514 check_violation         a value of the wrong shape (the error names the constraint)
--   54000 program_limit_exceeded  payload over 256 KiB
--   P0002 no_data_found           no such message (requeue of an unknown id)

-- Functions: checks shared by the API and the triggers --------------------------------------------

-- Is `name` a time zone the server knows? Plain names are checked fast; others by trying them.
CREATE FUNCTION reminderd.is_timezone(name text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF name IN ('UTC', 'Etc/UTC') THEN
        RETURN true;
    END IF;
    -- IANA names only: no POSIX strings such as 'UTC+3', whose sign is the opposite of ISO 8601.
    IF name IS NULL OR name !~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$' THEN
        RETURN false;
    END IF;
    -- A name shaped like a POSIX rule ('UTC+3', 'JST-9') must be a real zone file, not a rule.
    IF name ~ '^[A-Za-z]+[+-]?[0-9]' AND NOT EXISTS (
        SELECT 1 FROM pg_timezone_names z WHERE z.name = is_timezone.name
    ) THEN
        RETURN false;
    END IF;
    PERFORM now() AT TIME ZONE name;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;

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

-- A duration for people, as the daemon writes them (reminderd/schedule/timing.py): 45s, 30m,
-- 6h 5m, 2d 3h.
CREATE FUNCTION reminderd.duration_text(duration interval) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN parts = '' OR (s > 0 AND d = 0 AND h = 0) THEN ltrim(parts || ' ' || s || 's') ELSE parts END
    FROM (SELECT d, h, s,
                 concat_ws(' ', CASE WHEN d > 0 THEN d || 'd' END, CASE WHEN h > 0 THEN h || 'h' END,
                           CASE WHEN m > 0 THEN m || 'm' END) AS parts
          FROM (SELECT total / 86400 AS d, total % 86400 / 3600 AS h, total % 3600 / 60 AS m, total % 60 AS s
                FROM (SELECT floor(extract(epoch FROM duration))::bigint AS total) AS seconds) AS split) AS said
$$;

-- Refuse a one-off that is already too late to be sent: the daemon would expire it at once. The
-- daemon's rule (reminderd/schedule/timing.py, arrival()): nothing at or beyond the lookback is
-- sent; under backfill 'send' a message at most max_lateness late is, under 'skip' at most a
-- minute (or max_lateness if smaller), under 'latest' anything inside the lookback. Policy and
-- lateness are the row's, else reminderd.config's. A message slightly late is accepted: sent now.
CREATE FUNCTION reminderd.check_arrival(
    tenant_id text, ref_id text, fire_at timestamptz, backfill text, max_lateness interval
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    late     interval := now() - check_arrival.fire_at;
    policy   text;
    lateness interval;
    lookback interval;
    allowed  interval;
    due      text := to_char(check_arrival.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
BEGIN
    IF check_arrival.fire_at IS NULL OR late <= interval '0' THEN
        RETURN;
    END IF;
    policy := coalesce(check_arrival.backfill, (SELECT value FROM reminderd.config WHERE key = 'backfill'), 'send');
    lateness := coalesce(check_arrival.max_lateness,
                         (SELECT value::interval FROM reminderd.config WHERE key = 'max_lateness'), interval '30 minutes');
    lookback := coalesce((SELECT value::interval FROM reminderd.config WHERE key = 'lookback'), interval '1 day');
    IF late >= lookback THEN
        RAISE EXCEPTION 'message % / % is too late to send: due %, % ago', check_arrival.tenant_id,
            check_arrival.ref_id, due, reminderd.duration_text(late)
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Nothing older than the lookback (%s: reminderd.config ''lookback'', '
                                  'REMINDERD_LOOKBACK) is ever sent, whatever the backfill policy; it '
                                  'would expire at once.', reminderd.duration_text(lookback)),
                  HINT = 'Schedule it for now or later.';
    END IF;
    allowed := CASE policy WHEN 'latest' THEN NULL
                           WHEN 'skip' THEN least(lateness, interval '60 seconds')
                           ELSE lateness END;
    IF late > allowed THEN
        RAISE EXCEPTION 'message % / % is too late to send: due %, % ago', check_arrival.tenant_id,
            check_arrival.ref_id, due, reminderd.duration_text(late)
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('backfill=%s sends a one-off at most %s late (%s); it would expire at once.',
                                  policy, reminderd.duration_text(allowed),
                                  CASE WHEN policy = 'skip' THEN 'on time: a minute, or max_lateness if smaller'
                                       WHEN check_arrival.max_lateness IS NOT NULL THEN 'its max_lateness'
                                       ELSE 'reminderd.config ''max_lateness'', REMINDERD_MAX_LATENESS' END),
                  HINT = 'Schedule it for now or later, or give it a larger max_lateness (or backfill '
                         '''latest'', up to the lookback) to send it this late.';
    END IF;
END
$$;

-- The first occurrence of a recurrence after `after`, computed in SQL: the seam through which
-- schedule_cron() and schedule_rrule() give a new recurring row its first fire_at. NULL for now:
-- the daemon plans it (reminderd/schedule, the code that times every later occurrence), within a
-- poll interval; the CLI passes the first fire_at it computed with that code. Once
-- reminderd.next_cron_occurrence(cron, timezone, after) exists, cron rows get it here.
CREATE FUNCTION reminderd.first_occurrence(cron text, rrule text, timezone text, after timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT NULL::timestamptz
$$;

-- The instant at which the clock in `timezone` first reads `local_time`; a wall time skipped by a
-- forward jump happens at the jump. The same rule as the daemon's (reminderd/schedule/wallclock.py).
-- PostgreSQL's own `local_time AT TIME ZONE tz` picks the later of a repeated time and moves a
-- skipped one past the gap by its length, so it is not used alone.
CREATE FUNCTION reminderd.local_instant(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    probe      timestamptz := local_time AT TIME ZONE 'UTC';
    offset_a   interval;
    offset_b   interval;
    first_try  timestamptz;
    second_try timestamptz;
    lo         timestamptz;
    hi         timestamptz;
    mid        timestamptz;
BEGIN
    IF NOT reminderd.is_timezone(timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%"', timezone USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    -- The offsets in force a day either side; the wall time is read under each.
    offset_a := (probe - interval '1 day') AT TIME ZONE timezone - (probe - interval '1 day') AT TIME ZONE 'UTC';
    offset_b := (probe + interval '1 day') AT TIME ZONE timezone - (probe + interval '1 day') AT TIME ZONE 'UTC';
    first_try := (local_time - offset_a) AT TIME ZONE 'UTC';
    second_try := (local_time - offset_b) AT TIME ZONE 'UTC';
    IF first_try AT TIME ZONE timezone = local_time AND second_try AT TIME ZONE timezone = local_time THEN
        RETURN least(first_try, second_try);
    ELSIF first_try AT TIME ZONE timezone = local_time THEN
        RETURN first_try;
    ELSIF second_try AT TIME ZONE timezone = local_time THEN
        RETURN second_try;
    END IF;
    -- Skipped: the jump lies between the two tries; find the second at which the offset changes.
    lo := least(first_try, second_try);
    hi := greatest(first_try, second_try);
    WHILE hi - lo > interval '1 second' LOOP
        mid := date_trunc('second', lo + (hi - lo) / 2);
        IF mid AT TIME ZONE timezone - mid AT TIME ZONE 'UTC' = lo AT TIME ZONE timezone - lo AT TIME ZONE 'UTC' THEN
            lo := mid;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    RETURN hi;
END
$$;

-- Functions: scheduling ---------------------------------------------------------------------------

-- One-off: exactly one of fire_at (an instant), fire_in (a delay) or local_time (a wall time in
-- `timezone`, e.g. '2026-12-24 09:00' in Asia/Kolkata). `timezone` is the recipient's: quiet
-- hours and holidays are read in it.
CREATE FUNCTION reminderd.schedule(
    tenant_id text, ref_id text, fire_at timestamptz DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    fire_in interval DEFAULT NULL, max_attempts integer DEFAULT NULL,
    local_time timestamp DEFAULT NULL, timezone text DEFAULT 'UTC',
    category text DEFAULT 'transactional', calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL,
    backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due      timestamptz;
    existing bigint;
    new_id   bigint;
BEGIN
    IF num_nonnulls(schedule.fire_at, schedule.fire_in, schedule.local_time) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of fire_at (an instant), fire_in (a delay) and local_time (a wall time in timezone)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schedule.fire_in < interval '0' THEN
        RAISE EXCEPTION 'fire_in must not be negative (got %)', schedule.fire_in
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM reminderd.check_tenant(schedule.tenant_id);
    due := coalesce(schedule.fire_at, now() + schedule.fire_in,
                    reminderd.local_instant(schedule.local_time, coalesce(schedule.timezone, 'UTC')));
    PERFORM reminderd.check_fire_at(due);
    -- A retried call (the same request again) returns the message the first call created, even if
    -- it is in flight or already sent, so a client that timed out and retries never causes a
    -- second send. Anything else replaces.
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule.tenant_id || chr(31) || schedule.ref_id, 0));
    SELECT m.id INTO existing
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule.tenant_id AND m.ref_id = schedule.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'sent')
      AND m.cron IS NULL AND m.rrule IS NULL
      AND m.payload = coalesce(schedule.payload, '{}')
      AND m.callback_url IS NOT DISTINCT FROM schedule.callback_url
      AND m.max_attempts IS NOT DISTINCT FROM schedule.max_attempts
      AND m.timezone = coalesce(schedule.timezone, 'UTC')
      AND m.category = coalesce(schedule.category, 'transactional')
      AND m.calendar IS NOT DISTINCT FROM schedule.calendar
      AND m.holiday_rule IS NOT DISTINCT FROM schedule.holiday_rule
      AND m.backfill IS NOT DISTINCT FROM schedule.backfill
      AND m.max_lateness IS NOT DISTINCT FROM schedule.max_lateness
      AND CASE WHEN schedule.fire_in IS NULL
               THEN coalesce(m.scheduled_for, m.fire_at) = due
               ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                        - extract(epoch FROM schedule.fire_in)) < 1 END
    ORDER BY m.id DESC
    LIMIT 1;
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    PERFORM reminderd.cancel_live(schedule.tenant_id, schedule.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
         holiday_rule, backfill, max_lateness)
    VALUES (schedule.tenant_id, schedule.ref_id, due, coalesce(schedule.payload, '{}'),
            schedule.callback_url, schedule.max_attempts, coalesce(schedule.timezone, 'UTC'),
            coalesce(schedule.category, 'transactional'), schedule.calendar, schedule.holiday_rule,
            schedule.backfill, schedule.max_lateness)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Recurring: exactly one of cron and rrule. Replaces the reference's live row. Its first fire_at
-- is first_fire_at when the caller computed it (the CLI, with the daemon's code), else
-- reminderd.first_occurrence(), else the daemon plans it.
CREATE FUNCTION reminderd.schedule_recurring(
    tenant_id text, ref_id text, cron text, rrule text, timezone text,
    payload jsonb, callback_url text, until timestamptz, max_runs integer, category text,
    calendar text, holiday_rule text, backfill text, max_lateness interval, max_attempts integer,
    first_fire_at timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
    due    timestamptz;
BEGIN
    IF num_nonnulls(schedule_recurring.cron, schedule_recurring.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of cron and rrule (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_tenant(schedule_recurring.tenant_id);
    IF schedule_recurring.first_fire_at < now() - interval '1 minute' THEN
        RAISE EXCEPTION 'first_fire_at % of message % / % is in the past',
            to_char(schedule_recurring.first_fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            schedule_recurring.tenant_id, schedule_recurring.ref_id
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Leave it NULL: the first occurrence after now is planned for you.';
    END IF;
    due := coalesce(schedule_recurring.first_fire_at,
                    reminderd.first_occurrence(schedule_recurring.cron, schedule_recurring.rrule,
                                               coalesce(schedule_recurring.timezone, 'UTC'), now()));
    IF due > schedule_recurring.until THEN
        RAISE EXCEPTION 'message % / % has no occurrence before its until %', schedule_recurring.tenant_id,
            schedule_recurring.ref_id,
            to_char(schedule_recurring.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Its first occurrence would be %s: it would finish without sending anything.',
                                  to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  HINT = 'Give a later until, or none.';
    END IF;
    PERFORM reminderd.cancel_live(schedule_recurring.tenant_id, schedule_recurring.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, cron, rrule, timezone, payload, callback_url, until, max_runs, category,
         calendar, holiday_rule, backfill, max_lateness, max_attempts, fire_at)
    VALUES (schedule_recurring.tenant_id, schedule_recurring.ref_id, schedule_recurring.cron,
            schedule_recurring.rrule, coalesce(schedule_recurring.timezone, 'UTC'),
            coalesce(schedule_recurring.payload, '{}'), schedule_recurring.callback_url,
            schedule_recurring.until, schedule_recurring.max_runs,
            coalesce(schedule_recurring.category, 'transactional'), schedule_recurring.calendar,
            schedule_recurring.holiday_rule, schedule_recurring.backfill, schedule_recurring.max_lateness,
            schedule_recurring.max_attempts, due)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION reminderd.schedule_cron(
    tenant_id text, ref_id text, cron text, timezone text DEFAULT 'UTC',
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    until timestamptz DEFAULT NULL, max_runs integer DEFAULT NULL, category text DEFAULT 'transactional',
    calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL,
    max_lateness interval DEFAULT NULL, max_attempts integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF cron IS NULL THEN
        RAISE EXCEPTION 'cron must not be NULL (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN reminderd.schedule_recurring(tenant_id, ref_id, cron, NULL, timezone, payload, callback_url,
        until, max_runs, category, calendar, holiday_rule, backfill, max_lateness, max_attempts);
END
$$;

CREATE FUNCTION reminderd.schedule_rrule(
    tenant_id text, ref_id text, rrule text, timezone text DEFAULT 'UTC',
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    until timestamptz DEFAULT NULL, max_runs integer DEFAULT NULL, category text DEFAULT 'transactional',
    calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL,
    max_lateness interval DEFAULT NULL, max_attempts integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF rrule IS NULL THEN
        RAISE EXCEPTION 'rrule must not be NULL (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN reminderd.schedule_recurring(tenant_id, ref_id, NULL, rrule, timezone, payload, callback_url,
        until, max_runs, category, calendar, holiday_rule, backfill, max_lateness, max_attempts);
END
$$;

-- Functions: cancelling, pausing, moving, requeueing ----------------------------------------------

-- Cancel the live row of a reference, if any. Serialised per reference so that two concurrent
-- schedule() calls for one ref cannot both insert.
CREATE FUNCTION reminderd.cancel_live(tenant_id text, ref_id text, reason text) RETURNS integer
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

CREATE FUNCTION reminderd.cancel(tenant_id text, ref_id text) RETURNS integer
LANGUAGE sql AS $$
    SELECT reminderd.cancel_live(tenant_id, ref_id, 'cancelled')
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

-- Resumed rows do not fire a backlog: a recurring row (cron or RRULE) is re-planned from now (the
-- daemon picks its next occurrence after now); a one-off keeps its fire_at, so one missed by more
-- than the lookback expires instead of firing late.
CREATE FUNCTION reminderd.resume_rows(tenant_id text, ref_id text, scope text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    resumed integer;
BEGIN
    UPDATE reminderd.scheduled_messages
    SET status = 'pending', paused_by = NULL, last_event = 'resumed', updated_at = now(),
        fire_at = CASE WHEN cron IS NOT NULL OR rrule IS NOT NULL THEN NULL ELSE fire_at END,
        scheduled_for = CASE WHEN cron IS NOT NULL OR rrule IS NOT NULL THEN NULL ELSE scheduled_for END,
        attempts = CASE WHEN cron IS NOT NULL OR rrule IS NOT NULL THEN 0 ELSE attempts END
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
    moved   integer;
    message record;
BEGIN
    PERFORM reminderd.check_tenant(reschedule.tenant_id);
    IF reschedule.fire_at IS NULL THEN
        RAISE EXCEPTION 'fire_at must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_fire_at(reschedule.fire_at);
    FOR message IN
        SELECT m.backfill, m.max_lateness FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = reschedule.tenant_id AND m.ref_id = reschedule.ref_id
          AND m.status IN ('pending', 'paused') AND m.cron IS NULL AND m.rrule IS NULL
    LOOP
        PERFORM reminderd.check_arrival(reschedule.tenant_id, reschedule.ref_id, reschedule.fire_at,
                                        message.backfill, message.max_lateness);
    END LOOP;
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

-- Functions: secrets and retention ----------------------------------------------------------------

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
        WHERE (status IN ('sent', 'cancelled', 'expired', 'finished') AND updated_at < now() - keep_finished)
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

-- Functions: what the triggers run (the triggers themselves follow) -------------------------------

-- Reject what SQL can check at insert, with a message that names the problem (a callback_url or
-- cron of the wrong shape carries the name of the constraint it pre-empts). An RRULE without
-- DTSTART is anchored at the local midnight of the day it was written, so INTERVAL counts from a
-- fixed day and times default to 00:00 (stored, so a DBA sees it).
CREATE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT reminderd.is_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%" for message % / %', NEW.timezone, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    IF NEW.callback_url !~* '^https?://[^/?#[:space:]]+' THEN
        RAISE EXCEPTION 'callback_url "%" of message % / % is not an http(s) URL', NEW.callback_url,
            NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'callback_url_is_http',
                  HINT = 'Give an absolute http:// or https:// URL, like https://example.com/hooks.';
    END IF;
    IF NEW.cron !~* '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$' THEN
        RAISE EXCEPTION 'cron "%" of message % / % is not five fields (minute hour day month weekday)',
            NEW.cron, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'cron_shape',
                  HINT = 'Five fields like ''0 9 * * 1-5'', six with a leading seconds field, or @hourly, @daily, '
                         '@weekly, @monthly, @yearly.';
    END IF;
    IF NEW.callback_url IS NULL AND NOT EXISTS (
        SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id AND t.callback_url IS NOT NULL
    ) THEN
        IF NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id) THEN
            RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it first: reminderd tenant add ID --callback-url URL';
        END IF;
        RAISE EXCEPTION 'no callback_url for message % / %: the row has none and tenant "%" has no default',
            NEW.tenant_id, NEW.ref_id, NEW.tenant_id
            USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.rrule IS NOT NULL AND NEW.rrule !~* '(^|\n)\s*DTSTART' THEN
        IF NEW.rrule ~* 'COUNT=' THEN
            RAISE EXCEPTION 'the rrule of message % / % has COUNT but no DTSTART', NEW.tenant_id, NEW.ref_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'COUNT counts from DTSTART: give one (DTSTART:20261201T090000), or use max_runs instead.';
        END IF;
        NEW.rrule := 'DTSTART:' || to_char(date_trunc('day', now() AT TIME ZONE NEW.timezone), 'YYYYMMDD"T"HH24MISS')
                     || E'\n' || btrim(NEW.rrule, E' \t\r\n');
    END IF;
    RETURN NEW;
END
$$;

-- A row that would be dead on arrival is refused: a one-off already too late for its backfill
-- policy (check_arrival), a recurring row whose until is already past.
CREATE FUNCTION reminderd.refuse_dead_on_arrival() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('pending', 'paused') THEN
        IF NEW.cron IS NULL AND NEW.rrule IS NULL THEN
            PERFORM reminderd.check_arrival(NEW.tenant_id, NEW.ref_id, NEW.fire_at, NEW.backfill, NEW.max_lateness);
        ELSIF NEW.until <= now() THEN
            RAISE EXCEPTION 'message % / % ends before it starts: its until % is already past', NEW.tenant_id,
                NEW.ref_id, to_char(NEW.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                USING ERRCODE = 'datetime_field_overflow',
                      DETAIL = 'A recurring message sends nothing after its until; this one would finish at once.',
                      HINT = 'Give an until in the future, or none.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- A tenant is checked with sentences before its constraints are (the errors carry their names):
-- one that already exists, an id, callback_url or calendar of the wrong shape.
CREATE FUNCTION reminderd.validate_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.id) THEN
        RAISE EXCEPTION 'tenant "%" already exists', NEW.id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'tenants_pkey',
                  HINT = 'Change it with UPDATE reminderd.tenants (or reminderd tenant set), or choose another id.';
    END IF;
    IF NEW.id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'tenant id "%" is not allowed', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_id_format',
                  DETAIL = 'A tenant id is letters, digits and _ . : -, starts with a letter or digit, and has at most 128 characters.';
    END IF;
    IF NEW.callback_url !~* '^https?://[^/?#[:space:]]+' THEN
        RAISE EXCEPTION 'callback_url "%" of tenant "%" is not an http(s) URL', NEW.callback_url, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_callback_url_is_http',
                  HINT = 'Give an absolute http:// or https:// URL, like https://example.com/hooks.';
    END IF;
    IF NEW.calendar !~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$' THEN
        RAISE EXCEPTION 'calendar "%" of tenant "%" is not a holiday calendar code', NEW.calendar, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_calendar_format',
                  HINT = 'A country code such as IN or GB, or a subdivision such as US-CA (the holidays package''s codes).';
    END IF;
    RETURN NEW;
END
$$;

-- A tenant's own day off names a tenant that exists (as reminderd tenant set says it: "unknown
-- tenant"), and has a name.
CREATE FUNCTION reminderd.validate_holiday() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenant_holidays_tenant_id_fkey',
                  HINT = 'Create it first (reminderd tenant add), and check this role acts for it.';
    END IF;
    IF NEW.name = '' THEN
        RAISE EXCEPTION 'the holiday % of tenant "%" has an empty name', NEW.day, NEW.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holiday_name_not_empty',
                  HINT = 'Say what the day is, e.g. ''Company day''.';
    END IF;
    RETURN NEW;
END
$$;

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

-- New rows of a paused tenant are held too, and so are rows that would become pending again
-- while it is paused.
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

-- Wake the daemons when a statement makes a row due within 10 minutes (their poll interval is at
-- most that), or adds a cron row for them to plan. One notification per statement, not per row.
CREATE FUNCTION reminderd.notify_due_soon() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest  timestamptz;
    unplanned boolean;
BEGIN
    SELECT min(fire_at), bool_or(fire_at IS NULL) INTO earliest, unplanned
    FROM changed_rows WHERE status = 'pending';
    IF unplanned THEN
        PERFORM pg_notify('reminderd_due', 'plan');
    ELSIF earliest < clock_timestamp() + interval '10 minutes' THEN
        PERFORM pg_notify('reminderd_due', extract(epoch FROM earliest)::text);
    END IF;
    RETURN NULL;
END
$$;

-- The audit trail: one INSERT per statement, not per row, so the daemon's batches stay batches.
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

-- Who may call what: nobody but the grants below (functions get PUBLIC EXECUTE by default).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reminderd FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.is_timezone(text),
    reminderd.check_tenant(text),
    reminderd.check_fire_at(timestamptz),
    reminderd.duration_text(interval),
    reminderd.check_arrival(text, text, timestamptz, text, interval),
    reminderd.first_occurrence(text, text, text, timestamptz),
    reminderd.local_instant(timestamp, text),
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz),
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
    reminderd.validate_message(),
    reminderd.refuse_dead_on_arrival(),
    reminderd.validate_tenant(),
    reminderd.validate_holiday(),
    reminderd.check_payload(),
    reminderd.hold_for_paused_tenant(),
    reminderd.notify_due_soon(),
    reminderd.audit_insert(),
    reminderd.audit_update()
TO reminderd_app, reminderd_daemon;
-- Operator actions, reminderd_daemon's alone (an application role gets 42501 permission denied).
GRANT EXECUTE ON FUNCTION
    reminderd.pause_tenant(text),
    reminderd.resume_tenant(text),
    reminderd.rotate_secret(text, interval),
    reminderd.generate_secret(),
    reminderd.prune(interval, interval, interval, integer)
TO reminderd_daemon;

-- Triggers on scheduled_messages ------------------------------------------------------------------
-- Triggers on the same event fire in the order of their names.

-- Before each row is written: refuse it if it is dead on arrival (only rows already due at insert
-- can be: the WHEN clause spares every other row the function call), hold it for a paused tenant,
-- check its payload size, validate it.
CREATE TRIGGER scheduled_messages_arrival
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.fire_at <= now() OR NEW.until <= now())
    EXECUTE FUNCTION reminderd.refuse_dead_on_arrival();
CREATE TRIGGER scheduled_messages_hold_paused_tenant
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.hold_for_paused_tenant();
-- A retry of a message that was in flight when the tenant was paused, or a message resumed on
-- its own, would become pending again: held too.
CREATE TRIGGER scheduled_messages_hold_paused_tenant_update
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')
    EXECUTE FUNCTION reminderd.hold_for_paused_tenant();
CREATE TRIGGER scheduled_messages_payload_size
    BEFORE INSERT OR UPDATE OF payload ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.check_payload();
CREATE TRIGGER scheduled_messages_validate
    BEFORE INSERT OR UPDATE OF timezone, callback_url, tenant_id, rrule, cron ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_message();

-- After each statement: the audit trail, then the wake-up for the daemons.
CREATE TRIGGER scheduled_messages_audit_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.audit_insert();
CREATE TRIGGER scheduled_messages_audit_update
    AFTER UPDATE ON reminderd.scheduled_messages
    REFERENCING OLD TABLE AS previous_rows NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.audit_update();
CREATE TRIGGER scheduled_messages_notify_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.notify_due_soon();
CREATE TRIGGER scheduled_messages_notify_update
    AFTER UPDATE ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.notify_due_soon();

-- Triggers on tenants and tenant_holidays ---------------------------------------------------------
-- A tenant and a tenant's day off are checked with sentences before their constraints are.
CREATE TRIGGER tenants_validate
    BEFORE INSERT OR UPDATE OF id, callback_url, calendar ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_tenant();
CREATE TRIGGER tenant_holidays_validate
    BEFORE INSERT OR UPDATE OF tenant_id, name ON reminderd.tenant_holidays
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_holiday();

-- Views for DBAs ----------------------------------------------------------------------------------
-- They run with the reader's rights (security_invoker), so each role sees what its policies allow.

-- Live messages and dead letters per tenant and status (finished history is not counted here:
-- SELECT status, count(*) … GROUP BY 1 does that, at the price of reading the whole table).
CREATE VIEW reminderd.queue_overview WITH (security_invoker = true) AS
SELECT tenant_id, status, count(*) AS messages,
       min(fire_at) FILTER (WHERE fire_at <= now()) AS oldest_due,
       min(fire_at) FILTER (WHERE fire_at > now()) AS next_due
FROM reminderd.scheduled_messages
WHERE status IN ('pending', 'picked', 'paused', 'dead')
GROUP BY tenant_id, status;

CREATE VIEW reminderd.due_now WITH (security_invoker = true) AS
SELECT id, tenant_id, ref_id, fire_at, now() - fire_at AS late_by, attempts, last_error
FROM reminderd.scheduled_messages
WHERE status = 'pending' AND fire_at <= now();

CREATE VIEW reminderd.stuck WITH (security_invoker = true) AS
SELECT id, tenant_id, ref_id, picked_at, lease_expires_at, now() - lease_expires_at AS overdue_by, attempts
FROM reminderd.scheduled_messages
WHERE status = 'picked' AND lease_expires_at < now();

CREATE VIEW reminderd.dead_letters WITH (security_invoker = true) AS
SELECT id, tenant_id, ref_id, coalesce(scheduled_for, fire_at) AS scheduled_for, attempts, last_error,
       updated_at AS dead_since
FROM reminderd.scheduled_messages
WHERE status = 'dead';

CREATE VIEW reminderd.upcoming_by_hour WITH (security_invoker = true) AS
SELECT tenant_id, date_trunc('hour', fire_at) AS hour, count(*) AS messages
FROM reminderd.scheduled_messages
WHERE status = 'pending' AND fire_at >= date_trunc('hour', now()) AND fire_at < now() + interval '48 hours'
GROUP BY tenant_id, date_trunc('hour', fire_at);

CREATE VIEW reminderd.recent_deliveries WITH (security_invoker = true) AS
SELECT d.id, d.created_at, d.message_id, d.tenant_id, m.ref_id, d.webhook_id, d.attempt, d.scheduled_for,
       d.status_code, d.error, d.duration_ms,
       CASE WHEN d.status_code BETWEEN 200 AND 299 THEN 'delivered' ELSE 'failed' END AS outcome
FROM (SELECT * FROM reminderd.deliveries ORDER BY id DESC LIMIT 1000) d
LEFT JOIN reminderd.scheduled_messages m ON m.id = d.message_id
ORDER BY d.id DESC;

GRANT SELECT ON reminderd.queue_overview, reminderd.due_now, reminderd.stuck, reminderd.dead_letters,
    reminderd.upcoming_by_hour, reminderd.recent_deliveries TO reminderd_readonly, reminderd_app, reminderd_daemon;

-- Fair and bounded sending ------------------------------------------------------------------------
-- (migration 0010) The claim's fairness and limits (queries.sql, claim), frequency caps, the
-- health of tenants' endpoints, usage metering. docs/sql.md, "Fair and bounded sending".


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
