-- 0020 signing out of the dashboard ends that session on the server, not only in the browser.
-- Before, POST /dashboard/logout cleared the browser's cookie and nothing else: a copy of the
-- cookie (stolen, or copied from another tab) stayed a valid session for the rest of its 12 hours.
-- Now the sign-out writes the session's nonce here, and every dashboard request reads it in the
-- statement that reads the session's key (reminderd/sql/dashboard.sql dashboard_session_key):
-- that one session ends; the key's other sessions (another laptop) go on.
-- Self-contained: one table, its index, its grants.
-- Run by migrations/versions/0020_dashboard_signouts.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Dashboard sessions signed out before they expired, by the session's nonce (reminderd/sessions.py:
-- 16 random bytes in base64url, in the signed cookie). expires_at is when the session would have
-- expired anyway (issued + 12 hours); past it the cookie is refused whatever this table says, so
-- each sign-out deletes rows an hour past their expires_at (at most 100 a time, the hour a margin
-- for the servers' clocks against the database's): the table holds about the last 13 hours'
-- sign-outs and needs no housekeeping. Only reminderd_api (reminderd serve) reads and writes it.
CREATE TABLE reminderd.dashboard_signouts (
    nonce         text PRIMARY KEY CONSTRAINT dashboard_signout_nonce_format CHECK (nonce ~ '^[A-Za-z0-9_-]{22}$'),
    key_id        bigint NOT NULL REFERENCES reminderd.api_keys (id) ON DELETE CASCADE,
    signed_out_at timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX dashboard_signouts_expires ON reminderd.dashboard_signouts (expires_at);
COMMENT ON TABLE reminderd.dashboard_signouts IS
    'Dashboard sessions signed out (by nonce) before they expire; each sign-out deletes rows past expires_at: no housekeeping.';

-- Like api_keys: no row-level security, no application role may read it at all.
GRANT SELECT, INSERT, DELETE ON reminderd.dashboard_signouts TO reminderd_api;
