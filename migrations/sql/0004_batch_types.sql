-- 0004 batch writes take one typed array: composite types for the daemon's outcome, plan and
-- release batches, instead of one array per field whose order the query and the daemon had to
-- agree on. Versioned names (`_v1`): a released type is never altered; a change adds `_v2` beside
-- it, so daemons of the previous release keep writing with `_v1` during a rolling upgrade.
-- Run by migrations/versions/0004_batch_types.py in one transaction. History: once released, never
-- edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- One attempt's outcome (or a claimed row held back before any request), as record_outcomes writes
-- it: the attempt logged in reminderd.deliveries, the row moved on.
CREATE TYPE reminderd.outcome_v1 AS (
    message_id         bigint,
    picked_at          timestamptz,  -- the claim's fencing token
    attempt            integer,
    tenant_id          text,
    webhook_id         text,
    occurrence         timestamptz,
    attempted          boolean,      -- false: held back before any request, no attempt logged
    status_code        integer,
    error              text,
    duration_ms        integer,
    event              text,         -- the audit trail's event (last_event)
    next_status        text,
    next_fire_at       timestamptz,  -- NULL keeps fire_at (or uses retry_in_s)
    retry_in_s         float8,       -- from the database clock at recording time
    next_scheduled_for timestamptz,
    reset_attempts     boolean,
    refund_attempt     boolean,      -- the claim counted an attempt that was not made
    ran                boolean,      -- a recurring occurrence fired: counts for max_runs
    delivered          boolean,
    last_error         text
);
COMMENT ON TYPE reminderd.outcome_v1 IS 'One outcome in a batch the daemon records (record_outcomes).';

-- A recurring row's next fire_at, written only if the row still has the fire_at it was read with.
CREATE TYPE reminderd.plan_v1 AS (
    message_id   bigint,
    seen_fire_at timestamptz,
    next_fire_at timestamptz,
    next_status  text,
    event        text,
    last_error   text
);
COMMENT ON TYPE reminderd.plan_v1 IS 'One recurring row planned by the daemon (plan_recurring).';

-- A claimed row handed back at shutdown.
CREATE TYPE reminderd.release_v1 AS (
    message_id bigint,
    picked_at  timestamptz,
    started    boolean  -- its request may have gone out: the attempt counts
);
COMMENT ON TYPE reminderd.release_v1 IS 'One claimed row the daemon hands back at shutdown (release).';
