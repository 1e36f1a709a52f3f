"""Durations, read one way everywhere (environment, TOML file, command line).

`300` and `300s` are seconds, `1.5s` too; `5m`, `2h`, `3d` and combinations, largest unit first,
such as `1h30m` or `1d 2h`. Only seconds take a fraction: write `1h30m`, not `1.5h`. ISO 8601
durations too (`PT2H`, `P1DT2H30M`, `PT1.5S`, `P2W`), but not years or months, whose length
varies. A leading `-` makes the duration negative; whoever reads it decides whether that is allowed.
"""

from __future__ import annotations

import functools
import re

EXAMPLES = "use a duration such as 90s, 15m, 2h, 3d or 1h30m (a bare number is seconds)"

_BARE_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_UNITS = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s)?"
)
_SECONDS_PER = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_ISO_8601 = re.compile(
    r"p(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:t(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:[.,]\d+)?)s)?)?"
)


@functools.lru_cache(maxsize=256)  # pure: the API reads the same few ("2h") over and over
def parse_seconds(text: str) -> float:
    """The duration `text` in seconds; ValueError saying what a duration looks like."""
    compact = text.strip().lower()
    sign = -1.0 if compact.startswith("-") else 1.0
    body = compact.removeprefix("-").lstrip()
    if _BARE_SECONDS.fullmatch(body):
        return sign * float(body)
    if body.startswith("p"):
        iso = _ISO_8601.fullmatch(body)
        if iso is None or not any(iso.groupdict().values()) or body.endswith("t"):
            raise ValueError(f"{EXAMPLES}; or ISO 8601 like PT2H (no years or months)")
        return sign * sum(float(amount.replace(",", ".")) * _SECONDS_PER[unit]
                          for unit, amount in iso.groupdict().items() if amount)
    parts = _UNITS.fullmatch(body)
    if not body or parts is None or not any(parts.groupdict().values()):
        raise ValueError(EXAMPLES)
    amounts = parts.groupdict().items()
    return sign * sum(float(amount) * _SECONDS_PER[unit] for unit, amount in amounts if amount)


def signed_interval(seconds: float) -> str:
    """Whole seconds, signed, as a PostgreSQL interval whose parts share the sign, so days stay
    calendar days (a day is 23 or 25 hours across a clock change): -90061 -> '-1 days -3661 seconds'.
    Exact, never rounded; ValueError for a fraction of a second."""
    whole = round(seconds)
    if abs(seconds - whole) > 1e-6:  # float noise of a whole number is not a fraction
        raise ValueError("a whole number of seconds")
    sign = "-" if seconds < 0 else ""
    days, rest = divmod(abs(whole), 86400)
    return f"{sign}{days} days {sign}{rest} seconds"


def in_words(seconds: float) -> str:
    """A window as people say it: "day", "2 days", "hour", "90 minutes", "45 s"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} s"
