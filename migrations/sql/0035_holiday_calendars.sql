-- 0035 holiday calendars (docs/time.md, docs/sql.md):
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
-- Rows written before: left as they are (only a new or changed calendar is checked); the table is
-- empty until `reminderd migrate` loads it right after this migration, and an empty table
-- refuses nothing.
-- Run by migrations/versions/0035_holiday_calendars.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

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
