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
--              schedule_set (replaced) takes those locks after its refs' ones, in one order, before
--              writing; the trigger waits for one only in a transaction that has written nothing
--              (any other writer meanwhile is refused, 55P03): no batch deadlocks on them with
--              another batch or with a broadcast staging a row the batch wrote.
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
-- so that of a message and a broadcast written at once the second waits and is refused. Only a
-- transaction that has written nothing yet waits for it (one that has may hold a row the broadcast
-- waits for: a deadlock); schedule_set takes it with its refs' locks before writing anything; any
-- other writer of such a ref while that broadcast is being written is refused, 55P03, to try again.
CREATE OR REPLACE FUNCTION reminderd.check_completion_ref() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prefix   text := split_part(NEW.ref_id, '#', 1);
    lock_key bigint := hashtextextended(NEW.tenant_id || chr(31) || '#broadcast' || chr(31) || prefix, 0);
BEGIN
    IF NEW.ref_id !~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$' THEN
        RETURN NEW;
    END IF;
    -- Waited for only by a transaction that has written nothing yet (schedule(), a first INSERT):
    -- one that has may hold a row that the broadcast() holding the lock waits for, a deadlock.
    -- schedule_set took it before writing anything (a re-take, granted at once); any other writer
    -- of such a ref while a broadcast of its prefix is being written is refused, to try again.
    IF NOT pg_try_advisory_xact_lock(lock_key) THEN
        IF pg_current_xact_id_if_assigned() IS NULL THEN
            PERFORM pg_advisory_xact_lock(lock_key);
        ELSE
            RAISE EXCEPTION 'ref "%" of message % / % cannot be checked now: broadcast "%" of tenant "%" is being '
                            'written', NEW.ref_id, NEW.tenant_id, NEW.ref_id, prefix, NEW.tenant_id
                USING ERRCODE = 'lock_not_available',
                      DETAIL = format('A ref "%s#completed…" is the broadcast.completed callback''s of a broadcast '
                                      'with notify: whether it is taken is known once that broadcast is committed.',
                                      prefix),
                      HINT = 'Try again in a moment.';
        END IF;
    END IF;
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

-- Several messages at once, set-based: what reminderd.schedule_many() tries first. The rules of
-- reminderd.schedule_item() (so of schedule() and schedule_recurring()), the same replacement,
-- the same identical-call answer, rows, events and results, in a few statements for the whole
-- batch instead of a dozen per item: the refs' advisory locks, then the broadcast lock of each
-- completion-callback ref's prefix (prefix#completed…, which check_completion_ref re-takes:
-- migration 0036), in a fixed order and before anything is written, so two batches never
-- deadlock on each other nor on a broadcast() being staged; one statement that checks every item
-- and finds the identical and the live rows; one UPDATE cancelling the live rows being replaced (as cancel_live() does);
-- one INSERT of the new messages. As schedule() since 0009: an item names no contact (the type
-- has no contact_id), so its zone is its own (timezone_source 'message'), a contact's message is
-- never identical to it, its wall time is kept in local_time, and a row awaiting approval is live
-- (replaced). Recurring items go through schedule_item() one by one, in the same transaction.
-- The refs must be distinct (given twice, the later item replaces the earlier one: that is the
-- item-by-item path's), and anything schedule_item() would refuse raises here too, without saying
-- which item: schedule_many() then undoes this call and schedules the items one by one, which
-- says which and why. Rows in no particular order.
CREATE OR REPLACE FUNCTION reminderd.schedule_set(tenant_id text, items reminderd.schedule_item_v2[])
RETURNS SETOF reminderd.item_scheduled_v1
LANGUAGE plpgsql
-- Its statements are planned once, not at each call: a custom plan for a batch of a few items
-- would cost more than writing them (their generic plans suit 1 to 1,000 items alike).
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    refused   boolean;
    recurring integer[];                    -- positions of the recurring items
    kept      reminderd.item_scheduled_v1[];  -- one-offs an identical call made: their message
    fresh     reminderd.item_scheduled_v1[];  -- one-offs to insert, fire_at their due instant
    replacing text[];                       -- the refs whose live rows the fresh ones replace
    zones     text[];                       -- each item's zone and its source, by position
    sources   text[];
    position  integer;
    done      record;
    one       reminderd.item_scheduled_v1;
BEGIN
    -- The refs' locks, then (migration 0036) the lock reminderd.broadcast() takes on the prefix of
    -- each completion-callback ref: the order schedule() takes them in (its ref's, then its
    -- trigger's), each set sorted.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT false AS prefix, hashtextextended(schedule_set.tenant_id || chr(31) || i.ref_id, 0) AS key
          FROM unnest(schedule_set.items) i
          UNION
          SELECT true, hashtextextended(schedule_set.tenant_id || chr(31) || '#broadcast' || chr(31)
                                        || split_part(i.ref_id, '#', 1), 0)
          FROM unnest(schedule_set.items) i
          WHERE i.ref_id ~ '^[^#]+#completed(#[0-9]{8}T[0-9]{4})?$'
          ORDER BY 1, 2) k;
    -- After the locks, so in a snapshot that sees every earlier call for these refs. same: the
    -- message an identical call made (schedule()'s rule); live: the ref's live row (not an extra
    -- occurrence); doomed: whether the ref has anything live that cancel_live() would cancel.
    SELECT NOT EXISTS (SELECT FROM reminderd.tenants t WHERE t.id = schedule_set.tenant_id)
           OR bool_or(coalesce(i.ref_id, '') = ''
                   OR (i.cron IS NULL AND i.rrule IS NULL
                       AND (num_nonnulls(i.fire_at, i.fire_in, i.local_time) <> 1 OR i.fire_in < interval '0'
                            OR NOT isfinite(i.due)
                            OR i.due > now() + (SELECT c.value::interval FROM reminderd.config c
                                                WHERE c.key = 'horizon'))))
               OR count(DISTINCT i.ref_id) <> count(*),
           array_agg(i.item) FILTER (WHERE i.cron IS NOT NULL OR i.rrule IS NOT NULL),
           array_agg(ROW(i.item, same.id,
                         CASE WHEN same.id = live.id OR (live.id IS NULL AND same.status = 'sent') THEN 'unchanged'
                              WHEN live.id IS NOT NULL THEN 'replaced' ELSE 'created' END,
                         same.status, same.fire_at)::reminderd.item_scheduled_v1)
               FILTER (WHERE same.id IS NOT NULL),
           array_agg(ROW(i.item, NULL, CASE WHEN live.id IS NOT NULL THEN 'replaced' ELSE 'created' END,
                         NULL, i.due)::reminderd.item_scheduled_v1)
               FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL),
           array_agg(i.ref_id) FILTER (WHERE i.cron IS NULL AND i.rrule IS NULL AND same.id IS NULL AND live.doomed),
           array_agg(i.zone ORDER BY i.item), array_agg(i.source ORDER BY i.item)
    INTO refused, recurring, kept, fresh, replacing, zones, sources
    FROM (SELECT z.*,
                 -- A time that is no time (migration 0021) stands for infinity: refused above.
                 CASE WHEN z.cron IS NULL AND z.rrule IS NULL
                      THEN coalesce(z.fire_at,
                                    CASE WHEN z.fire_in > interval '200000 years' THEN 'infinity'
                                         ELSE now() + z.fire_in END,
                                    CASE WHEN NOT isfinite(z.local_time) THEN 'infinity'
                                         ELSE reminderd.local_instant(z.local_time, z.zone) END) END AS due
          FROM (SELECT u.*, u.ordinality::integer AS item,
                       coalesce(c.zone[1], coalesce(u.timezone, 'UTC')) AS zone,
                       coalesce(c.zone[2], 'message') AS source
                FROM unnest(schedule_set.items) WITH ORDINALITY AS u
                -- A contact's zone (reminderd.message_timezone: P0002 for an unknown one), only for
                -- the items that name one.
                LEFT JOIN LATERAL (
                    SELECT ARRAY[t.zone, t.source] AS zone
                    FROM reminderd.message_timezone(schedule_set.tenant_id, u.contact_id, u.timezone) AS t
                    WHERE u.contact_id IS NOT NULL
                ) c ON true) z) i
    LEFT JOIN LATERAL (
        SELECT m.id, m.status, m.fire_at
        FROM reminderd.scheduled_messages m
        WHERE i.cron IS NULL AND i.rrule IS NULL
          AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'sent')
          AND m.cron IS NULL AND m.rrule IS NULL
          AND m.payload = coalesce(i.payload, '{}')
          AND m.callback_url IS NOT DISTINCT FROM i.callback_url
          AND m.max_attempts IS NOT DISTINCT FROM i.max_attempts
          AND m.timezone = i.zone
          AND m.contact_id IS NOT DISTINCT FROM i.contact_id
          AND m.category = coalesce(i.category, 'transactional')
          AND m.calendar IS NOT DISTINCT FROM i.calendar
          AND m.holiday_rule IS NOT DISTINCT FROM i.holiday_rule
          AND m.backfill IS NOT DISTINCT FROM i.backfill
          AND m.max_lateness IS NOT DISTINCT FROM i.max_lateness
          AND CASE WHEN i.fire_in IS NULL
                   THEN coalesce(m.scheduled_for, m.fire_at) = i.due
                   ELSE abs(extract(epoch FROM coalesce(m.scheduled_for, m.fire_at) - m.created_at)
                            - extract(epoch FROM i.fire_in)) < 1 END
        ORDER BY m.id DESC
        LIMIT 1
    ) same ON true
    LEFT JOIN LATERAL (
        SELECT max(m.id) FILTER (WHERE m.extra_of IS NULL) AS id, count(*) > 0 AS doomed
        FROM reminderd.scheduled_messages m
        WHERE i.cron IS NULL AND i.rrule IS NULL
          AND m.tenant_id = schedule_set.tenant_id AND m.ref_id = i.ref_id
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval')
    ) live ON true;
    IF refused THEN
        RAISE EXCEPTION 'this batch is scheduled item by item (reminderd.schedule_item)'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A ref is given twice, or an item is refused: schedule_many() says which.';
    END IF;
    FOREACH position IN ARRAY coalesce(recurring, '{}') LOOP
        done := reminderd.schedule_item(schedule_set.tenant_id, schedule_set.items[position]);
        one := ROW(position, done.message_id, done.result, done.status, done.fire_at);
        RETURN NEXT one;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(kept);
    IF fresh IS NULL THEN
        RETURN;
    END IF;
    IF replacing IS NOT NULL THEN
        UPDATE reminderd.scheduled_messages m
        SET status = 'cancelled', last_error = 'replaced by a new schedule', lease_expires_at = NULL,
            updated_at = now(), last_event = 'replaced'
        WHERE m.tenant_id = schedule_set.tenant_id AND m.ref_id = ANY (replacing)
          AND m.status IN ('pending', 'picked', 'paused', 'awaiting_approval');
    END IF;
    RETURN QUERY
    WITH given AS (
        SELECT f.item, f.result, f.fire_at AS due, i.*
        FROM unnest(fresh) f
        JOIN unnest(schedule_set.items) WITH ORDINALITY AS i ON i.ordinality = f.item
    ), inserted AS (
        INSERT INTO reminderd.scheduled_messages
            (tenant_id, ref_id, fire_at, payload, callback_url, max_attempts, timezone, category, calendar,
             holiday_rule, backfill, max_lateness, local_time, contact_id, timezone_source)
        SELECT schedule_set.tenant_id, g.ref_id, g.due, coalesce(g.payload, '{}'), g.callback_url, g.max_attempts,
               zones[g.item], coalesce(g.category, 'transactional'), g.calendar, g.holiday_rule,
               g.backfill, g.max_lateness, g.local_time, g.contact_id, sources[g.item]
        FROM given g
        ORDER BY g.item
        RETURNING id, ref_id, status, fire_at
    )
    SELECT g.item, n.id, g.result, n.status, n.fire_at
    FROM given g
    JOIN inserted n ON n.ref_id = g.ref_id;
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
