-- 0036 broadcast decisions, completion refs, one callback per wave (docs/audiences.md, docs/sql.md):
--   decisions  reject_broadcast answered 0 (and marked it rejected) for a broadcast awaiting
--              approval with nothing left to reject (its contacts deleted: done), which
--              approve_broadcast refuses; and neither said what became of the messages or what to
--              do (no DETAIL; the hint of a cancelled one said to cancel it). Both now refuse a
--              broadcast past deciding the same way (55000, message, DETAIL and HINT:
--              refuse_broadcast_decision, new); the same decision again is still no error (0).
--   refs       a broadcast with notify was accepted while a live ordinary message of its tenant
--              held its completion ref (0035 refused only the other order): its wave then
--              completed without its callback. check_completion_ref_free (triggers on
--              broadcast_requests for notify only) refuses it: 23505, constraint
--              completion_ref_free. Both checks take the lock reminderd.broadcast() takes on the
--              tenant and prefix, so of a message and a broadcast written at once the second is
--              refused (each read before the other committed, and both were accepted).
--   callbacks  complete_broadcasts wrote a second broadcast.completed callback for a wave reopened by
--              hand (completed_at set back to NULL): it links the wave's own callback again instead.
-- Rows written before: left as they are (a notify broadcast already beside a live message of its
-- ref completes without its callback, saying why, as before). Run by
-- migrations/versions/0036_broadcast_decisions.py in one transaction. History: once released,
-- never edited; a schema change is a new migration (and an edit of reminderd/sql/schema.sql).

-- Refuse (55000) deciding a broadcast that has nothing left to decide (migration 0036), in the
-- same words whichever the decision ('approve' or 'reject'): one that needs no approval, was
-- approved (for a rejection) or rejected (for an approval), was cancelled while it awaited one, or
-- awaits one with nothing more to stage and none of its rows awaiting approval (its contacts were
-- deleted: it is done). A message, a DETAIL saying what became of its messages, a HINT saying what
-- to do instead. approve_broadcast and reject_broadcast call it where they refuse.
CREATE FUNCTION reminderd.refuse_broadcast_decision(request reminderd.broadcast_requests, decision text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    decided text := format('%s at %s', request.decided_by,
                           to_char(request.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    cancel  text := 'To stop it, cancel it: reminderd.cancel_broadcast(tenant, id).';
    resend  text := 'Make a new broadcast to send it after all.';
    nothing text := 'It sends nothing already: there is nothing to stop.';
BEGIN
    CASE request.approval
    WHEN 'not_needed' THEN
        RAISE EXCEPTION 'broadcast % needs no approval: there is nothing to %', request.id, decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was within tenant "%s"''s approval_threshold: its messages are sent without '
                                  'a decision.', request.tenant_id),
                  HINT = cancel;
    WHEN 'approved' THEN
        RAISE EXCEPTION 'broadcast % was approved by %: there is nothing to %', request.id, decided, decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its messages were released to be sent when it was approved.', HINT = cancel;
    WHEN 'rejected' THEN
        RAISE EXCEPTION 'broadcast % was rejected by %: there is nothing to %', request.id, decided, decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its messages were cancelled when it was rejected.', HINT = resend;
    WHEN 'cancelled' THEN
        RAISE EXCEPTION 'broadcast % was cancelled while it awaited approval: there is nothing to %', request.id,
            decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its messages were cancelled at %s.',
                                  to_char(request.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  HINT = CASE decision WHEN 'approve' THEN resend ELSE nothing END;
    ELSE  -- awaiting, with nothing left (approve_broadcast and reject_broadcast test it)
        RAISE EXCEPTION 'broadcast % has nothing left to %: none of its messages awaits approval', request.id,
            decision
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its contacts were deleted or its messages cancelled: it is done, and sends nothing.',
                  HINT = CASE decision WHEN 'approve' THEN 'Make a new broadcast to send again.' ELSE nothing END;
    END CASE;
END
$$;

-- A broadcast waiting for approval goes ahead once a different person approves it; its rows
-- become pending (those whose time has passed meanwhile follow their backfill policy). The
-- approval covers the largest wave awaiting it (approved_contacts, migration 0028).
-- Approving an approved one again returns 0 and changes nothing (its decided_by stays), but never
-- for its creator (42501, migration 0031); one rejected, cancelled, needing no approval or with
-- nothing left to approve is 55000 (refuse_broadcast_decision, as reject_broadcast refuses).
CREATE OR REPLACE FUNCTION reminderd.approve_broadcast(tenant_id text, broadcast_id bigint, actor text DEFAULT NULL,
                                            note text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    request  reminderd.broadcast_requests;
    who      text;
    released integer;
BEGIN
    PERFORM reminderd.check_tenant(approve_broadcast.tenant_id);
    who := reminderd.acting_as(approve_broadcast.actor);
    SELECT * INTO request FROM reminderd.broadcast_requests r
    WHERE r.id = approve_broadcast.broadcast_id AND r.tenant_id = approve_broadcast.tenant_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %', approve_broadcast.tenant_id, approve_broadcast.broadcast_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF request.approval IN ('not_needed', 'rejected', 'cancelled') THEN
        PERFORM reminderd.refuse_broadcast_decision(request, 'approve');
    END IF;
    -- The creator is refused before "approved already": their own approval is never an answer.
    IF who = request.created_by THEN
        RAISE EXCEPTION 'broadcast % was created by %: another person must approve it', request.id, who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'High volumes need a second person: ask someone else to approve it.';
    END IF;
    IF request.approval = 'approved' THEN
        RETURN 0;  -- the same decision again: nothing changes
    END IF;
    -- (migration 0034) Staged, nothing more to stage, and none of its rows awaits approval (its
    -- contacts were deleted): an approval would release nothing (scheduled_messages_broadcast).
    IF request.ended_at IS NOT NULL AND NOT EXISTS (
        SELECT FROM reminderd.scheduled_messages m
        WHERE m.broadcast_id = request.id AND m.status = 'awaiting_approval' AND m.tenant_id = request.tenant_id
    ) THEN
        PERFORM reminderd.refuse_broadcast_decision(request, 'approve');
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'approved', decided_by = who, decided_at = now(), decision_note = approve_broadcast.note,
        updated_at = now(),
        approved_contacts = coalesce(
            (SELECT max(w.contacts) FROM (SELECT count(*) AS contacts FROM reminderd.scheduled_messages m
                                          WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id
                                            AND m.status = 'awaiting_approval'
                                          GROUP BY m.local_time) AS w),
            (SELECT count(*) FROM reminderd.audience_contacts(request.tenant_id, request.audience, request.contact_ids,
                                                              request.everyone)))
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'pending', last_event = 'approved',
        last_error = format('broadcast %s approved by %s', request.id, who)
                     || coalesce(': ' || approve_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id AND m.status = 'awaiting_approval';
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$$;

-- Rejected: every row of the broadcast is cancelled, and a recurring one stages no more.
-- Rejecting a rejected one again returns 0 and changes nothing; one approved, cancelled, needing
-- no approval or with nothing left to reject (migration 0036: it answered 0 and said 'rejected')
-- is 55000, refused as approve_broadcast refuses (refuse_broadcast_decision).
CREATE OR REPLACE FUNCTION reminderd.reject_broadcast(tenant_id text, broadcast_id bigint, actor text DEFAULT NULL,
                                           note text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    request   reminderd.broadcast_requests;
    who       text;
    cancelled integer;
BEGIN
    PERFORM reminderd.check_tenant(reject_broadcast.tenant_id);
    who := reminderd.acting_as(reject_broadcast.actor);
    SELECT * INTO request FROM reminderd.broadcast_requests r
    WHERE r.id = reject_broadcast.broadcast_id AND r.tenant_id = reject_broadcast.tenant_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no broadcast %', reject_broadcast.tenant_id, reject_broadcast.broadcast_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF request.approval = 'rejected' THEN
        RETURN 0;  -- the same decision again: nothing changes
    END IF;
    IF request.approval <> 'awaiting' OR (request.ended_at IS NOT NULL AND NOT EXISTS (
        SELECT FROM reminderd.scheduled_messages m
        WHERE m.broadcast_id = request.id AND m.status = 'awaiting_approval' AND m.tenant_id = request.tenant_id
    )) THEN
        PERFORM reminderd.refuse_broadcast_decision(request, 'reject');
    END IF;
    UPDATE reminderd.broadcast_requests r
    SET approval = 'rejected', decided_by = who, decided_at = now(), decision_note = reject_broadcast.note,
        ended_at = coalesce(r.ended_at, now()), ended_reason = format('rejected by %s', who), updated_at = now()
    WHERE r.id = request.id;
    UPDATE reminderd.scheduled_messages m
    SET status = 'cancelled', last_event = 'rejected', lease_expires_at = NULL,
        last_error = format('broadcast %s rejected by %s', request.id, who) || coalesce(': ' || reject_broadcast.note, ''),
        updated_at = now()
    WHERE m.broadcast_id = request.id AND m.tenant_id = request.tenant_id
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN cancelled;
END
$$;
REVOKE EXECUTE ON FUNCTION reminderd.refuse_broadcast_decision(reminderd.broadcast_requests, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminderd.refuse_broadcast_decision(reminderd.broadcast_requests, text)
    TO reminderd_app, reminderd_daemon, reminderd_api;

-- Refuse an ordinary message (not a broadcast's) whose ref is the completion callback's of one of
-- its tenant's broadcasts with notify (migration 0035): prefix#completed, or
-- prefix#completed#YYYYMMDDTHHMM for a recurring one's wave. Taken by the tenant's own row, that
-- wave would complete without its callback (complete_broadcasts). Only refs containing
-- '#completed' call it (the triggers' WHEN); a ref_prefix has no '#', so the prefix is what comes
-- before the first one. 23514, constraint completion_ref_reserved. The reverse, a notify broadcast
-- whose completion ref a live message holds already, is check_completion_ref_free's (migration
-- 0036); both take the lock reminderd.broadcast() takes on the tenant and prefix before they look,
-- so that of a message and a broadcast written at once the second waits and is refused.
CREATE OR REPLACE FUNCTION reminderd.check_completion_ref() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prefix text := split_part(NEW.ref_id, '#', 1);
BEGIN
    IF NEW.ref_id !~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$' THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.tenant_id || chr(31) || '#broadcast' || chr(31) || prefix, 0));
    IF EXISTS (SELECT FROM reminderd.broadcast_requests r
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

-- Refuse a broadcast with notify (written so, or changed to it) whose completion callback's ref
-- (prefix#completed, or prefix#completed#YYYYMMDDTHHMM for a recurring one's wave) a live
-- ordinary message of its tenant holds already (migration 0036): its wave would complete without
-- its callback. 23505, constraint completion_ref_free, naming the message. One that is no longer
-- live holds nothing (the callback is written beside it). Under the lock check_completion_ref
-- takes too (reminderd.broadcast() holds it already). Only broadcasts with notify call it.
CREATE FUNCTION reminderd.check_completion_ref_free() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    held record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.tenant_id || chr(31) || '#broadcast' || chr(31)
                                                   || NEW.ref_prefix, 0));
    -- refs prefix#completed and prefix#completed#…: '$' is the character after '#'.
    SELECT m.id, m.ref_id, m.status INTO held
    FROM reminderd.scheduled_messages m
    WHERE m.tenant_id = NEW.tenant_id AND m.broadcast_id IS NULL AND m.extra_of IS NULL
      AND (m.ref_id = NEW.ref_prefix || '#completed'
           OR (m.ref_id ~>=~ (NEW.ref_prefix || '#completed#') AND m.ref_id ~<~ (NEW.ref_prefix || '#completed$')))
      AND m.ref_id ~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$'
      AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
    ORDER BY m.id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'broadcast "%" of tenant "%" would notify with ref "%", which live message % (% / %) has',
            NEW.ref_prefix, NEW.tenant_id, held.ref_id, held.id, NEW.tenant_id, held.ref_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'completion_ref_free',
                  DETAIL = format('reminderd writes its broadcast.completed callback as "%s" when a wave ends; '
                                  'with message %s (%s) there, the wave would complete without it.',
                                  held.ref_id, held.id, held.status),
                  HINT = format('Give the broadcast another ref_prefix, cancel message %s first '
                                '(reminderd.cancel(%L, %L)), or leave notify out.', held.id, NEW.tenant_id,
                                held.ref_id);
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION reminderd.check_completion_ref_free() FROM PUBLIC;

-- A notify broadcast whose completion ref a live message holds (migration 0036): only broadcasts
-- with notify pay.
CREATE TRIGGER broadcast_requests_completion_ref_free_insert
    BEFORE INSERT ON reminderd.broadcast_requests
    FOR EACH ROW WHEN (NEW.notify)
    EXECUTE FUNCTION reminderd.check_completion_ref_free();
CREATE TRIGGER broadcast_requests_completion_ref_free_update
    BEFORE UPDATE OF notify, ref_prefix, tenant_id ON reminderd.broadcast_requests
    FOR EACH ROW WHEN (NEW.notify AND (NOT OLD.notify OR NEW.ref_prefix IS DISTINCT FROM OLD.ref_prefix
                                       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id))
    EXECUTE FUNCTION reminderd.check_completion_ref_free();

-- The daemon, now and then: fold each occurrence's count rows (more than fold_above) into one, and
-- mark occurrences whose rows have all ended completed, queueing the broadcast.completed callback
-- for those whose broadcast asked for one (a message like any other: signed, retried, audited;
-- created paused by 'tenant' while its tenant is paused, as any row inserted then is). Each wave on
-- its own (migration 0033): one whose callback cannot be queued (its ref taken by a live message,
-- say) is completed all the same, without one, and its broadcast's last_error says why; a passing
-- error (a deadlock, a lock timeout) fails the round instead, and the wave is tried again.
-- One caller at a time. A wave has one callback (migration 0036): one it has already (a DBA set
-- completed_at back to NULL by hand, to retry a callback that was not queued) is linked again, not
-- written twice. Returns the occurrences completed.
CREATE OR REPLACE FUNCTION reminderd.complete_broadcasts(batch integer DEFAULT 100, fold_above integer DEFAULT 20)
RETURNS TABLE (broadcast_id bigint, tenant_id text, occurrence timestamp, message_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    folded       record;
    done         record;
    callback_ref text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('reminderd.complete_broadcasts')) THEN
        RETURN;
    END IF;
    FOR folded IN
        SELECT k.broadcast_id, k.occurrence FROM reminderd.broadcast_counts k
        GROUP BY 1, 2 HAVING count(*) > complete_broadcasts.fold_above LIMIT complete_broadcasts.batch
    LOOP
        WITH gone AS (
            DELETE FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = folded.broadcast_id AND k.occurrence = folded.occurrence
            RETURNING k.*
        )
        INSERT INTO reminderd.broadcast_counts
            (broadcast_id, occurrence, tenant_id, waiting, held, sent, failed, expired, cancelled)
        SELECT g.broadcast_id, g.occurrence, g.tenant_id, sum(g.waiting), sum(g.held), sum(g.sent), sum(g.failed),
               sum(g.expired), sum(g.cancelled)
        FROM gone g
        GROUP BY 1, 2, 3;
    END LOOP;
    FOR done IN
        SELECT o.broadcast_id, o.occurrence, r.tenant_id, o.contacts, r.ref_prefix, r.notify, r.callback_url,
               r.local_time IS NULL AS recurring, t.paused AS tenant_paused, totals.*
        FROM reminderd.broadcast_occurrences o
        JOIN reminderd.broadcast_requests r ON r.id = o.broadcast_id AND r.tenant_id = o.tenant_id
        JOIN reminderd.tenants t ON t.id = r.tenant_id
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(k.waiting), 0) AS waiting, coalesce(sum(k.held), 0) AS held,
                   coalesce(sum(k.sent), 0) AS sent, coalesce(sum(k.failed), 0) AS failed,
                   coalesce(sum(k.expired), 0) AS expired, coalesce(sum(k.cancelled), 0) AS cancelled
            FROM reminderd.broadcast_counts k
            WHERE k.broadcast_id = o.broadcast_id AND k.occurrence = o.occurrence AND k.tenant_id = r.tenant_id
        ) AS totals
        WHERE o.completed_at IS NULL AND totals.waiting + totals.held = 0
        ORDER BY o.staged_at
        LIMIT complete_broadcasts.batch
        FOR UPDATE OF o SKIP LOCKED
    LOOP
        broadcast_id := done.broadcast_id;
        tenant_id := done.tenant_id;
        occurrence := done.occurrence;
        message_id := NULL;
        callback_ref := done.ref_prefix || '#completed'
                        || CASE WHEN done.recurring THEN '#' || to_char(done.occurrence, 'YYYYMMDD"T"HH24MI') ELSE '' END;
        IF done.notify THEN
            SELECT m.id INTO message_id FROM reminderd.scheduled_messages m
            WHERE m.tenant_id = done.tenant_id AND m.ref_id = callback_ref AND m.broadcast_id = done.broadcast_id
              AND m.contact_id IS NULL
            ORDER BY m.id
            LIMIT 1;
        END IF;
        IF done.notify AND message_id IS NULL THEN
            BEGIN
                INSERT INTO reminderd.scheduled_messages
                    (tenant_id, ref_id, fire_at, payload, callback_url, broadcast_id, category, status, paused_by,
                     last_error)
                VALUES (done.tenant_id, callback_ref, now(),
                        jsonb_build_object(
                            'event', 'broadcast.completed', 'broadcast_id', done.broadcast_id,
                            'ref_prefix', done.ref_prefix,
                            'occurrence', to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'),
                            'counts', jsonb_build_object(
                                'staged', done.sent + done.failed + done.expired + done.cancelled,
                                'sent', done.sent, 'failed', done.failed, 'expired', done.expired,
                                'cancelled', done.cancelled)),
                        done.callback_url, done.broadcast_id, 'transactional',
                        CASE WHEN done.tenant_paused THEN 'paused' ELSE 'pending' END,
                        CASE WHEN done.tenant_paused THEN 'tenant' END,
                        CASE WHEN done.tenant_paused THEN 'tenant paused' END)
                RETURNING id INTO message_id;
            -- This wave only, for an error that says the row cannot be written (its ref taken, a
            -- value or a trigger refusing it): completed without its callback, and why. A passing
            -- one (deadlock, lock timeout, serialization failure, cancel, shutdown) is the round's:
            -- raised, so the wave waits for the next round and gets its callback then.
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception OR no_data_found
                           OR program_limit_exceeded OR insufficient_privilege OR feature_not_supported THEN
                UPDATE reminderd.broadcast_requests r
                SET last_error = format('broadcast.completed callback of occurrence %s not queued: %s',
                                        to_char(done.occurrence, 'YYYY-MM-DD"T"HH24:MI:SS'), SQLERRM),
                    updated_at = now()
                WHERE r.id = done.broadcast_id AND r.tenant_id = done.tenant_id;
            END;
        END IF;
        UPDATE reminderd.broadcast_occurrences o
        SET completed_at = now(), completion_message_id = message_id
        WHERE o.broadcast_id = done.broadcast_id AND o.occurrence = done.occurrence;
        RETURN NEXT;
    END LOOP;
END
$$;
