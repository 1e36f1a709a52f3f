"""Schedules written as short English phrases, and crons read back in English.

    compile_phrase("weekdays at 9:15am")  ->  "15 9 * * 1-5"
    describe("15 9 * * 1-5")              ->  "at 09:15 on Monday through Friday"

Both are pure: no clock, no database. A phrase never compiles to a cron that
silently skips occurrences: "every 7 minutes" (cron restarts the count each
hour) and "on the 31st" (missing from some months) are refused with a reason.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable

from reminderd.cron import validate_cron

__all__ = ["EXAMPLES", "UnknownPhrase", "compile_phrase", "describe"]

EXAMPLES = (
    "every 15 minutes",
    "every 2 hours",
    "daily at 9am",
    "weekdays at 09:15",
    "every mon, wed and fri at 18:30",
    "first day of each month at noon",
    "last day of each month at 17:00",
    "every month on the 15th at 8am",
    "every year on 24 dec at 9am",
)

_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")  # cron 0-6
_MONTHS = (  # cron 1-12
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)

_FIXED = {
    "every minute": "* * * * *",
    "every hour": "0 * * * *",
    "hourly": "0 * * * *",
    "midnight": "0 0 * * *",
    "noon": "0 12 * * *",
}
_EVERY = re.compile(r"every (\d+) (minute|hour)s?")
_CLOCK = re.compile(r"(\d{1,2})(?::(\d{2}))? ?(am|pm)?")
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"


class UnknownPhrase(ValueError):
    """A schedule phrase that cannot be compiled; the message says why."""


def compile_phrase(text: str) -> str:
    """The 5-field cron for a phrase like "weekdays at 9am" (case and spacing do not matter)."""
    phrase = " ".join(text.lower().replace(",", ", ").split())
    if phrase in _FIXED:
        return _FIXED[phrase]
    if match := _EVERY.fullmatch(phrase):
        return _every(int(match[1]), match[2])
    days, at, clock = phrase.rpartition(" at ")
    if not at:
        raise _unknown(text)
    fields = _days(days)
    if fields is None:
        raise _unknown(text)
    day, month, weekday = fields
    hour, minute = _clock(clock)
    return f"{minute} {hour} {day} {month} {weekday}"


def _unknown(text: str) -> UnknownPhrase:
    examples = "; ".join(f'"{example}"' for example in EXAMPLES)
    return UnknownPhrase(f'cannot read the schedule "{text.strip()}"; phrases like these work: {examples}')


def _every(n: int, unit: str) -> str:
    span, whole = (60, "hour") if unit == "minute" else (24, "day")
    steps = [step for step in range(1, span) if span % step == 0]
    if n not in steps:
        choices = ", ".join(map(str, steps))
        raise UnknownPhrase(
            f"cannot run every {n} {unit}s: cron counts {unit}s afresh each {whole}, "
            f"so the number must divide {span} evenly ({choices})"
        )
    step = "*" if n == 1 else f"*/{n}"
    return f"{step} * * * *" if unit == "minute" else f"0 {step} * * *"


def _days(days: str) -> tuple[str, str, str] | None:
    """The day-of-month, month and day-of-week fields for the part before "at", if it makes sense."""
    if days in ("daily", "every day", "each day"):
        return "*", "*", "*"
    if days in ("weekdays", "every weekday", "on weekdays"):
        return "*", "*", "1-5"
    if days in ("weekends", "every weekend", "on weekends"):
        return "*", "*", "0,6"
    if match := re.fullmatch(r"(first|last) day of (?:each|every|the) month", days):
        return ("1" if match[1] == "first" else "L"), "*", "*"
    if match := re.fullmatch(rf"(?:every|each) month on (?:the )?{_DAY}", days):
        return _day_of_month(int(match[1]), None), "*", "*"
    if match := re.fullmatch(rf"(?:every|each) year on (?:the )?{_DAY} (?:of )?([a-z]+)", days):
        day, name = match[1], match[2]
    elif match := re.fullmatch(rf"(?:every|each) year on ([a-z]+) (?:the )?{_DAY}", days):
        name, day = match[1], match[2]
    else:
        weekdays = _weekdays(days)
        return None if weekdays is None else ("*", "*", weekdays)
    month = _name(name, _MONTHS)
    if month is None:
        return None
    return _day_of_month(int(day), month + 1), str(month + 1), "*"


def _day_of_month(day: int, month: int | None) -> str:
    last = 28 if month is None else calendar.monthrange(2000, month)[1]  # 2000 has a 29 February
    if 1 <= day <= last and (day, month) != (29, 2):
        return str(day)
    if month is None and 29 <= day <= 31:
        raise UnknownPhrase(
            f'day {day} is missing from some months, which cron would skip; use a day up to 28 or "last day of '
            'each month"'
        )
    if (day, month) == (29, 2):
        raise UnknownPhrase("29 February is missing from most years, which cron would skip")
    where = "a month" if month is None else _MONTHS[month - 1].title()
    raise UnknownPhrase(f"there is no day {day} in {where}")


def _weekdays(days: str) -> str | None:
    """The day-of-week field for a list of day names: "every mon, wed and fri" -> "1,3,5"."""
    names = re.sub(r"^(?:every|each|on) ", "", days)
    numbers = [_name(word, _DAYS) for word in re.split(r"[\s,]+", names) if word != "and"]
    if not names or None in numbers:
        return None
    return ",".join(str(number) for number in sorted({n for n in numbers if n is not None}))


def _name(word: str, names: tuple[str, ...]) -> int | None:
    """The index of the name that `word` spells, abbreviates (3+ letters) or pluralises."""
    if len(word) < 3:
        return None
    for index, name in enumerate(names):
        if name.startswith(word) or word == name + "s":
            return index
    return None


def _clock(text: str) -> tuple[int, int]:
    """(hour, minute) for 9am, 9:30pm, 12am, 21:00, 9, noon or midnight."""
    if text in ("noon", "midday"):
        return 12, 0
    if text == "midnight":
        return 0, 0
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise UnknownPhrase(f'cannot read the time "{text}"; write it like 9am, 9:30pm, 21:00 or noon')
    hour, minute, half = int(match[1]), int(match[2] or 0), match[3]
    if minute > 59:
        raise UnknownPhrase(f'bad time "{text}": minutes go up to 59')
    if half and not 1 <= hour <= 12:
        raise UnknownPhrase(f'bad time "{text}": with am or pm the hour is 1 to 12')
    if not half and hour > 23:
        raise UnknownPhrase(f'bad time "{text}": hours go up to 23')
    if half:
        hour = hour % 12 + (12 if half == "pm" else 0)
    return hour, minute


# Describing a cron


class _Unusual(Exception):
    """A cron field this describer does not put into words."""


def describe(cron: str) -> str:
    """Plain English for a 5-field cron, or "cron: <expr>" when it is too unusual to say simply.

    Raises reminderd.cron.InvalidSchedule when `cron` is not a valid schedule."""
    validate_cron(cron)
    fields = cron.split()
    try:
        if len(fields) != 5:  # an alias such as @daily
            raise _Unusual
        minute, hour, day, month, weekday = fields
        words = [_time(minute, hour), _dates(day, month, weekday)]
    except _Unusual:
        return "cron: " + " ".join(fields)
    return " ".join(word for word in words if word)


def _time(minute: str, hour: str) -> str:
    minute_step, hour_step = _step(minute, 60), _step(hour, 24)
    if minute_step is not None:
        every = "every minute" if minute_step == 1 else f"every {minute_step} minutes"
        if hour == "*":
            return every
        hours = _items(hour)
        if len(hours) != 1:
            raise _Unusual
        first, last = hours[0]
        return f"{every} between {first:02}:00 and {last:02}:59"
    minutes = _values(minute)
    if hour_step is not None:
        every = "every hour" if hour_step == 1 else f"every {hour_step} hours"
        if minutes == [0]:
            return every
        past = f"at {_join([str(m) for m in minutes])} minutes past the hour"
        return past if hour_step == 1 else f"{past}, {every}"
    hours = _items(hour)
    if len(minutes) == 1 and len(hours) == 1 and hours[0][0] < hours[0][1]:
        (first, last), m = hours[0], minutes[0]
        return f"every hour from {first:02}:{m:02} through {last:02}:{m:02}"
    return "at " + _join([f"{h:02}:{m:02}" for h in _values(hour) for m in minutes])


def _dates(day: str, month: str, weekday: str) -> str:
    months = [] if month == "*" else _items(month, _MONTHS, base=1)
    if day.isdigit() and weekday == "*" and len(months) == 1 and months[0][0] == months[0][1]:
        return f"on {int(day)} {_month_name(months[0][0])}"  # on 24 December
    words = []
    if day == "L":
        words.append("on the last day of the month")
    elif day != "*":
        days = _items(day)
        noun = "day" if len(days) == 1 and days[0][0] == days[0][1] else "days"
        words.append(f"on {noun} {_spans(days, str)} of the month")
    if weekday != "*":
        if words:
            words.append("or")  # cron fires when either the day of the month or the weekday matches
        words.append("on " + _spans(_items(weekday, _DAYS), _day_name))
    if months:
        if "or" in words:
            raise _Unusual  # "on day 1 of the month or on Monday in March" reads ambiguously
        words.append("in " + _spans(months, _month_name))
    return " ".join(words)


def _day_name(number: int) -> str:
    return _DAYS[number % 7].title()  # 7 is Sunday too


def _month_name(number: int) -> str:
    return _MONTHS[number - 1].title()


def _step(field: str, span: int) -> int | None:
    """1 for "*", N for "*/N" when N divides `span` (so it really is every N), else None."""
    if field == "*":
        return 1
    match = re.fullmatch(r"\*/(\d+)", field)
    return int(match[1]) if match and span % int(match[1]) == 0 else None


def _items(field: str, names: tuple[str, ...] = (), base: int = 0) -> list[tuple[int, int]]:
    """The comma-separated values and ranges of `field` as (first, last) pairs."""
    items = []
    for item in field.split(","):
        first, _, last = item.partition("-")
        pair = _number(first, names, base), _number(last or first, names, base)
        if pair[0] > pair[1]:
            raise _Unusual
        items.append(pair)
    return items


def _values(field: str) -> list[int]:
    """The plain numbers of `field` (no ranges), sorted."""
    items = _items(field)
    if any(first != last for first, last in items):
        raise _Unusual
    return sorted(first for first, _ in items)


def _number(text: str, names: tuple[str, ...], base: int) -> int:
    if text.isdigit():
        return int(text)
    for index, name in enumerate(names):
        if text.lower() == name[:3]:
            return index + base
    raise _Unusual


def _spans(items: list[tuple[int, int]], name: Callable[[int], str]) -> str:
    """The items as words: [(1, 5), (0, 0)] -> "Monday through Friday and Sunday"."""
    return _join([name(a) if a == b else f"{name(a)} through {name(b)}" for a, b in items])


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
