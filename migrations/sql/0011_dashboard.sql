-- 0011 the dashboard (served by `reminderd serve`): what its pages read without scanning
-- scheduled_messages, deliveries or events, and who did what.
--   fire_counts, lateness_counts   aggregates kept by triggers on events and deliveries (the two
--                                  halves of the trail since migration 0007: an attempt's change is
--                                  on its deliveries row), per tenant and minute and per tenant and
--                                  hour: the overview's rates and lateness read a few thousand
--                                  rows, whatever the traffic.
--   events_fires, events_tenant_fires, deliveries_fires, deliveries_tenant_fires
--                                  the live feed's last 1,000 fires, all tenants or one.
--   NOTIFY reminderd_feed          the ids of the fires each statement recorded, named by table
--                                  (events:1,2 or deliveries:3,4), so the feed is pushed as they
--                                  are written (no polling).
--   events.on_behalf_of            who a role acted for: the API key of a dashboard or API action;
--                                  reminderd.trail shows it.
--   reminderd_api reads daemons    the overview's daemons, alive or not, and their last claims
--                                  (the registry of migration 0008).
--   deliveries_message             on (message_id, id) instead of (message_id, attempt): a message's
--                                  last 100 attempts are an index range even for a recurring row
--                                  (whose attempts restart at 1 for each occurrence).
-- Run by migrations/versions/0011_dashboard.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).
--
-- On large events and deliveries tables the CREATE INDEX below block writes to them while they
-- build (about a second per million rows here); run it in a quiet moment.

-- The audit trail: who a role acted for. A column default, not a trigger: every insert path
-- (the audit triggers, send_now's own insert) fills it at no cost, from the transaction's
-- reminderd.on_behalf_of setting (SELECT set_config('reminderd.on_behalf_of', '…', true)).
-- It is what the role says; actor, the role itself, stays the one nobody can forge.
ALTER TABLE reminderd.events
    ADD COLUMN on_behalf_of text DEFAULT nullif(current_setting('reminderd.on_behalf_of', true), '');
COMMENT ON COLUMN reminderd.events.on_behalf_of IS
    'Who the role (actor) acted for, as it said in the setting reminderd.on_behalf_of: reminderd serve '
    'sets the API key''s prefix and name (dashboard and API actions). NULL: the role acted for itself.';

-- The fires, as the live feed and the aggregates name them (what the daemon records when it sends
-- or holds back an occurrence). Attempts (fired, retry_scheduled, dead_lettered) are deliveries
-- rows since migration 0007; the rest, and the attempts logged before it, are events.
CREATE INDEX events_fires ON reminderd.events (id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');
CREATE INDEX events_tenant_fires ON reminderd.events (tenant_id, id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');
CREATE INDEX deliveries_fires ON reminderd.deliveries (id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');
CREATE INDEX deliveries_tenant_fires ON reminderd.deliveries (tenant_id, id)
    WHERE event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                    'holiday_skipped');

-- A message's attempts newest first, bounded, whatever their attempt numbers: the message page
-- (and any lookup by message, as before: record_outcomes' check that an attempt is logged once).
DROP INDEX reminderd.deliveries_message;
CREATE INDEX deliveries_message ON reminderd.deliveries (message_id, id);

-- Fires per tenant and minute, and per tenant and hour (UTC), counted from the trail (events and
-- the attempts in deliveries) as it is written. The dashboard's "last hour" is the current minute
-- and the 59 before it; its "last 24 hours" the current hour and the 23 before it. Pruned by the
-- daemon (minutes after 3 hours, hours after 8 days).
CREATE TABLE reminderd.fire_counts (
    period    text NOT NULL CONSTRAINT fire_counts_period_is_known CHECK (period IN ('minute', 'hour')),
    starts_at timestamptz NOT NULL,
    tenant_id text NOT NULL,
    delivered integer NOT NULL DEFAULT 0,  -- fired
    retried   integer NOT NULL DEFAULT 0,  -- retry_scheduled
    dead      integer NOT NULL DEFAULT 0,  -- dead_lettered
    expired   integer NOT NULL DEFAULT 0,  -- expired, missed_skipped: too late to send
    held      integer NOT NULL DEFAULT 0,  -- deferred (quiet hours), holiday_skipped (moved off a holiday)
    PRIMARY KEY (period, starts_at, tenant_id)
);
COMMENT ON TABLE reminderd.fire_counts IS
    'Fires per tenant and minute or hour (UTC), kept by the triggers events_count_fires and '
    'deliveries_count_fires: the dashboard''s rates.';

-- Delivered attempts per tenant, minute or hour, and lateness bucket (delivery time minus
-- scheduled time, retries included: reminderd_fire_lateness_seconds' definition), counted from
-- deliveries as they are written. bucket n holds [bound n, bound n+1) of lateness_bounds_ms(),
-- bucket 0 anything under its first bound.
CREATE TABLE reminderd.lateness_counts (
    period    text NOT NULL CONSTRAINT lateness_counts_period_is_known CHECK (period IN ('minute', 'hour')),
    starts_at timestamptz NOT NULL,
    tenant_id text NOT NULL,
    bucket    smallint NOT NULL,
    delivered integer NOT NULL,
    PRIMARY KEY (period, starts_at, tenant_id, bucket)
);
COMMENT ON TABLE reminderd.lateness_counts IS
    'Delivered attempts per tenant, minute or hour (UTC) and lateness bucket (lateness_bounds_ms()), '
    'kept by the trigger deliveries_count_fires: the dashboard''s lateness percentiles.';

-- The lower bounds, in milliseconds, of the lateness buckets after the first.
CREATE FUNCTION reminderd.lateness_bounds_ms() RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{1,2.5,5,10,25,50,100,250,500,1000,2500,5000,10000,30000,60000,300000,900000,3600000}'::float8[]
$$;

-- Count a statement's fires (one upsert per tenant and period) and, for attempts, its delivered
-- ones by lateness (one upsert per tenant, period and bucket), and tell the live feed which rows
-- they are: their ids, named by table, 500 to a notification (payloads are at most 8,000 bytes).
-- The trigger of events (events_count_fires) and that of deliveries (deliveries_count_fires) run
-- it, on a statement's new rows (new_rows).
-- No deadlock: a transaction may count several times (a batch's attempts, then each held row's
-- event, one statement each from the audit trigger), each time in key order but not in one order
-- overall; so every count first takes one transaction-level advisory lock, and two transactions
-- that count wait for each other there, before either locks a row of the aggregates.
-- SECURITY DEFINER: whoever writes events or deliveries (the daemon, an application's own
-- statements) needs no privilege on the aggregates, and cannot change them either.
CREATE FUNCTION reminderd.count_fires() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids text;
BEGIN
    IF TG_TABLE_NAME = 'deliveries' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows d
                       WHERE d.status_code BETWEEN 200 AND 299
                          OR d.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped',
                                         'deferred', 'holiday_skipped')) THEN
            RETURN NULL;  -- attempts that neither delivered nor changed their message
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('reminderd.counts'));
        INSERT INTO reminderd.lateness_counts AS c (period, starts_at, tenant_id, bucket, delivered)
        SELECT p.period, date_trunc(p.period, d.created_at, 'UTC'), d.tenant_id,
               width_bucket(extract(epoch FROM d.created_at - d.scheduled_for)::float8 * 1000,
                            reminderd.lateness_bounds_ms()),
               count(*)
        FROM new_rows d
        CROSS JOIN (VALUES ('minute'), ('hour')) AS p(period)
        WHERE d.status_code BETWEEN 200 AND 299
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (period, starts_at, tenant_id, bucket) DO UPDATE
        SET delivered = c.delivered + excluded.delivered;
    ELSIF NOT EXISTS (SELECT 1 FROM new_rows e
                      WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped',
                                        'deferred', 'holiday_skipped')) THEN
        RETURN NULL;  -- scheduling, cancelling, pausing: nothing fired
    ELSE
        PERFORM pg_advisory_xact_lock(hashtext('reminderd.counts'));
    END IF;
    INSERT INTO reminderd.fire_counts AS c (period, starts_at, tenant_id, delivered, retried, dead, expired, held)
    SELECT p.period, date_trunc(p.period, e.created_at, 'UTC'), e.tenant_id,
           count(*) FILTER (WHERE e.event = 'fired'),
           count(*) FILTER (WHERE e.event = 'retry_scheduled'),
           count(*) FILTER (WHERE e.event = 'dead_lettered'),
           count(*) FILTER (WHERE e.event IN ('expired', 'missed_skipped')),
           count(*) FILTER (WHERE e.event IN ('deferred', 'holiday_skipped'))
    FROM new_rows e
    CROSS JOIN (VALUES ('minute'), ('hour')) AS p(period)
    WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped', 'deferred',
                      'holiday_skipped')
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (period, starts_at, tenant_id) DO UPDATE
    SET delivered = c.delivered + excluded.delivered, retried = c.retried + excluded.retried,
        dead = c.dead + excluded.dead, expired = c.expired + excluded.expired, held = c.held + excluded.held;
    FOR ids IN
        SELECT string_agg(f.id::text, ',' ORDER BY f.id)
        FROM (SELECT e.id, (row_number() OVER (ORDER BY e.id) - 1) / 500 AS chunk
              FROM new_rows e
              WHERE e.event IN ('fired', 'retry_scheduled', 'dead_lettered', 'expired', 'missed_skipped',
                                'deferred', 'holiday_skipped')) f
        GROUP BY f.chunk
        ORDER BY f.chunk
    LOOP
        PERFORM pg_notify('reminderd_feed', TG_TABLE_NAME || ':' || ids);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_count_fires
    AFTER INSERT ON reminderd.events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_fires();
CREATE TRIGGER deliveries_count_fires
    AFTER INSERT ON reminderd.deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminderd.count_fires();

-- Pruning the aggregates (the daemon's housekeeping, or by hand): minutes older than 3 hours,
-- hours older than 8 days. Returns the rows deleted.
CREATE FUNCTION reminderd.prune_counts() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fires    integer;
    lateness integer;
BEGIN
    DELETE FROM reminderd.fire_counts
    WHERE (period = 'minute' AND starts_at < now() - interval '3 hours')
       OR (period = 'hour' AND starts_at < now() - interval '8 days');
    GET DIAGNOSTICS fires = ROW_COUNT;
    DELETE FROM reminderd.lateness_counts
    WHERE (period = 'minute' AND starts_at < now() - interval '3 hours')
       OR (period = 'hour' AND starts_at < now() - interval '8 days');
    GET DIAGNOSTICS lateness = ROW_COUNT;
    RETURN fires + lateness;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.lateness_bounds_ms(), reminderd.count_fires(), reminderd.prune_counts()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.count_fires() TO reminderd_app, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.lateness_bounds_ms() TO reminderd_readonly, reminderd_daemon, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.prune_counts() TO reminderd_daemon;

-- Readers: the aggregates hold no payload and no secret; per-tenant numbers, so applications
-- see their own tenants' only.
ALTER TABLE reminderd.fire_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminderd.lateness_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_own_tenants ON reminderd.fire_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY app_own_tenants ON reminderd.lateness_counts FOR SELECT TO reminderd_app
    USING (tenant_id = ANY (ARRAY(SELECT tenant_id FROM reminderd.my_tenants)));
CREATE POLICY read_all ON reminderd.fire_counts FOR SELECT TO reminderd_readonly, reminderd_daemon, reminderd_api
    USING (true);
CREATE POLICY read_all ON reminderd.lateness_counts FOR SELECT TO reminderd_readonly, reminderd_daemon, reminderd_api
    USING (true);
GRANT SELECT ON reminderd.fire_counts, reminderd.lateness_counts
    TO reminderd_app, reminderd_readonly, reminderd_daemon, reminderd_api;

-- The overview's daemons: the registry (migration 0008) read by `reminderd serve` (its hosts,
-- versions, heartbeats and last claims; the settings it holds are masked).
GRANT SELECT ON reminderd.daemons, reminderd.daemon_overview TO reminderd_api;

-- The trail (migration 0007) with whom each event was done for; an attempt is the daemon's own.
CREATE OR REPLACE VIEW reminderd.trail WITH (security_invoker = true) AS
SELECT e.created_at AS at, e.message_id, e.tenant_id, e.ref_id, e.event, e.status, e.fire_at, e.reason,
       e.actor, NULL::integer AS attempt, NULL::text AS webhook_id, NULL::integer AS status_code,
       NULL::text AS error, NULL::integer AS duration_ms, e.id AS event_id, NULL::bigint AS delivery_id,
       e.on_behalf_of
FROM reminderd.events e
UNION ALL
SELECT d.created_at, d.message_id, d.tenant_id, d.ref_id, d.event, d.status, d.fire_at, d.reason,
       d.actor, d.attempt, d.webhook_id, d.status_code, d.error, d.duration_ms, NULL, d.id, NULL
FROM reminderd.deliveries d;
COMMENT ON VIEW reminderd.trail IS
    'Everything that happened to each message: reminderd.events and the attempts of reminderd.deliveries '
    '(attempt set), each attempt with the change it made (event NULL when it made none), and whom an '
    'event was done for (on_behalf_of). ORDER BY at, event_id, delivery_id.';
