"""reminderd/contact_files.py's phones, for `reminderd contacts import` and PUT /v1/contacts alike:
every form docs/audiences.md allows is taken (written with +, or nationally with the contact's
country, then in E.164), and anything else is refused on its line, saying what to write, as the
database refuses it (reminderd.is_phone, migration 0021: tests/integration/test_sql_values.py)."""

from __future__ import annotations

import io
import json
import tracemalloc
from typing import Any

import pytest

from reminderd.contact_files import MAX_LINE, checked_contact, read_contacts

TAKEN = [
    ("+44 20 7946 0018", None, "+442079460018"),
    ("+44 (0)20 7946-0018", None, "+4402079460018"),  # as written, the separators dropped: SQL reads the (0)
    ("(+91) 98765.43210", None, "+919876543210"),
    ("+1/212/555/0100", None, "+12125550100"),
    ("+12125550100", None, "+12125550100"),
    ("020 7946 0018", "GB", "+442079460018"),  # national, read as its country dials
    ("(415) 555-2671", "us", "+14155552671"),
    ("0044 20 7946 0018", "GB", "+442079460018"),
    ("+1 212 000 0000", None, "+12120000000"),  # not a valid number, but written as one: no zone, no refusal
    ("   ", None, None),  # nothing: the phone is cleared
    ("", None, None),
]
RULE = "is not +<country code> <number> (such as +44 20 7946 0018)"
REFUSED = [
    ("hello world", None, f"phone 'hello world' {RULE}"),
    ("notaphone", "GB", f"phone 'notaphone' {RULE}"),
    ("+44 20 7946 0018 ext. 12", None, f"phone '+44 20 7946 0018 ext. 12' {RULE}"),
    ("+1-800-FLOWERS", "US", f"phone '+1-800-FLOWERS' {RULE}"),
    ("+0 123", None, f"phone '+0 123' {RULE}"),
    ("++44 20 7946 0018", None, f"phone '++44 20 7946 0018' {RULE}"),
    ("44+20 7946 0018", None, f"phone '44+20 7946 0018' {RULE}"),
    ("+\u0663\u0663\u0663\u0663", None, f"phone '+\u0663\u0663\u0663\u0663' {RULE}"),
    ("020 7946 0018", None, "phone '020 7946 0018' has no country code: write it +<country code> <number>,"
                            " or give the contact's country"),
    ("1", "GB", "phone '1' has no country code and is not a number of GB: write it +<country code> <number>"),
]


@pytest.mark.parametrize(("phone", "country", "sent"), TAKEN)
def test_every_form_of_a_phone_the_docs_allow_is_taken(
    phone: str, country: str | None, sent: str | None
) -> None:
    contact = {"contact_id": "c1", "phone": phone, **({"country": country} if country else {})}
    line = checked_contact(3, contact)
    assert (line.problem, line.contact) == (None, {**contact, "phone": sent})
    csv = f"contact_id,phone,country\nc1,{phone},{country or ''}\n"
    [read] = list(read_contacts(io.StringIO(csv), "csv"))
    assert read.problem is None and read.contact is not None
    assert (read.contact.phone, read.contact.has_phone) == (sent if phone.strip() else None, True)


@pytest.mark.parametrize(("phone", "country", "problem"), REFUSED)
def test_a_phone_that_is_not_one_is_refused_on_its_line(phone: str, country: str | None, problem: str) -> None:
    contact = {"contact_id": "c1", "phone": phone, **({"country": country} if country else {})}
    line = checked_contact(3, contact)
    assert (line.line, line.contact, line.problem) == (3, None, problem)
    jsonl = io.StringIO('{"contact_id": "c0"}\n' + json.dumps(contact) + "\n")
    assert [(read.line, read.problem) for read in read_contacts(jsonl, "jsonl")] == [(1, None), (2, problem)]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"contact_id": "c", "country": "ZZ"}', "country 'ZZ' is not an ISO 3166 country (such as GB)"),
        ('{"contact_id": "c", "country": "qq"}', "country 'qq' is not an ISO 3166 country (such as GB)"),
        ('{"contact_id": "c", "timezone": "right/Europe/Paris"}',
         "timezone 'right/Europe/Paris' is not an IANA zone (such as Europe/London)"),
        ('{"contact_id": "c", "timezone": "posix/Asia/Tokyo"}',
         "timezone 'posix/Asia/Tokyo' is not an IANA zone (such as Europe/London)"),
    ],
)
def test_a_country_or_zone_the_database_does_not_know_is_refused_on_its_line(line: str, problem: str) -> None:
    """Checked here as the database checks them (reminderd.countries, reminderd.is_timezone), so
    the line is named before a batch is sent; the HTTP API's zones alike (its countries are the
    database's to refuse, the answer carrying the SQLSTATE)."""
    [read] = read_contacts(io.StringIO(line + "\n"), "jsonl")
    assert (read.line, read.contact, read.problem) == (1, None, problem)
    assert checked_contact(1, json.loads(line)).problem == (problem if "timezone" in line else None)


def test_a_country_of_any_case_the_database_knows_is_taken() -> None:
    [read] = read_contacts(io.StringIO('{"contact_id": "c", "country": "gb", "timezone": "Europe/Paris"}\n'),
                           "jsonl")
    assert read.contact is not None and read.contact.country == "gb"


BIG = "123456789012345678901234567890"


@pytest.mark.parametrize(
    ("file_format", "text"),
    [
        ("jsonl", f'{{"contact_id": "a1", "attributes": {{"n": {BIG}, "x": 0.10, "e": 1E+400}}}}\n'),
        ("csv", f'contact_id,attributes\na1,"{{""n"": {BIG}, ""x"": 0.10, ""e"": 1E+400}}"\n'),
    ],
)
def test_attribute_numbers_are_kept_as_written(file_format: str, text: str) -> None:
    """An integer beyond 64 bits (a TypeError traceback, from orjson) or a fraction is kept as the
    line writes it, as PUT /v1/contacts keeps it (reminderd/wire.py)."""
    [read] = read_contacts(io.StringIO(text), file_format)
    assert read.contact is not None, read.problem
    assert read.contact.attributes == f'{{"n": {BIG}, "x": 0.10, "e": 1E+400}}'


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_number_json_does_not_have_is_refused_on_its_line(constant: str) -> None:
    """json.loads took NaN and orjson wrote it as null: a value silently changed."""
    [read] = read_contacts(io.StringIO(f'{{"contact_id": "a1", "attributes": {{"n": {constant}}}}}\n'), "jsonl")
    assert (read.contact, read.problem) == (None, f"not JSON ({constant} is not JSON)")


class _Generated(io.RawIOBase):
    """A file of `head`, `fill` repeated to `size` bytes, then `tail`, made as it is read (no copy
    of it anywhere: what reading it holds is what the reader keeps)."""

    def __init__(self, head: bytes, fill: bytes, size: int, tail: bytes) -> None:
        self._parts = iter([head, *([fill * (65536 // len(fill))] * (size // 65536)), tail])
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            self._left = next(self._parts, b"")
            if not self._left:
                return 0
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count


@pytest.mark.parametrize(
    ("file_format", "head", "fill", "size", "tail"),
    [
        # One JSON Lines line of 16 MB: read whole before it was refused (a 121 MB one: 281 MB).
        ("jsonl", b'{"contact_id": "a1", "attributes": {"s": "', b"x", 16 << 20,
         b'"}}\n{"contact_id": "a2"}\n'),
        # One CSV row of 2 million cells (csv.reader built every cell of it).
        ("csv", b"contact_id,a\nc1,", b"x,", 4 << 20, b"\nc2,y\n"),
    ],
)
def test_a_long_line_is_refused_without_being_held_in_memory(
    file_format: str, head: bytes, fill: bytes, size: int, tail: bytes
) -> None:
    handle = io.TextIOWrapper(io.BufferedReader(_Generated(head, fill, size, tail)), encoding="utf-8",
                              newline="")
    tracemalloc.start()
    try:
        lines = list(read_contacts(handle, file_format))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    first = 1 if file_format == "jsonl" else 2
    assert [(line.line, line.problem) for line in lines] == [(first, "longer than 64 KiB"), (first + 1, None)]
    assert lines[1].contact is not None and lines[1].contact.contact_id in ("a2", "c2")
    assert peak < 2 << 20, f"{peak:,} bytes at most in memory, reading a {size:,}-byte line"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("length", [MAX_LINE - 2, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, 3 * MAX_LINE + 5])
def test_lines_around_the_limit_end_where_they_end(ending: str, length: int) -> None:
    """A line is too long by its characters and its line ending, as before; the line after a long
    one is read whole, even where a \\r\\n is cut at the limit."""
    long = '{"contact_id": "a1", "attributes": {"s": "' + "x" * (length - 45) + '"}}' + ending
    text = long + '{"contact_id": "a2"}' + ending + '{"contact_id": "a3"}' + ending
    handle = io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8", newline="")
    lines = list(read_contacts(handle, "jsonl"))
    assert [line.line for line in lines] == [1, 2, 3]
    too_long = len(long) > MAX_LINE
    assert lines[0].problem == ("longer than 64 KiB" if too_long else None)
    assert [line.contact.contact_id for line in lines[1:] if line.contact] == ["a2", "a3"]
