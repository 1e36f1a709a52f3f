"""The recipients' command line against a real PostgreSQL (docs/audiences.md): `contacts import`
streams CSV and JSON Lines in batches, writes national phones in E.164, names bad lines; `contact
show`; `audience`; `broadcast` and its `--dry-run`; `broadcasts`; approval with `--as`; `cadence`;
`schedule --contact`; the tenant's audience settings. The module shares one emptied database."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from conftest import emptied

from reminderd.cli import main
from reminderd.exceptions import EX_CONFIG, EX_USAGE
from reminderd.schedule.cron import next_fire


@pytest.fixture
def database_url(module_database_url: str) -> str:
    url = emptied(module_database_url)
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'Europe/London')")
    return url


def cli(database_url: str, capsys: pytest.CaptureFixture[str], *args: str, status: int = 0) -> tuple[str, str]:
    got = main(["--database-url", database_url, *args])
    out, err = capsys.readouterr()
    assert got == status, err
    return out, err


def sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(database_url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(go())


def zones(database_url: str) -> dict[str, tuple[str | None, str | None]]:
    rows = sql(database_url, "SELECT contact_id, resolved_timezone, timezone_source FROM reminderd.contacts")
    return {r["contact_id"]: (r["resolved_timezone"], r["timezone_source"]) for r in rows}


def in_days(days: int, hour: int = 9) -> str:
    day = datetime.now(UTC).date() + timedelta(days=days)
    return f"{day:%Y-%m-%d}T{hour:02d}:00"


CSV = (
    "\ufeffcontact_id,phone,country,timezone,first_name,attributes\n"
    'c1,020 7946 0018,GB,,Ann,"{""plan"": ""gold""}"\n'
    "c2,(312) 555-0100,US,,Bob,\n"
    "\n"
    "c3,,IN,,,\n"
    "c4,+1 212 555 0100,,Asia/Tokyo,Dee,\n"
)


def test_contacts_import_reads_csv_and_the_database_resolves_zones(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(CSV, encoding="utf-8")
    out, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--batch-size", "2")
    assert out.startswith("4 contacts imported into acme (4 new or changed) in ")
    assert "\r" not in err  # a progress bar only on a terminal
    assert zones(database_url) == {
        "c1": ("Europe/London", "phone"), "c2": ("America/Chicago", "phone"), "c3": ("Asia/Kolkata", "country"),
        "c4": ("Asia/Tokyo", "contact"),
    }
    rows = {r["contact_id"]: r for r in sql(database_url, "SELECT * FROM reminderd.contacts")}
    assert rows["c1"]["phone"] == "+442079460018"  # national, written in E.164
    assert rows["c4"]["phone"] == "+12125550100"
    assert json.loads(rows["c1"]["attributes"]) == {"plan": "gold", "first_name": "Ann"}
    again, _ = cli(database_url, capsys, "contacts", "import", "acme", str(path))
    assert again.startswith("4 contacts imported into acme (0 new or changed)")  # an upsert: safe to repeat


def test_contacts_import_stops_at_a_bad_line_or_skips_it(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.jsonl"
    path.write_text('{"contact_id": "a", "country": "DE"}\n{"contact_id": "b", "timezone": "Mars/Base"}\n'
                    '{"contact_id": "c"}\nnot json\n', encoding="utf-8")
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), status=EX_USAGE)
    assert "reminderd: error: line 2: timezone 'Mars/Base' is not an IANA zone (such as Europe/London); the " \
           "import stopped there" in err
    assert set(zones(database_url)) == {"a"}  # what came before the bad line is in
    out, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--skip-invalid")
    assert out.startswith("2 contacts imported into acme")
    assert out.rstrip().endswith("; 2 invalid lines skipped")
    assert "reminderd: skipped line 2: timezone 'Mars/Base'" in err
    assert "reminderd: skipped line 4: not JSON" in err
    assert set(zones(database_url)) == {"a", "c"}


def test_contacts_import_names_the_line_that_is_not_utf8(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file exported as Latin-1 was "cannot read it on ('utf-8' codec can't decode byte 0xe9 in
    position 37 …)", a position in an 8 KiB chunk, and the lines of that chunk before it were lost.
    Now the line is named and treated as any bad line: stop there, or skip it."""
    path = tmp_path / "latin1.csv"
    lines = ["contact_id,city"] + [f"c{n},Paris" for n in range(1, 2001)] + ["c2001,M\xfcnchen", "c2002,Wien"]
    path.write_bytes("\r\n".join(lines).encode("latin-1") + b"\r\n")
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), status=EX_USAGE)
    assert err.splitlines()[-1] == (
        "reminderd: error: line 2002: not UTF-8 text (byte 0xfc; save the file as UTF-8); the import stopped "
        "there (importing again is safe: contacts are updated, not duplicated)")
    assert len(zones(database_url)) == 2000  # every line before it is in
    out, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--skip-invalid")
    assert out.startswith("2,001 contacts imported into acme (1 new or changed)")
    assert out.rstrip().endswith("; 1 invalid line skipped")  # was "1 invalid lines skipped"
    assert "reminderd: skipped line 2002: not UTF-8 text (byte 0xfc; save the file as UTF-8)" in err
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(b'{"contact_id": "j1"}\n{"contact_id": "j2", "attributes": {"city": "M\xfcnchen"}}\n')
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(jsonl), status=EX_USAGE)
    assert "reminderd: error: line 2: not UTF-8 text (byte 0xfc; save the file as UTF-8); the import " in err
    utf16 = tmp_path / "excel.csv"
    utf16.write_text("contact_id\nu1\n", encoding="utf-16")
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(utf16), status=EX_USAGE)
    assert "error: line 1: the header row is UTF-16 text, not UTF-8 (save the file as UTF-8); " in err


def test_contacts_import_refuses_a_phone_that_is_not_one_on_its_line(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """What was taken before migration 0021 (phone 'notaphone', then no zone: silently the
    tenant's) stops the import at its line, or is skipped; the forms the docs allow go in."""
    path = tmp_path / "h.csv"
    path.write_text("contact_id,phone,country\nc1,+44 20 7946 0018,\nc2,020 7946 0018,GB\nc9,notaphone,\n"
                    "c3,(+1) 312-555-0100,\nc4,212 555 0100,\n", encoding="utf-8")
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), status=EX_USAGE)
    assert ("reminderd: error: line 4: phone 'notaphone' is not +<country code> <number> (such as +44 20 7946"
            " 0018); the import stopped there") in err
    assert zones(database_url) == {"c1": ("Europe/London", "phone"), "c2": ("Europe/London", "phone")}
    out, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--skip-invalid")
    assert out.rstrip().endswith("; 2 invalid lines skipped")
    assert "reminderd: skipped line 6: phone '212 555 0100' has no country code: write it +<country code>" \
           " <number>, or give the contact's country" in err
    assert sorted(zones(database_url)) == ["c1", "c2", "c3"]
    [c3] = sql(database_url, "SELECT phone FROM reminderd.contacts WHERE contact_id = 'c3'")
    assert c3["phone"] == "+13125550100"


def test_contacts_import_names_what_the_database_refuses(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("contact_id,country\nx1,DE\nx2,QQ\n", encoding="utf-8")
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), status=EX_USAGE)
    assert "line 3: country 'QQ' is not an ISO 3166 country (such as GB); the import stopped there" in err
    assert sorted(zones(database_url)) == ["x1"]
    _, err = cli(database_url, capsys, "contacts", "import", "nobody", str(path), status=EX_USAGE)
    assert 'unknown tenant "nobody"' in err
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(tmp_path / "missing.csv"),
                 status=EX_USAGE)
    assert "cannot read it" in err
    _, err = cli(database_url, capsys, "contacts", "import", "acme", "contacts.txt", status=EX_USAGE)
    assert "name a .csv or .jsonl file, or say --format csv|jsonl" in err


def contact_ids(database_url: str) -> set[str]:
    return {r["contact_id"] for r in sql(database_url, "SELECT contact_id FROM reminderd.contacts")}


@pytest.mark.parametrize("bad", ['"country": "ZZ"', '"timezone": "right/Europe/Paris"'])
def test_a_line_the_database_refuses_stops_the_import_there_naming_it(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    bad: str,
) -> None:
    """A line only the database refuses (its own check stood aside here) is a bad line as one read
    is: named, everything before it imported and nothing after it, or with --skip-invalid the
    rest imported and it listed. (The whole batch of its connection was lost, lines before it
    too, lines after it imported over the other connection, and the error said "lines 4-8000".)"""
    from reminderd import contact_files

    monkeypatch.setattr(contact_files, "_known_country", lambda code: True)
    monkeypatch.setattr(contact_files, "_known_zone", lambda name: True)
    path = tmp_path / "contacts.jsonl"
    lines = [f'{{"contact_id": "c{n}", "country": "GB"}}' for n in range(1, 301)]
    lines[122] = f'{{"contact_id": "c123", {bad}}}'  # line 123: the 7th round of 20, its 3rd line
    lines[140] = '{"contact_id": "c141", "country": "QQ"}'  # a later round: never sent
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    field, value = (part.strip(' "') for part in bad.split(":"))
    said = f'line 123: (contact_id "c123") has unknown {field} "{value}"'
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--batch-size", "10",
                 status=EX_USAGE)
    assert f"{said}; the import stopped there" in err
    assert "122 contacts imported" in err
    assert contact_ids(database_url) == {f"c{n}" for n in range(1, 123)}

    out, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--batch-size", "10",
                   "--skip-invalid")
    assert f"reminderd: skipped {said}" in err
    assert 'reminderd: skipped line 141: (contact_id "c141") has unknown country "QQ"' in err
    assert out.rstrip().endswith("; 2 invalid lines skipped")
    assert contact_ids(database_url) == {f"c{n}" for n in range(1, 301)} - {"c123", "c141"}


def test_of_two_lines_the_database_refuses_in_one_round_the_first_is_named(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database names the first bad element of each connection's half of a round; the import
    stops at the first of the file, whichever half it is in (a bad phone found after an unknown
    country in the same half included)."""
    from reminderd import contact_files

    monkeypatch.setattr(contact_files, "_known_country", lambda code: True)
    monkeypatch.setattr(contact_files, "_written_phone", lambda phone, country: (phone, None))
    path = tmp_path / "contacts.jsonl"
    lines = [f'{{"contact_id": "c{n}"}}' for n in range(1, 41)]
    lines[29] = '{"contact_id": "c30", "country": "ZZ"}'
    lines[19] = '{"contact_id": "c20", "phone": "+1"}'  # before it, named only once c30's refusal is gone
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), status=EX_USAGE)
    assert 'line 20: (contact_id "c20") has phone "+1", which is not +<country code> <number>' in err
    assert contact_ids(database_url) == {f"c{n}" for n in range(1, 20)}


def test_attribute_numbers_are_stored_as_upsert_contacts_stores_them(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An integer beyond 64 bits in a line's attributes was a TypeError traceback; PUT
    /v1/contacts (reminderd.upsert_contacts, numbers as written) stores it: so does the import."""
    attributes = '{"n": 123456789012345678901234567890, "x": 0.10, "s": "text"}'
    path = tmp_path / "contacts.jsonl"
    path.write_text(f'{{"contact_id": "a1", "attributes": {attributes}}}\n', encoding="utf-8")
    out, _ = cli(database_url, capsys, "contacts", "import", "acme", str(path))
    assert out.startswith("1 contacts imported into acme (1 new or changed)")
    sql(database_url, "SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
        f'[{{"contact_id": "a2", "attributes": {attributes}}}]')
    rows = sql(database_url, "SELECT contact_id, attributes::text FROM reminderd.contacts ORDER BY 1")
    assert [(r["contact_id"], r["attributes"]) for r in rows] == [
        ("a1", '{"n": 123456789012345678901234567890, "s": "text", "x": 0.10}'),
        ("a2", '{"n": 123456789012345678901234567890, "s": "text", "x": 0.10}')]


def test_contact_show_says_the_zone_why_and_the_messages(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(database_url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "cust_8f",
        "phone": "+13125550100", "attributes": {"name": "Ann"}}]')""")
    out, _ = cli(database_url, capsys, "schedule", "acme", "renewal", "--at", in_days(5), "--contact",
                 "cust_8f")
    message_id = int(out)
    row = sql(database_url, "SELECT * FROM reminderd.scheduled_messages WHERE id = $1", message_id)[0]
    wall = datetime.fromisoformat(in_days(5))
    assert (row["timezone"], row["timezone_source"], row["local_time"]) == ("America/Chicago", "phone", wall)
    assert row["fire_at"] == wall.replace(tzinfo=ZoneInfo("America/Chicago"))
    out, _ = cli(database_url, capsys, "contact", "show", "acme", "cust_8f")
    assert "  timezone    America/Chicago (from its phone +13125550100)" in out
    assert "messages: 1 live, 0 ended in the last 7 days" in out
    [line] = [line for line in out.splitlines() if line.startswith(f"{message_id} ")]
    assert line.split()[1:3] == ["renewal", "pending"]
    assert "America/Chicago (phone)" in out
    shown = json.loads(cli(database_url, capsys, "contact", "show", "acme", "cust_8f", "--json")[0])
    assert shown["contact"]["timezone_source"] == "phone"
    assert shown["contact"]["attributes"] == {"name": "Ann"}
    assert [m["id"] for m in shown["messages"]] == [message_id]
    _, err = cli(database_url, capsys, "contact", "show", "acme", "nobody", status=EX_USAGE)
    assert 'tenant "acme" has no contact "nobody"' in err


def test_a_recurring_schedule_for_a_contact_is_timed_in_its_zone_by_the_database(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(database_url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "cust_8f",
        "phone": "+13125550100"}]')""")
    out, err = cli(database_url, capsys, "schedule", "acme", "weekly", "--cron", "0 9 * * 1", "--contact",
                   "cust_8f")
    row = sql(database_url, "SELECT *, now() AS asked_at FROM reminderd.scheduled_messages WHERE id = $1",
              int(out))[0]
    assert (row["timezone"], row["timezone_source"], row["contact_id"]) == (
        "America/Chicago", "phone", "cust_8f")
    assert row["fire_at"] == next_fire("0 9 * * 1", "America/Chicago", row["asked_at"])  # due at once (0005)
    assert "(in the contact's timezone)" in err
    _, err = cli(database_url, capsys, "schedule", "acme", "weekly", "--cron", "0 9 * * 1", "--contact",
                 "cust_8f", "--until", "2020-01-01T00:00Z", status=EX_USAGE)
    assert "--until '2020-01-01T00:00Z' is already past" in err
    _, err = cli(database_url, capsys, "schedule", "acme", "once", "--at", "2020-01-01T09:00", "--contact",
                 "cust_8f", status=EX_USAGE)  # a wall time in its zone, too late: the database says so
    assert "too late to send" in err


def test_audiences_broadcast_dry_run_and_approval(database_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sql(database_url,
        """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "t1", "timezone": "Asia/Tokyo"},
        {"contact_id": "t2", "country": "JP"}, {"contact_id": "n1", "phone": "+12125550100"},
        {"contact_id": "l1"}]')""")
    out, _ = cli(database_url, capsys, "audience", "add", "acme", "vip", "t1", "t2,n1", "l1")
    assert out == "audience vip: 4 contacts added (0 were in it)\n"
    out, _ = cli(database_url, capsys, "audience", "list", "acme")
    assert "vip" in out and " 4 " in out
    out, _ = cli(database_url, capsys, "broadcast", "acme", "bf", "--at", in_days(3), "--audience", "vip",
                 "--dry-run")
    assert ": 4 contacts in 3 zones" in out
    assert "sends per UTC hour:" in out
    day = datetime.fromisoformat(in_days(3))
    tokyo = day.replace(tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(UTC)
    assert f"  {tokyo:%Y-%m-%dT%H:00Z}           2  Asia/Tokyo" in out
    assert "(contact 1, country 1)" in out  # where the zones come from
    assert out.rstrip().endswith("approval: not needed\nnothing was staged (--dry-run)")
    assert sql(database_url, "SELECT count(*) FROM reminderd.scheduled_messages")[0][0] == 0

    cli(database_url, capsys, "tenant", "set", "acme", "--approval-threshold", "3")
    out, _ = cli(database_url, capsys, "broadcast", "acme", "bf", "--at", in_days(3), "--audience", "vip",
                 "--dry-run")
    assert ("approval: needed: over the tenant's approval threshold, its messages would wait for another person"
            in out.splitlines())
    out, err = cli(database_url, capsys, "broadcast", "acme", "bf", "--at", in_days(3), "--audience", "vip",
                   "--payload", '{"offer": "x"}', "--as", "alice", "--notify")
    broadcast_id = int(out)
    assert f"broadcast {broadcast_id}: 4 messages staged" in err
    assert "waiting for approval by someone other than alice" in err
    out, _ = cli(database_url, capsys, "broadcasts", "list", "acme")
    assert "awaiting approval" in out
    _, err = cli(database_url, capsys, "broadcasts", "approve", "acme", str(broadcast_id), "--as", "alice",
                 status=EX_USAGE)
    assert "another person must approve it" in err
    out, _ = cli(database_url, capsys, "broadcasts", "approve", "acme", str(broadcast_id), "--as", "bob")
    assert out == f"broadcast {broadcast_id} approved: 4 messages released\n"
    out, _ = cli(database_url, capsys, "broadcasts", "show", "acme", str(broadcast_id))
    assert "approval approved by bob" in out
    assert "4 staged: 4 waiting, 0 held" in out
    shown = json.loads(cli(database_url, capsys, "broadcasts", "show", "acme", str(broadcast_id), "--json")[0])
    assert shown["counts"]["waiting"] == 4
    assert shown["waves"][0]["contacts"] == 4
    out, _ = cli(database_url, capsys, "broadcasts", "cancel", "acme", str(broadcast_id))
    assert out == f"broadcast {broadcast_id} cancelled: 4 messages cancelled\n"


def test_a_refused_broadcast_says_why_with_its_zones(database_url: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sql(database_url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "k", "timezone":
        "Pacific/Kiritimati"}, {"contact_id": "h", "timezone": "Pacific/Honolulu"}]')""")
    now = datetime.now(UTC)
    soon_in_honolulu = (now.astimezone(ZoneInfo("Pacific/Honolulu")) + timedelta(hours=3)).replace(tzinfo=None)
    _, err = cli(database_url, capsys, "broadcast", "acme", "bf", "--at", f"{soon_in_honolulu:%Y-%m-%dT%H:%M}",
                 "--everyone", status=EX_USAGE)
    assert "would send 1 of its 2 messages in the past (1 of its 2 zones)" in err
    assert "\n  Pacific/Kiritimati: 1 contacts at " in err  # the DETAIL, on its own line
    _, err = cli(database_url, capsys, "broadcast", "acme", "bf", "--at", "2026-11-27T09:00+01:00",
                 "--everyone",
                 status=EX_USAGE)
    assert "a broadcast's time is a wall time, read in each contact's own zone" in err
    _, err = cli(database_url, capsys, "broadcast", "acme", "bf", "--cron", "*/10 * * * *", "--everyone",
                 status=EX_USAGE)
    assert "fires up to 6 times an hour" in err
    for args, said in [
        (["--cron", "61 * * * *"], "minute 61 is out of range 0\N{EN DASH}59"),
        (["--rrule", "FREQ=DAILY;COUNT=3;BYHOUR=9"], "an RRULE with COUNT needs a DTSTART"),
        (["--cron", "0 9 * * *", "--until", "2026-01-01T09:00Z"],
         'broadcast "bf" of tenant "acme" ends before it starts: its until 2026-01-01T09:00:00Z is already'
         " past"),
    ]:
        _, err = cli(database_url, capsys, "broadcast", "acme", "bf", *args, "--everyone", status=EX_USAGE)
        assert said in err and "Traceback" not in err, err
    out, _ = cli(database_url, capsys, "broadcast", "acme", "weekly", "--every", "monday at 09:00",
                 "--everyone",
                 "--dry-run")
    assert "(its first occurrence; the next is " in out
    # An RRULE's UNTIL=…Z is an instant (RFC 5545): an hour after Kiritimati's (UTC+14) wall time
    # leaves that one the last. The hour is 2-3 h ahead on Kiritimati's clock, never at the edge of now
    # (a fixed 20:00 made the test fail in the minutes before it, 05:55-06:00 UTC).
    kiritimati = ZoneInfo("Pacific/Kiritimati")
    here = now.astimezone(kiritimati).replace(tzinfo=None)
    hour = (here.hour + 3) % 24
    evening = here.replace(hour=hour, minute=0, second=0, microsecond=0)
    evening += timedelta(days=1) if evening <= here else timedelta(0)
    ends = evening.replace(tzinfo=kiritimati).astimezone(UTC) + timedelta(hours=1)
    out, _ = cli(database_url, capsys, "broadcast", "acme", "evening", "--rrule",
                 f"FREQ=DAILY;BYHOUR={hour};BYMINUTE=0;UNTIL={ends:%Y%m%dT%H%M%S}Z", "--everyone", "--dry-run")
    assert f"at {evening:%Y-%m-%d %H:%M} on each contact's clock: 2 contacts in 1 zones" in out
    assert "the next is" not in out
    # The until ends each contact by their own instant: Honolulu's (24 hours after Kiritimati's) is after it.
    assert "\n  1 contacts not sent this occurrence: its instant in their zone is after the until\n" in out
    assert "Pacific/Honolulu" not in out


def test_a_dry_run_says_how_many_contacts_are_in_a_zone_this_server_cannot_read(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A contact row copied by logical replication (no triggers) from a server whose tzdata has a
    zone this one lacks (test_broadcasts.contact_in_a_zone_this_server_lacks): said, not refused."""
    from test_broadcasts import contact_in_a_zone_this_server_lacks

    async def write() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await contact_in_a_zone_this_server_lacks(connection, "lost_0")
        finally:
            await connection.close()

    sql(database_url, """SELECT reminderd.upsert_contacts('acme',
        '[{"contact_id": "t1", "timezone": "Asia/Tokyo"}]')""")
    asyncio.run(write())
    out, _ = cli(database_url, capsys, "broadcast", "acme", "bf", "--at", in_days(3), "--everyone", "--dry-run")
    assert (": 2 contacts in 1 zones\n"
            "  1 contacts in a zone this database server cannot read: their rows would") in out
    assert "America/Nuevo_Lugar" not in out


@pytest.mark.parametrize("case", ["unknown-contacts", "unknown-audience", "in-the-past", "prefix-in-use"])
def test_a_dry_run_is_refused_as_the_real_broadcast_would_be(
    database_url: str, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """--dry-run says what the real call would: the same line and status, and nothing is staged."""
    sql(database_url,
        """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "t1", "timezone": "Asia/Tokyo"}]')""")
    args = ["broadcast", "acme", "bf", "--at", in_days(3), "--contacts", "t1"]
    if case == "unknown-contacts":
        args[-1] = "t1,nobody"
    elif case == "unknown-audience":
        args[-2:] = ["--audience", "nolist"]
    elif case == "in-the-past":
        args[4] = in_days(-1)
    else:
        cli(database_url, capsys, *args)
        args += ["--payload", '{"offer": "other"}']  # another broadcast, the same prefix
    messages = sql(database_url, "SELECT count(*) FROM reminderd.scheduled_messages")[0][0]
    _, dry = cli(database_url, capsys, *args, "--dry-run", status=EX_USAGE)
    _, real = cli(database_url, capsys, *args, status=EX_USAGE)
    assert dry == real and dry.startswith("reminderd: error: ")
    assert sql(database_url, "SELECT count(*) FROM reminderd.scheduled_messages")[0][0] == messages


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_broadcast_as_a_read_only_role_says_which_role_it_needs(
    database_url: str, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    """The URL's role, not the input, is wrong: exit 78 naming the roles that may broadcast (a dry
    run makes the real call, rolled back, so it needs them too), not exit 2 'permission denied'."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    sql(database_url, f"CREATE ROLE {role} LOGIN IN ROLE reminderd_readonly")
    try:
        scheme, _, rest = database_url.partition("://")
        reader = f"{scheme}://{role}@{rest.rpartition('@')[2]}"
        args = ["broadcast", "acme", "bf", "--at", in_days(3), "--everyone"]
        args += ["--dry-run"] if dry_run else []
        _, err = cli(reader, capsys, *args, status=EX_CONFIG)
        assert err == (
            "reminderd: permission denied for function broadcast (--database-url; its role needs "
            "reminderd_app (a member of the tenant) or reminderd_daemon to broadcast, --dry-run too, "
            "which makes the real call and rolls it back: docs/sql.md, Roles)\n")
    finally:
        sql(database_url, f"DROP OWNED BY {role}")
        sql(database_url, f"DROP ROLE {role}")


def test_cadence_and_the_tenants_audience_settings(database_url: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = cli(database_url, capsys, "tenant", "set", "acme", "--timezone", "Asia/Kolkata",
                 "--broadcast-limit",
                 "1000", "--approval-threshold", "none")
    assert out.rstrip().endswith(", timezone Asia/Kolkata, broadcasts of at most 1,000 contacts")
    sql(database_url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "c1"}]')""")
    anchor = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0)
    out, _ = cli(database_url, capsys, "cadence", "acme", "renewal_42", "--anchor", anchor.isoformat(),
                 "--offsets=-30d,-7d,-1d", "--at-local", "10:00", "--contact", "c1")
    lines = out.splitlines()
    assert lines[0].split() == ["REF", "MESSAGE", "FIRE", "AT", "(UTC)", "ON", "ITS", "CLOCK"]
    assert lines[1].startswith("renewal_42:-30d  -") and lines[1].endswith("skipped: in the past")
    assert [line.split()[0] for line in lines[2:]] == ["renewal_42:-7d", "renewal_42:-1d"]
    rows = sql(database_url,
               "SELECT ref_id, fire_at, timezone, timezone_source FROM reminderd.scheduled_messages"
                             " ORDER BY fire_at")
    local = anchor.astimezone(ZoneInfo("Asia/Kolkata")).date() - timedelta(days=7)
    assert rows[0]["fire_at"] == datetime(local.year, local.month, local.day, 10,
                                          tzinfo=ZoneInfo("Asia/Kolkata"))
    assert {(r["timezone"], r["timezone_source"]) for r in rows} == {("Asia/Kolkata", "tenant")}
    earlier = (anchor - timedelta(days=15)).isoformat()
    out, _ = cli(database_url, capsys, "cadence", "acme", "renewal_42", "--anchor", earlier,
                 "--offsets=-7d,-1d", "--at-local", "10:00", "--contact", "c1")
    said = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert said["renewal_42:-7d"].endswith("skipped: in the past; cancelled message 1")
    assert said["renewal_42:-1d"].endswith("replaced message 2")
    assert list(said) == ["renewal_42:-7d", "renewal_42:-1d"]
    _, err = cli(database_url, capsys, "cadence", "acme", "r", "--anchor", "2027-01-01T00:00", "--contact",
                 "c1",
                 status=EX_USAGE)
    assert "give its UTC offset" in err


def test_a_line_that_would_strand_its_contacts_messages_is_a_bad_line_like_any_other(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The replanning trigger's refusal (a contact left with no zone while its messages need one)
    names its line as the batch's own checks do (migration 0032; it failed the whole round)."""
    sql(database_url, "UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
    sql(database_url, "SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
        '[{"contact_id": "z1", "timezone": "Asia/Tokyo"}]')
    sql(database_url, "SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *', contact_id => 'z1')")
    sql(database_url, "SELECT reminderd.schedule('acme', 'once', fire_in => '1 day', contact_id => 'z1')")
    path = tmp_path / "contacts.jsonl"
    path.write_text('{"contact_id": "good1", "timezone": "Europe/Paris"}\n'
                    '{"contact_id": "z1", "timezone": null}\n'
                    '{"contact_id": "good2", "timezone": "Europe/Rome"}\n', encoding="utf-8")
    said = 'line 2: (contact_id "z1") would have no timezone, and 2 of its messages need one'
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), status=EX_USAGE)
    assert f"{said}; the import stopped there" in err
    assert contact_ids(database_url) == {"good1", "z1"}
    _, err = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--skip-invalid")
    assert f"reminderd: skipped {said}" in err
    assert contact_ids(database_url) == {"good1", "good2", "z1"}
    assert zones(database_url)["z1"] == ("Asia/Tokyo", "contact")
