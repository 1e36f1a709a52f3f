-- 0032 contact rows (docs/audiences.md, "Messages for a contact"):
--   plain INSERT  A row naming a contact written by a plain INSERT or COPY (not schedule()) was
--                 read in UTC with timezone_source 'message' (the column's default), so a change of
--                 its contact's zone never re-planned it, and an unknown contact was taken. Now
--                 scheduled_messages.timezone defaults to 'Etc/Universal' (UTC by another name, so
--                 a row written with triggers off is still UTC), which admit_message recognises: a
--                 row left at it is given its contact's zone, as schedule() gives it
--                 (reminderd.message_timezone, with its source), or 'UTC' when it names no
--                 contact (as before); a row naming a contact that does not exist is
--                 refused (P0002, 'unknown contact "x" of tenant "acme"'). Rows without a contact
--                 pay one comparison; a broadcast's rows are staged from their contacts as before.
--   batch element A contact of an upsert_contacts batch that replan_for_contacts refused (it would
--                 leave the contact with no zone while its messages need one) refused the whole
--                 batch naming only the contact id, so PUT /v1/contacts and `reminderd contacts
--                 import` could not tell which element it was and failed everything. Now
--                 upsert_contact_rows names that element as it names the others ('contact 2 of the
--                 batch (contact_id "z1") would have no timezone, and 2 of its messages need one',
--                 22023, constraint contact_zone_needed), and every element refusal also names its
--                 element in the error's column field ('contacts[2]'), which the API and the CLI
--                 read instead of the message.
--   zones         Files of the zone directory that name no IANA zone were taken as zones:
--                 localtime (whatever zone the host reading it is in), posixrules, Factory and the
--                 posix/ copies (right/ PostgreSQL refuses). check_timezone (and so is_timezone,
--                 every insert's check, contacts) now refuses them as the CLI and the API do:
--                 'unknown timezone "localtime"', 22023, DETAIL 'localtime is the zone of whichever
--                 host reads it (/etc/localtime), not an IANA zone.'
--   explicit UTC  A zone given as 'Etc/Universal' (schedule(timezone => 'Etc/Universal'), the CLI's
--                 --tz, the API's timezone) with a contact looked like the default above: the row
--                 was labelled in the contact's zone but timed in UTC. reminderd.message_timezone,
--                 which every scheduling function reads its zone from, now gives it as 'UTC'.
-- Rows written before: unchanged here (one that named a contact and was left at UTC cannot be told
-- from one that asked for UTC; a message already in such a zone keeps it until it is next changed).
-- Contacts in such a zone are seen to by 0033: a posix/ copy is given its IANA name (posix/X is X,
-- its messages keep their times), localtime, posixrules and Factory are left as they are, each
-- counted in a WARNING.
-- Run by migrations/versions/0032_contact_rows.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

ALTER TABLE reminderd.scheduled_messages ALTER COLUMN timezone SET DEFAULT 'Etc/Universal';

-- Refuse (22023) a zone the daemon cannot read: Python's zoneinfo reads tz database files by name,
-- so a zone is an IANA name spelt as its file is. PostgreSQL alone would also take
-- "america/new_york" (its names are case-insensitive; the HINT gives the right spelling), POSIX
-- rules such as "UTC+3" (whose sign is the opposite of ISO 8601's) and "+05". `subject` ("message
-- acme / r1") says whose zone it is.
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
    ELSIF timezone IN ('localtime', 'posixrules', 'Factory') OR timezone LIKE 'posix/%' THEN
        -- Files of the zone directory that name no IANA zone (migration 0032; Python's
        -- wallclock.not_an_iana_zone says the same): localtime is the zone of the host reading it.
        -- (right/, the copies counting leap seconds, PostgreSQL refuses itself.)
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value',
            DETAIL = timezone || CASE timezone
                WHEN 'localtime' THEN ' is the zone of whichever host reads it (/etc/localtime)'
                WHEN 'posixrules' THEN ' is the rules POSIX TZ strings borrow'
                WHEN 'Factory' THEN ' is tzdata''s placeholder for a zone not set'
                ELSE format(' is a copy of %s under another name', substr(timezone, 7)) END || ', not an IANA zone.',
            HINT = CASE WHEN timezone LIKE 'posix/%' THEN format('Use %s.', substr(timezone, 7)) ELSE hint END;
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
                        THEN format('Timezone names are case-sensitive: %s.', canonical)
                        ELSE hint END;
    END IF;
END
$$;

-- The zone of a message: the one it names (source 'message'), or its contact's (contact, phone,
-- country) or its tenant's default (tenant); UTC for a message naming neither. An 'Etc/Universal'
-- it names is 'UTC', the same zone (migration 0032): the column's default stands for a zone left
-- out, which admit_message replaces with the contact's, so a zone given must not look like it.
CREATE OR REPLACE FUNCTION reminderd.message_timezone(tenant_id text, contact_id text, timezone text,
                                                      OUT zone text, OUT source text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
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

-- Contacts, many at once, as reminderd.upsert_contacts() takes them (the same rules, the same
-- errors: one bad element refuses the batch, named by its position). Returns how many contacts
-- were added or changed; a contact given twice takes its last element. The zone of a contact is
-- worked out only when what it is worked out from changed, and each distinct phone once.
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

-- When a contact's zone changes, its live messages that take their zone from it are re-planned
-- in the same statement: a wall time (local_time) is placed again in the new zone, a recurring
-- row is planned again by the daemon from now (fire_at NULL), an instant keeps its fire_at (its
-- quiet hours and holidays are read in the new zone). A row already attempted for its occurrence
-- keeps it (its webhook-id), its attempts and its retry's time; only its zone moves. A row being
-- sent right now keeps its zone for that attempt and is marked (last_event 'replanned'):
-- reminderd.rezone_after_attempt moves it when the attempt ends. Only the source changing (the same
-- zone, now from the contact's own field) is recorded quietly.
CREATE OR REPLACE FUNCTION reminderd.replan_for_contacts() RETURNS trigger
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
