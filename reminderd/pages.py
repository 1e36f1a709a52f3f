"""The dashboard's HTML: Jinja templates from the package (reminderd/templates/), autoescaped (every
value from the database is text, whatever it holds), and the filters they format values with.
Static files (reminderd/static/) are read once and served with a content hash in their URL."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from .panels import Quantile, duration_words
from .schedule import InvalidSchedule, load_timezone

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("reminderd", "templates"),
    autoescape=True,  # every template here is HTML
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    return _ENVIRONMENT.get_template(template).render(**context)


def _filter(function: Any) -> Any:
    _ENVIRONMENT.filters[function.__name__] = function
    return function


@_filter
def utc(instant: datetime | None) -> str:
    """2026-12-01 09:15:02 UTC"""
    return "—" if instant is None else instant.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M:%S UTC")


@_filter
def iso(instant: datetime | None) -> str:
    return "" if instant is None else instant.isoformat(timespec="seconds")


@_filter
def local(instant: datetime | None, timezone: str) -> str:
    """The instant on a timezone's clock: 2026-12-01 14:45:02 Asia/Kolkata."""
    if instant is None:
        return "—"
    try:
        tz = load_timezone(timezone)
    except InvalidSchedule:
        return f"(unknown timezone {timezone})"
    return f"{instant.astimezone(tz):%Y-%m-%d %H:%M:%S} {timezone}"


@_filter
def relative(instant: datetime | None, now: datetime) -> str:
    """in 5 min, 3 h ago."""
    if instant is None:
        return ""
    seconds = (instant - now).total_seconds()
    words = duration_words(abs(seconds))
    return f"in {words}" if seconds > 0 else f"{words} ago"


@_filter
def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


@_filter
def percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} %" if value >= 10 or value == 0 else f"{value:.1f} %"


@_filter
def milliseconds(value: Quantile | float | None) -> str:
    """A lateness: 8.2 ms, 1.4 s, 3 min; ≥ for the open-ended last bucket."""
    if value is None:
        return "—"
    at_least = isinstance(value, Quantile) and value.at_least
    ms = value.ms if isinstance(value, Quantile) else value
    if ms < 10:
        text = f"{ms:.1f} ms"
    elif ms < 1000:
        text = f"{ms:.0f} ms"
    elif ms < 60_000:
        text = f"{ms / 1000:.1f} s"
    else:
        text = duration_words(ms / 1000)
    return f"≥ {text}" if at_least else text


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # a hash of the body: the URL changes when the file does


def _assets() -> dict[str, Asset]:
    found = {}
    for entry in files("reminderd").joinpath("static").iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            body = entry.read_bytes()
            kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind == "application/javascript" or kind == "text/javascript":
                kind += "; charset=utf-8"
            found[entry.name] = Asset(body, kind, hashlib.sha256(body).hexdigest()[:16])
    return found


ASSETS = _assets()
