-- 0035 holiday calendars, completion refs, rotation (docs/time.md, docs/sql.md, docs/audiences.md):
--   calendars  a message, broadcast or tenant could name a calendar of the right shape that the
--              holidays package does not know (calendar => 'ZZ', UPDATE … SET calendar = 'ZZ'):
--              accepted, then dead-lettered by the daemon when it fired ("unknown holiday
--              calendar"). reminderd.holiday_calendars (new reference data, loaded by `reminderd
--              migrate` from the installed holidays package) lists the codes it knows, and
--              check_calendar_known (triggers on scheduled_messages, broadcast_requests and
--              tenants, only for rows with a calendar) refuses another one: 23514.
--   completion an ordinary message could take the ref prefix#completed of a broadcast with notify
--              of its tenant: that wave then completed without its callback. check_completion_ref
--              (triggers for refs containing '#completed' only) refuses it: 23514.
--   rotation   rotating a tenant's secret again within the grace period (after a lost answer:
--              the API's 409 secret-shown-once says to rotate again) made the unseen secret the
--              previous one and ended the original's grace at once. tenants gains
--              earlier_signing_secret and earlier_secret_expires_at: rotate_secret keeps the
--              oldest secret still in its grace there (never beyond the new rotation's grace) and
--              the daemon signs with it too (the claims return it).
-- Rows written before: left as they are (only a new or changed calendar or ref is checked); the
-- calendars' table is empty until `reminderd migrate` loads it right after this migration, and an
-- empty table refuses nothing. A tenant in a grace keeps it; its next rotation keeps that secret.
-- Run by migrations/versions/0035_calendars_refs_rotation.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

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
GRANT SELECT ON reminderd.holiday_calendars TO reminderd_app, reminderd_readonly, reminderd_daemon, reminderd_api;

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
REVOKE EXECUTE ON FUNCTION reminderd.check_calendar_known() FROM PUBLIC;

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

-- Refuse an ordinary message (not a broadcast's) whose ref is the completion callback's of one of
-- its tenant's broadcasts with notify (migration 0035): prefix#completed, or
-- prefix#completed#YYYYMMDDTHHMM for a recurring one's wave. Taken by the tenant's own row, that
-- wave would complete without its callback (complete_broadcasts). Only refs containing
-- '#completed' call it (the triggers' WHEN); a ref_prefix has no '#', so the prefix is what comes
-- before the first one. 23514, constraint completion_ref_reserved. A message written before its
-- broadcast still takes the ref: then the wave completes without its callback, saying why.
CREATE FUNCTION reminderd.check_completion_ref() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prefix text := split_part(NEW.ref_id, '#', 1);
BEGIN
    IF NEW.ref_id ~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$'
       AND EXISTS (SELECT FROM reminderd.broadcast_requests r
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
REVOKE EXECUTE ON FUNCTION reminderd.check_completion_ref() FROM PUBLIC;

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

-- Rotation within a grace keeps the secret still in its grace.
ALTER TABLE reminderd.tenants
    ADD COLUMN earlier_signing_secret text,
    ADD COLUMN earlier_secret_expires_at timestamptz;

CREATE OR REPLACE FUNCTION reminderd.rotate_secret(tenant_id text, grace interval DEFAULT '24 hours') RETURNS text
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
        PERFORM reminderd.check_timezone(NEW.timezone, format('tenant "%s"', NEW.id));
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

DROP TRIGGER tenants_validate ON reminderd.tenants;
CREATE TRIGGER tenants_validate
    BEFORE INSERT OR UPDATE OF id, callback_url, calendar, timezone, signing_secret, previous_signing_secret,
                               earlier_signing_secret
    ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_tenant();
