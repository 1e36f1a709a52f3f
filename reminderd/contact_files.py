"""Contacts files as `reminderd contacts import` reads them: CSV with a header row, or JSON Lines,
one contact at a time (a file of millions is never held in memory), each line checked before it is
sent and its phone written in E.164.

CSV columns: `contact_id` (required), `timezone`, `phone`, `country`, `attributes` (a JSON object);
any other column is an attribute (text). An empty cell is no value. JSON Lines: one object a line
with those keys, as reminderd.upsert_contacts takes them. A phone written nationally ("020 7946
0018") is read as its `country` would dial it.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from .phones import international
from .schedule import InvalidSchedule, load_timezone

FIELDS = ("contact_id", "timezone", "phone", "country", "attributes")
_CONTACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
MAX_LINE = 64 * 1024  # a contact is small; a longer line is a wrong file


@dataclass(frozen=True, slots=True)
class Line:
    """One contact read from a file (line: its line number), or why that line is not one."""

    line: int
    contact: dict[str, Any] | None
    problem: str | None = None


def open_contacts(path: str) -> TextIO:
    """The file (or stdin for `-`) as text; a byte-order mark an editor left is no content."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_contacts(handle: TextIO, file_format: str) -> Iterator[Line]:
    return _csv(handle) if file_format == "csv" else _jsonl(handle)


def _csv(handle: TextIO) -> Iterator[Line]:
    reader = csv.reader(handle)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield Line(1, None, f"not CSV: {exc}")
        return
    if "contact_id" not in header:
        yield Line(1, None,
                   f"the header row has no contact_id column (it has {', '.join(header) or 'nothing'})")
        return
    if len(set(header)) != len(header):
        yield Line(1, None, "the header row names a column twice")
        return
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Line(reader.line_num, None, f"not CSV: {exc}")
            return
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            yield Line(reader.line_num, None, f"{len(cells)} cells, the header has {len(header)}")
            continue
        yield _checked(reader.line_num, _from_cells(header, cells), shaped=True)


def _from_cells(header: list[str], cells: list[str]) -> dict[str, Any] | str:
    given = dict(zip(header, (cell.strip() for cell in cells), strict=True))
    contact: dict[str, Any] = {name: given.pop(name) or None for name in FIELDS[:4] if name in given}
    attributes: dict[str, Any] = {}
    if given.get("attributes"):
        try:
            attributes = json.loads(given["attributes"])
        except ValueError:
            return "attributes is not JSON"
        if not isinstance(attributes, dict):
            return "attributes is not a JSON object"
    given.pop("attributes", None)
    attributes.update({name: value for name, value in given.items() if value})
    contact["attributes"] = attributes
    return contact


def _jsonl(handle: TextIO) -> Iterator[Line]:
    for number, text in enumerate(handle, start=1):
        if len(text) > MAX_LINE:
            yield Line(number, None, f"longer than {MAX_LINE // 1024} KiB")
            continue
        if not text.strip():
            continue
        try:
            contact = json.loads(text)
        except ValueError as exc:
            yield Line(number, None, f"not JSON ({exc.args[0].split(':')[0]})")
            continue
        if not isinstance(contact, dict):
            yield Line(number, None, "not a JSON object")
            continue
        yield _checked(number, contact)


def _checked(number: int, contact: dict[str, Any] | str, *, shaped: bool = False) -> Line:
    """The line's contact as the database will take it (phone in E.164 where it can be read), or
    what is wrong with it. `shaped`: built from CSV cells, so its keys and types are known."""
    if isinstance(contact, str):
        return Line(number, None, contact)
    if not shaped:
        unknown = set(contact) - set(FIELDS)
        if unknown:
            known = ", ".join(FIELDS)
            return Line(number, None, f"unknown fields {', '.join(sorted(unknown))} (known: {known})")
        for name in ("timezone", "phone", "country"):
            if not isinstance(contact.get(name), str | None):
                return Line(number, None, f"{name} is not text")
        if contact.get("attributes") is not None and not isinstance(contact["attributes"], dict):
            return Line(number, None, "attributes is not a JSON object")
    contact_id = contact.get("contact_id")
    if not isinstance(contact_id, str) or not _CONTACT_ID.fullmatch(contact_id):
        return Line(number, None, f"contact_id {contact_id!r}: letters, digits and _ . : @ + -, "
                                  "starting with a letter or digit, at most 128")
    timezone, country, phone = contact.get("timezone"), contact.get("country"), contact.get("phone")
    if timezone is not None and not _known_zone(timezone):
        return Line(number, None, f"timezone {timezone!r} is not an IANA zone (such as Europe/London)")
    if country is not None and not _COUNTRY.fullmatch(country):
        return Line(number, None, f"country {country!r} is not a two-letter ISO 3166 code (such as GB)")
    if phone is not None and not (phone[:1] == "+" and phone[1:].isdigit()):  # E.164 already: as it is
        contact["phone"] = international(phone, country)
    return Line(number, contact)


@functools.lru_cache(maxsize=1024)
def _known_zone(name: str) -> bool:
    try:
        load_timezone(name)
    except InvalidSchedule:
        return False
    return True


def checked_contact(number: int, contact: Any) -> Line:
    """One contact sent over the HTTP API (PUT /v1/contacts: an array's element or an NDJSON
    line), checked as a JSON Lines file's line is."""
    if not isinstance(contact, dict):
        return Line(number, None, "not a JSON object")
    return _checked(number, dict(contact))
