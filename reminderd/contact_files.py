"""Contacts files as `reminderd contacts import` reads them: CSV with a header row, or JSON Lines,
one contact at a time (a file of millions is never held in memory), each line checked before it is
sent and its phone written in E.164.

CSV columns: `contact_id` (required), `timezone`, `phone`, `country`, `attributes` (a JSON object);
any other column is an attribute (text). An empty cell is no value. JSON Lines: one object a line
with those keys, as reminderd.upsert_contacts takes them. A phone written nationally ("020 7946
0018") is read as its `country` would dial it; one that is not +<country code> <number> then (letters,
an extension, no country to read a national number by) is refused on its line, as the database would.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TextIO

import orjson

from . import wire
from .phones import SEPARATORS, country_codes, international
from .schedule import InvalidSchedule, load_iana_timezone

FIELDS = ("contact_id", "timezone", "phone", "country", "attributes")
_CONTACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
# A phone as docs/audiences.md writes it: a + and digits, with separators (phones.SEPARATORS) between;
# as SQL's reminderd.is_phone takes it once they are gone: the first digit not 0, three at least.
_PHONE_TEXT = re.compile(rf"(?:[0-9+]|{SEPARATORS.pattern})+")
_PHONE = re.compile(r"\+[1-9][0-9]{2,}")
_PHONE_RULE = "+<country code> <number> (such as +44 20 7946 0018)"
MAX_LINE = 64 * 1024  # a contact is small; a longer line is a wrong file


class ContactRow(NamedTuple):
    """One contact as reminderd.contact_v1 takes it (reminderd.upsert_contact_rows): a field whose
    has_… is False was not given, and the contact keeps its value; attributes as JSON text."""

    contact_id: str
    timezone: str | None
    phone: str | None
    country: str | None
    attributes: str | None
    has_timezone: bool
    has_phone: bool
    has_country: bool
    has_attributes: bool


class Line(NamedTuple):
    """One contact read from a file (line: its line number), or why that line is not one."""

    line: int
    contact: ContactRow | None
    problem: str | None = None


def open_contacts(path: str) -> TextIO:
    """The file (or stdin for `-`) as text; a byte-order mark an editor left is no content. A
    byte that is not UTF-8 is kept as a lone surrogate (surrogateescape), for the line holding
    it to be refused by number (`not_utf8`) rather than the whole read to fail somewhere."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def not_utf8(texts: Iterable[str]) -> str | None:
    """Why a line (its cells) read by open_contacts() is not text: "not UTF-8 text (byte 0xe9; save
    the file as UTF-8)"; None when it is."""
    for text in texts:
        if text.isascii():  # most cells: a flag of the string, no scan
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: surrogateescape's stand-in for a byte
            if text.startswith(("\udcff\udcfe", "\udcfe\udcff")):  # UTF-16's byte-order mark
                return "UTF-16 text, not UTF-8 (save the file as UTF-8)"
            return f"not UTF-8 text (byte 0x{ord(text[exc.start]) - 0xDC00:02x}; save the file as UTF-8)"
    return None


def read_contacts(handle: TextIO, file_format: str) -> Iterator[Line]:
    return _csv(handle) if file_format == "csv" else _jsonl(handle)


class _Columns:
    """Where a CSV file's header puts each field (None: not a column), and its other columns,
    attributes of their own."""

    def __init__(self, header: list[str]) -> None:
        self.width = len(header)
        where = {name: index for index, name in enumerate(header)}
        self.contact_id = where["contact_id"]
        self.timezone = where.get("timezone")
        self.phone = where.get("phone")
        self.country = where.get("country")
        self.attributes = where.get("attributes")
        self.extra = [(name, index) for index, name in enumerate(header) if name not in FIELDS]


def _lines(handle: TextIO) -> Iterator[str | None]:
    """The handle's lines as iterating it gives them (a line ends at \\n, \\r\\n or \\r), None for one
    longer than MAX_LINE: never more than MAX_LINE + 1 characters of a line in memory, the rest of
    a long one read in chunks of that size and dropped."""
    limit = MAX_LINE + 1
    text = handle.readline(limit)
    while text:
        if len(text) <= MAX_LINE:
            yield text
            text = handle.readline(limit)
            continue
        following = ""  # what was read of the next line while finding where this one ends
        while text and not text.endswith("\n"):
            if text.endswith("\r"):  # its end, unless a \n follows (\r\n cut at the limit)
                if len(text) < limit or (following := handle.readline(limit)) == "\n":
                    following = ""
                break
            text = handle.readline(limit)
        yield None
        text = following or handle.readline(limit)


class _CappedLines:
    """A CSV file's physical lines for csv.reader, each at most MAX_LINE characters: a longer one is
    given as a blank line, its number kept in `too_long` for the row to be refused by it."""

    def __init__(self, handle: TextIO) -> None:
        self._lines = _lines(handle)
        self.read = 0
        self.too_long: list[int] = []

    def __iter__(self) -> _CappedLines:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.read += 1
        if text is None:
            self.too_long.append(self.read)
            return "\n"
        return text


def _csv(handle: TextIO) -> Iterator[Line]:
    lines = _CappedLines(handle)
    reader = csv.reader(lines)
    try:
        cells = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield Line(1, None, f"not CSV: {exc}")
        return
    if lines.too_long:
        yield Line(lines.too_long[0], None, f"the header row is longer than {MAX_LINE // 1024} KiB")
        return
    if (problem := not_utf8(cells)) is not None:
        yield Line(reader.line_num, None, f"the header row is {problem}")
        return
    header = [name.strip().lower() for name in cells]
    if "contact_id" not in header:
        yield Line(1, None,
                   f"the header row has no contact_id column (it has {', '.join(header) or 'nothing'})")
        return
    if len(set(header)) != len(header):
        yield Line(1, None, "the header row names a column twice")
        return
    columns = _Columns(header)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Line(reader.line_num, None, f"not CSV: {exc}")
            return
        if lines.too_long:  # the row holds a line too long to read: refused by it
            yield Line(lines.too_long[0], None, f"longer than {MAX_LINE // 1024} KiB")
            lines.too_long.clear()
            continue
        if (len(cells) != columns.width or not cells[columns.contact_id].strip()) and not any(
                cell.strip() for cell in cells):
            continue  # a blank row
        if len(cells) != columns.width:
            yield Line(reader.line_num, None, f"{len(cells)} cells, the header has {columns.width}")
            continue
        if (problem := not_utf8(cells)) is not None:
            yield Line(reader.line_num, None, problem)
            continue
        yield _from_cells(reader.line_num, columns, cells)


def _from_cells(number: int, columns: _Columns, cells: list[str]) -> Line:
    """A CSV row's contact, checked: an empty cell is no value (a given field, cleared)."""
    contact_id = cells[columns.contact_id].strip()
    timezone = cells[columns.timezone].strip() or None if columns.timezone is not None else None
    phone = cells[columns.phone].strip() or None if columns.phone is not None else None
    country = cells[columns.country].strip() or None if columns.country is not None else None
    attributes: dict[str, Any] = {}
    if columns.attributes is not None and (text := cells[columns.attributes].strip()):
        try:
            attributes = wire.loads(text)
        except ValueError:
            return Line(number, None, "attributes is not JSON")
        if not isinstance(attributes, dict):
            return Line(number, None, "attributes is not a JSON object")
    for name, index in columns.extra:
        if value := cells[index].strip():
            attributes[name] = value
    return _checked(number, contact_id, timezone, phone, country, _json(attributes),
                    columns.timezone is not None, columns.phone is not None, columns.country is not None, True)


def _jsonl(handle: TextIO) -> Iterator[Line]:
    for number, text in enumerate(_lines(handle), start=1):
        if text is None:
            yield Line(number, None, f"longer than {MAX_LINE // 1024} KiB")
            continue
        if not text.strip():
            continue
        if (problem := not_utf8((text,))) is not None:
            yield Line(number, None, problem)
            continue
        try:
            contact = wire.loads(text)
        except ValueError as exc:
            yield Line(number, None, f"not JSON ({exc.args[0].split(':')[0]})")
            continue
        if not isinstance(contact, dict):
            yield Line(number, None, "not a JSON object")
            continue
        yield _from_object(number, contact)


def _from_object(number: int, contact: dict[str, Any]) -> Line:
    """A JSON Lines object's contact, checked: a key left out is a field not given."""
    if (problem := _shape_problem(contact)) is not None:
        return Line(number, None, problem)
    attributes = contact.get("attributes")
    return _checked(number, contact["contact_id"], contact.get("timezone"), contact.get("phone"),
                    contact.get("country"), None if attributes is None else _json(attributes),
                    "timezone" in contact, "phone" in contact, "country" in contact, "attributes" in contact)


def _json(attributes: dict[str, Any]) -> str:
    """Attributes as JSON text, their numbers as written (as PUT /v1/contacts keeps them: an
    integer beyond 64 bits, a fraction's digits)."""
    try:
        return orjson.dumps(attributes).decode()  # most: text and small integers, fast
    except TypeError:  # a number kept as written (wire.loads), or an integer beyond 64 bits
        return wire.text_of(attributes)


def _shape_problem(contact: dict[str, Any]) -> str | None:
    """What is wrong with a contact object's keys and their types, if anything."""
    unknown = set(contact) - set(FIELDS)
    if unknown:
        known = ", ".join(FIELDS)
        return f"unknown fields {', '.join(sorted(unknown))} (known: {known})"
    for name in ("timezone", "phone", "country"):
        if not isinstance(contact.get(name), str | None):
            return f"{name} is not text"
    attributes = contact.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        return "attributes is not a JSON object"
    contact_id = contact.get("contact_id")
    if not isinstance(contact_id, str):
        return f"contact_id {contact_id!r}: {_CONTACT_ID_RULE}"
    return None


_CONTACT_ID_RULE = "letters, digits and _ . : @ + -, starting with a letter or digit, at most 128"


def _checked(number: int, contact_id: str, timezone: str | None, phone: str | None, country: str | None,
             attributes: str | None, has_timezone: bool, has_phone: bool, has_country: bool,
             has_attributes: bool, *, countries: bool = True) -> Line:
    """The line's contact as the database will take it (phone in E.164; attributes as JSON text), or
    what is wrong with it; a country not in reminderd.countries too, unless not `countries`."""
    if not _CONTACT_ID.fullmatch(contact_id):
        return Line(number, None, f"contact_id {contact_id!r}: {_CONTACT_ID_RULE}")
    if timezone is not None and not _known_zone(timezone):
        return Line(number, None, f"timezone {timezone!r} is not an IANA zone (such as Europe/London)")
    if country is not None and not _COUNTRY.fullmatch(country):
        return Line(number, None, f"country {country!r} is not a two-letter ISO 3166 code (such as GB)")
    if countries and country is not None and not _known_country(country):
        return Line(number, None, f"country {country!r} is not an ISO 3166 country (such as GB)")
    if phone is not None:
        phone, problem = _written_phone(phone, country)
        if problem is not None:
            return Line(number, None, problem)
    return Line(number, ContactRow(contact_id, timezone, phone, country, attributes,
                                   has_timezone, has_phone, has_country, has_attributes))


def _written_phone(phone: str, country: str | None) -> tuple[str | None, str | None]:
    """`phone` as the database takes it, in E.164 (one written nationally read as `country` dials
    it; nothing but spaces: no phone), or what is wrong with it: the database refuses what is not
    +<country code> <number> (reminderd.is_phone), and so is it refused here, on its line."""
    if not phone.strip():
        return None, None
    if _PHONE.fullmatch(phone):  # E.164 already: as it is
        return phone, None
    if not _PHONE_TEXT.fullmatch(phone):
        return None, f"phone {phone!r} is not {_PHONE_RULE}"
    written = international(phone, country)
    if _PHONE.fullmatch(written):
        return written, None
    if "+" in phone:
        return None, f"phone {phone!r} is not {_PHONE_RULE}"
    if country is None:
        return None, (f"phone {phone!r} has no country code: write it +<country code> <number>, or give the"
                      " contact's country")
    return None, (f"phone {phone!r} has no country code and is not a number of {country.upper()}: write it"
                  " +<country code> <number>")


@functools.lru_cache(maxsize=1024)
def _known_zone(name: str) -> bool:
    """A zone the database takes (reminderd.is_timezone): an IANA one Python reads (not localtime,
    nor the "right/" or "posix/" copies of the zones a system may have)."""
    try:
        load_iana_timezone(name)
    except InvalidSchedule:
        return False
    return True


def _known_country(code: str) -> bool:
    """One of the countries of reminderd.countries (tzdata's iso3166.tab, as the database loads it)."""
    return code.upper() in country_codes()


class SentContact(NamedTuple):
    """One contact sent over the HTTP API, as the object it came as (its attributes' numbers as
    the client wrote them, its phone in E.164), or why it is refused."""

    line: int
    contact: dict[str, Any] | None
    problem: str | None = None


def checked_contact(number: int, contact: Any) -> SentContact:
    """One contact sent over the HTTP API (PUT /v1/contacts: an array's element or an NDJSON
    line), checked as a JSON Lines file's line is."""
    if not isinstance(contact, dict):
        return SentContact(number, None, "not a JSON object")
    if (problem := _shape_problem(contact)) is not None:
        return SentContact(number, None, problem)
    line = _checked(number, contact["contact_id"], contact.get("timezone"), contact.get("phone"),
                    contact.get("country"), None, "timezone" in contact, "phone" in contact,
                    "country" in contact, False,
                    countries=False)  # the database's refusal, naming the element, carries its SQLSTATE
    if line.contact is None:
        return SentContact(number, None, line.problem)
    return SentContact(number, {**contact, **({"phone": line.contact.phone} if "phone" in contact else {})})
