-- 0016 contacts imported at speed: reminderd.upsert_contact_rows() takes a batch as one typed array
-- (reminderd.contact_v1[], what `reminderd contacts import` sends: no JSON to build, parse and
-- pick apart per contact), resolves each distinct phone that needs it once, adds new contacts
-- with a plain INSERT, changes the others through ON CONFLICT and leaves unchanged ones alone.
-- reminderd.upsert_contacts(tenant, jsonb) checks its JSON's shape, then shares that path.
-- phone_timezone() strips a number's separators once; the contact id's check is cheaper.
-- Run by migrations/versions/0016_fast_import.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- A contact id's rule, the same, written as PostgreSQL's regular expressions check it fast: "{0,127}"
-- made each check cost 2.4 us (an automaton of 128 states), "*" and a length 0.3 us.
ALTER TABLE reminderd.contacts DROP CONSTRAINT contact_id_format,
    ADD CONSTRAINT contact_id_format CHECK (contact_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$'
                                            AND length(contact_id) <= 128);

-- reminderd.phone_timezone() as 0009 made it, but the number without its separators is worked
-- out once per number, not once per use of it (a quarter of the function's time; the same
-- answers, tests/integration/test_phone_zones.py).
CREATE OR REPLACE FUNCTION reminderd.phone_timezone(phone text) RETURNS TABLE (timezone text)
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
    FROM (SELECT translate(phone, E' \t\n\r\f\v().-/', '') AS written OFFSET 0) AS given
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
BEGIN
    PERFORM reminderd.check_tenant(upsert_contact_rows.tenant_id);
    -- Timezones and countries: each distinct value once.
    SELECT z.value INTO bad
    FROM (SELECT DISTINCT c.timezone AS value FROM unnest(upsert_contact_rows.contacts) AS c
          WHERE c.timezone IS NOT NULL OFFSET 0) AS z  -- OFFSET 0: each distinct zone checked once
    WHERE NOT reminderd.is_timezone(z.value)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown timezone "%" in the batch', bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Use an IANA name such as Europe/London or Asia/Kolkata.';
    END IF;
    SELECT k.value INTO bad
    FROM (SELECT DISTINCT upper(c.country) AS value FROM unnest(upsert_contact_rows.contacts) AS c
          WHERE c.country IS NOT NULL) AS k
    WHERE k.value ~ '^[A-Z]{2}$'  -- not two letters: the table's constraint, its element named below
      AND NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = k.value)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown country "%" in the batch', bad.value
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Nothing in this batch was changed.',
                  HINT = 'Use an ISO 3166 alpha-2 code such as GB, IN or US (reminderd.countries lists them).';
    END IF;

    -- The element rules (contact_id, phone, country, attributes) are the table's constraints: a
    -- batch that breaks one is looked at again only then, to name its first bad element
    -- (checking each element first cost as much as the regular expression twice).
    -- Contacts not there when looked up are added with a plain INSERT (ON CONFLICT's speculative
    -- insertion cost 2-3 us a row more); one added meanwhile by another transaction makes the
    -- batch go again, carefully: every contact through ON CONFLICT.
    LOOP
    BEGIN
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
    WHEN check_violation OR not_null_violation THEN
        SELECT given.n, given.contact_id, given.why INTO bad
        FROM (SELECT c.ordinality AS n, c.contact_id, CASE
                  WHEN c.contact_id IS NULL THEN 'has no "contact_id" string'
                  WHEN c.contact_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$' THEN
                      'has a contact_id with characters other than letters, digits and _ . : @ + - (at most 128, starting with a letter or digit)'
                  WHEN length(c.phone) > 250 THEN '"phone" is longer than 250 characters'
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
                      DETAIL = 'Nothing in this batch was changed.',
                      HINT = 'Each contact: {"contact_id": "cust_8f", "timezone": "Europe/London", "phone": "+447700900123", '
                             '"country": "GB", "attributes": {…}}; every field but contact_id is optional.';
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
CREATE OR REPLACE FUNCTION reminderd.upsert_contacts(tenant_id text, contacts jsonb) RETURNS integer
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
                  DETAIL = 'Nothing in this batch was changed.',
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

REVOKE EXECUTE ON FUNCTION reminderd.upsert_contact_rows(text, reminderd.contact_v1[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.upsert_contact_rows(text, reminderd.contact_v1[])
TO reminderd_app, reminderd_daemon, reminderd_api;
