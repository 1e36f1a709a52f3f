"""`reminderd contacts import` at size against a real PostgreSQL (docs/audiences.md, migration 0016):
every contact of a big mixed file resolved as phonenumbers resolves it, a re-import that changes
nothing writes nothing, a changed phone re-plans the contact's messages, a line that leaves a field
out keeps the contact's value, and migration 0016 runs over contacts already there. The module
shares one emptied database."""

from __future__ import annotations

import asyncio
import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import poll_until
from test_audience_cli import cli, sql

from reminderd.migrate import upgrade
from reminderd.phones import international, phone_timezone

pytestmark = pytest.mark.shared_database

# (how a phone starts, digits to add, its country or None) of real numbering plans, E.164 and national.
PLANS = [("+1212555", 4, None), ("+1312555", 4, None), ("+14155", 6, None), ("+91987", 7, None),
         ("+61293", 6, None), ("+61412", 6, None), ("+5511912", 6, None), ("+7495", 7, None),
         ("+7727", 7, None), ("+4930", 8, None), ("+4420794", 5, None), ("+447700", 6, None),
         ("+81312", 6, None), ("+1800", 7, None), ("+999", 6, None), ("+4412", 2, None),
         ("020 7946 ", 4, "GB"), ("(312) 555-", 4, "US"), ("98765 ", 5, "IN"), ("0412 ", 6, "AU")]
ZONES = ["Asia/Tokyo", "Europe/Berlin", "America/Denver", "Pacific/Auckland"]
COUNTRIES = ["IN", "US", "DE", "BR", "JP"]


@pytest.fixture
def database_url(database_url: str) -> str:
    sql(database_url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', "
                      "'https://example.com/cb', 'Europe/London')")
    return database_url


def write_mix(path: Path, n: int, seed: int = 14) -> list[dict[str, str]]:
    """n contacts: most with a phone (E.164 or national with its country; some invalid), some with
    their own zone, some with only a country; the rows as written."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"contact_id": f"c{i}", "phone": "", "country": "", "timezone": "", "plan": rng.choice("ab")}
        kind = rng.random()
        if kind < 0.8:
            start, digits, country = rng.choice(PLANS)
            row["phone"] = start + "".join(rng.choice("0123456789") for _ in range(digits))
            row["country"] = country or ""
        elif kind < 0.9:
            row["timezone"] = rng.choice(ZONES)
        else:
            row["country"] = rng.choice(COUNTRIES)
        rows.append(row)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        out = csv.DictWriter(handle, fieldnames=["contact_id", "phone", "country", "timezone", "plan"])
        out.writeheader()
        out.writerows(rows)
    return rows


def expected_zone(row: dict[str, str], country_zones: dict[str, str | None]) -> tuple[str | None, str | None]:
    """What the contact's zone must be, worked out in Python with phonenumbers itself."""
    if row["timezone"]:
        return row["timezone"], "contact"
    by_phone = phone_timezone(international(row["phone"], row["country"] or None)) if row["phone"] else None
    if by_phone is not None:
        return by_phone, "phone"
    by_country = country_zones.get(row["country"]) if row["country"] else None
    return (by_country, "country") if by_country else (None, None)


def stored(database_url: str) -> dict[str, tuple[str | None, str | None, str | None]]:
    rows = sql(database_url,
               "SELECT contact_id, phone, resolved_timezone, timezone_source FROM reminderd.contacts")
    return {r["contact_id"]: (r["phone"], r["resolved_timezone"], r["timezone_source"]) for r in rows}


def test_a_big_import_resolves_every_contact_as_phonenumbers_does(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    rows = write_mix(path, 12_000)
    out, _ = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--batch-size", "1000")
    assert out.startswith("12,000 contacts imported into acme (12,000 new or changed) in ")
    countries = sql(database_url, "SELECT country, timezone FROM reminderd.countries")
    country_zones = {r["country"]: r["timezone"] for r in countries}
    got = stored(database_url)
    assert len(got) == 12_000
    wrong = []
    for row in rows:
        phone = international(row["phone"], row["country"] or None) if row["phone"] else None
        if got[row["contact_id"]] != (phone, *expected_zone(row, country_zones)):
            wrong.append((row, got[row["contact_id"]]))
    assert wrong == []
    sources = {source for _, _, source in got.values()}
    assert sources == {"contact", "phone", "country", None}  # every way of resolving, and none
    national = next(r for r in rows if r["phone"].startswith("020 "))
    assert (got[national["contact_id"]][0] or "").startswith("+4420")  # written in E.164


def test_a_reimport_that_changes_nothing_writes_nothing(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    write_mix(path, 3_000)
    cli(database_url, capsys, "contacts", "import", "acme", str(path), "--batch-size", "500")
    versions = "SELECT contact_id, ctid::text, xmin::text, xmax::text, updated_at FROM reminderd.contacts"
    before = {r["contact_id"]: tuple(r) for r in sql(database_url, versions)}
    out, _ = cli(database_url, capsys, "contacts", "import", "acme", str(path), "--batch-size", "500")
    assert out.startswith("3,000 contacts imported into acme (0 new or changed) in ")
    after = {r["contact_id"]: tuple(r) for r in sql(database_url, versions)}
    assert after == before  # not rewritten, not even locked (xmax): nothing written


def test_a_changed_phone_replans_the_contacts_messages_in_the_same_import(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("contact_id,phone\nc1,+1 312 555 0100\nc2,+1 212 555 0100\n", encoding="utf-8")
    cli(database_url, capsys, "contacts", "import", "acme", str(path))
    day = datetime.now(UTC).date() + timedelta(days=10)
    wall = datetime(day.year, day.month, day.day, 9, 0)
    message_id = sql(database_url, "SELECT reminderd.schedule('acme', 'r1', local_time => $1, "
                                   "contact_id => 'c1')", wall)[0][0]
    unchanged_id = sql(database_url, "SELECT reminderd.schedule('acme', 'r2', local_time => $1, "
                                     "contact_id => 'c2')", wall)[0][0]
    path.write_text("contact_id,phone\nc1,+33 1 42 68 53 00\nc2,+1 212 555 0100\n", encoding="utf-8")
    out, _ = cli(database_url, capsys, "contacts", "import", "acme", str(path))
    assert out.startswith("2 contacts imported into acme (1 new or changed)")
    rows = {r["id"]: r for r in sql(database_url, "SELECT * FROM reminderd.scheduled_messages")}
    moved = rows[message_id]
    assert (moved["timezone"], moved["timezone_source"], moved["last_event"]) == ("Europe/Paris", "phone",
                                                                                  "replanned")
    assert moved["fire_at"] == wall.replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert rows[unchanged_id]["timezone"] == "America/New_York"
    events = sql(database_url, "SELECT message_id, reason FROM reminderd.events WHERE event = 'replanned'")
    assert [(e["message_id"], e["reason"]) for e in events] == [
        (message_id, "contact c1: timezone America/Chicago (phone) -> Europe/Paris (phone)")]


def test_a_line_that_leaves_a_field_out_keeps_the_contacts_value(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = tmp_path / "first.jsonl"
    first.write_text('{"contact_id": "k", "phone": "+919876543210", "country": "IN", "attributes": {"a": 1}}\n',
                     encoding="utf-8")
    cli(database_url, capsys, "contacts", "import", "acme", str(first))
    later = tmp_path / "later.jsonl"
    later.write_text('{"contact_id": "k", "timezone": "Asia/Tokyo"}\n{"contact_id": "m", "attributes": null}\n',
                     encoding="utf-8")
    cli(database_url, capsys, "contacts", "import", "acme", str(later))
    rows = {r["contact_id"]: r for r in sql(database_url, "SELECT * FROM reminderd.contacts")}
    k = rows["k"]
    assert (k["phone"], k["country"], k["attributes"], k["timezone"]) == ("+919876543210", "IN", '{"a": 1}',
                                                                          "Asia/Tokyo")
    assert (k["resolved_timezone"], k["timezone_source"]) == ("Asia/Tokyo", "contact")
    assert rows["m"]["attributes"] == "{}"  # null clears
    csv_file = tmp_path / "only_country.csv"
    csv_file.write_text("contact_id,country\nk,\n", encoding="utf-8")  # a column given empty: cleared
    cli(database_url, capsys, "contacts", "import", "acme", str(csv_file))
    k = sql(database_url, "SELECT * FROM reminderd.contacts WHERE contact_id = 'k'")[0]
    assert (k["phone"], k["country"], k["timezone"]) == ("+919876543210", None, "Asia/Tokyo")


def test_0016_runs_forward_over_contacts_already_there(
    empty_database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = empty_database_url
    upgrade(url, "0015")
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'UTC')")
    sql(url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "t1", "timezone": "Asia/Tokyo"},
                {"contact_id": "p1", "phone": "+13125550100", "attributes": {"a": 1}}]')""")
    before = {r["contact_id"]: tuple(r) for r in sql(url, "SELECT * FROM reminderd.contacts")}
    assert upgrade(url, "0016") == ["0016"]
    assert {r["contact_id"]: tuple(r) for r in sql(url, "SELECT * FROM reminderd.contacts")} == before
    upgrade(url)  # and the revisions after it, for the import below
    path = tmp_path / "contacts.jsonl"
    path.write_text('{"contact_id": "t1", "timezone": "Asia/Tokyo"}\n'
                    '{"contact_id": "p1", "phone": "+13125550100", "attributes": {"a": 1}}\n'
                    f'{{"contact_id": "{"x" * 128}", "phone": "+1 212 555 0100"}}\n', encoding="utf-8")
    out, _ = cli(url, capsys, "contacts", "import", "acme", str(path))
    assert out.startswith("3 contacts imported into acme (1 new or changed)")  # only the new one
    assert stored(url)["x" * 128][1:] == ("America/New_York", "phone")
    with pytest.raises(asyncpg.CheckViolationError, match="contact_id_format"):
        sql(url, f"INSERT INTO reminderd.contacts (tenant_id, contact_id) VALUES ('acme', '{'y' * 129}')")


def test_a_contact_added_meanwhile_by_another_transaction_is_updated_not_refused(database_url: str) -> None:
    """The import adds contacts it did not find with a plain INSERT; one another transaction adds
    between the look-up and the insert makes the batch go again through ON CONFLICT."""
    row = ("late", "Asia/Tokyo", None, None, "{}", True, False, False, True)

    async def race() -> int:
        first = await asyncpg.connect(database_url)
        second = await asyncpg.connect(database_url)
        try:
            async with first.transaction():
                await first.execute("""SELECT reminderd.upsert_contacts('acme', '{"contact_id": "late"}')""")
                waiting = asyncio.ensure_future(second.fetchval(
                    "SELECT reminderd.upsert_contact_rows('acme', $1::reminderd.contact_v1[])", [row]))
                await poll_until(lambda: blocked(first), timeout_s=10)  # the second waits on the first's row
            written: int = await waiting
            return written
        finally:
            await first.close()
            await second.close()

    async def blocked(db: asyncpg.Connection) -> bool:
        waiting: int = await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                         " AND datname = current_database()")
        return waiting > 0

    assert asyncio.run(race()) == 1
    assert stored(database_url)["late"][1:] == ("Asia/Tokyo", "contact")
