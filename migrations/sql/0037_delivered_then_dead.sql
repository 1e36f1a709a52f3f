-- 0037 delivered, then dead (docs/sql.md "died_delivered", "requeue"):
--   recording  a callback the receiver accepted (2xx) whose outcome the database refused for its
--              row (a user's trigger, a CHECK, a table the record writes) was dead-lettered as
--              "the outcome could not be recorded", or, when even that was refused, left to its
--              lease and sent again at each one. The daemon now dead-letters it with a reason
--              saying it was delivered (HTTP status, attempt), writing the row alone if need be
--              (queries.sql dead_letter_refused); no schema change for that.
--   died_delivered(m) tells such a dead row from one that failed: the attempt of its last claim
--              was delivered (sent_at at or after picked_at).
--   requeue    gains `resend boolean DEFAULT false` (requeue(42) still works): a one-off that
--              died delivered is refused, 55000 with a HINT, unless resend => true; a recurring
--              one goes to its next occurrence (fire_at NULL, planned by the daemon) instead of
--              the delivered one. requeue_dead skips the one-offs that died delivered and says
--              how many in a NOTICE.
-- Rows written before: left as they are; a dead row delivered in its last claim is seen as such
-- by died_delivered (sent_at after picked_at) whatever wrote it.
-- Run by migrations/versions/0037_delivered_then_dead.py in one transaction. History: once
-- released, never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

DROP FUNCTION reminderd.requeue(bigint);

-- Whether a dead row died after its receiver accepted it (migration 0037): the attempt of its
-- last claim was delivered (sent_at set by that claim's record, after its picked_at), and the row
-- was dead-lettered all the same: its outcome could not be recorded, or a recurring row could not
-- compute its next occurrence. Its dead reason says so ("delivered (HTTP 200, attempt 1), but …").
-- requeue refuses to send such a one-off again unless told to (resend => true); a recurring one
-- moves to its next occurrence instead. False for any row not dead.
CREATE FUNCTION reminderd.died_delivered(m reminderd.scheduled_messages) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT m.status = 'dead' AND m.picked_at IS NOT NULL AND m.sent_at IS NOT NULL AND m.sent_at >= m.picked_at
$$;
COMMENT ON FUNCTION reminderd.died_delivered(reminderd.scheduled_messages) IS
    'Whether a dead message died after its receiver accepted it (requeue will not send it again unless resend).';

-- A dead row goes back to pending, due now, attempts reset (same occurrence: same webhook-id).
-- One that died after delivery (died_delivered) is not sent again by mistake: a one-off is
-- refused (55000) unless `resend`; a recurring one, unless `resend`, goes to its next occurrence
-- (fire_at NULL: the daemon plans its first occurrence after now), not to the delivered one.
CREATE FUNCTION reminderd.requeue(message_id bigint, resend boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    message  reminderd.scheduled_messages;
    onward   boolean;
    requeued integer;
BEGIN
    SELECT * INTO message FROM reminderd.scheduled_messages m WHERE m.id = requeue.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no message with id %', requeue.message_id USING ERRCODE = 'no_data_found';
    END IF;
    onward := NOT requeue.resend AND reminderd.died_delivered(message);
    IF onward AND message.cron IS NULL AND message.rrule IS NULL THEN
        RAISE EXCEPTION 'message % / % (id %) was delivered before it died: requeueing it would send it again',
                        message.tenant_id, message.ref_id, message.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its dead reason: %s', coalesce(message.last_error, '(none recorded)')),
                  HINT = format('Pass resend => true to send it again: SELECT reminderd.requeue(%s, resend => true);',
                                message.id);
    END IF;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', attempts = 0,
        scheduled_for = CASE WHEN onward THEN NULL ELSE coalesce(m.scheduled_for, m.fire_at) END,
        fire_at = CASE WHEN onward THEN NULL ELSE now() END,
        last_event = 'requeued',
        last_error = CASE WHEN onward THEN 'requeued to its next occurrence (the last was delivered) from: '
                          ELSE 'requeued from: ' END || coalesce(m.last_error, ''),
        updated_at = now()
    WHERE m.id = requeue.message_id AND m.status = 'dead'
      AND NOT EXISTS (SELECT 1 FROM reminderd.scheduled_messages live
                      WHERE live.tenant_id = m.tenant_id AND live.ref_id = m.ref_id
                        AND live.status IN ('pending', 'picked', 'paused', 'awaiting_approval'));
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;

-- A tenant's rows that died at or after `since`, requeued (requeue); one-offs that died after
-- delivery are skipped (a NOTICE says how many: requeue each with resend => true to send it again).
CREATE OR REPLACE FUNCTION reminderd.requeue_dead(tenant_id text, since timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    requeued integer := 0;
    skipped  integer := 0;
    message  record;
BEGIN
    PERFORM reminderd.check_tenant(requeue_dead.tenant_id);
    FOR message IN
        SELECT m.id, reminderd.died_delivered(m) AND m.cron IS NULL AND m.rrule IS NULL AS delivered
        FROM reminderd.scheduled_messages m
        WHERE m.tenant_id = requeue_dead.tenant_id AND m.status = 'dead' AND m.updated_at >= requeue_dead.since
        ORDER BY m.id
    LOOP
        IF message.delivered THEN
            skipped := skipped + 1;
        ELSE
            requeued := requeued + reminderd.requeue(message.id);
        END IF;
    END LOOP;
    IF skipped > 0 THEN
        RAISE NOTICE '% dead message(s) of tenant % skipped: delivered before they died', skipped, requeue_dead.tenant_id
            USING HINT = 'Requeue one with reminderd.requeue(id, resend => true) to send it again.';
    END IF;
    RETURN requeued;
END
$$;

REVOKE EXECUTE ON FUNCTION reminderd.died_delivered(reminderd.scheduled_messages),
    reminderd.requeue(bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.died_delivered(reminderd.scheduled_messages)
TO reminderd_app, reminderd_daemon, reminderd_readonly, reminderd_api;
GRANT EXECUTE ON FUNCTION reminderd.requeue(bigint, boolean) TO reminderd_app, reminderd_daemon, reminderd_api;
