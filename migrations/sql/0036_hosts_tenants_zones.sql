-- 0036 callback hosts, a message's tenant, zone names (docs/sql.md, docs/api.md, docs/time.md):
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
-- Rows written before: left as they are (only a new or changed URL is checked); the daemon sends
-- a non-ASCII host that encodes as before, and dead-letters an undecodable one on its first
-- attempt, saying why.
-- Run by migrations/versions/0036_hosts_tenants_zones.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Punycode (RFC 3492), the encoding of an international domain name's labels (IDNA: xn--bcher-kva
-- is bücher): what callback_url_problem checks an A-label with, and check_callback_url's HINT
-- writes a non-ASCII name with (migration 0036). Pure; NULL for what does not decode.
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
-- its IDNA form, each A-label (xn--) one that decodes (0036). The command line, the HTTP API and
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
    IF name ~ '[^\x01-\x7f]' THEN  -- an international name: written in its IDNA form (0036)
        wide := substring(name FROM '[^\x01-\x7f]');
        RETURN format('has host "%s" with "%s" (U+%s), which a host name cannot have: write an international'
                      ' name in its IDNA form (xn--)', host, wide, lpad(upper(to_hex(ascii(wide))), 4, '0'));
    END IF;
    -- Each A-label the punycode of a label that needs it (0036): it decodes, to a name with a
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
-- form is a callback URL; NULL otherwise (migration 0036: check_callback_url's HINT). The command
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
-- international name, its IDNA form (0036).
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

-- A message belongs to its tenant for good (migration 0036): its ref, signing secret, limits and
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

-- A message kept to its tenant (migration 0036).
CREATE TRIGGER scheduled_messages_keep_tenant
    BEFORE UPDATE OF tenant_id ON reminderd.scheduled_messages
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION reminderd.refuse_message_tenant_change();

REVOKE EXECUTE ON FUNCTION
    reminderd.punycode_bias(bigint, integer, boolean),
    reminderd.punycode_digit(bigint),
    reminderd.punycode_decode(text),
    reminderd.punycode_encode(text),
    reminderd.callback_url_idna_form(text),
    reminderd.refuse_message_tenant_change()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    reminderd.punycode_bias(bigint, integer, boolean),
    reminderd.punycode_digit(bigint),
    reminderd.punycode_decode(text),
    reminderd.punycode_encode(text),
    reminderd.callback_url_idna_form(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.refuse_message_tenant_change() TO reminderd_app, reminderd_daemon, reminderd_api;
