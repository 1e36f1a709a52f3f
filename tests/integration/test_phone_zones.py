"""The database resolves a phone's zone exactly as the phonenumbers library does (issue 14): the
SQL (reminderd.phone_timezone, on tables built from phonenumbers' own data by `reminderd
migrate`) against the library itself on thousands of numbers: every region's example number of
every type, written with a national prefix after the code, with digits changed, added and removed,
random digits after every calling code, and numbers under every prefix of the library's zone map."""

from __future__ import annotations

import random

import asyncpg
import phonenumbers
import pytest
from phonenumbers import PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS
from phonenumbers.tzdata import TIMEZONE_DATA

from reminderd.phones import phone_timezone, versions
from reminderd.schedule import calendars_version

pytestmark = pytest.mark.shared_database

TYPES = [value for value in vars(PhoneNumberType).values() if isinstance(value, int)]


def corpus(seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    digits = "0123456789"
    numbers: set[str] = set()
    for region in sorted(SUPPORTED_REGIONS):
        plan = phonenumbers.PhoneMetadata.metadata_for_region(region)
        national_prefix = (plan.national_prefix if plan else None) or "0"
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            code = str(example.country_code)
            national = e164[1 + len(code):]
            numbers |= {e164, f"+{code} ({national_prefix}){national}", f"+{code}{national_prefix}{national}",
                        f"+{code} {national[:3]}-{national[3:]}", e164 + rng.choice(digits), e164[:-1]}
            for _ in range(3):
                changed = list(national)
                changed[rng.randrange(len(changed))] = rng.choice(digits)
                numbers.add(f"+{code}{''.join(changed)}")
    for calling_code in COUNTRY_CODE_TO_REGION_CODE:
        for _ in range(5):
            numbers.add(f"+{calling_code}" + "".join(rng.choice(digits) for _ in range(rng.randrange(3, 14))))
    for prefix in TIMEZONE_DATA:
        for _ in range(2):
            numbers.add(f"+{prefix}" + "".join(rng.choice(digits) for _ in range(max(0, rng.randrange(8, 12)
                                                                                       - len(prefix) + 2))))
    numbers |= {"", "+", "+0123456789", "12125550100", "+1 212 555 0100 ext. 7", "+" + "9" * 300, "tel:+1"}
    return sorted(numbers)


async def test_sql_gives_every_number_the_zone_phonenumbers_gives(db: asyncpg.Connection) -> None:
    numbers = corpus()
    rows = await db.fetch(
        "SELECT p, (SELECT timezone FROM reminderd.phone_timezone(p)) AS zone FROM unnest($1::text[]) AS p",
            numbers
    )
    in_sql = {row["p"]: row["zone"] for row in rows}
    expected = {number: phone_timezone(number) for number in numbers}
    assert len(numbers) > 15_000
    assert sum(zone is not None for zone in expected.values()) > 4_000  # plenty resolve; the rest fall through
    assert {n: (in_sql[n], expected[n]) for n in numbers if in_sql[n] != expected[n]} == {}


@pytest.mark.parametrize(
    ("phone", "zone"),
    [
        ("+1 212 555 0100", "America/New_York"),
        ("+1 415 555 2671", "America/Los_Angeles"),
        ("+1 204 555 0100", "America/Winnipeg"),  # Canada shares +1: found after the US fails
        ("+1 876 523 0123", "America/Jamaica"),  # a region told apart by its leading digits
        ("+91 98765 43210", "Asia/Kolkata"),
        ("+61 7 3224 4000", "Australia/Brisbane"),
        ("+61 412 345 678", None),
        ("+55 11 91234 5678", "America/Sao_Paulo"),
        ("+7 383 123 4567", "Asia/Novosibirsk"),
        ("+7 712 345 6789", "Asia/Aqtobe"),  # Kazakhstan shares +7 with Russia
        ("+44 (0)20 7946 0018", "Europe/London"),
        ("+44 1481 712345", "Europe/London"),  # Guernsey: phonenumbers' Europe/Guernsey, a link to London
        ("+1 212 000 0000", None),
        ("+999 1234 5678", None),  # no such calling code
    ],
)
async def test_real_numbers(db: asyncpg.Connection, phone: str, zone: str | None) -> None:
    assert await db.fetchval("SELECT timezone FROM reminderd.phone_timezone($1)", phone) == zone
    assert phone_timezone(phone) == zone


async def test_migrate_recorded_the_library_versions_it_loaded(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT * FROM reminderd.reference_versions")
    loaded = {row["source"]: row["version"] for row in rows}
    assert loaded == {**versions(), "holidays": calendars_version()}  # and the holiday calendars' (0035)
    assert await db.fetchval("SELECT count(*) FROM reminderd.phone_prefixes") > 100_000
