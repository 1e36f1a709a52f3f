"""Unit tests for reminderd.registry: the contact the rescuer trusts, and the claim book the
reconciler compares with the database. Pure: times are passed in."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import cast

from structlog.testing import capture_logs
from support import make_job

from reminderd.housekeeping import ClaimReconciler, Heartbeat, Housekeeping
from reminderd.registry import ClaimBook, Contact, Identity
from reminderd.settings import Settings
from reminderd.store import Store

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PICKED = T0 - timedelta(seconds=3)


def test_contact_runs_from_the_first_beat_while_beats_keep_coming_within_one_and_a_half_intervals() -> None:
    contact = Contact(heartbeat_s=5.0)
    assert contact.unbroken_since(100.0) is None  # no beat yet
    contact.answered(T0, 100.0)
    contact.answered(T0 + timedelta(seconds=5), 105.0)
    contact.answered(T0 + timedelta(seconds=12), 112.0)  # 7 s: late, within 7.5 s
    assert contact.unbroken_since(119.0) == T0
    assert contact.unbroken_since(119.6) is None  # 7.6 s since the last beat: broken now


def test_a_late_beat_starts_a_new_run_as_does_a_failed_one() -> None:
    contact = Contact(heartbeat_s=5.0)
    contact.answered(T0, 100.0)
    contact.answered(T0 + timedelta(seconds=38), 138.0)  # the database stalled for half a minute
    assert contact.unbroken_since(139.0) == T0 + timedelta(seconds=38)
    assert contact.last_beat_at == T0 + timedelta(seconds=38)  # the rescuer judges within this beat
    contact.failed()
    assert contact.unbroken_since(139.0) is None and contact.last_beat_at is None
    contact.answered(T0 + timedelta(seconds=40), 140.0)
    assert contact.unbroken_since(141.0) == T0 + timedelta(seconds=40)


def test_the_book_holds_claims_until_their_outcome_is_recorded() -> None:
    book = ClaimBook()
    first, second = make_job(id=1, picked_at=PICKED), make_job(id=2, picked_at=T0)
    book.claimed([first, second])
    assert book.holding == 2 and book.last_claim_at == T0
    book.finished(first)
    assert book.holding == 1
    assert book.compare({2: T0}).never_received == [] and book.compare({2: T0}).taken_away == []


def test_rows_picked_by_this_daemon_that_it_never_received_are_a_lost_claim_reply() -> None:
    book = ClaimBook()
    book.claimed([make_job(id=1, picked_at=PICKED)])
    comparison = book.compare({1: PICKED, 7: T0, 8: T0})
    assert sorted(comparison.never_received) == [(7, T0), (8, T0)]
    assert comparison.taken_away == []


def test_a_row_held_here_under_an_older_claim_is_both_taken_away_and_not_received() -> None:
    # The lease ran out, the row was reaped and this daemon claimed it again: the old claim is gone.
    book = ClaimBook()
    book.claimed([make_job(id=1, picked_at=PICKED)])
    comparison = book.compare({1: T0})
    assert comparison.never_received == [(1, T0)]
    assert comparison.taken_away == [(1, PICKED)]


def test_rows_taken_away_are_revoked_until_the_sender_skips_them() -> None:
    book = ClaimBook()
    job, other = make_job(id=1, picked_at=PICKED), make_job(id=2, picked_at=PICKED)
    book.claimed([job, other])
    comparison = book.compare({2: PICKED})  # rescued while this daemon was taken for dead
    assert comparison.taken_away == [(1, PICKED)]
    book.revoke([*comparison.taken_away, (3, PICKED)])  # a claim not held here is not revoked
    assert book.is_revoked(job) and not book.is_revoked(other)
    assert not book.is_revoked(make_job(id=3, picked_at=PICKED))
    book.finished(job)
    assert not book.is_revoked(job) and book.holding == 1


def test_rows_left_to_their_lease_are_never_handed_back_and_forgotten_once_gone() -> None:
    book = ClaimBook()
    job = make_job(id=1, picked_at=PICKED)
    book.claimed([job])
    book.left_to_lease(job)  # its outcome could not be written: another daemon redelivers it
    assert book.holding == 1
    assert book.compare({1: PICKED}).never_received == []
    assert book.compare({}).never_received == [] and book.holding == 0  # reaped or rescued since


def test_identity_publishes_the_settings_and_is_unique_per_start() -> None:
    settings = Settings(database_url="postgresql://app:secret@db/app")
    one, two = Identity.of_this_process(settings), Identity.of_this_process(settings)
    assert one.id != two.id and one.pid == two.pid
    # No secret's value (the URL's password here); a key may name one (session_secret).
    assert one.settings["heartbeat"] == 5.0 and "secret" not in str(list(one.settings.values()))
    with_session = Identity.of_this_process(replace(settings, session_secret="a-session-secret-of-ours"))
    assert with_session.settings["session_secret"] == "<hidden>"
    assert "a-session-secret-of-ours" not in str(with_session.settings)
    assert one.short == str(one.id)[:8]


class StalledStore:
    """Every call fails as a stalled database's do."""

    async def heartbeat(self, *args: object, **kwargs: object) -> None:
        raise TimeoutError

    async def held_by(self, *args: object) -> None:
        raise TimeoutError


async def test_liveness_retries_a_failed_heartbeat_within_half_an_interval_and_breaks_contact() -> None:
    settings = Settings(database_url="postgresql://db/app", heartbeat_s=4.0, dead_after_s=12.0)
    identity = Identity.of_this_process(settings)
    store = cast(Store, StalledStore())
    contact = Contact(settings.heartbeat_s)
    contact.answered(T0, time.monotonic())
    heartbeat = Heartbeat(identity, store, contact, ClaimBook(), stopping=lambda: False)
    liveness = Housekeeping.for_liveness(settings, heartbeat, ClaimReconciler(identity, store, ClaimBook()),
                                         rng=random.Random(3))
    maintenance = Housekeeping([ClaimReconciler(identity, store, ClaimBook())],
                               poll_interval_s=settings.heartbeat_s, rng=random.Random(3))
    with capture_logs() as logs:
        await liveness.run_once()
        await maintenance.run_once()
    assert contact.unbroken_since(time.monotonic()) is None
    beat, reconcile, maintained = logs
    assert (beat["service"], reconcile["service"]) == ("heartbeat", "reconcile")
    assert beat["retry_in_s"] <= 2.0 and reconcile["retry_in_s"] <= 2.0  # before the next beat is due
    assert maintained["retry_in_s"] >= 4.0  # maintenance services back off from two poll intervals
