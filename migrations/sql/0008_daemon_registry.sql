-- 0008 daemons as first-class rows: each `reminderd run` registers in reminderd.daemons and
-- heartbeats; every claim stamps the row with picked_by, so a dead daemon's rows are rescued by
-- owner within seconds instead of waiting for their lease.
-- Run by migrations/versions/0008_daemon_registry.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- One row per running daemon: registered at start, its heartbeat_at refreshed every
-- REMINDERD_HEARTBEAT seconds, stopping set on SIGTERM, deleted on a clean exit. A row whose
-- heartbeat is older than its REMINDERD_DEAD_AFTER is a dead daemon: another daemon's housekeeping
-- returns its picked rows to pending ('rescued') and deletes the row.
CREATE TABLE reminderd.daemons (
    id            uuid PRIMARY KEY,           -- chosen by the daemon at start (random)
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopping      boolean NOT NULL DEFAULT false,
    -- Its effective settings, secrets masked, keyed like the TOML file (heartbeat, dead_after, …).
    settings      jsonb NOT NULL DEFAULT '{}',
    last_claim_at timestamptz                 -- its last claim that got rows (the database's time)
);
COMMENT ON TABLE reminderd.daemons IS
    'Running daemons and their heartbeats; a row silent beyond its dead_after is a dead daemon.';

-- The daemon that claimed the row last: while the row is picked, the one holding it. No foreign
-- key: a dead daemon's row is deleted once its rows are rescued, and the history keeps its id.
-- Rescue and reconciliation read picked rows by it through scheduled_messages_leases (all picked
-- rows, a small set), so it needs no index of its own.
ALTER TABLE reminderd.scheduled_messages ADD COLUMN picked_by uuid;
COMMENT ON COLUMN reminderd.scheduled_messages.picked_by IS
    'The daemon (reminderd.daemons.id) that claimed the row last; while picked, the one holding it.';
-- Applications and the API server may update every column of a message but last_delivery_id
-- (migration 0007 grants UPDATE column by column): picked_by too.
GRANT UPDATE (picked_by) ON reminderd.scheduled_messages TO reminderd_app, reminderd_api;

GRANT SELECT, INSERT, UPDATE, DELETE ON reminderd.daemons TO reminderd_daemon;
GRANT SELECT ON reminderd.daemons TO reminderd_readonly;

-- Which daemons run, since when, whether they are alive, what they hold and when they last claimed.
-- state: alive, stopping (draining after SIGTERM), or dead (silent beyond its dead_after: a live
-- daemon rescues its rows and deletes it within a poll interval).
CREATE VIEW reminderd.daemon_overview WITH (security_invoker = true) AS
SELECT d.id, d.host, d.pid, d.version, d.started_at, d.heartbeat_at, now() - d.heartbeat_at AS silent_for,
       CASE WHEN d.heartbeat_at < now() - make_interval(secs => CASE
                WHEN jsonb_typeof(d.settings -> 'dead_after') = 'number'
                THEN (d.settings ->> 'dead_after')::float8 ELSE 15 END) THEN 'dead'
            WHEN d.stopping THEN 'stopping'
            ELSE 'alive' END AS state,
       (SELECT count(*) FROM reminderd.scheduled_messages m
        WHERE m.status = 'picked' AND m.picked_by = d.id) AS held,
       d.last_claim_at
FROM reminderd.daemons d;

GRANT SELECT ON reminderd.daemon_overview TO reminderd_readonly, reminderd_daemon;
