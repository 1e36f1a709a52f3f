"""The real `reminderd` command in subprocesses: real signals, real HTTP, real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections import Counter

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook
from support import TEST_SECRET, all_sent, counts, fast_daemon_env, insert_due, poll_until

from reminderd.testing import CLI_COMMAND, Received, Receiver, die_with_parent, running_daemon

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


async def test_an_attempt_cut_short_at_shutdown_is_in_deliveries_and_redelivered_with_its_webhook_id(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    answer = asyncio.Event()  # the receiver holds every request until the daemon has stopped

    async def hold(_: Received) -> None:
        await answer.wait()

    receiver.before_answer = hold
    await insert_due(db, 12)
    env = fast_daemon_env(database_url, REMINDERD_CONCURRENCY="4", REMINDERD_BATCH_SIZE="4",
                          REMINDERD_SHUTDOWN_TIMEOUT="0.3")
    try:
        async with running_daemon(env) as process:
            await receiver.wait_for(lambda got: len(got) >= 4)
            process.send_signal(signal.SIGTERM)
            assert await process.exit_code() == 0
            log = process.log
    finally:
        answer.set()
    cut_short = {item.webhook_id for item in receiver.received}
    assert len(cut_short) == 4  # one request per sender, none answered
    assert [line["cut_short"] for line in log if line["event"] == "shutdown_timeout"] == [4]
    assert sorted(str(line["webhook_id"]) for line in log if line["event"] == "released") == sorted(cut_short)

    logged = await db.fetch(
        "SELECT d.webhook_id, d.attempt, d.status_code, d.error, d.event, d.status, m.status AS now_status,"
        "       m.attempts, m.last_event"
        " FROM reminderd.deliveries d JOIN reminderd.scheduled_messages m ON m.id = d.message_id")
    assert {row["webhook_id"] for row in logged} == cut_short and len(logged) == 4
    for row in logged:  # the attempt reached the receiver: it is logged, counted and due again
        assert (row["attempt"], row["status_code"]) == (1, None)
        assert (row["event"], row["status"]) == ("released", "pending")
        assert row["error"].startswith("cut short at shutdown: no answer within REMINDERD_SHUTDOWN_TIMEOUT")
        assert (row["now_status"], row["attempts"], row["last_event"]) == ("pending", 1, "released")
    assert "picked" not in await counts(db)

    # A second daemon delivers everything: the rows cut short again, with their webhook-id.
    receiver.before_answer = None
    async with running_daemon(fast_daemon_env(database_url)) as process:
        await poll_until(all_sent(db, 12), timeout_s=30)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
    for attempts in receiver.by_ref().values():
        assert len({item.webhook_id for item in attempts}) == 1
        assert [item.message["attempt"] for item in attempts] == list(range(1, len(attempts) + 1))
    assert {item.webhook_id for item in receiver.received if item.message["attempt"] == 2} == cut_short
    rows = await db.fetch(
        "SELECT m.attempts, array_agg(d.attempt ORDER BY d.id) AS logged"
        " FROM reminderd.scheduled_messages m JOIN reminderd.deliveries d ON d.message_id = m.id GROUP BY m.id")
    assert len(rows) == 12
    assert all(row["logged"] == list(range(1, row["attempts"] + 1)) for row in rows)  # every attempt, once


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


async def test_an_http_port_in_use_exits_78_before_claiming_anything(
    database_url: str, db: asyncpg.Connection, tenant: str
) -> None:
    """The probe server is imported and started only after the first claim, but its port is bound
    at start: a port in use stops the daemon before it takes any row."""
    await insert_due(db, 5)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        env = fast_daemon_env(database_url, REMINDERD_HTTP_PORT=str(taken.getsockname()[1]))
        async with running_daemon(env) as process:
            assert await process.exit_code() == 78
    [failed] = process.events("http_listen_failed")
    assert "REMINDERD_HTTP_PORT" in str(failed["fix"])
    assert await counts(db) == {"pending": 5}


async def _daemon_writing_to(write_fd: int, env: dict[str, str]) -> asyncio.subprocess.Process:
    """`reminderd run` whose stdout is `write_fd`, a pipe the test reads as it pleases (or not)."""
    try:
        return await asyncio.create_subprocess_exec(*CLI_COMMAND, "run", env=env, stdout=write_fd,
                                                    stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
    finally:
        os.close(write_fd)  # the daemon's now: the pipe breaks when it exits


async def test_a_stdout_nobody_reads_neither_holds_up_deliveries_nor_sigterm(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    """The reviewer's daemon, its stdout a pipe no longer read, blocked in write() once the pipe
    was full and ignored SIGTERM for 40 s. Now a full pipe holds a line up for 2 s at most; the
    lines after are dropped, and counted once the pipe is read again."""
    await insert_due(db, 8000)  # some 1.7 MB of log lines: more than the pipe holds (1 MiB)
    read_fd, write_fd = os.pipe()
    process = await _daemon_writing_to(write_fd, fast_daemon_env(database_url, REMINDERD_BATCH_SIZE="200"))
    try:
        await poll_until(all_sent(db, 8000), timeout_s=90)  # not a line read meanwhile
        unread = _drain(read_fd)
        assert len(unread) > 2**16  # beyond what a pipe holds by default: the daemon asked for more
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert await process.stderr.read() == b"" if process.stderr else True
    finally:
        if process.returncode is None:
            process.kill()
    lines = [json.loads(line) for line in (unread + _drain(read_fd)).splitlines()]  # every line whole
    os.close(read_fd)
    events = [line["event"] for line in lines]
    # Once the pipe takes a write again after lines were dropped, one notice counts them: when the
    # test reads, and whenever a short line fits in the room a full pipe still has (a write of up to
    # 4 KiB goes whole or not at all), so a few notices (2 to 5 seen), not one per dropped line.
    notices = [line for line in lines if line["event"] == "log_lines_dropped"]
    dropped = sum(int(str(notice["dropped"])) for notice in notices)
    assert dropped >= 8000 - events.count("fired") > 0
    assert 1 <= len(notices) <= max(2, dropped // 100), (len(notices), dropped)
    after = events[events.index("log_lines_dropped"):]  # the pipe read again: the shutdown is logged
    assert {"signal", "stopped"} <= set(after)


async def test_a_stdout_whose_reader_goes_away_stops_the_daemon_quietly_handing_back_its_rows(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    """`reminderd run | head -c 200` crashed with "--- Logging error ---" and a traceback on
    stderr, leaving its claimed rows picked. Now EPIPE stops it as SIGTERM does: exit 1, nothing
    on stderr, nothing left picked."""
    receiver.delay_s = 0.5  # callbacks in flight when the pipe breaks
    await insert_due(db, 50)
    read_fd, write_fd = os.pipe()
    process = await _daemon_writing_to(write_fd, fast_daemon_env(database_url, REMINDERD_CONCURRENCY="8"))
    try:
        await receiver.wait_for(lambda got: len(got) >= 8)
        os.read(read_fd, 200)
        os.close(read_fd)
        assert await asyncio.wait_for(process.wait(), 20) == 1
        assert await process.stderr.read() == b"" if process.stderr else True
    finally:
        if process.returncode is None:
            process.kill()
    assert "picked" not in await counts(db)


def _drain(read_fd: int) -> bytes:
    """What the pipe holds now, without waiting for more."""
    os.set_blocking(read_fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_fd, 2**16):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_a_callback_host_it_cannot_decode_is_dead_lettered_and_the_daemon_keeps_running(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    """An A-label punycode cannot decode (xn--zz), written past the checks as an older release could
    have: refused on its first attempt, saying why; the others are sent, then SIGTERM exits 0."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")  # the write-time checks bypassed
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, callback_url)"
                         " VALUES ('acme', 'undecodable', now(), 'https://xn--zz.example/hook')")
    await insert_due(db, 3)

    async def settled() -> bool:
        found = await counts(db)
        return found.get("sent", 0) == 3 and found.get("dead", 0) == 1

    async with running_daemon(fast_daemon_env(database_url)) as process:
        await poll_until(settled, timeout_s=30)
        process.send_signal(signal.SIGTERM)
        assert await process.exit_code() == 0
        log = process.log
    why = ('refused: callback_url has host "xn--zz.example" with label "xn--zz", which is not a valid IDNA'
           ' A-label (punycode)')
    dead = await db.fetchrow("SELECT attempts, last_error FROM reminderd.scheduled_messages"
                             " WHERE ref_id = 'undecodable'")
    assert tuple(dead) == (1, why)
    assert sorted(r.message["ref_id"] for r in receiver.received) == ["bulk:1", "bulk:2", "bulk:3"]
    assert [(line["ref"], line["error"]) for line in log if line["event"] == "dead_lettered"] == [
        ("undecodable", why)]
    assert [line for line in log if line["event"] == "send_crashed" or "exception" in line] == []
    assert log[-1]["event"] == "deregistered"  # stopped as asked, not crashed
