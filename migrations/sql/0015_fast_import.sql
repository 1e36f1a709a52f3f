-- 0015 contacts imported at speed: reminderd.upsert_contact_rows() takes a batch as one typed array
-- (reminderd.contact_v1[], what `reminderd contacts import` sends: no JSON to build, parse and
-- pick apart per contact), checks it in one pass, resolves each distinct phone that needs it once,
-- and writes it in one INSERT … ON CONFLICT that rewrites only contacts that changed.
-- reminderd.upsert_contacts(tenant, jsonb) checks its JSON's shape, then shares that path.
-- Run by migrations/versions/0015_fast_import.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

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
BEGIN
    PERFORM reminderd.check_tenant(upsert_contact_rows.tenant_id);
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
    WHERE NOT EXISTS (SELECT 1 FROM reminderd.countries c WHERE c.country = k.value)
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
        SELECT j.contact_id, j.timezone, j.phone, j.country, j.attributes,
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
    )
    INSERT INTO reminderd.contacts AS c
        (tenant_id, contact_id, timezone, phone, country, attributes, resolved_timezone, timezone_source)
    SELECT upsert_contact_rows.tenant_id, r.contact_id, r.timezone, r.phone, r.country, r.attributes,
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

-- Contacts, one or many: a JSON array of {"contact_id", "timezone", "phone", "country",
-- "attributes"} (or one such object). A field left out keeps its value; null clears it;
-- attributes are replaced whole. The whole batch is checked first: one bad element refuses it,
-- named by its position. Returns how many contacts were added or changed. The JSON's shape is
-- checked here; the rest is reminderd.upsert_contact_rows()'s.
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
