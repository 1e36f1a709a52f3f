"""The real `reminderd` command in subprocesses: real signals, real HTTP, real PostgreSQL."""

from __future__ import annotations

import signal
from collections import Counter

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook
from support import TEST_SECRET, all_sent, counts, fast_daemon_env, insert_due, poll_until

from reminderd.testing import Receiver, running_daemon

pytestmark = pytest.mark.slow


async def test_sigterm_drains_in_flight_hands_back_the_rest_and_exits_0(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.delay_s = 1.0
    await insert_due(db, 60)
    env = fast_daemon_env(database_url, REMINDERD_CONCURRENCY="8", REMINDERD_BATCH_SIZE="20")
    async with running_daemon(env) as process:
        await receiver.wait_for(lambda got: len(got) >= 8)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
        log = process.log

    after = await counts(db)
    assert "picked" not in after
    assert after["sent"] + after.get("pending", 0) == 60 and after["sent"] >= 8
    assert any(line["event"] == "stopped" for line in log)

    # A second daemon delivers the rest: every message exactly once overall.
    receiver.delay_s = 0
    async with running_daemon(fast_daemon_env(database_url)) as process:
        await poll_until(all_sent(db, 60), timeout_s=30)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
    per_ref = Counter(r.message["ref_id"] for r in receiver.received)
    assert len(per_ref) == 60 and set(per_ref.values()) == {1}


async def test_kill_9_mid_flight_then_restart_redelivers_with_the_same_webhook_id(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.delay_s = 1.0
    await insert_due(db, 20)
    env = fast_daemon_env(database_url, REMINDERD_LEASE="3", REMINDERD_CALLBACK_TIMEOUT="2",
                     REMINDERD_CONCURRENCY="5", REMINDERD_BATCH_SIZE="5")
    async with running_daemon(env) as process:
        await receiver.wait_for(lambda got: len(got) >= 5)
        process.kill()
        await process.exit_code()
    in_flight_at_kill = {r.webhook_id for r in receiver.received}
    assert (await counts(db)).get("picked", 0) >= 5

    receiver.delay_s = 0
    async with running_daemon(env) as process:
        await poll_until(all_sent(db, 20), timeout_s=40)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0

    by_ref = receiver.by_ref()
    assert len(by_ref) == 20  # nothing lost
    for attempts in by_ref.values():
        assert len({a.webhook_id for a in attempts}) == 1  # a redelivery reuses the webhook-id
    redelivered = {a.webhook_id for attempts in by_ref.values() if len(attempts) > 1 for a in attempts}
    assert redelivered and redelivered <= in_flight_at_kill
    for item in receiver.received:
        Webhook(TEST_SECRET).verify(item.body, item.headers)


async def test_three_daemons_deliver_3000_due_rows_exactly_once(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await insert_due(db, 3000)
    env = fast_daemon_env(database_url, REMINDERD_BATCH_SIZE="50", REMINDERD_CONCURRENCY="32")
    async with running_daemon(env) as a, running_daemon(env) as b, running_daemon(env) as c:
        await poll_until(all_sent(db, 3000), timeout_s=90, interval_s=0.2)
        for process in (a, b, c):
            process.send_signal(signal.SIGTERM)
        codes = [await p.exit_code() for p in (a, b, c)]
        logs = [p.log for p in (a, b, c)]
    assert codes == [0, 0, 0]
    per_ref = Counter(r.message["ref_id"] for r in receiver.received)
    assert len(per_ref) == 3000 and set(per_ref.values()) == {1}
    delivered_by = [sum(1 for line in log if line["event"] == "fired") for log in logs]
    assert sum(delivered_by) == 3000
    assert sum(1 for n in delivered_by if n > 0) >= 2  # the work really was shared
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 3000


async def test_bad_configuration_exits_78_naming_the_setting(database_url: str) -> None:
    env = fast_daemon_env(database_url, REMINDERD_CONCURRENCY="lots")
    async with running_daemon(env) as process:
        code = await process.exit_code()
        text = "".join(process.lines)
    assert code == 78
    assert "REMINDERD_CONCURRENCY" in text and len(text.strip().splitlines()) == 1


async def test_daemon_refuses_to_run_on_an_unmigrated_database(empty_database_url: str) -> None:
    async with running_daemon(fast_daemon_env(empty_database_url)) as process:
        code = await process.exit_code()
        log = process.log
    assert code == 78
    assert any(line["event"] == "schema_not_ready" and "reminderd migrate" in str(line) for line in log)


async def test_daemon_waits_for_the_database_and_logs_no_secret() -> None:
    url = "postgresql://reminderd:hunter2@127.0.0.1:1/nowhere"  # nothing listens on port 1
    async with running_daemon(fast_daemon_env(url)) as process:
        await process.wait_logged("database_unreachable")
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
    assert "hunter2" not in "".join(process.lines)


async def test_a_database_url_option_asyncpg_rejects_exits_78_instead_of_retrying(database_url: str) -> None:
    async with running_daemon(fast_daemon_env(database_url + "?sslmode=bogus")) as process:
        assert await process.exit_code() == 78
    assert process.events("configuration_error")


async def test_a_database_that_does_not_exist_exits_78_instead_of_retrying(database_url: str) -> None:
    missing = database_url.rpartition("/")[0] + "/no_such_database"
    async with running_daemon(fast_daemon_env(missing)) as process:
        assert await process.exit_code() == 78
    [error] = process.events("configuration_error")
    text = str(error["error"])
    assert text.startswith("REMINDERD_DATABASE_URL: ") and "no_such_database" in text


async def test_the_daemon_warns_when_the_databases_defaults_for_late_rows_differ_from_its_own(
    database_url: str, db: asyncpg.Connection
) -> None:
    """The database refuses a late row by reminderd.config, the daemon expires it by its settings:
    when they differ, a row could be accepted and expire at once. The daemon says so at start."""
    async with running_daemon(fast_daemon_env(database_url)) as process:
        await process.wait_logged("ready")
        assert process.events("database_defaults_differ") == []
    await db.execute("UPDATE reminderd.config SET value = '10 minutes' WHERE key = 'max_lateness'")
    async with running_daemon(fast_daemon_env(database_url)) as process:
        await process.wait_logged("ready")
        [warning] = process.events("database_defaults_differ")
    assert warning["max_lateness_s"] == "database 600.0, daemon 1800.0"
    assert "lookback_s" not in warning and "backfill" not in warning
    assert "REMINDERD_MAX_LATENESS" in str(warning["fix"])
