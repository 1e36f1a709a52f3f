"""Schedules written as short English phrases, and crons read back in English.

    compile_phrase("weekdays at 9:15am")  ->  "15 9 * * 1-5"
    describe("15 9 * * 1-5")              ->  "At 09:15, Monday through Friday"

Both are pure: no clock, no database. A phrase never compiles to a cron that
silently skips occurrences: "every 7 minutes" (cron restarts the count each
hour) and "on the 31st" (missing from some months) are refused with a reason.
Crons are put into words by the cron_descriptor package.
"""

from __future__ import annotations

import calendar
import re

from .cron import ALIASES, validate_cron

__all__ = ["EXAMPLES", "UnknownPhrase", "compile_phrase", "describe"]

EXAMPLES = (
    "every 30 seconds",
    "every 15 minutes",
    "daily at 9am",
    "every monday at 9am",
    "weekdays at 09:15",
    "every mon, wed and fri at 18:30",
    "first day of each month at noon",
    "last day of each month at 17:00",
    "first monday of each month at 9am",
    "last friday of each month at 5pm",
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
    "every second": "* * * * * *",
    "every minute": "* * * * *",
    "every hour": "0 * * * *",
    "hourly": "0 * * * *",
    "midnight": "0 0 * * *",
    "noon": "0 12 * * *",
}
_EVERY = re.compile(r"every (\d+) (second|minute|hour)s?")
_CLOCK = re.compile(r"(\d{1,2})(?::(\d{2}))? ?(am|pm)?")
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_ORDINALS = ("first", "second", "third", "fourth")  # a fifth weekday is missing from most months
_NTH = "|".join((*_ORDINALS, "last"))


class UnknownPhrase(ValueError):
    """A schedule phrase that cannot be compiled; the message says why."""


def compile_phrase(text: str) -> str:
    """The cron for a phrase like "weekdays at 9am" (case and spacing do not matter).

    5 fields, or 6 with a leading seconds field for "every N seconds"."""
    phrase = " ".join(text.lower().replace(",", ", ").split())
    if phrase in _FIXED:
        return _FIXED[phrase]
    if match := _EVERY.fullmatch(phrase):
        return _every(int(match[1]), match[2])
    if match := re.fullmatch(r"at (\S+(?: [ap]m)?) (.+)", phrase):  # "at 9am on weekdays"
        days, clock = match[2], match[1]
    else:
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
    span, whole = {"second": (60, "minute"), "minute": (60, "hour"), "hour": (24, "day")}[unit]
    if n == span:  # "every 60 minutes" is every hour, "every 24 hours" every day at midnight
        return {"second": "* * * * *", "minute": "0 * * * *", "hour": "0 0 * * *"}[unit]
    steps = [step for step in range(1, span) if span % step == 0]
    if n not in steps:
        choices = ", ".join(map(str, steps))
        longer = f"every 2 {whole}s" if unit != "hour" else "daily at 9am, every monday at 9am"
        raise UnknownPhrase(
            f"cannot run every {n} {unit}s: cron counts {unit}s afresh each {whole}, "
            f"so the number must divide {span} evenly ({choices}) or be {span}; "
            f"a longer step is written in {whole}s ({longer})"
        )
    step = "*" if n == 1 else f"*/{n}"
    return {"second": f"{step} * * * * *", "minute": f"{step} * * * *", "hour": f"0 {step} * * *"}[unit]


def _days(days: str) -> tuple[str, str, str] | None:
    """The day-of-month, month and day-of-week fields for the part before "at", if it makes sense."""
    if days in ("daily", "every day", "each day"):
        return "*", "*", "*"
    if days in ("weekdays", "every weekday", "on weekdays"):
        return "*", "*", "1-5"
    if days in ("weekends", "every weekend", "on weekends"):
        return "*", "*", "0,6"
    if match := re.fullmatch(r"(?:on )?(?:the )?(first|last) day of (?:each|every|the) month", days):
        return ("1" if match[1] == "first" else "L"), "*", "*"
    if match := re.fullmatch(rf"(?:on )?(?:the )?({_NTH}) ([a-z]+) of (?:each|every|the) month", days):
        weekday = _name(match[2], _DAYS)
        if weekday is None:
            return None
        if match[1] == "last":
            return "*", "*", f"L{weekday}"  # croniter's spelling of "5L", the last Friday
        return "*", "*", f"{weekday}#{_ORDINALS.index(match[1]) + 1}"
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


def describe(cron: str) -> str:
    """Plain English for a cron, or "cron: <expr>" when it cannot be said simply and truly.

    Raises reminderd.schedule.InvalidSchedule when `cron` is not a valid schedule."""
    # Imported here: the daemon never says a cron in words, and cron_descriptor costs ~5 ms at start.
    from cron_descriptor import ExpressionDescriptor, Options

    validate_cron(cron)
    fields = ALIASES.get(cron.strip().lower(), cron).split()
    fields[-1] = re.sub(r"\bL([0-7])\b", r"\1L", fields[-1], flags=re.IGNORECASE)  # croniter's L5 is 5L
    fallback = "cron: " + " ".join(cron.split())
    if _uneven_step(fields):
        return fallback
    options = Options(locale_code="en_US")  # not the server's locale, which may be unset or not English
    options.use_24hour_time_format = True
    options.day_of_week_start_index_zero = True  # 0 is Sunday
    try:
        words: str = ExpressionDescriptor(" ".join(fields), options).get_description()
    except Exception:
        return fallback
    # Lists of L or # items come out garbled ("on day 1 and L", "on the  Monday and Monday").
    return fallback if re.search(r"  |\bL\b|#", words) else words


def _uneven_step(fields: list[str]) -> bool:
    """Whether a seconds, minutes or hours step skips at the wrap: */7 minutes is not "every 7 minutes"."""
    spans = (60, 60, 24) if len(fields) == 6 else (60, 24)  # the time fields lead, seconds first if present
    for field, span in zip(fields, spans, strict=False):
        match = re.fullmatch(r"[*0]/(\d+)", field)
        if match and span % int(match[1]):
            return True
    return False
