-- The reminderd schema as it stands after the last migration (0021), in one file, for reading.
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
-- reminderd_readonly, reminderd_daemon and reminderd_api may read it). To install or upgrade reminderd, run
-- `reminderd migrate`, not this file.
--
-- Contents: schema · tables (tenants and messages; reference data; contacts, audiences and
-- broadcasts) · indexes · types (the daemon's batches) · roles, row-level security and table
-- privileges · functions (the SQL API, its helpers, the trigger functions; contacts and
-- broadcasts) · triggers · views for DBAs.

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
-- what is not an http(s) URL, and for what reminderd.endpoints would refuse as an endpoint
-- (endpoint_format below: a port of six digits, a space in the host), which only a row written
-- before migration 0019 checked callback URLs can have: the claim passes such a row on to the
-- daemon, which refuses it (reminderd.callback_url_problem's words), instead of failing whole.
CREATE FUNCTION reminderd.endpoint_of(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    part     text[] := regexp_match(url, '^(https?)://(?:[^/?#@]*@)?(\[[^]/?#]*\]|[^:/?#]+)(?::([0-9]+))?', 'i');
    endpoint text;
BEGIN
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    endpoint := lower(part[2]) || ':'
                || coalesce(part[3], CASE lower(part[1]) WHEN 'http' THEN '80' WHEN 'https' THEN '443' END);
    IF endpoint ~ '^[^:/?#[:space:]]+:[0-9]{1,5}$' OR endpoint ~ '^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$' THEN
        RETURN endpoint;
    END IF;
    RETURN NULL;
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
    -- How many API requests per second each of the tenant's keys may make (reminderd serve).
    api_rate_limit             integer CONSTRAINT api_rate_limit_positive CHECK (api_rate_limit > 0),
    -- Audiences (docs/audiences.md): the default zone of contacts that have none (required for
    -- tenants that use contacts), the most contacts one broadcast may reach, and the size above
    -- which a broadcast waits for a second person's approval.
    timezone                   text,
    broadcast_limit            integer CONSTRAINT broadcast_limit_positive CHECK (broadcast_limit > 0),
    approval_threshold         integer CONSTRAINT approval_threshold_not_negative CHECK (approval_threshold >= 0),
    -- Sending limits (see "Fair and bounded sending" below): over them rows wait, in order.
    max_per_second             integer CONSTRAINT max_per_second_positive CHECK (max_per_second > 0),
    max_per_hour               integer CONSTRAINT max_per_hour_positive CHECK (max_per_hour > 0),
    -- Over a frequency cap: defer the message until the cap allows it, or skip it.
    frequency_cap_policy       text NOT NULL DEFAULT 'defer'
                               CONSTRAINT frequency_cap_policy_is_known CHECK (frequency_cap_policy IN ('defer', 'skip')),
    -- host:port of callback_url, for the claim (computed once, on write).
    callback_endpoint          text GENERATED ALWAYS AS (reminderd.endpoint_of(callback_url)) STORED,
    -- A second rotated-out secret (migration 0035): the one previous_signing_secret held when the
    -- tenant was rotated again within its grace; it signs too until it expires (rotate_secret).
    earlier_signing_secret     text,
    earlier_secret_expires_at  timestamptz
);
COMMENT ON COLUMN reminderd.tenants.api_rate_limit IS
    'Requests per second each API key of the tenant may make (per reminderd serve process); '
    'NULL takes REMINDERD_API_RATE_LIMIT.';

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
    -- The recipient's: cron, RRULE and quiet hours read it. Left out, it is 'Etc/Universal' (UTC by
    -- another name, which no writer gives: migration 0032), which admit_message replaces with the
    -- contact's zone for a row naming one, else with 'UTC' (a row written with triggers off keeps UTC).
    timezone         text NOT NULL DEFAULT 'Etc/Universal',
    status           text NOT NULL DEFAULT 'pending' CONSTRAINT status_is_known CHECK (
                         status IN ('pending', 'picked', 'sent', 'dead', 'cancelled', 'paused', 'expired', 'finished',
                                    'awaiting_approval')),
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
                         -- (no {0,31} in the regex: every UPDATE evaluates it, and bounded repetition is slow)
                         CONSTRAINT category_format CHECK (category ~ '^[a-z][a-z0-9_-]*$' AND char_length(category) <= 32),
    -- Holidays: NULL takes the tenant's calendar; holiday_rule NULL takes the tenant's too.
    calendar         text CONSTRAINT calendar_format CHECK (calendar ~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$'),
    holiday_rule     text CONSTRAINT holiday_rule_is_known CHECK (holiday_rule IN ('skip', 'send')),
    -- After an outage: send (if at most max_lateness late), latest (only the most recent missed
    -- occurrence), skip (nothing late). NULL takes REMINDERD_BACKFILL / REMINDERD_MAX_LATENESS.
    backfill         text CONSTRAINT backfill_is_known CHECK (backfill IN ('send', 'latest', 'skip')),
    max_lateness     interval CONSTRAINT max_lateness_not_negative CHECK (max_lateness >= interval '0'),
    -- An extra occurrence of a recurring row sent now (send_now) is a one-off row of the same ref
    -- naming its schedule here. No foreign key: pruning a finished schedule must not scan for its
    -- extras, and the extra's own history stands on its own.
    extra_of         bigint,
    -- The attempt whose outcome last moved the row (reminderd.deliveries.id): that row records the
    -- change, so the audit trigger does not repeat it in events. Set by the daemon only.
    last_delivery_id bigint,
    -- The daemon that claimed the row last: while picked, the one holding it (reminderd.daemons.id).
    -- No foreign key: a dead daemon's row is deleted once its rows are rescued. Rescue and
    -- reconciliation read picked rows through scheduled_messages_leases (all picked rows, a small
    -- set), so it needs no index of its own.
    picked_by        uuid,
    -- Audiences: the contact a message is for, where its zone came from, the wall time a one-off
    -- was asked for (kept so it can be placed again when that zone changes), and its broadcast.
    contact_id       text,
    timezone_source  text NOT NULL DEFAULT 'message'
                         CONSTRAINT timezone_source_is_known CHECK (
                             timezone_source IN ('message', 'contact', 'phone', 'country', 'tenant')),
    local_time       timestamp,
    -- No foreign key: history outlives its broadcast's request. A row written with one names a
    -- broadcast of its own tenant (count_inserts, check_broadcast_of_row; migration 0023).
    broadcast_id     bigint,
    CONSTRAINT zone_from_contact_needs_contact CHECK (timezone_source = 'message' OR contact_id IS NOT NULL),
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
    '(until passed, max_runs reached, RRULE exhausted); also cancelled, paused, expired (missed), '
    'awaiting_approval (a big broadcast waiting for a second person).';
COMMENT ON COLUMN reminderd.scheduled_messages.timezone_source IS
    'Why the row has its timezone: message (the message named it), or, for a message naming a '
    'contact, contact (its timezone field), phone (its number), country, tenant (the default).';
COMMENT ON COLUMN reminderd.scheduled_messages.priority IS
    'From the category: 0 transactional, 1 any other, 2 marketing. Within its tenant''s share of a '
    'claim a row of a lower number goes first, then the oldest fire_at.';
COMMENT ON COLUMN reminderd.scheduled_messages.scheduled_for IS
    'The occurrence being retried or redelivered; NULL when fire_at is the occurrence itself. '
    'The webhook-id derives from it, so every retry of one occurrence carries the same id.';
COMMENT ON COLUMN reminderd.scheduled_messages.extra_of IS
    'Set on an extra occurrence sent now (reminderd.send_now): the id of the recurring row it is an '
    'extra occurrence of. Such a row does not count as the ref''s live row.';
COMMENT ON COLUMN reminderd.scheduled_messages.last_delivery_id IS
    'The reminderd.deliveries row of the attempt that last moved this row; that row records the '
    'change, so reminderd.events does not repeat it. Set by the daemon only.';
COMMENT ON COLUMN reminderd.scheduled_messages.picked_by IS
    'The daemon (reminderd.daemons.id) that claimed the row last; while picked, the one holding it.';

-- One row per HTTP attempt: its answer (or the error), how long it took, and the change it made to
-- its message (event, status and fire_at after it, reason; NULL when it made none: the row was no
-- longer its claim's). Part of the audit trail with events (see the view trail): no foreign key, it
-- outlives its message and is pruned by age. deliveries and events are append-only: autovacuum
-- runs on them for visibility (index-only scans), not space.
CREATE TABLE reminderd.deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    bigint NOT NULL,
    tenant_id     text NOT NULL,
    webhook_id    text NOT NULL,
    attempt       integer NOT NULL,
    scheduled_for timestamptz NOT NULL,
    status_code   integer,                 -- NULL when no HTTP answer came back
    error         text,
    duration_ms   integer NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    ref_id        text NOT NULL,
    event         text,                    -- fired, retry_scheduled, dead_lettered (NULL: no change)
    status        text,                    -- the message's status after the attempt
    fire_at       timestamptz,             -- its fire_at after the attempt
    reason        text,
    actor         name DEFAULT current_user  -- the daemon's role (NULL for attempts before 0007)
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
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Who the role acted for: the API key of a dashboard or API action. A column default, not a
    -- trigger: every insert path (the audit triggers, send_now's own insert) fills it at no cost,
    -- from the transaction's setting (SELECT set_config('reminderd.on_behalf_of', '…', true)). It
    -- is what the role says; actor, the role itself, stays the one nobody can forge.
    on_behalf_of text DEFAULT nullif(current_setting('reminderd.on_behalf_of', true), '')
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
COMMENT ON COLUMN reminderd.events.on_behalf_of IS
    'Who the role (actor) acted for, as it said in the setting reminderd.on_behalf_of: reminderd serve '
    'sets the API key''s prefix and name (dashboard and API actions). NULL: the role acted for itself.';

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

-- API keys of `reminderd serve`: rk_<12 visible characters>_<43 secret characters>, stored as the
-- SHA-256 of the whole key; the prefix finds the row, the hash is compared in constant time by
-- the server. A key with no tenant is an operator's (all tenants: the dashboard). Only
-- reminderd_api reads this table (no row-level security: no application role may read it at all).
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
COMMENT ON TABLE reminderd.api_keys IS
    'API keys of reminderd serve: a SHA-256 of each key, never the key. tenant_id NULL: an operator key.';

-- Dashboard sessions signed out before they expired, by the session's nonce (reminderd/sessions.py:
-- 16 random bytes in base64url, in the signed cookie), migration 0020: POST /dashboard/logout writes
-- the row, every dashboard request reads it with the session's key (sql/dashboard.sql
-- dashboard_session_key), so a copy of a signed-out cookie is no session; the key's other
-- sessions go on. expires_at is when the session would have expired anyway (issued + 12 hours);
-- past it the cookie is refused whatever this table says, so each sign-out deletes rows an hour
-- past their expires_at (at most 100 a time, the hour a margin for the servers' clocks against the
-- database's): the table holds about the last 13 hours' sign-outs and needs no housekeeping.
CREATE TABLE reminderd.dashboard_signouts (
    nonce         text PRIMARY KEY CONSTRAINT dashboard_signout_nonce_format CHECK (nonce ~ '^[A-Za-z0-9_-]{22}$'),
    key_id        bigint NOT NULL REFERENCES reminderd.api_keys (id) ON DELETE CASCADE,
    signed_out_at timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
COMMENT ON TABLE reminderd.dashboard_signouts IS
    'Dashboard sessions signed out (by nonce) before they expire; each sign-out deletes rows past expires_at: no housekeeping.';

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

-- One row per running daemon: registered at start, its heartbeat_at refreshed every
-- REMINDERD_HEARTBEAT seconds, stopping set on SIGTERM, deleted on a clean exit. A row whose
-- heartbeat is older than its REMINDERD_DEAD_AFTER is a dead daemon: another daemon's housekeeping
-- returns its picked rows to pending ('rescued') and deletes the row.
CREATE TABLE reminderd.daemons (
    id            uuid PRIMARY KEY,           -- chosen by the daemon at start (random)
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopping      boolean NOT NULL DEFAULT false,
    -- Its effective settings, secrets masked, keyed like the TOML file (heartbeat, dead_after, …).
    settings      jsonb NOT NULL DEFAULT '{}',
    last_claim_at timestamptz                 -- its last claim that got rows (the database's time)
);
COMMENT ON TABLE reminderd.daemons IS
    'Running daemons and their heartbeats; a row silent beyond its dead_after is a dead daemon.';

-- Reference data: loaded by `reminderd migrate` from the installed phonenumbers and tzdata
-- (reminderd/phones.py), reloaded when their versions change. Read by everyone, written by the owner.
CREATE TABLE reminderd.reference_versions (
    source    text PRIMARY KEY,
    version   text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);

-- One row per country calling code: how the digits after "+<code>" are read.
CREATE TABLE reminderd.phone_plans (
    country_code           integer PRIMARY KEY,
    main_region            text NOT NULL,
    regions                integer NOT NULL,  -- regions sharing the code (+1: US, CA, JM, …)
    national_prefix        text,              -- a national prefix written after the code (a pattern)
    national_prefix_groups integer NOT NULL,  -- capture groups of that pattern
    national_prefix_rule   text,              -- how a matched prefix is rewritten (\1 …)
    viable                 text,              -- the main region's general pattern, anchored
    lengths                integer[] NOT NULL,
    local_lengths          integer[] NOT NULL,
    geographic_mobile      boolean NOT NULL,  -- mobile numbers are tied to a place (MX, AR, BR, ID, CN)
    longest_prefix         integer NOT NULL,  -- of its rows in phone_prefixes
    first_region_has_leading_digits boolean NOT NULL,
    country_timezone       text               -- the one zone of its numbers not tied to a place, if one
);

-- The regions sharing a calling code, in phonenumbers' order.
CREATE TABLE reminderd.phone_regions (
    country_code       integer NOT NULL,
    position           integer NOT NULL,
    region             text NOT NULL,
    has_leading_digits boolean NOT NULL,  -- its numbers are told apart by how they start
    PRIMARY KEY (country_code, position)
);

-- Each region's number patterns as prefixes (reminderd/prefixes.py): a number's row is the longest
-- prefix of it in its region; masks[its length] says which kinds accept it (1 valid at all, 2
-- premium, toll-free or another kind tied to no place, 4 fixed line, 8 mobile), 0 or no row:
-- invalid; timezone is the one zone of a place-bound number there, if one. Rows with
-- leading_digits are the prefixes the region's numbers start with instead. Prefixes sort
-- bytewise (C), so the row of a number is the last one not after it.
CREATE TABLE reminderd.phone_prefixes (
    country_code   integer NOT NULL,
    position       integer NOT NULL,
    leading_digits boolean NOT NULL,
    prefix         text COLLATE "C" NOT NULL,
    masks          smallint[],
    timezone       text,
    PRIMARY KEY (country_code, position, leading_digits, prefix)
);
-- For numbers of a code shared by several regions: every row of the code a number starts with.
CREATE INDEX phone_prefixes_any_region ON reminderd.phone_prefixes (country_code, prefix);

-- phonenumbers' prefix → timezones map (the E.164 digits without "+"), searched by longest prefix.
CREATE TABLE reminderd.phone_timezones (
    prefix    text PRIMARY KEY,
    timezones text[] NOT NULL
);

-- ISO 3166 countries; timezone set where all of the country's zones keep the same time from now on.
CREATE TABLE reminderd.countries (
    country  text PRIMARY KEY,
    name     text NOT NULL,
    timezone text
);

-- The holiday calendars the installed `holidays` package knows (migration 0035): every country
-- code and country-subdivision code the daemon reads a `calendar` as (IN, GB, US-CA), loaded by
-- `reminderd migrate` with the other reference data and reloaded when the package's version
-- changes (its version is reference_versions' 'holidays'). A message, broadcast or tenant naming
-- a calendar not listed here is refused (check_calendar_known); while the table is empty (never
-- loaded) any calendar of the right shape is accepted and the daemon checks it.
CREATE TABLE reminderd.holiday_calendars (
    code        text PRIMARY KEY,  -- as a calendar column writes it: IN, US-CA
    country     text NOT NULL,     -- IN, US
    subdivision text               -- CA; NULL for the country's own
);
COMMENT ON TABLE reminderd.holiday_calendars IS
    'The holiday calendar codes the installed holidays package knows; loaded by reminderd migrate.';

-- A tenant's contacts. The database resolves each contact's zone from its timezone, phone and
-- country (in that order) into resolved_timezone and timezone_source; NULL means the tenant's.
CREATE TABLE reminderd.contacts (
    tenant_id         text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    contact_id        text NOT NULL
                      -- "*" and a length, not "{0,127}": the same rule, which PostgreSQL's regular
                      -- expressions check eight times as fast (migration 0016)
                      CONSTRAINT contact_id_format CHECK (contact_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$'
                                                          AND length(contact_id) <= 128),
    timezone          text,
    phone             text CONSTRAINT phone_length CHECK (length(phone) <= 250),
    country           text CONSTRAINT contact_country_format CHECK (country ~ '^[A-Z]{2}$'),
    attributes        jsonb NOT NULL DEFAULT '{}'
                      CONSTRAINT attributes_is_object CHECK (jsonb_typeof(attributes) = 'object'),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    resolved_timezone text,
    timezone_source   text CONSTRAINT contact_timezone_source_is_known CHECK (
                          timezone_source IN ('contact', 'phone', 'country')),
    PRIMARY KEY (tenant_id, contact_id),
    CONSTRAINT resolved_with_source CHECK ((resolved_timezone IS NULL) = (timezone_source IS NULL))
);

-- Named lists of contacts.
CREATE TABLE reminderd.audiences (
    tenant_id  text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    name       text NOT NULL CONSTRAINT audience_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE reminderd.audience_members (
    tenant_id  text NOT NULL,
    audience   text NOT NULL,
    contact_id text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, audience, contact_id),
    FOREIGN KEY (tenant_id, audience) REFERENCES reminderd.audiences (tenant_id, name) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, contact_id) REFERENCES reminderd.contacts (tenant_id, contact_id) ON DELETE CASCADE
);
CREATE INDEX audience_members_contact ON reminderd.audience_members (tenant_id, contact_id);

-- What a broadcast asked for, and its approval. A one-off has local_time; a recurring one cron or
-- rrule, each occurrence staged by the daemon (reminderd/housekeeping.py) stage_ahead before the
-- earliest zone's instant, to the audience as it stands then.
CREATE TABLE reminderd.broadcast_requests (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    ref_prefix      text NOT NULL CONSTRAINT ref_prefix_format CHECK (ref_prefix ~ '^[^%#[:space:]]{1,100}$'),
    audience        text,          -- a named list, or
    contact_ids     text[],        -- these contacts, or
    everyone        boolean NOT NULL DEFAULT false,  -- every contact of the tenant
    local_time      timestamp,
    cron            text,
    rrule           text,
    until           timestamptz,
    payload         jsonb NOT NULL DEFAULT '{}',
    callback_url    text CONSTRAINT broadcast_callback_url_is_http CHECK (callback_url ~* '^https?://[^/?#[:space:]]+'),
    category        text NOT NULL DEFAULT 'marketing'
                    CONSTRAINT broadcast_category_format CHECK (category ~ '^[a-z][a-z0-9_-]{0,31}$'),
    calendar        text,
    holiday_rule    text,
    backfill        text,
    max_lateness    interval,
    max_attempts    integer,
    notify          boolean NOT NULL DEFAULT false,  -- a broadcast.completed callback when done
    stage_ahead     interval NOT NULL DEFAULT '1 hour'
                    CONSTRAINT stage_ahead_positive CHECK (stage_ahead > interval '0'),
    approval        text NOT NULL DEFAULT 'not_needed'
                    -- 'cancelled' (migration 0034): cancelled while it awaited approval.
                    CONSTRAINT approval_is_known
                    CHECK (approval IN ('not_needed', 'awaiting', 'approved', 'rejected', 'cancelled')),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    decided_by      text,
    decided_at      timestamptz,
    decision_note   text,
    next_occurrence timestamp,     -- recurring: the next wall time to stage (NULL: not planned yet)
    ended_at        timestamptz,   -- nothing more to stage: a one-off once staged, a recurring one ended
    ended_reason    text,
    last_error      text,          -- why an occurrence of a recurring broadcast was not staged
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- (migration 0028) How many contacts the approval covered: the largest wave awaiting it when it
    -- was given (none staged yet: the audience then). A recurring wave larger than this and the
    -- tenant's approval_threshold awaits approval again.
    approved_contacts bigint,
    CONSTRAINT one_audience CHECK (num_nonnulls(audience, contact_ids) + everyone::integer = 1),
    CONSTRAINT one_when CHECK (num_nonnulls(local_time, cron, rrule) = 1)
);
CREATE INDEX broadcast_requests_tenant_prefix ON reminderd.broadcast_requests (tenant_id, ref_prefix);
CREATE INDEX broadcast_requests_recurring ON reminderd.broadcast_requests (id)
    WHERE ended_at IS NULL AND local_time IS NULL;
-- A tenant's broadcasts newest first (the dashboard's broadcasts page), and those waiting for
-- approval (its overview's call to action), migration 0015.
-- Unique (migration 0023): the key the occurrences' foreign key names, so an occurrence is of a
-- broadcast of its own tenant.
ALTER TABLE reminderd.broadcast_requests ADD CONSTRAINT broadcast_requests_tenant UNIQUE (tenant_id, id);
CREATE INDEX broadcast_requests_awaiting ON reminderd.broadcast_requests (tenant_id, id)
    WHERE approval = 'awaiting';

-- One row per staged occurrence (a one-off broadcast has one), of a broadcast of its own tenant
-- (migration 0023: the foreign key names both).
CREATE TABLE reminderd.broadcast_occurrences (
    broadcast_id          bigint NOT NULL,
    occurrence            timestamp NOT NULL,  -- the wall time, read in each contact's zone
    tenant_id             text NOT NULL,
    contacts              integer NOT NULL,
    first_fire_at         timestamptz,
    last_fire_at          timestamptz,
    staged_at             timestamptz NOT NULL DEFAULT now(),
    completed_at          timestamptz,
    completion_message_id bigint,
    PRIMARY KEY (broadcast_id, occurrence),
    CONSTRAINT broadcast_occurrences_broadcast_fkey FOREIGN KEY (tenant_id, broadcast_id)
        REFERENCES reminderd.broadcast_requests (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX broadcast_occurrences_open ON reminderd.broadcast_occurrences (broadcast_id)
    WHERE completed_at IS NULL;

-- Progress, kept without a scan: each statement that changes broadcast rows appends one row per
-- occurrence with how many rows entered and left each state (triggers below); the daemon folds
-- them into one row per occurrence now and then. A state's count is the sum of its column. Only
-- the daemon and the triggers (as the owner) write here (migration 0023); every read joins on the
-- tenant too.
CREATE TABLE reminderd.broadcast_counts (
    broadcast_id bigint NOT NULL,
    occurrence   timestamp NOT NULL,
    tenant_id    text NOT NULL,
    waiting      integer NOT NULL DEFAULT 0,  -- pending or being sent
    held         integer NOT NULL DEFAULT 0,  -- paused, awaiting approval, deferred (quiet hours, holiday)
    sent         integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,  -- dead
    expired      integer NOT NULL DEFAULT 0,
    cancelled    integer NOT NULL DEFAULT 0
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX broadcast_counts_occurrence ON reminderd.broadcast_counts (broadcast_id, occurrence);

-- The dashboard's aggregates, kept by the triggers events_count_fires and deliveries_count_fires
-- as the trail (events, and the attempts in deliveries) is written: its overview reads a few thousand of these
-- rows, whatever the traffic, instead of the history. Per tenant and minute, and per tenant and
-- hour (UTC): "the last hour" is the current minute and the 59 before it, "the last 24 hours" the
-- current hour and the 23 before it. Pruned by the daemon (prune_counts: minutes after 3 hours,
-- hours after 8 days).

-- Fires, counted from the trail: an attempt's change is on its deliveries row (migration 0007), every
-- other fire is an event.
CREATE TABLE reminderd.fire_counts (
    period    text NOT NULL CONSTRAINT fire_counts_period_is_known CHECK (period IN ('minute', 'hour')),
    starts_at timestamptz NOT NULL,
    tenant_id text NOT NULL,
    delivered integer NOT NULL DEFAULT 0,  -- fired
    retried   integer NOT NULL DEFAULT 0,  -- retry_scheduled
    dead      integer NOT NULL DEFAULT 0,  -- dead_lettered
    expired   integer NOT NULL DEFAULT 0,  -- expired, missed_skipped: too late to send
    held      integer NOT NULL DEFAULT 0,  -- deferred (quiet hours), holiday_skipped (moved off a holiday)
    PRIMARY KEY (period, starts_at, tenant_id)
);
COMMENT ON TABLE reminderd.fire_counts IS
    'Fires per tenant and minute or hour (UTC), kept by the triggers events_count_fires and '
    'deliveries_count_fires: the dashboard''s rates.';

-- Delivered attempts by lateness (delivery time minus scheduled time, retries included:
-- reminderd_fire_lateness_seconds' definition), counted from deliveries. bucket n holds
-- [bound n, bound n+1) of lateness_bounds_ms(), bucket 0 anything under its first bound.
CREATE TABLE reminderd.lateness_counts (
    period    text NOT NULL CONSTRAINT lateness_counts_period_is_known CHECK (period IN ('minute', 'hour')),
    starts_at timestamptz NOT NULL,
    tenant_id text NOT NULL,
    bucket    smallint NOT NULL,
    delivered integer NOT NULL,
    PRIMARY KEY (period, starts_at, tenant_id, bucket)
);
COMMENT ON TABLE reminderd.lateness_counts IS
    'Delivered attempts per tenant, minute or hour (UTC) and lateness bucket (lateness_bounds_ms()), '
    'kept by the trigger deliveries_count_fires: the dashboard''s lateness percentiles.';

-- Indexes -----------------------------------------------------------------------------------------
-- Most rows are future-dated or finished history, so the hot paths read partial indexes.

-- The claim reads only due pending rows.
CREATE INDEX scheduled_messages_due ON reminderd.scheduled_messages (fire_at) WHERE status = 'pending';
-- Leases to reap after a daemon died.
CREATE INDEX scheduled_messages_leases ON reminderd.scheduled_messages (lease_expires_at)
    WHERE status = 'picked';
-- At most one live row per reference: scheduling again replaces, it never adds a second send. An
-- extra occurrence sent now does not count; at most one of those is live per schedule.
CREATE UNIQUE INDEX scheduled_messages_live_ref ON reminderd.scheduled_messages (tenant_id, ref_id)
    WHERE status IN ('pending', 'picked', 'paused', 'awaiting_approval') AND extra_of IS NULL;
CREATE UNIQUE INDEX scheduled_messages_live_extra ON reminderd.scheduled_messages (extra_of)
    WHERE status IN ('pending', 'picked', 'paused') AND extra_of IS NOT NULL;
-- A tenant's messages by ref (equality, and prefixes through the ~>=~ ~<~ operators, whatever the
-- database's collation), newest first within a ref. schedule() finds the message an identical
-- call created through it (sent rows included, which the index of live refs leaves out).
CREATE INDEX scheduled_messages_tenant_ref
    ON reminderd.scheduled_messages (tenant_id, ref_id text_pattern_ops, id);
-- A tenant's messages in one status, newest first: GET /v1/messages pages through it.
CREATE INDEX scheduled_messages_tenant_status ON reminderd.scheduled_messages (tenant_id, status, id);
-- A contact's messages (contact_messages, re-planning when its zone changes).
CREATE INDEX scheduled_messages_contact ON reminderd.scheduled_messages (tenant_id, contact_id, id)
    WHERE contact_id IS NOT NULL;
-- A broadcast's rows by status (approval, rejection, cancelling).
CREATE INDEX scheduled_messages_broadcast ON reminderd.scheduled_messages (broadcast_id, status)
    WHERE broadcast_id IS NOT NULL;
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

-- A message's attempts newest first, bounded even for a recurring row (whose attempt numbers
-- restart with each occurrence): the dashboard's message page, record_outcomes' once-only check.
CREATE INDEX deliveries_message ON reminderd.deliveries (message_id, id);
CREATE INDEX deliveries_tenant_ref ON reminderd.deliveries (tenant_id, ref_id, id);
CREATE INDEX deliveries_created ON reminderd.deliveries (created_at);
-- The attempts that changed their message (fired, retry_scheduled, dead_lettered: fires, as the
-- events below): the dashboard's live feed reads the last 1,000 of them, of all tenants or of one.
CREATE INDEX deliveries_fires ON reminderd.deliveries (id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');
CREATE INDEX deliveries_tenant_fires ON reminderd.deliveries (tenant_id, id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');

CREATE INDEX events_message ON reminderd.events (message_id, id);
CREATE INDEX events_tenant_ref ON reminderd.events (tenant_id, ref_id, id);
CREATE INDEX events_created ON reminderd.events (created_at);
-- The fires (the events the daemon records when it holds back an occurrence, and the attempts
-- logged before migration 0007): the dashboard's live feed reads the last 1,000 of them.
CREATE INDEX events_fires ON reminderd.events (id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');
CREATE INDEX events_tenant_fires ON reminderd.events (tenant_id, id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');

CREATE UNIQUE INDEX api_keys_prefix ON reminderd.api_keys (prefix);
CREATE INDEX api_keys_tenant ON reminderd.api_keys (tenant_id);
-- The sign-outs past their session's expiry, which each sign-out deletes.
CREATE INDEX dashboard_signouts_expires ON reminderd.dashboard_signouts (expires_at);
CREATE INDEX idempotency_keys_created ON reminderd.idempotency_keys (created_at);

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

-- What POST /v1/messages and /v1/messages/batch pass (reminderd.schedule_many): one item to
-- schedule, as reminderd.schedule() or reminderd.schedule_recurring() take it.
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

-- What POST /v1/messages and /v1/messages/batch pass since 0014 (reminderd.schedule_many): one
-- item to schedule, as reminderd.schedule() or reminderd.schedule_recurring() take it. Version 1
-- stays, for servers of the previous release during a rolling upgrade.
CREATE TYPE reminderd.schedule_item_v2 AS (
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
    first_fire_at timestamptz,
    -- the contact it is for: without a timezone, the message is read in the contact's zone
    contact_id   text
);
COMMENT ON TYPE reminderd.schedule_item_v2 IS 'One message to schedule in a batch (reminderd.schedule_many), perhaps for a contact.';

-- What reminderd.schedule_set() says of one item: its position in the batch (from 1), its
-- message, and what happened, in schedule_item()'s words (created, replaced or unchanged).
CREATE TYPE reminderd.item_scheduled_v1 AS (
    item       integer,
    message_id bigint,
    result     text,
    status     text,
    fire_at    timestamptz
);
COMMENT ON TYPE reminderd.item_scheduled_v1 IS 'One item scheduled by reminderd.schedule_set().';

-- One contact to add or change. A field whose has_… is false was not given: the contact keeps
-- its value (a new contact has none); given as NULL, it is cleared. Attributes are replaced whole.
CREATE TYPE reminderd.contact_v1 AS (
    contact_id     text,
    timezone       text,
    phone          text,
    country        text,
    attributes     jsonb,
    has_timezone   boolean,
    has_phone      boolean,
    has_country    boolean,
    has_attributes boolean
);
COMMENT ON TYPE reminderd.contact_v1 IS 'One contact to add or change (reminderd.upsert_contact_rows).';

-- Roles, row-level security and table privileges --------------------------------------------------
-- Group roles that cannot log in; operators grant them to login roles:
--   GRANT reminderd_app TO booking_service;   -- then: reminderd tenant grant acme booking_service
-- reminderd_app acts for its tenants only; reminderd_readonly reads everything but secrets;
-- reminderd_daemon runs the daemon; reminderd_api runs `reminderd serve` (every tenant's messages,
-- each request acting for the tenant of its API key; no signing secret, no role mapping, no
-- pruning, no DELETE). Roles are cluster-wide, so a second database on the same cluster reuses them.
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
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reminderd_api') THEN
        CREATE ROLE reminderd_api NOLOGIN;
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

-- reminderd_api: every tenant's rows; the server scopes each query to its key's tenant.
CREATE POLICY api_all ON reminderd.tenants TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.tenant_holidays FOR SELECT TO reminderd_api USING (true);
CREATE POLICY api_all ON reminderd.scheduled_messages TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.deliveries FOR SELECT TO reminderd_api USING (true);
CREATE POLICY api_all ON reminderd.events TO reminderd_api USING (true) WITH CHECK (actor = current_user);

GRANT USAGE ON SCHEMA reminderd TO reminderd_app, reminderd_readonly, reminderd_daemon, reminderd_api;

-- Nobody but the daemon (and the owner) may read a signing secret: column privileges.
GRANT SELECT (id, callback_url, created_at, paused, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt,
              max_per_second, max_per_hour, frequency_cap_policy, callback_endpoint)
    ON reminderd.tenants TO reminderd_app, reminderd_readonly;

GRANT SELECT ON reminderd.tenant_members, reminderd.my_tenants, reminderd.deliveries, reminderd.config
    TO reminderd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.tenant_holidays TO reminderd_app;
-- Every column but last_delivery_id, which would let an application hide a change from the trail,
-- and (migration 0023) the ones only the sequence and the daemon's claim set: id (another tenant's
-- next id), picked_at, picked_by and endpoint (a row held against an endpoint's max_in_flight).
-- lease_expires_at stays: cancelling a picked row drops its lease.
GRANT SELECT, INSERT, DELETE ON reminderd.scheduled_messages TO reminderd_app;
GRANT UPDATE (tenant_id, ref_id, payload, callback_url, fire_at, cron, timezone, status, attempts,
              max_attempts, last_error, created_at, updated_at, sent_at, lease_expires_at,
              scheduled_for, last_event, paused_by, rrule, until, max_runs, runs, category, calendar,
              holiday_rule, backfill, max_lateness, extra_of, contact_id, timezone_source,
              local_time, broadcast_id, priority, recipient)
    ON reminderd.scheduled_messages TO reminderd_app, reminderd_api;
GRANT SELECT, INSERT ON reminderd.events TO reminderd_app;

GRANT SELECT ON reminderd.tenant_members, reminderd.tenant_holidays, reminderd.scheduled_messages,
    reminderd.deliveries, reminderd.events, reminderd.config TO reminderd_readonly;

GRANT SELECT, INSERT, UPDATE ON reminderd.tenants TO reminderd_daemon;
GRANT SELECT, INSERT, DELETE ON reminderd.tenant_members TO reminderd_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.tenant_holidays, reminderd.scheduled_messages,
    reminderd.deliveries, reminderd.events TO reminderd_daemon;
GRANT SELECT ON reminderd.my_tenants, reminderd.config TO reminderd_daemon;
-- record_outcomes numbers each attempt before writing it (the row's last_delivery_id points at it).
GRANT USAGE ON SEQUENCE reminderd.deliveries_id_seq TO reminderd_daemon;
-- The daemon registry: the daemons keep it, DBAs and the dashboard (reminderd serve) read it;
-- applications have no business there.
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.daemons TO reminderd_daemon;
GRANT SELECT ON reminderd.daemons TO reminderd_readonly, reminderd_api;

GRANT SELECT (api_rate_limit) ON reminderd.tenants TO reminderd_app, reminderd_readonly;
GRANT SELECT (id, callback_url, created_at, paused, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt,
              previous_secret_expires_at, api_rate_limit)
    ON reminderd.tenants TO reminderd_api;
GRANT UPDATE (callback_url, calendar, holiday_rule, quiet_start, quiet_end, quiet_exempt, paused)
    ON reminderd.tenants TO reminderd_api;
-- Its UPDATE: every column but last_delivery_id, granted with reminderd_app's above.
GRANT SELECT, INSERT ON reminderd.scheduled_messages TO reminderd_api;
GRANT SELECT ON reminderd.tenant_holidays, reminderd.deliveries, reminderd.config TO reminderd_api;
GRANT SELECT, INSERT ON reminderd.events TO reminderd_api;
GRANT SELECT ON reminderd.api_keys TO reminderd_api;
GRANT UPDATE (last_used_at) ON reminderd.api_keys TO reminderd_api;
-- Like api_keys: no row-level security, no application role may read it at all.
GRANT SELECT, INSERT, DELETE ON reminderd.dashboard_signouts TO reminderd_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.idempotency_keys TO reminderd_api;

-- Contacts, audiences and broadcasts: like the messages (each role its tenants' rows). The
-- reference tables hold no tenant's rows: no row-level security, readable by all three roles.
ALTER TABLE reminderd.contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.audiences ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.audience_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.broadcast_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.broadcast_occurrences ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.broadcast_counts ENABLE ROW LEVEL SECURITY;
-- The reference tables hold no tenant's rows: no row-level security.

CREATE POLICY app_own_tenants ON reminderd.contacts TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.audiences TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.audience_members TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.broadcast_requests TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.broadcast_occurrences TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
-- Read only (migration 0023): the triggers write the counts as the owner.
CREATE POLICY app_own_tenants ON reminderd.broadcast_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));

CREATE POLICY read_all ON reminderd.contacts FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.audiences FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.audience_members FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.broadcast_requests FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.broadcast_occurrences FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY read_all ON reminderd.broadcast_counts FOR SELECT TO reminderd_readonly USING (true);

CREATE POLICY daemon_all ON reminderd.contacts TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.audiences TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.audience_members TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.broadcast_requests TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.broadcast_occurrences TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY daemon_all ON reminderd.broadcast_counts TO reminderd_daemon USING (true) WITH CHECK (true);

GRANT SELECT (timezone, broadcast_limit, approval_threshold) ON reminderd.tenants
    TO reminderd_app, reminderd_readonly;
GRANT SELECT ON reminderd.reference_versions, reminderd.phone_plans, reminderd.phone_regions,
    reminderd.phone_prefixes, reminderd.phone_timezones, reminderd.countries TO reminderd_app, reminderd_readonly, reminderd_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.contacts, reminderd.audiences, reminderd.audience_members,
    reminderd.broadcast_requests TO reminderd_app, reminderd_daemon;
-- An application stages a one-off broadcast (reminderd.broadcast() calls stage_broadcast) but does
-- not change or remove a wave (migration 0023): the daemon completes them.
GRANT SELECT, INSERT ON reminderd.broadcast_occurrences TO reminderd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.broadcast_occurrences TO reminderd_daemon;
GRANT SELECT ON reminderd.broadcast_counts TO reminderd_app;
GRANT SELECT, INSERT, DELETE ON reminderd.broadcast_counts TO reminderd_daemon;
-- reminderd serve reads the progress counts (its writes of messages run the counts' triggers, which
-- write them as the owner, migration 0023); its tenant settings statement (queries.sql set_tenant,
-- PATCH /v1/tenant) names the new columns.
CREATE POLICY api_all ON reminderd.broadcast_counts TO reminderd_api USING (true) WITH CHECK (true);
GRANT SELECT ON reminderd.broadcast_counts TO reminderd_api;
GRANT SELECT (timezone, broadcast_limit, approval_threshold), UPDATE (timezone, broadcast_limit, approval_threshold)
    ON reminderd.tenants TO reminderd_api;
GRANT SELECT ON reminderd.contacts, reminderd.audiences, reminderd.audience_members, reminderd.broadcast_requests,
    reminderd.broadcast_occurrences, reminderd.broadcast_counts TO reminderd_readonly;

-- The dashboard's aggregates: per-tenant numbers without payloads or secrets, so applications read
-- their own tenants' and the other roles every tenant's. Only their trigger functions write them.
ALTER TABLE reminderd.fire_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.lateness_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_own_tenants ON reminderd.fire_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.lateness_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY read_all ON reminderd.fire_counts FOR SELECT TO reminderd_readonly, reminderd_daemon, reminderd_api
    USING (true);
CREATE POLICY read_all ON reminderd.lateness_counts FOR SELECT TO reminderd_readonly, reminderd_daemon, reminderd_api
    USING (true);
GRANT SELECT ON reminderd.fire_counts, reminderd.lateness_counts
    TO reminderd_app, reminderd_readonly, reminderd_daemon, reminderd_api;

-- Functions ---------------------------------------------------------------------------------------
-- The SQL API's errors use these SQLSTATEs (documented in docs/sql.md):
--   23503 foreign_key_violation   unknown tenant (cancel and cancel_matching return 0 instead)
--   22023 invalid_parameter_value empty ref, bad timezone, bad interval, not exactly one of
--                                 fire_at, fire_in and local_time; a bad cron field, or a cron
--                                 that never fires
--   22004 null_value_not_allowed  a required argument is NULL
--   22008 datetime_field_overflow fire_at beyond the horizon, or already too late for the
--                                 message's backfill policy; a recurring row's until already past
--   23505 unique_violation        a tenant that already exists; a second live row for a ref
--   23514 check_violation         a value of the wrong shape (the error names the constraint)
--   54000 program_limit_exceeded  payload over 256 KiB
--   P0002 no_data_found           no such message (requeue of an unknown id), contact, audience or broadcast
--   23505 unique_violation        a broadcast's ref_prefix is in use
--   42501 insufficient_privilege  approving one's own broadcast; naming an actor without the daemon role
--   55000 object_not_in_prerequisite_state  approving or rejecting a broadcast not waiting for it
--   (docs/audiences.md lists which function raises which)

-- Functions: checks shared by the API and the triggers --------------------------------------------

-- Punycode (RFC 3492), the encoding of an international domain name's labels (IDNA: xn--bcher-kva
-- is bücher): what callback_url_problem checks an A-label with, and check_callback_url's HINT
-- writes a non-ASCII name with (migration 0039). Pure; NULL for what does not decode.
CREATE FUNCTION reminderd.punycode_bias(delta bigint, points integer, first boolean) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    k integer := 0;
BEGIN
    delta := CASE WHEN first THEN delta / 700 ELSE delta / 2 END;
    delta := delta + delta / points;
    WHILE delta > 455 LOOP  -- ((36 - 1) * 26) / 2
        delta := delta / 35;
        k := k + 36;
    END LOOP;
    RETURN k + (36 * delta) / (delta + 38);
END
$$;

-- The code points a label's punycode (the part after xn--, as Python's codec reads it: the basic
-- code points before the last -, then the digits) stands for; NULL when it stands for none.
CREATE FUNCTION reminderd.punycode_decode(code text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    dash     integer := length(code) - strpos(reverse(code), '-') + 1;
    output   integer[] := '{}';
    digits   text;
    n        bigint := 128;
    i        bigint := 0;
    bias     integer := 72;
    pos      integer := 1;
    old_i    bigint;
    w        bigint;
    k        integer;
    t        integer;
    digit    integer;
    c        text;
BEGIN
    IF code IS NULL OR code ~ '[^\x01-\x7f]' THEN
        RETURN NULL;
    END IF;
    IF strpos(code, '-') = 0 THEN
        digits := code;
    ELSE
        output := ARRAY(SELECT ascii(ch) FROM regexp_split_to_table(left(code, dash - 1), '') AS ch
                        WHERE ch <> '');
        digits := substr(code, dash + 1);
    END IF;
    WHILE pos <= length(digits) LOOP
        old_i := i;
        w := 1;
        k := 36;
        LOOP
            IF pos > length(digits) THEN
                RETURN NULL;  -- incomplete
            END IF;
            c := substr(digits, pos, 1);
            pos := pos + 1;
            digit := CASE WHEN c ~ '[a-z]' THEN ascii(c) - 97 WHEN c ~ '[A-Z]' THEN ascii(c) - 65
                          WHEN c ~ '[0-9]' THEN ascii(c) - 22 END;
            IF digit IS NULL THEN
                RETURN NULL;
            END IF;
            i := i + digit * w;
            IF i > 1114111 * 64 THEN
                RETURN NULL;  -- overflow
            END IF;
            t := CASE WHEN k <= bias THEN 1 WHEN k >= bias + 26 THEN 26 ELSE k - bias END;
            EXIT WHEN digit < t;
            w := w * (36 - t);
            k := k + 36;
        END LOOP;
        bias := reminderd.punycode_bias(i - old_i, cardinality(output) + 1, old_i = 0);
        n := n + i / (cardinality(output) + 1);
        i := i % (cardinality(output) + 1);
        IF n > 1114111 OR n BETWEEN 55296 AND 57343 THEN
            RETURN NULL;  -- beyond Unicode, or a surrogate
        END IF;
        output := output[1:i] || n::integer || output[i + 1:];
        i := i + 1;
    END LOOP;
    RETURN array_to_string(ARRAY(SELECT chr(p) FROM unnest(output) AS p), '');
END
$$;

CREATE FUNCTION reminderd.punycode_digit(d bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN chr((CASE WHEN d < 26 THEN 97 + d ELSE 22 + d END)::integer);

-- The punycode of `label` (the part of its A-label after xn--): 'bcher-kva' for 'bücher'.
CREATE FUNCTION reminderd.punycode_encode(label text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    points  integer[] := ARRAY(SELECT ascii(ch) FROM regexp_split_to_table(label, '') AS ch WHERE ch <> '');
    output  text := array_to_string(ARRAY(SELECT chr(p) FROM unnest(points) AS p WHERE p < 128), '');
    basic   integer := length(output);
    handled integer := length(output);
    n       bigint := 128;
    delta   bigint := 0;
    bias    integer := 72;
    m       bigint;
    q       bigint;
    k       integer;
    t       integer;
    p       integer;
BEGIN
    IF basic > 0 THEN
        output := output || '-';
    END IF;
    WHILE handled < cardinality(points) LOOP
        m := (SELECT min(x) FROM unnest(points) AS x WHERE x >= n);
        delta := delta + (m - n) * (handled + 1);
        n := m;
        FOREACH p IN ARRAY points LOOP
            IF p < n THEN
                delta := delta + 1;
            ELSIF p = n THEN
                q := delta;
                k := 36;
                LOOP
                    t := CASE WHEN k <= bias THEN 1 WHEN k >= bias + 26 THEN 26 ELSE k - bias END;
                    EXIT WHEN q < t;
                    output := output || reminderd.punycode_digit(t + (q - t) % (36 - t));
                    q := (q - t) / (36 - t);
                    k := k + 36;
                END LOOP;
                output := output || reminderd.punycode_digit(q);
                bias := reminderd.punycode_bias(delta, handled + 1, handled = basic);
                delta := 0;
                handled := handled + 1;
            END IF;
        END LOOP;
        delta := delta + 1;
        n := n + 1;
    END LOOP;
    RETURN output;
END
$$;

-- What is wrong with `url` as a callback URL, in a few words that follow the URL in a sentence
-- ('has port "1234567": a port is 1 to 65535'); NULL when it is one (and for NULL). Checked in
-- this order: an http(s) URL; no space or control character anywhere (C0, space, DEL, C1 and the
-- Unicode spaces); at most one @ (the user:password part's own is %40); a host; a port from 1 to
-- 65535; and the host an IPv6 address in brackets, an IPv4 address as four numbers (not the other
-- forms inet_aton reads: 127.1, 2130706433, 0x7f.1), or a name: ASCII letters, digits, - and _
-- in labels of 1 to 63 characters, 253 at most, a trailing dot allowed, an international name in
-- its IDNA form, each A-label (xn--) one that decodes (0039). The command line, the HTTP API and
-- the daemon keep the same rule in the same words (reminderd/callback_urls.py); they also check
-- A-labels against the IDNA tables, which SQL cannot, and the daemon refuses a row whose URL
-- fails that on its first attempt.
CREATE FUNCTION reminderd.callback_url_problem(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    authority text;
    host      text;
    rest      text;
    part      text[];
    name      text;
    label     text;
    wide      text;
    decoded   text;
BEGIN
    IF url IS NULL THEN
        RETURN NULL;
    END IF;
    -- The common case in three quick tests, which pass only what every step below passes: a name of
    -- 63 characters at most (with its port) whose last label starts with a letter (so not an
    -- address), no @, a port from 1 to 65535 without leading zeros, no space or control character,
    -- no A-label (xn--).
    IF length(split_part(url, '/', 3)) <= 63
       AND url ~ ('^https?://([A-Za-z0-9_-]+\.)*[A-Za-z_-][A-Za-z0-9_-]*'
                  '(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9][0-9][0-9]|[1-5][0-9][0-9][0-9][0-9]'
                  '|[1-9][0-9]?[0-9]?[0-9]?))?([/?#]|$)')
       AND url !~ '[\x01-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
       AND split_part(url, '/', 3) !~* 'xn--' THEN
        RETURN NULL;
    END IF;
    IF url !~* '^https?://[^/?#]' THEN
        RETURN 'is not an http(s) URL';
    END IF;
    IF url ~ '[\x01-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]' THEN
        RETURN 'has a space or a control character';
    END IF;
    authority := substring(url FROM '^[A-Za-z]+://([^/?#]*)');
    IF authority ~ '@.*@' THEN
        RETURN 'has more than one @ before its host (write an @ of the user or password as %40)';
    END IF;
    authority := regexp_replace(authority, '^[^@]*@', '');
    part := regexp_match(authority, '^(\[[^]]*\])(.*)$');
    IF part IS NOT NULL AND (part[2] = '' OR part[2] LIKE ':%') THEN  -- [v6 address], then :port or nothing
        host := part[1];
        rest := part[2];
    ELSIF authority LIKE '[%' THEN
        host := authority;
        rest := '';
    ELSE
        part := regexp_match(authority, '^([^:]*)(.*)$');
        host := part[1];
        rest := part[2];
    END IF;
    IF host = '' THEN
        RETURN 'has no host';
    END IF;
    IF rest <> '' AND (CASE WHEN rest ~ '^:[0-9]{1,5}$' THEN substr(rest, 2)::integer NOT BETWEEN 1 AND 65535
                            ELSE true END) THEN
        RETURN format('has port "%s": a port is 1 to 65535', substr(rest, 2));
    END IF;
    IF host LIKE '[%' THEN
        -- hex digits and colons, perhaps ending in an IPv4 address as four numbers (inet reads ::1.2.3)
        IF host ~ '^\[[0-9A-Fa-f:]+(:(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})?\]$' THEN
            BEGIN
                IF family(substr(host, 2, length(host) - 2)::inet) = 6 THEN
                    RETURN NULL;
                END IF;
            EXCEPTION WHEN invalid_text_representation THEN
                NULL;  -- not an address: said below
            END;
        END IF;
        RETURN format('has host "%s", which is not an IPv6 address', host);
    END IF;
    IF host ~* '^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\.?$' THEN
        IF host !~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$' THEN
            RETURN format('has host "%s", an address in a non-standard form (write four numbers, like 192.0.2.1)',
                          host);
        END IF;
        RETURN NULL;
    END IF;
    name := regexp_replace(host, '\.$', '');
    IF name ~ '[\x21-\x2c\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7e]' THEN
        RETURN format('has host "%s" with "%s", which a host name cannot have', host,
                      substring(name FROM '[\x21-\x2c\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7e]'));
    END IF;
    IF name ~ '(^|\.)(\.|$)' THEN
        RETURN format('has host "%s" with an empty label', host);
    END IF;
    IF name ~ '[^.]{64}' THEN
        RETURN format('has host "%s" with a label longer than 63 characters', host);
    END IF;
    IF length(name) > 253 THEN
        RETURN format('has host "%s" longer than 253 characters', host);
    END IF;
    IF name ~ '[^\x01-\x7f]' THEN  -- an international name: written in its IDNA form (0039)
        wide := substring(name FROM '[^\x01-\x7f]');
        RETURN format('has host "%s" with "%s" (U+%s), which a host name cannot have: write an international'
                      ' name in its IDNA form (xn--)', host, wide, lpad(upper(to_hex(ascii(wide))), 4, '0'));
    END IF;
    -- Each A-label the punycode of a label that needs it (0039): it decodes, to a name with a
    -- non-ASCII letter, no space, control or invisible character (the default-ignorable ones: a
    -- soft hyphen, a zero-width joiner), in normal form (NFKC), which encodes back to the same
    -- punycode. Python also checks the IDNA tables, which SQL does not hold.
    FOR label IN SELECT l FROM regexp_split_to_table(name, '\.') AS l WHERE l ~* '^xn--' LOOP
        decoded := reminderd.punycode_decode(lower(substr(label, 5)));
        IF decoded IS NULL OR decoded !~ '[^\x01-\x7f]'
           OR decoded ~ '[\x01-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
           OR decoded ~ '[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]'
           OR normalize(decoded, NFKC) <> decoded OR reminderd.punycode_encode(decoded) <> lower(substr(label, 5)) THEN
            RETURN format('has host "%s" with label "%s", which is not a valid IDNA A-label (punycode)', host, label);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- `url` with its non-ASCII host name in its IDNA form (https://xn--bcher-kva.example/hook for
-- https://bücher.example/hook: each label lower-cased, in normal form NFKC, as punycode), when that
-- form is a callback URL; NULL otherwise (migration 0039: check_callback_url's HINT). The command
-- line and the API suggest the form Python's idna package gives (callback_urls.idna_form).
CREATE FUNCTION reminderd.callback_url_idna_form(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    part    text[] := regexp_match(url, '^([A-Za-z]+://(?:[^/?#]*@)?)([^:/?#@]*)(.*)$');
    written text;
BEGIN
    IF part IS NULL OR part[2] !~ '[^\x01-\x7f]' OR part[2] ~ '[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]' THEN
        RETURN NULL;
    END IF;
    written := part[1] || array_to_string(ARRAY(
        SELECT CASE WHEN l ~ '[^\x01-\x7f]' THEN 'xn--' || reminderd.punycode_encode(normalize(lower(l), NFKC))
                    ELSE l END
        FROM regexp_split_to_table(part[2], '\.') WITH ORDINALITY AS labels (l, n) ORDER BY n), '.') || part[3];
    IF reminderd.callback_url_problem(written) IS NULL THEN
        RETURN written;
    END IF;
    RETURN NULL;
END
$$;

-- Refuse a callback URL that is not one (callback_url_problem), in a sentence naming it and whose
-- it is ('callback_url "http://a b/" of message acme / r1 has a space or a control character'):
-- 23514 check_violation carrying the name of the constraint it stands for (callback_url_is_http,
-- tenant_callback_url_is_http, broadcast_callback_url_is_http: those check the shape only, so that
-- a row written before migration 0019 can still be moved on), with the rule as the HINT; for an
-- international name, its IDNA form (0039).
CREATE FUNCTION reminderd.check_callback_url(url text, subject text, constraint_name text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    problem text := reminderd.callback_url_problem(url);
    written text;
BEGIN
    IF problem IS NOT NULL THEN
        written := CASE WHEN problem LIKE '%in its IDNA form (xn--)' THEN reminderd.callback_url_idna_form(url) END;
        RAISE EXCEPTION 'callback_url "%" of % %', url, subject, problem
            USING ERRCODE = 'check_violation', CONSTRAINT = constraint_name,
                  HINT = CASE WHEN problem = 'is not an http(s) URL'
                              THEN 'Give an absolute http:// or https:// URL, like https://example.com/hooks.'
                              WHEN written IS NOT NULL
                              THEN format('Write the name in its IDNA form: %s', written)
                              WHEN problem LIKE '%IDNA%'
                              THEN 'An international name is written in its IDNA form: each label with a non-ASCII '
                                   'letter as xn-- and its punycode, as Python''s idna package writes it '
                                   '(https://xn--bcher-kva.example/ for https://bücher.example/).'
                              ELSE 'A callback URL is http(s)://host[:port]/path: a host name (labels of 1 to 63 '
                                   'letters, digits, - or _; at most 253 characters) or an IP address, a port '
                                   'from 1 to 65535, no spaces or control characters.' END;
    END IF;
END
$$;

-- Refuse (22023) a zone the daemon cannot read: Python's zoneinfo reads tz database files by name,
-- so a zone is an IANA name spelt as its file is. PostgreSQL alone would also take
-- "america/new_york" (its names are case-insensitive; the HINT gives the right spelling), POSIX
-- rules such as "UTC+3" (whose sign is the opposite of ISO 8601's) and "+05". `subject` ("message
-- acme / r1") says whose zone it is.
CREATE FUNCTION reminderd.check_timezone(timezone text, subject text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC'  -- restored on return: the check tries the zone
AS $$
DECLARE
    problem   constant text := format('unknown timezone "%s"', timezone) || coalesce(' for ' || subject, '');
    hint      constant text := 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    canonical text;
BEGIN
    IF timezone IN ('UTC', 'Etc/UTC') THEN
        RETURN;
    ELSIF timezone IS NULL THEN
        RAISE EXCEPTION 'timezone must not be NULL%', coalesce(' for ' || subject, '')
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF timezone !~ '^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$' THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value', HINT = hint;
    ELSIF timezone IN ('localtime', 'posixrules', 'Factory') OR timezone LIKE 'posix/%' OR timezone LIKE 'right/%' THEN
        -- Files of the zone directory that name no IANA zone (migration 0032; Python's
        -- wallclock.not_an_iana_zone says the same): localtime is the zone of the host reading it;
        -- right/, the copies counting leap seconds, which POSIX time (PostgreSQL's, Python's) does
        -- not (0039: PostgreSQL's own refusal said so without naming the zone to use). A message's
        -- or tenant's posix/ zone is stored under its IANA name before this is asked
        -- (stored_timezone, 0039).
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value',
            DETAIL = timezone || CASE timezone
                WHEN 'localtime' THEN ' is the zone of whichever host reads it (/etc/localtime)'
                WHEN 'posixrules' THEN ' is the rules POSIX TZ strings borrow'
                WHEN 'Factory' THEN ' is tzdata''s placeholder for a zone not set'
                ELSE format(CASE WHEN timezone LIKE 'right/%' THEN ' is a copy of %s counting leap seconds'
                                 ELSE ' is a copy of %s under another name' END, substr(timezone, 7))
                END || ', not an IANA zone.',
            HINT = CASE WHEN timezone ~ '^(posix|right)/' THEN format('Use %s.', substr(timezone, 7)) ELSE hint END;
    END IF;
    BEGIN
        PERFORM set_config('TimeZone', timezone, true);
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM, HINT = hint;
    END;
    canonical := current_setting('TimeZone');
    IF canonical <> timezone OR (timezone ~ '[0-9]' AND timezone !~ '[a-z]'
        AND timezone NOT IN ('EST5EDT', 'CST6CDT', 'MST7MDT', 'PST8PDT', 'GMT0', 'GMT+0', 'GMT-0')
        AND NOT EXISTS (SELECT FROM pg_timezone_names z WHERE z.name = timezone))
    THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value',
            HINT = CASE WHEN lower(canonical) = lower(timezone) AND canonical <> upper(timezone)
                        THEN format('Timezone names are case-sensitive: %s.', regexp_replace(canonical, '^posix/', ''))
                        ELSE hint END;
    END IF;
END
$$;

-- Is `name` a zone the daemon can read? reminderd.check_timezone() as a yes or no.
CREATE FUNCTION reminderd.is_timezone(name text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF name IS NULL THEN
        RETURN false;
    END IF;
    PERFORM reminderd.check_timezone(name);
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;

-- The zone to store for a message or a tenant (migration 0039): a posix/ copy of a zone
-- (posix/Europe/Paris: tzdata's posix/ directory, which PostgreSQL and Python's zoneinfo both
-- read) under its IANA name, with a WARNING saying so, since the zone lists of Python
-- (zoneinfo.available_timezones), the dashboard and the CLI know only that name; any other as
-- check_timezone takes it, or refused as it refuses it (a right/ copy, counting leap seconds).
CREATE FUNCTION reminderd.stored_timezone(timezone text, subject text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    iana constant text := substr(timezone, 7);
BEGIN
    IF timezone LIKE 'posix/%' AND reminderd.is_timezone(iana) THEN
        RAISE WARNING 'timezone "%" for % stored as "%"', timezone, subject, iana
            USING DETAIL = format('%s is tzdata''s copy of %s under another name, which the zone lists of '
                                  'Python, the dashboard and the CLI do not have.', timezone, iana),
                  HINT = format('Write %s.', iana);
        RETURN iana;
    END IF;
    PERFORM reminderd.check_timezone(timezone, subject);
    RETURN timezone;
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

-- Refuse (22008) a time that is not finite (-infinity, infinity: PostgreSQL's own error would be
-- "cannot subtract infinite timestamps", or the row would never fire), in a sentence naming it and
-- whose it is ('fire_at -infinity of message acme / r1 is not a finite time'), the HINT saying what
-- to give instead. `field` names it as its caller took it (fire_at, first_fire_at, local_time,
-- anchor), `shown` is its value as text, `subject` whose it is.
CREATE FUNCTION reminderd.refuse_infinite_time(field text, shown text, subject text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION '% % of % is not a finite time', field, shown, coalesce(subject, 'this call')
        USING ERRCODE = 'datetime_field_overflow',
              HINT = CASE field
                         WHEN 'local_time' THEN 'Give a wall time, like ''2026-12-24 09:00''.'
                         WHEN 'first_fire_at' THEN 'Leave it NULL: the first occurrence after now is planned for you.'
                         WHEN 'until' THEN 'Give the time it ends at, or NULL for no end.'
                         WHEN 'anchor' THEN 'Give the time its offsets count from, like a renewal date: '
                                            '''2027-03-01 00:00+00''.'
                         ELSE 'Give a time to send it at, like now() + interval ''1 hour''.' END;
END
$$;

-- Refuse (22008) a wall time no zone can place: not finite (refuse_infinite_time), or so near the
-- end of time that a zone's offset takes it past (migration 0022). `subject` says whose it is.
CREATE FUNCTION reminderd.check_local_time(local_time timestamp, subject text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT isfinite(local_time) THEN
        PERFORM reminderd.refuse_infinite_time('local_time', local_time::text, subject);
    ELSIF local_time NOT BETWEEN timestamp '4714-11-26 00:00 BC' AND timestamp '294276-12-30 00:00' THEN
        RAISE EXCEPTION 'local_time % of % is past the range of time a zone can place (4714 BC to 294276 AD)',
            local_time, coalesce(subject, 'this call')
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Give a wall time, like ''2026-12-24 09:00''.';
    END IF;
END
$$;

-- Refuse (22008) a fire_at that is not finite (refuse_infinite_time), or further ahead than the
-- horizon (reminderd.config 'horizon'). `subject` says whose it is ('message acme / r1'); `given`
-- how the caller gave it, when not as this instant ('fire_in 1000000 years': a delay that would
-- overflow a timestamptz is refused as beyond the horizon, its caller passing an instant past it).
CREATE FUNCTION reminderd.check_fire_at(fire_at timestamptz, subject text DEFAULT NULL, given text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    horizon interval := (SELECT value::interval FROM reminderd.config WHERE key = 'horizon');
BEGIN
    IF NOT isfinite(fire_at) THEN
        PERFORM reminderd.refuse_infinite_time('fire_at', fire_at::text, subject);
    END IF;
    IF fire_at > now() + horizon THEN
        RAISE EXCEPTION '% is further ahead than the horizon of %',
            coalesce(given, 'fire_at ' || fire_at::text) || coalesce(' of ' || subject, ''), horizon
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
    due      text;  -- for the refusal's sentence
    setting  record;
    configured_lateness text;
    configured_lookback text;
BEGIN
    IF check_arrival.fire_at IS NULL OR late <= interval '0' THEN
        RETURN;
    END IF;
    -- reminderd.config in one pass: a query per setting would cost every due-now insert three.
    FOR setting IN
        SELECT c.key, c.value FROM reminderd.config c
    LOOP
        CASE setting.key
            WHEN 'backfill' THEN policy := setting.value;
            WHEN 'max_lateness' THEN configured_lateness := setting.value;
            WHEN 'lookback' THEN configured_lookback := setting.value;
            ELSE NULL;
        END CASE;
    END LOOP;
    policy := coalesce(check_arrival.backfill, policy, 'send');
    lateness := coalesce(check_arrival.max_lateness, configured_lateness::interval, interval '30 minutes');
    lookback := coalesce(configured_lookback::interval, interval '1 day');
    allowed := CASE policy WHEN 'latest' THEN NULL
                           WHEN 'skip' THEN least(lateness, interval '60 seconds')
                           ELSE lateness END;
    IF late >= lookback OR late > allowed THEN
        due := to_char(check_arrival.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
    END IF;
    IF late >= lookback THEN
        RAISE EXCEPTION 'message % / % is too late to send: due %, % ago', check_arrival.tenant_id,
            check_arrival.ref_id, due, reminderd.duration_text(late)
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Nothing older than the lookback (%s: reminderd.config ''lookback'', '
                                  'REMINDERD_LOOKBACK) is ever sent, whatever the backfill policy; it '
                                  'would expire at once.', reminderd.duration_text(lookback)),
                  HINT = 'Schedule it for now or later.';
    END IF;
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

-- Refuse a cron the daemon could not read, in a sentence: one of the wrong shape (23514, carrying
-- the name of the constraint cron_shape, as the constraint's own error would), a bad field or one
-- that never fires (22023, in reminderd.cron_parse()'s words: `invalid cron "61 * * * *": minute
-- 61 is out of range 0–59`). `subject` ("message acme / r1") says whose cron it is.
CREATE FUNCTION reminderd.check_cron(cron text, subject text) RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    IF cron !~* '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$' THEN
        RAISE EXCEPTION 'cron "%" of % is not five fields (minute hour day month weekday)', cron, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'cron_shape',
                  HINT = 'Five fields like ''0 9 * * 1-5'', six with a leading seconds field, or @hourly, @daily, '
                         '@weekly, @monthly, @yearly.';
    END IF;
    PERFORM reminderd.cron_parse(cron);
END
$$;

-- Refuse a value a CHECK constraint of scheduled_messages would (migration 0021), in a sentence of
-- one line naming it and whose it is ('max_attempts 0 of message acme / r1 is less than 1'): 23514
-- carrying the constraint's name, as the constraint's own error would, with a HINT saying what is
-- allowed, where PostgreSQL's own would name no row and list its 40 columns in a DETAIL. Text
-- values are shown as JSON strings, so a newline in one stays on the line. `subject` says whose
-- they are ('message acme / r1', 'broadcast "bf" of tenant "acme"'); category_constraint names the
-- constraint of the category (a broadcast's is broadcast_category_format). Values the constraints
-- take raise nothing. The triggers call it only when a quick test says a value is wrong, so a valid
-- row never pays for it.
CREATE FUNCTION reminderd.check_message_values(
    subject text, rrule text, max_runs integer, max_attempts integer, category text, calendar text,
    holiday_rule text, backfill text, max_lateness interval, category_constraint text DEFAULT 'category_format'
) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF rrule !~* '(^|\n)\s*(RRULE:)?FREQ=' THEN
        RAISE EXCEPTION 'rrule % of % has no FREQ', to_jsonb(rrule)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'rrule_has_freq',
                  HINT = 'An RRULE says how often it repeats, like FREQ=WEEKLY;BYDAY=MO: FREQ is YEARLY, MONTHLY, '
                         'WEEKLY, DAILY, HOURLY, MINUTELY or SECONDLY.';
    END IF;
    IF max_runs < 1 THEN
        RAISE EXCEPTION 'max_runs % of % is less than 1', max_runs, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_runs_positive',
                  HINT = 'Give how many occurrences it sends, at least 1, or NULL for no limit.';
    END IF;
    IF max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts % of % is less than 1', max_attempts, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_attempts_positive',
                  HINT = 'Give at least 1 attempt, or NULL for the daemon''s REMINDERD_MAX_ATTEMPTS.';
    END IF;
    IF category !~ '^[a-z][a-z0-9_-]*$' OR char_length(category) > 32 THEN
        RAISE EXCEPTION 'category % of % is not a category name', to_jsonb(category)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = category_constraint,
                  HINT = 'A category is lower-case letters, digits, _ and -, starting with a letter, at most 32 '
                         'characters, like marketing.';
    END IF;
    IF calendar !~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$' THEN
        RAISE EXCEPTION 'calendar % of % is not a holiday calendar code', to_jsonb(calendar)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'calendar_format',
                  HINT = 'A country code such as IN or GB, or a subdivision such as US-CA (the holidays package''s '
                         'codes); NULL takes the tenant''s.';
    END IF;
    IF holiday_rule NOT IN ('skip', 'send') THEN
        RAISE EXCEPTION 'holiday_rule % of % is not skip or send', to_jsonb(holiday_rule)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holiday_rule_is_known',
                  HINT = 'skip moves a message off its holidays, send sends on them; NULL takes the tenant''s rule.';
    END IF;
    IF backfill NOT IN ('send', 'latest', 'skip') THEN
        RAISE EXCEPTION 'backfill % of % is not send, latest or skip', to_jsonb(backfill)::text, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'backfill_is_known',
                  HINT = 'After an outage: send (what is at most max_lateness late), latest (only the most recent '
                         'missed occurrence) or skip (nothing late); NULL takes REMINDERD_BACKFILL.';
    END IF;
    IF max_lateness < interval '0' THEN
        RAISE EXCEPTION 'max_lateness % of % is negative', max_lateness, subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_lateness_not_negative',
                  HINT = 'Give how late it may still be sent, 0 or more, like 30 minutes; NULL takes '
                         'REMINDERD_MAX_LATENESS.';
    END IF;
END
$$;

-- Refuse a message row (`m`, being written; `old`, what it was, for an UPDATE) that its CHECK
-- constraints would, in sentences (23514 and the constraint's name, as check_message_values), and
-- a new fire_at or local_time that is not finite (22008, refuse_infinite_time). The row's shape
-- first (an empty ref, no time to fire at, two recurrences, end conditions of a one-off), then its
-- values. A time written before migration 0021 checked them is left alone (only a changed one is
-- refused), so such a row can still be changed otherwise. Called by admit_message and
-- validate_message when their quick test finds something wrong.
CREATE FUNCTION reminderd.check_message(m reminderd.scheduled_messages, old reminderd.scheduled_messages DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    subject constant text := format('message %s / %s', m.tenant_id, m.ref_id);
BEGIN
    IF m.ref_id = '' THEN
        RAISE EXCEPTION 'a message of tenant "%" has an empty ref_id', m.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ref_id_not_empty',
                  HINT = 'Name it, like booking:b7d2:24h: its ref is how it is cancelled, moved or replaced.';
    END IF;
    IF NOT isfinite(m.fire_at) AND m.fire_at IS DISTINCT FROM old.fire_at THEN
        PERFORM reminderd.refuse_infinite_time('fire_at', m.fire_at::text, subject);
    END IF;
    IF NOT isfinite(m.local_time) AND m.local_time IS DISTINCT FROM old.local_time THEN
        PERFORM reminderd.refuse_infinite_time('local_time', m.local_time::text, subject);
    END IF;
    IF m.cron IS NULL AND m.rrule IS NULL THEN
        IF m.fire_at IS NULL THEN
            RAISE EXCEPTION '% has no fire_at, cron or rrule', subject
                USING ERRCODE = 'check_violation', CONSTRAINT = 'one_off_needs_fire_at',
                      HINT = 'Give a one-off message its fire_at, or a recurring one a cron or an rrule.';
        END IF;
        IF m.until IS NOT NULL OR m.max_runs IS NOT NULL THEN
            RAISE EXCEPTION '% has % but no cron or rrule', subject,
                CASE WHEN m.max_runs IS NULL THEN 'an until' WHEN m.until IS NULL THEN 'a max_runs'
                     ELSE 'an until and a max_runs' END
                USING ERRCODE = 'check_violation', CONSTRAINT = 'end_conditions_need_recurrence',
                      HINT = 'until and max_runs end a recurring message: give it a cron or an rrule, or leave them '
                             'NULL.';
        END IF;
    ELSIF m.cron IS NOT NULL AND m.rrule IS NOT NULL THEN
        RAISE EXCEPTION '% has both a cron and an rrule', subject
            USING ERRCODE = 'check_violation', CONSTRAINT = 'one_recurrence',
                  HINT = 'A message recurs by one of them: give the cron or the rrule.';
    END IF;
    PERFORM reminderd.check_message_values(subject, m.rrule, m.max_runs, m.max_attempts, m.category, m.calendar,
                                           m.holiday_rule, m.backfill, m.max_lateness);
END
$$;

-- Functions: time --------------------------------------------------------------------------------
-- The daemon's time rules (reminderd/schedule/) in SQL, held to its answers by tests: which zone
-- names it reads, the instant a wall time is first read, and the next fire of a cron. Wall times
-- are read through the TimeZone setting, set for the duration of a call by a function's SET
-- clause (which restores it), never with `AT TIME ZONE zone`: that reads CET, EET, MET and WET as
-- PostgreSQL's fixed-offset abbreviations, where the tz database (and Python) give them summer
-- time, and takes abbreviations such as PST that are no zone at all.

-- The instant at which the clock of the session's TimeZone first reads `wall`; for a wall time
-- skipped by a forward jump, the jump (wallclock.py _instants(...)[0]). PostgreSQL's own
-- wall::timestamptz picks the later reading of a repeated time, and moves a skipped one on by the
-- length of the gap. Assumes, as PostgreSQL does, that clock changes are at least 48 hours apart
-- (true of every zone since 1970).
CREATE FUNCTION reminderd.first_reading(wall timestamp) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    utc_wall constant timestamptz := wall AT TIME ZONE interval '0';
    reading  timestamptz := wall::timestamptz;
    prior    interval;
    earlier  timestamptz;
BEGIN
    IF reading::timestamp <> wall THEN  -- skipped: `reading` is past the jump
        RETURN reminderd.offset_change(
            utc_wall - (reading::timestamp - (reading AT TIME ZONE interval '0')), reading);
    END IF;
    prior := (utc_wall - interval '1 day')::timestamp - ((utc_wall - interval '1 day') AT TIME ZONE interval '0');
    earlier := utc_wall - prior;
    IF earlier < reading AND earlier::timestamp = wall THEN  -- repeated: its first reading
        RETURN earlier;
    END IF;
    RETURN reading;
END
$$;

-- The whole second in (before, after] at which the session's UTC offset becomes the one in force at
-- `after`: a bisection over whole seconds, step for step as wallclock.py _jump().
CREATE FUNCTION reminderd.offset_change(before timestamptz, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    lo     bigint := trunc(extract(epoch FROM before));
    hi     bigint := trunc(extract(epoch FROM after));
    target constant interval := after::timestamp - (after AT TIME ZONE interval '0');
    mid    bigint;
    probe  timestamptz;
BEGIN
    WHILE hi - lo > 1 LOOP
        mid := (lo + hi) >> 1;
        probe := to_timestamp(mid);
        IF probe::timestamp - (probe AT TIME ZONE interval '0') = target THEN
            hi := mid;
        ELSE
            lo := mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(hi);
END
$$;

-- The wall clock in `timezone` at `instant` (wallclock.py wall()).
CREATE FUNCTION reminderd.wall_time(instant timestamptz, timezone text) RETURNS timestamp
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- restored on return; set to `timezone` below
AS $$
BEGIN
    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);
    RETURN instant::timestamp;
END
$$;

-- The instant at which the clock in `timezone` first reads `local_time`; a wall time skipped by a
-- forward jump happens at the jump: reminderd.first_reading(), the rule cron times follow too.
CREATE FUNCTION reminderd.local_instant(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- restored on return; set to `timezone` below
AS $$
BEGIN
    -- Not finite, or so near the end of time that a zone's offset takes it past (migration 0022):
    -- refused naming the field, not "timestamp out of range" / "cannot subtract infinite timestamps".
    IF local_time NOT BETWEEN timestamp '4714-11-26 00:00 BC' AND timestamp '294276-12-30 00:00' THEN
        PERFORM reminderd.check_local_time(local_time);
    END IF;
    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);
    RETURN reminderd.first_reading(local_time);
END
$$;

-- The instant an RRULE's UNTIL ends it, or NULL (no UNTIL, or one it cannot read: check_message and
-- the daemon name those). RFC 5545: UNTIL=…Z is an instant; a floating date-time, or a date (its
-- whole day: until 23:59:59), is a wall time read in the row's `timezone` (rrule.py _until).
CREATE FUNCTION reminderd.rrule_until(rrule text, timezone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    part constant text[] := regexp_match(rrule, '(?:^|[\n:;])\s*UNTIL\s*=\s*(\d{8})(?:T(\d{6})(Z?))?\s*(?:;|\r?\n|$)', 'i');
    digits text;
    month  int;
    wall   timestamp;
BEGIN
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    digits := part[1] || coalesce(part[2], '235959');
    month := substr(digits, 5, 2)::int;
    -- 20260230, 250000: not a time. Tested, not caught: an EXCEPTION block would cost every such row
    -- a subtransaction.
    IF substr(digits, 1, 4)::int = 0 OR month NOT BETWEEN 1 AND 12 OR substr(digits, 7, 2)::int NOT BETWEEN 1 AND
           extract(day FROM make_date(substr(digits, 1, 4)::int, month, 1) + interval '1 month - 1 day')
       OR substr(digits, 9, 2)::int > 23 OR substr(digits, 11, 2)::int > 59 OR substr(digits, 13, 2)::int > 59
    THEN
        RETURN NULL;
    END IF;
    wall := make_timestamp(substr(digits, 1, 4)::int, month, substr(digits, 7, 2)::int,
                           substr(digits, 9, 2)::int, substr(digits, 11, 2)::int, substr(digits, 13, 2)::int);
    IF part[3] <> '' THEN
        RETURN wall AT TIME ZONE 'UTC';
    END IF;
    RETURN reminderd.local_instant(wall, timezone);
END
$$;

-- The instant at which the clock in `timezone` first reads `local_time`, as
-- reminderd.local_instant(), or NULL when this server's tz database cannot read `timezone`
-- (migration 0038): a contact's zone checked when it was written elsewhere or earlier (copied by
-- logical replication, which fires no trigger, from a primary whose tzdata has a zone this
-- server's lacks; restored from a dump; written before 0033 checked contacts' zones). A broadcast
-- stages such a contact's row dead saying why, instead of failing for the whole audience.
CREATE FUNCTION reminderd.local_instant_if_readable(local_time timestamp, timezone text) RETURNS timestamptz
LANGUAGE sql STABLE STRICT AS $$
    SELECT CASE WHEN reminderd.is_timezone(local_instant_if_readable.timezone)
                THEN reminderd.local_instant(local_instant_if_readable.local_time, local_instant_if_readable.timezone) END
$$;

-- The instant a recurring broadcast's occurrences end by, or NULL (migration 0038): the earlier of
-- its until and its RRULE's UNTIL=…Z (RFC 5545: an instant). It ends each contact on their own: an
-- occurrence is sent to a contact only when its instant in the contact's zone is not later
-- (stage_broadcast; the daemon's schedule.Waves.reached), so a contact east of UTC is not cut a day
-- early nor one west of it sent a day late. An UNTIL without Z is a wall time on every contact's
-- clock: the recurrence itself stops there, for everyone at the same wall time.
CREATE FUNCTION reminderd.broadcast_end(until timestamptz, rrule text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT least(broadcast_end.until,
                 CASE WHEN broadcast_end.rrule ~* '(^|[\n:;])\s*UNTIL\s*=\s*\d{8}T\d{6}Z'
                      THEN reminderd.rrule_until(broadcast_end.rrule, 'UTC') END)
$$;

-- reminderd.next_cron_occurrence(cron, timezone, after): the first instant strictly after `after` at
-- which `cron`, read in the IANA `timezone`, fires. The SQL twin of the daemon's time core, and
-- agrees with it exactly:
--   reminderd/schedule/wallclock.py  next_instant(parse_cron(cron), load_timezone(timezone), after)
-- (tests/integration/test_sql_cron.py compares the two over generated crons, zones and instants).
--
-- The cron language is croniter's, as reminderd/schedule/cron.py uses it: 5 fields (minute hour
-- day-of-month month day-of-week) or 6 with a leading seconds field; @yearly @annually @monthly
-- @weekly @daily @midnight @hourly; names JAN-DEC and SUN-SAT (any case); lists, ranges, steps
-- (*/15, 10-50/5, 10/5); day of week 0 and 7 are Sunday; L (last day of the month), L5 or 5L (the
-- last Friday), 15W (the weekday nearest the 15th), 1#1 (the first Monday); ? for * in the day
-- fields. When both day of month and day of week are restricted a day matching either fires
-- (croniter's day_or), with croniter's own readings of # and W there. H and R fields are refused,
-- and so is what cron.py's check_fields refuses before croniter sees it (W1, MON-FRI#1, # or L
-- beside plain days of the week).
--
-- Clock changes follow docs/time.md: a wall time skipped by a forward jump fires at the jump; a wall
-- time repeated by a backward jump fires once, at its first reading, unless the hour field covers all
-- 24 hours (*, 0-23, "*,5"): then at every real instant it is read.
--
-- Limits, as croniter's: a search looks at most 50 years ahead of where it starts. A cron that
-- cannot fire in the 50 years from 2000-01-01 ("0 0 30 2 *") is refused as never firing; one whose
-- next fire is more than 50 years ahead raises too. Bad input raises SQLSTATE 22023
-- (invalid_parameter_value) with a one-line message, e.g.
--     invalid cron "61 * * * *": minute 61 is out of range 0–59
-- NULL in, NULL out (STRICT). Needs PostgreSQL 14 or later (bit_count).

-- The cron's fields as bit masks. seconds, minutes, hours, months: bit n set when the field allows
-- n (a field of * has all bits).
-- days: NULL for *, else bit d for day d and bit 0 for L; nearest_weekday: the day of "15W".
-- weekdays: NULL for *, else bit w for weekday w (0 = Sunday); nth_weekdays: NULL, or bit 8*w + n
-- for "w#n" (n = 1..5) and 8*w + 6 for "Lw". every_hour: the hour field covers all 24 hours (a *
-- among its items, or every hour listed), so a repeated hour fires twice. with_seconds: the cron
-- has a seconds field.
CREATE FUNCTION reminderd.cron_parse(
    cron text,
    OUT seconds bigint, OUT minutes bigint, OUT hours bigint, OUT months bigint,
    OUT days bigint, OUT nearest_weekday integer, OUT weekdays bigint, OUT nth_weekdays bigint,
    OUT every_hour boolean, OUT with_seconds boolean
)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    -- Python's str.split() and str.strip() whitespace (str.isspace), built from code points so the
    -- class does not depend on standard_conforming_strings.
    space constant text := '[' || chr(9) || '-' || chr(13) || chr(28) || '-' || chr(32)
        || CASE WHEN getdatabaseencoding() = 'UTF8'
                THEN chr(133) || chr(160) || chr(5760) || chr(8192) || '-' || chr(8202) || chr(8232)
                     || chr(8233) || chr(8239) || chr(8287) || chr(12288)
                ELSE '' END || ']';
    -- Lower case as Python's str.lower() does for what can become a valid token: ASCII letters, and
    -- the Kelvin sign (U+212A), which lowers to "k" (so "@WEE\u212ALY" is @weekly to Python).
    upper_letters constant text := 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' || CASE WHEN getdatabaseencoding() = 'UTF8'
                                                                         THEN chr(8490) ELSE '' END;
    lower_letters constant text := 'abcdefghijklmnopqrstuvwxyzk';
    month_names constant text[] := '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}';
    weekday_names constant text[] := '{sun,mon,tue,wed,thu,fri,sat}';
    -- "w#n" (one day, a number or a name; never a range) and "Lw" (one digit), as cron.py reads them.
    weekday_pattern constant text := '^(?:([a-z0-9_]+)#([0-9]+)|(l)([0-9]))$';
    range_pattern constant text := '^([^-]+)-([^-/]+)(/([0-9]+))?$';
    hint constant text := 'A cron is 5 fields (minute hour day-of-month month day-of-week) or 6 with a '
        'leading seconds field, e.g. "0 9 * * MON-FRI"; see docs/time.md.';
    stripped   text;
    fields     text[];
    typed      text[];  -- the fields as written, for messages
    typed_items text[];
    n          integer;
    kind       text;
    label      text;
    field      text;
    day_text   text;
    weekday_text text;
    lo         integer;
    hi         integer;
    len_all    integer;
    items      text[];
    item       text;
    shown      text;
    e          text;
    t          text;
    m          text[];
    nth        integer;
    low_text   text;
    high_text  text;
    low        integer;
    high       integer;
    step       integer;
    with_step  boolean;
    v          integer;
    last_v     integer;
    to_skip    integer;
    bits       bigint;
    mask       bigint;
    nth_mask   bigint;
    star_item  boolean;
    elements   integer;
    collapsed  boolean;
    is_star    boolean;
    full_mask  bigint;
    specials   integer;
    allowed    text;
    range_text text;
BEGIN
    stripped := regexp_replace(cron, '^' || space || '+|' || space || '+$', '', 'g');
    CASE translate(stripped, upper_letters, lower_letters)
        WHEN '@yearly', '@annually' THEN stripped := '0 0 1 1 *';
        WHEN '@monthly' THEN stripped := '0 0 1 * *';
        WHEN '@weekly' THEN stripped := '0 0 * * 0';
        WHEN '@daily', '@midnight' THEN stripped := '0 0 * * *';
        WHEN '@hourly' THEN stripped := '0 * * * *';
        ELSE NULL;
    END CASE;
    fields := CASE WHEN stripped = '' THEN '{}'::text[] ELSE regexp_split_to_array(stripped, space || '+') END;
    n := cardinality(fields);
    typed := fields;
    IF n NOT IN (5, 6) THEN
        RAISE EXCEPTION 'invalid cron "%": expected 5 fields (minute hour day month weekday) or 6 with a leading seconds field, got %',
            cron, n USING ERRCODE = 'invalid_parameter_value', HINT = hint;
    END IF;
    FOREACH field IN ARRAY fields LOOP
        IF field ~ '^[rR]' THEN
            RAISE EXCEPTION 'invalid cron "%": random (R) fields are not supported', cron
                USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END IF;
    END LOOP;
    -- Quartz's "5L" (the last Friday) is croniter's "L5".
    IF fields[n] ~ '[0-7][lL]' THEN
        fields[n] := regexp_replace(fields[n], '(^|,)([0-7])[lL](?=,|$)', E'\\1L\\2', 'g');
    END IF;
    FOR i IN 1..n LOOP
        fields[i] := translate(fields[i], upper_letters, lower_letters);
    END LOOP;
    day_text := fields[n - 2];
    weekday_text := fields[n];
    with_seconds := n = 6;
    seconds := 1;  -- second 0, for a 5-field cron
    nearest_weekday := NULL;
    nth_weekdays := NULL;

    FOR i IN 1..n LOOP
        kind := CASE WHEN n = 6 THEN (ARRAY['second', 'minute', 'hour', 'day', 'month', 'weekday'])[i]
                     ELSE (ARRAY['minute', 'hour', 'day', 'month', 'weekday'])[i] END;
        label := CASE kind WHEN 'day' THEN 'day of month' WHEN 'weekday' THEN 'day of week' ELSE kind END;
        lo := CASE WHEN kind IN ('day', 'month') THEN 1 ELSE 0 END;
        hi := CASE kind WHEN 'hour' THEN 23 WHEN 'day' THEN 31 WHEN 'month' THEN 12 WHEN 'weekday' THEN 6 ELSE 59 END;
        len_all := hi - lo + 1;
        range_text := CASE kind WHEN 'weekday' THEN '0–7 (0 and 7 are Sunday)' ELSE lo || '–' || hi END;
        allowed := CASE kind WHEN 'month' THEN 'a month (1–12 or JAN–DEC)'
                             WHEN 'weekday' THEN 'a day of the week (0–7, SUN–SAT, 1#2 or L5)'
                             WHEN 'day' THEN 'a day of the month (1–31, L or 15W)'
                             ELSE format('a number (%s–%s)', lo, hi) END;
        field := fields[i];
        mask := 0;
        nth_mask := 0;
        star_item := false;
        specials := 0;

        IF field ~ '^h([(][0-9]+-[0-9]+[)])?(/[0-9]+)?$' THEN
            RAISE EXCEPTION 'invalid cron "%": % "%": hashed (H) values are not supported', cron, label, typed[i]
                USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END IF;
        IF position('?' IN field) > 0 THEN
            IF kind NOT IN ('day', 'weekday') THEN
                RAISE EXCEPTION 'invalid cron "%": % "%": ? is only for day of month or day of week',
                    cron, label, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            ELSIF field <> '?' THEN
                RAISE EXCEPTION 'invalid cron "%": % "%": ? stands alone (it means *)',
                    cron, label, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            END IF;
            field := '*';
        END IF;

        items := string_to_array(field, ',');
        typed_items := CASE WHEN field = '*' THEN ARRAY[typed[i]] ELSE string_to_array(typed[i], ',') END;
        FOR j IN 1..cardinality(items) LOOP
            item := items[j];
            shown := typed_items[j];
            e := item;
            nth := NULL;
            IF item = '*' THEN
                star_item := true;
                CONTINUE;
            ELSIF item = '' THEN
                RAISE EXCEPTION 'invalid cron "%": % "%" has an empty list item', cron, label, typed[i]
                    USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            END IF;
            IF item ~ '^[0-9]+$' THEN  -- the common case; the patterns below all need a letter or sign
                t := item;
            ELSE
                IF kind = 'weekday' THEN
                    m := regexp_match(e, weekday_pattern);
                    IF m IS NOT NULL THEN
                        IF m[1] IS NOT NULL THEN
                            IF m[2] !~ '^0*[1-5]$' THEN
                                RAISE EXCEPTION 'invalid cron "%": day of week "%": # takes 1–5 (1#1 is the first Monday of the month)',
                                    cron, shown USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                            END IF;
                            e := m[1];
                            nth := m[2]::integer;
                        ELSE
                            e := m[4];
                            nth := 6;  -- L: the last such day of the month
                        END IF;
                        specials := specials + 1;
                    END IF;
                END IF;

                IF kind = 'day' THEN
                    m := regexp_match(e, '^([0-9]+)w$');
                    IF m IS NOT NULL THEN
                        t := m[1];
                        IF length(ltrim(t, '0')) > 2 OR t::integer NOT BETWEEN 1 AND 31 THEN
                            RAISE EXCEPTION 'invalid cron "%": day of month "%": W takes a day 1–31 (15W is the weekday nearest the 15th)',
                                cron, shown USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                        END IF;
                        IF cardinality(items) > 1 THEN
                            RAISE EXCEPTION 'invalid cron "%": day of month "%": W takes a single day, not a list',
                                cron, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                        END IF;
                        nearest_weekday := t::integer;
                        mask := mask | (1::bigint << nearest_weekday);
                        CONTINUE;
                    END IF;
                END IF;

                -- A range, a step, or both: "10-50/5", "*/15", "10/5" (from 10 to the field's end).
                t := e;
                IF t ~ '^[*]/.' THEN
                    t := lo || '-' || hi || substr(t, 2);
                END IF;
                m := regexp_match(t, range_pattern);
                with_step := false;
                IF m IS NULL THEN
                    t := regexp_replace(e, '^(.+)/(.+)$', E'\\1-' || hi || E'/\\2');
                    m := regexp_match(t, range_pattern);
                    with_step := m IS NOT NULL;
                END IF;

                IF m IS NOT NULL THEN
                    low_text := m[1];
                    high_text := CASE WHEN kind = 'day' AND m[2] = 'l' THEN '31' ELSE m[2] END;
                    FOREACH t IN ARRAY ARRAY[low_text, high_text] LOOP
                        IF t !~ '^[0-9]+$' AND NOT (kind = 'month' AND t = ANY (month_names))
                           AND NOT (kind = 'weekday' AND t = ANY (weekday_names)) THEN
                            RAISE EXCEPTION 'invalid cron "%": % "%": "%" is not %', cron, label, shown, t,
                                CASE kind WHEN 'month' THEN 'a month (1–12 or JAN–DEC)'
                                          WHEN 'weekday' THEN 'a day of the week (0–7 or SUN–SAT)'
                                          ELSE format('a number (%s–%s)', lo, hi) END
                                USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                        END IF;
                    END LOOP;
                    IF ltrim(coalesce(m[4], '1'), '0') = '' THEN
                        RAISE EXCEPTION 'invalid cron "%": % "%": the step must be at least 1', cron, label, shown
                            USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                    END IF;
                    -- Steps past the field's width all mean "the first value only".
                    step := CASE WHEN length(ltrim(coalesce(m[4], '1'), '0')) > 3 THEN 1000 ELSE coalesce(m[4], '1')::integer END;
                    low := CASE WHEN low_text ~ '^[0-9]+$' THEN CASE WHEN length(ltrim(low_text, '0')) > 3 THEN 1000 ELSE low_text::integer END
                                WHEN kind = 'month' THEN array_position(month_names, low_text)
                                ELSE array_position(weekday_names, low_text) - 1 END;
                    high := CASE WHEN high_text ~ '^[0-9]+$' THEN CASE WHEN length(ltrim(high_text, '0')) > 3 THEN 1000 ELSE high_text::integer END
                                 WHEN kind = 'month' THEN array_position(month_names, high_text)
                                 ELSE array_position(weekday_names, high_text) - 1 END;
                    IF kind = 'weekday' THEN  -- 7 is Sunday too
                        low := CASE WHEN low = 7 THEN 0 ELSE low END;
                        high := CASE WHEN high = 7 THEN 0 ELSE high END;
                    END IF;
                    IF greatest(low, high) > hi THEN
                        RAISE EXCEPTION 'invalid cron "%": % % in "%" is out of range %', cron, label,
                            CASE WHEN high > hi THEN high_text ELSE low_text END, shown,
                            range_text USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                    END IF;
                    -- croniter's readings: "5-5" is the whole field, while "59/15" (59 = the field's
                    -- end) is 59 alone; a range whose end is below its start wraps around, and its
                    -- second part starts where croniter starts it.
                    IF low = high AND NOT with_step THEN
                        low := lo;
                        high := hi;
                    END IF;
                    IF low < lo THEN
                        RAISE EXCEPTION 'invalid cron "%": % % in "%" is out of range %', cron, label, low, shown, range_text
                            USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                    END IF;
                    bits := 0;
                    IF low = high THEN
                        bits := 1::bigint << low;
                    ELSIF low > high THEN
                        FOR v IN low..hi BY step LOOP
                            bits := bits | (1::bigint << v);
                        END LOOP;
                        last_v := low + (hi - low) / step * step;
                        to_skip := CASE WHEN last_v - lo + step > len_all AND hi - last_v < step
                                        THEN step - (hi - last_v) ELSE 0 END;
                        FOR v IN lo + to_skip..high BY step LOOP
                            bits := bits | (1::bigint << v);
                        END LOOP;
                    ELSE
                        FOR v IN low..high BY step LOOP
                            bits := bits | (1::bigint << v);
                        END LOOP;
                    END IF;
                    mask := mask | bits;
                    CONTINUE;
                END IF;

            END IF;

            -- A single value: a number, a name, L (day of month) or *.
            IF t LIKE '-%' THEN
                RAISE EXCEPTION 'invalid cron "%": % "%": negative numbers are not allowed', cron, label, shown
                    USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            ELSIF t = '*' THEN
                star_item := true;
            ELSIF t ~ '^[0-9]+$' THEN
                v := CASE WHEN length(ltrim(t, '0')) > 3 THEN 1000 ELSE t::integer END;
                IF kind = 'weekday' AND v = 7 THEN
                    v := 0;
                END IF;
                IF v NOT BETWEEN lo AND hi THEN
                    RAISE EXCEPTION 'invalid cron "%": % % is out of range %', cron, label, t,
                        range_text USING ERRCODE = 'invalid_parameter_value', HINT = hint;
                END IF;
                mask := mask | (1::bigint << v);
            ELSIF kind = 'month' AND t = ANY (month_names) THEN
                mask := mask | (1::bigint << array_position(month_names, t));
            ELSIF kind = 'weekday' AND t = ANY (weekday_names) THEN
                v := array_position(weekday_names, t) - 1;
                mask := mask | (1::bigint << v);
            ELSIF kind = 'day' AND t = 'l' THEN
                mask := mask | 1;
                CONTINUE;
            ELSE
                RAISE EXCEPTION 'invalid cron "%": % "%" is not %', cron, label, shown, allowed
                    USING ERRCODE = 'invalid_parameter_value', HINT = hint;
            END IF;
            IF nth IS NOT NULL THEN
                nth_mask := nth_mask | (1::bigint << (8 * v + nth));
            END IF;
        END LOOP;
        IF specials > 0 AND specials < cardinality(items) THEN  -- as cron.py: all or none
            RAISE EXCEPTION 'invalid cron "%": day of week "%": # and L cannot be mixed with plain days of the week',
                cron, typed[i] USING ERRCODE = 'invalid_parameter_value', HINT = hint;
        END IF;

        -- croniter reads a field listing every value as * ... except day of month (or day of week)
        -- when the other day field has no *: then it stays a list, and the two are OR-ed.
        elements := bit_count(mask::bit(64))::integer + star_item::integer;
        collapsed := elements = len_all
            AND NOT ((kind = 'day' AND position('*' IN weekday_text) = 0)
                     OR (kind = 'weekday' AND position('*' IN day_text) = 0));
        is_star := star_item OR collapsed;
        full_mask := ((1::bigint << (hi + 1)) - 1) & ~((1::bigint << lo) - 1);
        CASE kind
            WHEN 'second' THEN seconds := CASE WHEN is_star THEN full_mask ELSE mask END;
            WHEN 'minute' THEN minutes := CASE WHEN is_star THEN full_mask ELSE mask END;
            WHEN 'hour' THEN
                hours := CASE WHEN is_star THEN full_mask ELSE mask END;
                every_hour := is_star;  -- every hour covered: a repeated hour fires at each reading
            WHEN 'month' THEN months := CASE WHEN is_star THEN full_mask ELSE mask END;
            WHEN 'day' THEN days := CASE WHEN is_star THEN NULL ELSE mask END;
            ELSE
                weekdays := CASE WHEN is_star THEN NULL ELSE mask END;
                IF specials > 0 THEN
                    nth_weekdays := nth_mask;
                END IF;
        END CASE;
    END LOOP;

    -- As croniter (and so parse_cron) does: a cron must fire within 50 years of 2000-01-01.
    IF (days IS NOT NULL OR nth_weekdays IS NOT NULL) AND reminderd.cron_next_wall(
        CASE WHEN with_seconds THEN timestamp '2000-01-01 00:00:01' ELSE timestamp '2000-01-01 00:01' END,
        seconds, minutes, hours, months, days, nearest_weekday, weekdays, nth_weekdays) IS NULL
    THEN
        RAISE EXCEPTION 'invalid cron "%": it never fires', cron
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'No day matches its day of month, month and day of week in 50 years from 2000-01-01.',
                  HINT = 'Check the day against the month: there is no 30 February, and no 31st in April, June, September or November.';
    END IF;
END
$$;

-- The first wall time at or after `start` that the fields of reminderd.cron_parse() allow; NULL when
-- none comes within 50 calendar years (croniter's limit). croniter's rules for the day fields: both
-- restricted, a day matching either fires; with # or W there, each side keeps its # or W and both
-- sides must be able to fire.
CREATE FUNCTION reminderd.cron_next_wall(
    start timestamp, seconds bigint, minutes bigint, hours bigint, months bigint,
    days bigint, nearest_weekday integer, weekdays bigint, nth_weekdays bigint
) RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    y          integer := extract(year FROM start);
    mo         integer := extract(month FROM start);
    d          integer := extract(day FROM start);
    h          integer := extract(hour FROM start);
    mi         integer := extract(minute FROM start);
    s          integer := floor(extract(second FROM start));
    last_year  integer := least(y + 50, 9999);
    day_or     boolean := days IS NOT NULL AND weekdays IS NOT NULL;
    one        constant bigint := 1;
    days_in    integer;
    first_dow  integer;
    valid      bigint;
    by_day     bigint;
    by_weekday bigint;
    candidates bigint;
    rotated    bigint;
    bits       bigint;
    wd         integer;
    wd_dow     integer;
    first_day  integer;
    dd         integer;
    hh         integer;
    mm         integer;
    ss         integer;
    either     timestamp;
    other      timestamp;
BEGIN
    IF start IS NULL OR seconds IS NULL OR minutes IS NULL OR hours IS NULL OR months IS NULL THEN
        RETURN NULL;
    END IF;
    IF day_or AND (nth_weekdays IS NOT NULL OR nearest_weekday IS NOT NULL) THEN
        either := reminderd.cron_next_wall(start, seconds, minutes, hours, months, days, nearest_weekday, NULL, nth_weekdays);
        other := reminderd.cron_next_wall(start, seconds, minutes, hours, months, NULL, nearest_weekday, weekdays, nth_weekdays);
        RETURN CASE WHEN either IS NULL OR other IS NULL THEN NULL ELSE least(either, other) END;
    END IF;
    LOOP
        IF y > last_year THEN
            RETURN NULL;
        END IF;
        IF (months >> mo) & 1 = 0 THEN  -- on to the next allowed month
            bits := months & (-one << mo);
            IF bits = 0 THEN
                y := y + 1;
                bits := months;
            END IF;
            mo := bit_count(((bits & -bits) - 1)::bit(64));
            d := 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        days_in := CASE WHEN mo = 2 THEN CASE WHEN (y % 4 = 0 AND y % 100 <> 0) OR y % 400 = 0 THEN 29 ELSE 28 END
                        WHEN mo IN (4, 6, 9, 11) THEN 30 ELSE 31 END;
        first_dow := ((make_date(y, mo, 1) - date '2000-01-02') % 7 + 7) % 7;  -- 0 = Sunday
        valid := (one << (days_in + 1)) - 2;
        -- Days of this month allowed by the day-of-month field (bit d for day d) ...
        IF nearest_weekday IS NOT NULL THEN
            wd := least(nearest_weekday, days_in);
            wd_dow := (first_dow + wd - 1) % 7;
            wd := CASE WHEN wd_dow = 6 THEN CASE WHEN wd > 1 THEN wd - 1 ELSE wd + 2 END
                       WHEN wd_dow = 0 THEN CASE WHEN wd < days_in THEN wd + 1 ELSE wd - 2 END
                       ELSE wd END;
            by_day := one << wd;
        ELSIF days IS NULL THEN
            by_day := valid;
        ELSE
            by_day := (days & valid) | CASE WHEN days & 1 = 1 THEN one << days_in ELSE 0 END;
        END IF;
        -- ... and by the day-of-week field.
        IF nth_weekdays IS NOT NULL THEN
            by_weekday := 0;
            FOR w IN 0..6 LOOP
                bits := (nth_weekdays >> (8 * w)) & 255;
                CONTINUE WHEN bits = 0;
                first_day := 1 + (w - first_dow + 7) % 7;
                FOR k IN 1..5 LOOP
                    IF (bits >> k) & 1 = 1 AND first_day + 7 * (k - 1) <= days_in THEN
                        by_weekday := by_weekday | (one << (first_day + 7 * (k - 1)));
                    END IF;
                END LOOP;
                IF (bits >> 6) & 1 = 1 THEN
                    by_weekday := by_weekday | (one << (first_day + 7 * ((days_in - first_day) / 7)));
                END IF;
            END LOOP;
        ELSIF weekdays IS NULL THEN
            by_weekday := valid;
        ELSE
            rotated := ((weekdays >> first_dow) | (weekdays << (7 - first_dow))) & 127;  -- bit j: day j + 1
            -- (PostgreSQL gives | & << >> one precedence, left to right: hence the brackets.)
            by_weekday := ((rotated | (rotated << 7) | (rotated << 14) | (rotated << 21) | (rotated << 28)) << 1) & valid;
        END IF;
        candidates := CASE WHEN day_or THEN by_day | by_weekday ELSE by_day & by_weekday END;
        candidates := candidates & (-one << d);
        WHILE candidates <> 0 LOOP
            dd := bit_count(((candidates & -candidates) - 1)::bit(64));
            IF dd > d THEN
                d := dd; h := 0; mi := 0; s := 0;
            END IF;
            -- The first time of day at or after h:mi:s.
            bits := hours & (-one << h);
            WHILE bits <> 0 LOOP
                hh := bit_count(((bits & -bits) - 1)::bit(64));
                bits := minutes & (-one << CASE WHEN hh = h THEN mi ELSE 0 END);
                WHILE bits <> 0 LOOP
                    mm := bit_count(((bits & -bits) - 1)::bit(64));
                    bits := seconds & (-one << CASE WHEN hh = h AND mm = mi THEN s ELSE 0 END);
                    IF bits <> 0 THEN
                        ss := bit_count(((bits & -bits) - 1)::bit(64));
                        RETURN make_timestamp(y, mo, dd, hh, mm, ss);
                    END IF;
                    bits := minutes & (-one << (mm + 1));
                END LOOP;
                bits := hours & (-one << (hh + 1));
            END LOOP;
            candidates := candidates & (candidates - 1);
            d := dd + 1; h := 0; mi := 0; s := 0;
        END LOOP;
        mo := mo + 1;
        d := 1; h := 0; mi := 0; s := 0;
        IF mo > 12 THEN
            mo := 1;
            y := y + 1;
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION reminderd.next_cron_occurrence(cron text, timezone text, after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT
SET TimeZone = 'UTC'  -- saved and restored around each call; set to `timezone` below
AS $$
DECLARE
    window_size constant interval := interval '3 hours';  -- wider than any clock change
    tiny        constant interval := interval '1 microsecond';
    max_restarts constant integer := 8;
    f           record;
    unit        interval;
    unit_name   text;
    cursor_wall timestamp;
    candidate   timestamp;
    instant     timestamptz;
    first       timestamptz;
    jump        timestamptz;
    best        timestamptz;
    found       timestamptz;
    zone_offset interval;
    actual      interval;
    elsewhere   interval;
    offsets     interval[];
    tried       interval[] := '{}';
BEGIN
    IF NOT isfinite(after) THEN
        RAISE EXCEPTION 'after must be a finite instant, not %', after USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO f FROM reminderd.cron_parse(cron);

    PERFORM reminderd.check_timezone(timezone);
    PERFORM set_config('TimeZone', timezone, true);

    -- croniter steps from a wall time to the first one strictly after it, in whole minutes (or
    -- seconds); the DST rules below are wallclock.py's next_instant, step for step.
    unit := CASE WHEN f.with_seconds THEN interval '1 second' ELSE interval '1 minute' END;
    unit_name := CASE WHEN f.with_seconds THEN 'second' ELSE 'minute' END;

    IF NOT f.every_hour THEN
        -- First readings (or jumps) never run backwards: the first wall time after `after`'s own
        -- that maps to a later instant is the answer. Wall times repeated after a backward jump,
        -- first read before `after`, are passed over in one step.
        cursor_wall := after::timestamp;
        FOR attempt IN 1..max_restarts LOOP
            candidate := reminderd.cron_next_wall(date_trunc(unit_name, cursor_wall + unit),
                f.seconds, f.minutes, f.hours, f.months, f.days, f.nearest_weekday, f.weekdays, f.nth_weekdays);
            IF candidate IS NULL THEN
                RAISE EXCEPTION 'cron "%" does not fire in the 50 years after % in %', cron, cursor_wall, timezone
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'The search looks 50 years ahead, as croniter''s does, and not past the year 9999.';
            END IF;
            instant := reminderd.first_reading(candidate);
            IF instant > after THEN
                RETURN instant;
            END IF;
            jump := reminderd.offset_change(instant, after);
            cursor_wall := (jump AT TIME ZONE interval '0')
                + (instant::timestamp - (instant AT TIME ZONE interval '0')) - tiny;
        END LOOP;
        RAISE EXCEPTION 'no fire time found for cron "%" in % after %', cron, timezone, after AT TIME ZONE interval '0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Every real instant a wall time is read (and the jump over skipped ones): the earliest over
    -- the UTC offsets in force near `after`, and over any era a candidate lands in.
    offsets := ARRAY[
        (after - window_size)::timestamp - ((after - window_size) AT TIME ZONE interval '0'),
        after::timestamp - (after AT TIME ZONE interval '0'),
        (after + window_size)::timestamp - ((after + window_size) AT TIME ZONE interval '0')];
    WHILE cardinality(offsets) > 0 LOOP
        zone_offset := offsets[cardinality(offsets)];
        offsets := offsets[1:cardinality(offsets) - 1];
        CONTINUE WHEN zone_offset = ANY (tried);
        tried := tried || zone_offset;
        -- The first instant after `after` at which the clock, showing UTC+zone_offset, reads one of
        -- the cron's wall times (or the jump over a skipped one); or, when this offset's era is
        -- over by then, the offset in force there, to be tried too.
        found := NULL;
        elsewhere := NULL;
        cursor_wall := (after AT TIME ZONE interval '0') + zone_offset;
        FOR attempt IN 1..max_restarts + 1 LOOP
            IF attempt > max_restarts THEN
                RAISE EXCEPTION 'no fire time found for cron "%" in % after %', cron, timezone, after AT TIME ZONE interval '0'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            candidate := reminderd.cron_next_wall(date_trunc(unit_name, cursor_wall + unit),
                f.seconds, f.minutes, f.hours, f.months, f.days, f.nearest_weekday, f.weekdays, f.nth_weekdays);
            IF candidate IS NULL THEN
                RAISE EXCEPTION 'cron "%" does not fire in the 50 years after % in %', cron, cursor_wall, timezone
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'The search looks 50 years ahead, as croniter''s does, and not past the year 9999.';
            END IF;
            instant := (candidate - zone_offset) AT TIME ZONE interval '0';
            actual := instant::timestamp - (instant AT TIME ZONE interval '0');
            IF actual = zone_offset THEN
                found := instant;
                EXIT;
            END IF;
            first := reminderd.first_reading(candidate);
            IF first::timestamp = candidate THEN  -- a real wall time, but read under another offset
                IF (instant + window_size)::timestamp - ((instant + window_size) AT TIME ZONE interval '0')
                   <> zone_offset THEN
                    elsewhere := actual;  -- this offset's era is over
                    EXIT;
                END IF;
                jump := reminderd.offset_change(instant, instant + window_size);  -- or soon to begin
                cursor_wall := (jump AT TIME ZONE interval '0') + zone_offset - tiny;
            ELSIF first > after THEN  -- skipped by a forward jump: it fires at the jump
                found := first;
                EXIT;
            ELSE  -- skipped, and the jump is past: go on from the end of the gap
                cursor_wall := first::timestamp - tiny;
            END IF;
        END LOOP;
        IF found IS NOT NULL AND (best IS NULL OR found < best) THEN
            best := found;
        END IF;
        IF elsewhere IS NOT NULL THEN
            offsets := offsets || elsewhere;
        END IF;
    END LOOP;
    RETURN best;  -- NULL only where wallclock.py returns None too
END
$$;

-- The first occurrence of a recurrence after `after`, computed in SQL: how schedule_cron() gives a
-- new cron row its first fire_at (holidays aside: see schedule_recurring). NULL for an RRULE: the
-- daemon's planner, woken by the NOTIFY 'plan' the insert sends, computes it with the code that
-- times every later occurrence (reminderd/schedule), within a poll interval.
CREATE FUNCTION reminderd.first_occurrence(cron text, rrule text, timezone text, after timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT reminderd.next_cron_occurrence(cron, timezone, after)
$$;

-- Functions: scheduling ---------------------------------------------------------------------------

-- One-off: exactly one of fire_at (an instant), fire_in (a delay) or local_time (a wall time in
-- `timezone`, e.g. '2026-12-24 09:00' in Asia/Kolkata). `timezone` is the recipient's: quiet
-- hours and holidays are read in it. With contact_id and no timezone, the zone is the contact's
-- (docs/audiences.md); a wall time is kept in local_time, to be placed again if that zone changes.
CREATE FUNCTION reminderd.schedule(
    tenant_id text, ref_id text, fire_at timestamptz DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    fire_in interval DEFAULT NULL, max_attempts integer DEFAULT NULL,
    local_time timestamp DEFAULT NULL, timezone text DEFAULT NULL,
    category text DEFAULT 'transactional', calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL,
    backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL, contact_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due      timestamptz;
    existing bigint;
    new_id   bigint;
    zone     text;
    source   text;
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
    SELECT z.zone, z.source INTO zone, source
    FROM reminderd.message_timezone(schedule.tenant_id, schedule.contact_id, schedule.timezone) AS z;
    -- Times that are no time, before any arithmetic on them (migration 0021): a wall time that is not
    -- finite, a delay past what a timestamptz holds (294276 AD), refused as beyond the horizon.
    IF NOT isfinite(schedule.local_time) THEN
        PERFORM reminderd.refuse_infinite_time('local_time', schedule.local_time::text,
                                               format('message %s / %s', schedule.tenant_id, schedule.ref_id));
    ELSIF schedule.fire_in > interval '200000 years' THEN
        PERFORM reminderd.check_fire_at(now() + interval '200000 years',
                                        format('message %s / %s', schedule.tenant_id, schedule.ref_id),
                                        format('fire_in %s', schedule.fire_in));
    END IF;
    due := coalesce(schedule.fire_at, now() + schedule.fire_in, reminderd.local_instant(schedule.local_time, zone));
    PERFORM reminderd.check_fire_at(due, format('message %s / %s', schedule.tenant_id, schedule.ref_id));
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
      AND m.timezone = zone
      AND m.contact_id IS NOT DISTINCT FROM schedule.contact_id
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
         holiday_rule, backfill, max_lateness, contact_id, timezone_source, local_time)
    VALUES (schedule.tenant_id, schedule.ref_id, due, coalesce(schedule.payload, '{}'),
            schedule.callback_url, schedule.max_attempts, zone,
            coalesce(schedule.category, 'transactional'), schedule.calendar, schedule.holiday_rule,
            schedule.backfill, schedule.max_lateness, schedule.contact_id, source, schedule.local_time)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Recurring: exactly one of cron and rrule. Replaces the reference's live row. Its first fire_at
-- is first_fire_at when the caller computed it (the CLI, with the daemon's code), else
-- reminderd.first_occurrence() unless a holiday may fall on it, else the daemon plans it. Its
-- timezone and cron are checked first, with the sentences a plain INSERT gets. Given a contact_id
-- (and no timezone), its zone is the contact's, as for schedule().
CREATE FUNCTION reminderd.schedule_recurring(
    tenant_id text, ref_id text, cron text, rrule text, timezone text,
    payload jsonb, callback_url text, until timestamptz, max_runs integer, category text,
    calendar text, holiday_rule text, backfill text, max_lateness interval, max_attempts integer,
    first_fire_at timestamptz DEFAULT NULL, contact_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id  bigint;
    due     timestamptz;
    zone    text;
    source  text;
    subject text := format('message %s / %s', schedule_recurring.tenant_id, schedule_recurring.ref_id);
    tenant  record;
BEGIN
    IF num_nonnulls(schedule_recurring.cron, schedule_recurring.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of cron and rrule (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM reminderd.check_tenant(schedule_recurring.tenant_id);
    SELECT z.zone, z.source INTO zone, source
    FROM reminderd.message_timezone(schedule_recurring.tenant_id, schedule_recurring.contact_id,
                                    schedule_recurring.timezone) AS z;
    PERFORM reminderd.check_timezone(zone, subject);
    PERFORM reminderd.check_cron(schedule_recurring.cron, subject);
    IF NOT isfinite(schedule_recurring.first_fire_at) THEN  -- migration 0021
        PERFORM reminderd.refuse_infinite_time('first_fire_at', schedule_recurring.first_fire_at::text, subject);
    END IF;
    IF schedule_recurring.first_fire_at < now() - interval '1 minute' THEN
        RAISE EXCEPTION 'first_fire_at % of message % / % is in the past',
            to_char(schedule_recurring.first_fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            schedule_recurring.tenant_id, schedule_recurring.ref_id
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Leave it NULL: the first occurrence after now is planned for you.';
    END IF;
    due := coalesce(schedule_recurring.first_fire_at,
                    reminderd.first_occurrence(schedule_recurring.cron, schedule_recurring.rrule, zone, now()));
    IF due > schedule_recurring.until AND schedule_recurring.until > now() THEN  -- past: the insert says so
        RAISE EXCEPTION 'message % / % has no occurrence before its until %', schedule_recurring.tenant_id,
            schedule_recurring.ref_id,
            to_char(schedule_recurring.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('Its first occurrence would be %s: it would finish without sending anything.',
                                  to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  HINT = 'Give a later until, or none.';
    END IF;
    -- Holidays (holiday_rule 'skip', the row's or its tenant's) move a first occurrence that falls
    -- on one. SQL knows a tenant's own days off but not public calendars (Python's holidays
    -- package): with a calendar, or a day off on that local day, the daemon's planner times it.
    IF schedule_recurring.first_fire_at IS NULL AND due IS NOT NULL THEN
        SELECT t.calendar, t.holiday_rule INTO tenant
        FROM reminderd.tenants t WHERE t.id = schedule_recurring.tenant_id;
        IF coalesce(schedule_recurring.holiday_rule, tenant.holiday_rule) = 'skip'
           AND (coalesce(schedule_recurring.calendar, tenant.calendar) IS NOT NULL
                OR EXISTS (SELECT FROM reminderd.tenant_holidays h
                           WHERE h.tenant_id = schedule_recurring.tenant_id
                             AND h.day = reminderd.wall_time(due, zone)::date))
        THEN
            due := NULL;
        END IF;
    END IF;
    PERFORM reminderd.cancel_live(schedule_recurring.tenant_id, schedule_recurring.ref_id, 'replaced by a new schedule');
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, cron, rrule, timezone, payload, callback_url, until, max_runs, category,
         calendar, holiday_rule, backfill, max_lateness, max_attempts, fire_at, contact_id, timezone_source)
    VALUES (schedule_recurring.tenant_id, schedule_recurring.ref_id, schedule_recurring.cron,
            schedule_recurring.rrule, zone, coalesce(schedule_recurring.payload, '{}'),
            schedule_recurring.callback_url,
            schedule_recurring.until, schedule_recurring.max_runs,
            coalesce(schedule_recurring.category, 'transactional'), schedule_recurring.calendar,
            schedule_recurring.holiday_rule, schedule_recurring.backfill, schedule_recurring.max_lateness,
            schedule_recurring.max_attempts, due, schedule_recurring.contact_id, source)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION reminderd.schedule_cron(
    tenant_id text, ref_id text, cron text, timezone text DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    until timestamptz DEFAULT NULL, max_runs integer DEFAULT NULL, category text DEFAULT 'transactional',
    calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL,
    max_lateness interval DEFAULT NULL, max_attempts integer DEFAULT NULL, contact_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF cron IS NULL THEN
        RAISE EXCEPTION 'cron must not be NULL (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN reminderd.schedule_recurring(tenant_id, ref_id, cron, NULL, timezone, payload, callback_url,
        until, max_runs, category, calendar, holiday_rule, backfill, max_lateness, max_attempts,
        contact_id => contact_id);
END
$$;

CREATE FUNCTION reminderd.schedule_rrule(
    tenant_id text, ref_id text, rrule text, timezone text DEFAULT NULL,
    payload jsonb DEFAULT '{}', callback_url text DEFAULT NULL,
    until timestamptz DEFAULT NULL, max_runs integer DEFAULT NULL, category text DEFAULT 'transactional',
    calendar text DEFAULT NULL, holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL,
    max_lateness interval DEFAULT NULL, max_attempts integer DEFAULT NULL, contact_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF rrule IS NULL THEN
        RAISE EXCEPTION 'rrule must not be NULL (use schedule for a one-off message)'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN reminderd.schedule_recurring(tenant_id, ref_id, NULL, rrule, timezone, payload, callback_url,
        until, max_runs, category, calendar, holiday_rule, backfill, max_lateness, max_attempts,
        contact_id => contact_id);
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
      AND status IN ('pending', 'picked', 'paused', 'awaiting_approval');
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
      AND status IN ('pending', 'picked', 'paused', 'awaiting_approval');
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
    PERFORM reminderd.check_fire_at(reschedule.fire_at, format('message %s / %s', reschedule.tenant_id,
                                                               reschedule.ref_id));
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

-- Whether a dead row died after its receiver accepted it (migration 0037): the attempt of its
-- last claim was delivered (sent_at set by that claim's record, after its picked_at), and the row
-- was dead-lettered all the same: its outcome could not be recorded, or a recurring row could not
-- compute its next occurrence. Its dead reason says so ("delivered (HTTP 200, attempt 1), but …").
-- requeue refuses to send such a one-off again unless told to (resend => true); a recurring one
-- moves to its next occurrence instead. False for any row not dead.
CREATE FUNCTION reminderd.died_delivered(m reminderd.scheduled_messages) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT m.status = 'dead' AND m.picked_at IS NOT NULL AND m.sent_at IS NOT NULL AND m.sent_at >= m.picked_at
$$;
COMMENT ON FUNCTION reminderd.died_delivered(reminderd.scheduled_messages) IS
    'Whether a dead message died after its receiver accepted it (requeue will not send it again unless resend).';

-- A dead row goes back to pending, due now, attempts reset (same occurrence: same webhook-id).
-- One that died after delivery (died_delivered) is not sent again by mistake: a one-off is
-- refused (55000) unless `resend`; a recurring one, unless `resend`, goes to its next occurrence
-- (fire_at NULL: the daemon plans its first occurrence after now), not to the delivered one.
-- (migration 0038) One in a zone this server's tz database cannot read is refused (22023): it
-- has no instant of its local time. A broadcast's row staged dead for that reason (never claimed)
-- whose zone is readable now goes to its wall time's instant in its zone, or now if that passed.
CREATE FUNCTION reminderd.requeue(message_id bigint, resend boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    message  reminderd.scheduled_messages;
    onward   boolean;
    placed   boolean;
    requeued integer;
BEGIN
    SELECT * INTO message FROM reminderd.scheduled_messages m WHERE m.id = requeue.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no message with id %', requeue.message_id USING ERRCODE = 'no_data_found';
    END IF;
    onward := NOT requeue.resend AND reminderd.died_delivered(message);
    -- A broadcast's row staged dead, never claimed: its zone was unreadable then (migration 0038).
    placed := message.broadcast_id IS NOT NULL AND message.contact_id IS NOT NULL AND message.picked_at IS NULL
              AND message.local_time IS NOT NULL;
    IF message.status = 'dead' AND NOT reminderd.is_timezone(message.timezone) THEN
        RAISE EXCEPTION 'message % / % (id %) is in timezone "%", which this database server''s tz database '
                        'cannot read: requeued, it would be sent at no instant of its local time',
                        message.tenant_id, message.ref_id, message.id, message.timezone
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its dead reason: %s', coalesce(message.last_error, '(none recorded)')),
                  HINT = CASE WHEN message.contact_id IS NOT NULL
                              THEN format('Correct the timezone of contact %s (its next messages use it), or update '
                                          'the server''s tzdata and requeue it then.', message.contact_id)
                              ELSE 'Update the server''s tzdata and requeue it then, or schedule it again in a '
                                   'zone this server can read.' END;
    END IF;
    IF onward AND message.cron IS NULL AND message.rrule IS NULL THEN
        RAISE EXCEPTION 'message % / % (id %) was delivered before it died: requeueing it would send it again',
                        message.tenant_id, message.ref_id, message.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its dead reason: %s', coalesce(message.last_error, '(none recorded)')),
                  HINT = format('Pass resend => true to send it again: SELECT reminderd.requeue(%s, resend => true);',
                                message.id);
    END IF;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', attempts = 0,
        scheduled_for = CASE WHEN onward OR placed THEN NULL ELSE coalesce(m.scheduled_for, m.fire_at) END,
        fire_at = CASE WHEN onward THEN NULL
                       WHEN placed THEN greatest(reminderd.local_instant(m.local_time, m.timezone), now())
                       ELSE now() END,
        last_event = 'requeued',
        last_error = CASE WHEN onward THEN 'requeued to its next occurrence (the last was delivered) from: '
                          ELSE 'requeued from: ' END || coalesce(m.last_error, ''),
        updated_at = now()
    WHERE m.id = requeue.message_id AND m.status = 'dead'
      AND NOT EXISTS (SELECT 1 FROM reminderd.scheduled_messages live
                      WHERE live.tenant_id = m.tenant_id AND live.ref_id = m.ref_id
                        AND live.status IN ('pending', 'picked', 'paused', 'awaiting_approval'));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;

-- A tenant's rows that died at or after `since`, requeued (requeue); one-offs that died after
-- delivery are skipped (a NOTICE says how many: requeue each with resend => true to send it again),
-- and so are rows in a zone this server cannot read (migration 0038: a NOTICE too).
CREATE FUNCTION reminderd.requeue_dead(tenant_id text, since timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    requeued integer := 0;
    skipped  integer := 0;
    zoneless integer := 0;
    message  record;
BEGIN
    PERFORM reminderd.check_tenant(requeue_dead.tenant_id);
    FOR message IN
        SELECT m.id, reminderd.died_delivered(m) AND m.cron IS NULL AND m.rrule IS NULL AS delivered,
               NOT reminderd.is_timezone(m.timezone) AS unreadable
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = requeue_dead.tenant_id AND m.status = 'dead' AND m.updated_at >= requeue_dead.since
        ORDER BY m.id
    LOOP
        IF message.unreadable THEN
            zoneless := zoneless + 1;
        ELSIF message.delivered THEN
            skipped := skipped + 1;
        ELSE
            requeued := requeued + reminderd.requeue(message.id);
        END IF;
    END LOOP;
    IF skipped > 0 THEN
        RAISE NOTICE '% dead message(s) of tenant % skipped: delivered before they died', skipped, requeue_dead.tenant_id
            USING HINT = 'Requeue one with reminderd.requeue(id, resend => true) to send it again.';
    END IF;
    IF zoneless > 0 THEN
        RAISE NOTICE '% dead message(s) of tenant % skipped: in a zone this database server cannot read', zoneless,
            requeue_dead.tenant_id
            USING HINT = 'Correct their contacts'' timezone, or update the server''s tzdata and requeue them then.';
    END IF;
    RETURN requeued;
END
$$;

-- Functions: secrets and retention ----------------------------------------------------------------

-- Is `secret` one the daemon can sign with: whsec_, then the base64 of at least one byte, padded
-- as base64 is (reminderd/signing.py's SECRET_FORMAT, the same expression; a test compares them
-- on valid and invalid secrets)? NULL for NULL. The rule validate_tenant refuses a new secret by
-- (migration 0025).
CREATE FUNCTION reminderd.is_signing_secret(secret text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT secret ~ '^whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$'
$$;

-- Secret rotation: a new secret now, the old one still signs for `grace`. Rotating again within a
-- grace (a rotation whose answer was lost, say) never cuts a secret's grace short: the one still in
-- its grace moves to earlier_signing_secret and keeps signing until its own expiry, so receivers
-- that know only the secret before the lost one keep verifying (migration 0035). Two rotated-out
-- secrets are kept: at a third rotation within a grace, the oldest still in its grace and the one
-- being replaced are kept, the one between them dropped. No old secret signs beyond this
-- rotation's grace: grace 0 (a leaked secret) retires every old one at once.
CREATE FUNCTION reminderd.rotate_secret(tenant_id text, grace interval DEFAULT '24 hours') RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fresh text := reminderd.generate_secret();
BEGIN
    PERFORM reminderd.check_tenant(rotate_secret.tenant_id);
    UPDATE reminderd.tenants t  -- a secret nothing can sign with (written before 0025) is not kept
    SET earlier_signing_secret = CASE WHEN kept.secret IS NOT NULL AND kept.until > now() THEN kept.secret END,
        earlier_secret_expires_at = CASE WHEN kept.secret IS NOT NULL AND kept.until > now() THEN kept.until END,
        previous_signing_secret = CASE WHEN reminderd.is_signing_secret(t.signing_secret) THEN t.signing_secret END,
        previous_secret_expires_at = now() + rotate_secret.grace,
        signing_secret = fresh
    FROM (SELECT o.id, coalesce(earlier.secret, previous.secret) AS secret,
                 least(coalesce(earlier.until, previous.until), now() + rotate_secret.grace) AS until
          FROM reminderd.tenants o
          LEFT JOIN LATERAL (SELECT o.earlier_signing_secret AS secret, o.earlier_secret_expires_at AS until
                             WHERE o.earlier_secret_expires_at > now()
                               AND reminderd.is_signing_secret(o.earlier_signing_secret)) AS earlier ON true
          LEFT JOIN LATERAL (SELECT o.previous_signing_secret AS secret, o.previous_secret_expires_at AS until
                             WHERE o.previous_secret_expires_at > now()
                               AND reminderd.is_signing_secret(o.previous_signing_secret)) AS previous ON true
          WHERE o.id = rotate_secret.tenant_id) AS kept
    WHERE t.id = rotate_secret.tenant_id AND kept.id = t.id;
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

-- Functions: what the HTTP API calls (also usable from SQL) --------------------------------------

-- The batch functions take schedule_item_v2 (migration 0014): an item may name a contact.

-- One item: through reminderd.schedule() or reminderd.schedule_recurring(), so with the same rules,
-- the same replacement and the same identical-call answer as a call of its own. result: created,
-- replaced (the ref's live message was cancelled for it) or unchanged (an identical call: the
-- message it created).
CREATE FUNCTION reminderd.schedule_item(tenant_id text, one reminderd.schedule_item_v2,
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
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval') AND m.extra_of IS NULL;
    IF one.cron IS NULL AND one.rrule IS NULL THEN
        message_id := reminderd.schedule(
            schedule_item.tenant_id, one.ref_id, one.fire_at, coalesce(one.payload, '{}'), one.callback_url,
            one.fire_in, one.max_attempts, one.local_time,
            CASE WHEN one.contact_id IS NULL THEN coalesce(one.timezone, 'UTC') ELSE one.timezone END,
            coalesce(one.category, 'transactional'), one.calendar, one.holiday_rule, one.backfill, one.max_lateness,
            one.contact_id);
    ELSE
        message_id := reminderd.schedule_recurring(
            schedule_item.tenant_id, one.ref_id, one.cron, one.rrule,
            CASE WHEN one.contact_id IS NULL THEN coalesce(one.timezone, 'UTC') ELSE one.timezone END,
            coalesce(one.payload, '{}'), one.callback_url, one.until, one.max_runs,
            coalesce(one.category, 'transactional'), one.calendar, one.holiday_rule, one.backfill,
            one.max_lateness, one.max_attempts, one.first_fire_at, one.contact_id);
    END IF;
    SELECT m.status, m.fire_at INTO status, fire_at FROM reminderd.scheduled_messages m WHERE m.id = message_id;
    -- A new row is pending (or paused, for a paused tenant); a sent one was there before.
    result := CASE WHEN message_id = live OR (live IS NULL AND status = 'sent') THEN 'unchanged'
                   WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END;
END
$$;

-- reminderd.schedule_set() for a batch of one one-off item (POST /v1/messages, when nothing else
-- arrives with it): the same steps, each a statement about one row (no contact, a wall time kept,
-- awaiting approval live, as there). Raises, without saying why, whatever schedule_item() would
-- refuse.
CREATE FUNCTION reminderd.schedule_one(tenant_id text, one reminderd.schedule_item_v2)
RETURNS reminderd.item_scheduled_v1
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due    timestamptz;
    same   record;
    live   bigint;
    doomed boolean;
    zone   text := coalesce(one.timezone, 'UTC');
    source text := 'message';
    done   reminderd.item_scheduled_v1;
BEGIN
    IF one.contact_id IS NOT NULL THEN
        SELECT z.zone, z.source INTO zone, source
        FROM reminderd.message_timezone(schedule_one.tenant_id, one.contact_id, one.timezone) AS z;
    END IF;
    -- A time that is no time (migration 0021: not finite, or a delay past what a timestamptz holds)
    -- stands for infinity here, and is refused below, so that schedule_item says why.
    due := coalesce(one.fire_at,
                    CASE WHEN one.fire_in > interval '200000 years' THEN 'infinity' ELSE now() + one.fire_in END,
                    CASE WHEN NOT isfinite(one.local_time) THEN 'infinity'
                         ELSE reminderd.local_instant(one.local_time, zone) END);
    IF coalesce(one.ref_id, '') = '' OR num_nonnulls(one.fire_at, one.fire_in, one.local_time) <> 1
       OR one.fire_in < interval '0' OR NOT isfinite(due)
       OR due > now() + (SELECT c.value::interval FROM reminderd.config c WHERE c.key = 'horizon')
       OR NOT EXISTS (SELECT FROM reminderd.tenants t WHERE t.id = schedule_one.tenant_id)
    THEN
        RAISE EXCEPTION 'this item is scheduled by reminderd.schedule_item'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It is refused: schedule_many() says why.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(schedule_one.tenant_id || chr(31) || one.ref_id, 0));
    SELECT m.id, m.status, m.fire_at INTO same
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule_one.tenant_id AND m.ref_id = one.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'sent')
      AND m.cron IS NULL AND m.rrule IS NULL
      AND m.payload = coalesce(one.payload, '{}')
      AND m.callback_url IS NOT DISTINCT FROM one.callback_url
      AND m.max_attempts IS NOT DISTINCT FROM one.max_attempts
      AND m.timezone = zone
      AND m.contact_id IS NOT DISTINCT FROM one.contact_id
      AND m.category = coalesce(one.category, 'transactional')
      AND m.calendar IS NOT DISTINCT FROM one.calendar
      AND m.holiday_rule IS NOT DISTINCT FROM one.holiday_rule
      AND m.backfill IS NOT DISTINCT FROM one.backfill
      AND m.max_lateness IS NOT DISTINCT FROM one.max_lateness
      AND CASE WHEN one.fire_in IS NULL
               THEN coalesce(m.scheduled_for, m.fire_at) = due
               ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                        - extract(epoch FROM one.fire_in)) < 1 END
    ORDER BY m.id DESC
    LIMIT 1;
    SELECT max(m.id) FILTER (WHERE m.extra_of IS NULL), count(*) > 0 INTO live, doomed
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = schedule_one.tenant_id AND m.ref_id = one.ref_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    IF same.id IS NOT NULL THEN
        done := ROW(1, same.id, CASE WHEN same.id = live OR (live IS NULL AND same.status = 'sent') THEN 'unchanged'
                                     WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END,
                    same.status, same.fire_at);
        RETURN done;
    END IF;
    IF doomed THEN
        UPDATE reminderd.scheduled_messages m
        SET status = 'cancelled', last_error = 'replaced by a new schedule', lease_expires_at = NULL,
            updated_at = now(), last_event = 'replaced'
        WHERE m.tenant_id = schedule_one.tenant_id AND m.ref_id = one.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    END IF;
    INSERT INTO reminderd.scheduled_messages
        (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
         holiday_rule, backfill, max_lateness, local_time, contact_id, timezone_source)
    VALUES (schedule_one.tenant_id, one.ref_id, due, coalesce(one.payload, '{}'), one.callback_url,
            one.max_attempts, zone, coalesce(one.category, 'transactional'),
            one.calendar, one.holiday_rule, one.backfill, one.max_lateness, one.local_time, one.contact_id,
            source)
    RETURNING 1, id, CASE WHEN live IS NOT NULL THEN 'replaced' ELSE 'created' END, status, fire_at INTO done;
    RETURN done;
END
$$;


-- Several messages at once, set-based: what reminderd.schedule_many() tries first. The rules of
-- reminderd.schedule_item() (so of schedule() and schedule_recurring()), the same replacement,
-- the same identical-call answer, rows, events and results, in a few statements for the whole
-- batch instead of a dozen per item: the refs' advisory locks, then the broadcast lock of each
-- completion-callback ref's prefix (prefix#completed…, which check_completion_ref re-takes:
-- migration 0036), in a fixed order and before anything is written, so two batches never
-- deadlock on each other nor on a broadcast() being staged; one statement that checks every item
-- and finds the identical and the live rows; one UPDATE cancelling the live rows being replaced (as cancel_live() does);
-- one INSERT of the new messages. As schedule() since 0009: an item names no contact (the type
-- has no contact_id), so its zone is its own (timezone_source 'message'), a contact's message is
-- never identical to it, its wall time is kept in local_time, and a row awaiting approval is live
-- (replaced). Recurring items go through schedule_item() one by one, in the same transaction.
-- The refs must be distinct (given twice, the later item replaces the earlier one: that is the
-- item-by-item path's), and anything schedule_item() would refuse raises here too, without saying
-- which item: schedule_many() then undoes this call and schedules the items one by one, which
-- says which and why. Rows in no particular order.
CREATE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v2[])
RETURNS SETOF reminderd.item_scheduled_v1
LANGUAGE plpgsql
-- Its statements are planned once, not at each call: a custom plan for a batch of a few items
-- would cost more than writing them (their generic plans suit 1 to 1,000 items alike).
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    refused   boolean;
    recurring integer[];                    -- positions of the recurring items
    kept      reminderd.item_scheduled_v1[];  -- one-offs an identical call made: their message
    fresh     reminderd.item_scheduled_v1[];  -- one-offs to insert, fire_at their due instant
    replacing text[];                       -- the refs whose live rows the fresh ones replace
    zones     text[];                       -- each item's zone and its source, by position
    sources   text[];
    position  integer;
    done      record;
    one       reminderd.item_scheduled_v1;
BEGIN
    -- The refs' locks, then (migration 0036) the lock reminderd.broadcast() takes on the prefix of
    -- each completion-callback ref: the order schedule() takes them in (its ref's, then its
    -- trigger's), each set sorted.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT false AS prefix, hashtextextended(schedule_set.tenant_id || chr(31) || i.ref_id, 0) AS key
          FROM unnest(schedule_set.items) i
          UNION
          SELECT true, hashtextextended(schedule_set.tenant_id || chr(31) || '#broadcast' || chr(31)
                                        || split_part(i.ref_id, '#', 1), 0)
          FROM unnest(schedule_set.items) i
          WHERE i.ref_id ~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$'
          ORDER BY 1, 2) k;
    -- After the locks, so in a snapshot that sees every earlier call for these refs. same: the
    -- message an identical call made (schedule()'s rule); live: the ref's live row (not an extra
    -- occurrence); doomed: whether the ref has anything live that cancel_live() would cancel.
    SELECT NOT EXISTS (SELECT FROM reminderd.tenants t WHERE t.id = schedule_set.tenant_id)
           OR bool_or(coalesce(i.ref_id, '') = ''
                   OR (i.cron IS NULL AND i.rrule IS NULL
                       AND (num_nonnulls(i.fire_at, i.fire_in, i.local_time) <> 1 OR i.fire_in < interval '0'
                            OR NOT isfinite(i.due)
                            OR i.due > now() + (SELECT c.value::interval FROM reminderd.config c
                                                WHERE c.key = 'horizon'))))
               OR count(DISTINCT i.ref_id) <> count(*),
           array_agg(i.item) FILTER (WHERE i.cron IS NOT NULL OR i.rrule IS NOT NULL),
           array_agg(ROW(i.item, same.id,
                         CASE WHEN same.id = live.id OR (live.id IS NULL AND same.status = 'sent') THEN 'unchanged'
                              WHEN live.id IS NOT NULL THEN 'replaced' ELSE 'created' END,
                         same.status, same.fire_at)::reminderd.item_scheduled_v1)
               FILTER (WHERE same.id IS NOT NULL),
           array_agg(ROW(i.item, NULL, CASE WHEN live.id IS NOT NULL THEN 'replaced' ELSE 'created' END,
                         NULL, i.due)::reminderd.item_scheduled_v1)
               FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL),
           array_agg(i.ref_id) FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL AND live.doomed),
           array_agg(i.zone ORDER BY i.item), array_agg(i.source ORDER BY i.item)
    INTO refused, recurring, kept, fresh, replacing, zones, sources
    FROM (SELECT z.*,
                 -- A time that is no time (migration 0021) stands for infinity: refused above.
                 CASE WHEN z.cron IS NULL AND z.rrule IS NULL
                      THEN coalesce(z.fire_at,
                                    CASE WHEN z.fire_in > interval '200000 years' THEN 'infinity'
                                         ELSE now() + z.fire_in END,
                                    CASE WHEN NOT isfinite(z.local_time) THEN 'infinity'
                                         ELSE reminderd.local_instant(z.local_time, z.zone) END) END AS due
          FROM (SELECT u.*, u.ordinality::integer AS item,
                       coalesce(c.zone[1], coalesce(u.timezone, 'UTC')) AS zone,
                       coalesce(c.zone[2], 'message') AS source
                FROM unnest(schedule_set.items) WITH ORDINALITY AS u
                -- A contact's zone (reminderd.message_timezone: P0002 for an unknown one), only for
                -- the items that name one.
                LEFT JOIN LATERAL (
                    SELECT ARRAY[t.zone, t.source] AS zone
                    FROM reminderd.message_timezone(schedule_set.tenant_id, u.contact_id, u.timezone) AS t
                    WHERE u.contact_id IS NOT NULL
                ) c ON true) z) i
    LEFT JOIN LATERAL (
        SELECT m.id, m.status, m.fire_at
        FROM reminderd.scheduled_messages m
        WHERE i.cron IS NULL AND i.rrule IS NULL
          AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'sent')
          AND m.cron IS NULL AND m.rrule IS NULL
          AND m.payload = coalesce(i.payload, '{}')
          AND m.callback_url IS NOT DISTINCT FROM i.callback_url
          AND m.max_attempts IS NOT DISTINCT FROM i.max_attempts
          AND m.timezone = i.zone
          AND m.contact_id IS NOT DISTINCT FROM i.contact_id
          AND m.category = coalesce(i.category, 'transactional')
          AND m.calendar IS NOT DISTINCT FROM i.calendar
          AND m.holiday_rule IS NOT DISTINCT FROM i.holiday_rule
          AND m.backfill IS NOT DISTINCT FROM i.backfill
          AND m.max_lateness IS NOT DISTINCT FROM i.max_lateness
          AND CASE WHEN i.fire_in IS NULL
                   THEN coalesce(m.scheduled_for, m.fire_at) = i.due
                   ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                            - extract(epoch FROM i.fire_in)) < 1 END
        ORDER BY m.id DESC
        LIMIT 1
    ) same ON true
    LEFT JOIN LATERAL (
        -- In the order of scheduled_messages_tenant_ref (tenant_id, ref_id, id), as same's ORDER
        -- BY: its generic plan, made once per connection, then reads the ref's rows from that
        -- index whatever the statistics said when it was made. Unordered, a plan made on an empty
        -- table read the tenant's whole range of scheduled_messages_tenant_status for each item
        -- (migration 0040).
        SELECT max(l.id) FILTER (WHERE l.extra_of IS NULL) AS id, count(*) > 0 AS doomed
        FROM (SELECT m.id, m.extra_of
              FROM reminderd.scheduled_messages m
              WHERE i.cron IS NULL AND i.rrule IS NULL
                AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
                AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
              ORDER BY m.id DESC) l
    ) live ON true;
    IF refused THEN
        RAISE EXCEPTION 'this batch is scheduled item by item (reminderd.schedule_item)'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A ref is given twice, or an item is refused: schedule_many() says which.';
    END IF;
    FOREACH position IN ARRAY coalesce(recurring, '{}') LOOP
        done := reminderd.schedule_item(schedule_set.tenant_id, schedule_set.items[position]);
        one := ROW(position, done.message_id, done.result, done.status, done.fire_at);
        RETURN NEXT one;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(kept);
    IF fresh IS NULL THEN
        RETURN;
    END IF;
    IF replacing IS NOT NULL THEN
        -- Each ref's live rows found as live found them, then updated by id (migration 0040).
        UPDATE reminderd.scheduled_messages m
        SET status = 'cancelled', last_error = 'replaced by a new schedule', lease_expires_at = NULL,
            updated_at = now(), last_event = 'replaced'
        FROM (SELECT l.id
              FROM unnest(replacing) AS r (ref_id)
              CROSS JOIN LATERAL (
                  SELECT d.id
                  FROM reminderd.scheduled_messages d
                  WHERE d.tenant_id = schedule_set.tenant_id AND d.ref_id = r.ref_id
                    AND d.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
                  ORDER BY d.id DESC) l) AS doomed
        WHERE m.id = doomed.id AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    END IF;
    RETURN QUERY
    WITH given AS (
        SELECT f.item, f.result, f.fire_at AS due, i.*
        FROM unnest(fresh) f
        JOIN unnest(schedule_set.items) WITH ORDINALITY AS i ON i.ordinality = f.item
    ), inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, local_time, contact_id, timezone_source)
        SELECT schedule_set.tenant_id, g.ref_id, g.due, coalesce(g.payload, '{}'), g.callback_url, g.max_attempts,
               zones[g.item], coalesce(g.category, 'transactional'), g.calendar, g.holiday_rule,
               g.backfill, g.max_lateness, g.local_time, g.contact_id, sources[g.item]
        FROM given g
        ORDER BY g.item
        RETURNING id, ref_id, status, fire_at
    )
    SELECT g.item, n.id, g.result, n.status, n.fire_at
    FROM given g
    JOIN inserted n ON n.ref_id = g.ref_id;
END
$$;

-- Several messages in one call. All at once first (reminderd.schedule_set); when that refuses the
-- batch (a ref given twice, or any item refused) it is undone, and each item goes through
-- schedule_item in turn, as follows. atomic: the first error undoes the whole batch and is the
-- only item reported (one subtransaction for the batch). Otherwise each item stands alone (a
-- subtransaction each) and a failed one is reported with its SQLSTATE, message, detail, hint and
-- constraint (what reminderd.refusals turns into a sentence). Rows come out in the order of the
-- items.
CREATE FUNCTION reminderd.schedule_many(
    tenant_id text, items reminderd.schedule_item_v2[], atomic boolean DEFAULT true
) RETURNS TABLE (item integer, message_id bigint, result text, status text, fire_at timestamptz,
                 error_sqlstate text, error_message text, error_hint text, error_detail text,
                 error_constraint text, timezone text, timezone_source text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fast      reminderd.item_scheduled_v1[];
    one       reminderd.schedule_item_v2;
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
    BEGIN
        -- A PL/pgSQL function's rows are all made before the first is returned (RETURN QUERY
        -- stores the whole result): when schedule_set() raises, none of its rows is returned.
        IF cardinality(schedule_many.items) = 1 AND (schedule_many.items[1]).cron IS NULL
           AND (schedule_many.items[1]).rrule IS NULL THEN
            fast := ARRAY[reminderd.schedule_one(schedule_many.tenant_id, schedule_many.items[1])];
        ELSE
            SELECT array_agg(s ORDER BY s.item) INTO fast
            FROM reminderd.schedule_set(schedule_many.tenant_id, schedule_many.items) s;
        END IF;
        -- A statement of its own, so that it sees the rows just written: each message's zone.
        RETURN QUERY SELECT s.item, s.message_id, s.result, s.status, s.fire_at, NULL::text, NULL::text,
                            NULL::text, NULL::text, NULL::text, m.timezone, m.timezone_source
                     FROM unnest(fast) s
                     LEFT JOIN reminderd.scheduled_messages m ON m.id = s.message_id
                     ORDER BY s.item;
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- refused, and undone: item by item below, which says which item and why
    END;
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
                                e_state, e_message, nullif(e_hint, ''), nullif(e_detail, ''), nullif(e_name, ''),
                                NULL::text, NULL::text;
            RETURN;
        END;
        RETURN QUERY SELECT n::integer, u.id, u.result, u.status, u.fire_at, NULL::text, NULL::text, NULL::text,
                            NULL::text, NULL::text, m.timezone, m.timezone_source
                     FROM unnest(ids, results, statuses, fire_ats) WITH ORDINALITY AS u(id, result, status, fire_at, n)
                     LEFT JOIN reminderd.scheduled_messages m ON m.id = u.id
                     ORDER BY n;
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
                        u.name, m.timezone, m.timezone_source
                 FROM unnest(ids, results, statuses, fire_ats, states, messages, hints, details, names)
                      WITH ORDINALITY AS u(id, result, status, fire_at, state, message, hint, detail, name, n)
                 LEFT JOIN reminderd.scheduled_messages m ON m.id = u.id
                 ORDER BY n;
END
$$;

-- Version 1 of the items (schedule_item_v1, without contact_id) stays for the servers of the
-- previous release during a rolling upgrade: its four functions hand their items to the ones above
-- with a NULL contact (migration 0018) and return what those return, in the version 1 shape.

-- Version 1 items as version 2 ones, without a contact, in their order (NULL stays NULL).
CREATE FUNCTION reminderd.as_items_v2(items reminderd.schedule_item_v1[]) RETURNS reminderd.schedule_item_v2[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN items IS NOT NULL THEN ARRAY(
        SELECT ROW((items[k]).*, NULL)::reminderd.schedule_item_v2
        FROM generate_subscripts(items, 1) AS k
        ORDER BY k) END
$$;

CREATE FUNCTION reminderd.schedule_item(tenant_id text, one reminderd.schedule_item_v1,
    OUT message_id bigint, OUT result text, OUT status text, OUT fire_at timestamptz)
LANGUAGE sql AS $$
    SELECT s.message_id, s.result, s.status, s.fire_at
    FROM reminderd.schedule_item(schedule_item.tenant_id, ROW((one).*, NULL)::reminderd.schedule_item_v2) AS s
$$;

CREATE FUNCTION reminderd.schedule_one(tenant_id text, one reminderd.schedule_item_v1)
RETURNS reminderd.item_scheduled_v1
LANGUAGE sql AS $$
    SELECT reminderd.schedule_one(schedule_one.tenant_id, ROW((one).*, NULL)::reminderd.schedule_item_v2)
$$;

CREATE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v1[])
RETURNS SETOF reminderd.item_scheduled_v1
LANGUAGE sql AS $$
    SELECT * FROM reminderd.schedule_set(schedule_set.tenant_id, reminderd.as_items_v2(items))
$$;

CREATE FUNCTION reminderd.schedule_many(
    tenant_id text, items reminderd.schedule_item_v1[], atomic boolean DEFAULT true
) RETURNS TABLE (item integer, message_id bigint, result text, status text, fire_at timestamptz,
                 error_sqlstate text, error_message text, error_hint text, error_detail text,
                 error_constraint text)
LANGUAGE sql AS $$
    SELECT s.item, s.message_id, s.result, s.status, s.fire_at, s.error_sqlstate, s.error_message, s.error_hint,
           s.error_detail, s.error_constraint
    FROM reminderd.schedule_many(schedule_many.tenant_id, reminderd.as_items_v2(items), atomic) AS s
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
         holiday_rule, backfill, max_lateness, extra_of, last_event, contact_id, timezone_source)
    VALUES (message.tenant_id, message.ref_id, now(), message.payload, message.callback_url, message.max_attempts,
            message.timezone, message.category, message.calendar, message.holiday_rule, message.backfill,
            message.max_lateness, message.id, 'sent_now', message.contact_id, message.timezone_source)
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
      AND status IN ('pending', 'picked', 'paused', 'awaiting_approval');
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

-- Functions: the dashboard's aggregates (their triggers are on events and deliveries) ---------------

-- The lower bounds, in milliseconds, of the lateness buckets after the first.
CREATE FUNCTION reminderd.lateness_bounds_ms() RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{1,2.5,5,10,25,50,100,250,500,1000,2500,5000,10000,30000,60000,300000,900000,3600000}'::float8[]
$$;

-- Count a statement's fires (one upsert per tenant and period) and, for attempts, its delivered
-- ones by lateness (one upsert per tenant, period and bucket), and tell the live feed which rows
-- they are: their ids, named by table, 500 to a notification (payloads are at most 8,000 bytes).
-- The trigger of events (events_count_fires) and that of deliveries (deliveries_count_fires) run
-- it, on a statement's new rows (new_rows).
-- No deadlock: a transaction may count several times (a batch's attempts, then each held row's
-- event, one statement each from the audit trigger), each time in key order but not in one order
-- overall; so every count first takes one transaction-level advisory lock, and two transactions
-- that count wait for each other there, before either locks a row of the aggregates.
-- SECURITY DEFINER: whoever writes events or deliveries (the daemon, an application's own
-- statements) needs no privilege on the aggregates, and cannot change them either.
CREATE FUNCTION reminderd.count_fires() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids text;
BEGIN
    IF TG_TABLE_NAME = 'deliveries' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows d
                       WHERE d.status_code BETWEEN 200 AND 299
                          OR d.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped',
                                         'deferred', 'holiday_skipped')) THEN
            RETURN NULL;  -- attempts that neither delivered nor changed their message
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('reminderd.counts'));
        INSERT INTO reminderd.lateness_counts AS c (period, starts_at, tenant_id, bucket, delivered)
        SELECT p.period, date_trunc(p.period, d.created_at, 'UTC'), d.tenant_id,
               width_bucket(extract(epoch FROM d.created_at - d.scheduled_for)::float8 * 1000,
                            reminderd.lateness_bounds_ms()),
               count(*)
        FROM new_rows d
        CROSS JOIN (VALUES ('minute'), ('hour')) AS p(period)
        WHERE d.status_code BETWEEN 200 AND 299
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (period, starts_at, tenant_id, bucket) DO UPDATE
        SET delivered = c.delivered + excluded.delivered;
    ELSIF NOT EXISTS (SELECT 1 FROM new_rows e
                      WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped',
                                        'deferred', 'holiday_skipped')) THEN
        RETURN NULL;  -- scheduling, cancelling, pausing: nothing fired
    ELSE
        PERFORM pg_advisory_xact_lock(hashtext('reminderd.counts'));
    END IF;
    INSERT INTO reminderd.fire_counts AS c (period, starts_at, tenant_id, delivered, retried, dead, expired, held)
    SELECT p.period, date_trunc(p.period, e.created_at, 'UTC'), e.tenant_id,
           count(*) FILTER (WHERE e.event = 'fired'),
           count(*) FILTER (WHERE e.event = 'retry_scheduled'),
           count(*) FILTER (WHERE e.event = 'dead_lettered'),
           count(*) FILTER (WHERE e.event IN ('expired', 'missed_skipped')),
           count(*) FILTER (WHERE e.event IN ('deferred', 'holiday_skipped'))
    FROM new_rows e
    CROSS JOIN (VALUES ('minute'), ('hour')) AS p(period)
    WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                      'holiday_skipped')
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (period, starts_at, tenant_id) DO UPDATE
    SET delivered = c.delivered + excluded.delivered, retried = c.retried + excluded.retried,
        dead = c.dead + excluded.dead, expired = c.expired + excluded.expired, held = c.held + excluded.held;
    FOR ids IN
        SELECT string_agg(f.id::text, ',' ORDER BY f.id)
        FROM (SELECT e.id, (row_number() OVER (ORDER BY e.id) - 1) / 500 AS chunk
              FROM new_rows e
              WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped',
                                'deferred', 'holiday_skipped')) f
        GROUP BY f.chunk
        ORDER BY f.chunk
    LOOP
        PERFORM pg_notify('reminderd_feed', TG_TABLE_NAME || ':' || ids);
    END LOOP;
    RETURN NULL;
END
$$;

-- Pruning the aggregates (the daemon's housekeeping, or by hand): minutes older than 3 hours,
-- hours older than 8 days. Returns the rows deleted.
CREATE FUNCTION reminderd.prune_counts() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fires    integer;
    lateness integer;
BEGIN
    DELETE FROM reminderd.fire_counts
    WHERE (period = 'minute' AND starts_at < now() - interval '3 hours')
       OR (period = 'hour' AND starts_at < now() - interval '8 days');
    GET DIAGNOSTICS fires = ROW_COUNT;
    DELETE FROM reminderd.lateness_counts
    WHERE (period = 'minute' AND starts_at < now() - interval '3 hours')
       OR (period = 'hour' AND starts_at < now() - interval '8 days');
    GET DIAGNOSTICS lateness = ROW_COUNT;
    RETURN fires + lateness;
END
$$;

-- Functions: what the triggers run (the triggers themselves follow) -------------------------------

-- Reject what SQL can check at insert, with a message that names the problem (a callback_url or
-- cron of the wrong shape carries the name of the constraint it pre-empts): a value the row's
-- CHECK constraints would refuse, or a new fire_at or local_time that is not finite
-- (check_message), a new or changed callback_url that is not one (check_callback_url), a timezone
-- or a cron the daemon could not read (check_timezone, check_cron: every field, and that it
-- fires). An RRULE without DTSTART is anchored at the local midnight of the day it was written,
-- so INTERVAL counts from a fixed day and times default to 00:00 (stored, so a DBA sees it).
CREATE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_has_default boolean;  -- NULL: no such tenant
BEGIN
    -- The row's CHECK constraints, and a new time that is not finite, in sentences (check_message):
    -- one quick test, true only when something is wrong (migration 0021).
    IF NEW.ref_id = '' OR NEW.max_attempts < 1 OR NEW.max_runs < 1 OR NEW.max_lateness < interval '0'
       OR (NOT isfinite(NEW.fire_at) AND NEW.fire_at IS DISTINCT FROM OLD.fire_at)
       OR (NOT isfinite(NEW.local_time) AND NEW.local_time IS DISTINCT FROM OLD.local_time)
       OR (NEW.cron IS NULL AND NEW.rrule IS NULL AND (NEW.fire_at IS NULL OR NEW.until IS NOT NULL
                                                      OR NEW.max_runs IS NOT NULL))
       OR (NEW.cron IS NOT NULL AND NEW.rrule IS NOT NULL)
       OR NEW.rrule !~* '(^|\n)\s*(RRULE:)?FREQ='
       OR (NEW.category NOT IN ('transactional', 'marketing')
           AND (NEW.category !~ '^[a-z][a-z0-9_-]*$' OR char_length(NEW.category) > 32))
       OR NEW.calendar !~ '^[A-Z][A-Z](-[A-Z0-9]+)?$' OR char_length(NEW.calendar) > 13
       OR NEW.holiday_rule NOT IN ('skip', 'send') OR NEW.backfill NOT IN ('send', 'latest', 'skip')
    THEN
        PERFORM reminderd.check_message(NEW, OLD);
    END IF;
    IF NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN  -- UTC needs no check; NULL: the column's NOT NULL says so
        NEW.timezone := reminderd.stored_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
    END IF;
    -- Only a new or changed URL: a row written before 0019 checked URLs keeps moving on.
    IF NEW.callback_url IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.callback_url IS DISTINCT FROM OLD.callback_url) THEN
        PERFORM reminderd.check_callback_url(NEW.callback_url, format('message %s / %s', NEW.tenant_id, NEW.ref_id),
                                             'callback_url_is_http');
    END IF;
    IF NEW.cron IS NOT NULL THEN
        PERFORM reminderd.check_cron(NEW.cron, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
    END IF;
    IF NEW.callback_url IS NULL THEN  -- then the tenant's default is needed: one query
        SELECT t.callback_url IS NOT NULL INTO tenant_has_default FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        IF tenant_has_default IS NULL THEN
            RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it first: reminderd tenant add ID --callback-url URL';
        ELSIF NOT tenant_has_default THEN
            RAISE EXCEPTION 'no callback_url for message % / %: the row has none and tenant "%" has no default',
                NEW.tenant_id, NEW.ref_id, NEW.tenant_id
                USING ERRCODE = 'not_null_violation';
        END IF;
    END IF;
    IF NEW.rrule IS NOT NULL AND NEW.rrule !~* '(^|\n)\s*DTSTART' THEN
        IF NEW.rrule ~* 'COUNT=' THEN
            RAISE EXCEPTION 'the rrule of message % / % has COUNT but no DTSTART', NEW.tenant_id, NEW.ref_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'COUNT counts from DTSTART: give one (DTSTART:20261201T090000), or use max_runs instead.';
        END IF;
        NEW.rrule := 'DTSTART:'
                     || to_char(date_trunc('day', reminderd.wall_time(now(), NEW.timezone)), 'YYYYMMDD"T"HH24MISS')
                     || E'\n' || btrim(NEW.rrule, E' \t\r\n');
    END IF;
    RETURN NEW;
END
$$;

-- A tenant is checked with sentences before its constraints are (the errors carry their names):
-- an id or calendar of the wrong shape, a callback_url that is not one (check_callback_url), a
-- default zone the daemon cannot read, a new or changed signing secret the daemon could not sign
-- with (is_signing_secret; the value is never echoed). One that already exists is left to the
-- primary key (migration 0025): a check here would defeat INSERT … ON CONFLICT; reminderd's CLI
-- and API say tenants_pkey in a sentence (reminderd/refusals.py).
CREATE FUNCTION reminderd.validate_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'tenant id "%" is not allowed', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_id_format',
                  DETAIL = 'A tenant id is letters, digits and _ . : -, starts with a letter or digit, and has at most 128 characters.';
    END IF;
    -- Only a new or changed URL: a tenant whose URL was written before 0019 checked URLs can still
    -- change its calendar (the daemon refuses its callbacks, saying why).
    IF NEW.callback_url IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.callback_url IS DISTINCT FROM OLD.callback_url) THEN
        PERFORM reminderd.check_callback_url(NEW.callback_url, format('tenant "%s"', NEW.id),
                                             'tenant_callback_url_is_http');
    END IF;
    IF NEW.calendar !~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$' THEN
        RAISE EXCEPTION 'calendar "%" of tenant "%" is not a holiday calendar code', NEW.calendar, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_calendar_format',
                  HINT = 'A country code such as IN or GB, or a subdivision such as US-CA (the holidays package''s codes).';
    END IF;
    IF NEW.timezone IS NOT NULL THEN
        NEW.timezone := reminderd.stored_timezone(NEW.timezone, format('tenant "%s"', NEW.id));
    END IF;
    -- Only a new or changed secret: one written before 0025 stays readable, and the tenant can still
    -- change its calendar (the daemon dead-letters its messages, saying why, until it is rotated).
    -- A rotation moves the current secret to previous_signing_secret: that is not a new value.
    IF NOT reminderd.is_signing_secret(NEW.signing_secret)
       AND (TG_OP = 'INSERT' OR NEW.signing_secret IS DISTINCT FROM OLD.signing_secret) THEN
        RAISE EXCEPTION 'the signing_secret of tenant "%" is not whsec_ followed by base64', NEW.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it out to have one generated, or write whsec_ and the base64 of at least one byte (reminderd.generate_secret() makes one).';
    END IF;
    IF NOT reminderd.is_signing_secret(NEW.previous_signing_secret)
       AND NEW.previous_signing_secret IS DISTINCT FROM OLD.previous_signing_secret
       AND NEW.previous_signing_secret IS DISTINCT FROM OLD.signing_secret THEN
        RAISE EXCEPTION 'the previous_signing_secret of tenant "%" is not whsec_ followed by base64', NEW.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the secret a rotation replaced (reminderd.rotate_secret sets it): leave it NULL, or write whsec_ and the base64 of at least one byte.';
    END IF;
    IF NOT reminderd.is_signing_secret(NEW.earlier_signing_secret)
       AND NEW.earlier_signing_secret IS DISTINCT FROM OLD.earlier_signing_secret THEN
        RAISE EXCEPTION 'the earlier_signing_secret of tenant "%" is not whsec_ followed by base64', NEW.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the secret an earlier rotation replaced, kept by another within its grace (reminderd.rotate_secret sets it): leave it NULL, or write whsec_ and the base64 of at least one byte.';
    END IF;
    RETURN NEW;
END
$$;

-- Refuse a calendar the installed `holidays` package does not know (migration 0035), when a
-- message (not a broadcast's: its broadcast was checked), a broadcast or a tenant is written with
-- one, or changes to one: 23514 with the constraint name TG_ARGV[0], in the daemon's words
-- (reminderd/schedule/calendars.py), so that no row is accepted only to be dead-lettered when it
-- fires. Rows without a calendar never call it (the triggers' WHEN), one with a known calendar
-- pays one index lookup. A calendar of the wrong shape is left to its format check; while
-- holiday_calendars is empty (never loaded) every calendar is accepted, as before 0035.
CREATE FUNCTION reminderd.check_calendar_known() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted   text := split_part(NEW.calendar, '-', 1);
    row_json jsonb;
    subject  text;
BEGIN
    IF NEW.calendar !~ '^[A-Z]{2}(-[A-Z0-9]{1,10})?$'
       OR EXISTS (SELECT FROM reminderd.holiday_calendars c WHERE c.code = NEW.calendar)
       OR NOT EXISTS (SELECT FROM reminderd.holiday_calendars) THEN
        RETURN NEW;
    END IF;
    row_json := to_jsonb(NEW);
    subject := CASE TG_TABLE_NAME
        WHEN 'scheduled_messages' THEN format('message %s / %s', row_json->>'tenant_id', row_json->>'ref_id')
        WHEN 'broadcast_requests' THEN format('broadcast "%s" of tenant "%s"', row_json->>'ref_prefix',
                                              row_json->>'tenant_id')
        ELSE format('tenant "%s"', row_json->>'id') END;
    RAISE EXCEPTION 'unknown holiday calendar "%" of %: %', NEW.calendar, subject,
        CASE WHEN NOT EXISTS (SELECT FROM reminderd.holiday_calendars c WHERE c.country = wanted)
             THEN format('no public holidays known for country %s', wanted)
             ELSE format('%s has no subdivision %s', wanted, substr(NEW.calendar, 4)) END
        USING ERRCODE = 'check_violation', CONSTRAINT = TG_ARGV[0],
              HINT = format('The holidays package %s (loaded by reminderd migrate) knows %s calendars; see them: '
                            'SELECT code FROM reminderd.holiday_calendars WHERE country = %L; NULL means no '
                            'public holidays.',
                            (SELECT v.version FROM reminderd.reference_versions v WHERE v.source = 'holidays'),
                            (SELECT count(*) FROM reminderd.holiday_calendars), wanted);
END
$$;

-- Refuse an ordinary message (not a broadcast's) whose ref is the completion callback's of one of
-- its tenant's broadcasts with notify (migration 0035): prefix#completed, or
-- prefix#completed#YYYYMMDDTHHMM for a recurring one's wave. Taken by the tenant's own row, that
-- wave would complete without its callback (complete_broadcasts). Only refs containing
-- '#completed' call it (the triggers' WHEN); a ref_prefix has no '#', so the prefix is what comes
-- before the first one. 23514, constraint completion_ref_reserved. The reverse, a notify broadcast
-- whose completion ref a live message holds already, is check_completion_ref_free's (migration
-- 0036); both take the lock reminderd.broadcast() takes on the tenant and prefix before they look,
-- so that of a message and a broadcast written at once the second waits and is refused. Only a
-- transaction that has written nothing yet waits for it (one that has may hold a row the broadcast
-- waits for: a deadlock); schedule_set takes it with its refs' locks before writing anything; any
-- other writer of such a ref while that broadcast is being written is refused, 55P03, to try again.
CREATE FUNCTION reminderd.check_completion_ref() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prefix   text := split_part(NEW.ref_id, '#', 1);
    lock_key bigint := hashtextextended(NEW.tenant_id || chr(31) || '#broadcast' || chr(31) || prefix, 0);
BEGIN
    IF NEW.ref_id !~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$' THEN
        RETURN NEW;
    END IF;
    -- Waited for only by a transaction that has written nothing yet (schedule(), a first INSERT):
    -- one that has may hold a row that the broadcast() holding the lock waits for, a deadlock.
    -- schedule_set took it before writing anything (a re-take, granted at once); any other writer
    -- of such a ref while a broadcast of its prefix is being written is refused, to try again.
    IF NOT pg_try_advisory_xact_lock(lock_key) THEN
        IF pg_current_xact_id_if_assigned() IS NULL THEN
            PERFORM pg_advisory_xact_lock(lock_key);
        ELSE
            RAISE EXCEPTION 'ref "%" of message % / % cannot be checked now: broadcast "%" of tenant "%" is being '
                            'written', NEW.ref_id, NEW.tenant_id, NEW.ref_id, prefix, NEW.tenant_id
                USING ERRCODE = 'lock_not_available',
                      DETAIL = format('A ref "%s#completed…" is the broadcast.completed callback''s of a broadcast '
                                      'with notify: whether it is taken is known once that broadcast is committed.',
                                      prefix),
                      HINT = 'Try again in a moment.';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM reminderd.broadcast_requests r
               WHERE r.tenant_id = NEW.tenant_id AND r.ref_prefix = prefix AND r.notify) THEN
        RAISE EXCEPTION 'ref "%" of message % / % is the broadcast.completed callback''s of broadcast "%"',
            NEW.ref_id, NEW.tenant_id, NEW.ref_id, prefix
            USING ERRCODE = 'check_violation', CONSTRAINT = 'completion_ref_reserved',
                  HINT = format('reminderd writes it when each wave of broadcast "%s" ends (notify => true): '
                                'give this message another ref.', prefix);
    END IF;
    RETURN NEW;
END
$$;

-- Refuse a broadcast with notify (written so, or changed to it) whose completion callback's ref
-- (prefix#completed, or prefix#completed#YYYYMMDDTHHMM for a recurring one's wave) a live
-- ordinary message of its tenant holds already (migration 0036): its wave would complete without
-- its callback. 23505, constraint completion_ref_free, naming the message. One that is no longer
-- live holds nothing (the callback is written beside it). Under the lock check_completion_ref
-- takes too (reminderd.broadcast() holds it already). Only broadcasts with notify call it.
CREATE FUNCTION reminderd.check_completion_ref_free() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    held record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.tenant_id || chr(31) || '#broadcast' || chr(31)
                                                   || NEW.ref_prefix, 0));
    -- refs prefix#completed and prefix#completed#…: '$' is the character after '#'.
    SELECT m.id, m.ref_id, m.status INTO held
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = NEW.tenant_id AND m.broadcast_id IS NULL AND m.extra_of IS NULL
      AND (m.ref_id = NEW.ref_prefix || '#completed'
           OR (m.ref_id ~>=~ (NEW.ref_prefix || '#completed#') AND m.ref_id ~<~ (NEW.ref_prefix || '#completed$')))
      AND m.ref_id ~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$'
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
    ORDER BY m.id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'broadcast "%" of tenant "%" would notify with ref "%", which live message % (% / %) has',
            NEW.ref_prefix, NEW.tenant_id, held.ref_id, held.id, NEW.tenant_id, held.ref_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'completion_ref_free',
                  DETAIL = format('reminderd writes its broadcast.completed callback as "%s" when a wave ends; '
                                  'with message %s (%s) there, the wave would complete without it.',
                                  held.ref_id, held.id, held.status),
                  HINT = format('Give the broadcast another ref_prefix, cancel message %s first '
                                '(reminderd.cancel(%L, %L)), or leave notify out.', held.id, NEW.tenant_id,
                                held.ref_id);
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
DECLARE
    tenant_paused boolean;
BEGIN
    IF NEW.status = 'pending' THEN  -- a query only when it can matter (the condition: an expression)
        SELECT t.paused INTO tenant_paused FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        IF tenant_paused THEN
            NEW.status := 'paused';
            NEW.paused_by := 'tenant';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- Every change of status, fire_at or last_event, except a claim and an attempt's outcome (the
-- attempt's deliveries row records it): the triggers' WHEN clauses pick the rows. The event is
-- what the writer put in last_event; a plain UPDATE by hand that did not say is recorded as
-- 'updated' with the status change as its reason.
CREATE FUNCTION reminderd.audit_update() RETURNS trigger
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

-- An update that makes a row due within 10 minutes (or leaves a recurring row to plan) wakes the
-- daemons: one notification per such row (identical ones, 'plan', are merged by PostgreSQL).
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

-- Admit a new row (trigger scheduled_messages_admit), deciding in this order: refuse a value its
-- CHECK constraints would, or a time that is not finite (check_message, in sentences); refuse it
-- if it is dead on arrival (a one-off already too late, by check_arrival's rule and in its words;
-- a recurring row whose until is past), hold it for a disabled endpoint (as
-- hold_for_disabled_endpoint), hold it for a paused tenant (as hold_for_paused_tenant), refuse a
-- payload over 256 KiB (as check_payload), validate it (as validate_message). A broadcast's rows
-- are held and checked by stage_broadcast for all its rows at once (one staged late follows its
-- backfill policy when claimed): for them only the endpoint hold and the payload size apply. One
-- function, not one trigger each: every call has a fixed cost. The tenant's row is read once, with
-- whether it has a disabled endpoint; reminderd.config only for a one-off already late.
CREATE FUNCTION reminderd.admit_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    late                interval;  -- a one-off already due: how late (NULL: nothing to check)
    tenant_found        boolean;
    tenant_paused       boolean;
    tenant_url          text;
    endpoint_disabled   boolean := false;
    reason              text;
    policy              text;
    lateness            interval;
    configured_lateness text;
    configured_lookback text;
BEGIN
    -- A row naming a contact (migration 0032): with no zone of its own (the column's default), the
    -- contact's, as schedule() reads it (message_timezone, with its source); an unknown contact is
    -- refused (P0002). A broadcast's rows were staged from their contacts. A row naming neither is UTC.
    IF NEW.contact_id IS NOT NULL AND NEW.broadcast_id IS NULL THEN
        IF NEW.timezone = 'Etc/Universal' THEN
            SELECT z.zone, z.source INTO NEW.timezone, NEW.timezone_source
            FROM reminderd.message_timezone(NEW.tenant_id, NEW.contact_id, NULL) AS z;
        ELSIF NOT EXISTS (SELECT FROM reminderd.contacts c
                          WHERE c.tenant_id = NEW.tenant_id AND c.contact_id = NEW.contact_id) THEN
            PERFORM reminderd.message_timezone(NEW.tenant_id, NEW.contact_id, NEW.timezone);  -- refuses it
        END IF;
    ELSIF NEW.timezone = 'Etc/Universal' THEN
        NEW.timezone := 'UTC';
    END IF;
    IF NEW.broadcast_id IS NULL THEN
        -- The row's CHECK constraints, and a time that is not finite, in sentences (check_message),
        -- before anything reads them (migration 0021). Two quick tests, so that a valid row pays for
        -- no call and a row without options for few column reads: does it set anything a constraint
        -- checks, then is something wrong (calendar's {1,10} spelt as a cheaper test)?
        IF num_nonnulls(NEW.max_attempts, NEW.max_runs, NEW.max_lateness, NEW.local_time, NEW.calendar,
                        NEW.holiday_rule, NEW.backfill, NEW.rrule, NEW.until) > 0
           OR NEW.category NOT IN ('transactional', 'marketing') OR NEW.ref_id = ''
           OR NOT isfinite(NEW.fire_at) OR (NEW.fire_at IS NULL AND NEW.cron IS NULL)
        THEN
            IF NEW.ref_id = '' OR NEW.max_attempts < 1 OR NEW.max_runs < 1 OR NEW.max_lateness < interval '0'
               OR NOT isfinite(NEW.fire_at) OR NOT isfinite(NEW.local_time)
               OR (NEW.cron IS NULL AND NEW.rrule IS NULL AND (NEW.fire_at IS NULL OR NEW.until IS NOT NULL
                                                              OR NEW.max_runs IS NOT NULL))
               OR (NEW.cron IS NOT NULL AND NEW.rrule IS NOT NULL)
               OR NEW.rrule !~* '(^|\n)\s*(RRULE:)?FREQ='
               OR (NEW.category NOT IN ('transactional', 'marketing')
                   AND (NEW.category !~ '^[a-z][a-z0-9_-]*$' OR char_length(NEW.category) > 32))
               OR NEW.calendar !~ '^[A-Z][A-Z](-[A-Z0-9]+)?$' OR char_length(NEW.calendar) > 13
               OR NEW.holiday_rule NOT IN ('skip', 'send') OR NEW.backfill NOT IN ('send', 'latest', 'skip')
            THEN
                PERFORM reminderd.check_message(NEW);
            END IF;
        END IF;
        -- Dead on arrival: a one-off (pending or paused) already too late (check_arrival's rule),
        -- a recurring row whose until is already past.
        IF NEW.status IN ('pending', 'paused') THEN
            IF NEW.cron IS NULL AND NEW.rrule IS NULL THEN
                IF NEW.fire_at < now() THEN
                    late := now() - NEW.fire_at;
                END IF;
            ELSIF NEW.until <= now() THEN
                RAISE EXCEPTION 'message % / % ends before it starts: its until % is already past', NEW.tenant_id,
                    NEW.ref_id, to_char(NEW.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                    USING ERRCODE = 'datetime_field_overflow',
                          DETAIL = 'A recurring message sends nothing after its until; this one would finish at once.',
                          HINT = 'Give an until in the future, or none.';
            ELSIF NEW.rrule ~* 'UNTIL' AND NEW.rrule !~* '(^|\n)\s*RDATE'
                  AND reminderd.rrule_until(NEW.rrule, NEW.timezone) < now() THEN  -- its RRULE's own (migration 0030)
                RAISE EXCEPTION 'message % / % ends before it starts: its RRULE''s UNTIL % is already past',
                    NEW.tenant_id, NEW.ref_id,
                    upper(substring(NEW.rrule FROM '(?i)UNTIL\s*=\s*([0-9TZ]+)'))
                    USING ERRCODE = 'datetime_field_overflow',
                          DETAIL = format('UNTIL ends it at %s; a recurring message sends nothing after it, so this '
                                          'one would finish at once.',
                                          to_char(reminderd.rrule_until(NEW.rrule, NEW.timezone) AT TIME ZONE 'UTC',
                                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                          HINT = 'Give the RRULE an UNTIL in the future (UNTIL=…Z is in UTC, one without Z on the '
                                 'row''s clock), or none.';
            END IF;
        END IF;
        -- The tenant's row and whether it has a disabled endpoint, in one query.
        SELECT t.paused, t.callback_url, EXISTS (
                   SELECT FROM reminderd.endpoint_health h WHERE h.tenant_id = t.id AND h.disabled_at IS NOT NULL)
        INTO tenant_paused, tenant_url, endpoint_disabled
        FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        tenant_found := FOUND;
        endpoint_disabled := NEW.status = 'pending' AND endpoint_disabled;
        IF late IS NOT NULL THEN  -- reminderd.config's defaults, in one pass
            SELECT max(c.value) FILTER (WHERE c.key = 'backfill'), max(c.value) FILTER (WHERE c.key = 'max_lateness'),
                   max(c.value) FILTER (WHERE c.key = 'lookback')
            INTO policy, configured_lateness, configured_lookback
            FROM reminderd.config c;
            policy := coalesce(NEW.backfill, policy, 'send');
            lateness := coalesce(NEW.max_lateness, configured_lateness::interval, interval '30 minutes');
            IF late >= coalesce(configured_lookback::interval, interval '1 day')
               OR late > (CASE policy WHEN 'latest' THEN NULL
                                      WHEN 'skip' THEN least(lateness, interval '60 seconds')
                                      ELSE lateness END)
            THEN  -- refused, in check_arrival's words
                PERFORM reminderd.check_arrival(NEW.tenant_id, NEW.ref_id, NEW.fire_at, NEW.backfill, NEW.max_lateness);
            END IF;
        END IF;
    ELSIF NEW.status = 'pending' THEN
        endpoint_disabled := EXISTS (
            SELECT FROM reminderd.endpoint_health h WHERE h.tenant_id = NEW.tenant_id AND h.disabled_at IS NOT NULL);
        IF endpoint_disabled AND NEW.callback_url IS NULL THEN
            SELECT t.callback_url INTO tenant_url FROM reminderd.tenants t WHERE t.id = NEW.tenant_id;
        END IF;
    END IF;
    -- Held for a disabled endpoint ('paused' by 'endpoint'), as hold_for_disabled_endpoint holds.
    IF endpoint_disabled THEN
        SELECT h.disabled_reason INTO reason
        FROM reminderd.endpoint_health h
        WHERE h.tenant_id = NEW.tenant_id AND h.disabled_at IS NOT NULL
          AND h.endpoint = reminderd.endpoint_of(coalesce(NEW.callback_url, tenant_url));
        IF FOUND THEN
            NEW.status := 'paused';
            NEW.paused_by := 'endpoint';
            NEW.last_error := 'endpoint disabled: ' || coalesce(reason, 'see reminderd.endpoint_health');
        END IF;
    END IF;
    -- Held for a paused tenant, as hold_for_paused_tenant holds.
    IF NEW.broadcast_id IS NULL AND NEW.status = 'pending' AND tenant_paused THEN
        NEW.status := 'paused';
        NEW.paused_by := 'tenant';
    END IF;
    -- check_payload's limit.
    IF pg_column_size(NEW.payload) > 262144 THEN
        RAISE EXCEPTION 'payload of message % / % is % bytes; at most 262144 (256 KiB)',
            NEW.tenant_id, NEW.ref_id, pg_column_size(NEW.payload)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- validate_message's checks, the tenant's default callback_url as read above.
    IF NEW.broadcast_id IS NULL THEN
        IF NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN  -- UTC needs no check; NULL: the column's NOT NULL says so
            NEW.timezone := reminderd.stored_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
        END IF;
        IF NEW.callback_url IS NOT NULL THEN
            PERFORM reminderd.check_callback_url(NEW.callback_url,
                                                 format('message %s / %s', NEW.tenant_id, NEW.ref_id),
                                                 'callback_url_is_http');
        END IF;
        IF NEW.cron IS NOT NULL THEN
            PERFORM reminderd.check_cron(NEW.cron, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
        END IF;
        IF NEW.callback_url IS NULL THEN  -- then the tenant's default is needed
            IF NOT tenant_found THEN
                RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                    USING ERRCODE = 'foreign_key_violation',
                          HINT = 'Create it first: reminderd tenant add ID --callback-url URL';
            ELSIF tenant_url IS NULL THEN
                RAISE EXCEPTION 'no callback_url for message % / %: the row has none and tenant "%" has no default',
                    NEW.tenant_id, NEW.ref_id, NEW.tenant_id
                    USING ERRCODE = 'not_null_violation';
            END IF;
        END IF;
        IF NEW.rrule IS NOT NULL AND NEW.rrule !~* '(^|\n)\s*DTSTART' THEN
            IF NEW.rrule ~* 'COUNT=' THEN
                RAISE EXCEPTION 'the rrule of message % / % has COUNT but no DTSTART', NEW.tenant_id, NEW.ref_id
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'COUNT counts from DTSTART: give one (DTSTART:20261201T090000), or use max_runs instead.';
            END IF;
            NEW.rrule := 'DTSTART:'
                         || to_char(date_trunc('day', reminderd.wall_time(now(), NEW.timezone)), 'YYYYMMDD"T"HH24MISS')
                         || E'\n' || btrim(NEW.rrule, E' \t\r\n');
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- After each INSERT statement (trigger scheduled_messages_record_insert), as the role inserting: the
-- audit trail (one INSERT per statement, not per row, so the daemon's batches stay batches; its
-- actor is that role) and the wake-up for the daemons (when a row is due within 10 minutes, their
-- poll interval at most, or a cron row needs planning: one notification per statement). What no
-- application role may write itself is count_inserts' (migration 0023). One function for both, not
-- one trigger each: a single-row INSERT paid each trigger's set-up.
CREATE FUNCTION reminderd.record_inserts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest  timestamptz;
    unplanned boolean;
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    SELECT n.id, n.tenant_id, n.ref_id, coalesce(n.last_event, 'created'), n.status, n.fire_at,
           CASE WHEN n.status = 'paused' THEN 'tenant is paused'
                WHEN n.status = 'awaiting_approval' THEN format('broadcast %s awaits approval', n.broadcast_id)
                WHEN n.status = 'dead' THEN n.last_error  -- a broadcast's row staged dead (migration 0038)
                WHEN n.contact_id IS NOT NULL
                    THEN format('contact %s: timezone %s (%s)', n.contact_id, n.timezone, n.timezone_source) END,
           current_user
    FROM changed_rows n;
    SELECT min(n.fire_at) FILTER (WHERE n.status = 'pending'),
           bool_or(n.fire_at IS NULL) FILTER (WHERE n.status = 'pending')
    INTO earliest, unplanned
    FROM changed_rows n;
    IF unplanned THEN
        PERFORM pg_notify('reminderd_due', 'plan');
    ELSIF earliest < clock_timestamp() + interval '10 minutes' THEN
        PERFORM pg_notify('reminderd_due', extract(epoch FROM earliest)::text);
    END IF;
    RETURN NULL;
END
$$;

-- After each INSERT statement (trigger scheduled_messages_count_insert, migration 0023), as the
-- owner: what an application role inserting messages must neither choose nor write itself.
--   ids        the sequence numbers the rows: an id past its last value would be one another
--              tenant's next INSERT is given, and fails on (42501). One comparison per statement.
--   broadcasts a row naming a broadcast names one of its own tenant (23503, the same words whether
--              the id is another tenant's or nobody's). Rows of no broadcast test nothing.
--   counts     the broadcasts' counts (one row per occurrence the statement staged, with how many
--              rows are in each state) and the tenants' usage (scheduled: new messages), which
--              reminderd_app and reminderd_api may read but not write.
-- SECURITY DEFINER, so a trigger function: nobody can call it with counts of their own.
CREATE FUNCTION reminderd.count_inserts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    top_id     bigint;
    staged     boolean;  -- rows of a broadcast's occurrence
    broadcasts boolean;  -- rows naming a broadcast
    stray      record;
BEGIN
    SELECT max(n.id), bool_or(n.broadcast_id IS NOT NULL AND n.contact_id IS NOT NULL), bool_or(n.broadcast_id IS NOT NULL)
    INTO top_id, staged, broadcasts
    FROM changed_rows n;
    IF top_id > coalesce(pg_sequence_last_value('reminderd.scheduled_messages_id_seq'::regclass), 0) THEN
        RAISE EXCEPTION 'message id % is not yours to choose: reminderd.scheduled_messages_id_seq numbers the messages '
                        'and has not reached it', top_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave id out of the INSERT: its default numbers the row. A DBA restoring rows moves the sequence '
                         'past them first (SELECT setval(''reminderd.scheduled_messages_id_seq'', ...)).';
    END IF;
    IF broadcasts THEN
        SELECT n.tenant_id, n.broadcast_id INTO stray
        FROM (SELECT DISTINCT c.tenant_id, c.broadcast_id FROM changed_rows c WHERE c.broadcast_id IS NOT NULL) AS n
        WHERE NOT EXISTS (SELECT 1 FROM reminderd.broadcast_requests r
                          WHERE r.tenant_id = n.tenant_id AND r.id = n.broadcast_id)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'tenant "%" has no broadcast %: a message names a broadcast of its own tenant',
                stray.tenant_id, stray.broadcast_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Leave broadcast_id out: reminderd.broadcast() stages a broadcast''s messages itself.';
        END IF;
    END IF;
    IF staged THEN
        INSERT INTO reminderd.broadcast_counts
            (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
        SELECT n.broadcast_id, n.local_time, n.tenant_id,
               count(*) FILTER (WHERE s.state = 'waiting'), count(*) FILTER (WHERE s.state = 'held'),
               count(*) FILTER (WHERE s.state = 'sent'), count(*) FILTER (WHERE s.state = 'failed'),
               count(*) FILTER (WHERE s.state = 'expired'), count(*) FILTER (WHERE s.state = 'cancelled')
        FROM changed_rows n
        CROSS JOIN LATERAL (SELECT reminderd.broadcast_state(n.status, n.last_event) AS state) AS s
        WHERE n.broadcast_id IS NOT NULL AND n.contact_id IS NOT NULL
        GROUP BY 1, 2, 3;
    END IF;
    INSERT INTO reminderd.usage_increments (tenant_id, scheduled)
    SELECT n.tenant_id, count(*) FROM changed_rows n GROUP BY n.tenant_id;
    RETURN NULL;
END
$$;

-- A row whose broadcast_id or tenant changes names a broadcast of its own tenant, as count_inserts
-- checks on INSERT (trigger scheduled_messages_broadcast_of_tenant, migration 0023). As the role
-- updating: it sees its own tenants' broadcasts, and the tenant is compared too. Its search_path
-- fixed, as refuse_pick's: the role's own could not bend what the check calls.
CREATE FUNCTION reminderd.check_broadcast_of_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reminderd.broadcast_requests r
                   WHERE r.tenant_id = NEW.tenant_id AND r.id = NEW.broadcast_id) THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %: message % / % names a broadcast of its own tenant',
            NEW.tenant_id, NEW.broadcast_id, NEW.tenant_id, NEW.ref_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Leave broadcast_id as it is: reminderd.broadcast() stages a broadcast''s messages itself.';
    END IF;
    RETURN NEW;
END
$$;

-- Only a daemon claims (trigger scheduled_messages_picked_by_daemon_*, migration 0023): a row in
-- status picked counts against its endpoint's max_in_flight until its lease expires, so a role that
-- could write one could hold every tenant of a shared endpoint. reminderd_app and reminderd_api
-- may not update picked_at, picked_by, endpoint (nor id): a move into picked that leaves picked_at
-- as it was is not a claim, and the triggers' WHEN clauses call this only then, so the daemon's
-- claims (which set picked_at) call nothing. The daemon's role and the owner (a DBA, the tests'
-- fixtures) may. As the role writing, its search_path fixed (else its own schema could shadow
-- pg_has_role); called only by the rare statement the WHEN clauses let through.
CREATE FUNCTION reminderd.refuse_pick() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_has_role(current_user, 'reminderd_daemon', 'USAGE')
       OR pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'message % / % cannot be set to picked by role %: only a reminderd daemon claims messages',
        NEW.tenant_id, NEW.ref_id, current_user
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Leave status to the daemon: a pending message that is due is claimed at once.';
END
$$;

-- Functions: timezones of phones, contacts and messages -----------------------------------------

-- Refuse a row whose times or counters the daemon could not read or move on (migration 0033): a
-- time outside 0001-01-02 .. 9999-12-30 UTC (Python's datetime, which the daemon reads them in,
-- ends at 9999-12-31; a day each side for a zone's offset) is refused in a sentence (22008), and an
-- attempts or runs outside 0 .. 1000000000 (22003: each claim adds 1 to attempts, each occurrence
-- to runs, and an integer ends at 2147483647). Only a value being written: on UPDATE, one that did
-- not change is left alone, so a row written before can still be moved on or ended. Called by the
-- triggers scheduled_messages_values_in_range_*, whose WHEN clauses test the same bounds.
CREATE FUNCTION reminderd.refuse_out_of_range() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    subject constant text := format('message %s / %s', NEW.tenant_id, NEW.ref_id);
    low     constant timestamptz := timestamptz '0001-01-02 00:00+00';
    high    constant timestamptz := timestamptz '9999-12-30 00:00+00';
    times   constant text[] := ARRAY['fire_at', 'scheduled_for', 'until', 'created_at', 'updated_at', 'picked_at',
                                     'sent_at', 'lease_expires_at'];
    given   timestamptz[] := ARRAY[NEW.fire_at, NEW.scheduled_for, NEW.until, NEW.created_at, NEW.updated_at,
                                   NEW.picked_at, NEW.sent_at, NEW.lease_expires_at];
    was     timestamptz[] := CASE WHEN TG_OP = 'UPDATE'
                                  THEN ARRAY[OLD.fire_at, OLD.scheduled_for, OLD.until, OLD.created_at,
                                             OLD.updated_at, OLD.picked_at, OLD.sent_at, OLD.lease_expires_at]
                                  ELSE '{}' END;
BEGIN
    FOR k IN 1 .. array_length(times, 1) LOOP
        IF given[k] NOT BETWEEN low AND high AND given[k] IS DISTINCT FROM was[k] THEN
            RAISE EXCEPTION '% % of % is outside the years the daemon can read',
                times[k], CASE WHEN NOT isfinite(given[k]) THEN given[k]::text
                               ELSE to_char(given[k] AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                                    || CASE WHEN given[k] < timestamptz '0001-01-01 00:00+00' THEN ' BC' ELSE '' END END,
                subject
                USING ERRCODE = 'datetime_field_overflow',
                      DETAIL = 'The daemon reads times between 0001-01-02 and 9999-12-30 UTC.',
                      HINT = 'Give a time in that range, like now() + interval ''1 hour''.';
        END IF;
    END LOOP;
    IF NEW.local_time NOT BETWEEN (low AT TIME ZONE 'UTC') AND (high AT TIME ZONE 'UTC')
       AND (TG_OP = 'INSERT' OR NEW.local_time IS DISTINCT FROM OLD.local_time)
    THEN
        RAISE EXCEPTION 'local_time % of % is outside the years the daemon can read', NEW.local_time, subject
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = 'The daemon reads wall times between 0001-01-02 and 9999-12-30.',
                  HINT = 'Give a wall time, like ''2026-12-24 09:00''.';
    END IF;
    IF NEW.attempts NOT BETWEEN 0 AND 1000000000 AND (TG_OP = 'INSERT' OR NEW.attempts IS DISTINCT FROM OLD.attempts)
    THEN
        RAISE EXCEPTION 'attempts % of % is outside 0 to 1000000000', NEW.attempts, subject
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = 'Each claim adds 1 to attempts, and an integer ends at 2147483647.',
                  HINT = 'Leave attempts to the daemon: reminderd.requeue() of a dead message sets it back to 0.';
    END IF;
    IF NEW.runs NOT BETWEEN 0 AND 1000000000 AND (TG_OP = 'INSERT' OR NEW.runs IS DISTINCT FROM OLD.runs) THEN
        RAISE EXCEPTION 'runs % of % is outside 0 to 1000000000', NEW.runs, subject
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = 'Each occurrence fired adds 1 to runs, and an integer ends at 2147483647.',
                  HINT = 'Leave runs to the daemon; max_runs ends a recurring message after that many occurrences.';
    END IF;
    RETURN NEW;
END
$$;

-- Is `phone` written as a phone number, +<country code> <number>: a + and then digits (the first
-- not 0, at least three), with the separators reminderd.phone_timezone() reads past anywhere
-- (ASCII white space, parentheses, dots, dashes, slashes: "+44 (0)20 7946-0018")? NULL for NULL.
-- The rule the contacts' trigger and upsert_contact_rows refuse a phone by (migration 0021), and
-- reminderd/contact_files.py checks for the CLI and the HTTP API after writing a national number
-- in E.164. A number written so but not valid is still a phone: its zone falls through.
CREATE FUNCTION reminderd.is_phone(phone text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- E.164 (as the CLI and the API send it) first: without translate(), a quarter of the time.
    SELECT phone ~ '^\+[1-9][0-9]{2,}$' OR translate(phone, E' \t\n\r\f\x0b().-/', '') ~ '^\+[1-9][0-9]{2,}$'
$$;

-- The zone phonenumbers gives a number written "+<code> <number>" (spaces, dashes, dots, slashes
-- and parentheses allowed), or no row: not such a number, not valid, or its place spans several
-- zones. phonenumbers' own algorithm on its own data (reminderd/phones.py builds the tables; a test
-- compares this with the library on thousands of numbers): the calling code; a national prefix
-- written after it is dropped when what is left is still a number; the region among those sharing
-- the code; the number's type there; then, for a fixed-line number (and mobiles where they are
-- tied to a place), the longest known prefix of the whole number, otherwise the calling code's.
-- A set-returning SQL function, so a query inlines it (upsert_contact_rows resolves thousands at once).
-- The national number of "+<code><rest>" when the plan's national prefix matched the start of
-- rest (m: that match and its groups): without the prefix (or rewritten by the plan's rule), unless
-- the number was viable as written and is not without it, or what is left has no possible length.
CREATE FUNCTION reminderd.national_number(
    rest text, m text[], national_prefix text, national_prefix_groups integer, national_prefix_rule text,
    viable text, lengths integer[], local_lengths integer[]
) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    candidate text;
BEGIN
    IF national_prefix_rule IS NULL OR national_prefix_groups = 0 OR m[national_prefix_groups + 1] IS NULL THEN
        candidate := substr(rest, length(m[1]) + 1);
    ELSE
        candidate := regexp_replace(rest, '^(?:' || national_prefix || ')', national_prefix_rule);
    END IF;
    IF coalesce(rest ~ viable, false) AND NOT coalesce(candidate ~ viable, false) THEN
        RETURN rest;
    END IF;
    IF NOT (length(candidate) = ANY (local_lengths))
       AND (lengths[1] = length(candidate)
            OR (lengths[1] < length(candidate)
                AND (lengths[cardinality(lengths)] < length(candidate) OR length(candidate) = ANY (lengths[2:])))) THEN
        RETURN candidate;
    END IF;
    RETURN rest;
END
$$;

CREATE FUNCTION reminderd.phone_timezone(phone text) RETURNS TABLE (timezone text)
LANGUAGE sql STABLE AS $$
    -- A few LATERAL steps, each computed once per number (OFFSET 0 where a flattened query would
    -- repeat an expression); upsert_contact_rows inlines it for each distinct phone of a batch.
    SELECT CASE WHEN choice.mask & 1 = 0 THEN NULL
                WHEN choice.mask & 2 <> 0 THEN code.country_timezone
                WHEN choice.mask & 4 <> 0 THEN choice.zone
                WHEN choice.mask & 8 <> 0 THEN
                    CASE WHEN code.geographic_mobile THEN choice.zone ELSE code.country_timezone END
           END
    -- OFFSET 0: the number without separators computed once, not once per use (a quarter of the
    -- function's time).
    -- (\x0b: the vertical tab; E'\v' would be the letter v, as it was before migration 0021.)
    FROM (SELECT translate(phone, E' \t\n\r\f\x0b().-/', '') AS written OFFSET 0) AS given
    -- The calling code (the shortest leading 1-3 digits that are one; none starts with 0), and a
    -- national prefix written after it ("+44 (0)20 …"), matched.
    CROSS JOIN LATERAL (
        SELECT p.*, substr(given.written, length(p.country_code::text) + 2) AS rest,
               regexp_match(substr(given.written, length(p.country_code::text) + 2),
                            '^(' || p.national_prefix || ')') AS m
        FROM reminderd.phone_plans p
        WHERE given.written ~ '^\+[1-9][0-9]{2,}$' AND length(given.written) <= 250
          AND p.country_code IN (substr(given.written, 2, 1)::integer, substr(given.written, 2, 2)::integer,
                                 substr(given.written, 2, 3)::integer)
        ORDER BY p.country_code
        LIMIT 1
    ) AS code
    -- The national number: what follows the code, or without the national prefix (rare: its own
    -- function, reminderd.national_number).
    CROSS JOIN LATERAL (
        SELECT nsn, length(nsn) AS digits
        FROM (SELECT CASE WHEN code.m IS NULL THEN code.rest
                          ELSE reminderd.national_number(code.rest, code.m, code.national_prefix,
                                                         code.national_prefix_groups, code.national_prefix_rule,
                                                         code.viable, code.lengths, code.local_lengths) END AS nsn
              WHERE length(code.rest) >= 2) AS chosen
        WHERE length(nsn) BETWEEN 2 AND 17
        OFFSET 0
    ) AS number
    -- Its row in the first region of the code (one index lookup: the last prefix not after it).
    LEFT JOIN LATERAL (
        SELECT last.masks[number.digits] AS mask, last.timezone
        FROM (SELECT x.prefix, x.masks, x.timezone
              FROM reminderd.phone_prefixes x
              WHERE x.country_code = code.country_code AND x.position = 1 AND NOT x.leading_digits
                AND x.prefix <= number.nsn
              ORDER BY x.prefix DESC
              LIMIT 1) AS last
        WHERE starts_with(number.nsn, last.prefix)
    ) AS first_region ON true
    -- That region is the number's when the code has no other, or when it is valid there and the
    -- region is not told by leading digits. Otherwise the regions in phonenumbers' order: the first
    -- whose leading digits the number starts with, or that has none and where it is valid. Then
    -- what kind of number it is there (mask: 1 valid, 2 tied to no place, 4 fixed line, 8 mobile)
    -- and the zone of a place-bound number there.
    CROSS JOIN LATERAL (
        SELECT coalesce(pick[1]::integer, 0) AS mask, pick[2] AS zone
        FROM (SELECT CASE
            WHEN code.regions = 1 OR (NOT code.first_region_has_leading_digits AND first_region.mask & 1 = 1
                                      AND first_region.mask & 14 <> 0)
                THEN ARRAY[first_region.mask::text, first_region.timezone]
            ELSE (
                SELECT ARRAY[y.mask::text, y.timezone]
                FROM (SELECT x.position, bool_or(x.leading_digits) AS led, bool_or(r.has_leading_digits) AS has_leading,
                             (array_agg(x.masks[number.digits] ORDER BY length(x.prefix) DESC)
                                  FILTER (WHERE NOT x.leading_digits))[1] AS mask,
                             (array_agg(x.timezone ORDER BY length(x.prefix) DESC)
                                  FILTER (WHERE NOT x.leading_digits))[1] AS timezone
                      FROM reminderd.phone_prefixes x
                      JOIN reminderd.phone_regions r ON r.country_code = x.country_code AND r.position = x.position
                      WHERE x.country_code = code.country_code
                        AND x.prefix = ANY ((ARRAY[
                            left(number.nsn, 0), left(number.nsn, 1), left(number.nsn, 2), left(number.nsn, 3),
                            left(number.nsn, 4), left(number.nsn, 5), left(number.nsn, 6), left(number.nsn, 7),
                            left(number.nsn, 8), left(number.nsn, 9), left(number.nsn, 10), left(number.nsn, 11),
                            left(number.nsn, 12), left(number.nsn, 13), left(number.nsn, 14), left(number.nsn, 15),
                            left(number.nsn, 16), left(number.nsn, 17)])[1:least(number.digits, code.longest_prefix) + 1])
                      GROUP BY x.position) AS y
                WHERE y.led OR (NOT y.has_leading AND y.mask & 1 = 1 AND y.mask & 14 <> 0)
                ORDER BY y.position
                LIMIT 1)
            END AS pick
            OFFSET 0) AS chosen
    ) AS choice
    WHERE choice.mask & 1 = 1
$$;

-- A contact's zone from its own fields: its timezone, else its phone's, else its country's (NULL:
-- the tenant's, read when a message needs it). Before each row written by plain SQL;
-- upsert_contact_rows resolves whole batches itself and says so (reminderd.contacts_resolved).
-- A new or changed phone that is not +<country code> <number> (reminderd.is_phone) is refused
-- (22023, migration 0021); one written before keeps its row moving.
CREATE FUNCTION reminderd.resolve_contact() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.phone IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.phone IS DISTINCT FROM OLD.phone) THEN
        IF length(NEW.phone) > 250 THEN
            RAISE EXCEPTION 'phone of contact % / % is % characters; at most 250', NEW.tenant_id, NEW.contact_id,
                length(NEW.phone)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'phone_length',
                      HINT = 'A phone is written +<country code> <number>, like +44 20 7946 0018.';
        ELSIF NOT reminderd.is_phone(NEW.phone) THEN
            RAISE EXCEPTION 'phone % of contact % / % is not +<country code> <number>', to_jsonb(NEW.phone)::text,
                NEW.tenant_id, NEW.contact_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A phone is written +<country code> <number>, like +44 20 7946 0018: a +, then digits, '
                             'with spaces, dashes, dots, slashes or parentheses between them if you like.';
        END IF;
    END IF;
    IF NEW.country IS NOT NULL AND NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = NEW.country) THEN
        RAISE EXCEPTION 'unknown country "%" for contact % / %', NEW.country, NEW.tenant_id, NEW.contact_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an ISO 3166 alpha-2 code such as GB, IN or US (reminderd.countries lists them).';
    END IF;
    IF NEW.timezone IS NOT NULL THEN
        IF NOT reminderd.is_timezone(NEW.timezone) THEN
            RAISE EXCEPTION 'unknown timezone "%" for contact % / %', NEW.timezone, NEW.tenant_id, NEW.contact_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
        END IF;
        NEW.resolved_timezone := NEW.timezone;
        NEW.timezone_source := 'contact';
        RETURN NEW;
    END IF;
    NEW.resolved_timezone := (SELECT z.timezone FROM reminderd.phone_timezone(NEW.phone) AS z);
    NEW.timezone_source := CASE WHEN NEW.resolved_timezone IS NOT NULL THEN 'phone' END;
    IF NEW.resolved_timezone IS NULL THEN
        NEW.resolved_timezone := (SELECT c.timezone FROM reminderd.countries c WHERE c.country = NEW.country);
        NEW.timezone_source := CASE WHEN NEW.resolved_timezone IS NOT NULL THEN 'country' END;
    END IF;
    RETURN NEW;
END
$$;

-- Contacts, many at once, as reminderd.upsert_contacts() takes them (the same rules, the same
-- errors: one bad element refuses the batch, named by its position). Returns how many contacts
-- were added or changed; a contact given twice takes its last element. The zone of a contact is
-- worked out only when what it is worked out from changed, and each distinct phone once.
CREATE FUNCTION reminderd.upsert_contact_rows(tenant_id text, contacts reminderd.contact_v1[]) RETURNS integer
LANGUAGE plpgsql
-- A plan for each batch as it is: a generic plan, which PL/pgSQL switches to after five calls,
-- knows neither the batch's size nor its tenant's, and took 15 times as long.
SET plan_cache_mode = force_custom_plan SET jit = off AS $$
#variable_conflict use_column
DECLARE
    bad     record;
    written integer;
    careful boolean := false;
    refused text;
BEGIN
    PERFORM reminderd.check_tenant(upsert_contact_rows.tenant_id);
    -- Timezones and countries: each distinct value once; a batch with an unknown one is looked at
    -- again only then, to name its first element giving one.
    IF EXISTS (SELECT FROM (SELECT DISTINCT c.timezone AS value FROM unnest(upsert_contact_rows.contacts) AS c
                            WHERE c.timezone IS NOT NULL OFFSET 0) AS z  -- OFFSET 0: each distinct zone checked once
               WHERE NOT reminderd.is_timezone(z.value))
       OR EXISTS (SELECT FROM (SELECT DISTINCT upper(c.country) AS value FROM unnest(upsert_contact_rows.contacts) AS c
                               WHERE c.country IS NOT NULL) AS k
                  WHERE k.value ~ '^[A-Z]{2}$'  -- not two letters: the table's constraint, its element named below
                    AND NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = k.value)) THEN
        SELECT given.n, given.contact_id, given.field, given.value INTO bad
        FROM (SELECT c.ordinality AS n, c.contact_id,
                     CASE WHEN c.timezone IS NOT NULL AND NOT reminderd.is_timezone(c.timezone) THEN 'timezone'
                          WHEN upper(c.country) ~ '^[A-Z]{2}$'
                               AND NOT EXISTS (SELECT 1 FROM reminderd.countries k WHERE k.country = upper(c.country))
                              THEN 'country' END AS field,
                     CASE WHEN c.timezone IS NOT NULL AND NOT reminderd.is_timezone(c.timezone) THEN c.timezone
                          ELSE upper(c.country) END AS value
              FROM unnest(upsert_contact_rows.contacts) WITH ORDINALITY AS c) AS given
        WHERE given.field IS NOT NULL
        ORDER BY given.n
        LIMIT 1;
        RAISE EXCEPTION 'contact % of the batch (contact_id %) has unknown % "%"', bad.n,
            coalesce(to_jsonb(bad.contact_id)::text, 'missing'), bad.field, bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  COLUMN = format('contacts[%s]', bad.n),
                  HINT = CASE bad.field WHEN 'timezone' THEN 'Use an IANA name such as Europe/London or Asia/Kolkata.'
                         ELSE 'Use an ISO 3166 alpha-2 code such as GB, IN or US (reminderd.countries lists them).' END;
    END IF;

    -- The element rules (contact_id, phone, country, attributes) are the table's constraints: a
    -- batch that breaks one is looked at again only then, to name its first bad element
    -- (checking each element first cost as much as the regular expression twice). A phone given
    -- must be one (reminderd.is_phone, migration 0021), which no constraint says (a contact whose
    -- phone was written before keeps moving): tested first, named the same way.
    -- Contacts not there when looked up are added with a plain INSERT (ON CONFLICT's speculative
    -- insertion cost 2-3 us a row more); one added meanwhile by another transaction makes the
    -- batch go again, carefully: every contact through ON CONFLICT.
    LOOP
    BEGIN
        IF EXISTS (SELECT FROM unnest(upsert_contact_rows.contacts) AS c
                   WHERE c.has_phone AND btrim(c.phone) <> '' AND NOT reminderd.is_phone(c.phone)) THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation';  -- named below
        END IF;
        -- Resolved here for the whole batch: the row trigger stands aside for this statement.
        PERFORM set_config('reminderd.contacts_resolved', 'on', true);
        WITH latest AS (
            -- A contact given twice: its last element wins.
            SELECT DISTINCT ON (c.contact_id) c.*
            FROM unnest(upsert_contact_rows.contacts) WITH ORDINALITY AS c
            ORDER BY c.contact_id, c.ordinality DESC
        ),
        merged AS (
            SELECT l.contact_id,
                   CASE WHEN l.has_timezone THEN l.timezone ELSE c.timezone END AS timezone,
                   CASE WHEN l.has_phone THEN nullif(btrim(l.phone), '') ELSE c.phone END AS phone,
                   CASE WHEN l.has_country THEN upper(l.country) ELSE c.country END AS country,
                   CASE WHEN l.has_attributes THEN coalesce(l.attributes, '{}') ELSE coalesce(c.attributes, '{}') END
                       AS attributes,
                   c.contact_id IS NOT NULL AS known,
                   c.timezone AS was_timezone, c.phone AS was_phone, c.country AS was_country,
                   c.attributes AS was_attributes, c.resolved_timezone AS was_resolved, c.timezone_source AS was_source
            FROM latest l
            -- One index lookup per contact given, never a scan of the tenant's contacts (OFFSET 0: not
            -- flattened into a join the planner may hash).
            LEFT JOIN LATERAL (
                SELECT * FROM reminderd.contacts c
                WHERE c.tenant_id = upsert_contact_rows.tenant_id AND c.contact_id = l.contact_id
                OFFSET 0
            ) AS c ON true
        ),
        judged AS (
            SELECT m.*, m.known AND m.timezone IS NOT DISTINCT FROM m.was_timezone
                        AND m.phone IS NOT DISTINCT FROM m.was_phone AND m.country IS NOT DISTINCT FROM m.was_country
                        AS same_inputs
            FROM merged m
        ),
        -- A phone is read only when it matters (no own timezone, and what the zone is worked out from
        -- changed), and each distinct phone once.
        by_phone AS (
            SELECT p.phone, z.timezone
            FROM (SELECT DISTINCT j.phone FROM judged j
                  WHERE j.timezone IS NULL AND NOT j.same_inputs AND j.phone IS NOT NULL) AS p
            CROSS JOIN LATERAL reminderd.phone_timezone(p.phone) AS z
        ),
        resolved AS (
            SELECT j.contact_id, j.known, j.timezone, j.phone, j.country, j.attributes,
                   CASE WHEN j.timezone IS NOT NULL THEN j.timezone
                        WHEN j.same_inputs THEN j.was_resolved
                        ELSE coalesce(p.timezone, k.timezone) END AS resolved_timezone,
                   CASE WHEN j.timezone IS NOT NULL THEN 'contact'
                        WHEN j.same_inputs THEN j.was_source
                        WHEN p.timezone IS NOT NULL THEN 'phone'
                        WHEN k.timezone IS NOT NULL THEN 'country' END AS timezone_source
            FROM judged j
            LEFT JOIN by_phone p ON p.phone = j.phone AND j.timezone IS NULL AND NOT j.same_inputs
            LEFT JOIN reminderd.countries k ON k.country = j.country
            -- A contact given as it is stays as it is: not even locked by ON CONFLICT (nothing written).
            WHERE NOT (j.same_inputs AND j.attributes = j.was_attributes)
        ),
        added AS (
            INSERT INTO reminderd.contacts
                (tenant_id, contact_id, timezone, phone, country, attributes, resolved_timezone, timezone_source)
            SELECT upsert_contact_rows.tenant_id, r.contact_id, r.timezone, r.phone, r.country, r.attributes,
                   r.resolved_timezone, r.timezone_source
            FROM resolved r
            WHERE NOT r.known AND NOT careful
            RETURNING 1
        ),
        changed AS (
            INSERT INTO reminderd.contacts AS c
                (tenant_id, contact_id, timezone, phone, country, attributes, resolved_timezone, timezone_source)
            SELECT upsert_contact_rows.tenant_id, r.contact_id, r.timezone, r.phone, r.country, r.attributes,
                   r.resolved_timezone, r.timezone_source
            FROM resolved r
            WHERE r.known OR careful
            ON CONFLICT (tenant_id, contact_id) DO UPDATE
            SET timezone = excluded.timezone, phone = excluded.phone, country = excluded.country,
                attributes = excluded.attributes, resolved_timezone = excluded.resolved_timezone,
                timezone_source = excluded.timezone_source, updated_at = now()
            WHERE (c.timezone, c.phone, c.country, c.attributes)
                  IS DISTINCT FROM (excluded.timezone, excluded.phone, excluded.country, excluded.attributes)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM added) + (SELECT count(*) FROM changed) INTO written;
        EXIT;
    EXCEPTION WHEN unique_violation THEN
        IF careful THEN
            RAISE;
        END IF;
        careful := true;  -- a contact added meanwhile: again
    WHEN invalid_parameter_value THEN
        -- replan_for_contacts refused a contact it would leave with no zone while its messages need
        -- one (migration 0032): named as an element, the last giving that contact.
        GET STACKED DIAGNOSTICS refused := CONSTRAINT_NAME;
        IF refused = 'contact_zone_needed' THEN
            SELECT l.ordinality AS n, l.contact_id, count(*) AS live INTO bad
            FROM (SELECT DISTINCT ON (c.contact_id) c.*
                  FROM unnest(upsert_contact_rows.contacts) WITH ORDINALITY AS c
                  ORDER BY c.contact_id, c.ordinality DESC) AS l
            JOIN reminderd.contacts k ON k.tenant_id = upsert_contact_rows.tenant_id AND k.contact_id = l.contact_id
            JOIN reminderd.scheduled_messages m ON m.tenant_id = k.tenant_id AND m.contact_id = k.contact_id
            WHERE m.timezone_source <> 'message' AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
              AND CASE WHEN l.has_timezone THEN l.timezone ELSE k.timezone END IS NULL
              AND (SELECT z.timezone FROM reminderd.phone_timezone(
                       CASE WHEN l.has_phone THEN nullif(btrim(l.phone), '') ELSE k.phone END) AS z) IS NULL
              AND (SELECT y.timezone FROM reminderd.countries y
                   WHERE y.country = CASE WHEN l.has_country THEN upper(l.country) ELSE k.country END) IS NULL
            GROUP BY 1, 2
            ORDER BY 1
            LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'contact % of the batch (contact_id %) would have no timezone, and % of its messages need one',
                    bad.n, to_jsonb(bad.contact_id)::text, bad.live
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                          COLUMN = format('contacts[%s]', bad.n), CONSTRAINT = 'contact_zone_needed',
                          HINT = 'Set the tenant''s default first (reminderd tenant set TENANT --timezone Europe/London).';
            END IF;
        END IF;
        RAISE;
    WHEN check_violation OR not_null_violation THEN
        SELECT given.n, given.contact_id, given.why INTO bad
        FROM (SELECT c.ordinality AS n, c.contact_id, CASE
                  WHEN c.contact_id IS NULL THEN 'has no "contact_id" string'
                  WHEN c.contact_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$' THEN
                      'has a contact_id with characters other than letters, digits and _ . : @ + - (at most 128, starting with a letter or digit)'
                  WHEN length(c.phone) > 250 THEN '"phone" is longer than 250 characters'
                  WHEN c.has_phone AND btrim(c.phone) <> '' AND NOT reminderd.is_phone(c.phone) THEN
                      format('has phone %s, which is not +<country code> <number>', to_jsonb(c.phone))
                  WHEN c.country !~ '^[A-Za-z]{2}$' THEN '"country" is not a two-letter ISO 3166 code'
                  WHEN jsonb_typeof(c.attributes) <> 'object' THEN '"attributes" is not a JSON object'
                  END AS why
              FROM unnest(upsert_contact_rows.contacts) WITH ORDINALITY AS c) AS given
        WHERE given.why IS NOT NULL
        ORDER BY given.n
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'contact % of the batch (contact_id %) %', bad.n,
                coalesce(to_jsonb(bad.contact_id)::text, 'missing'), bad.why
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Nothing in this batch was changed.', COLUMN = format('contacts[%s]', bad.n),
                      HINT = CASE WHEN bad.why LIKE 'has phone %'
                                  THEN 'A phone is written +<country code> <number>, like +44 20 7946 0018: a +, then '
                                       'digits, with spaces, dashes, dots, slashes or parentheses between them if you like.'
                                  ELSE 'Each contact: {"contact_id": "cust_8f", "timezone": "Europe/London", '
                                       '"phone": "+447700900123", "country": "GB", "attributes": {…}}; every field but '
                                       'contact_id is optional.' END;
        END IF;
        RAISE;  -- not an element's (a trigger's refusal): as it was
    END;
    END LOOP;
    PERFORM set_config('reminderd.contacts_resolved', 'off', true);
    RETURN written;
END
$$;

-- Contacts, one or many: a JSON array of {"contact_id", "timezone", "phone", "country",
-- "attributes"} (or one such object). A field left out keeps its value; null clears it;
-- attributes are replaced whole. The whole batch is checked first: one bad element refuses it,
-- named by its position. Returns how many contacts were added or changed. The JSON's shape is
-- checked here (its types, unknown fields); the values' rules are reminderd.upsert_contact_rows()'s.
CREATE FUNCTION reminderd.upsert_contacts(tenant_id text, contacts jsonb) RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    items   jsonb;
    bad     record;
BEGIN
    PERFORM reminderd.check_tenant(upsert_contacts.tenant_id);
    items := CASE jsonb_typeof(upsert_contacts.contacts) WHEN 'array' THEN upsert_contacts.contacts
                                                         WHEN 'object' THEN jsonb_build_array(upsert_contacts.contacts) END;
    IF items IS NULL THEN
        RAISE EXCEPTION 'contacts must be a JSON array of objects (or one object), not %',
            coalesce(jsonb_typeof(upsert_contacts.contacts), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: [{"contact_id": "cust_8f", "phone": "+14155552671", "country": "US"}]';
    END IF;
    SELECT given.n, given.e->'contact_id' AS contact_id, problem.why INTO bad
    FROM jsonb_array_elements(items) WITH ORDINALITY AS given (e, n)
    CROSS JOIN LATERAL (SELECT CASE
        WHEN jsonb_typeof(given.e) <> 'object' THEN 'is not a JSON object'
        WHEN jsonb_typeof(given.e->'contact_id') IS DISTINCT FROM 'string' THEN 'has no "contact_id" string'
        WHEN jsonb_typeof(given.e->'timezone') NOT IN ('string', 'null') THEN '"timezone" is not a string'
        WHEN jsonb_typeof(given.e->'phone') NOT IN ('string', 'null') THEN '"phone" is not a string'
        WHEN jsonb_typeof(given.e->'country') NOT IN ('string', 'null') THEN '"country" is not a string'
        WHEN jsonb_typeof(given.e->'attributes') NOT IN ('object', 'null') THEN '"attributes" is not a JSON object'
        WHEN given.e - ARRAY['contact_id', 'timezone', 'phone', 'country', 'attributes'] <> '{}' THEN
            format('has unknown fields (%s)', (SELECT string_agg(k, ', ') FROM jsonb_object_keys(
                   given.e - ARRAY['contact_id', 'timezone', 'phone', 'country', 'attributes']) AS k))
        END AS why) AS problem
    WHERE problem.why IS NOT NULL
    ORDER BY given.n
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'contact % of the batch (contact_id %) %', bad.n, coalesce(bad.contact_id::text, 'missing'), bad.why
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Nothing in this batch was changed.', COLUMN = format('contacts[%s]', bad.n),
                  HINT = 'Each contact: {"contact_id": "cust_8f", "timezone": "Europe/London", "phone": "+447700900123", '
                         '"country": "GB", "attributes": {…}}; every field but contact_id is optional.';
    END IF;
    RETURN reminderd.upsert_contact_rows(upsert_contacts.tenant_id, ARRAY(
        SELECT ROW(e->>'contact_id', e->>'timezone', e->>'phone', e->>'country', nullif(e->'attributes', 'null'),
                   e ? 'timezone', e ? 'phone', e ? 'country', e ? 'attributes')::reminderd.contact_v1
        FROM jsonb_array_elements(items) WITH ORDINALITY AS given (e, n)
        ORDER BY n));
END
$$;

-- Contacts removed (and from every audience); their live messages are cancelled by the trigger
-- contacts_cancel_messages.
CREATE FUNCTION reminderd.delete_contacts(tenant_id text, contact_ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    deleted integer;
BEGIN
    PERFORM reminderd.check_tenant(delete_contacts.tenant_id);
    DELETE FROM reminderd.contacts
    WHERE tenant_id = delete_contacts.tenant_id AND contact_id = ANY (delete_contacts.contact_ids);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

-- The zone of a message: the one it names (source 'message'), or its contact's (contact, phone,
-- country) or its tenant's default (tenant); UTC for a message naming neither. An 'Etc/Universal'
-- it names is 'UTC', the same zone (migration 0032): the column's default stands for a zone left
-- out, which admit_message replaces with the contact's, so a zone given must not look like it.
CREATE FUNCTION reminderd.message_timezone(tenant_id text, contact_id text, timezone text,
                                           OUT zone text, OUT source text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF message_timezone.timezone LIKE 'posix/%' THEN  -- its IANA name, with a WARNING (0039)
        timezone := reminderd.stored_timezone(message_timezone.timezone,
                                              format('a message of tenant "%s"', message_timezone.tenant_id));
    END IF;
    IF message_timezone.contact_id IS NULL THEN
        zone := coalesce(nullif(message_timezone.timezone, 'Etc/Universal'), 'UTC');
        source := 'message';
        RETURN;
    END IF;
    SELECT coalesce(c.resolved_timezone, t.timezone), coalesce(c.timezone_source, 'tenant') INTO zone, source
    FROM reminderd.contacts c
    JOIN reminderd.tenants t ON t.id = c.tenant_id
    WHERE c.tenant_id = message_timezone.tenant_id AND c.contact_id = message_timezone.contact_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown contact "%" of tenant "%"', message_timezone.contact_id, message_timezone.tenant_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Add it first: SELECT reminderd.upsert_contacts(tenant, ''[{"contact_id": "…", "phone": "+…"}]'')';
    END IF;
    IF message_timezone.timezone IS NOT NULL THEN
        zone := CASE WHEN message_timezone.timezone = 'Etc/Universal' THEN 'UTC' ELSE message_timezone.timezone END;
        source := 'message';
    ELSIF zone IS NULL THEN
        RAISE EXCEPTION 'contact "%" of tenant "%" has no timezone: none of its own, no phone or country that gives one, and the tenant has no default',
            message_timezone.contact_id, message_timezone.tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set the tenant''s default (reminderd tenant set TENANT --timezone Europe/London), or the contact''s timezone.';
    END IF;
END
$$;

-- Has the receiver been sent this occurrence of the message (its webhook-id)? An attempt of it
-- counted, or one logged (a dead row requeued has attempts 0 and the same occurrence).
CREATE FUNCTION reminderd.occurrence_attempted(message_id bigint, attempts integer, scheduled_for timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT occurrence_attempted.attempts > 0
        OR occurrence_attempted.scheduled_for IS NOT NULL
           AND EXISTS (SELECT 1 FROM reminderd.deliveries d
                       WHERE d.message_id = occurrence_attempted.message_id
                         AND d.scheduled_for = occurrence_attempted.scheduled_for)
$$;

-- After each statement that writes contacts, however it was written (migration 0033): the zones
-- it wrote (timezone, resolved_timezone) are ones the daemon can read, each distinct zone checked
-- once, so the bulk path (upsert_contact_rows, which resolves zones itself and says so with
-- reminderd.contacts_resolved, skipping resolve_contact) pays one check per zone, not per contact,
-- and a session that sets reminderd.contacts_resolved itself, or an UPDATE of resolved_timezone
-- alone, cannot write a zone that is none (a recurring broadcast could never stage). On UPDATE a
-- value the contact already had is left alone. Before contacts_replan (names): its messages are
-- not moved to a zone this refuses.
CREATE FUNCTION reminderd.check_contact_zones() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT z.zone INTO bad
    FROM (SELECT DISTINCT u.zone
          FROM changed_contacts n CROSS JOIN LATERAL (VALUES (n.timezone), (n.resolved_timezone)) AS u (zone)
          WHERE u.zone NOT IN ('UTC', 'Etc/UTC')
          OFFSET 0) AS z  -- OFFSET 0: each distinct zone checked once
    WHERE NOT reminderd.is_timezone(z.zone)
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT n.tenant_id, n.contact_id, CASE WHEN n.timezone = bad.zone THEN 'timezone' ELSE 'resolved_timezone' END
                   AS field, bad.zone AS zone
        INTO bad
        FROM changed_contacts n
        WHERE bad.zone IN (n.timezone, n.resolved_timezone)
        LIMIT 1;
    ELSE
        SELECT n.tenant_id, n.contact_id,
               CASE WHEN n.timezone = bad.zone AND n.timezone IS DISTINCT FROM o.timezone THEN 'timezone'
                    ELSE 'resolved_timezone' END AS field,
               bad.zone AS zone
        INTO bad
        FROM changed_contacts n
        JOIN previous_contacts o ON o.tenant_id = n.tenant_id AND o.contact_id = n.contact_id
        WHERE (n.timezone = bad.zone AND n.timezone IS DISTINCT FROM o.timezone)
           OR (n.resolved_timezone = bad.zone AND n.resolved_timezone IS DISTINCT FROM o.resolved_timezone)
        LIMIT 1;
        IF NOT FOUND THEN  -- only values the contacts already had
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'unknown timezone "%" for contact % / % (its %)', bad.zone, bad.tenant_id, bad.contact_id, bad.field
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'The daemon reads a contact''s resolved_timezone to place its messages; it works it out from '
                       'the contact''s timezone, phone or country.',
              HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata, and set the contact''s timezone '
                     '(reminderd.upsert_contacts): its resolved_timezone follows.';
END
$$;

-- When a contact's zone changes, its live messages that take their zone from it are re-planned
-- in the same statement: a wall time (local_time) is placed again in the new zone, a recurring
-- row is planned again by the daemon from now (fire_at NULL), an instant keeps its fire_at (its
-- quiet hours and holidays are read in the new zone). A row already attempted for its occurrence
-- keeps it (its webhook-id), its attempts and its retry's time; only its zone moves. A row being
-- sent right now keeps its zone for that attempt and is marked (last_event 'replanned'):
-- reminderd.rezone_after_attempt moves it when the attempt ends. Only the source changing (the same
-- zone, now from the contact's own field) is recorded quietly.
CREATE FUNCTION reminderd.replan_for_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    stranded record;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM changed_contacts n
        JOIN previous_contacts o ON o.tenant_id = n.tenant_id AND o.contact_id = n.contact_id
        WHERE (n.resolved_timezone, n.timezone_source) IS DISTINCT FROM (o.resolved_timezone, o.timezone_source)
    ) THEN
        RETURN NULL;
    END IF;
    SELECT n.tenant_id, n.contact_id, count(*) AS live INTO stranded
    FROM changed_contacts n
    JOIN reminderd.tenants t ON t.id = n.tenant_id
    JOIN reminderd.scheduled_messages m ON m.tenant_id = n.tenant_id AND m.contact_id = n.contact_id
    WHERE n.resolved_timezone IS NULL AND t.timezone IS NULL AND m.timezone_source <> 'message'
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
    GROUP BY 1, 2
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'contact "%" of tenant "%" would have no timezone, and % of its messages need one',
            stranded.contact_id, stranded.tenant_id, stranded.live
            USING ERRCODE = 'invalid_parameter_value', TABLE = 'contacts', COLUMN = 'timezone',
                  CONSTRAINT = 'contact_zone_needed',  -- upsert_contact_rows names its element by it
                  HINT = 'Set the tenant''s default first (reminderd tenant set TENANT --timezone Europe/London).';
    END IF;
    WITH moved AS (
        SELECT n.tenant_id, n.contact_id, coalesce(n.resolved_timezone, t.timezone) AS zone,
               coalesce(n.timezone_source, 'tenant') AS source
        FROM changed_contacts n
        JOIN previous_contacts o ON o.tenant_id = n.tenant_id AND o.contact_id = n.contact_id
        JOIN reminderd.tenants t ON t.id = n.tenant_id
        WHERE (n.resolved_timezone, n.timezone_source) IS DISTINCT FROM (o.resolved_timezone, o.timezone_source)
    )
    UPDATE reminderd.scheduled_messages m
    SET timezone = CASE WHEN m.status = 'picked' THEN m.timezone ELSE moved.zone END,
        timezone_source = CASE WHEN m.status = 'picked' THEN m.timezone_source ELSE moved.source END,
        fire_at = CASE WHEN m.status = 'picked' OR m.timezone = moved.zone
                            OR reminderd.occurrence_attempted(m.id, m.attempts, m.scheduled_for) THEN m.fire_at
                       WHEN m.local_time IS NOT NULL THEN reminderd.local_instant(m.local_time, moved.zone)
                       WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL
                       ELSE m.fire_at END,
        scheduled_for = CASE WHEN m.status <> 'picked' AND m.timezone <> moved.zone
                                  AND (m.local_time IS NOT NULL OR m.cron IS NOT NULL OR m.rrule IS NOT NULL)
                                  AND NOT reminderd.occurrence_attempted(m.id, m.attempts, m.scheduled_for)
                             THEN NULL ELSE m.scheduled_for END,
        last_event = CASE WHEN m.status = 'picked' OR m.timezone <> moved.zone THEN 'replanned'
                          ELSE m.last_event END,
        last_error = CASE WHEN m.status <> 'picked' AND m.timezone <> moved.zone
                          THEN format('contact %s: timezone %s (%s) -> %s (%s)', m.contact_id, m.timezone,
                                      m.timezone_source, moved.zone, moved.source)
                          ELSE m.last_error END,
        updated_at = CASE WHEN m.status = 'picked' OR m.timezone <> moved.zone THEN now() ELSE m.updated_at END
    FROM moved
    WHERE m.tenant_id = moved.tenant_id AND m.contact_id = moved.contact_id
      AND m.timezone_source <> 'message'
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    RETURN NULL;
END
$$;

-- When a tenant's default zone changes, the live messages of its contacts that take their zone
-- from it are re-planned the same way.
CREATE FUNCTION reminderd.replan_for_tenants() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM changed_tenants n JOIN previous_tenants o ON o.id = n.id
                   WHERE n.timezone IS DISTINCT FROM o.timezone) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM changed_tenants n
               JOIN reminderd.scheduled_messages m ON m.tenant_id = n.id
               WHERE n.timezone IS NULL AND m.timezone_source = 'tenant'
                 AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')) THEN
        RAISE EXCEPTION 'a tenant''s default timezone cannot be cleared while its contacts'' messages use it'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set another zone instead, or give those contacts a timezone of their own.';
    END IF;
    UPDATE reminderd.scheduled_messages m
    SET timezone = CASE WHEN m.status = 'picked' THEN m.timezone ELSE n.timezone END,
        fire_at = CASE WHEN m.status = 'picked'
                            OR reminderd.occurrence_attempted(m.id, m.attempts, m.scheduled_for) THEN m.fire_at
                       WHEN m.local_time IS NOT NULL THEN reminderd.local_instant(m.local_time, n.timezone)
                       WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL
                       ELSE m.fire_at END,
        scheduled_for = CASE WHEN m.status <> 'picked'
                                  AND (m.local_time IS NOT NULL OR m.cron IS NOT NULL OR m.rrule IS NOT NULL)
                                  AND NOT reminderd.occurrence_attempted(m.id, m.attempts, m.scheduled_for)
                             THEN NULL ELSE m.scheduled_for END,
        last_event = 'replanned',
        last_error = CASE WHEN m.status = 'picked' THEN m.last_error
                          ELSE format('tenant %s: timezone %s -> %s (tenant)', n.id, m.timezone, n.timezone) END,
        updated_at = now()
    FROM changed_tenants n
    WHERE m.tenant_id = n.id AND m.timezone_source = 'tenant' AND m.timezone IS DISTINCT FROM n.timezone
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    RETURN NULL;
END
$$;

-- A message marked by a replan while it was being sent (replan_for_contacts, replan_for_tenants),
-- as the attempt ends and it waits again (record_outcomes, or a lease run out): the zone its
-- contact (or tenant) gives it now, and, unless it was attempted for its occurrence (a retry
-- keeps its webhook-id, attempts and time), that occurrence placed as the replan places one: a
-- wall time again, a recurring row planned again from now (its next occurrence in the new zone).
-- The zone back where it was, or the contact gone: nothing changes.
CREATE FUNCTION reminderd.rezone_after_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    zone   text;
    source text;
BEGIN
    SELECT coalesce(c.resolved_timezone, t.timezone), coalesce(c.timezone_source, 'tenant') INTO zone, source
    FROM reminderd.contacts c
    JOIN reminderd.tenants t ON t.id = c.tenant_id
    WHERE c.tenant_id = NEW.tenant_id AND c.contact_id = NEW.contact_id;
    IF zone IS NULL OR (zone, source) = (NEW.timezone, NEW.timezone_source) THEN
        RETURN NEW;
    END IF;
    IF zone <> NEW.timezone THEN
        NEW.last_error := concat_ws('; ', NEW.last_error,
                                    format('contact %s: timezone %s (%s) -> %s (%s) after the attempt',
                                           NEW.contact_id, NEW.timezone, NEW.timezone_source, zone, source));
        IF (NEW.local_time IS NOT NULL OR NEW.cron IS NOT NULL OR NEW.rrule IS NOT NULL)
           AND NOT reminderd.occurrence_attempted(NEW.id, NEW.attempts, NEW.scheduled_for) THEN
            NEW.fire_at := CASE WHEN NEW.local_time IS NOT NULL THEN reminderd.local_instant(NEW.local_time, zone) END;
            NEW.scheduled_for := NULL;
        END IF;
    END IF;
    NEW.timezone := zone;
    NEW.timezone_source := source;
    RETURN NEW;
END
$$;

-- A contact deleted by any means (delete_contacts, a plain DELETE): its live messages are
-- cancelled, in the same statement.
CREATE FUNCTION reminderd.cancel_for_deleted_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'cancelled', last_error = 'contact ' || m.contact_id || ' deleted',
        lease_expires_at = NULL, updated_at = now()
    FROM deleted_contacts d
    WHERE m.tenant_id = d.tenant_id AND m.contact_id = d.contact_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    RETURN NULL;
END
$$;


-- TRUNCATE fires no DELETE trigger: it would leave live messages for contacts that are gone
-- (contacts_cancel_messages cancels them on DELETE only). Refused, saying to delete (migration 0030).
CREATE FUNCTION reminderd.refuse_contacts_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reminderd.contacts cannot be truncated: its contacts'' live messages would be left pointing at nobody'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Delete them instead (DELETE FROM reminderd.contacts, or reminderd.delete_contacts(tenant, ids)): '
                     'their live messages are cancelled.';
END
$$;

-- A contact's id is its identity: its messages and audience memberships name it by it, so moving
-- it would leave them pointing at nobody (migration 0030).
CREATE FUNCTION reminderd.refuse_contact_id_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'contact % / % cannot change its % to %: the id is its identity', OLD.tenant_id, OLD.contact_id,
        CASE WHEN NEW.contact_id IS DISTINCT FROM OLD.contact_id THEN 'contact_id' ELSE 'tenant_id' END,
        CASE WHEN NEW.contact_id IS DISTINCT FROM OLD.contact_id THEN NEW.contact_id ELSE NEW.tenant_id END
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Its messages and audiences name it by its id: delete it and add the other one '
                     '(its live messages are cancelled; schedule them again for the new id).';
END
$$;


-- A message belongs to its tenant for good (migration 0039): its ref, signing secret, limits and
-- audit trail are the tenant's, so moving it to another would send it as the other's. Refused.
CREATE FUNCTION reminderd.refuse_message_tenant_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'message % (% / %) cannot move from tenant "%" to tenant "%": a message belongs to its tenant',
        OLD.id, OLD.tenant_id, OLD.ref_id, OLD.tenant_id, NEW.tenant_id
        USING ERRCODE = 'feature_not_supported',
              HINT = format('Create a new message for tenant "%s" (reminderd.schedule) and cancel this one '
                            '(reminderd.cancel(%L, %L)).', NEW.tenant_id, OLD.tenant_id, OLD.ref_id);
END
$$;

-- Functions: audiences ----------------------------------------------------------------------------

-- Add contacts to a named list (created on first use); how many were not in it yet.
CREATE FUNCTION reminderd.add_to_audience(tenant_id text, audience text, contact_ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    missing text[];
    added   integer;
BEGIN
    PERFORM reminderd.check_tenant(add_to_audience.tenant_id);
    IF add_to_audience.audience IS NULL OR add_to_audience.audience !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'audience name %: letters, digits and _ . : -, starting with a letter or digit, at most 128',
            coalesce(quote_literal(add_to_audience.audience), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(given.id ORDER BY given.id) INTO missing
    FROM (SELECT DISTINCT unnest(add_to_audience.contact_ids) AS id) AS given
    WHERE NOT EXISTS (SELECT 1 FROM reminderd.contacts c
                      WHERE c.tenant_id = add_to_audience.tenant_id AND c.contact_id = given.id);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION '% of these are not contacts of tenant "%": %', cardinality(missing), add_to_audience.tenant_id,
            array_to_string(missing[1:5], ', ') || CASE WHEN cardinality(missing) > 5 THEN ', …' ELSE '' END
            USING ERRCODE = 'no_data_found', DETAIL = 'Nothing was added.',
                  HINT = 'Add them first: reminderd.upsert_contacts, or reminderd contacts import.';
    END IF;
    INSERT INTO reminderd.audiences (tenant_id, name) VALUES (add_to_audience.tenant_id, add_to_audience.audience)
    ON CONFLICT DO NOTHING;
    INSERT INTO reminderd.audience_members (tenant_id, audience, contact_id)
    SELECT DISTINCT add_to_audience.tenant_id, add_to_audience.audience, unnest(add_to_audience.contact_ids)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;

CREATE FUNCTION reminderd.remove_from_audience(tenant_id text, audience text, contact_ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    removed integer;
BEGIN
    PERFORM reminderd.check_tenant(remove_from_audience.tenant_id);
    DELETE FROM reminderd.audience_members
    WHERE tenant_id = remove_from_audience.tenant_id AND audience = remove_from_audience.audience
      AND contact_id = ANY (remove_from_audience.contact_ids);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

-- (migration 0034) Each list's size, kept as changes appended per statement (the broadcast_counts
-- pattern, docs/audiences.md): a list holds the sum of its rows' delta. A change of members only
-- appends a row, never updates one in place, so unrelated membership changes share no lock and
-- cannot deadlock (a count kept in the audiences row made each change hold that row until commit).
-- The daemon folds a list's changes into one now and then (fold_audience_member_counts). Written by
-- the triggers (as the owner) and the fold only. No foreign key: a dropped list's changes add up to
-- nothing and are folded away.
CREATE TABLE reminderd.audience_member_counts (
    tenant_id text NOT NULL,
    audience  text NOT NULL,
    delta     bigint NOT NULL
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX audience_member_counts_audience ON reminderd.audience_member_counts (tenant_id, audience);
ALTER TABLE reminderd.audience_member_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_own_tenants ON reminderd.audience_member_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY read_all ON reminderd.audience_member_counts FOR SELECT TO reminderd_readonly USING (true);
CREATE POLICY daemon_all ON reminderd.audience_member_counts TO reminderd_daemon USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.audience_member_counts FOR SELECT TO reminderd_api USING (true);
GRANT SELECT ON reminderd.audience_member_counts TO reminderd_app, reminderd_readonly, reminderd_api;
GRANT SELECT, INSERT, DELETE ON reminderd.audience_member_counts TO reminderd_daemon;

-- The change each statement made to each list it touched (add_to_audience, remove_from_audience, a
-- contact's or a list's deletion, plain SQL): one row per list, appended.
CREATE FUNCTION reminderd.count_audience_members() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Each trigger names only its own transition tables (new_members, old_members).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT n.tenant_id, n.audience, count(*) FROM new_members n GROUP BY 1, 2;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT o.tenant_id, o.audience, -count(*) FROM old_members o GROUP BY 1, 2;
    ELSE
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT d.tenant_id, d.audience, sum(d.delta)
        FROM (SELECT n.tenant_id, n.audience, 1 AS delta FROM new_members n
              UNION ALL
              SELECT o.tenant_id, o.audience, -1 FROM old_members o) AS d
        GROUP BY 1, 2 HAVING sum(d.delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- Up to `batch` lists with more than `fold_above` changes (or whose changes add up to nothing, a
-- dropped list's) folded into one change each. A change committed while it runs is not in its
-- snapshot: neither deleted nor summed, it stays. One caller at a time. Returns the lists folded.
CREATE FUNCTION reminderd.fold_audience_member_counts(batch integer DEFAULT 100, fold_above integer DEFAULT 20)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    list   record;
    folded integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.fold_audience_member_counts')) THEN
        RETURN 0;
    END IF;
    FOR list IN
        SELECT k.tenant_id, k.audience FROM reminderd.audience_member_counts k
        GROUP BY 1, 2 HAVING count(*) > fold_audience_member_counts.fold_above OR sum(k.delta) = 0
        LIMIT fold_audience_member_counts.batch
    LOOP
        WITH gone AS (
            DELETE FROM reminderd.audience_member_counts k
            WHERE k.tenant_id = list.tenant_id AND k.audience = list.audience
            RETURNING k.delta
        )
        INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)
        SELECT list.tenant_id, list.audience, sum(g.delta) FROM gone g HAVING sum(g.delta) <> 0;
        folded := folded + 1;
    END LOOP;
    RETURN folded;
END
$$;

-- TRUNCATE fires no DELETE trigger: it would leave the counts of every list as they were. Refused,
-- saying to delete (migration 0034).
CREATE FUNCTION reminderd.refuse_audience_members_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reminderd.audience_members cannot be truncated: the audiences'' member counts would be left wrong'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Delete them instead (DELETE FROM reminderd.audience_members, or reminderd.drop_audience(tenant, '
                     'name)): the counts follow.';
END
$$;

-- A list and its members gone (the contacts stay); 1, or 0 when there was no such list.
CREATE FUNCTION reminderd.drop_audience(tenant_id text, audience text) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    dropped integer;
BEGIN
    PERFORM reminderd.check_tenant(drop_audience.tenant_id);
    DELETE FROM reminderd.audiences WHERE tenant_id = drop_audience.tenant_id AND name = drop_audience.audience;
    GET DIAGNOSTICS dropped = ROW_COUNT;
    RETURN dropped;
END
$$;

-- The contacts a broadcast reaches, with their zones: a named list, these contacts, or everyone.
-- timezone is NULL for a contact with none whose tenant has no default.
CREATE FUNCTION reminderd.audience_contacts(tenant_id text, audience text, contact_ids text[], everyone boolean)
RETURNS TABLE (contact_id text, timezone text, timezone_source text)
LANGUAGE sql STABLE AS $$
    SELECT c.contact_id, coalesce(c.resolved_timezone, t.timezone), coalesce(c.timezone_source, 'tenant')
    FROM reminderd.contacts c
    JOIN reminderd.tenants t ON t.id = c.tenant_id
    WHERE audience_contacts.everyone AND c.tenant_id = audience_contacts.tenant_id
    UNION ALL
    SELECT c.contact_id, coalesce(c.resolved_timezone, t.timezone), coalesce(c.timezone_source, 'tenant')
    FROM reminderd.audience_members m
    JOIN reminderd.contacts c ON c.tenant_id = m.tenant_id AND c.contact_id = m.contact_id
    JOIN reminderd.tenants t ON t.id = c.tenant_id
    WHERE audience_contacts.audience IS NOT NULL
      AND m.tenant_id = audience_contacts.tenant_id AND m.audience = audience_contacts.audience
    UNION ALL
    SELECT c.contact_id, coalesce(c.resolved_timezone, t.timezone), coalesce(c.timezone_source, 'tenant')
    FROM (SELECT DISTINCT unnest(audience_contacts.contact_ids) AS id) AS given
    JOIN reminderd.contacts c ON c.tenant_id = audience_contacts.tenant_id AND c.contact_id = given.id
    JOIN reminderd.tenants t ON t.id = c.tenant_id
    WHERE audience_contacts.contact_ids IS NOT NULL
$$;

-- Functions: broadcasts ---------------------------------------------------------------------------

-- Who is acting: the database role, or, for the daemon role (the CLI connects as it) and the API
-- server's role (which names the API key a request came with; the dashboard names the key signed
-- in), the person it names. An application role always acts as itself, so it cannot approve its
-- own broadcast under another name.
CREATE FUNCTION reminderd.acting_as(actor text) RETURNS text
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

-- How many values a cron minute or second field has (*, */n, a-b, a-b/n, a/n, lists); NULL when
-- it is not such a field.
CREATE FUNCTION reminderd.cron_field_values(field text, low integer, high integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN field ~ '^(\*|[0-9]+(-[0-9]+)?)(/[1-9][0-9]*)?(,(\*|[0-9]+(-[0-9]+)?)(/[1-9][0-9]*)?)*$' THEN (
        SELECT count(DISTINCT value)::integer
        FROM unnest(string_to_array(field, ',')) AS item
        CROSS JOIN LATERAL (SELECT split_part(item, '/', 1) AS span,
                                   coalesce(nullif(split_part(item, '/', 2), ''), '1')::integer AS step) AS parts
        CROSS JOIN LATERAL generate_series(
            CASE WHEN parts.span = '*' THEN low ELSE split_part(parts.span, '-', 1)::integer END,
            CASE WHEN parts.span = '*' THEN high
                 WHEN parts.span LIKE '%-%' THEN split_part(parts.span, '-', 2)::integer
                 WHEN item LIKE '%/%' THEN high
                 ELSE parts.span::integer END,
            parts.step) AS value)
    END
$$;

-- At most how many times a recurrence fires in one hour (the guard on recurring broadcasts): for
-- cron, its second and minute fields; for an RRULE, its FREQ, INTERVAL, BYMINUTE and BYSECOND.
CREATE FUNCTION reminderd.fires_per_hour(cron text, rrule text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    fields  text[];
    freq    text;
    step    integer;
    minutes integer;
    seconds integer;
BEGIN
    IF cron IS NOT NULL THEN
        IF btrim(cron) LIKE '@%' THEN
            RETURN 1;
        END IF;
        fields := regexp_split_to_array(btrim(cron), '\s+');
        IF cardinality(fields) = 6 THEN
            RETURN reminderd.cron_field_values(fields[1], 0, 59) * reminderd.cron_field_values(fields[2], 0, 59);
        END IF;
        RETURN reminderd.cron_field_values(fields[1], 0, 59);
    END IF;
    freq := upper(substring(rrule FROM '(?i)FREQ=([a-z]+)'));
    step := coalesce(substring(rrule FROM '(?i)INTERVAL=([0-9]+)')::integer, 1);
    minutes := (SELECT count(DISTINCT v) FROM unnest(string_to_array(substring(rrule FROM '(?i)BYMINUTE=([0-9,]+)'), ',')) AS v);
    seconds := (SELECT count(DISTINCT v) FROM unnest(string_to_array(substring(rrule FROM '(?i)BYSECOND=([0-9,]+)'), ',')) AS v);
    minutes := nullif(minutes, 0);
    seconds := nullif(seconds, 0);
    RETURN CASE freq
        WHEN 'SECONDLY' THEN least(ceil(3600.0 / greatest(step, 1))::integer, coalesce(seconds, 60) * coalesce(minutes, 60))
        WHEN 'MINUTELY' THEN least(ceil(60.0 / greatest(step, 1))::integer, coalesce(minutes, 60)) * coalesce(seconds, 1)
        ELSE coalesce(minutes, 1) * coalesce(seconds, 1) END;
END
$$;

-- A count as people read it: 240,000.
CREATE FUNCTION reminderd.thousands(n bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(n, 'FM999,999,999,999,990')
$$;

-- A broadcast: one message per contact of the audience at local_time in each contact's own zone
-- (refs prefix:contact_id), or, with cron or rrule, one such wave per occurrence, each staged by
-- the daemon to the audience as it stands then. Refused whole, with the reason and the counts,
-- when a send would be in the past or beyond the horizon, when the audience is larger than the
-- tenant's broadcast_limit, or when a recurring one fires more often than hourly. Above the
-- tenant's approval_threshold its rows wait as awaiting_approval until another person approves.
-- Calling it again with the same arguments returns the same broadcast. Returns its id.
CREATE FUNCTION reminderd.broadcast(
    tenant_id text, ref_prefix text, local_time timestamp DEFAULT NULL, audience text DEFAULT NULL,
    payload jsonb DEFAULT '{}', category text DEFAULT 'marketing', contact_ids text[] DEFAULT NULL,
    everyone boolean DEFAULT false, cron text DEFAULT NULL, rrule text DEFAULT NULL,
    until timestamptz DEFAULT NULL, callback_url text DEFAULT NULL, calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL, notify boolean DEFAULT false, stage_ahead interval DEFAULT '1 hour',
    actor text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    tenant    reminderd.tenants;
    who       text;
    anchored  text;
    previous  reminderd.broadcast_requests;
    missing   text[];
    contacts  bigint;
    zoneless  bigint;
    sendable  bigint;  -- contacts in a zone this server can read: those it would send to
    zones     bigint;
    late      record;
    per_hour  integer;
    new_id    bigint;
    live_refs bigint;
    by_zone   jsonb;
BEGIN
    PERFORM reminderd.check_tenant(broadcast.tenant_id);
    IF num_nonnulls(broadcast.audience, broadcast.contact_ids) + coalesce(broadcast.everyone, false)::integer <> 1 THEN
        RAISE EXCEPTION 'give exactly one audience: audience (a named list), contact_ids (an array) or everyone => true'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF num_nonnulls(broadcast.local_time, broadcast.cron, broadcast.rrule) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of local_time (a wall time, read in each contact''s zone), cron and rrule'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF broadcast.ref_prefix IS NULL OR broadcast.ref_prefix !~ '^[^%#[:space:]]{1,100}$' THEN
        RAISE EXCEPTION 'ref_prefix % must be 1 to 100 characters without spaces, %% or #',
            coalesce(quote_literal(broadcast.ref_prefix), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT isfinite(broadcast.local_time) THEN  -- migration 0021: before any zone reads it
        PERFORM reminderd.refuse_infinite_time('local_time', broadcast.local_time::text,
                                               format('broadcast "%s" of tenant "%s"', broadcast.ref_prefix,
                                                      broadcast.tenant_id));
    END IF;
    IF broadcast.audience IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM reminderd.audiences a WHERE a.tenant_id = broadcast.tenant_id AND a.name = broadcast.audience
    ) THEN
        RAISE EXCEPTION 'unknown audience "%" of tenant "%"', broadcast.audience, broadcast.tenant_id
            USING ERRCODE = 'no_data_found', HINT = 'Create it by adding contacts: reminderd.add_to_audience(tenant, name, contact_ids).';
    END IF;
    who := reminderd.acting_as(broadcast.actor);
    -- The columns it reads, by name: a role may read a tenant's settings and not its secret.
    SELECT t.id, t.broadcast_limit, t.approval_threshold INTO tenant.id, tenant.broadcast_limit, tenant.approval_threshold
    FROM reminderd.tenants t WHERE t.id = broadcast.tenant_id;
    -- An RRULE without DTSTART counts from today's midnight (as reminderd.validate_message does).
    anchored := CASE WHEN broadcast.rrule IS NOT NULL AND broadcast.rrule !~* '(^|\n)\s*DTSTART'
                     THEN 'DTSTART:' || to_char(date_trunc('day', now() AT TIME ZONE 'UTC'), 'YYYYMMDD"T"HH24MISS')
                          || E'\n' || btrim(broadcast.rrule, E' \t\r\n')
                     ELSE broadcast.rrule END;

    -- One broadcast per prefix at a time; the same call again returns it.
    PERFORM pg_advisory_xact_lock(hashtextextended(broadcast.tenant_id || chr(31) || '#broadcast' || chr(31)
                                                   || broadcast.ref_prefix, 0));
    SELECT * INTO previous FROM reminderd.broadcast_requests r
    WHERE r.tenant_id = broadcast.tenant_id AND r.ref_prefix = broadcast.ref_prefix AND r.approval <> 'rejected'
      AND (r.ended_at IS NULL OR EXISTS (
          SELECT 1 FROM reminderd.scheduled_messages m
          WHERE m.broadcast_id = r.id AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')))
    ORDER BY r.id DESC
    LIMIT 1;
    IF FOUND THEN
        IF (previous.audience, previous.contact_ids, previous.everyone, previous.local_time, previous.cron,
            previous.rrule, previous.until, previous.payload, previous.callback_url, previous.category,
            previous.calendar, previous.holiday_rule, previous.backfill, previous.max_lateness,
            previous.max_attempts, previous.notify, previous.stage_ahead)
           IS NOT DISTINCT FROM
           (broadcast.audience, broadcast.contact_ids, coalesce(broadcast.everyone, false), broadcast.local_time,
            broadcast.cron, anchored, broadcast.until, coalesce(broadcast.payload, '{}'), broadcast.callback_url,
            coalesce(broadcast.category, 'marketing'), broadcast.calendar, broadcast.holiday_rule, broadcast.backfill,
            broadcast.max_lateness, broadcast.max_attempts, coalesce(broadcast.notify, false),
            coalesce(broadcast.stage_ahead, interval '1 hour')) THEN
            RETURN previous.id;
        END IF;
        RAISE EXCEPTION 'broadcast % of tenant "%" already uses ref_prefix "%" and is not done',
            previous.id, broadcast.tenant_id, broadcast.ref_prefix
            USING ERRCODE = 'unique_violation',
                  HINT = 'Cancel it first (reminderd.cancel_broadcast(tenant, id)), or choose another ref_prefix.';
    END IF;
    IF broadcast.local_time IS NOT NULL THEN
        SELECT count(*) INTO live_refs FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = broadcast.tenant_id
          AND m.ref_id LIKE replace(replace(replace(broadcast.ref_prefix, '\', '\\'), '_', '\_'), '%', '\%') || ':%'
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
        IF live_refs > 0 THEN
            RAISE EXCEPTION '% live messages of tenant "%" already have refs "%:…"', reminderd.thousands(live_refs),
                broadcast.tenant_id, broadcast.ref_prefix
                USING ERRCODE = 'unique_violation',
                      HINT = format('Cancel them first (reminderd.cancel_matching(%L, %L)), or choose another ref_prefix.',
                                    broadcast.tenant_id, broadcast.ref_prefix || ':%');
        END IF;
    END IF;

    -- The audience: who, how many, and whether each has a zone.
    IF broadcast.contact_ids IS NOT NULL THEN
        SELECT array_agg(given.id ORDER BY given.id) INTO missing
        FROM (SELECT DISTINCT unnest(broadcast.contact_ids) AS id) AS given
        WHERE NOT EXISTS (SELECT 1 FROM reminderd.contacts c
                          WHERE c.tenant_id = broadcast.tenant_id AND c.contact_id = given.id);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION '% of the contact_ids are not contacts of tenant "%": %', cardinality(missing),
                broadcast.tenant_id,
                array_to_string(missing[1:5], ', ') || CASE WHEN cardinality(missing) > 5 THEN ', …' ELSE '' END
                USING ERRCODE = 'no_data_found', HINT = 'Add them first: reminderd.upsert_contacts.';
        END IF;
    END IF;
    -- One pass over the audience: how many contacts in each zone (and without one).
    SELECT coalesce(jsonb_agg(jsonb_build_object('timezone', z.timezone, 'contacts', z.contacts)), '[]')
    INTO by_zone
    FROM (SELECT a.timezone, count(*) AS contacts
          FROM reminderd.audience_contacts(broadcast.tenant_id, broadcast.audience, broadcast.contact_ids,
                                           coalesce(broadcast.everyone, false)) AS a
          GROUP BY a.timezone) AS z;
    -- The limit and the approval count only the contacts it would send to: one in a zone this
    -- server cannot read is staged dead, and sent nothing.
    SELECT coalesce(sum((z->>'contacts')::bigint), 0),
           coalesce(sum((z->>'contacts')::bigint) FILTER (WHERE z->>'timezone' IS NULL), 0),
           coalesce(sum((z->>'contacts')::bigint) FILTER (WHERE reminderd.is_timezone(z->>'timezone')), 0),
           count(*)
    INTO contacts, zoneless, sendable, zones
    FROM jsonb_array_elements(by_zone) AS z;
    IF contacts = 0 THEN
        RAISE EXCEPTION 'the audience of broadcast "%" is empty', broadcast.ref_prefix
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF zoneless > 0 THEN
        RAISE EXCEPTION '% of the % contacts have no timezone, and tenant "%" has no default',
            reminderd.thousands(zoneless), reminderd.thousands(contacts), broadcast.tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set one: reminderd tenant set TENANT --timezone Europe/London (or give the contacts a timezone, phone or country).';
    END IF;
    IF tenant.broadcast_limit IS NOT NULL AND sendable > tenant.broadcast_limit THEN
        RAISE EXCEPTION 'broadcast "%" would send to % contacts; tenant "%" allows at most % in one broadcast',
            broadcast.ref_prefix, reminderd.thousands(sendable), broadcast.tenant_id,
            reminderd.thousands(tenant.broadcast_limit)
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('%s contacts over %s zones.', reminderd.thousands(contacts), zones),
                  HINT = 'Split the audience, or raise the limit: reminderd tenant set TENANT --broadcast-limit N.';
    END IF;
    IF broadcast.local_time IS NULL THEN
        -- Refused here as a message's recurrence is at insert (migration 0024), not ended by the
        -- daemon's stager once accepted: a cron it could not read, COUNT without DTSTART, an until past.
        IF broadcast.cron IS NOT NULL THEN
            PERFORM reminderd.check_cron(broadcast.cron, format('broadcast "%s" of tenant "%s"', broadcast.ref_prefix,
                                                                broadcast.tenant_id));
        END IF;
        IF broadcast.rrule !~* '(^|\n)\s*DTSTART' AND broadcast.rrule ~* 'COUNT=' THEN
            RAISE EXCEPTION 'the rrule of broadcast "%" of tenant "%" has COUNT but no DTSTART', broadcast.ref_prefix,
                broadcast.tenant_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'COUNT counts from DTSTART: give one (DTSTART:20261201T090000, a wall time on each '
                             'contact''s clock), or end it with until or UNTIL instead.';
        END IF;
        IF NOT isfinite(broadcast.until) THEN  -- as its trigger would (migration 0022): not a time
            PERFORM reminderd.refuse_infinite_time('until', broadcast.until::text,
                                                   format('broadcast "%s" of tenant "%s"', broadcast.ref_prefix,
                                                          broadcast.tenant_id));
        END IF;
        IF broadcast.until <= now() THEN
            RAISE EXCEPTION 'broadcast "%" of tenant "%" ends before it starts: its until % is already past',
                broadcast.ref_prefix, broadcast.tenant_id,
                coalesce(to_char(broadcast.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), broadcast.until::text)
                USING ERRCODE = 'datetime_field_overflow',
                      DETAIL = 'A recurring broadcast stages nothing after its until; this one would end at once.',
                      HINT = 'Give an until in the future, or none.';
        END IF;
        per_hour := reminderd.fires_per_hour(broadcast.cron, anchored);
        IF per_hour > 1 THEN
            RAISE EXCEPTION '% fires up to % times an hour: each occurrence would send to % contacts, % messages an hour',
                coalesce('cron ' || quote_literal(broadcast.cron), 'the rrule'), per_hour, reminderd.thousands(contacts),
                reminderd.thousands(per_hour * contacts)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A recurring broadcast fires at most once an hour.';
        END IF;
    ELSE
        -- Every zone's instant of the wall time: none in the past, none beyond the horizon (a zone
        -- this server cannot read has none: its contacts are staged dead, migration 0038).
        SELECT count(*) AS zones, sum(z.contacts)::bigint AS contacts,
               string_agg(format('%s: %s contacts at %s', z.timezone, reminderd.thousands(z.contacts),
                                 to_char(z.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')), '; '
                          ORDER BY z.fire_at) AS detail
        INTO late
        FROM (SELECT e->>'timezone' AS timezone, (e->>'contacts')::bigint AS contacts,
                     reminderd.local_instant_if_readable(broadcast.local_time, e->>'timezone') AS fire_at
              FROM jsonb_array_elements(by_zone) AS e
              OFFSET 0) AS z
        WHERE z.fire_at <= now();
        IF late.zones > 0 THEN
            RAISE EXCEPTION 'broadcast "%" at % would send % of its % messages in the past (% of its % zones)',
                broadcast.ref_prefix, to_char(broadcast.local_time, 'YYYY-MM-DD HH24:MI'),
                reminderd.thousands(late.contacts), reminderd.thousands(contacts), late.zones, zones
                USING ERRCODE = 'invalid_parameter_value', DETAIL = late.detail,
                      HINT = 'Choose a later local_time: the zone whose clock is furthest ahead sends first.';
        END IF;
        SELECT count(*) AS zones, sum(z.contacts)::bigint AS contacts,
               string_agg(format('%s: %s contacts at %s', z.timezone, reminderd.thousands(z.contacts),
                                 to_char(z.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')), '; '
                          ORDER BY z.fire_at) AS detail
        INTO late
        FROM (SELECT e->>'timezone' AS timezone, (e->>'contacts')::bigint AS contacts,
                     reminderd.local_instant_if_readable(broadcast.local_time, e->>'timezone') AS fire_at
              FROM jsonb_array_elements(by_zone) AS e
              OFFSET 0) AS z
        WHERE z.fire_at > now() + (SELECT value::interval FROM reminderd.config WHERE key = 'horizon');
        IF late.zones > 0 THEN
            RAISE EXCEPTION 'broadcast "%" at % would send % of its % messages beyond the horizon of %',
                broadcast.ref_prefix, to_char(broadcast.local_time, 'YYYY-MM-DD HH24:MI'),
                reminderd.thousands(late.contacts), reminderd.thousands(contacts),
                (SELECT value FROM reminderd.config WHERE key = 'horizon')
                USING ERRCODE = 'datetime_field_overflow', DETAIL = late.detail,
                      HINT = 'A DBA can change it: UPDATE reminderd.config SET value = ''180 days'' WHERE key = ''horizon''';
        END IF;
    END IF;

    INSERT INTO reminderd.broadcast_requests AS r
        (tenant_id, ref_prefix, audience, contact_ids, everyone, local_time, cron, rrule, until, payload,
         callback_url, category, calendar, holiday_rule, backfill, max_lateness, max_attempts, notify,
         stage_ahead, approval, created_by)
    VALUES (broadcast.tenant_id, broadcast.ref_prefix, broadcast.audience, broadcast.contact_ids,
            coalesce(broadcast.everyone, false), broadcast.local_time, broadcast.cron, anchored, broadcast.until,
            coalesce(broadcast.payload, '{}'), broadcast.callback_url, coalesce(broadcast.category, 'marketing'),
            broadcast.calendar, broadcast.holiday_rule, broadcast.backfill, broadcast.max_lateness,
            broadcast.max_attempts, coalesce(broadcast.notify, false), coalesce(broadcast.stage_ahead, interval '1 hour'),
            coalesce(CASE WHEN sendable > tenant.approval_threshold THEN 'awaiting' END, 'not_needed'), who)
    RETURNING id INTO new_id;
    IF broadcast.local_time IS NOT NULL THEN
        PERFORM reminderd.stage_broadcast(new_id, broadcast.local_time);
    ELSE
        PERFORM pg_notify('reminderd_due', 'plan');  -- the daemon plans and stages its occurrences
    END IF;
    RETURN new_id;
END
$$;

-- Stage one occurrence of a broadcast (a one-off's only one; a recurring one's next, by the
-- daemon, which names the one after it as `following`). The audience as it stands now, one row per
-- contact at `occurrence` read in the contact's zone, in one statement: for a recurring one, the
-- contacts whose instant of it is not after its end (broadcast_end: until, UNTIL=…Z), each by
-- their own; a contact whose zone this server's tz database cannot read is staged dead, its
-- last_error saying so, and the others as ever (migration 0038). A recurring occurrence
-- that cannot be staged (the audience is empty or over the limit, contacts without a zone) is
-- passed over with the reason in last_error; one over the approval_threshold that its approval
-- did not cover (none needed, or approved for fewer) is staged awaiting_approval and the request
-- awaits approval again. Returns the rows staged.
CREATE FUNCTION reminderd.stage_broadcast(broadcast_id bigint, occurrence timestamp, following timestamp DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    request   reminderd.broadcast_requests;
    tenant    reminderd.tenants;
    recurring boolean;
    contacts  bigint;
    zoneless  bigint;
    problem   text;
    staged    integer;
    first_at  timestamptz;
    last_at   timestamptz;
    over_threshold boolean;
    ends_at   timestamptz;
    unreadable bigint;   -- contacts in a zone this server cannot read
    passed_over bigint;  -- of those, the ones staged dead at an earlier occurrence: not again
BEGIN
    SELECT * INTO request FROM reminderd.broadcast_requests r WHERE r.id = stage_broadcast.broadcast_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no broadcast with id %', stage_broadcast.broadcast_id USING ERRCODE = 'no_data_found';
    END IF;
    recurring := request.local_time IS NULL;
    -- The columns it reads, by name: a role may read a tenant's settings and not its secret.
    SELECT t.id, t.broadcast_limit, t.approval_threshold, t.callback_url, t.paused
    INTO tenant.id, tenant.broadcast_limit, tenant.approval_threshold, tenant.callback_url, tenant.paused
    FROM reminderd.tenants t WHERE t.id = request.tenant_id;
    IF request.callback_url IS NULL AND tenant.callback_url IS NULL THEN
        RAISE EXCEPTION 'no callback_url for broadcast "%": it has none and tenant "%" has no default',
            request.ref_prefix, request.tenant_id
            USING ERRCODE = 'not_null_violation';
    END IF;
    -- Staged already (or by another daemon just now), or over: nothing to do.
    IF request.ended_at IS NOT NULL OR request.approval = 'rejected'
       OR (recurring AND request.next_occurrence IS DISTINCT FROM stage_broadcast.occurrence)
       OR EXISTS (SELECT 1 FROM reminderd.broadcast_occurrences o
                  WHERE o.broadcast_id = request.id AND o.occurrence = stage_broadcast.occurrence) THEN
        RETURN 0;
    END IF;
    ends_at := CASE WHEN recurring THEN reminderd.broadcast_end(request.until, request.rrule) END;
    -- Values its messages could not have (check_message_values), a payload over 256 KiB: a request
    -- written before migration 0021 refused them ends here, once, saying why (migration 0022),
    -- instead of failing at every occurrence. A one-off's were checked when it was written.
    IF recurring THEN
        BEGIN
            PERFORM reminderd.check_message_values(format('broadcast "%s" of tenant "%s"', request.ref_prefix,
                                                          request.tenant_id),
                                                   NULL, NULL, request.max_attempts, request.category, request.calendar,
                                                   request.holiday_rule, request.backfill, request.max_lateness,
                                                   'broadcast_category_format');
        EXCEPTION WHEN check_violation THEN
            problem := SQLERRM;
        END;
        IF problem IS NULL AND pg_column_size(request.payload::text::jsonb) > 262144 THEN  -- as written, not as stored
            problem := format('its payload is %s bytes; at most 262144 (256 KiB)', pg_column_size(request.payload::text::jsonb));
        END IF;
        IF problem IS NOT NULL THEN
            UPDATE reminderd.broadcast_requests r
            SET next_occurrence = NULL, ended_at = now(), ended_reason = 'cannot be staged: ' || problem,
                last_error = format('occurrence %s not staged: %s', to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'),
                                    problem),
                updated_at = now()
            WHERE r.id = request.id;
            RETURN 0;
        END IF;
        -- Those in a zone this server cannot read are sent nothing: not counted against the limit.
        SELECT coalesce(sum(z.contacts), 0), coalesce(sum(z.contacts) FILTER (WHERE z.timezone IS NULL), 0),
               coalesce(sum(z.contacts) FILTER (WHERE z.timezone IS NOT NULL AND NOT reminderd.is_timezone(z.timezone)),
                        0)
        INTO contacts, zoneless, unreadable
        FROM (SELECT a.timezone, count(*) AS contacts
              FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids,
                                               request.everyone) AS a
              GROUP BY a.timezone) AS z;
        problem := CASE WHEN contacts = 0 THEN 'the audience is empty'
                        WHEN zoneless > 0 THEN format('%s contacts have no timezone and the tenant has no default',
                                                      reminderd.thousands(zoneless))
                        WHEN contacts - unreadable > tenant.broadcast_limit
                            THEN format('%s contacts, over the tenant''s limit of %s',
                                        reminderd.thousands(contacts - unreadable),
                                        reminderd.thousands(tenant.broadcast_limit)) END;
        IF problem IS NOT NULL THEN
            UPDATE reminderd.broadcast_requests r
            SET next_occurrence = stage_broadcast.following,
                last_error = format('occurrence %s not staged: %s', to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'),
                                    problem),
                ended_at = CASE WHEN stage_broadcast.following IS NULL THEN now() END,
                ended_reason = CASE WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
                updated_at = now()
            WHERE r.id = request.id;
            RETURN 0;
        END IF;
    END IF;
    -- Approval and the limit are decided from the rows this statement stages (migration 0028), not
    -- from a count read before: a contact added in between (READ COMMITTED) cannot slip a wave past
    -- them, and a recurring request that needed no approval when it was made needs it for a wave
    -- over the threshold.
    WITH audience AS MATERIALIZED (
        SELECT a.contact_id, a.timezone, a.timezone_source
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a
        WHERE a.timezone IS NOT NULL
    ),
    zones AS MATERIALIZED (  -- each zone's instant computed once, not once per contact; NULL: unreadable here
        SELECT z.timezone, reminderd.local_instant_if_readable(stage_broadcast.occurrence, z.timezone) AS fire_at
        FROM (SELECT DISTINCT timezone FROM audience) AS z
    ),
    reached AS MATERIALIZED (  -- those the occurrence is sent to: ends_at ends each on their own instant
        SELECT a.contact_id, a.timezone, a.timezone_source, z.fire_at,
               -- In a zone unreadable here, and staged dead at an earlier occurrence: not again
               -- (migration 0038), but counted (passed_over).
               z.fire_at IS NULL AND EXISTS (
                   SELECT FROM reminderd.scheduled_messages m
                   WHERE m.broadcast_id = request.id AND m.status = 'dead' AND m.tenant_id = request.tenant_id
                     AND m.contact_id = a.contact_id AND m.picked_at IS NULL) AS passed_over
        FROM audience a
        JOIN zones z ON z.timezone = a.timezone
        WHERE coalesce(z.fire_at <= ends_at, true)
    ),
    size AS MATERIALIZED (  -- the rows it sends: approval and the limit count no dead one (migration 0038)
        SELECT count(*) FILTER (WHERE fire_at IS NOT NULL) AS contacts,
               count(*) FILTER (WHERE passed_over) AS passed_over,
               coalesce(count(*) FILTER (WHERE fire_at IS NOT NULL) > tenant.approval_threshold, false)
               AND (request.approval = 'not_needed'
                    OR request.approval = 'approved'
                       AND count(*) FILTER (WHERE fire_at IS NOT NULL) > coalesce(request.approved_contacts, 0)) AS over
        FROM reached
    ),
    inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, contact_id, timezone_source, local_time, broadcast_id, status,
             paused_by, last_error)
        SELECT request.tenant_id,
               request.ref_prefix || ':' || a.contact_id
                   || CASE WHEN recurring THEN '#' || to_char(stage_broadcast.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END,
               coalesce(a.fire_at, now()), request.payload, request.callback_url, request.max_attempts, a.timezone,
               request.category, request.calendar, request.holiday_rule, request.backfill, request.max_lateness,
               a.contact_id, a.timezone_source, stage_broadcast.occurrence, request.id,
               CASE WHEN a.fire_at IS NULL THEN 'dead'  -- its zone is unreadable here: dead, saying why
                    WHEN request.approval = 'awaiting' OR size.over THEN 'awaiting_approval'
                    WHEN tenant.paused THEN 'paused' ELSE 'pending' END,
               CASE WHEN a.fire_at IS NOT NULL AND tenant.paused AND request.approval <> 'awaiting' AND NOT size.over
                    THEN 'tenant' END,
               CASE WHEN a.fire_at IS NULL
                    THEN format('timezone "%s" of contact %s is unknown to this database server''s tz database: '
                                '%s has no instant there; correct the contact''s timezone, or update the server''s '
                                'tzdata', a.timezone, a.contact_id, to_char(stage_broadcast.occurrence,
                                                                            'YYYY-MM-DD HH24:MI')) END
        FROM reached a
        CROSS JOIN size
        WHERE size.contacts <= coalesce(tenant.broadcast_limit, size.contacts) AND NOT a.passed_over
        RETURNING fire_at, status
    )
    SELECT count(inserted.fire_at), min(inserted.fire_at) FILTER (WHERE inserted.status <> 'dead'),
           max(inserted.fire_at) FILTER (WHERE inserted.status <> 'dead'), max(size.contacts), bool_or(size.over),
           max(size.passed_over)
    INTO staged, first_at, last_at, contacts, over_threshold, passed_over
    FROM size LEFT JOIN inserted ON true;
    IF contacts > tenant.broadcast_limit THEN
        problem := format('%s contacts, over the tenant''s limit of %s', reminderd.thousands(contacts),
                          reminderd.thousands(tenant.broadcast_limit));
        IF NOT recurring THEN
            RAISE EXCEPTION 'broadcast "%" would send to % contacts; tenant "%" allows at most % in one broadcast',
                request.ref_prefix, reminderd.thousands(contacts), request.tenant_id,
                reminderd.thousands(tenant.broadcast_limit)
                USING ERRCODE = 'program_limit_exceeded',
                      DETAIL = 'The audience grew while the broadcast was staged.',
                      HINT = 'Split the audience, or raise the limit: reminderd tenant set TENANT --broadcast-limit N.';
        END IF;
        UPDATE reminderd.broadcast_requests r
        SET next_occurrence = stage_broadcast.following,
            last_error = format('occurrence %s not staged: %s', to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'),
                                problem),
            ended_at = CASE WHEN stage_broadcast.following IS NULL THEN now() END,
            ended_reason = CASE WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
            updated_at = now()
        WHERE r.id = request.id;
        RETURN 0;
    END IF;
    IF over_threshold THEN
        UPDATE reminderd.broadcast_requests r SET approval = 'awaiting', updated_at = now() WHERE r.id = request.id;
    END IF;
    INSERT INTO reminderd.broadcast_occurrences
        (broadcast_id, occurrence, tenant_id, contacts, first_fire_at, last_fire_at)
    VALUES (request.id, stage_broadcast.occurrence, request.tenant_id, staged, first_at, last_at);
    UPDATE reminderd.broadcast_requests r
    SET next_occurrence = CASE WHEN recurring THEN stage_broadcast.following END,
        ended_at = CASE WHEN NOT recurring OR stage_broadcast.following IS NULL THEN now() END,
        ended_reason = CASE WHEN NOT recurring THEN 'staged'
                            WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
        last_error = CASE WHEN passed_over > 0 THEN format(
            'occurrence %s staged without %s contacts in a zone this database server cannot read: each was '
            'staged dead once, at an earlier occurrence (correct their timezone, or update the server''s tzdata)',
            to_char(stage_broadcast.occurrence, 'YYYY-MM-DD HH24:MI'), reminderd.thousands(passed_over)) END,
        updated_at = now()
    WHERE r.id = request.id;
    RETURN staged;
END
$$;

-- What a broadcast at local_time would send, without staging anything (the CLI's --dry-run): per
-- zone, its instant (NULL for a zone this server cannot read: those contacts would be staged dead,
-- migration 0038) and how many contacts, by where their zone came from.
CREATE FUNCTION reminderd.broadcast_preview(
    tenant_id text, local_time timestamp, audience text DEFAULT NULL, contact_ids text[] DEFAULT NULL,
    everyone boolean DEFAULT false
) RETURNS TABLE (timezone text, fire_at timestamptz, contacts bigint, from_contact bigint, from_phone bigint,
                 from_country bigint, from_tenant bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    -- A wall time that is not finite, or past the range of time (migration 0022), refused naming it.
    PERFORM reminderd.check_local_time(broadcast_preview.local_time,
                                       format('the broadcast preview of tenant "%s"', broadcast_preview.tenant_id));
    RETURN QUERY
        SELECT a.timezone, reminderd.local_instant_if_readable(broadcast_preview.local_time, a.timezone), count(*),
               count(*) FILTER (WHERE a.timezone_source = 'contact'), count(*) FILTER (WHERE a.timezone_source = 'phone'),
               count(*) FILTER (WHERE a.timezone_source = 'country'), count(*) FILTER (WHERE a.timezone_source = 'tenant')
        FROM reminderd.audience_contacts(broadcast_preview.tenant_id, broadcast_preview.audience,
                                         broadcast_preview.contact_ids, coalesce(broadcast_preview.everyone, false)) AS a
        GROUP BY a.timezone
        ORDER BY 2 NULLS FIRST, 1;
END
$$;

-- Refuse (55000) deciding a broadcast that has nothing left to decide (migration 0036), in the
-- same words whichever the decision ('approve' or 'reject'): one that needs no approval, was
-- approved (for a rejection) or rejected (for an approval), was cancelled while it awaited one, or
-- awaits one with nothing more to stage and none of its rows awaiting approval (its contacts were
-- deleted: it is done). A message, a DETAIL saying what became of its messages, a HINT saying what
-- to do instead. approve_broadcast and reject_broadcast call it where they refuse.
CREATE FUNCTION reminderd.refuse_broadcast_decision(request reminderd.broadcast_requests, decision text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    decided text := format('%s at %s', request.decided_by,
                           to_char(request.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    cancel  text := 'To stop it, cancel it: reminderd.cancel_broadcast(tenant, id).';
    resend  text := 'Make a new broadcast to send it after all.';
    nothing text := 'It sends nothing already: there is nothing to stop.';
BEGIN
    CASE request.approval
    WHEN 'not_needed' THEN
        RAISE EXCEPTION 'broadcast % needs no approval: there is nothing to %', request.id, decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was within tenant "%s"''s approval_threshold: its messages are sent without '
                                  'a decision.', request.tenant_id),
                  HINT = cancel;
    WHEN 'approved' THEN
        RAISE EXCEPTION 'broadcast % was approved by %: there is nothing to %', request.id, decided, decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its messages were released to be sent when it was approved.', HINT = cancel;
    WHEN 'rejected' THEN
        RAISE EXCEPTION 'broadcast % was rejected by %: there is nothing to %', request.id, decided, decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its messages were cancelled when it was rejected.', HINT = resend;
    WHEN 'cancelled' THEN
        RAISE EXCEPTION 'broadcast % was cancelled while it awaited approval: there is nothing to %', request.id,
            decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its messages were cancelled at %s.',
                                  to_char(request.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  HINT = CASE decision WHEN 'approve' THEN resend ELSE nothing END;
    ELSE  -- awaiting, with nothing left (approve_broadcast and reject_broadcast test it)
        RAISE EXCEPTION 'broadcast % has nothing left to %: none of its messages awaits approval', request.id,
            decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its contacts were deleted or its messages cancelled: it is done, and sends nothing.',
                  HINT = CASE decision WHEN 'approve' THEN 'Make a new broadcast to send again.' ELSE nothing END;
    END CASE;
END
$$;

-- A broadcast waiting for approval goes ahead once a different person approves it; its rows
-- become pending (those whose time has passed meanwhile follow their backfill policy). The
-- approval covers the largest wave awaiting it (approved_contacts, migration 0028).
-- Approving an approved one again returns 0 and changes nothing (its decided_by stays), but never
-- for its creator (42501, migration 0031); one rejected, cancelled, needing no approval or with
-- nothing left to approve is 55000 (refuse_broadcast_decision, as reject_broadcast refuses).
CREATE FUNCTION reminderd.approve_broadcast(tenant_id text, broadcast_id bigint, actor text DEFAULT NULL,
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
    IF request.approval IN ('not_needed', 'rejected', 'cancelled') THEN
        PERFORM reminderd.refuse_broadcast_decision(request, 'approve');
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
    -- (migration 0034) Staged, nothing more to stage, and none of its rows awaits approval (its
    -- contacts were deleted): an approval would release nothing (scheduled_messages_broadcast).
    IF request.ended_at IS NOT NULL AND NOT EXISTS (
        SELECT FROM reminderd.scheduled_messages m
        WHERE m.broadcast_id = request.id AND m.status = 'awaiting_approval' AND m.tenant_id = request.tenant_id
    ) THEN
        PERFORM reminderd.refuse_broadcast_decision(request, 'approve');
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

-- Rejected: every row of the broadcast is cancelled, and a recurring one stages no more.
-- Rejecting a rejected one again returns 0 and changes nothing; one approved, cancelled, needing
-- no approval or with nothing left to reject (migration 0036: it answered 0 and said 'rejected')
-- is 55000, refused as approve_broadcast refuses (refuse_broadcast_decision).
CREATE FUNCTION reminderd.reject_broadcast(tenant_id text, broadcast_id bigint, actor text DEFAULT NULL,
                                           note text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    request   reminderd.broadcast_requests;
    who       text;
    cancelled integer;
BEGIN
    PERFORM reminderd.check_tenant(reject_broadcast.tenant_id);
    who := reminderd.acting_as(reject_broadcast.actor);
    SELECT * INTO request FROM reminderd.broadcast_requests r
    WHERE r.id = reject_broadcast.broadcast_id AND r.tenant_id = reject_broadcast.tenant_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %', reject_broadcast.tenant_id, reject_broadcast.broadcast_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF request.approval = 'rejected' THEN
        RETURN 0;  -- the same decision again: nothing changes
    END IF;
    IF request.approval <> 'awaiting' OR (request.ended_at IS NOT NULL AND NOT EXISTS (
        SELECT FROM reminderd.scheduled_messages m
        WHERE m.broadcast_id = request.id AND m.status = 'awaiting_approval' AND m.tenant_id = request.tenant_id
    )) THEN
        PERFORM reminderd.refuse_broadcast_decision(request, 'reject');
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'rejected', decided_by = who, decided_at = now(), decision_note = reject_broadcast.note,
        ended_at = coalesce(r.ended_at, now()), ended_reason = format('rejected by %s', who), updated_at = now()
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'rejected', lease_expires_at = NULL,
        last_error = format('broadcast %s rejected by %s', request.id, who) || coalesce(': ' || reject_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

-- Stop a broadcast: its live rows are cancelled, and a recurring one stages no more. One awaiting
-- approval is approval 'cancelled' (migration 0034: it said 'awaiting' with nothing left); it
-- ended 'cancelled' unless it had ended otherwise before (a one-off 'staged' whose rows were all
-- sent, or sent and cancelled by this call, says 'cancelled' once this call cancelled any).
CREATE FUNCTION reminderd.cancel_broadcast(tenant_id text, broadcast_id bigint) RETURNS integer
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

-- Progress: what state a broadcast row is in, for the counts.
CREATE FUNCTION reminderd.broadcast_state(status text, last_event text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status IN ('paused', 'awaiting_approval')
                     OR (status = 'pending' AND last_event IN ('deferred', 'holiday_skipped')) THEN 'held'
                WHEN status IN ('pending', 'picked') THEN 'waiting'
                WHEN status IN ('sent', 'finished') THEN 'sent'
                WHEN status = 'dead' THEN 'failed'
                ELSE status END
$$;

-- One row per broadcast row an update moved between states: +1 where it went, -1 where it left
-- (the daemon folds them). Row-level, called only as the trigger's WHEN clause decides: a
-- statement-level UPDATE trigger with transition tables would make every claim copy its rows
-- twice (migration 0007). An attempt's outcome (last_delivery_id moves) is counted by
-- record_outcomes itself, once per batch (queries.sql), as its deliveries row records its change.
-- As the owner (migration 0023): reminderd_app and reminderd_api read the counts but do not write
-- them; the row's own tenant and broadcast (count_inserts, check_broadcast_of_row) are what it counts.
CREATE FUNCTION reminderd.count_broadcast_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before text := reminderd.broadcast_state(OLD.status, OLD.last_event);
    after  text := reminderd.broadcast_state(NEW.status, NEW.last_event);
BEGIN
    INSERT INTO reminderd.broadcast_counts
        (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
    VALUES (NEW.broadcast_id, NEW.local_time, NEW.tenant_id,
            (after = 'waiting')::integer - (before = 'waiting')::integer,
            (after = 'held')::integer - (before = 'held')::integer,
            (after = 'sent')::integer - (before = 'sent')::integer,
            (after = 'failed')::integer - (before = 'failed')::integer,
            (after = 'expired')::integer - (before = 'expired')::integer,
            (after = 'cancelled')::integer - (before = 'cancelled')::integer);
    RETURN NULL;
END
$$;

-- The daemon, now and then: fold each occurrence's count rows (more than fold_above) into one, and
-- mark occurrences whose rows have all ended completed, queueing the broadcast.completed callback
-- for those whose broadcast asked for one (a message like any other: signed, retried, audited;
-- created paused by 'tenant' while its tenant is paused, as any row inserted then is). Each wave on
-- its own (migration 0033): one whose callback cannot be queued (its ref taken by a live message,
-- say) is completed all the same, without one, and its broadcast's last_error says why; a passing
-- error (a deadlock, a lock timeout) fails the round instead, and the wave is tried again.
-- One caller at a time. A wave has one callback (migration 0036): one it has already (a DBA set
-- completed_at back to NULL by hand, to retry a callback that was not queued) is linked again, not
-- written twice. Returns the occurrences completed.
CREATE FUNCTION reminderd.complete_broadcasts(batch integer DEFAULT 100, fold_above integer DEFAULT 20)
RETURNS TABLE (broadcast_id bigint, tenant_id text, occurrence timestamp, message_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    folded       record;
    done         record;
    callback_ref text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.complete_broadcasts')) THEN
        RETURN;
    END IF;
    FOR folded IN
        SELECT k.broadcast_id, k.occurrence FROM reminderd.broadcast_counts k
        GROUP BY 1, 2 HAVING count(*) > complete_broadcasts.fold_above LIMIT complete_broadcasts.batch
    LOOP
        WITH gone AS (
            DELETE FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = folded.broadcast_id AND k.occurrence = folded.occurrence
            RETURNING k.*
        )
        INSERT INTO reminderd.broadcast_counts
            (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
        SELECT g.broadcast_id, g.occurrence, g.tenant_id, sum(g.waiting), sum(g.held), sum(g.sent), sum(g.failed),
               sum(g.expired), sum(g.cancelled)
        FROM gone g
        GROUP BY 1, 2, 3;
    END LOOP;
    FOR done IN
        SELECT o.broadcast_id, o.occurrence, r.tenant_id, o.contacts, r.ref_prefix, r.notify, r.callback_url,
               r.local_time IS NULL AS recurring, t.paused AS tenant_paused, totals.*
        FROM reminderd.broadcast_occurrences o
        JOIN reminderd.broadcast_requests r ON r.id = o.broadcast_id AND r.tenant_id = o.tenant_id
        JOIN reminderd.tenants t ON t.id = r.tenant_id
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(k.waiting), 0) AS waiting, coalesce(sum(k.held), 0) AS held,
                   coalesce(sum(k.sent), 0) AS sent, coalesce(sum(k.failed), 0) AS failed,
                   coalesce(sum(k.expired), 0) AS expired, coalesce(sum(k.cancelled), 0) AS cancelled
            FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = o.broadcast_id AND k.occurrence = o.occurrence AND k.tenant_id = r.tenant_id
        ) AS totals
        WHERE o.completed_at IS NULL AND totals.waiting + totals.held = 0
        ORDER BY o.staged_at
        LIMIT complete_broadcasts.batch
        FOR UPDATE OF o SKIP LOCKED
    LOOP
        broadcast_id := done.broadcast_id;
        tenant_id := done.tenant_id;
        occurrence := done.occurrence;
        message_id := NULL;
        callback_ref := done.ref_prefix || '#completed'
                        || CASE WHEN done.recurring THEN '#' || to_char(done.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END;
        IF done.notify THEN
            SELECT m.id INTO message_id FROM reminderd.scheduled_messages m
            WHERE m.tenant_id = done.tenant_id AND m.ref_id = callback_ref AND m.broadcast_id = done.broadcast_id
              AND m.contact_id IS NULL
            ORDER BY m.id
            LIMIT 1;
        END IF;
        IF done.notify AND message_id IS NULL THEN
            BEGIN
                INSERT INTO reminderd.scheduled_messages
                    (tenant_id, ref_id, fire_at, payload, callback_url, broadcast_id, category, status, paused_by,
                     last_error)
                VALUES (done.tenant_id, callback_ref, now(),
                        jsonb_build_object(
                            'event', 'broadcast.completed', 'broadcast_id', done.broadcast_id,
                            'ref_prefix', done.ref_prefix,
                            'occurrence', to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'),
                            'counts', jsonb_build_object(
                                'staged', done.sent + done.failed + done.expired + done.cancelled,
                                'sent', done.sent, 'failed', done.failed, 'expired', done.expired,
                                'cancelled', done.cancelled)),
                        done.callback_url, done.broadcast_id, 'transactional',
                        CASE WHEN done.tenant_paused THEN 'paused' ELSE 'pending' END,
                        CASE WHEN done.tenant_paused THEN 'tenant' END,
                        CASE WHEN done.tenant_paused THEN 'tenant paused' END)
                RETURNING id INTO message_id;
            -- This wave only, for an error that says the row cannot be written (its ref taken, a
            -- value or a trigger refusing it): completed without its callback, and why. A passing
            -- one (deadlock, lock timeout, serialization failure, cancel, shutdown) is the round's:
            -- raised, so the wave waits for the next round and gets its callback then.
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception OR no_data_found
                           OR program_limit_exceeded OR insufficient_privilege OR feature_not_supported THEN
                UPDATE reminderd.broadcast_requests r
                SET last_error = format('broadcast.completed callback of occurrence %s not queued: %s',
                                        to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'), SQLERRM),
                    updated_at = now()
                WHERE r.id = done.broadcast_id AND r.tenant_id = done.tenant_id;
            END;
        END IF;
        UPDATE reminderd.broadcast_occurrences o
        SET completed_at = now(), completion_message_id = message_id
        WHERE o.broadcast_id = done.broadcast_id AND o.occurrence = done.occurrence;
        RETURN NEXT;
    END LOOP;
END
$$;

-- A broadcast's callback_url is checked as a message's is (check_callback_url), and the values its
-- messages will carry as theirs are (check_message_values), when they are written: its rows, which
-- stage_broadcast writes with them, are not checked one by one.
CREATE FUNCTION reminderd.validate_broadcast_request() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.callback_url IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.callback_url IS DISTINCT FROM OLD.callback_url) THEN
        PERFORM reminderd.check_callback_url(NEW.callback_url,
                                             format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id),
                                             'broadcast_callback_url_is_http');
    END IF;
    -- What its messages will carry, as a message's values are checked (check_message_values,
    -- migration 0021): refused here, not when its rows are staged.
    IF TG_OP = 'INSERT' OR (NEW.category, NEW.calendar, NEW.holiday_rule, NEW.backfill, NEW.max_lateness,
                            NEW.max_attempts)
                           IS DISTINCT FROM (OLD.category, OLD.calendar, OLD.holiday_rule, OLD.backfill,
                                             OLD.max_lateness, OLD.max_attempts) THEN
        PERFORM reminderd.check_message_values(format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id),
                                               NULL, NULL, NEW.max_attempts, NEW.category, NEW.calendar,
                                               NEW.holiday_rule, NEW.backfill, NEW.max_lateness,
                                               'broadcast_category_format');
    END IF;
    -- Times the stager could not count with (migration 0022): an until that is not finite, a
    -- stage_ahead of more than a year (it is subtracted from each occurrence's first instant).
    IF NOT isfinite(NEW.until) AND (TG_OP = 'INSERT' OR NEW.until IS DISTINCT FROM OLD.until) THEN
        PERFORM reminderd.refuse_infinite_time('until', NEW.until::text,
                                               format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id));
    END IF;
    IF NEW.stage_ahead > interval '366 days' AND (TG_OP = 'INSERT' OR NEW.stage_ahead IS DISTINCT FROM OLD.stage_ahead) THEN
        RAISE EXCEPTION 'stage_ahead % of broadcast "%" of tenant "%" is more than a year', NEW.stage_ahead,
            NEW.ref_prefix, NEW.tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long before an occurrence its messages are written, like 1 hour (at most 366 days).';
    END IF;
    RETURN NEW;
END
$$;

-- Functions: cadences -----------------------------------------------------------------------------

-- An offset as a ref suffix: -30 days -> -30d, 1 day 12:00 -> +1d12h, -2 months -> -2mo.
CREATE FUNCTION reminderd.offset_label(value interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value < interval '0' THEN '-' ELSE '+' END || coalesce(nullif(
               CASE WHEN months <> 0 THEN months || 'mo' ELSE '' END || CASE WHEN days <> 0 THEN days || 'd' ELSE '' END
               || CASE WHEN hours <> 0 THEN hours || 'h' ELSE '' END
               || CASE WHEN minutes <> 0 THEN minutes || 'm' ELSE '' END
               || CASE WHEN seconds <> 0 THEN seconds || 's' ELSE '' END, ''), '0')
    FROM (SELECT (extract(year FROM a) * 12 + extract(month FROM a))::integer AS months,
                 extract(day FROM a)::integer AS days, extract(hour FROM a)::integer AS hours,
                 extract(minute FROM a)::integer AS minutes, trunc(extract(second FROM a))::integer AS seconds
          FROM (SELECT CASE WHEN value < interval '0' THEN -value ELSE value END AS a) AS absolute) AS parts
$$;

-- Messages at offsets around an anchor instant (a renewal, an appointment), each at a local wall
-- time in the contact's zone (at_local; or the anchor's own time of day), refs prefix:-30d and so
-- on, cancellable together with cancel_matching(tenant, 'prefix:%'). The call says what the
-- cadence is now (migration 0028): the same call again returns the same messages ('unchanged');
-- a new anchor replaces them ('replaced', cancelled_id the message it replaced); an offset
-- already past creates nothing ('skipped'), and cancels the live message of its ref that was
-- planned for another time ('cancelled'; an earlier anchor must not leave reminders for a renewal
-- that already happened); a live prefix:<offset> message whose offset the call no longer lists
-- is cancelled too (a row of its own: 'cancelled', with that message's times). Each cancellation
-- is in the message's trail with its reason.
CREATE FUNCTION reminderd.schedule_cadence(
    tenant_id text, ref_prefix text, anchor timestamptz,
    offsets interval[] DEFAULT '{-30 days,-7 days,-1 day}', at_local time DEFAULT NULL,
    contact_id text DEFAULT NULL, payload jsonb DEFAULT '{}', timezone text DEFAULT NULL,
    callback_url text DEFAULT NULL, category text DEFAULT 'transactional', calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS TABLE (ref_id text, message_id bigint, fire_at timestamptz, local_time timestamp, skipped text,
                 outcome text, cancelled_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    zone text;
    step interval;
    wall timestamp;
    refs text[] := '{}';
    live record;
    known bigint[];
BEGIN
    PERFORM reminderd.check_tenant(schedule_cadence.tenant_id);
    IF coalesce(schedule_cadence.ref_prefix, '') = '' OR schedule_cadence.anchor IS NULL
       OR coalesce(cardinality(schedule_cadence.offsets), 0) = 0 THEN
        RAISE EXCEPTION 'a cadence needs a ref_prefix, an anchor and at least one offset'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Times that are no time (migration 0021), before any arithmetic on them: an anchor that is not
    -- finite, an offset past what a timestamp holds.
    IF NOT isfinite(schedule_cadence.anchor) THEN
        PERFORM reminderd.refuse_infinite_time('anchor', schedule_cadence.anchor::text,
                                               format('cadence "%s" of tenant "%s"', schedule_cadence.ref_prefix,
                                                      schedule_cadence.tenant_id));
    END IF;
    SELECT o INTO step FROM unnest(schedule_cadence.offsets) AS o
    WHERE o NOT BETWEEN interval '-200000 years' AND interval '200000 years'
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'offset % of cadence "%" of tenant "%" takes it out of the range of time', step,
            schedule_cadence.ref_prefix, schedule_cadence.tenant_id
            USING ERRCODE = 'datetime_field_overflow',
                  HINT = 'Give offsets of days or weeks from the anchor, like -30 days, -7 days, -1 day.';
    END IF;
    SELECT z.zone INTO zone
    FROM reminderd.message_timezone(schedule_cadence.tenant_id, schedule_cadence.contact_id, schedule_cadence.timezone) AS z;
    FOREACH step IN ARRAY schedule_cadence.offsets LOOP
        wall := reminderd.wall_time(schedule_cadence.anchor, zone) + step;
        IF schedule_cadence.at_local IS NOT NULL THEN
            wall := wall::date + schedule_cadence.at_local;
        END IF;
        ref_id := schedule_cadence.ref_prefix || ':' || reminderd.offset_label(step);
        local_time := wall;
        fire_at := reminderd.local_instant(wall, zone);
        cancelled_id := NULL;
        refs := refs || ref_id;
        PERFORM pg_advisory_xact_lock(hashtextextended(schedule_cadence.tenant_id || chr(31) || ref_id, 0));
        SELECT m.id, coalesce(m.scheduled_for, m.fire_at) AS due INTO live
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = schedule_cadence.tenant_id AND m.ref_id = schedule_cadence.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
        IF fire_at <= now() THEN
            message_id := NULL;
            skipped := 'in the past';
            outcome := 'skipped';
            -- Its live message, if it was planned for another time (an earlier anchor), is cancelled;
            -- one due at this very time is this step's own message, late (the same call again): it
            -- stands, and the daemon sends it under its backfill policy.
            IF live.id IS NOT NULL AND live.due IS DISTINCT FROM fire_at THEN
                PERFORM reminderd.cancel_live(schedule_cadence.tenant_id, ref_id,
                    format('cancelled: cadence %s now puts %s in the past (anchor %s)', schedule_cadence.ref_prefix,
                           ref_id, to_char(schedule_cadence.anchor AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
                outcome := 'cancelled';
                cancelled_id := live.id;
            ELSIF live.id IS NOT NULL THEN
                message_id := live.id;
                skipped := NULL;
                outcome := 'unchanged';
            END IF;
        ELSE
            SELECT array_agg(m.id) INTO known
            FROM reminderd.scheduled_messages m
            WHERE m.tenant_id = schedule_cadence.tenant_id AND m.ref_id = schedule_cadence.ref_id;
            message_id := reminderd.schedule(
                schedule_cadence.tenant_id, ref_id, payload => schedule_cadence.payload,
                callback_url => schedule_cadence.callback_url, max_attempts => schedule_cadence.max_attempts,
                local_time => wall, timezone => schedule_cadence.timezone, category => schedule_cadence.category,
                calendar => schedule_cadence.calendar, holiday_rule => schedule_cadence.holiday_rule,
                backfill => schedule_cadence.backfill, max_lateness => schedule_cadence.max_lateness,
                contact_id => schedule_cadence.contact_id);
            skipped := NULL;
            IF message_id = ANY (known) THEN
                outcome := 'unchanged';
            ELSIF live.id IS NOT NULL THEN
                outcome := 'replaced';
                cancelled_id := live.id;
            ELSE
                outcome := 'scheduled';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    -- The offsets this call no longer lists: their live messages (refs prefix:<an offset label>,
    -- one-off) are cancelled.
    FOR live IN
        SELECT m.id, m.ref_id, m.fire_at, m.timezone
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = schedule_cadence.tenant_id
          AND starts_with(m.ref_id, schedule_cadence.ref_prefix || ':')
          AND substr(m.ref_id, length(schedule_cadence.ref_prefix) + 2)
              ~ '^([+-]([0-9]+mo)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?|[+-]0)$'
          AND m.ref_id <> ALL (refs)
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
          AND m.cron IS NULL AND m.rrule IS NULL
        ORDER BY m.fire_at, m.id
    LOOP
        PERFORM reminderd.cancel_live(schedule_cadence.tenant_id, live.ref_id,
            format('cancelled: cadence %s no longer lists offset %s', schedule_cadence.ref_prefix,
                   substr(live.ref_id, length(schedule_cadence.ref_prefix) + 2)));
        ref_id := live.ref_id;
        message_id := NULL;
        fire_at := live.fire_at;
        local_time := reminderd.wall_time(live.fire_at, live.timezone);
        skipped := 'not in the cadence any more';
        outcome := 'cancelled';
        cancelled_id := live.id;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Functions: a contact's whole picture ------------------------------------------------------------

-- A contact's messages: every live one (soonest first), then those that ended within `recent`
-- (latest first), at most max_rows; each with its time on the contact's clock and, for anything
-- held, why. Reads the contact's rows only (scheduled_messages_contact).
CREATE FUNCTION reminderd.contact_messages(tenant_id text, contact_id text, recent interval DEFAULT '7 days',
                                           max_rows integer DEFAULT 100)
RETURNS TABLE (id bigint, ref_id text, status text, fire_at timestamptz, local_fire_at timestamp, timezone text,
               timezone_source text, recurrence text, category text, broadcast_id bigint, last_event text,
               reason text, updated_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT m.id, m.ref_id, m.status, m.fire_at, reminderd.wall_time(m.fire_at, m.timezone), m.timezone,
           m.timezone_source,
           coalesce(m.cron, m.rrule), m.category, m.broadcast_id, m.last_event,
           CASE WHEN m.status = 'awaiting_approval' THEN format('broadcast %s awaits approval', m.broadcast_id)
                WHEN m.status = 'paused' THEN coalesce(m.last_error, format('paused (%s)', m.paused_by))
                ELSE m.last_error END,
           m.updated_at
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = contact_messages.tenant_id AND m.contact_id = contact_messages.contact_id
      AND (m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
           OR m.updated_at >= now() - contact_messages.recent)
    ORDER BY m.status NOT IN ('pending', 'picked', 'paused', 'awaiting_approval'),
             CASE WHEN m.status IN ('pending', 'picked', 'paused', 'awaiting_approval') THEN m.fire_at END NULLS FIRST,
             m.updated_at DESC
    LIMIT contact_messages.max_rows
$$;

-- Who may call what: nobody but the grants below (functions get PUBLIC EXECUTE by default).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reminderd FROM PUBLIC;
-- The daemon's time rules are pure: a DBA's read-only role may call them too.
GRANT EXECUTE ON FUNCTION
    reminderd.check_timezone(text, text),
    reminderd.first_reading(timestamp),
    reminderd.offset_change(timestamptz, timestamptz),
    reminderd.wall_time(timestamptz, text),
    reminderd.cron_parse(text),
    reminderd.cron_next_wall(timestamp, bigint, bigint, bigint, bigint, bigint, integer, bigint, bigint),
    reminderd.next_cron_occurrence(text, text, timestamptz)
TO reminderd_app, reminderd_daemon, reminderd_readonly;
-- Callback URLs (migration 0019): the rule is pure, any role may ask it; the check is what the
-- triggers of every role's writes call.
GRANT EXECUTE ON FUNCTION reminderd.callback_url_problem(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
-- International host names (migration 0039): punycode, pure, for any role.
GRANT EXECUTE ON FUNCTION
    reminderd.punycode_bias(bigint, integer, boolean),
    reminderd.punycode_digit(bigint),
    reminderd.punycode_decode(text),
    reminderd.punycode_encode(text),
    reminderd.callback_url_idna_form(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.check_callback_url(text, text, text),
    reminderd.validate_broadcast_request()
TO reminderd_app, reminderd_daemon, reminderd_api;
-- Values refused in sentences (migration 0021): the phone rule is pure, any role may ask it; the
-- checks are what the functions and triggers of every role's writes call.
GRANT EXECUTE ON FUNCTION reminderd.is_phone(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
-- Signing secrets (migration 0025): the rule is pure, any role may ask it.
GRANT EXECUTE ON FUNCTION reminderd.is_signing_secret(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.died_delivered(reminderd.scheduled_messages)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.refuse_infinite_time(text, text, text),
    reminderd.check_message_values(text, text, integer, integer, text, text, text, text, interval, text),
    reminderd.check_message(reminderd.scheduled_messages, reminderd.scheduled_messages)
TO reminderd_app, reminderd_daemon, reminderd_api;
-- What the triggers of every role's writes call (migration 0033).
GRANT EXECUTE ON FUNCTION reminderd.refuse_out_of_range(), reminderd.check_contact_zones()
TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.check_local_time(timestamp, text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.rrule_until(text, text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.local_instant_if_readable(timestamp, text),
    reminderd.broadcast_end(timestamptz, text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.is_timezone(text),
    reminderd.check_tenant(text),
    reminderd.check_fire_at(timestamptz, text, text),
    reminderd.duration_text(interval),
    reminderd.check_arrival(text, text, timestamptz, text, interval),
    reminderd.check_cron(text, text),
    reminderd.first_occurrence(text, text, text, timestamptz),
    reminderd.local_instant(timestamp, text),
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval, text),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz, text),
    reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                            text, interval, integer, text),
    reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                             text, interval, integer, text),
    reminderd.cancel_live(text, text, text),
    reminderd.cancel(text, text),
    reminderd.cancel_matching(text, text),
    reminderd.pause(text, text),
    reminderd.resume_rows(text, text, text),
    reminderd.resume(text, text),
    reminderd.reschedule(text, text, timestamptz),
    reminderd.requeue(bigint, boolean),
    reminderd.requeue_dead(text, timestamptz),
    reminderd.schedule_item(text, reminderd.schedule_item_v1),
    reminderd.schedule_many(text, reminderd.schedule_item_v1[], boolean),
    reminderd.send_now(text, text),
    reminderd.cancel_message(text, bigint),
    reminderd.set_payload(text, text, jsonb),
    reminderd.validate_message(),
    reminderd.admit_message(),
    reminderd.validate_tenant(),
    reminderd.validate_holiday(),
    reminderd.check_payload(),
    reminderd.hold_for_paused_tenant(),
    reminderd.notify_row_due_soon(),
    reminderd.record_inserts(),
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
-- What reminderd serve calls: the application's functions, the tenant's pause and resume, and
-- rotation through api_rotate_secret (so it never reads a secret, only gets the new one once);
-- and what the triggers its writes fire call (the re-planning and the broadcasts' counts).
GRANT EXECUTE ON FUNCTION
    reminderd.is_timezone(text),
    reminderd.check_tenant(text),
    reminderd.check_fire_at(timestamptz, text, text),
    reminderd.duration_text(interval),
    reminderd.check_arrival(text, text, timestamptz, text, interval),
    reminderd.first_occurrence(text, text, text, timestamptz),
    reminderd.local_instant(timestamp, text),
    reminderd.message_timezone(text, text, text),
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval, text),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz, text),
    reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                            text, interval, integer, text),
    reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                             text, interval, integer, text),
    reminderd.cancel_live(text, text, text),
    reminderd.cancel(text, text),
    reminderd.cancel_matching(text, text),
    reminderd.pause(text, text),
    reminderd.resume_rows(text, text, text),
    reminderd.resume(text, text),
    reminderd.reschedule(text, text, timestamptz),
    reminderd.requeue(bigint, boolean),
    reminderd.requeue_dead(text, timestamptz),
    reminderd.schedule_item(text, reminderd.schedule_item_v1),
    reminderd.schedule_many(text, reminderd.schedule_item_v1[], boolean),
    reminderd.send_now(text, text),
    reminderd.cancel_message(text, bigint),
    reminderd.set_payload(text, text, jsonb),
    reminderd.pause_tenant(text),
    reminderd.resume_tenant(text),
    reminderd.api_rotate_secret(text, interval),
    reminderd.validate_message(),
    reminderd.admit_message(),
    reminderd.validate_tenant(),
    reminderd.validate_holiday(),
    reminderd.check_payload(),
    reminderd.hold_for_paused_tenant(),
    reminderd.notify_row_due_soon(),
    reminderd.record_inserts(),
    reminderd.audit_update(),
    reminderd.replan_for_tenants(),
    reminderd.broadcast_state(text, text),
    reminderd.count_broadcast_update(),
    reminderd.check_timezone(text, text),
    reminderd.first_reading(timestamp),
    reminderd.offset_change(timestamptz, timestamptz),
    reminderd.wall_time(timestamptz, text),
    reminderd.cron_parse(text),
    reminderd.cron_next_wall(timestamp, bigint, bigint, bigint, bigint, bigint, integer, bigint, bigint),
    reminderd.next_cron_occurrence(text, text, timestamptz),
    reminderd.check_cron(text, text)
TO reminderd_api;
-- Contacts, audiences, broadcasts and cadences (completing broadcasts is the daemon's alone).
GRANT EXECUTE ON FUNCTION
    reminderd.national_number(text, text[], text, integer, text, text, integer[], integer[]),
    reminderd.phone_timezone(text),
    reminderd.resolve_contact(),
    reminderd.upsert_contacts(text, jsonb),
    reminderd.delete_contacts(text, text[]),
    reminderd.message_timezone(text, text, text),
    reminderd.replan_for_contacts(),
    reminderd.replan_for_tenants(),
    reminderd.add_to_audience(text, text, text[]),
    reminderd.remove_from_audience(text, text, text[]),
    reminderd.drop_audience(text, text),
    reminderd.audience_contacts(text, text, text[], boolean),
    reminderd.acting_as(text),
    reminderd.cron_field_values(text, integer, integer),
    reminderd.fires_per_hour(text, text),
    reminderd.thousands(bigint),
    reminderd.broadcast(text, text, timestamp, text, jsonb, text, text[], boolean, text, text, timestamptz, text,
                        text, text, text, interval, integer, boolean, interval, text),
    reminderd.stage_broadcast(bigint, timestamp, timestamp),
    reminderd.broadcast_preview(text, timestamp, text, text[], boolean),
    reminderd.refuse_broadcast_decision(reminderd.broadcast_requests, text),
    reminderd.approve_broadcast(text, bigint, text, text),
    reminderd.reject_broadcast(text, bigint, text, text),
    reminderd.cancel_broadcast(text, bigint),
    reminderd.broadcast_state(text, text),
    reminderd.count_broadcast_update(),
    reminderd.offset_label(interval),
    reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text, text, text, text,
                               text, text, interval, integer),
    reminderd.contact_messages(text, text, interval, integer)
TO reminderd_app, reminderd_daemon;
GRANT EXECUTE ON FUNCTION reminderd.complete_broadcasts(integer, integer) TO reminderd_daemon;
-- Re-planning around attempts and a contact's deletion (migration 0027).
REVOKE EXECUTE ON FUNCTION reminderd.occurrence_attempted(bigint, integer, timestamptz),
    reminderd.rezone_after_attempt(), reminderd.cancel_for_deleted_contacts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.occurrence_attempted(bigint, integer, timestamptz),
    reminderd.rezone_after_attempt(), reminderd.cancel_for_deleted_contacts()
TO reminderd_app, reminderd_daemon, reminderd_api;
-- A contact's identity kept (migration 0030).
GRANT EXECUTE ON FUNCTION reminderd.refuse_contacts_truncate(), reminderd.refuse_contact_id_change()
TO reminderd_app, reminderd_daemon, reminderd_api;
-- A message kept to its tenant (migration 0039).
GRANT EXECUTE ON FUNCTION reminderd.refuse_message_tenant_change() TO reminderd_app, reminderd_daemon, reminderd_api;
-- The zone a message or tenant stores (migration 0039), for whoever writes them.
GRANT EXECUTE ON FUNCTION reminderd.stored_timezone(text, text) TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
-- An audience's member count, for whoever changes its members; its fold, the daemon's (migration 0034).
GRANT EXECUTE ON FUNCTION reminderd.count_audience_members(), reminderd.refuse_audience_members_truncate()
TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.fold_audience_member_counts(integer, integer) TO reminderd_daemon;
-- The dashboard's aggregates: their trigger functions for whoever writes events and deliveries,
-- the bounds for their readers, the pruning for the daemon.
GRANT EXECUTE ON FUNCTION reminderd.count_fires() TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.lateness_bounds_ms() TO reminderd_readonly, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.prune_counts() TO reminderd_daemon;

-- schedule_many()'s set-based path (migration 0012), for whoever may call schedule_many().
GRANT EXECUTE ON FUNCTION reminderd.schedule_set(text, reminderd.schedule_item_v1[]),
    reminderd.schedule_one(text, reminderd.schedule_item_v1)
TO reminderd_app, reminderd_daemon, reminderd_api;
-- The version 1 functions' conversion of their items (migration 0018), for the same roles.
GRANT EXECUTE ON FUNCTION reminderd.as_items_v2(reminderd.schedule_item_v1[])
TO reminderd_app, reminderd_daemon, reminderd_api;
-- And for schedule_item_v2 (migration 0014).
REVOKE EXECUTE ON FUNCTION reminderd.schedule_item(text, reminderd.schedule_item_v2),
    reminderd.schedule_one(text, reminderd.schedule_item_v2),
    reminderd.schedule_set(text, reminderd.schedule_item_v2[]),
    reminderd.schedule_many(text, reminderd.schedule_item_v2[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.schedule_item(text, reminderd.schedule_item_v2),
    reminderd.schedule_one(text, reminderd.schedule_item_v2),
    reminderd.schedule_set(text, reminderd.schedule_item_v2[]),
    reminderd.schedule_many(text, reminderd.schedule_item_v2[], boolean)
TO reminderd_app, reminderd_daemon, reminderd_api;

-- reminderd_api: every tenant's contacts, audiences and broadcasts, as the daemon role; the
-- reference tables the database resolves a contact's zone with; the broadcasts' progress.
CREATE POLICY api_all ON reminderd.contacts TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.audiences TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.audience_members TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.broadcast_requests TO reminderd_api USING (true) WITH CHECK (true);
CREATE POLICY api_all ON reminderd.broadcast_occurrences TO reminderd_api USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.contacts, reminderd.audiences, reminderd.audience_members,
    reminderd.broadcast_requests, reminderd.broadcast_occurrences TO reminderd_api;
GRANT SELECT ON reminderd.reference_versions, reminderd.phone_plans, reminderd.phone_regions,
    reminderd.phone_prefixes, reminderd.phone_timezones, reminderd.countries TO reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.national_number(text, text[], text, integer, text, text, integer[], integer[]),
    reminderd.phone_timezone(text),
    reminderd.resolve_contact(),
    reminderd.upsert_contacts(text, jsonb),
    reminderd.delete_contacts(text, text[]),
    reminderd.replan_for_contacts(),
    reminderd.add_to_audience(text, text, text[]),
    reminderd.remove_from_audience(text, text, text[]),
    reminderd.drop_audience(text, text),
    reminderd.audience_contacts(text, text, text[], boolean),
    reminderd.acting_as(text),
    reminderd.cron_field_values(text, integer, integer),
    reminderd.fires_per_hour(text, text),
    reminderd.thousands(bigint),
    reminderd.broadcast(text, text, timestamp, text, jsonb, text, text[], boolean, text, text, timestamptz, text,
                        text, text, text, interval, integer, boolean, interval, text),
    reminderd.stage_broadcast(bigint, timestamp, timestamp),
    reminderd.broadcast_preview(text, timestamp, text, text[], boolean),
    reminderd.refuse_broadcast_decision(reminderd.broadcast_requests, text),
    reminderd.approve_broadcast(text, bigint, text, text),
    reminderd.reject_broadcast(text, bigint, text, text),
    reminderd.cancel_broadcast(text, bigint),
    reminderd.offset_label(interval),
    reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text, text, text, text,
                               text, text, interval, integer),
    reminderd.contact_messages(text, text, interval, integer)
TO reminderd_api;

-- upsert_contacts()'s set-based path (migration 0016), which `reminderd contacts import` calls itself.
GRANT EXECUTE ON FUNCTION reminderd.upsert_contact_rows(text, reminderd.contact_v1[])
TO reminderd_app, reminderd_daemon, reminderd_api;

-- Triggers on scheduled_messages ------------------------------------------------------------------
-- Triggers on the same event fire in the order of their names.

-- Before each row is written: admit it (reminderd.admit_message(): refused if dead on arrival,
-- held for a disabled endpoint or a paused tenant, its payload size checked, validated, in that
-- order). A broadcast's rows are held and checked by stage_broadcast for all its rows at once; one
-- staged late follows its backfill policy when claimed.
CREATE TRIGGER scheduled_messages_admit
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.admit_message();
-- A retry of a message that was in flight when the tenant was paused, or a message resumed on
-- its own, would become pending again: held too.
CREATE TRIGGER scheduled_messages_hold_paused_tenant_update
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')
    EXECUTE FUNCTION reminderd.hold_for_paused_tenant();
-- A changed payload, timezone, callback_url, tenant, rrule or cron is checked as on insert, and so
-- are the columns whose CHECK constraints validate_message pre-empts (migration 0021: none of them
-- is set by the daemon's own updates), a broadcast's rows too (0033: they are checked by
-- stage_broadcast when staged, not when changed by hand). A new fire_at that is not finite is refused too: the WHEN
-- clause tests it, so the daemon's updates of fire_at call nothing.
CREATE TRIGGER scheduled_messages_payload_size
    BEFORE UPDATE OF payload ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.check_payload();
CREATE TRIGGER scheduled_messages_validate
    BEFORE UPDATE OF timezone, callback_url, tenant_id, rrule, cron, ref_id, local_time, until, max_runs,
                     max_attempts, category, calendar, holiday_rule, backfill, max_lateness
    ON reminderd.scheduled_messages
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_message();
CREATE TRIGGER scheduled_messages_validate_fire_at
    BEFORE UPDATE OF fire_at ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NOT isfinite(NEW.fire_at) AND NEW.fire_at IS DISTINCT FROM OLD.fire_at)
    EXECUTE FUNCTION reminderd.validate_message();
-- Times and counters the daemon could not read or move on (reminderd.refuse_out_of_range(),
-- migration 0033): the WHEN clauses test the bounds, so a row within them calls nothing. After
-- the validate triggers (names): a time that is not finite keeps their sentence.
CREATE TRIGGER scheduled_messages_values_in_range_insert
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.fire_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.scheduled_for NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.until NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.local_time NOT BETWEEN '0001-01-02 00:00' AND '9999-12-30 00:00'
          OR NEW.created_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.updated_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.picked_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.sent_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.lease_expires_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.attempts NOT BETWEEN 0 AND 1000000000 OR NEW.runs NOT BETWEEN 0 AND 1000000000)
    EXECUTE FUNCTION reminderd.refuse_out_of_range();
CREATE TRIGGER scheduled_messages_values_in_range_update
    BEFORE UPDATE OF fire_at, scheduled_for, until, local_time, created_at, updated_at, picked_at, sent_at,
                     lease_expires_at, attempts, runs
    ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.fire_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.scheduled_for NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.until NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.local_time NOT BETWEEN '0001-01-02 00:00' AND '9999-12-30 00:00'
          OR NEW.created_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.updated_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.picked_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.sent_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.lease_expires_at NOT BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
          OR NEW.attempts NOT BETWEEN 0 AND 1000000000 OR NEW.runs NOT BETWEEN 0 AND 1000000000)
    EXECUTE FUNCTION reminderd.refuse_out_of_range();

-- After each statement: the audit trail, the broadcasts' counts, the wake-up for the daemons and
-- the tenants' usage (reminderd.record_inserts()).
CREATE TRIGGER scheduled_messages_record_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.record_inserts();
-- ... and, as the owner, the ids and broadcasts the rows name, the broadcasts' counts and the
-- tenants' usage (reminderd.count_inserts(), migration 0023). Before record_insert (names): a
-- refused statement writes no trail first.
CREATE TRIGGER scheduled_messages_count_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_inserts();
-- A broadcast_id or tenant changed: the broadcast is one of the row's tenant (migration 0023).
CREATE TRIGGER scheduled_messages_broadcast_of_tenant
    BEFORE UPDATE OF broadcast_id, tenant_id ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.broadcast_id IS NOT NULL
          AND (NEW.broadcast_id IS DISTINCT FROM OLD.broadcast_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id))
    EXECUTE FUNCTION reminderd.check_broadcast_of_row();
-- Only a daemon moves a row into picked (reminderd.refuse_pick(), migration 0023): a claim sets
-- picked_at, so the daemon's claims call nothing; neither does a row not written as picked.
CREATE TRIGGER scheduled_messages_picked_by_daemon_insert
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.status = 'picked')
    EXECUTE FUNCTION reminderd.refuse_pick();
CREATE TRIGGER scheduled_messages_picked_by_daemon_update
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.status = 'picked' AND OLD.status <> 'picked' AND NEW.picked_at IS NOT DISTINCT FROM OLD.picked_at)
    EXECUTE FUNCTION reminderd.refuse_pick();
-- After each updated row, as its WHEN clause decides: a statement-level UPDATE trigger with
-- transition tables would make every claim copy its rows twice for nothing. A claim (picked) and
-- an attempt's outcome (last_delivery_id moves: deliveries records it) write no event.
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

-- Triggers on tenants, tenant_holidays and contacts, and the broadcast counts ----------------------
-- A tenant and a tenant's day off are checked with sentences before their constraints are.
CREATE TRIGGER tenants_validate
    BEFORE INSERT OR UPDATE OF id, callback_url, calendar, timezone, signing_secret, previous_signing_secret,
                               earlier_signing_secret
    ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_tenant();
CREATE TRIGGER tenant_holidays_validate
    BEFORE INSERT OR UPDATE OF tenant_id, name ON reminderd.tenant_holidays
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_holiday();
-- A broadcast's callback_url (migration 0019) and its messages' values (0021), as a message's.
CREATE TRIGGER broadcast_requests_validate
    BEFORE INSERT OR UPDATE OF callback_url, category, calendar, holiday_rule, backfill, max_lateness, max_attempts,
                               until, stage_ahead
    ON reminderd.broadcast_requests
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_broadcast_request();
-- A calendar the holidays package does not know (migration 0035): only rows with one pay.
CREATE TRIGGER scheduled_messages_calendar_known_insert
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.calendar IS NOT NULL AND NEW.broadcast_id IS NULL)
    EXECUTE FUNCTION reminderd.check_calendar_known('calendar_known');
CREATE TRIGGER scheduled_messages_calendar_known_update
    BEFORE UPDATE OF calendar ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.calendar IS DISTINCT FROM OLD.calendar AND NEW.calendar IS NOT NULL)
    EXECUTE FUNCTION reminderd.check_calendar_known('calendar_known');
CREATE TRIGGER tenants_calendar_known_insert
    BEFORE INSERT ON reminderd.tenants
    FOR EACH ROW WHEN (NEW.calendar IS NOT NULL)
    EXECUTE FUNCTION reminderd.check_calendar_known('tenant_calendar_known');
CREATE TRIGGER tenants_calendar_known_update
    BEFORE UPDATE OF calendar ON reminderd.tenants
    FOR EACH ROW WHEN (NEW.calendar IS DISTINCT FROM OLD.calendar AND NEW.calendar IS NOT NULL)
    EXECUTE FUNCTION reminderd.check_calendar_known('tenant_calendar_known');
CREATE TRIGGER broadcast_requests_calendar_known_insert
    BEFORE INSERT ON reminderd.broadcast_requests
    FOR EACH ROW WHEN (NEW.calendar IS NOT NULL)
    EXECUTE FUNCTION reminderd.check_calendar_known('broadcast_calendar_known');
CREATE TRIGGER broadcast_requests_calendar_known_update
    BEFORE UPDATE OF calendar ON reminderd.broadcast_requests
    FOR EACH ROW WHEN (NEW.calendar IS DISTINCT FROM OLD.calendar AND NEW.calendar IS NOT NULL)
    EXECUTE FUNCTION reminderd.check_calendar_known('broadcast_calendar_known');
-- An ordinary message taking a broadcast's completion ref (migration 0035): only refs with
-- '#completed' in them pay.
CREATE TRIGGER scheduled_messages_completion_ref_insert
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL AND NEW.ref_id LIKE '%#completed%')
    EXECUTE FUNCTION reminderd.check_completion_ref();
CREATE TRIGGER scheduled_messages_completion_ref_update
    BEFORE UPDATE OF ref_id, tenant_id ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL AND NEW.ref_id LIKE '%#completed%'
                       AND (NEW.ref_id IS DISTINCT FROM OLD.ref_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id))
    EXECUTE FUNCTION reminderd.check_completion_ref();
-- A notify broadcast whose completion ref a live message holds (migration 0036): only broadcasts
-- with notify pay.
CREATE TRIGGER broadcast_requests_completion_ref_free_insert
    BEFORE INSERT ON reminderd.broadcast_requests
    FOR EACH ROW WHEN (NEW.notify)
    EXECUTE FUNCTION reminderd.check_completion_ref_free();
CREATE TRIGGER broadcast_requests_completion_ref_free_update
    BEFORE UPDATE OF notify, ref_prefix, tenant_id ON reminderd.broadcast_requests
    FOR EACH ROW WHEN (NEW.notify AND (NOT OLD.notify OR NEW.ref_prefix IS DISTINCT FROM OLD.ref_prefix
                                       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id))
    EXECUTE FUNCTION reminderd.check_completion_ref_free();
CREATE TRIGGER contacts_resolve
    BEFORE INSERT OR UPDATE OF timezone, phone, country ON reminderd.contacts
    FOR EACH ROW WHEN (current_setting('reminderd.contacts_resolved', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION reminderd.resolve_contact();
-- The zones each statement wrote, however it was written (reminderd.check_contact_zones(), 0033).
CREATE TRIGGER contacts_check_zones_insert
    AFTER INSERT ON reminderd.contacts
    REFERENCING NEW TABLE AS changed_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.check_contact_zones();
CREATE TRIGGER contacts_check_zones_update
    AFTER UPDATE ON reminderd.contacts
    REFERENCING OLD TABLE AS previous_contacts NEW TABLE AS changed_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.check_contact_zones();
CREATE TRIGGER contacts_replan
    AFTER UPDATE ON reminderd.contacts
    REFERENCING OLD TABLE AS previous_contacts NEW TABLE AS changed_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.replan_for_contacts();
CREATE TRIGGER tenants_replan
    AFTER UPDATE ON reminderd.tenants
    REFERENCING OLD TABLE AS previous_tenants NEW TABLE AS changed_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.replan_for_tenants();
-- An audience's member count (migration 0034).
CREATE TRIGGER audience_members_count_insert
    AFTER INSERT ON reminderd.audience_members REFERENCING NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_audience_members();
CREATE TRIGGER audience_members_count_delete
    AFTER DELETE ON reminderd.audience_members REFERENCING OLD TABLE AS old_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_audience_members();
CREATE TRIGGER audience_members_count_update
    AFTER UPDATE ON reminderd.audience_members REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_audience_members();
CREATE TRIGGER audience_members_refuse_truncate
    BEFORE TRUNCATE ON reminderd.audience_members
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.refuse_audience_members_truncate();
-- A contact deleted by any means: its live messages cancelled (migration 0027).
CREATE TRIGGER contacts_cancel_messages
    AFTER DELETE ON reminderd.contacts
    REFERENCING OLD TABLE AS deleted_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.cancel_for_deleted_contacts();
-- TRUNCATE refused (it fires no DELETE trigger), and a contact's id kept (migration 0030).
CREATE TRIGGER contacts_refuse_truncate
    BEFORE TRUNCATE ON reminderd.contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.refuse_contacts_truncate();
CREATE TRIGGER contacts_keep_id
    BEFORE UPDATE OF tenant_id, contact_id ON reminderd.contacts
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id OR OLD.contact_id IS DISTINCT FROM NEW.contact_id)
    EXECUTE FUNCTION reminderd.refuse_contact_id_change();
-- A message kept to its tenant (migration 0039).
CREATE TRIGGER scheduled_messages_keep_tenant
    BEFORE UPDATE OF tenant_id ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION reminderd.refuse_message_tenant_change();
-- A message marked by a replan while it was being sent takes its zone now, as the attempt ends
-- (migration 0027).
CREATE TRIGGER scheduled_messages_rezone_after_attempt
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (OLD.status = 'picked' AND OLD.last_event = 'replanned'
          AND NEW.status IN ('pending', 'paused', 'awaiting_approval')
          AND OLD.contact_id IS NOT NULL AND OLD.timezone_source <> 'message')
    EXECUTE FUNCTION reminderd.rezone_after_attempt();
-- Row-level, like the other UPDATE triggers (0007): rows of no broadcast, rows whose state stays
-- (a claim of a waiting row), and an attempt's outcome (record_outcomes counts it) call nothing.
CREATE TRIGGER scheduled_messages_count_broadcast_update
    AFTER UPDATE ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (NEW.broadcast_id IS NOT NULL AND NEW.contact_id IS NOT NULL
          AND NEW.last_delivery_id IS NOT DISTINCT FROM OLD.last_delivery_id
          AND reminderd.broadcast_state(OLD.status, OLD.last_event)
              IS DISTINCT FROM reminderd.broadcast_state(NEW.status, NEW.last_event))
    EXECUTE FUNCTION reminderd.count_broadcast_update();

-- Triggers on events and deliveries: the dashboard's aggregates and its live feed ------------------
CREATE TRIGGER events_count_fires
    AFTER INSERT ON reminderd.events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_fires();
CREATE TRIGGER deliveries_count_fires
    AFTER INSERT ON reminderd.deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_fires();

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
SELECT d.id, d.created_at, d.message_id, d.tenant_id, d.ref_id, d.webhook_id, d.attempt, d.scheduled_for,
       d.status_code, d.error, d.duration_ms,
       CASE WHEN d.status_code BETWEEN 200 AND 299 THEN 'delivered' ELSE 'failed' END AS outcome
FROM (SELECT * FROM reminderd.deliveries ORDER BY id DESC LIMIT 1000) d
ORDER BY d.id DESC;

-- Everything that happened to each message, as one story: its events, and its attempts, each with
-- the change it made. "Why didn't this reminder fire?":
--   SELECT * FROM reminderd.trail WHERE tenant_id = 'acme' AND ref_id = 'booking:b7d2:1h'
--   ORDER BY at, event_id, delivery_id;
CREATE VIEW reminderd.trail WITH (security_invoker = true) AS
SELECT e.created_at AS at, e.message_id, e.tenant_id, e.ref_id, e.event, e.status, e.fire_at, e.reason,
       e.actor, NULL::integer AS attempt, NULL::text AS webhook_id, NULL::integer AS status_code,
       NULL::text AS error, NULL::integer AS duration_ms, e.id AS event_id, NULL::bigint AS delivery_id,
       e.on_behalf_of
FROM reminderd.events e
UNION ALL
SELECT d.created_at, d.message_id, d.tenant_id, d.ref_id, d.event, d.status, d.fire_at, d.reason,
       d.actor, d.attempt, d.webhook_id, d.status_code, d.error, d.duration_ms, NULL, d.id, NULL
FROM reminderd.deliveries d;
COMMENT ON VIEW reminderd.trail IS
    'Everything that happened to each message: reminderd.events and the attempts of reminderd.deliveries '
    '(attempt set), each attempt with the change it made (event NULL when it made none), and whom an '
    'event was done for (on_behalf_of). ORDER BY at, event_id, delivery_id.';

GRANT SELECT ON reminderd.queue_overview, reminderd.due_now, reminderd.stuck, reminderd.dead_letters,
    reminderd.upcoming_by_hour, reminderd.recent_deliveries, reminderd.trail
    TO reminderd_readonly, reminderd_app, reminderd_daemon;
-- The HTTP API's message history and stats read the trail (the attempts' changes are not in events).
GRANT SELECT ON reminderd.trail TO reminderd_api;

-- Which daemons run, since when, whether they are alive, what they hold and when they last claimed.
-- state: alive, stopping (draining after SIGTERM), or dead (silent beyond its dead_after: a live
-- daemon rescues its rows and deletes it within a poll interval).
CREATE VIEW reminderd.daemon_overview WITH (security_invoker = true) AS
SELECT d.id, d.host, d.pid, d.version, d.started_at, d.heartbeat_at, now() - d.heartbeat_at AS silent_for,
       CASE WHEN d.heartbeat_at < now() - make_interval(secs => CASE
                WHEN jsonb_typeof(d.settings -> 'dead_after') = 'number'
                THEN (d.settings ->> 'dead_after')::float8 ELSE 15 END) THEN 'dead'
            WHEN d.stopping THEN 'stopping'
            ELSE 'alive' END AS state,
       (SELECT count(*) FROM reminderd.scheduled_messages m
        WHERE m.status = 'picked' AND m.picked_by = d.id) AS held,
       d.last_claim_at
FROM reminderd.daemons d;

GRANT SELECT ON reminderd.daemon_overview TO reminderd_readonly, reminderd_daemon, reminderd_api;
-- Each broadcast and its progress: rows staged over all its occurrences, and how many are waiting,
-- held (paused, awaiting approval, deferred by quiet hours or a holiday), sent, failed (dead),
-- expired and cancelled; done once nothing more is to be staged and none is waiting or held.
CREATE VIEW reminderd.broadcasts WITH (security_invoker = true) AS
SELECT b.id, b.tenant_id, b.ref_prefix,
       CASE WHEN b.everyone THEN 'everyone' WHEN b.audience IS NOT NULL THEN 'audience ' || b.audience
            ELSE cardinality(b.contact_ids) || ' contacts' END AS audience,
       b.local_time, b.cron, b.rrule, b.category, b.approval, b.created_by, b.created_at, b.decided_by, b.decided_at,
       coalesce(o.occurrences, 0) AS occurrences,
       coalesce(c.waiting + c.held + c.sent + c.failed + c.expired + c.cancelled, 0) AS staged,
       coalesce(c.waiting, 0) AS waiting, coalesce(c.held, 0) AS held, coalesce(c.sent, 0) AS sent,
       coalesce(c.failed, 0) AS failed, coalesce(c.expired, 0) AS expired, coalesce(c.cancelled, 0) AS cancelled,
       b.ended_at IS NOT NULL AND coalesce(c.waiting, 0) + coalesce(c.held, 0) = 0 AS done,
       b.next_occurrence, b.ended_at, b.ended_reason, b.last_error
FROM reminderd.broadcast_requests b
LEFT JOIN LATERAL (
    SELECT sum(k.waiting) AS waiting, sum(k.held) AS held, sum(k.sent) AS sent, sum(k.failed) AS failed,
           sum(k.expired) AS expired, sum(k.cancelled) AS cancelled
    FROM reminderd.broadcast_counts k
    WHERE k.broadcast_id = b.id AND k.tenant_id = b.tenant_id
) AS c ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS occurrences FROM reminderd.broadcast_occurrences x
    WHERE x.broadcast_id = b.id AND x.tenant_id = b.tenant_id
) AS o ON true;

GRANT SELECT ON reminderd.broadcasts TO reminderd_readonly, reminderd_app, reminderd_daemon, reminderd_api;
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

-- Sending limits in sentences (migration 0029): a value the limits' CHECK constraints or the
-- frequency caps' foreign key refuse, written in plain SQL, is refused naming the value and whose
-- it is, with a HINT, under the constraint's own SQLSTATE and name (docs/sql.md, "Errors and
-- SQLSTATEs"). The constraints stay. The triggers on tenants and endpoints fire only for a bad
-- value (their WHEN), so the claim's writes to endpoints never call them.
CREATE FUNCTION reminderd.validate_tenant_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_per_second < 1 THEN
        RAISE EXCEPTION 'max_per_second % of tenant "%" is less than 1', NEW.max_per_second, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_per_second_positive',
                  HINT = 'Give how many messages it may send in a rolling second, at least 1, or NULL for no limit.';
    END IF;
    IF NEW.max_per_hour < 1 THEN
        RAISE EXCEPTION 'max_per_hour % of tenant "%" is less than 1', NEW.max_per_hour, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_per_hour_positive',
                  HINT = 'Give how many messages it may send in a rolling hour, at least 1, or NULL for no limit.';
    END IF;
    IF NEW.frequency_cap_policy NOT IN ('defer', 'skip') THEN
        RAISE EXCEPTION 'frequency_cap_policy % of tenant "%" is not defer or skip',
                        to_json(NEW.frequency_cap_policy), NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'frequency_cap_policy_is_known',
                  HINT = 'Over a frequency cap a message waits until the cap allows it (defer) or is skipped (skip).';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_validate_limits
    BEFORE INSERT OR UPDATE OF max_per_second, max_per_hour, frequency_cap_policy ON reminderd.tenants
    FOR EACH ROW
    WHEN (NEW.max_per_second < 1 OR NEW.max_per_hour < 1 OR NEW.frequency_cap_policy NOT IN ('defer', 'skip'))
    EXECUTE FUNCTION reminderd.validate_tenant_limits();

CREATE FUNCTION reminderd.validate_endpoint_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_in_flight < 1 THEN
        RAISE EXCEPTION 'max_in_flight % of endpoint "%" is less than 1', NEW.max_in_flight, NEW.endpoint
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_in_flight_positive',
                  HINT = 'Give how many of its callbacks may be in flight at once, all daemons together, at least 1, or NULL for each daemon''s REMINDERD_CONCURRENCY.';
    END IF;
    IF NEW.max_per_second < 1 THEN
        RAISE EXCEPTION 'max_per_second % of endpoint "%" is less than 1', NEW.max_per_second, NEW.endpoint
            USING ERRCODE = 'check_violation', CONSTRAINT = 'endpoint_max_per_second_positive',
                  HINT = 'Give how many callbacks it may get in a rolling second, at least 1, or NULL for no limit.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER endpoints_validate_limits
    BEFORE INSERT OR UPDATE OF max_in_flight, max_per_second ON reminderd.endpoints
    FOR EACH ROW
    WHEN (NEW.max_in_flight < 1 OR NEW.max_per_second < 1)
    EXECUTE FUNCTION reminderd.validate_endpoint_limits();

-- A cap is written by a person, rarely: checked each time (a WHEN cannot ask whether the tenant
-- exists). Looked up as the writer, through its row-level security: a tenant an app role does not
-- act for is as unknown to it as one that does not exist (as the owner it told which ids exist).
CREATE FUNCTION reminderd.validate_frequency_cap() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        IF NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id) THEN
            RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'frequency_caps_tenant_id_fkey',
                      HINT = 'Create the tenant first (reminderd tenant add), then its caps.';
        END IF;
    END IF;
    IF NEW.max_messages < 1 THEN
        RAISE EXCEPTION 'max_messages % of the % frequency cap of tenant "%" is less than 1',
                        NEW.max_messages, NEW.category, NEW.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_messages_positive',
                  HINT = 'Give how many messages of the category one recipient may get in the window, at least 1.';
    END IF;
    IF NEW.per <= interval '0' OR NEW.per > interval '366 days' THEN
        RAISE EXCEPTION 'per % of the % frequency cap of tenant "%" is %', NEW.per, NEW.category, NEW.tenant_id,
                        CASE WHEN NEW.per <= interval '0' THEN 'not more than 0' ELSE 'more than 366 days' END
            USING ERRCODE = 'check_violation', CONSTRAINT = 'per_in_range',
                  HINT = 'Give the rolling window the cap counts in, more than 0 and at most 366 days, like 1 day.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER frequency_caps_validate
    BEFORE INSERT OR UPDATE OF tenant_id, max_messages, per ON reminderd.frequency_caps
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_frequency_cap();

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
    PRIMARY KEY (tenant_id, day),
    CONSTRAINT usage_days_not_negative CHECK (  -- migration 0023
        scheduled >= 0 AND attempted >= 0 AND delivered >= 0 AND dead >= 0 AND expired >= 0 AND held >= 0)
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
    held      integer NOT NULL DEFAULT 0,
    -- Usage only grows (migration 0023).
    CONSTRAINT usage_increments_not_negative CHECK (
        scheduled >= 0 AND attempted >= 0 AND delivered >= 0 AND dead >= 0 AND expired >= 0 AND held >= 0)
);

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
-- Read only (migration 0023): count_inserts writes an application's usage as the owner.
CREATE POLICY app_own_tenants ON reminderd.usage_increments FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));

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
GRANT SELECT ON reminderd.usage_increments TO reminderd_app;  -- count_inserts writes it, as the owner (0023)
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
    reminderd.reserve_contact_sends(reminderd.contact_send_v1[])
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.endpoint_of(text),
    reminderd.add_tenant_budget(),
    reminderd.hold_for_disabled_endpoint()
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
GRANT SELECT ON reminderd.usage_increments TO reminderd_api;  -- count_inserts writes it (0023)
GRANT EXECUTE ON FUNCTION
    reminderd.endpoint_of(text),
    reminderd.add_tenant_budget(),
    reminderd.hold_for_disabled_endpoint()
TO reminderd_api;

-- The holiday calendars (migration 0035): read by every role whose writes check a calendar.
GRANT SELECT ON reminderd.holiday_calendars TO reminderd_app, reminderd_readonly, reminderd_daemon, reminderd_api;
