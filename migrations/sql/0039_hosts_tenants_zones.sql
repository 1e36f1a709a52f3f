-- 0039 callback hosts, a message's tenant, zone names (docs/sql.md, docs/api.md):
--   A-labels    A callback URL whose host has an A-label punycode cannot decode
--               (https://xn--zz.example/hook) was taken; the daemon then failed on every attempt
--               ("internal error while sending: UnicodeError") until it gave up. Now
--               callback_url_problem refuses such a label in SQL (reminderd.punycode_decode) as
--               the CLI and the API do (23514, as every callback URL refusal).
--   ASCII hosts A non-ASCII host (https://bücher.example/hook) was taken by SQL, refused by the
--               CLI and the API only when it did not encode. Now refused everywhere, the HINT
--               giving the IDNA form (https://xn--bcher-kva.example/hook: callback_url_idna_form).
--   tenant      UPDATE reminderd.scheduled_messages SET tenant_id = … moved a message to another
--               tenant (a tenant-scoped role was stopped by the checks or RLS, the owner was not).
--               Now refused by the trigger scheduled_messages_keep_tenant: 0A000, naming the
--               message and both tenants, the HINT saying to create a new message instead.
--   zones       A posix/ copy of a zone (posix/Europe/Paris) given to a message or a tenant was
--               refused (22023, HINT "Use Europe/Paris."). Now stored under its IANA name, with a
--               WARNING saying it was renamed (stored_timezone, called by validate_message,
--               admit_message, validate_tenant and message_timezone). A right/ copy (counting leap
--               seconds) stays refused, now naming the zone to use in its DETAIL and HINT.
-- Rows written before: left as they are (only a new or changed URL or zone is checked); the
-- daemon sends a non-ASCII host that encodes as before, and dead-letters an undecodable one on its
-- first attempt, saying why. No stored zone is a posix/ or right/ copy (refused since 0032).
-- Run by migrations/versions/0039_hosts_tenants_zones.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

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
CREATE OR REPLACE FUNCTION reminderd.callback_url_problem(url text) RETURNS text
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
CREATE OR REPLACE FUNCTION reminderd.check_callback_url(url text, subject text, constraint_name text) RETURNS void
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

-- A message kept to its tenant (migration 0039).
CREATE TRIGGER scheduled_messages_keep_tenant
    BEFORE UPDATE OF tenant_id ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION reminderd.refuse_message_tenant_change();

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

CREATE OR REPLACE FUNCTION reminderd.check_timezone(timezone text, subject text DEFAULT NULL) RETURNS void
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


CREATE OR REPLACE FUNCTION reminderd.validate_message() RETURNS trigger
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


CREATE OR REPLACE FUNCTION reminderd.validate_tenant() RETURNS trigger
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


CREATE OR REPLACE FUNCTION reminderd.message_timezone(tenant_id text, contact_id text, timezone text,
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

REVOKE EXECUTE ON FUNCTION
    reminderd.punycode_bias(bigint, integer, boolean),
    reminderd.punycode_digit(bigint),
    reminderd.punycode_decode(text),
    reminderd.punycode_encode(text),
    reminderd.callback_url_idna_form(text),
    reminderd.refuse_message_tenant_change(),
    reminderd.stored_timezone(text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.punycode_bias(bigint, integer, boolean),
    reminderd.punycode_digit(bigint),
    reminderd.punycode_decode(text),
    reminderd.punycode_encode(text),
    reminderd.callback_url_idna_form(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.refuse_message_tenant_change() TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.stored_timezone(text, text) TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
