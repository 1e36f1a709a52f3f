-- 0029 sending limits in sentences (docs/sql.md, "Errors and SQLSTATEs"): a tenant's max_per_second,
-- max_per_hour and frequency_cap_policy, an endpoint's max_in_flight and max_per_second, and a
-- frequency cap's tenant, max_messages and per were refused in plain SQL by their constraints alone
-- ("violates check constraint max_in_flight_positive", a raw foreign-key error for an unknown
-- tenant), naming neither the value nor whose it is. Now triggers refuse them in a sentence with a
-- HINT, under the same SQLSTATE (23514, 23503) and constraint name. Rows already written are valid
-- (the constraints always held): nothing to repair.
-- Run by migrations/versions/0029_limit_refusals.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

CREATE FUNCTION reminderd.validate_tenant_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_per_second < 1 THEN
        RAISE EXCEPTION 'max_per_second % of tenant "%" is less than 1', NEW.max_per_second, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_per_second_positive',
                  HINT = 'Give how many messages it may send in a rolling second, at least 1, or NULL for no limit.';
    END IF;
    IF NEW.max_per_hour < 1 THEN
        RAISE EXCEPTION 'max_per_hour % of tenant "%" is less than 1', NEW.max_per_hour, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_per_hour_positive',
                  HINT = 'Give how many messages it may send in a rolling hour, at least 1, or NULL for no limit.';
    END IF;
    IF NEW.frequency_cap_policy NOT IN ('defer', 'skip') THEN
        RAISE EXCEPTION 'frequency_cap_policy % of tenant "%" is not defer or skip',
                        to_json(NEW.frequency_cap_policy), NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'frequency_cap_policy_is_known',
                  HINT = 'Over a frequency cap a message waits until the cap allows it (defer) or is skipped (skip).';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_validate_limits
    BEFORE INSERT OR UPDATE OF max_per_second, max_per_hour, frequency_cap_policy ON reminderd.tenants
    FOR EACH ROW
    WHEN (NEW.max_per_second < 1 OR NEW.max_per_hour < 1 OR NEW.frequency_cap_policy NOT IN ('defer', 'skip'))
    EXECUTE FUNCTION reminderd.validate_tenant_limits();

CREATE FUNCTION reminderd.validate_endpoint_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_in_flight < 1 THEN
        RAISE EXCEPTION 'max_in_flight % of endpoint "%" is less than 1', NEW.max_in_flight, NEW.endpoint
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_in_flight_positive',
                  HINT = 'Give how many of its callbacks may be in flight at once, all daemons together, at least 1, or NULL for each daemon''s REMINDERD_CONCURRENCY.';
    END IF;
    IF NEW.max_per_second < 1 THEN
        RAISE EXCEPTION 'max_per_second % of endpoint "%" is less than 1', NEW.max_per_second, NEW.endpoint
            USING ERRCODE = 'check_violation', CONSTRAINT = 'endpoint_max_per_second_positive',
                  HINT = 'Give how many callbacks it may get in a rolling second, at least 1, or NULL for no limit.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER endpoints_validate_limits
    BEFORE INSERT OR UPDATE OF max_in_flight, max_per_second ON reminderd.endpoints
    FOR EACH ROW
    WHEN (NEW.max_in_flight < 1 OR NEW.max_per_second < 1)
    EXECUTE FUNCTION reminderd.validate_endpoint_limits();

-- A cap is written by a person, rarely: checked each time (a WHEN cannot ask whether the tenant
-- exists). Looked up as the writer, through its row-level security: a tenant an app role does not
-- act for is as unknown to it as one that does not exist (as the owner it told which ids exist).
CREATE FUNCTION reminderd.validate_frequency_cap() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        IF NOT EXISTS (SELECT 1 FROM reminderd.tenants t WHERE t.id = NEW.tenant_id) THEN
            RAISE EXCEPTION 'unknown tenant "%"', NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'frequency_caps_tenant_id_fkey',
                      HINT = 'Create the tenant first (reminderd tenant add), then its caps.';
        END IF;
    END IF;
    IF NEW.max_messages < 1 THEN
        RAISE EXCEPTION 'max_messages % of the % frequency cap of tenant "%" is less than 1',
                        NEW.max_messages, NEW.category, NEW.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'max_messages_positive',
                  HINT = 'Give how many messages of the category one recipient may get in the window, at least 1.';
    END IF;
    IF NEW.per <= interval '0' OR NEW.per > interval '366 days' THEN
        RAISE EXCEPTION 'per % of the % frequency cap of tenant "%" is %', NEW.per, NEW.category, NEW.tenant_id,
                        CASE WHEN NEW.per <= interval '0' THEN 'not more than 0' ELSE 'more than 366 days' END
            USING ERRCODE = 'check_violation', CONSTRAINT = 'per_in_range',
                  HINT = 'Give the rolling window the cap counts in, more than 0 and at most 366 days, like 1 day.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER frequency_caps_validate
    BEFORE INSERT OR UPDATE OF tenant_id, max_messages, per ON reminderd.frequency_caps
    FOR EACH ROW EXECUTE FUNCTION reminderd.validate_frequency_cap();
