-- 0019 callback URLs checked when they are written, as the daemon would read them: a port from 1
-- to 65535, a host that is a name (labels of 1 to 63 characters, 253 at most, no spaces or control
-- characters) or an IP address. Before, a URL such as http://example.com:1234567/cb or
-- http://a b.example/cb was taken, and the claim's INSERT of its endpoint into reminderd.endpoints
-- (CHECK endpoint_format) then failed the whole claim, for every tenant, on every try.
--   reminderd.callback_url_problem(url)  the rule, in the words the CLI and the API use too
--   reminderd.check_callback_url(...)    the refusal: 23514 naming the URL, whose it is and why
--   validate_message, admit_message, validate_tenant  call it for a new or changed URL
--   validate_broadcast_request (trigger broadcast_requests_validate)  and for a broadcast's
--   endpoint_of  NULL for what endpoint_format would refuse, so that a row written before this
--                migration never fails a claim: the daemon refuses it on its first attempt.
-- The CHECK constraints (callback_url_is_http and the tenant's and broadcast's) keep checking the
-- shape only: rows already written keep moving on (their status, attempts); the triggers pre-empt
-- them with the whole rule.
-- Run by migrations/versions/0019_callback_urls.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- host:port of a callback URL, the port written out (80, 443), the host lower-case; NULL for
-- what is not an http(s) URL, and for what reminderd.endpoints would refuse as an endpoint
-- (endpoint_format below: a port of six digits, a space in the host), which only a row written
-- before migration 0019 checked callback URLs can have: the claim passes such a row on to the
-- daemon, which refuses it (reminderd.callback_url_problem's words), instead of failing whole.
CREATE OR REPLACE FUNCTION reminderd.endpoint_of(url text) RETURNS text
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

-- A tenant whose stored endpoint (the generated callback_endpoint) endpoint_of would no longer
-- give, one reminderd.endpoints would refuse: writing its callback_url again computes it again.
-- Before validate_tenant checks URLs, so the tenant's own URL is kept as written.
UPDATE reminderd.tenants SET callback_url = callback_url
WHERE callback_endpoint IS DISTINCT FROM reminderd.endpoint_of(callback_url);

-- What is wrong with `url` as a callback URL, in a few words that follow the URL in a sentence
-- ('has port "1234567": a port is 1 to 65535'); NULL when it is one (and for NULL). Checked in
-- this order: an http(s) URL; no space or control character anywhere (C0, space, DEL, C1 and the
-- Unicode spaces); at most one @ (the user:password part's own is %40); a host; a port from 1 to
-- 65535; and the host an IPv6 address in brackets, an IPv4 address as four numbers (not the other
-- forms inet_aton reads: 127.1, 2130706433, 0x7f.1), or a name: letters, digits, - and _ (or
-- non-ASCII letters) in labels of 1 to 63 characters, 253 at most, a trailing dot allowed. The
-- command line, the HTTP API and the daemon keep the same rule in the same words
-- (reminderd/callback_urls.py); they also check that a non-ASCII name encodes (IDNA), which SQL
-- cannot, and the daemon refuses a row whose URL does not on its first attempt.
CREATE FUNCTION reminderd.callback_url_problem(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    authority text;
    host      text;
    rest      text;
    part      text[];
    name      text;
BEGIN
    IF url IS NULL THEN
        RETURN NULL;
    END IF;
    -- The common case in three quick tests, which pass only what every step below passes: a name of
    -- 63 characters at most (with its port) whose last label starts with a letter (so not an
    -- address), no @, a port from 1 to 65535 without leading zeros, no space or control character.
    IF length(split_part(url, '/', 3)) <= 63
       AND url ~ ('^https?://([A-Za-z0-9_-]+\.)*[A-Za-z_-][A-Za-z0-9_-]*'
                  '(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9][0-9][0-9]|[1-5][0-9][0-9][0-9][0-9]'
                  '|[1-9][0-9]?[0-9]?[0-9]?))?([/?#]|$)')
       AND url !~ '[\x01-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]' THEN
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
    RETURN NULL;
END
$$;

-- Refuse a callback URL that is not one (callback_url_problem), in a sentence naming it and whose
-- it is ('callback_url "http://a b/" of message acme / r1 has a space or a control character'):
-- 23514 check_violation carrying the name of the constraint it stands for (callback_url_is_http,
-- tenant_callback_url_is_http, broadcast_callback_url_is_http: those check the shape only, so that
-- a row written before migration 0019 can still be moved on), with the rule as the HINT.
CREATE FUNCTION reminderd.check_callback_url(url text, subject text, constraint_name text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    problem text := reminderd.callback_url_problem(url);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'callback_url "%" of % %', url, subject, problem
            USING ERRCODE = 'check_violation', CONSTRAINT = constraint_name,
                  HINT = CASE WHEN problem = 'is not an http(s) URL'
                              THEN 'Give an absolute http:// or https:// URL, like https://example.com/hooks.'
                              ELSE 'A callback URL is http(s)://host[:port]/path: a host name (labels of 1 to 63 '
                                   'letters, digits, - or _; at most 253 characters) or an IP address, a port '
                                   'from 1 to 65535, no spaces or control characters.' END;
    END IF;
END
$$;

-- Reject what SQL can check at insert, with a message that names the problem (a callback_url or
-- cron of the wrong shape carries the name of the constraint it pre-empts): a new or changed
-- callback_url that is not one (check_callback_url), a timezone or a cron the daemon could not
-- read (check_timezone, check_cron: every field, and that it fires). An RRULE without DTSTART is
-- anchored at the local midnight of the day it was written, so INTERVAL counts from a fixed day
-- and times default to 00:00 (stored, so a DBA sees it).
CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_has_default boolean;  -- NULL: no such tenant
BEGIN
    IF NEW.timezone NOT IN ('UTC', 'Etc/UTC') THEN  -- UTC needs no check; NULL: the column's NOT NULL says so
        PERFORM reminderd.check_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
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
-- one that already exists, an id or calendar of the wrong shape, a callback_url that is not one
-- (check_callback_url), a default zone the daemon cannot read.
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
        PERFORM reminderd.check_timezone(NEW.timezone, format('tenant "%s"', NEW.id));
    END IF;
    RETURN NEW;
END
$$;

-- Admit a new row (trigger scheduled_messages_admit), deciding in this order: refuse it if it is
-- dead on arrival (a one-off already too late, by check_arrival's rule and in its words; a
-- recurring row whose until is past), hold it for a disabled endpoint (as
-- hold_for_disabled_endpoint), hold it for a paused tenant (as hold_for_paused_tenant), refuse a
-- payload over 256 KiB (as check_payload), validate it (as validate_message). A broadcast's rows
-- are held and checked by stage_broadcast for all its rows at once (one staged late follows its
-- backfill policy when claimed): for them only the endpoint hold and the payload size apply. One
-- function, not one trigger each: every call has a fixed cost. The tenant's row is read once, with
-- whether it has a disabled endpoint; reminderd.config only for a one-off already late.
CREATE OR REPLACE FUNCTION reminderd.admit_message() RETURNS trigger
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
    IF NEW.broadcast_id IS NULL THEN
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
            PERFORM reminderd.check_timezone(NEW.timezone, format('message %s / %s', NEW.tenant_id, NEW.ref_id));
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

-- A broadcast's callback_url is checked as a message's is (check_callback_url), when it is written:
-- its rows, which stage_broadcast writes with it, are not checked one by one.
CREATE FUNCTION reminderd.validate_broadcast_request() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.callback_url IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.callback_url IS DISTINCT FROM OLD.callback_url) THEN
        PERFORM reminderd.check_callback_url(NEW.callback_url,
                                             format('broadcast "%s" of tenant "%s"', NEW.ref_prefix, NEW.tenant_id),
                                             'broadcast_callback_url_is_http');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER broadcast_requests_validate
    BEFORE INSERT OR UPDATE OF callback_url ON reminderd.broadcast_requests
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_broadcast_request();

-- Who may call them (functions get PUBLIC EXECUTE by default): the rule is pure, any role may ask
-- it; the check is what the triggers of every role's writes call.
REVOKE EXECUTE ON FUNCTION
    reminderd.callback_url_problem(text),
    reminderd.check_callback_url(text, text, text),
    reminderd.validate_broadcast_request()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.callback_url_problem(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION
    reminderd.check_callback_url(text, text, text),
    reminderd.validate_broadcast_request()
TO reminderd_app, reminderd_daemon, reminderd_api;
