-- 0027 re-planning for a contact's new zone, around attempts (docs/audiences.md, "When a contact's
-- zone changes"):
--   in flight   a message being sent (picked) when its contact's zone (or its tenant's default)
--               changed kept the old zone for good: replan_for_contacts and replan_for_tenants left
--               it out and nothing re-planned it after the attempt (a daily 09:00 reminder kept
--               coming at 09:00 on the old clock). Now the replan marks it (last_event
--               'replanned'; its zone, occurrence and attempts kept for that attempt) and, when the
--               attempt ends and the row waits again (its next occurrence, a retry, a deferral, a
--               lease run out), reminderd.rezone_after_attempt gives it the zone it has now and
--               places its next occurrence in it.
--   attempted   re-planning reset a message already attempted for its occurrence (a retry
--               waiting, a dead row requeued): attempts 0, scheduled_for NULL, so the next request
--               had a new webhook-id and attempt 1 (a receiver deduplicating by webhook-id sent it
--               twice; zone changes got around max_attempts and frequency caps). Now such a row
--               keeps its occurrence, attempts and retry time (reminderd.occurrence_attempted);
--               only its zone moves.
--   DELETE      a plain DELETE FROM reminderd.contacts left its contacts' live messages live, in a
--               zone nothing would re-plan. Now it cancels them, as delete_contacts does
--               (contacts_cancel_messages); delete_contacts leaves the cancelling to it.
-- Rows written before are kept as they are. Run by migrations/versions/0027_replan_around_attempts.py
-- in one transaction. History: once released, never edited; a schema change is a new migration
-- (and an edit of reminderd/sql/schema.sql).

-- Has the receiver been sent this occurrence of the message (its webhook-id)? An attempt of it
-- counted, or one logged (a dead row requeued has attempts 0 and the same occurrence).
CREATE FUNCTION reminderd.occurrence_attempted(message_id bigint, attempts integer, scheduled_for timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT occurrence_attempted.attempts > 0
        OR occurrence_attempted.scheduled_for IS NOT NULL
           AND EXISTS (SELECT 1 FROM reminderd.deliveries d
                       WHERE d.message_id = occurrence_attempted.message_id
                         AND d.scheduled_for = occurrence_attempted.scheduled_for)
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

-- When a tenant's default zone changes, the live messages of its contacts that take their zone
-- from it are re-planned the same way.
CREATE OR REPLACE FUNCTION reminderd.replan_for_tenants() RETURNS trigger
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
    SET timezone = CASE WHEN m.status = 'picked' THEN m.timezone ELSE n.timezone END,
        fire_at = CASE WHEN m.status = 'picked'
                            OR reminderd.occurrence_attempted(m.id, m.attempts, m.scheduled_for) THEN m.fire_at
                       WHEN m.local_time IS NOT NULL THEN reminderd.local_instant(m.local_time, n.timezone)
                       WHEN m.cron IS NOT NULL OR m.rrule IS NOT NULL THEN NULL
                       ELSE m.fire_at END,
        scheduled_for = CASE WHEN m.status <> 'picked'
                                  AND (m.local_time IS NOT NULL OR m.cron IS NOT NULL OR m.rrule IS NOT NULL)
                                  AND NOT reminderd.occurrence_attempted(m.id, m.attempts, m.scheduled_for)
                             THEN NULL ELSE m.scheduled_for END,
        last_event = 'replanned',
        last_error = CASE WHEN m.status = 'picked' THEN m.last_error
                          ELSE format('tenant %s: timezone %s -> %s (tenant)', n.id, m.timezone, n.timezone) END,
        updated_at = now()
    FROM changed_tenants n
    WHERE m.tenant_id = n.id AND m.timezone_source = 'tenant' AND m.timezone IS DISTINCT FROM n.timezone
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    RETURN NULL;
END
$$;

-- A message marked by a replan while it was being sent (replan_for_contacts, replan_for_tenants),
-- as the attempt ends and it waits again (record_outcomes, or a lease run out): the zone its
-- contact (or tenant) gives it now, and, unless it was attempted for its occurrence (a retry
-- keeps its webhook-id, attempts and time), that occurrence placed as the replan places one: a
-- wall time again, a recurring row planned again from now (its next occurrence in the new zone).
-- The zone back where it was, or the contact gone: nothing changes.
CREATE FUNCTION reminderd.rezone_after_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    zone   text;
    source text;
BEGIN
    SELECT coalesce(c.resolved_timezone, t.timezone), coalesce(c.timezone_source, 'tenant') INTO zone, source
    FROM reminderd.contacts c
    JOIN reminderd.tenants t ON t.id = c.tenant_id
    WHERE c.tenant_id = NEW.tenant_id AND c.contact_id = NEW.contact_id;
    IF zone IS NULL OR (zone, source) = (NEW.timezone, NEW.timezone_source) THEN
        RETURN NEW;
    END IF;
    IF zone <> NEW.timezone THEN
        NEW.last_error := concat_ws('; ', NEW.last_error,
                                    format('contact %s: timezone %s (%s) -> %s (%s) after the attempt',
                                           NEW.contact_id, NEW.timezone, NEW.timezone_source, zone, source));
        IF (NEW.local_time IS NOT NULL OR NEW.cron IS NOT NULL OR NEW.rrule IS NOT NULL)
           AND NOT reminderd.occurrence_attempted(NEW.id, NEW.attempts, NEW.scheduled_for) THEN
            NEW.fire_at := CASE WHEN NEW.local_time IS NOT NULL THEN reminderd.local_instant(NEW.local_time, zone) END;
            NEW.scheduled_for := NULL;
        END IF;
    END IF;
    NEW.timezone := zone;
    NEW.timezone_source := source;
    RETURN NEW;
END
$$;

CREATE TRIGGER scheduled_messages_rezone_after_attempt
    BEFORE UPDATE OF status ON reminderd.scheduled_messages
    FOR EACH ROW
    WHEN (OLD.status = 'picked' AND OLD.last_event = 'replanned'
          AND NEW.status IN ('pending', 'paused', 'awaiting_approval')
          AND OLD.contact_id IS NOT NULL AND OLD.timezone_source <> 'message')
    EXECUTE FUNCTION reminderd.rezone_after_attempt();

-- A contact deleted by any means (delete_contacts, a plain DELETE): its live messages are
-- cancelled, in the same statement.
CREATE FUNCTION reminderd.cancel_for_deleted_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'cancelled', last_error = 'contact ' || m.contact_id || ' deleted',
        lease_expires_at = NULL, updated_at = now()
    FROM deleted_contacts d
    WHERE m.tenant_id = d.tenant_id AND m.contact_id = d.contact_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_cancel_messages
    AFTER DELETE ON reminderd.contacts
    REFERENCING OLD TABLE AS deleted_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.cancel_for_deleted_contacts();

-- Contacts removed (and from every audience); their live messages are cancelled by the trigger
-- contacts_cancel_messages.
CREATE OR REPLACE FUNCTION reminderd.delete_contacts(tenant_id text, contact_ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    deleted integer;
BEGIN
    PERFORM reminderd.check_tenant(delete_contacts.tenant_id);
    DELETE FROM reminderd.contacts
    WHERE tenant_id = delete_contacts.tenant_id AND contact_id = ANY (delete_contacts.contact_ids);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.occurrence_attempted(bigint, integer, timestamptz),
    reminderd.rezone_after_attempt(), reminderd.cancel_for_deleted_contacts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.occurrence_attempted(bigint, integer, timestamptz),
    reminderd.rezone_after_attempt(), reminderd.cancel_for_deleted_contacts()
TO reminderd_app, reminderd_daemon, reminderd_api;
