-- 0009 audiences: contacts and their timezones, audiences, broadcasts (one-off and recurring,
-- with approval and progress), cadences, and a contact's whole picture (issue 14; docs/audiences.md).
-- Run by migrations/versions/0009_audiences.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).
--
-- On a big queue: the new columns of scheduled_messages have constant defaults (no rewrite), but
-- their CHECK constraints read every row once, and the live-reference index is rebuilt with one
-- more status in its predicate (it holds live rows only). Writes wait for both.

-- Tenants: a default timezone (required for tenants that use contacts), a size limit for
-- broadcasts, and the size above which a broadcast waits for a second person's approval.
ALTER TABLE reminderd.tenants
    ADD COLUMN timezone text,
    ADD COLUMN broadcast_limit integer CONSTRAINT broadcast_limit_positive CHECK (broadcast_limit > 0),
    ADD COLUMN approval_threshold integer
        CONSTRAINT approval_threshold_not_negative CHECK (approval_threshold >= 0);

-- Messages: the contact a message is for, where its zone came from, the wall time it was asked
-- for (kept so it can be re-planned when the contact's zone changes), and its broadcast.
ALTER TABLE reminderd.scheduled_messages
    ADD COLUMN contact_id text,
    ADD COLUMN timezone_source text NOT NULL DEFAULT 'message'
        CONSTRAINT timezone_source_is_known CHECK (
            timezone_source IN ('message', 'contact', 'phone', 'country', 'tenant')),
    ADD COLUMN local_time timestamp,
    ADD COLUMN broadcast_id bigint,
    ADD CONSTRAINT zone_from_contact_needs_contact CHECK (timezone_source = 'message' OR contact_id IS NOT NULL);
-- Applications and the API server may update every column of a message but last_delivery_id
-- (migration 0007 grants UPDATE column by column): these four too.
GRANT UPDATE (contact_id, timezone_source, local_time, broadcast_id)
    ON reminderd.scheduled_messages TO reminderd_app, reminderd_api;

ALTER TABLE reminderd.scheduled_messages DROP CONSTRAINT status_is_known;
ALTER TABLE reminderd.scheduled_messages ADD CONSTRAINT status_is_known CHECK (
    status IN ('pending', 'picked', 'sent', 'dead', 'cancelled', 'paused', 'expired', 'finished',
               'awaiting_approval'));
COMMENT ON COLUMN reminderd.scheduled_messages.status IS
    'pending → picked → sent | dead; recurring rows go back to pending until finished '
    '(until passed, max_runs reached, RRULE exhausted); also cancelled, paused, expired (missed), '
    'awaiting_approval (a big broadcast waiting for a second person).';
COMMENT ON COLUMN reminderd.scheduled_messages.timezone_source IS
    'Why the row has its timezone: message (the message named it), or, for a message naming a '
    'contact, contact (its timezone field), phone (its number), country, tenant (the default).';

DROP INDEX reminderd.scheduled_messages_live_ref;
CREATE UNIQUE INDEX scheduled_messages_live_ref ON reminderd.scheduled_messages (tenant_id, ref_id)
    WHERE status IN ('pending', 'picked', 'paused', 'awaiting_approval') AND extra_of IS NULL;
-- A contact's messages (contact_messages, re-planning when its zone changes).
CREATE INDEX scheduled_messages_contact ON reminderd.scheduled_messages (tenant_id, contact_id, id)
    WHERE contact_id IS NOT NULL;
-- A broadcast's rows by status (approval, rejection, cancelling).
CREATE INDEX scheduled_messages_broadcast ON reminderd.scheduled_messages (broadcast_id, status)
    WHERE broadcast_id IS NOT NULL;

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

-- A tenant's contacts. The database resolves each contact's zone from its timezone, phone and
-- country (in that order) into resolved_timezone and timezone_source; NULL means the tenant's.
CREATE TABLE reminderd.contacts (
    tenant_id         text NOT NULL REFERENCES reminderd.tenants (id) ON DELETE CASCADE,
    contact_id        text NOT NULL
                      CONSTRAINT contact_id_format CHECK (contact_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$'),
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
                    CONSTRAINT approval_is_known CHECK (approval IN ('not_needed', 'awaiting', 'approved', 'rejected')),
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
    CONSTRAINT one_audience CHECK (num_nonnulls(audience, contact_ids) + everyone::integer = 1),
    CONSTRAINT one_when CHECK (num_nonnulls(local_time, cron, rrule) = 1)
);
CREATE INDEX broadcast_requests_tenant_prefix ON reminderd.broadcast_requests (tenant_id, ref_prefix);
CREATE INDEX broadcast_requests_recurring ON reminderd.broadcast_requests (id)
    WHERE ended_at IS NULL AND local_time IS NULL;

-- One row per staged occurrence (a one-off broadcast has one).
CREATE TABLE reminderd.broadcast_occurrences (
    broadcast_id          bigint NOT NULL REFERENCES reminderd.broadcast_requests (id) ON DELETE CASCADE,
    occurrence            timestamp NOT NULL,  -- the wall time, read in each contact's zone
    tenant_id             text NOT NULL,
    contacts              integer NOT NULL,
    first_fire_at         timestamptz,
    last_fire_at          timestamptz,
    staged_at             timestamptz NOT NULL DEFAULT now(),
    completed_at          timestamptz,
    completion_message_id bigint,
    PRIMARY KEY (broadcast_id, occurrence)
);
CREATE INDEX broadcast_occurrences_open ON reminderd.broadcast_occurrences (broadcast_id)
    WHERE completed_at IS NULL;

-- Progress, kept without a scan: each statement that changes broadcast rows appends one row per
-- occurrence with how many rows entered and left each state (triggers below); the daemon folds
-- them into one row per occurrence now and then. A state's count is the sum of its column.
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

-- Privileges and row-level security -------------------------------------------------------------

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
CREATE POLICY app_own_tenants ON reminderd.broadcast_counts TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)))
    WITH CHECK (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));

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
    reminderd.broadcast_requests, reminderd.broadcast_occurrences TO reminderd_app, reminderd_daemon;
GRANT SELECT, INSERT ON reminderd.broadcast_counts TO reminderd_app;
GRANT SELECT, INSERT, DELETE ON reminderd.broadcast_counts TO reminderd_daemon;
GRANT SELECT ON reminderd.contacts, reminderd.audiences, reminderd.audience_members, reminderd.broadcast_requests,
    reminderd.broadcast_occurrences, reminderd.broadcast_counts TO reminderd_readonly;

-- Functions: timezones of phones, contacts and messages -----------------------------------------

-- The zone phonenumbers gives a number written "+<code> <number>" (spaces, dashes, dots, slashes
-- and parentheses allowed), or no row: not such a number, not valid, or its place spans several
-- zones. phonenumbers' own algorithm on its own data (reminderd/phones.py builds the tables; a test
-- compares this with the library on thousands of numbers): the calling code; a national prefix
-- written after it is dropped when what is left is still a number; the region among those sharing
-- the code; the number's type there; then, for a fixed-line number (and mobiles where they are
-- tied to a place), the longest known prefix of the whole number, otherwise the calling code's.
-- A set-returning SQL function, so a query inlines it (upsert_contacts resolves thousands at once).
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
    -- repeat an expression); upsert_contacts inlines it for a whole batch.
    SELECT CASE WHEN choice.mask & 1 = 0 THEN NULL
                WHEN choice.mask & 2 <> 0 THEN code.country_timezone
                WHEN choice.mask & 4 <> 0 THEN choice.zone
                WHEN choice.mask & 8 <> 0 THEN
                    CASE WHEN code.geographic_mobile THEN choice.zone ELSE code.country_timezone END
           END
    FROM (SELECT translate(phone, E' \t\n\r\f\v().-/', '') AS written) AS given
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
-- upsert_contacts resolves whole batches itself and says so (reminderd.contacts_resolved).
CREATE FUNCTION reminderd.resolve_contact() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
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

-- Contacts, one or many: a JSON array of {"contact_id", "timezone", "phone", "country",
-- "attributes"} (or one such object). A field left out keeps its value; null clears it;
-- attributes are replaced whole. The whole batch is checked first: one bad element refuses it,
-- named by its position. Returns how many contacts were added or changed.
CREATE FUNCTION reminderd.upsert_contacts(tenant_id text, contacts jsonb) RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    items   jsonb;
    bad     record;
    written integer;
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
        WHEN given.e->>'contact_id' !~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$' THEN
            'has a contact_id with characters other than letters, digits and _ . : @ + - (at most 128, starting with a letter or digit)'
        WHEN jsonb_typeof(given.e->'timezone') NOT IN ('string', 'null') THEN '"timezone" is not a string'
        WHEN jsonb_typeof(given.e->'phone') NOT IN ('string', 'null') THEN '"phone" is not a string'
        WHEN length(given.e->>'phone') > 250 THEN '"phone" is longer than 250 characters'
        WHEN jsonb_typeof(given.e->'country') NOT IN ('string', 'null') THEN '"country" is not a string'
        WHEN given.e->>'country' !~ '^[A-Za-z]{2}$' THEN '"country" is not a two-letter ISO 3166 code'
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
                  DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Each contact: {"contact_id": "cust_8f", "timezone": "Europe/London", "phone": "+447700900123", '
                         '"country": "GB", "attributes": {…}}; every field but contact_id is optional.';
    END IF;
    -- Timezones and countries: each distinct value once.
    SELECT z.value INTO bad
    FROM (SELECT DISTINCT e->>'timezone' AS value FROM jsonb_array_elements(items) AS e
          WHERE e->>'timezone' IS NOT NULL OFFSET 0) AS z  -- OFFSET 0: each distinct zone checked once
    WHERE NOT reminderd.is_timezone(z.value)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown timezone "%" in the batch', bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    SELECT upper(e->>'country') AS value INTO bad
    FROM jsonb_array_elements(items) AS e
    WHERE e->>'country' IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = upper(e->>'country'))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown country "%" in the batch', bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Use an ISO 3166 alpha-2 code such as GB, IN or US (reminderd.countries lists them).';
    END IF;

    -- Resolved here for the whole batch: the row trigger stands aside for this statement.
    PERFORM set_config('reminderd.contacts_resolved', 'on', true);
    WITH latest AS (
        -- A contact given twice: its last element wins.
        SELECT DISTINCT ON (e->>'contact_id') e->>'contact_id' AS contact_id, e
        FROM jsonb_array_elements(items) WITH ORDINALITY AS given (e, n)
        ORDER BY e->>'contact_id', n DESC
    ),
    merged AS (
        SELECT l.contact_id,
               CASE WHEN l.e ? 'timezone' THEN l.e->>'timezone' ELSE c.timezone END AS timezone,
               CASE WHEN l.e ? 'phone' THEN nullif(btrim(l.e->>'phone'), '') ELSE c.phone END AS phone,
               CASE WHEN l.e ? 'country' THEN upper(l.e->>'country') ELSE c.country END AS country,
               CASE WHEN l.e ? 'attributes' THEN coalesce(l.e->'attributes', '{}') ELSE coalesce(c.attributes, '{}') END
                   AS attributes,
               c.contact_id IS NOT NULL AS known,
               c.timezone AS was_timezone, c.phone AS was_phone, c.country AS was_country,
               c.resolved_timezone AS was_resolved, c.timezone_source AS was_source
        FROM latest l
        -- One index lookup per contact given, never a scan of the tenant's contacts.
        LEFT JOIN LATERAL (
            SELECT * FROM reminderd.contacts c
            WHERE c.tenant_id = upsert_contacts.tenant_id AND c.contact_id = l.contact_id
        ) AS c ON true
    ),
    resolved AS (
        SELECT m.contact_id, m.timezone, m.phone, m.country, m.attributes,
               CASE WHEN m.timezone IS NOT NULL THEN m.timezone
                    WHEN same.inputs THEN m.was_resolved
                    ELSE coalesce(by_phone.timezone, by_country.timezone) END AS resolved_timezone,
               CASE WHEN m.timezone IS NOT NULL THEN 'contact'
                    WHEN same.inputs THEN m.was_source
                    WHEN by_phone.timezone IS NOT NULL THEN 'phone'
                    WHEN by_country.timezone IS NOT NULL THEN 'country' END AS timezone_source
        FROM merged m
        CROSS JOIN LATERAL (
            SELECT m.known AND m.timezone IS NOT DISTINCT FROM m.was_timezone
                   AND m.phone IS NOT DISTINCT FROM m.was_phone AND m.country IS NOT DISTINCT FROM m.was_country
                   AS inputs
        ) AS same
        -- The phone is read only when it matters (no own timezone, and what was given changed):
        -- otherwise it is given NULL, which stops at its first step.
        LEFT JOIN LATERAL reminderd.phone_timezone(
            CASE WHEN m.timezone IS NULL AND NOT same.inputs THEN m.phone END) AS by_phone ON true
        LEFT JOIN reminderd.countries by_country ON by_country.country = m.country
    )
    INSERT INTO reminderd.contacts AS c
        (tenant_id, contact_id, timezone, phone, country, attributes, resolved_timezone, timezone_source)
    SELECT upsert_contacts.tenant_id, r.contact_id, r.timezone, r.phone, r.country, r.attributes,
           r.resolved_timezone, r.timezone_source
    FROM resolved r
    ON CONFLICT (tenant_id, contact_id) DO UPDATE
    SET timezone = excluded.timezone, phone = excluded.phone, country = excluded.country,
        attributes = excluded.attributes, resolved_timezone = excluded.resolved_timezone,
        timezone_source = excluded.timezone_source, updated_at = now()
    WHERE (c.timezone, c.phone, c.country, c.attributes)
          IS DISTINCT FROM (excluded.timezone, excluded.phone, excluded.country, excluded.attributes);
    GET DIAGNOSTICS written = ROW_COUNT;
    PERFORM set_config('reminderd.contacts_resolved', 'off', true);
    RETURN written;
END
$$;

-- Contacts removed (and from every audience); their live messages are cancelled first.
CREATE FUNCTION reminderd.delete_contacts(tenant_id text, contact_ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    deleted integer;
BEGIN
    PERFORM reminderd.check_tenant(delete_contacts.tenant_id);
    UPDATE reminderd.scheduled_messages
    SET status = 'cancelled', last_event = 'cancelled', last_error = 'contact ' || contact_id || ' deleted',
        lease_expires_at = NULL, updated_at = now()
    WHERE tenant_id = delete_contacts.tenant_id AND contact_id = ANY (delete_contacts.contact_ids)
      AND status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    DELETE FROM reminderd.contacts
    WHERE tenant_id = delete_contacts.tenant_id AND contact_id = ANY (delete_contacts.contact_ids);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

-- The zone of a message: the one it names (source 'message'), or its contact's (contact, phone,
-- country) or its tenant's default (tenant); UTC for a message naming neither.
CREATE FUNCTION reminderd.message_timezone(tenant_id text, contact_id text, timezone text,
                                           OUT zone text, OUT source text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF message_timezone.contact_id IS NULL THEN
        zone := coalesce(message_timezone.timezone, 'UTC');
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
        zone := message_timezone.timezone;
        source := 'message';
    ELSIF zone IS NULL THEN
        RAISE EXCEPTION 'contact "%" of tenant "%" has no timezone: none of its own, no phone or country that gives one, and the tenant has no default',
            message_timezone.contact_id, message_timezone.tenant_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set the tenant''s default (reminderd tenant set TENANT --timezone Europe/London), or the contact''s timezone.';
    END IF;
END
$$;

-- When a contact's zone changes, its live messages that take their zone from it are re-planned
-- in the same statement: a wall time (local_time) is placed again in the new zone, a recurring
-- row is planned again by the daemon from now (fire_at NULL), an instant keeps its fire_at (its
-- quiet hours and holidays are read in the new zone). Rows being sent right now keep theirs.
-- Only the source changing (the same zone, now from the contact's own field) is recorded quietly.
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
            USING ERRCODE = 'invalid_parameter_value',
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
    SET timezone = moved.zone,
        timezone_source = moved.source,
        fire_at = CASE WHEN m.timezone = moved.zone THEN m.fire_at
                       WHEN m.local_time IS NOT NULL THEN reminderd.local_instant(m.local_time, moved.zone)
                       WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL
                       ELSE m.fire_at END,
        scheduled_for = CASE WHEN m.timezone <> moved.zone AND (m.local_time IS NOT NULL OR m.cron IS NOT NULL
                                                                 OR m.rrule IS NOT NULL)
                             THEN NULL ELSE m.scheduled_for END,
        attempts = CASE WHEN m.timezone <> moved.zone AND (m.local_time IS NOT NULL OR m.cron IS NOT NULL
                                                           OR m.rrule IS NOT NULL)
                        THEN 0 ELSE m.attempts END,
        last_event = CASE WHEN m.timezone <> moved.zone THEN 'replanned' ELSE m.last_event END,
        last_error = CASE WHEN m.timezone <> moved.zone
                          THEN format('contact %s: timezone %s (%s) -> %s (%s)', m.contact_id, m.timezone,
                                      m.timezone_source, moved.zone, moved.source)
                          ELSE m.last_error END,
        updated_at = CASE WHEN m.timezone <> moved.zone THEN now() ELSE m.updated_at END
    FROM moved
    WHERE m.tenant_id = moved.tenant_id AND m.contact_id = moved.contact_id
      AND m.timezone_source <> 'message'
      AND m.status IN ('pending', 'paused', 'awaiting_approval');
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
    SET timezone = n.timezone,
        fire_at = CASE WHEN m.local_time IS NOT NULL THEN reminderd.local_instant(m.local_time, n.timezone)
                       WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL
                       ELSE m.fire_at END,
        scheduled_for = CASE WHEN m.local_time IS NOT NULL OR m.cron IS NOT NULL OR m.rrule IS NOT NULL
                             THEN NULL ELSE m.scheduled_for END,
        attempts = CASE WHEN m.local_time IS NOT NULL OR m.cron IS NOT NULL OR m.rrule IS NOT NULL
                        THEN 0 ELSE m.attempts END,
        last_event = 'replanned',
        last_error = format('tenant %s: timezone %s -> %s (tenant)', n.id, m.timezone, n.timezone),
        updated_at = now()
    FROM changed_tenants n
    WHERE m.tenant_id = n.id AND m.timezone_source = 'tenant' AND m.timezone IS DISTINCT FROM n.timezone
      AND m.status IN ('pending', 'paused', 'awaiting_approval');
    RETURN NULL;
END
$$;

-- A tenant is checked with sentences before its constraints are (0005), and now its default zone
-- too: one the daemon reads (check_timezone: "europe/london" is refused, with the right spelling).
CREATE OR REPLACE FUNCTION reminderd.validate_tenant() RETURNS trigger
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
    IF NEW.timezone IS NOT NULL THEN
        PERFORM reminderd.check_timezone(NEW.timezone, format('tenant "%s"', NEW.id));
    END IF;
    RETURN NEW;
END
$$;

-- Functions: scheduling for a contact -------------------------------------------------------------
-- schedule, schedule_recurring, schedule_cron and schedule_rrule take contact_id (last): the
-- message's zone is then its contact's, unless it names one (docs/audiences.md). A one-off's wall
-- time is kept in local_time so it can be placed again when that zone changes. schedule_recurring
-- keeps day one's rules (0005): the zone and cron checked, a first occurrence before until, and
-- the first fire_at given or computed in SQL, now in the contact's zone.

DROP FUNCTION reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                                 text, text, text, interval);
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
    due := coalesce(schedule.fire_at, now() + schedule.fire_in, reminderd.local_instant(schedule.local_time, zone));
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

DROP FUNCTION reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                           text, text, text, interval, integer, timestamptz);
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

DROP FUNCTION reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                                      text, interval, integer);
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

DROP FUNCTION reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                                       text, interval, integer);
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

-- Live rows now include those awaiting approval: cancelling and requeueing see them too; the audit
-- trail says why a row was created as it was (its contact's zone and where it came from).
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
      AND status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

CREATE OR REPLACE FUNCTION reminderd.cancel_matching(tenant_id text, ref_pattern text) RETURNS integer
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

CREATE OR REPLACE FUNCTION reminderd.requeue(message_id bigint) RETURNS integer
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
                        AND live.status IN ('pending', 'picked', 'paused', 'awaiting_approval'));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;

CREATE OR REPLACE FUNCTION reminderd.audit_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, fire_at, reason, actor)
    SELECT n.id, n.tenant_id, n.ref_id, coalesce(n.last_event, 'created'), n.status, n.fire_at,
           CASE WHEN n.status = 'paused' THEN 'tenant is paused'
                WHEN n.status = 'awaiting_approval' THEN format('broadcast %s awaits approval', n.broadcast_id)
                WHEN n.contact_id IS NOT NULL
                    THEN format('contact %s: timezone %s (%s)', n.contact_id, n.timezone, n.timezone_source) END,
           current_user
    FROM changed_rows n;
    RETURN NULL;
END
$$;

-- The HTTP API's functions (0006) see the new live status too: an item replacing a message
-- awaiting approval says 'replaced', and one can be cancelled by id. An extra occurrence sent now
-- is its contact's message like the schedule it comes from (contact_messages, re-planning, the
-- callback body). A broadcast's message awaiting approval is not sent now: it waits for approval.
CREATE OR REPLACE FUNCTION reminderd.schedule_item(tenant_id text, one reminderd.schedule_item_v1,
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

CREATE OR REPLACE FUNCTION reminderd.cancel_message(tenant_id text, message_id bigint) RETURNS integer
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

CREATE OR REPLACE FUNCTION reminderd.send_now(tenant_id text, ref_id text) RETURNS bigint
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

-- Who is acting: the database role, or, for the daemon role (the CLI and the API server connect as
-- it), the person it names. An application role always acts as itself, so it cannot approve its
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
    IF NOT pg_has_role(current_user, 'reminderd_daemon', 'MEMBER') THEN
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
    IF broadcast.audience IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM reminderd.audiences a WHERE a.tenant_id = broadcast.tenant_id AND a.name = broadcast.audience
    ) THEN
        RAISE EXCEPTION 'unknown audience "%" of tenant "%"', broadcast.audience, broadcast.tenant_id
            USING ERRCODE = 'no_data_found', HINT = 'Create it by adding contacts: reminderd.add_to_audience(tenant, name, contact_ids).';
    END IF;
    who := reminderd.acting_as(broadcast.actor);
    SELECT * INTO tenant FROM reminderd.tenants t WHERE t.id = broadcast.tenant_id;
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
    SELECT coalesce(sum((z->>'contacts')::bigint), 0),
           coalesce(sum((z->>'contacts')::bigint) FILTER (WHERE z->>'timezone' IS NULL), 0), count(*)
    INTO contacts, zoneless, zones
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
    IF tenant.broadcast_limit IS NOT NULL AND contacts > tenant.broadcast_limit THEN
        RAISE EXCEPTION 'broadcast "%" would send to % contacts; tenant "%" allows at most % in one broadcast',
            broadcast.ref_prefix, reminderd.thousands(contacts), broadcast.tenant_id,
            reminderd.thousands(tenant.broadcast_limit)
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('%s contacts over %s zones.', reminderd.thousands(contacts), zones),
                  HINT = 'Split the audience, or raise the limit: reminderd tenant set TENANT --broadcast-limit N.';
    END IF;
    IF broadcast.local_time IS NULL THEN
        per_hour := reminderd.fires_per_hour(broadcast.cron, anchored);
        IF per_hour > 1 THEN
            RAISE EXCEPTION '% fires up to % times an hour: each occurrence would send to % contacts, % messages an hour',
                coalesce('cron ' || quote_literal(broadcast.cron), 'the rrule'), per_hour, reminderd.thousands(contacts),
                reminderd.thousands(per_hour * contacts)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A recurring broadcast fires at most once an hour.';
        END IF;
    ELSE
        -- Every zone's instant of the wall time: none in the past, none beyond the horizon.
        SELECT count(*) AS zones, sum(z.contacts)::bigint AS contacts,
               string_agg(format('%s: %s contacts at %s', z.timezone, reminderd.thousands(z.contacts),
                                 to_char(z.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')), '; '
                          ORDER BY z.fire_at) AS detail
        INTO late
        FROM (SELECT e->>'timezone' AS timezone, (e->>'contacts')::bigint AS contacts,
                     reminderd.local_instant(broadcast.local_time, e->>'timezone') AS fire_at
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
                     reminderd.local_instant(broadcast.local_time, e->>'timezone') AS fire_at
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
            coalesce(CASE WHEN contacts > tenant.approval_threshold THEN 'awaiting' END, 'not_needed'), who)
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
-- contact at `occurrence` read in the contact's zone, in one statement. A recurring occurrence
-- that cannot be staged (the audience is empty or over the limit, contacts without a zone) is
-- passed over with the reason in last_error. Returns the rows staged.
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
BEGIN
    SELECT * INTO request FROM reminderd.broadcast_requests r WHERE r.id = stage_broadcast.broadcast_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no broadcast with id %', stage_broadcast.broadcast_id USING ERRCODE = 'no_data_found';
    END IF;
    recurring := request.local_time IS NULL;
    SELECT * INTO tenant FROM reminderd.tenants t WHERE t.id = request.tenant_id;
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
    IF recurring THEN
        SELECT count(*), count(*) FILTER (WHERE a.timezone IS NULL) INTO contacts, zoneless
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a;
        problem := CASE WHEN contacts = 0 THEN 'the audience is empty'
                        WHEN zoneless > 0 THEN format('%s contacts have no timezone and the tenant has no default',
                                                      reminderd.thousands(zoneless))
                        WHEN contacts > tenant.broadcast_limit THEN format('%s contacts, over the tenant''s limit of %s',
                            reminderd.thousands(contacts), reminderd.thousands(tenant.broadcast_limit)) END;
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
    WITH audience AS MATERIALIZED (
        SELECT a.contact_id, a.timezone, a.timezone_source
        FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids, request.everyone) AS a
        WHERE a.timezone IS NOT NULL
    ),
    zones AS MATERIALIZED (  -- each zone's instant computed once, not once per contact
        SELECT z.timezone, reminderd.local_instant(stage_broadcast.occurrence, z.timezone) AS fire_at
        FROM (SELECT DISTINCT timezone FROM audience) AS z
    ),
    inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, contact_id, timezone_source, local_time, broadcast_id, status,
             paused_by)
        SELECT request.tenant_id,
               request.ref_prefix || ':' || a.contact_id
                   || CASE WHEN recurring THEN '#' || to_char(stage_broadcast.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END,
               z.fire_at, request.payload, request.callback_url, request.max_attempts, a.timezone, request.category,
               request.calendar, request.holiday_rule, request.backfill, request.max_lateness, a.contact_id,
               a.timezone_source, stage_broadcast.occurrence, request.id,
               coalesce(CASE WHEN request.approval = 'awaiting' THEN 'awaiting_approval'
                             WHEN tenant.paused THEN 'paused' END, 'pending'),
               CASE WHEN tenant.paused AND request.approval <> 'awaiting' THEN 'tenant' END
        FROM audience a
        JOIN zones z ON z.timezone = a.timezone
        RETURNING fire_at
    )
    SELECT count(*), min(fire_at), max(fire_at) INTO staged, first_at, last_at FROM inserted;
    INSERT INTO reminderd.broadcast_occurrences
        (broadcast_id, occurrence, tenant_id, contacts, first_fire_at, last_fire_at)
    VALUES (request.id, stage_broadcast.occurrence, request.tenant_id, staged, first_at, last_at);
    UPDATE reminderd.broadcast_requests r
    SET next_occurrence = CASE WHEN recurring THEN stage_broadcast.following END,
        ended_at = CASE WHEN NOT recurring OR stage_broadcast.following IS NULL THEN now() END,
        ended_reason = CASE WHEN NOT recurring THEN 'staged'
                            WHEN stage_broadcast.following IS NULL THEN 'no more occurrences' END,
        last_error = NULL,
        updated_at = now()
    WHERE r.id = request.id;
    RETURN staged;
END
$$;

-- What a broadcast at local_time would send, without staging anything (the CLI's --dry-run): per
-- zone, its instant and how many contacts, by where their zone came from.
CREATE FUNCTION reminderd.broadcast_preview(
    tenant_id text, local_time timestamp, audience text DEFAULT NULL, contact_ids text[] DEFAULT NULL,
    everyone boolean DEFAULT false
) RETURNS TABLE (timezone text, fire_at timestamptz, contacts bigint, from_contact bigint, from_phone bigint,
                 from_country bigint, from_tenant bigint)
LANGUAGE sql STABLE AS $$
    SELECT a.timezone, reminderd.local_instant(broadcast_preview.local_time, a.timezone), count(*),
           count(*) FILTER (WHERE a.timezone_source = 'contact'), count(*) FILTER (WHERE a.timezone_source = 'phone'),
           count(*) FILTER (WHERE a.timezone_source = 'country'), count(*) FILTER (WHERE a.timezone_source = 'tenant')
    FROM reminderd.audience_contacts(broadcast_preview.tenant_id, broadcast_preview.audience,
                                     broadcast_preview.contact_ids, coalesce(broadcast_preview.everyone, false)) AS a
    GROUP BY a.timezone
    ORDER BY 2 NULLS FIRST, 1
$$;

-- A broadcast waiting for approval goes ahead once a different person approves it; its rows
-- become pending (those whose time has passed meanwhile follow their backfill policy).
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
    IF request.approval = 'approved' THEN
        RETURN 0;
    ELSIF request.approval = 'not_needed' THEN
        RAISE EXCEPTION 'broadcast % needs no approval', request.id USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF request.approval = 'rejected' THEN
        RAISE EXCEPTION 'broadcast % was rejected by % at %', request.id, request.decided_by, request.decided_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF who = request.created_by THEN
        RAISE EXCEPTION 'broadcast % was created by %: another person must approve it', request.id, who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'High volumes need a second person: ask someone else to approve it.';
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'approved', decided_by = who, decided_at = now(), decision_note = approve_broadcast.note,
        updated_at = now()
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', last_event = 'approved',
        last_error = format('broadcast %s approved by %s', request.id, who)
                     || coalesce(': ' || approve_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.status = 'awaiting_approval';
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$$;

-- Rejected: every row of the broadcast is cancelled, and a recurring one stages no more.
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
        RETURN 0;
    ELSIF request.approval <> 'awaiting' THEN
        RAISE EXCEPTION 'broadcast % is not waiting for approval (it is %)', request.id,
            replace(request.approval, '_', ' ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'To stop it, cancel it: reminderd.cancel_broadcast(tenant, id).';
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'rejected', decided_by = who, decided_at = now(), decision_note = reject_broadcast.note,
        ended_at = coalesce(r.ended_at, now()), ended_reason = format('rejected by %s', who), updated_at = now()
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'rejected', lease_expires_at = NULL,
        last_error = format('broadcast %s rejected by %s', request.id, who) || coalesce(': ' || reject_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;

-- Stop a broadcast: its live rows are cancelled, and a recurring one stages no more.
CREATE FUNCTION reminderd.cancel_broadcast(tenant_id text, broadcast_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cancelled integer;
BEGIN
    PERFORM reminderd.check_tenant(cancel_broadcast.tenant_id);
    UPDATE reminderd.broadcast_requests r
    SET ended_at = coalesce(r.ended_at, now()), ended_reason = coalesce(r.ended_reason, 'cancelled'),
        next_occurrence = NULL, updated_at = now()
    WHERE r.id = cancel_broadcast.broadcast_id AND r.tenant_id = cancel_broadcast.tenant_id;
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

-- One row per occurrence a statement staged, with how many rows are in each state.
CREATE FUNCTION reminderd.count_broadcast_inserts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
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
    RETURN NULL;
END
$$;

-- One row per broadcast row an update moved between states: +1 where it went, -1 where it left
-- (the daemon folds them). Row-level, called only as the trigger's WHEN clause decides: a
-- statement-level UPDATE trigger with transition tables would make every claim copy its rows
-- twice (migration 0007). An attempt's outcome (last_delivery_id moves) is counted by
-- record_outcomes itself, once per batch (queries.sql), as its deliveries row records its change.
CREATE FUNCTION reminderd.count_broadcast_update() RETURNS trigger
LANGUAGE plpgsql AS $$
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
-- for those whose broadcast asked for one (a message like any other: signed, retried, audited).
-- One caller at a time. Returns the occurrences completed.
CREATE FUNCTION reminderd.complete_broadcasts(batch integer DEFAULT 100, fold_above integer DEFAULT 20)
RETURNS TABLE (broadcast_id bigint, tenant_id text, occurrence timestamp, message_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    folded record;
    done   record;
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
        SELECT o.broadcast_id, o.occurrence, o.tenant_id, o.contacts, r.ref_prefix, r.notify, r.callback_url,
               r.local_time IS NULL AS recurring, totals.*
        FROM reminderd.broadcast_occurrences o
        JOIN reminderd.broadcast_requests r ON r.id = o.broadcast_id
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(k.waiting), 0) AS waiting, coalesce(sum(k.held), 0) AS held,
                   coalesce(sum(k.sent), 0) AS sent, coalesce(sum(k.failed), 0) AS failed,
                   coalesce(sum(k.expired), 0) AS expired, coalesce(sum(k.cancelled), 0) AS cancelled
            FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = o.broadcast_id AND k.occurrence = o.occurrence
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
        IF done.notify THEN
            INSERT INTO reminderd.scheduled_messages
                (tenant_id, ref_id, fire_at, payload, callback_url, broadcast_id, category)
            VALUES (done.tenant_id,
                    done.ref_prefix || '#completed'
                        || CASE WHEN done.recurring THEN '#' || to_char(done.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END,
                    now(),
                    jsonb_build_object(
                        'event', 'broadcast.completed', 'broadcast_id', done.broadcast_id,
                        'ref_prefix', done.ref_prefix,
                        'occurrence', to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'),
                        'counts', jsonb_build_object(
                            'staged', done.sent + done.failed + done.expired + done.cancelled,
                            'sent', done.sent, 'failed', done.failed, 'expired', done.expired,
                            'cancelled', done.cancelled)),
                    done.callback_url, done.broadcast_id, 'transactional')
            RETURNING id INTO message_id;
        END IF;
        UPDATE reminderd.broadcast_occurrences o
        SET completed_at = now(), completion_message_id = message_id
        WHERE o.broadcast_id = done.broadcast_id AND o.occurrence = done.occurrence;
        RETURN NEXT;
    END LOOP;
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
-- on, cancellable together with cancel_matching(tenant, 'prefix:%'). An offset already past is
-- skipped and says so; the rest are scheduled as reminderd.schedule would (same call again:
-- the same messages).
CREATE FUNCTION reminderd.schedule_cadence(
    tenant_id text, ref_prefix text, anchor timestamptz,
    offsets interval[] DEFAULT '{-30 days,-7 days,-1 day}', at_local time DEFAULT NULL,
    contact_id text DEFAULT NULL, payload jsonb DEFAULT '{}', timezone text DEFAULT NULL,
    callback_url text DEFAULT NULL, category text DEFAULT 'transactional', calendar text DEFAULT NULL,
    holiday_rule text DEFAULT NULL, backfill text DEFAULT NULL, max_lateness interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS TABLE (ref_id text, message_id bigint, fire_at timestamptz, local_time timestamp, skipped text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    zone text;
    step interval;
    wall timestamp;
BEGIN
    PERFORM reminderd.check_tenant(schedule_cadence.tenant_id);
    IF coalesce(schedule_cadence.ref_prefix, '') = '' OR schedule_cadence.anchor IS NULL
       OR coalesce(cardinality(schedule_cadence.offsets), 0) = 0 THEN
        RAISE EXCEPTION 'a cadence needs a ref_prefix, an anchor and at least one offset'
            USING ERRCODE = 'null_value_not_allowed';
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
        IF fire_at <= now() THEN
            message_id := NULL;
            skipped := 'in the past';
        ELSE
            message_id := reminderd.schedule(
                schedule_cadence.tenant_id, ref_id, payload => schedule_cadence.payload,
                callback_url => schedule_cadence.callback_url, max_attempts => schedule_cadence.max_attempts,
                local_time => wall, timezone => schedule_cadence.timezone, category => schedule_cadence.category,
                calendar => schedule_cadence.calendar, holiday_rule => schedule_cadence.holiday_rule,
                backfill => schedule_cadence.backfill, max_lateness => schedule_cadence.max_lateness,
                contact_id => schedule_cadence.contact_id);
            skipped := NULL;
        END IF;
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

-- Views -------------------------------------------------------------------------------------------

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
    WHERE k.broadcast_id = b.id
) AS c ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS occurrences FROM reminderd.broadcast_occurrences x WHERE x.broadcast_id = b.id
) AS o ON true;

GRANT SELECT ON reminderd.broadcasts TO reminderd_readonly, reminderd_app, reminderd_daemon;

-- Triggers ----------------------------------------------------------------------------------------

CREATE TRIGGER contacts_resolve
    BEFORE INSERT OR UPDATE OF timezone, phone, country ON reminderd.contacts
    FOR EACH ROW WHEN (current_setting('reminderd.contacts_resolved', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION reminderd.resolve_contact();
CREATE TRIGGER contacts_replan
    AFTER UPDATE ON reminderd.contacts
    REFERENCING OLD TABLE AS previous_contacts NEW TABLE AS changed_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.replan_for_contacts();
DROP TRIGGER tenants_validate ON reminderd.tenants;
CREATE TRIGGER tenants_validate
    BEFORE INSERT OR UPDATE OF id, callback_url, calendar, timezone ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_tenant();
CREATE TRIGGER tenants_replan
    AFTER UPDATE ON reminderd.tenants
    REFERENCING OLD TABLE AS previous_tenants NEW TABLE AS changed_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.replan_for_tenants();
CREATE TRIGGER scheduled_messages_count_broadcast_insert
    AFTER INSERT ON reminderd.scheduled_messages
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_broadcast_inserts();
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

-- A broadcast's rows (240,000 in one statement) are held for a paused tenant and checked by
-- stage_broadcast once for all of them (their zones come from checked contacts and the tenant's
-- checked default); the row triggers stand aside for them. The arrival check (0005) too:
-- broadcast() refuses a wave with a send in the past, and a recurring wave staged late (no daemon
-- ran at its first zones' instants) follows each row's backfill policy when it is claimed, as
-- any message whose time passed in an outage does, instead of failing the whole staging.
DROP TRIGGER scheduled_messages_hold_paused_tenant ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_hold_paused_tenant
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL) EXECUTE FUNCTION reminderd.hold_for_paused_tenant();
DROP TRIGGER scheduled_messages_validate ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_validate
    BEFORE INSERT OR UPDATE OF timezone, callback_url, tenant_id, rrule, cron ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL) EXECUTE FUNCTION reminderd.validate_message();
DROP TRIGGER scheduled_messages_arrival ON reminderd.scheduled_messages;
CREATE TRIGGER scheduled_messages_arrival
    BEFORE INSERT ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (NEW.broadcast_id IS NULL AND (NEW.fire_at <= now() OR NEW.until <= now()))
    EXECUTE FUNCTION reminderd.refuse_dead_on_arrival();

-- Who may call what ---------------------------------------------------------------------------------
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA reminderd FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.national_number(text, text[], text, integer, text, text, integer[], integer[]),
    reminderd.phone_timezone(text),
    reminderd.resolve_contact(),
    reminderd.upsert_contacts(text, jsonb),
    reminderd.delete_contacts(text, text[]),
    reminderd.message_timezone(text, text, text),
    reminderd.replan_for_contacts(),
    reminderd.replan_for_tenants(),
    reminderd.validate_tenant(),
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval, text),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz, text),
    reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                            text, interval, integer, text),
    reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                             text, interval, integer, text),
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
    reminderd.approve_broadcast(text, bigint, text, text),
    reminderd.reject_broadcast(text, bigint, text, text),
    reminderd.cancel_broadcast(text, bigint),
    reminderd.broadcast_state(text, text),
    reminderd.count_broadcast_inserts(),
    reminderd.count_broadcast_update(),
    reminderd.offset_label(interval),
    reminderd.schedule_cadence(text, text, timestamptz, interval[], time, text, jsonb, text, text, text, text,
                               text, text, interval, integer),
    reminderd.contact_messages(text, text, interval, integer)
TO reminderd_app, reminderd_daemon;
GRANT EXECUTE ON FUNCTION reminderd.complete_broadcasts(integer, integer) TO reminderd_daemon;

-- reminderd serve (0006) schedules through the same functions, so it may call their new
-- signatures and what they call; every insert or change of a message runs the progress counts'
-- triggers, which write broadcast_counts (an API call may cancel a broadcast's message).
GRANT EXECUTE ON FUNCTION
    reminderd.message_timezone(text, text, text),
    reminderd.schedule(text, text, timestamptz, jsonb, text, interval, integer, timestamp, text, text,
                       text, text, text, interval, text),
    reminderd.schedule_recurring(text, text, text, text, text, jsonb, text, timestamptz, integer, text,
                                 text, text, text, interval, integer, timestamptz, text),
    reminderd.schedule_cron(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                            text, interval, integer, text),
    reminderd.schedule_rrule(text, text, text, text, jsonb, text, timestamptz, integer, text, text, text,
                             text, interval, integer, text),
    reminderd.broadcast_state(text, text),
    reminderd.count_broadcast_inserts(),
    reminderd.count_broadcast_update(),
    reminderd.replan_for_tenants()
TO reminderd_api;
GRANT SELECT, INSERT ON reminderd.broadcast_counts TO reminderd_api;
CREATE POLICY api_all ON reminderd.broadcast_counts TO reminderd_api USING (true) WITH CHECK (true);
-- The tenant settings statement (queries.sql set_tenant, PATCH /v1/tenant) names the new columns.
GRANT SELECT (timezone, broadcast_limit, approval_threshold), UPDATE (timezone, broadcast_limit, approval_threshold)
    ON reminderd.tenants TO reminderd_api;
