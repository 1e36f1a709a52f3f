"""reminderd/phones.py: the reference data the database resolves zones with, and the resolution
as phonenumbers gives it (the oracle tests/integration/test_phone_zones.py compares SQL with)."""

from __future__ import annotations

import pytest

from reminderd.phones import SEPARATORS, international, phone_timezone, reference_data


@pytest.mark.parametrize(
    ("phone", "zone"),
    [
        ("+1 212 555 0100", "America/New_York"),  # US, a fixed-line area code
        ("+1 (415) 555-2671", "America/Los_Angeles"),
        ("+1 312 555 0100", "America/Chicago"),
        ("+1 800 555 0100", None),  # toll-free: no place, and +1 spans many zones
        ("+91 98765 43210", "Asia/Kolkata"),  # India: one zone, mobiles too (by its current name)
        ("+61 2 9374 4000", "Australia/Sydney"),
        ("+61 7 3224 4000", "Australia/Brisbane"),
        ("+61 8 9225 5000", None),  # area code 08 is Perth and Adelaide: two zones, falls through
        ("+61 412 345 678", None),  # an Australian mobile: no place, and AU has several zones
        ("+55 11 91234 5678", "America/Sao_Paulo"),  # Brazil: mobiles are tied to a place
        ("+55 92 3234 5678", "America/Manaus"),
        ("+7 495 123 4567", "Europe/Moscow"),
        ("+7 383 123 4567", "Asia/Novosibirsk"),
        ("+44 20 7946 0018", "Europe/London"),
        ("+44 (0)20 7946 0018", "Europe/London"),  # a national prefix written after the code
        ("+44 7911 123456", None),  # a UK mobile: not tied to a place, and +44 spans four zones
        ("+1 212 000 0000", None),  # not a valid number
        ("+12", None),
        ("212 555 0100", None),  # not written with +: the CLI writes it in E.164 first
        (None, None),
    ],
)
def test_real_numbers_of_several_countries(phone: str | None, zone: str | None) -> None:
    assert phone_timezone(phone) == zone


def test_national_numbers_are_written_in_e164_for_the_database() -> None:
    assert international("020 7946 0018", "GB") == "+442079460018"
    assert international("(415) 555-2671", "us") == "+14155552671"
    assert international("0044 20 7946 0018", "GB") == "+442079460018"
    assert international("+44 (0)20 7946-0018", None) == "+44020794600" + "18"  # separators only
    assert international("not a number", "GB") == "not a number"


def test_separators_are_the_ascii_ones_sql_translates() -> None:
    assert SEPARATORS.sub("", " \t\n\r\f\v().-/x") == "x"
    assert SEPARATORS.sub("", "\u00a0") == "\u00a0"  # not a separator here, nor in SQL


def test_countries_get_a_zone_only_when_all_of_theirs_keep_one_time() -> None:
    zones = {row["country"]: row["timezone"] for row in reference_data().countries}
    assert zones["IN"] == "Asia/Kolkata"
    assert zones["GB"] == "Europe/London"
    assert zones["DE"] == "Europe/Berlin"  # Busingen keeps Berlin's time
    assert zones["AR"] == "America/Argentina/Buenos_Aires"  # twelve zones, one time
    for several in ("US", "AU", "BR", "RU", "ES", "MX", "CA"):
        assert zones[several] is None, several
    assert len(zones) > 240


def test_the_tables_cover_every_calling_code() -> None:
    data = reference_data()
    codes = {row["country_code"] for row in data.plans}
    assert {1, 7, 44, 55, 61, 91, 800} <= codes
    assert {row["country_code"] for row in data.regions} == codes
    us = next(row for row in data.plans if row["country_code"] == 1)
    assert (us["main_region"], us["regions"], us["first_region_has_leading_digits"]) == ("US", 25, False)
    assert all(len(row["masks"]) == 17 for row in data.prefixes if not row["leading_digits"])
    assert set(data.versions) == {"phonenumbers", "tzdata", "tables"}
