"""Phone numbers and countries to timezones: the reference data the database resolves with.

A contact's zone is resolved in the database (reminderd.upsert_contacts and the contacts trigger),
so every way a contact comes in (SQL, the CLI, later the HTTP API) gets the same answer in the
same transaction. The database resolves with tables built here from the installed libraries' own
data, loaded by `reminderd migrate` whenever their versions change:

- phone_plans, one row per country calling code: how a number written `+<code><number>` is
  parsed (the national prefix some people write after the code, "+44 (0)20 …");
- phone_regions, one row per region of a calling code in phonenumbers' order: the patterns that
  say whether a number is valid there and of which type (fixed line, mobile, or a non-geographic
  kind such as toll-free), lengths folded in;
- phone_timezones: phonenumbers' own prefix -> timezones map, searched by longest prefix;
- countries: ISO 3166 countries (tzdata's iso3166.tab) and, where all of a country's zones in
  zone.tab keep the same time from now on, its zone.

`phone_timezone()` is the same resolution straight from phonenumbers: the oracle the SQL is
tested against (tests/integration/test_contacts.py). `international()` writes a nationally
formatted number in E.164 for `reminderd contacts import`.

Nothing here reads a clock: the country zones compare each zone's rule for the future (the POSIX
TZ string a TZif file ends with), not offsets sampled around today.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc
from phonenumbers.phonenumberutil import (
    _GEO_MOBILE_COUNTRIES,  # the library's own set; no public name
    COUNTRY_CODE_TO_REGION_CODE,
    region_code_for_country_code,
)
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from .prefixes import DigitPattern, expand, leading_prefixes

__all__ = [
    "COLUMNS",
    "SEPARATORS",
    "ReferenceData",
    "canonical",
    "international",
    "phone_timezone",
    "reference_data",
    "versions",
]

# What a number may be written with besides "+" and digits, in SQL (translate) and here alike.
SEPARATORS = re.compile(r"[ \t\n\r\f\v().\-/]")
_E164_SHAPE = re.compile(r"\+[0-9]{3,}")
_MAX_INPUT = 250  # phonenumbers' own limit on the text it parses

# The kinds of number that are never tied to a place, in the order phonenumbers tests them.
_SPECIAL = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")


def phone_timezone(phone: str | None) -> str | None:
    """The one zone phonenumbers gives `phone`, or None: not written as + and digits, not a valid
    number, or a number whose place spans several zones (the resolution falls through)."""
    if phone is None:
        return None
    written = SEPARATORS.sub("", phone)
    if len(written) > _MAX_INPUT or not _E164_SHAPE.fullmatch(written):
        return None
    try:
        number = phonenumbers.parse(written, None)
    except phonenumbers.NumberParseException:
        return None
    return _single_zone(time_zones_for_number(number))


def international(phone: str, country: str | None) -> str:
    """`phone` as the database reads it: one written with "+" without its separators (the
    database reads "+44 (0)20 …" as phonenumbers does); a nationally written one ("020 7946
    0018", "0044 20 …") in E.164 (+442079460018), read as `country` dials, when phonenumbers can
    read it; otherwise as written (the database then gives it no zone)."""
    text = phone.strip()
    compact = SEPARATORS.sub("", text)
    if compact.startswith("+"):
        return compact
    try:
        number = phonenumbers.parse(text, country.upper() if country else None)
    except phonenumbers.NumberParseException:
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# The reference tables ---------------------------------------------------------------------------


MAX_DIGITS = 17  # phonenumbers' longest national number
# The kinds of number a region's prefix table tells apart, bit by bit (see reminderd.phone_timezone).
GENERAL, SPECIAL, FIXED_LINE, MOBILE = 1, 2, 4, 8


# How the tables are built from the libraries: bumped when that changes, so `reminderd migrate`
# reloads them even when the libraries did not change.
TABLES_VERSION = "1"

# Each table's columns, in the order built, with their types as the database declares them
# (format_type(); tests/integration/test_reference_load.py holds the two equal). A "?" marks a
# column that may be NULL. reminderd/reference_cache.py checks rows read back from disk by these.
COLUMNS: dict[str, dict[str, str]] = {
    "phone_plans": {
        "country_code": "integer", "main_region": "text", "regions": "integer", "national_prefix": "text?",
        "national_prefix_groups": "integer", "national_prefix_rule": "text?", "viable": "text?",
        "lengths": "integer[]", "local_lengths": "integer[]", "geographic_mobile": "boolean",
        "longest_prefix": "integer", "first_region_has_leading_digits": "boolean", "country_timezone": "text?",
    },
    "phone_regions": {"country_code": "integer", "position": "integer", "region": "text",
                      "has_leading_digits": "boolean"},
    "phone_prefixes": {"country_code": "integer", "position": "integer", "leading_digits": "boolean",
                       "prefix": "text", "masks": "smallint[]?", "timezone": "text?"},
    "phone_timezones": {"prefix": "text", "timezones": "text[]"},
    "countries": {"country": "text", "name": "text", "timezone": "text?"},
}


@dataclass(frozen=True)
class ReferenceData:
    """The rows of the database's reference tables, and the versions they were built from: each
    table's rows as tuples of values in the order of its COLUMNS (as COPY sends them)."""

    versions: dict[str, str]
    rows: dict[str, list[tuple[Any, ...]]]

    @classmethod
    def of(cls, versions: dict[str, str], tables: dict[str, list[dict[str, Any]]]) -> ReferenceData:
        """From rows as dicts of their columns (each with exactly its table's COLUMNS, in order)."""
        rows = {}
        for table, declared in COLUMNS.items():
            columns = tuple(declared)
            for row in tables[table]:
                if tuple(row) != columns:
                    raise ValueError(f"a row of {table} has the columns {', '.join(row)},"
                                     f" not {', '.join(columns)}")
            rows[table] = [tuple(row.values()) for row in tables[table]]
        return cls(versions, rows)

    @staticmethod
    def columns(table: str) -> list[str]:
        return list(COLUMNS[table])

    def dicts(self, table: str) -> list[dict[str, Any]]:
        columns = self.columns(table)
        return [dict(zip(columns, row, strict=True)) for row in self.rows[table]]

    @property
    def plans(self) -> list[dict[str, Any]]:
        return self.dicts("phone_plans")

    @property
    def regions(self) -> list[dict[str, Any]]:
        return self.dicts("phone_regions")

    @property
    def prefixes(self) -> list[dict[str, Any]]:
        return self.dicts("phone_prefixes")

    @property
    def timezones(self) -> list[dict[str, Any]]:
        return self.dicts("phone_timezones")

    @property
    def countries(self) -> list[dict[str, Any]]:
        return self.dicts("countries")


def versions() -> dict[str, str]:
    """The versions the reference data comes from: the libraries', and the tables' own."""
    return {"phonenumbers": phonenumbers.__version__, "tzdata": _tzdata_version(), "tables": TABLES_VERSION}


@functools.cache
def reference_data() -> ReferenceData:
    """Every row of the reference tables (a second or two to build; built once per process, and
    kept between processes by reference_cache.py)."""
    codes = sorted(COUNTRY_CODE_TO_REGION_CODE)
    regions = [row for code in codes for row in _regions(code)]
    prefixes = [row for code in codes for row in _prefixes(code)]
    longest: dict[int, int] = {}
    for row in prefixes:
        longest[row["country_code"]] = max(longest.get(row["country_code"], 0), len(row["prefix"]))
    return ReferenceData.of(versions(), {
        "phone_plans": [_plan(code, longest.get(code, 0)) for code in codes],
        "phone_regions": regions,
        "phone_prefixes": prefixes,
        "phone_timezones": [{"prefix": prefix, "timezones": list(zones)}
                            for prefix, zones in sorted(TIMEZONE_DATA.items())],
        "countries": _countries(),
    })


def _metadata(code: int, region: str) -> PhoneMetadata:
    found = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    assert found is not None, f"phonenumbers lists +{code} for {region} but has no metadata for it"
    return found


def _plan(code: int, longest_prefix: int) -> dict[str, Any]:
    """How a number after "+<code>" is read: the national prefix phonenumbers strips (a match at
    the start, its capture groups, the rewrite rule) and the main region's general description."""
    plan = _metadata(code, region_code_for_country_code(code))
    prefix = plan.national_prefix_for_parsing or None
    general = plan.general_desc
    assert general is not None, f"phonenumbers has no general description for +{code}"
    return {
        "country_code": code,
        "main_region": region_code_for_country_code(code),
        "regions": len(COUNTRY_CODE_TO_REGION_CODE[code]),
        "national_prefix": prefix,
        "national_prefix_groups": 0 if prefix is None else re.compile(prefix).groups,
        "national_prefix_rule": plan.national_prefix_transform_rule or None,
        "viable": None if not general.national_number_pattern else f"^(?:{general.national_number_pattern})$",
        "lengths": list(general.possible_length),
        "local_lengths": list(general.possible_length_local_only),
        "geographic_mobile": code in _GEO_MOBILE_COUNTRIES,
        "longest_prefix": longest_prefix,
        "first_region_has_leading_digits": _metadata(code, COUNTRY_CODE_TO_REGION_CODE[code][0]).leading_digits
        is not None,
        "country_timezone": _country_level_zone(code),
    }


def _regions(code: int) -> Iterable[dict[str, Any]]:
    for position, region in enumerate(COUNTRY_CODE_TO_REGION_CODE[code], start=1):
        yield {"country_code": code, "position": position, "region": region,
               "has_leading_digits": _metadata(code, region).leading_digits is not None}


def _pattern(desc: PhoneNumberDesc | None) -> DigitPattern | None:
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = tuple(n for n in desc.possible_length if n > 0)
    if desc.possible_length and not lengths:  # the library's "no numbers of this kind" (-1)
        return None
    return DigitPattern(desc.national_number_pattern, lengths)


def _single_zone(zones: Iterable[str] | None) -> str | None:
    """The one zone of `zones`, by its current name (phonenumbers says Asia/Calcutta, tzdata and
    a contact's own field Asia/Kolkata: one name, so the same zone is never a change)."""
    listed = tuple(zones or ())
    return canonical(listed[0]) if len(listed) == 1 and listed[0] != UNKNOWN_TIMEZONE else None


@functools.cache
def _links() -> dict[str, str]:
    """tzdata's links, old name -> current name ("L Asia/Kolkata Asia/Calcutta")."""
    links = {}
    for line in _tzdata_text("tzdata.zi").splitlines():
        if line.startswith("L "):
            _, target, name = line.split()
            links[name] = target
    return links


def canonical(zone: str) -> str:
    """A zone by its current name in tzdata (Asia/Calcutta -> Asia/Kolkata)."""
    return _links().get(zone, zone)


def _place_zone(digits: str) -> str | None:
    """The one zone of phonenumbers' longest prefix of `digits` in its prefix -> timezones map (at
    most 9 digits), if it has one."""
    for length in range(min(len(digits), TIMEZONE_LONGEST_PREFIX), 0, -1):
        if digits[:length] in TIMEZONE_DATA:
            return _zone_of_prefix(digits[:length])
    return None


@functools.cache
def _zone_of_prefix(prefix: str) -> str | None:
    return _single_zone(TIMEZONE_DATA[prefix])


def _country_level_zone(code: int) -> str | None:
    """The zone phonenumbers gives a number of `code` that is not tied to a place."""
    digits = str(code)
    for candidate in (digits, digits[:2]):
        if candidate in TIMEZONE_DATA:
            return _single_zone(TIMEZONE_DATA[candidate])
    return None


@functools.cache
def _timezone_prefixes() -> frozenset[str]:
    """Every proper prefix of the map's prefixes: a number starting with one of these may still
    fall under a longer prefix of the map."""
    return frozenset(prefix[:length] for prefix in TIMEZONE_DATA for length in range(len(prefix)))


def _prefixes(code: int) -> Iterable[dict[str, Any]]:
    """Each region's prefix table (reminderd/prefixes.py): for each prefix and total length, which
    of its general, special (premium, toll-free, shared cost, VoIP, personal, pager, UAN, voicemail),
    fixed-line and mobile patterns accept the number, as phonenumbers' _is_number_matching_desc
    would say; with the zone a place-bound number there has (its longest prefix in phonenumbers'
    map: prefixes are split until the map can tell no longer number apart); and the prefixes its
    leading digits match."""
    longer = _timezone_prefixes()

    def split(prefix: str) -> bool:
        whole = str(code) + prefix
        return len(whole) < TIMEZONE_LONGEST_PREFIX and whole in longer

    for position, region in enumerate(COUNTRY_CODE_TO_REGION_CODE[code], start=1):
        plan = _metadata(code, region)
        patterns = [_pattern(plan.general_desc), *(_pattern(getattr(plan, kind)) for kind in _SPECIAL),
                    _pattern(plan.fixed_line),
                    None if plan.same_mobile_and_fixed_line_pattern else _pattern(plan.mobile)]
        for leaf in expand(patterns, max_length=MAX_DIGITS, split=split):
            masks = [0] * MAX_DIGITS
            for length, mask in leaf.masks.items():
                special = mask & (((1 << len(_SPECIAL)) - 1) << 1)
                masks[length - 1] = (GENERAL if mask & 1 else 0) | (SPECIAL if special else 0) | (
                    FIXED_LINE if mask & (1 << (len(_SPECIAL) + 1)) else 0) | (
                    MOBILE if mask & (1 << (len(_SPECIAL) + 2)) else 0)
            yield {"country_code": code, "position": position, "leading_digits": False, "prefix": leaf.prefix,
                   "masks": masks, "timezone": _place_zone(str(code) + leaf.prefix)}
        if plan.leading_digits is not None:
            for prefix in leading_prefixes(plan.leading_digits, max_length=MAX_DIGITS):
                yield {"country_code": code, "position": position, "leading_digits": True, "prefix": prefix,
                       "masks": None, "timezone": None}


# Countries and their zones ----------------------------------------------------------------------


def _tzdata_text(name: str) -> str:
    return resources.files("tzdata").joinpath("zoneinfo", name).read_text(encoding="utf-8")


def _tzdata_version() -> str:
    try:
        return metadata.version("tzdata")
    except metadata.PackageNotFoundError:  # pragma: no cover - tzdata is a dependency
        return "unknown"


def _future_rule(zone: str) -> bytes:
    """The POSIX TZ string a zone's TZif file ends with: its rule after the last transition listed.
    Two zones with the same rule keep the same time from then on."""
    data = resources.files("tzdata").joinpath("zoneinfo", *zone.split("/")).read_bytes()
    return data.rstrip(b"\n").rpartition(b"\n")[2]


@functools.cache
def country_codes() -> frozenset[str]:
    """The ISO 3166 alpha-2 codes reminderd.countries holds (read from tzdata, not built with
    the rest of the reference data: a millisecond)."""
    return frozenset(line.split("\t", 1)[0] for line in _tzdata_text("iso3166.tab").splitlines()
                     if line and not line.startswith("#"))


def _countries() -> list[dict[str, Any]]:
    names = {}
    for line in _tzdata_text("iso3166.tab").splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t", 1)
            names[code] = name
    zones: dict[str, list[str]] = {}
    for line in _tzdata_text("zone.tab").splitlines():
        if line and not line.startswith("#"):
            fields = line.split("\t")
            zones.setdefault(fields[0], []).append(fields[2])
    rows = []
    for code, name in sorted(names.items()):
        listed = zones.get(code, [])
        single = listed and len({_future_rule(zone) for zone in listed}) == 1
        rows.append({"country": code, "name": name, "timezone": listed[0] if single else None})
    return rows
