"""Holiday calendars: a country's or subdivision's public holidays (the `holidays` package) plus a
tenant's own days off.

    Holidays.of("US-CA").name_of(date(2026, 12, 25))  ->  "Christmas Day"

Pure and cached: the package computes each year once per process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from .wallclock import InvalidSchedule

__all__ = ["Holidays", "calendars_version", "known_calendars", "validate_calendar"]

_CODE = re.compile(r"([A-Z]{2})(?:-([A-Z0-9]{1,10}))?")


def validate_calendar(code: str) -> None:
    """Raise InvalidSchedule unless `code` names a calendar: a country ("IN", "GB") or a
    country-subdivision ("US-CA") that the holidays package knows."""
    _country_and_subdivision(code)


def calendars_version() -> str:
    """The installed holidays package's version: what known_calendars() lists, and what
    reminderd.holiday_calendars records it was built from (read without listing them)."""
    from importlib import metadata

    return metadata.version("holidays")


def known_calendars() -> list[str]:
    """Every code validate_calendar accepts, sorted: each country's ("IN") and each of its
    subdivisions' ("US-CA"). `reminderd migrate` loads them into reminderd.holiday_calendars, so
    the database refuses another one before the daemon meets it (~0.15 s: only when
    calendars_version() changed)."""
    import holidays

    codes = [code for country, subdivisions in holidays.list_supported_countries().items()
             for code in (country, *(f"{country}-{subdivision}" for subdivision in subdivisions))
             if _CODE.fullmatch(code)]  # its three-letter aliases are no calendar column's shape
    return sorted(set(codes))


@functools.lru_cache(maxsize=256)
def _country_and_subdivision(code: str) -> tuple[str, str | None]:
    match = _CODE.fullmatch(code)
    if match is None:
        raise InvalidSchedule(
            f'unknown holiday calendar "{code}": write a country code (IN, GB) or country-subdivision (US-CA)'
        )
    country, subdivision = match[1], match[2]
    import holidays

    supported = holidays.list_supported_countries()
    if country not in supported:
        raise InvalidSchedule(
            f'unknown holiday calendar "{code}": no public holidays known for country {country}'
        )
    if subdivision is not None and subdivision not in supported[country]:
        known = ", ".join(supported[country][:12]) + (", …" if len(supported[country]) > 12 else "")
        raise InvalidSchedule(
            f'unknown holiday calendar "{code}": {country} has no subdivision {subdivision}'
            + (f" (known: {known})" if known else " (it has none)")
        )
    return country, subdivision


@functools.lru_cache(maxsize=1024)
def _public_holidays(code: str, year: int) -> dict[date, str]:
    country, subdivision = _country_and_subdivision(code)
    import holidays

    return dict(holidays.country_holidays(country, subdiv=subdivision, years=year, language="en_US").items())


@dataclass(frozen=True)
class Holidays:
    """The days on which a message with the holiday rule "skip" does not fire."""

    calendar: str | None = None
    custom: tuple[tuple[date, str], ...] = ()  # the tenant's own (day, name)
    _custom: dict[date, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # the calendar is checked when first used: see validate_calendar
        object.__setattr__(self, "_custom", dict(self.custom))

    @classmethod
    def of(cls, calendar: str | None, custom: Iterable[tuple[date, str]] = ()) -> Holidays:
        days = tuple(custom)
        if calendar is None and not days:
            return NO_HOLIDAYS  # most messages: one shared instance (Holidays is immutable)
        return cls(calendar, days)

    def __bool__(self) -> bool:
        return self.calendar is not None or bool(self.custom)

    def name_of(self, day: date) -> str | None:
        """The holiday's name, with its calendar ("Christmas Day (US-CA)"), or None on other days.
        Raises InvalidSchedule when the calendar is unknown."""
        if day in self._custom:
            return self._custom[day]
        if self.calendar is not None:
            name = _public_holidays(self.calendar, day.year).get(day)
            if name is not None:
                return f"{name} ({self.calendar})"
        return None


NO_HOLIDAYS = Holidays()
