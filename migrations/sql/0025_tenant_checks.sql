-- 0025 tenants: the checks of a tenant's row, where they got in the way or let a bad value in
-- (docs/sql.md, "Errors and SQLSTATEs"):
--   ON CONFLICT      validate_tenant refused a tenant that already exists before the primary key
--                    could: INSERT … ON CONFLICT DO NOTHING (or DO UPDATE) raised 23505 "tenant …
--                    already exists". Now the primary key says it (tenants_pkey, 23505, "Key
--                    (id)=(acme) already exists."), ON CONFLICT works, and reminderd's CLI and API
--                    still say it in one sentence (reminderd/refusals.py phrases tenants_pkey).
--   signing secrets  'whsec_not-base64!' was taken as a tenant's signing_secret, and every message
--                    of the tenant was dead-lettered ("cannot sign for tenant …"). Now a new or
--                    changed signing_secret or previous_signing_secret must be whsec_ followed by
--                    base64 (reminderd.is_signing_secret, the expression reminderd/signing.py signs
--                    by): 22023 naming the tenant and the column, never the value, and a HINT.
--                    rotate_secret no longer keeps a secret nothing can sign with as the previous one.
-- Rows written before: kept as they are (a secret is checked when it is written again), readable,
-- and the tenant can still be changed otherwise; their messages are dead-lettered as before, saying
-- why (rotate the secret: reminderd tenant rotate-secret). This migration names such tenants in a
-- WARNING (their ids and which column; never a secret).
-- Run by migrations/versions/0025_tenant_checks.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

CREATE FUNCTION reminderd.is_signing_secret(secret text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT secret ~ '^whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$'
$$;

REVOKE EXECUTE ON FUNCTION reminderd.is_signing_secret(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.is_signing_secret(text)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;

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
    RETURN NEW;
END
$$;

DROP TRIGGER tenants_validate ON reminderd.tenants;
CREATE TRIGGER tenants_validate
    BEFORE INSERT OR UPDATE OF id, callback_url, calendar, timezone, signing_secret, previous_signing_secret
    ON reminderd.tenants
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_tenant();

CREATE OR REPLACE FUNCTION reminderd.rotate_secret(tenant_id text, grace interval DEFAULT '24 hours') RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fresh text := reminderd.generate_secret();
BEGIN
    PERFORM reminderd.check_tenant(rotate_secret.tenant_id);
    UPDATE reminderd.tenants  -- a secret nothing can sign with (written before 0025) is not kept
    SET previous_signing_secret = CASE WHEN reminderd.is_signing_secret(signing_secret) THEN signing_secret END,
        previous_secret_expires_at = now() + rotate_secret.grace,
        signing_secret = fresh
    WHERE id = rotate_secret.tenant_id;
    RETURN fresh;
END
$$;

-- The tenants whose secret was written before this check: named, left as they are.
DO $$
DECLARE
    damaged text;
BEGIN
    SELECT string_agg(format('%s (%s)', t.id, concat_ws(', ',
                          CASE WHEN NOT reminderd.is_signing_secret(t.signing_secret) THEN 'signing_secret' END,
                          CASE WHEN NOT reminderd.is_signing_secret(t.previous_signing_secret)
                               THEN 'previous_signing_secret' END)), ', ' ORDER BY t.id)
    INTO damaged
    FROM reminderd.tenants t
    WHERE NOT reminderd.is_signing_secret(t.signing_secret)
       OR NOT reminderd.is_signing_secret(t.previous_signing_secret);
    IF damaged IS NOT NULL THEN
        RAISE WARNING 'tenants whose signing secret is not whsec_ followed by base64: %', damaged
            USING DETAIL = 'Their messages are dead-lettered ("cannot sign for tenant …") until the secret is replaced.',
                  HINT = 'Rotate it: reminderd tenant rotate-secret TENANT, or SELECT reminderd.rotate_secret(''TENANT'').';
    END IF;
END
$$;
