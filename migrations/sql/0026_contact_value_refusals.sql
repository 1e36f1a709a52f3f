-- 0026 an unknown timezone or country in a contacts batch is refused naming its element, as every
-- other rule of reminderd.upsert_contact_rows() is: 'contact 6123 of the batch (contact_id "c6123")
-- has unknown country "ZZ"' (it said only 'unknown country "ZZ" in the batch', so that
-- `reminderd contacts import` could not say the line). The same SQLSTATE (22023), DETAIL and HINT.

CREATE OR REPLACE FUNCTION reminderd.upsert_contact_rows(tenant_id text, contacts reminderd.contact_v1[]) RETURNS integer
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
                      DETAIL = 'Nothing in this batch was changed.',
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
