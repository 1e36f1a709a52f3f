"""Fair and bounded sending (migration 0010) against a real PostgreSQL: the fair claim, tenant and
endpoint limits that hold rows back without dropping them, frequency caps, endpoint health (the
circuit breaker, disabling on 410 or after days of failures, enabling again), usage metering."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support import LOOKBACK_S, TEST_SECRET, db_now, drain, fast_settings, near, poll_until

from reminderd import outcome as outcome_module
from reminderd import worker as worker_module
from reminderd.exceptions import DatabaseUnavailable
from reminderd.jobs import Job
from reminderd.lifecycle import Event, Status
from reminderd.outcome import AttemptResult, Outcome
from reminderd.queries import QUERIES
from reminderd.store import Claim, Store
from reminderd.testing import Receiver, add_tenant

LEASE_S = 300.0


async def due_rows(
    db: asyncpg.Connection,
    tenant: str,
    count: int,
    *,
    category: str = "transactional",
    ago_s: float = 1.0,
    prefix: str | None = None,
    recipient: str | None = None,
    spread_ms: float = 0.0,
) -> None:
    """`count` rows of `tenant` due `ago_s` ago (the i-th `spread_ms` later than the one before)."""
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category, recipient)"
        " SELECT $1, $2 || i,"
        "        now() - make_interval(secs => $3) + make_interval(secs => i * $6 / 1000.0), $4, $5"
        " FROM generate_series(1, $7) AS i",
        tenant,
        prefix or f"{tenant}:{category}:",
        ago_s,
        category,
        recipient,
        spread_ms,
        count,
    )


async def claim(store: Store, batch_size: int = 100, default_max_in_flight: int = 164) -> Claim:
    return await store.claim_due(
        lookback_s=LOOKBACK_S,
        batch_size=batch_size,
        lease_s=LEASE_S,
        default_max_in_flight=default_max_in_flight,
    )


# The fair claim -------------------------------------------------------------------------------


async def test_a_small_tenant_gets_its_share_of_a_claim_beside_a_big_backlog(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db, "big", "https://big.example/cb")
    await add_tenant(db, "small", "https://small.example/cb")
    await due_rows(db, "big", 1000, category="marketing", ago_s=10)  # due first, and many
    await due_rows(db, "small", 10, ago_s=1)

    first = await claim(store, batch_size=20)

    tenants = [job.tenant_id for job in first.jobs]
    assert tenants.count("small") == 10 and tenants.count("big") == 10
    assert first.scanned_to == "small"  # the skip scan went over both tenants


async def test_transactional_rows_go_before_marketing_rows_of_the_same_tenant(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db, "acme", "https://acme.example/cb")
    await due_rows(db, "acme", 300, category="marketing", ago_s=30)
    await due_rows(db, "acme", 3, category="reminder", ago_s=20)
    await due_rows(db, "acme", 3, category="transactional", ago_s=1)

    first = await claim(store, batch_size=5)

    assert [job.category for job in first.jobs] == ["transactional"] * 3 + ["reminder"] * 2
    priorities = await db.fetch(
        "SELECT DISTINCT category, priority FROM reminderd.scheduled_messages ORDER BY 2"
    )
    assert [(r["category"], r["priority"]) for r in priorities] == [
        ("transactional", 0),
        ("reminder", 1),
        ("marketing", 2),
    ]


async def test_with_more_due_tenants_than_a_batch_each_claim_goes_on_where_the_last_stopped(
    db: asyncpg.Connection, store: Store
) -> None:
    for number in range(30):
        await add_tenant(db, f"t{number:02}", "https://many.example/cb")
        await due_rows(db, f"t{number:02}", 3)
    seen: list[str] = []
    scanned_to = None
    for _ in range(3):
        result = await store.claim_due(
            lookback_s=LOOKBACK_S, batch_size=10, lease_s=LEASE_S, scanned_to=scanned_to
        )
        scanned_to = result.scanned_to
        seen += [job.tenant_id for job in result.jobs]
    # A scan covers 4 batches' worth of tenants (40): all 30 fit. Each claim serves 10 of them, one
    # row each, round-robin from the tenant after the one served last.
    assert len(seen) == 30 and len(set(seen)) == 30


async def test_a_worker_sends_the_small_tenants_rows_early_in_a_big_backlog(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await add_tenant(db, "big", receiver.url)
    await add_tenant(db, "small", receiver.url)
    await due_rows(db, "big", 400, category="marketing", ago_s=5)
    await due_rows(db, "small", 20, ago_s=1)

    await drain(fast_settings(database_url, batch_size=40, concurrency=8), timeout_s=60)

    order = [item.message["tenant_id"] for item in receiver.received]
    assert len(order) == 420
    last_small = max(index for index, tenant in enumerate(order) if tenant == "small")
    assert last_small < 40 + 8 + 40, order[:100]  # in the first claims, not after the backlog


# Tenant limits --------------------------------------------------------------------------------


async def test_over_max_per_second_rows_stay_pending_in_order_and_say_so(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db, "acme", "https://acme.example/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_second = 5 WHERE id = 'acme'")
    await due_rows(db, "acme", 20, spread_ms=1)

    first = await claim(store)
    second = await claim(store)

    assert [job.ref_id for job in first.jobs] == [f"acme:transactional:{i}" for i in range(1, 6)]
    assert second.jobs == []
    [held] = second.held
    assert (held.tenant_id, held.reason, held.rows) == ("acme", "tenant_per_second", 15)
    assert held.retry_in_s is not None and 0 < held.retry_in_s <= 1.05
    rows = await db.fetch(
        "SELECT status, last_event, last_error FROM reminderd.scheduled_messages WHERE status = 'pending'"
    )
    assert len(rows) == 15
    assert {(r["last_event"], r["last_error"]) for r in rows} == {
        ("held", "held: tenant acme is at its max_per_second (5)")
    }
    events = await db.fetch("SELECT event, reason FROM reminderd.events WHERE event = 'held'")
    assert len(events) == 15  # once per row, though two claims held them
    usage = await db.fetchrow("SELECT held, scheduled FROM reminderd.usage_daily WHERE tenant_id = 'acme'")
    assert (usage["held"], usage["scheduled"]) == (15, 20)


async def test_max_per_hour_is_the_subscription_limit(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db, "acme", "https://acme.example/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_hour = 3, max_per_second = 100 WHERE id = 'acme'")
    await due_rows(db, "acme", 10)

    assert len((await claim(store)).jobs) == 3
    again = await claim(store)
    assert again.jobs == [] and [h.reason for h in again.held] == ["tenant_per_hour"]
    assert again.held[0].retry_in_s is not None and again.held[0].retry_in_s <= 3660
    assert (
        await db.fetchval(
            "SELECT count(*) FROM reminderd.scheduled_messages WHERE last_error LIKE "
            "'held: tenant acme is at its max_per_hour (3)'"
        )
        == 7
    )


async def test_a_limited_tenant_does_not_hold_back_another(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db, "limited", "https://one.example/cb")
    await add_tenant(db, "free", "https://two.example/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_second = 2 WHERE id = 'limited'")
    await due_rows(db, "limited", 50)
    await due_rows(db, "free", 50)

    result = await claim(store, batch_size=100)

    tenants = [job.tenant_id for job in result.jobs]
    assert tenants.count("limited") == 2 and tenants.count("free") == 50


async def test_limits_defer_and_never_drop_even_past_max_lateness(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("UPDATE reminderd.tenants SET max_per_second = 10 WHERE id = 'acme'")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, max_lateness)"
        " SELECT 'acme', 'r' || i, now() + make_interval(secs => i / 1000.0), interval '1 second'"
        " FROM generate_series(1, 30) AS i"
    )

    await drain(fast_settings(database_url), due_within_s=5, timeout_s=60)

    statuses = await db.fetch("SELECT status, count(*) FROM reminderd.scheduled_messages GROUP BY 1")
    assert {r["status"]: r["count"] for r in statuses} == {"sent": 30}  # 3 s of sending, none expired
    arrivals = [item.message["ref_id"] for item in receiver.received]
    assert arrivals == [f"r{i}" for i in range(1, 31)] or sorted(arrivals) == sorted(set(arrivals))
    sent = await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages ORDER BY sent_at, fire_at")
    first_ten = {r["ref_id"] for r in sent[:10]}
    assert first_ten == {f"r{i}" for i in range(1, 11)}  # in order: the budget went to the oldest
    # The limit holds where it is enforced, at claim time (picked_at, the claim's now()): never more
    # than 10 in any second. At the receiver, a loaded machine's send delays may bunch two windows'
    # worth of arrivals into one second (20 in the suite under load), whatever the claims did.
    grants = sorted(r["picked_at"].timestamp() for r in await db.fetch(
        "SELECT picked_at FROM reminderd.scheduled_messages"))
    for start in grants:
        assert sum(1 for t in grants if start <= t < start + 1.0) <= 10
    assert grants[-1] - grants[0] >= 1.9  # 30 at 10 a second: three windows (arrivals may bunch, as above)


# Endpoint limits ------------------------------------------------------------------------------


async def test_an_endpoints_max_in_flight_counts_every_daemons_claims(
    db: asyncpg.Connection, store: Store, database_url: str
) -> None:
    await add_tenant(db, "a", "https://shared.example/a")
    await add_tenant(db, "b", "https://shared.example:443/b")
    await db.execute("UPDATE reminderd.endpoints SET max_in_flight = 3 WHERE endpoint = 'shared.example:443'")
    await due_rows(db, "a", 10)
    await due_rows(db, "b", 10)
    other = await Store.connect(database_url)
    try:
        first = await claim(store)
        second = await claim(other)
    finally:
        await other.close()

    assert len(first.jobs) == 3 and {job.endpoint for job in first.jobs} == {"shared.example:443"}
    assert second.jobs == [] and {h.reason for h in second.held} == {"endpoint_in_flight"}
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE last_event = 'held'") == 0


async def test_an_endpoints_rate_holds_rows_and_says_so(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db, "acme", "http://127.0.0.1:9/cb")
    await db.execute("UPDATE reminderd.endpoints SET max_per_second = 4 WHERE endpoint = '127.0.0.1:9'")
    await due_rows(db, "acme", 10)

    assert len((await claim(store)).jobs) == 4
    again = await claim(store)
    assert again.jobs == [] and [h.reason for h in again.held] == ["endpoint_per_second"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM reminderd.scheduled_messages WHERE last_error ="
            " 'held: endpoint 127.0.0.1:9 is at its max_per_second'"
        )
        == 6
    )


# The claim's parameters (queries.sql, claim): batch 10, no default max_in_flight, no daemon.
CLAIM_ARGS = (LOOKBACK_S, 10, LEASE_S, "all", 3600.0, 2147483647, None, None)


async def test_a_claim_that_started_before_a_later_claim_committed_never_moves_a_window_back(
    db: asyncpg.Connection, store: Store, database_url: str
) -> None:
    # Claim A's statement time (now()) is older than claim B's, but A reaches the budgets after B
    # committed. Its grants must go on B's newer slot: written at A's older slot, they would age out
    # of the rolling second early, and a claim within B's second would grant them again.
    await add_tenant(db, "acme", "http://127.0.0.1:9/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_second = 10 WHERE id = 'acme'")
    await db.execute("UPDATE reminderd.endpoints SET max_per_second = 10 WHERE endpoint = '127.0.0.1:9'")
    await due_rows(db, "acme", 40)
    a = await asyncpg.connect(database_url)
    try:
        async with a.transaction():
            a_now = await a.fetchval("SELECT now()")
            half_a_second_later = "SELECT clock_timestamp() > $1::timestamptz + interval '0.5 s'"
            await poll_until(lambda: db.fetchval(half_a_second_later, a_now))
            b = await claim(store, batch_size=6)
            b_slot = await db.fetchval("SELECT reminderd.second_slot($1)", b.jobs[0].picked_at)
            rows_a = await a.fetch(QUERIES["claim"], *CLAIM_ARGS)
    finally:
        await a.close()
    assert len(b.jobs) == 6 and sum(1 for r in rows_a if r["id"] is not None) == 4
    assert b_slot - await db.fetchval("SELECT reminderd.second_slot($1)", a_now) >= 25
    # A claim 0.98 s after B (49 slots of 20 ms) still counts all ten, in the tenant's and the
    # endpoint's window.
    for table in ("tenant_budgets", "endpoints"):
        slot, in_bs_second = await db.fetchrow(
            f"SELECT second_slot, reminderd.window_sum(reminderd.window_at(second_counts, second_slot, $1, 51))"
            f" FROM reminderd.{table}",
            b_slot + 49,
        )
        assert (table, slot, in_bs_second) == (table, b_slot, 10)


async def test_a_claim_older_than_the_budgets_newest_minute_adds_to_that_minute(
    db: asyncpg.Connection, store: Store
) -> None:
    # The hour window likewise, per minute slot: the budget as a claim that started a minute
    # boundary later left it (2 sent in its minute); this claim's now() is in the minute before.
    await add_tenant(db, "acme", "https://acme.example/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_hour = 5 WHERE id = 'acme'")
    await due_rows(db, "acme", 10)
    async with db.transaction():
        newest = await db.fetchval(
            "UPDATE reminderd.tenant_budgets SET hour_slot = reminderd.hour_slot(now()) + 1,"
            " hour_counts = array_fill(0, ARRAY[60]) || 2 WHERE tenant_id = 'acme' RETURNING hour_slot"
        )
        rows = await db.fetch(QUERIES["claim"], *CLAIM_ARGS)
    assert sum(1 for r in rows if r["id"] is not None) == 3
    slot, counts = await db.fetchrow("SELECT hour_slot, hour_counts FROM reminderd.tenant_budgets")
    assert (slot, counts[-1], sum(counts)) == (newest, 5, 5)


async def test_rows_a_limit_kept_behind_the_held_ones_expire_saying_so_and_count_as_held(
    db: asyncpg.Connection, store: Store
) -> None:
    # A claim judges a batch's worth of a tenant's queue: 3 sent, then 5 marked held. The 32
    # behind them wait for the same limit; when the lookback expires them, their reason says so and
    # the usage counts them held, once each.
    await add_tenant(db, "acme", "https://acme.example/cb")
    await add_tenant(db, "free", "https://free.example/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_hour = 3 WHERE id = 'acme'")
    await due_rows(db, "acme", 40, ago_s=10, spread_ms=1)
    await due_rows(db, "free", 2, ago_s=10)
    assert len((await claim(store, batch_size=5)).jobs) == 5  # 3 of acme, 2 of free
    [held_back] = (await claim(store, batch_size=5)).held  # acme's next 5 judged, and marked
    assert (held_back.reason, held_back.marked) == ("tenant_per_hour", 5)
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent' WHERE status = 'picked'")
    await due_rows(db, "free", 1, ago_s=10, prefix="late:")  # unlimited, just too late

    expired = await store.expire_missed(lookback_s=5)

    assert len(expired) == 38
    reasons = {
        r["ref_id"]: r["last_error"]
        for r in await db.fetch(
            "SELECT ref_id, last_error FROM reminderd.scheduled_messages WHERE status = 'expired'"
        )
    }
    missed = "more than 5 s before a daemon could send it (REMINDERD_LOOKBACK)"
    held = "; held back by a sending limit until then: held: tenant acme is at its max_per_hour (3)"
    behind = (
        "; held back by a sending limit until then: in line behind rows held by tenant acme's max_per_hour (3)"
    )
    acme = [reason for ref, reason in reasons.items() if ref.startswith("acme")]
    assert len(acme) == 37 and all(missed in reason for reason in acme)
    assert sum(reason.endswith(held) for reason in acme) == 5
    assert sum(reason.endswith(behind) for reason in acme) == 32
    assert reasons["late:1"].endswith("(REMINDERD_LOOKBACK)")
    usage = {
        r["tenant_id"]: (r["held"], r["expired"])
        for r in await db.fetch("SELECT tenant_id, held, expired FROM reminderd.usage_daily")
    }
    assert usage == {"acme": (37, 37), "free": (0, 1)}


async def test_an_endpoint_without_its_own_max_in_flight_takes_the_daemons(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db, "acme", "https://acme.example/cb")
    await due_rows(db, "acme", 50)
    assert len((await claim(store, default_max_in_flight=8)).jobs) == 8
    assert len((await claim(store, default_max_in_flight=8)).jobs) == 0


# Frequency caps -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["defer", "skip"])
async def test_a_frequency_cap_defers_or_skips_what_is_over_it(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, policy: str
) -> None:
    await db.execute("UPDATE reminderd.tenants SET frequency_cap_policy = $1 WHERE id = 'acme'", policy)
    await db.execute("INSERT INTO reminderd.frequency_caps VALUES ('acme', 'marketing', 2, interval '1 day')")
    await due_rows(db, "acme", 4, category="marketing", recipient="+447700900123", prefix="c1:", spread_ms=1)
    await due_rows(db, "acme", 1, category="marketing", recipient="+447700900999", prefix="c2:")
    await due_rows(db, "acme", 1, category="transactional", recipient="+447700900123", prefix="otp:")

    await drain(fast_settings(database_url))

    got = sorted(item.message["ref_id"] for item in receiver.received)
    assert got == ["c1:1", "c1:2", "c2:1", "otp:1"]
    over = await db.fetch(
        "SELECT status, fire_at, last_event, last_error FROM reminderd.scheduled_messages"
        " WHERE ref_id IN ('c1:3', 'c1:4')"
    )
    now = await db_now(db)
    for row in over:
        assert row["last_event"] == "capped"
        assert "recipient +447700900123 already got 2 marketing message(s) in the last day" in row["last_error"]
        if policy == "defer":
            assert row["status"] == "pending" and near(row["fire_at"], now + timedelta(days=1))
        else:
            assert row["status"] == "cancelled" and "the tenant's policy is skip" in row["last_error"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.contact_sends") == 3


async def test_a_frequency_cap_counts_a_contacts_messages_by_its_contact(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # With contacts (issue 14), a message naming one is counted by its contact_id, whatever its
    # recipient; a message naming none by its recipient (which may be the same id: they add up).
    # Due in the order they are written, so they are reserved in that order too.
    await db.execute("INSERT INTO reminderd.frequency_caps VALUES ('acme', 'marketing', 2, interval '1 day')")
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "c1", "timezone": "UTC"},
                        {"contact_id": "c2", "timezone": "Asia/Tokyo"}]')""")
    for ref, contact in (("c1:1", "c1"), ("c2:1", "c2")):
        await db.execute("SELECT reminderd.schedule('acme', $1, now() - interval '4 seconds',"
                         " category => 'marketing', contact_id => $2)", ref, contact)
    await due_rows(db, "acme", 1, category="marketing", recipient="c1", prefix="id-only:", ago_s=3)
    await db.execute(  # the contact's again, with a phone as its recipient: still the contact's count
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category, recipient, contact_id)"
        " VALUES ('acme', 'c1:phone', now() - interval '2 seconds', 'marketing', '+447700900123', 'c1')")
    await due_rows(db, "acme", 1, category="marketing", recipient="+447700900123", prefix="phone-only:",
                   ago_s=2)

    await drain(fast_settings(database_url))

    got = sorted(item.message["ref_id"] for item in receiver.received)
    capped = await db.fetch("SELECT ref_id, last_event, last_error FROM reminderd.scheduled_messages"
                            " WHERE last_event = 'capped'")
    assert [r["ref_id"] for r in capped] == ["c1:phone"]
    assert got == ["c1:1", "c2:1", "id-only:1", "phone-only:1"]
    assert "contact c1 already got 2 marketing message(s) in the last day" in capped[0]["last_error"]
    assert sorted(r["recipient"] for r in await db.fetch("SELECT recipient FROM reminderd.contact_sends")) == [
        "+447700900123", "c1", "c1", "c2"]


async def test_a_crash_timing_a_capped_row_dead_letters_only_that_row(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before reserving its send, a capped row is timed: a bug there costs that row, as it does
    # when the sender times a row, not the rows claimed with it (they are sent, none waits for its lease).
    timing = outcome_module.before_sending

    def crash_for_one(job: Job, now: datetime) -> Outcome | None:
        if job.ref_id == "capped:1":
            raise RuntimeError("a bug")
        return timing(job, now)

    monkeypatch.setattr(worker_module, "before_sending", crash_for_one)
    await db.execute("INSERT INTO reminderd.frequency_caps VALUES ('acme', 'marketing', 2, interval '1 day')")
    await due_rows(db, "acme", 1, category="marketing", recipient="+447700900123", prefix="capped:")
    await due_rows(db, "acme", 1, category="marketing", recipient="+447700900999", prefix="capped-ok:")
    await due_rows(db, "acme", 5, prefix="ok:")

    await drain(fast_settings(database_url, lease_s=300), timeout_s=15)

    assert sorted(item.message["ref_id"] for item in receiver.received) == [
        "capped-ok:1", "ok:1", "ok:2", "ok:3", "ok:4", "ok:5"]
    crashed = await db.fetchrow("SELECT status, last_error FROM reminderd.scheduled_messages"
                                " WHERE ref_id = 'capped:1'")
    assert tuple(crashed) == ("dead", "internal error while timing: RuntimeError: a bug")
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status <> 'sent'") == 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.contact_sends") == 1  # it reserved nothing


async def test_a_cap_that_could_not_be_checked_hands_its_rows_back_with_their_attempts(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reservation fails (here: once): the capped rows are not sent, nor left to their lease
    # with an attempt that was never made; they are handed back, due again shortly, and sent.
    reserve = Store.reserve_contact_sends
    failures = [DatabaseUnavailable("ConnectionResetError: reset")]

    async def fail_once(self: Store, sends: Any) -> Any:
        if failures:
            raise failures.pop()
        return await reserve(self, sends)

    monkeypatch.setattr(Store, "reserve_contact_sends", fail_once)
    await db.execute("INSERT INTO reminderd.frequency_caps VALUES ('acme', 'marketing', 2, interval '1 day')")
    await due_rows(db, "acme", 1, category="marketing", recipient="+447700900123", prefix="capped:")
    await due_rows(db, "acme", 1, prefix="otp:")

    await drain(fast_settings(database_url, lease_s=300, retry_base_s=0.1), timeout_s=15)

    assert failures == []
    assert sorted(item.message["ref_id"] for item in receiver.received) == ["capped:1", "otp:1"]
    assert [item.message["attempt"] for item in receiver.received] == [1, 1]
    row = await db.fetchrow(
        "SELECT id, status, attempts FROM reminderd.scheduled_messages WHERE ref_id = 'capped:1'")
    assert (row["status"], row["attempts"]) == ("sent", 1)
    trail = await db.fetch(
        "SELECT event, reason FROM reminderd.events WHERE message_id = $1 ORDER BY id", row["id"])
    released = [r["reason"] for r in trail if r["event"] == "released"]
    assert released == ["not sent: its frequency cap could not be checked (DatabaseUnavailable: "
                        "ConnectionResetError: reset); handed back, due again in 0.1s"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.contact_sends") == 1  # reserved once, when sent


# Endpoint health ------------------------------------------------------------------------------


async def test_the_circuit_opens_after_failures_in_a_row_and_holds_the_rows(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script.update({f"acme:transactional:{i}": [503] * 5 for i in range(1, 11)})
    await due_rows(db, "acme", 10)

    await drain(fast_settings(database_url, circuit_failures=3, circuit_open_s=60, concurrency=1, batch_size=1))

    health = await db.fetchrow("SELECT * FROM reminderd.endpoint_health WHERE tenant_id = 'acme'")
    # Attempts already claimed or retrying when the third failure was recorded still count.
    sent = len(receiver.received)
    assert health["consecutive_failures"] == sent >= 3 and health["circuit_opens"] == 1
    assert near(health["circuit_open_until"], await db_now(db) + timedelta(seconds=60))
    # While it is open nothing goes to it; the rows wait, and the next in line says why.
    await drain(fast_settings(database_url, circuit_failures=3, circuit_open_s=60, concurrency=1, batch_size=1))
    assert len(receiver.received) == sent
    pending = await db.fetch(
        "SELECT last_event, last_error FROM reminderd.scheduled_messages WHERE status = 'pending'"
    )
    assert len(pending) == 10
    assert {r["last_error"] for r in pending if r["last_event"] == "held"} == {
        f"held: the circuit of endpoint {health['endpoint']} is open (it keeps failing)"
    }


async def test_after_the_open_period_one_probe_goes_alone_then_the_circuit_closes(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await due_rows(db, "acme", 6)
    endpoint = await db.fetchval("SELECT reminderd.endpoint_of($1)", receiver.url)
    await db.execute(
        "INSERT INTO reminderd.endpoint_health (tenant_id, endpoint, consecutive_failures, failing_since,"
        " circuit_open_until, circuit_opens) VALUES ('acme', $1, 3, now() - interval '1 minute',"
        " now() - interval '1 second', 1)",
        endpoint,
    )
    store = await Store.connect(database_url)
    try:
        probe = await claim(store)
    finally:
        await store.close()
    assert len(probe.jobs) == 1 and probe.jobs[0].circuit == "half_open"
    assert {h.reason for h in probe.held} == {"circuit_half_open"}
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'pending', attempts = 0 WHERE status = 'picked'"
    )

    await drain(fast_settings(database_url))

    assert len(receiver.received) == 6
    health = await db.fetchrow("SELECT * FROM reminderd.endpoint_health WHERE tenant_id = 'acme'")
    assert (health["consecutive_failures"], health["circuit_open_until"], health["failing_since"]) == (
        0,
        None,
        None,
    )


async def test_410_gone_disables_the_endpoint_and_pauses_its_rows_until_enabled(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["gone"] = [410]
    await db.execute("SELECT reminderd.schedule('acme', 'gone', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '300 milliseconds')")

    await drain(fast_settings(database_url))

    later = await db.fetchrow("SELECT * FROM reminderd.scheduled_messages WHERE ref_id = 'later'")
    assert (later["status"], later["paused_by"], later["last_event"]) == (
        "paused",
        "endpoint",
        "endpoint_disabled",
    )
    assert (
        later["last_error"].startswith("endpoint disabled: 127.0.0.1:")
        and "answered 410 Gone" in later["last_error"]
    )
    assert (
        await db.fetchval("SELECT event FROM reminderd.events WHERE ref_id = 'later' ORDER BY id DESC LIMIT 1")
        == "endpoint_disabled"
    )
    health = await db.fetchrow("SELECT * FROM reminderd.endpoint_health WHERE tenant_id = 'acme'")
    assert health["disabled_at"] is not None
    # New rows for it are held too.
    await db.execute("SELECT reminderd.schedule('acme', 'new', now())")
    assert await db.fetchval("SELECT status FROM reminderd.scheduled_messages WHERE ref_id = 'new'") == "paused"

    assert await db.fetchval("SELECT reminderd.enable_endpoint('acme')") == 2
    await drain(fast_settings(database_url), due_within_s=1)  # 'later' may not be due yet
    assert sorted(item.message["ref_id"] for item in receiver.received) == ["gone", "later", "new"]
    health = await db.fetchrow("SELECT * FROM reminderd.endpoint_health WHERE tenant_id = 'acme'")
    assert (health["disabled_at"], health["circuit_open_until"]) == (None, None)


async def test_an_endpoint_failing_for_days_is_disabled(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["r"] = [503] * 10  # failing still: a retry claimed before the disabling fails too
    await db.execute("SELECT reminderd.schedule('acme', 'r', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'next', now() + interval '1 hour')")
    endpoint = await db.fetchval("SELECT reminderd.endpoint_of($1)", receiver.url)
    await db.execute(
        "INSERT INTO reminderd.endpoint_health (tenant_id, endpoint, consecutive_failures, failing_since)"
        " VALUES ('acme', $1, 2, now() - interval '6 days')",
        endpoint,
    )

    await drain(fast_settings(database_url, endpoint_disable_after_s=5 * 86400))

    health = await db.fetchrow("SELECT * FROM reminderd.endpoint_health WHERE tenant_id = 'acme'")
    assert "failed every attempt for 5 day(s)" in health["disabled_reason"]
    statuses = await db.fetch(
        "SELECT ref_id, status, paused_by FROM reminderd.scheduled_messages ORDER BY ref_id"
    )
    assert [(r["ref_id"], r["status"], r["paused_by"]) for r in statuses] == [
        ("next", "paused", "endpoint"),
        ("r", "paused", "endpoint"),
    ]


# Usage metering -------------------------------------------------------------------------------


async def test_usage_is_counted_per_batch_and_survives_pruning_the_deliveries(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str, store: Store
) -> None:
    receiver.script["dead"] = [404]
    await due_rows(db, "acme", 5)
    await db.execute("SELECT reminderd.schedule('acme', 'dead', now())")
    await db.execute(  # scheduled, then missed by days (as in an outage): the lookback expires it
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('acme', 'missed', now() + interval '1 hour')"
    )
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '3 days' WHERE ref_id = 'missed'"
    )

    await drain(fast_settings(database_url))

    before = await db.fetchrow("SELECT * FROM reminderd.usage_daily WHERE tenant_id = 'acme'")
    expected = {"scheduled": 7, "attempted": 6, "delivered": 5, "dead": 1, "expired": 1, "held": 0}
    assert {k: before[k] for k in expected} == expected
    await store.roll_up_usage()  # housekeeping may have folded them already
    assert await db.fetchval("SELECT count(*) FROM reminderd.usage_increments") == 0
    await db.execute("DELETE FROM reminderd.deliveries")
    await db.execute("SELECT reminderd.prune('0 days', '0 days', '0 days')")
    after = await db.fetchrow("SELECT * FROM reminderd.usage_daily WHERE tenant_id = 'acme'")
    assert {k: after[k] for k in expected} == expected
    [day] = await store.usage("acme", before["day"], before["day"])
    assert (day.delivered, day.dead) == (5, 1)


async def test_usage_counts_the_attempts_logged_and_the_rows_moved_once(
    db: asyncpg.Connection, store: Store
) -> None:
    """record_outcomes meters what it writes (one deliveries row per attempt, migration 0007): a
    batch written again after an outage swallowed the reply counts nothing twice, and an outcome
    discarded (its row rescued meanwhile) counts its attempt but not the row as dead."""
    await add_tenant(db, "acme", "https://acme.example/cb")
    await due_rows(db, "acme", 2)
    sent, rescued = sorted((await claim(store)).jobs, key=lambda job: job.ref_id)
    await db.execute("UPDATE reminderd.scheduled_messages SET picked_at = now() WHERE id = $1", rescued.id)
    batch = [
        Outcome(sent, AttemptResult(True, 200, None, 5), Event.FIRED, Status.SENT),
        Outcome.dead(rescued, AttemptResult(False, 404, "HTTP 404", 5), "permanent failure: HTTP 404"),
    ]

    assert await store.record_outcomes(batch) == {sent.id}
    assert await store.record_outcomes(batch) == set()  # the same batch again: nothing moves

    usage = await db.fetchrow("SELECT * FROM reminderd.usage_daily WHERE tenant_id = 'acme'")
    assert (usage["attempted"], usage["delivered"], usage["dead"]) == (2, 1, 0)
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 2


async def test_a_database_at_0004_with_rows_upgrades_to_0010(empty_database_url: str) -> None:
    import asyncio

    from reminderd.migrate import upgrade

    await asyncio.to_thread(upgrade, empty_database_url, "0004")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(connection, "acme", "https://acme.example/cb", signing_secret=TEST_SECRET)
        await connection.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category)"
            " SELECT 'acme', 'r' || i, now() + interval '1 hour', CASE WHEN i % 2 = 0 THEN 'marketing'"
            " ELSE 'transactional' END FROM generate_series(1, 10) AS i"
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        priorities = await connection.fetch(
            "SELECT category, priority, count(*) FROM reminderd.scheduled_messages GROUP BY 1, 2 ORDER BY 2"
        )
        endpoints = await connection.fetch("SELECT endpoint FROM reminderd.endpoints")
        budgets = await connection.fetchval("SELECT count(*) FROM reminderd.tenant_budgets")
        limits = await connection.fetchrow("SELECT max_per_second, frequency_cap_policy FROM reminderd.tenants")
    finally:
        await connection.close()
    assert [(r["category"], r["priority"], r["count"]) for r in priorities] == [
        ("transactional", 0, 5),
        ("marketing", 2, 5),
    ]
    assert [r["endpoint"] for r in endpoints] == ["acme.example:443"] and budgets == 1
    assert (limits["max_per_second"], limits["frequency_cap_policy"]) == (None, "defer")


async def test_endpoint_of_names_host_and_port(db: asyncpg.Connection) -> None:
    cases = {
        "https://Hooks.Example.com/cb": "hooks.example.com:443",
        "http://hooks.example.com/cb": "hooks.example.com:80",
        "http://user:pw@hooks.example.com:8080/x?y": "hooks.example.com:8080",
        "https://[::1]:9443/cb": "[::1]:9443",
        "ftp://nope": None,
    }
    got = {url: await db.fetchval("SELECT reminderd.endpoint_of($1)", url) for url in cases}
    assert got == cases


async def test_rows_already_marked_held_are_not_marked_again(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db, "acme", "https://acme.example/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_second = 1 WHERE id = 'acme'")
    await due_rows(db, "acme", 3)
    first = await claim(store)
    assert [(h.reason, h.rows, h.marked) for h in first.held] == [("tenant_per_second", 2, 2)]
    second = await claim(store)
    assert [(h.tenant_id, h.reason, h.rows, h.marked) for h in second.held] == [
        ("acme", "tenant_per_second", 2, 0)
    ]
