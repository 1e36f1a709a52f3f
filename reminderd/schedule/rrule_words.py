"""RFC 5545 recurrences put into words: "monthly on the first Monday at 09:00". Pure.

Used by rrule.RRule.describe(); kept apart from the parsing and listing in rrule.py. A leaf: it
reads the parsed parts (rrule_parts.RuleParts) and never imports rrule.py back.
"""

from __future__ import annotations

from datetime import datetime, time

from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, WEEKLY, YEARLY

from .rrule_parts import RuleParts

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}


def describe_rule(parts: RuleParts, effective: RuleParts) -> str | None:
    """The rule in plain English without COUNT and UNTIL; None for combinations not covered."""
    if parts.byweekno or parts.byyearday:
        return None
    every = {YEARLY: "year", MONTHLY: "month", WEEKLY: "week", DAILY: "day", HOURLY: "hour", MINUTELY: "minute"}
    if parts.interval > 1:
        text = f"every {parts.interval} {every[parts.freq]}s"
    else:
        text = ("yearly", "monthly", "weekly", "daily", "hourly", "every minute")[parts.freq]
    days = _days_text(parts, effective)
    if days is None:
        return None
    times = _times_text(parts, effective)
    if times is None:
        return None
    months = "" if parts.freq == YEARLY or not parts.bymonth else " in " + _months(parts.bymonth)
    return f"{text}{' ' + days if days else ''}{months}{' ' + times if times else ''}"


def _days_text(parts: RuleParts, effective: RuleParts) -> str | None:
    """E.g. "on the first Monday"; "" when every day is meant; None when not covered."""
    plain = sorted({day for day, n in effective.byday if n == 0})
    numbered = [(day, n) for day, n in effective.byday if n]
    if parts.bysetpos:
        single_time = effective.times_per_day == 1
        if parts.freq != MONTHLY or numbered or effective.bymonthday or not plain or not single_time:
            return None
        noun = {(0, 1, 2, 3, 4): "weekday", (5, 6): "weekend day"}.get(tuple(plain))
        if noun is None and len(plain) == 1:
            noun = DAY_NAMES[plain[0]]
        if noun is None:
            return None
        positions = sorted(parts.bysetpos, key=_position_order)
        return f"on the {join_words([_ordinal_word(p) for p in positions])} {noun}"
    if effective.byday and effective.bymonthday:
        return None
    if parts.freq == YEARLY:
        if numbered and not plain:
            scope = _months(parts.bymonth) if parts.bymonth else "the year"
            return f"on {_numbered_days(numbered)} of {scope}"
        if effective.byday:
            return None
        phrases = [_month_day(day, month) for month in effective.bymonth for day in effective.bymonthday]
        return "on " + join_words(phrases) if len(phrases) <= 4 else None
    if numbered:
        return f"on {_numbered_days(numbered)}" if parts.freq == MONTHLY and not plain else None
    if plain:
        return "on " + _weekday_names(plain, plural=parts.freq != WEEKLY)
    if effective.bymonthday:
        ordered = sorted(effective.bymonthday, key=_position_order)
        return "on " + join_words([_month_day_number(day) for day in ordered])
    return ""


def _times_text(parts: RuleParts, effective: RuleParts) -> str | None:
    """E.g. "at 09:00" or "at minute 30"; None when not covered."""
    if parts.freq <= DAILY:
        clock_times = sorted(
            time(hour, minute, second)
            for hour in effective.byhour
            for minute in effective.byminute
            for second in effective.bysecond
        )
        return "at " + join_words([_clock(t) for t in clock_times]) if len(clock_times) <= 6 else None
    if effective.bysecond != (0,):
        return None
    if parts.freq == HOURLY:
        minutes = sorted(effective.byminute)
        label = "minute" if len(minutes) == 1 else "minutes"
        text = f"at {label} {join_words([str(m) for m in minutes])}"
    elif parts.byminute:
        return None
    else:
        text = ""
    hours = sorted(parts.byhour)
    if hours and hours != list(range(24)):
        contiguous = hours == list(range(hours[0], hours[-1] + 1))
        if contiguous and len(hours) > 1:
            span = f"from {hours[0]:02d}:00 to {hours[-1]:02d}:59"
        else:
            span = "in hours " + join_words([f"{h:02d}" for h in hours])
        text = f"{text} {span}".strip()
    return text


def until_text(parts: RuleParts, effective: RuleParts) -> str:
    assert parts.until is not None
    until = parts.until
    last_time = max(
        (time(h, m, s) for h in effective.byhour for m in effective.byminute for s in effective.bysecond),
        default=time(23, 59, 59),
    )
    whole_day = parts.until_is_date or until.time() == time(23, 59, 59)
    if whole_day or (parts.freq <= DAILY and last_time <= until.time()):
        return f"{until:%Y-%m-%d}"
    return f"{until:%Y-%m-%d} {_clock(until.time())}"


def span_text(start: datetime, until: datetime | None) -> str:
    if until is None:
        return f"nothing on or after DTSTART {start.isoformat(sep=' ')}"
    return f"nothing between DTSTART {start.isoformat(sep=' ')} and UNTIL {until.isoformat(sep=' ')}"


def _weekday_names(days: list[int], plural: bool) -> str:
    if days == [0, 1, 2, 3, 4]:
        return "weekdays"
    if days == [5, 6]:
        return "weekends"
    if len(days) == 7:
        return "every day"
    return join_words([DAY_NAMES[day] + ("s" if plural else "") for day in days])


def _numbered_days(numbered: list[tuple[int, int]]) -> str:
    """E.g. "the first and third Monday" or "the first Monday and the last Friday"."""
    numbered = sorted(numbered, key=lambda item: (_position_order(item[1]), item[0]))
    if len({day for day, _ in numbered}) == 1:
        return f"the {join_words([_ordinal_word(n) for _, n in numbered])} {DAY_NAMES[numbered[0][0]]}"
    return join_words([f"the {_ordinal_word(n)} {DAY_NAMES[day]}" for day, n in numbered])


def _month_day(day: int, month: int) -> str:
    if day > 0:
        return f"{day} {MONTH_NAMES[month - 1]}"
    return f"the {_ordinal_word(day)} day of {MONTH_NAMES[month - 1]}"


def _month_day_number(day: int) -> str:
    return f"the {_ordinal_suffix(day)}" if day > 0 else f"the {_ordinal_word(day)} day"


def _months(months: tuple[int, ...]) -> str:
    return join_words([MONTH_NAMES[month - 1] for month in sorted(months)])


def _position_order(position: int) -> tuple[bool, int]:
    """Sort key: counted from the start first, then from the end (..., second-to-last, last)."""
    return (position < 0, position)


def _ordinal_word(position: int) -> str:
    """1 -> "first", 12 -> "12th", -1 -> "last", -2 -> "second-to-last"."""
    if position == -1:
        return "last"
    word = ORDINAL_WORDS.get(abs(position)) or _ordinal_suffix(abs(position))
    return word if position > 0 else f"{word}-to-last"


def _ordinal_suffix(number: int) -> str:
    suffix = "th" if 11 <= number % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _clock(clock_time: time) -> str:
    text = f"{clock_time.hour:02d}:{clock_time.minute:02d}"
    return f"{text}:{clock_time.second:02d}" if clock_time.second else text


def join_words(words: list[str], last: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
