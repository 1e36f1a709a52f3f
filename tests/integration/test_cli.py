"""The command line against a real PostgreSQL: payloads are checked as jsonb checks them and
arrive as written; `tenant list` shows every tenant. The module shares one emptied database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import emptied

from reminderd import refusals
from reminderd.callback import callback_body
from reminderd.cli import main
from reminderd.payload import PayloadError, check_payload
from reminderd.store import Store


@pytest.fixture
def database_url(module_database_url: str) -> str:
    return emptied(module_database_url)


def cli(database_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    status = main(["--database-url", database_url, *args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(database_url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(go())


# What jsonb takes, the CLI takes: the same payloads refused, before connecting
JSONB_CORPUS = [
    '{"a": 1}', "[]", '"text"', "null", "true", "-0", "0.00", "1E2", "1e400", "-1e400", "1e-400",
    "12345678901234567.5", "9" * 5000, "9" * 131072, "9" * 131073, "1e131071", "99e131070", "99e131071",
    "9.9e131071", "0.0e131072", "0e200000", "0e-20000", "0.5e-16382", "0.5e-16383", "123e-16381",
    "123e-16384", "0." + "1" * 16383, "0." + "1" * 16384, "1." + "0" * 16384, "1e+131072",
    "NaN", "Infinity", "-Infinity", '{"a": NaN}', '"\\u0000"', '"a\\u0000b"', '"\\\\u0000"', '"\\ud800"',
    '"\\udc00"', '"\\ud83d\\ude00"', '"\\uD83D\\uDE00"', '"\\ud83dx"', '"\\ude00\\ud83d"', '"\\ud83d\\n"',
    '"\\u00e9"', '"é"', "01", "1.", ".5", "+1", "[1,]", "{'a': 1}", '{"a" 1}', "", " ", " \f1",
    "0e99999999999999", "1e99999999999999", "1e-99999999999999", "0e1073741822", "0e1073741823",
    "0e-1073741823", "0e2147483648", '"\x01"', '"\x7f"', '"\u2028"', '"\U0001f600"', '"\\/"',
    '"tab\tinside"', '{"a": 1, "a": 2}', "[" * 200 + "]" * 200, '"\\x"', "[1] [2]",
]


def test_the_cli_refuses_exactly_the_payloads_jsonb_refuses(database_url: str) -> None:
    async def jsonb_takes(connection: asyncpg.Connection, text: str) -> bool:
        try:
            await connection.fetchval("SELECT $1::jsonb IS NOT NULL", text)
        except (asyncpg.DataError, asyncpg.UntranslatableCharacterError):
            return False
        return True

    async def go() -> list[tuple[str, bool, bool]]:
        connection = await asyncpg.connect(database_url)
        try:
            verdicts = []
            for text in JSONB_CORPUS:
                try:
                    check_payload(text)
                    cli_takes = True
                except PayloadError:
                    cli_takes = False
                verdicts.append((text, cli_takes, await jsonb_takes(connection, text)))
            return verdicts
        finally:
            await connection.close()

    disagreements = [(text[:40], cli, pg) for text, cli, pg in asyncio.run(go()) if cli != pg]
    assert disagreements == [], "(payload, the CLI takes it, jsonb takes it)"


def test_a_payload_reaches_the_database_and_the_callback_as_written(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    huge = "9" * 5000
    payload = f'{{"amount": 12345678901234567.5, "id": {huge}, "big": 1e400}}'
    message_id = int(cli(database_url, capsys, "schedule", "acme", "order:1", "--in", "1h",
                         "--payload", payload))

    stored = sql(database_url, "SELECT payload::text AS text FROM reminderd.scheduled_messages WHERE id = $1",
                 message_id)[0]["text"]
    assert '"amount": 12345678901234567.5' in stored  # not 12345678901234568 (a float)
    assert f'"id": {huge}' in stored
    assert '"big": 1' + "0" * 400 in stored  # jsonb spells 1e400 out; the value is the same

    async def claimed_body() -> bytes:
        store = await Store.connect(database_url)
        try:
            await store._pool.execute(
                "UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '1 second' WHERE id = $1",
                message_id,
            )
            (job,) = await store.claim(lookback_s=3600, batch_size=10, lease_s=60)
            return callback_body(job)
        finally:
            await store.close()

    body = asyncio.run(claimed_body()).decode()
    assert '"amount": 12345678901234567.5' in body and f'"id": {huge}' in body
    assert json.loads(body, parse_float=str, parse_int=str)["payload"]["amount"] == "12345678901234567.5"


def test_tenant_list_shows_each_tenant_its_settings_and_its_messages(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(database_url, capsys, "tenant", "list") == "no tenants\n"
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    cli(database_url, capsys, "tenant", "add", "globex", "--callback-url", "https://globex.example/cb")
    cli(database_url, capsys, "tenant", "set", "acme", "--calendar", "GB", "--quiet", "21:00-09:00")
    for ref in ("a", "b", "c"):
        cli(database_url, capsys, "schedule", "acme", ref, "--in", "1h")
    cli(database_url, capsys, "schedule", "globex", "g", "--in", "1h")
    sql(database_url, "UPDATE reminderd.scheduled_messages SET status = 'dead' WHERE ref_id = 'c'")
    sql(database_url, "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
                      " VALUES ('acme', 'old', now(), 'sent')")  # history is not counted
    sql(database_url, "SELECT reminderd.pause_tenant('globex')")

    assert cli(database_url, capsys, "tenant", "list").splitlines() == [
        "TENANT  CALLBACK URL                CALENDAR   QUIET HOURS  STATE   PENDING  PICKED  PAUSED  DEAD",
        "acme    https://acme.example/hooks  GB (skip)  21:00-09:00  active        2       0       0     1",
        "globex  https://globex.example/cb   -          -            paused        0       0       1     0",
    ]
    assert json.loads(cli(database_url, capsys, "tenant", "list", "--json")) == [
        {"id": "acme", "callback_url": "https://acme.example/hooks", "calendar": "GB", "holiday_rule": "skip",
         "quiet_hours": "21:00-09:00", "paused": False,
         "messages": {"pending": 2, "picked": 0, "paused": 0, "dead": 1}},
        {"id": "globex", "callback_url": "https://globex.example/cb", "calendar": None, "holiday_rule": "skip",
         "quiet_hours": None, "paused": True, "messages": {"pending": 0, "picked": 0, "paused": 1, "dead": 0}},
    ]


# Day one: the database's refusals as sentences; recurring rows due at once; nothing dead on arrival


def refused(database_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["--database-url", database_url, *args])
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    return status, err.rstrip("\n")


def test_a_tenant_that_exists_and_a_holiday_of_an_unknown_tenant_are_sentences(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    again = ("tenant", "add", "acme", "--callback-url", "https://acme.example/h")
    assert refused(database_url, capsys, *again) == (
        2, 'reminderd: error: tenant "acme" already exists; change it with UPDATE reminderd.tenants '
           "(or reminderd tenant set), or choose another id",
    )
    assert refused(database_url, capsys, "tenant", "holiday", "add", "ghost", "2026-12-31") == (
        2, 'reminderd: error: unknown tenant "ghost"; create it first (reminderd tenant add), and check this '
           "role acts for it",
    )
    assert refused(database_url, capsys, "tenant", "set", "ghost", "--calendar", "GB") == (
        2, 'reminderd: error: unknown tenant "ghost"',
    )
    assert refused(database_url, capsys, "schedule", "ghost", "digest", "--cron", "0 9 * * *") == (
        2, 'reminderd: error: unknown tenant "ghost"',
    )


def test_commands_that_read_or_remove_a_tenants_rows_refuse_an_unknown_tenant(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Not an empty answer and exit 0: the line reminderd.check_tenant() gives the commands that
    write (tenant holiday add), whatever the command."""
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    expected = refused(database_url, capsys, "tenant", "holiday", "add", "ghost", "2026-12-31")
    assert expected == (2, "reminderd: error: " + refusals.unknown_tenant("ghost"))
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("contact_id,phone\nc1,+44 20 7946 0000\n", encoding="utf-8")
    for argv in (["usage", "ghost"], ["usage", "ghost", "--json"], ["usage", "ghost", "--month", "2026-11"],
                 ["tenant", "revoke", "ghost", "postgres"],
                 ["tenant", "holiday", "remove", "ghost", "2026-12-31"],
                 ["api-key", "list", "ghost"], ["api-key", "list", "ghost", "--json"],
                 ["cancel", "ghost", "r1"],
                 ["contacts", "import", "ghost", str(contacts)], ["contact", "show", "ghost", "c1"],
                 ["audience", "list", "ghost"], ["broadcasts", "list", "ghost"],
                 ["broadcasts", "list", "ghost", "--json"], ["broadcasts", "show", "ghost", "1"]):
        assert refused(database_url, capsys, *argv) == expected, argv
    assert sql(database_url, "SELECT count(*) AS n FROM reminderd.contacts")[0]["n"] == 0
    # A tenant that exists still gets its (empty) answers.
    assert "total" in cli(database_url, capsys, "usage", "acme")
    assert cli(database_url, capsys, "cancel", "acme", "r1") == "0\n"
    assert cli(database_url, capsys, "audience", "list", "acme") == "no audiences\n"
    assert cli(database_url, capsys, "api-key", "list", "acme", "--json") == "[]\n"
    assert refused(database_url, capsys, "contact", "show", "acme", "c1") == (
        2, 'reminderd: error: tenant "acme" has no contact "c1"')


def test_an_empty_month_is_refused_in_a_line_naming_it(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(database_url, capsys, "usage", "acme", "--month", "") == (
        2, "reminderd: error: --month is empty: give a month like 2026-11, or leave --month out for this month")


def test_a_recurring_message_is_due_at_its_first_occurrence_as_soon_as_it_is_scheduled(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    [now] = [row["now"] for row in sql(database_url, "SELECT now()")]
    # The tenant's own day off on tomorrow's date: the daily 09:00 skips it, as the planner would.
    tomorrow = (now + timedelta(days=1)).astimezone(UTC).date()
    cli(database_url, capsys, "tenant", "holiday", "add", "acme", tomorrow.isoformat(), "Company day")
    status = main(["--database-url", database_url, "schedule", "acme", "digest", "--cron", "0 9 * * *"])
    out, err = capsys.readouterr()
    assert status == 0
    [row] = sql(database_url, "SELECT id, fire_at, status FROM reminderd.scheduled_messages")
    assert out == f"{row['id']}\n"
    nine = datetime.combine(now.astimezone(UTC).date(), time(9), UTC)
    expected = nine if nine > now else nine + timedelta(days=1)
    if expected.date() == tomorrow:
        expected += timedelta(days=1)
    assert (row["fire_at"], row["status"]) == (expected, "pending")
    assert f"first {expected:%a %Y-%m-%d} 09:00:00 UTC ({expected:%Y-%m-%dT%H:%M:%SZ})" in err
    # reminderd status shows it at once, not after a daemon planned it.
    lines = cli(database_url, capsys, "status").splitlines()
    assert lines[1].split() == ["acme", "pending", "1", expected.isoformat(timespec="seconds")]


def test_an_rrule_is_stored_with_the_dtstart_its_first_occurrence_was_computed_from(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    cli(database_url, capsys, "schedule", "acme", "fortnightly", "--rrule", "FREQ=WEEKLY;INTERVAL=2;BYHOUR=9",
        "--tz", "Asia/Kolkata")
    [row] = sql(database_url, "SELECT rrule, fire_at FROM reminderd.scheduled_messages")
    assert row["rrule"].startswith("DTSTART:") and row["rrule"].endswith("\nFREQ=WEEKLY;INTERVAL=2;BYHOUR=9")
    assert row["fire_at"] is not None


def test_an_explicit_etc_universal_with_a_contact_stays_the_messages_zone(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    sql(database_url, "SELECT reminderd.upsert_contacts('acme', '[{\"contact_id\": \"tok\", "
                      "\"timezone\": \"Asia/Tokyo\"}]')")
    cli(database_url, capsys, "schedule", "acme", "cli3", "--cron", "0 9 * * *", "--tz", "Etc/Universal",
        "--contact", "tok")
    [row] = sql(database_url, "SELECT timezone, timezone_source, fire_at FROM reminderd.scheduled_messages")
    assert (row["timezone"], row["timezone_source"]) == ("UTC", "message")
    assert (row["fire_at"].astimezone(UTC).hour, row["fire_at"].minute) == (9, 0)  # 09:00 UTC, not Tokyo's


def test_a_time_slightly_past_is_sent_now_and_the_cli_says_so(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    [now] = [row["now"] for row in sql(database_url, "SELECT now()")]
    at = (now - timedelta(minutes=5)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = main(["--database-url", database_url, "schedule", "acme", "late", "--at", at])
    out, err = capsys.readouterr()
    assert status == 0 and out.strip().isdigit()
    assert err.startswith("reminderd: it was due 5m ") and err.endswith(
        " ago: sent now (backfill=send sends a message at most 30m late)\n"
    )


def test_an_until_that_only_the_tenants_holidays_leave_empty_is_refused_once_they_are_read(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before connecting the CLI refuses an until before the first occurrence; one that only the
    tenant's days off leave without an occurrence is refused once they are read, nothing stored."""
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    [now] = [row["now"] for row in sql(database_url, "SELECT now()")]
    today = now.astimezone(UTC).date()
    for offset in range(3):
        day = (today + timedelta(days=offset)).isoformat()
        cli(database_url, capsys, "tenant", "holiday", "add", "acme", day)
    until = f"{today + timedelta(days=2)}T23:00:00Z"
    status, line = refused(database_url, capsys, "schedule", "acme", "d", "--cron", "0 9 * * *",
                           "--until", until)
    assert status == 2
    assert line == (f"reminderd: error: nothing would ever be sent: finished: no occurrence left before until "
                    f"{today + timedelta(days=2)}T23:00:00Z")
    assert sql(database_url, "SELECT count(*) AS n FROM reminderd.scheduled_messages")[0]["n"] == 0


# API keys, send-now, the per-tenant rate limit

def test_api_keys_are_printed_once_listed_without_secrets_and_revoked(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    key = cli(database_url, capsys, "api-key", "create", "acme", "--name", "booking-service").strip()
    reader = cli(database_url, capsys, "api-key", "create", "acme", "--name", "reports", "--read-only").strip()
    operator = cli(database_url, capsys, "api-key", "create", "--operator", "--name", "ops").strip()
    assert all(k.startswith("rk_") and len(k) == 59 for k in (key, reader, operator))
    stored = sql(database_url, "SELECT prefix, key_hash, tenant_id, scopes FROM reminderd.api_keys ORDER BY id")
    assert [(r["tenant_id"], r["scopes"]) for r in stored] == [
        ("acme", ["read", "write"]), ("acme", ["read"]), (None, ["read", "write"])]
    listed = cli(database_url, capsys, "api-key", "list")
    assert key[:15] in listed and key not in listed and "(operator)" in listed
    as_json = json.loads(cli(database_url, capsys, "api-key", "list", "acme", "--json"))
    assert [k["name"] for k in as_json] == ["booking-service", "reports"]
    assert "revoked" in cli(database_url, capsys, "api-key", "revoke", key[:15])
    assert sql(database_url, "SELECT revoked_at IS NOT NULL AS r FROM reminderd.api_keys WHERE prefix = $1",
               key[:15])[0]["r"]
    for argv, says in [(["api-key", "create", "--name", "x"], "name the TENANT"),
                       (["api-key", "create", "acme", "--operator", "--name", "x"], "give no TENANT"),
                       (["api-key", "create", "ghost", "--name", "x"], 'unknown tenant "ghost"'),
                       (["api-key", "revoke", "nonsense"], "is not a key prefix"),
                       (["api-key", "revoke", "rk_aaaaaaaaaaaa"], "no API key")]:
        assert main(["--database-url", database_url, *argv]) == 2
        assert says in capsys.readouterr().err


def test_send_now_prints_the_message_that_goes_out_and_rate_limits_are_per_tenant(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    cli(database_url, capsys, "schedule", "acme", "renewal:42", "--cron", "0 9 1 * *")
    main(["--database-url", database_url, "send-now", "acme", "renewal:42"])
    out, err = capsys.readouterr()
    extra = int(out)
    assert "an extra occurrence of message" in err and "goes out now" in err
    row = sql(database_url, "SELECT extra_of, status FROM reminderd.scheduled_messages WHERE id = $1", extra)[0]
    assert row["status"] == "pending" and row["extra_of"] is not None
    assert main(["--database-url", database_url, "send-now", "acme", "nothing"]) == 2
    assert "has no pending" in capsys.readouterr().err
    assert "500 requests per second" in cli(database_url, capsys, "tenant", "rate-limit", "acme", "500")
    assert sql(database_url, "SELECT api_rate_limit FROM reminderd.tenants")[0]["api_rate_limit"] == 500
    cli(database_url, capsys, "tenant", "rate-limit", "acme", "default")
    assert sql(database_url, "SELECT api_rate_limit FROM reminderd.tenants")[0]["api_rate_limit"] is None
    assert main(["--database-url", database_url, "tenant", "rate-limit", "acme", "fast"]) == 2


def test_status_shows_the_messages_and_each_daemon_alive_stopping_or_dead_with_what_it_holds(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(database_url, capsys, "status").splitlines() == ["no messages", "", "no daemons running"]
    cli(database_url, capsys, "tenant", "add", "acme", "--callback-url", "https://acme.example/hooks")
    cli(database_url, capsys, "schedule", "acme", "later", "--in", "1h")
    alive, stopping, dead = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
    sql(database_url,
        "INSERT INTO reminderd.daemons (id, host, pid, version, started_at, heartbeat_at, stopping, settings,"
        " last_claim_at) VALUES"
        " ($1, 'host-a', 101, '0.1.0', '2026-12-01 09:00Z', now(), false, $4, '2026-12-01 10:00Z'),"
        " ($2, 'host-b', 202, '0.1.0', '2026-12-01 09:30Z', now(), true, $4, NULL),"
        " ($3, 'host-c', 303, '0.0.9', '2026-12-01 08:00Z', now() - interval '1 minute', false, $4, NULL)",
        alive, stopping, dead, json.dumps({"heartbeat": 5, "dead_after": 15}))
    sql(database_url,
        "INSERT INTO reminderd.scheduled_messages"
        " (tenant_id, ref_id, fire_at, status, attempts, picked_at, picked_by)"
        " SELECT 'acme', 'held-' || n, now(), 'picked', 1, now(), $1 FROM generate_series(1, 2) n", alive)

    lines = cli(database_url, capsys, "status").splitlines()
    gap = lines.index("")
    assert lines[0].split() == ["TENANT", "STATUS", "MESSAGES", "NEXT", "DUE", "(UTC)"]
    assert [line.split()[:3] for line in lines[1:gap]] == [["acme", "pending", "1"], ["acme", "picked", "2"]]
    header, *daemons = lines[gap + 1:]
    assert header.split()[:7] == ["DAEMON", "HOST", "PID", "VERSION", "STATE", "HEARTBEAT", "HELD"]
    rows = [line.split() for line in daemons]
    assert [(r[0], r[1], r[2], r[3], r[4], r[7]) for r in rows] == [
        (dead, "host-c", "303", "0.0.9", "dead", "0"),
        (alive, "host-a", "101", "0.1.0", "alive", "2"),
        (stopping, "host-b", "202", "0.1.0", "stopping", "0"),
    ]
    assert rows[0][6] == "ago" and float(rows[0][5].removesuffix("s")) >= 60
    assert rows[1][8:] == ["2026-12-01T09:00:00+00:00", "2026-12-01T10:00:00+00:00"]
    assert rows[2][-1] == "-"  # no claim yet
