"""JSON on the API's wire. Bodies are read keeping every number as written (a float's text is not
rounded: `12345678901234567.5` stays that, as the CLI and SQL keep it), so a payload reaches the
database and the callback as the client wrote it; answers embed stored payloads as the database
holds them, never decoded and encoded again.

JSON can write text PostgreSQL cannot store: the NUL character (`\\u0000`) and half a UTF-16
surrogate pair (a lone `\\ud800`). `unstorable()` finds such strings in a parsed body, with the
path to each, so that the API refuses them by their field before anything reaches the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .problems import pointer
from .schedule import iso_utc
from .validation import InvalidInput, parse_duration


class NotJSON(ValueError):
    """The body is not JSON (the message says where)."""


class _Written(Decimal):
    """A JSON number with a fraction or an exponent, kept as its text."""

    text: str

    def __new__(cls, text: str) -> _Written:
        number = super().__new__(cls, text)
        number.text = text
        return number


def parse(body: bytes) -> Any:
    """The JSON value of `body`; NotJSON saying what is wrong and where."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotJSON(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise NotJSON(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise NotJSON("the body nests arrays and objects too deeply") from None
    except ValueError as exc:  # an integer of more digits than int() converts (4300)
        raise NotJSON(f"the body is not usable JSON: {exc}") from None


def loads(text: str) -> Any:
    """json.loads(text), keeping every number as written (text_of() writes it again so), refusing
    NaN and Infinity (JSONDecodeError); ValueError for an integer of more than 4300 digits."""
    return json.loads(text, parse_float=_Written, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def too_deep(body: bytes, value: Any, limit: int) -> bool:
    """Whether `value` (parsed from `body`) nests arrays and objects more than `limit` deep."""
    # Each array or object opens with a bracket: no more brackets than the limit, no walk needed.
    return body.count(b"{") + body.count(b"[") > limit and depth(value, limit) > limit


# Text PostgreSQL cannot store: NUL, and a surrogate (UTF-8 cannot encode one; paired, JSON's two
# escapes decode to one character beyond U+FFFF, which is no surrogate).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Every escape that writes text PostgreSQL can store: any but \u (\\ among them), a surrogate pair
# (one character beyond U+FFFF), any other \u but \u0000 and a lone half. Matched from the left,
# as JSON reads them; what is left of a body's escapes when these are gone writes NUL or a half.
# (Raw UTF-8 writes neither: parse() refuses an encoded surrogate, JSON a raw control character.)
_STORABLE_ESCAPE = re.compile(
    rb"\\(?:[^u]|u(?:[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|(?!0000|[dD][89a-fA-F])[0-9a-fA-F]{4}))"
)


@dataclass(frozen=True)
class Unstorable:
    """A string of a body that PostgreSQL cannot store: where it is and what it holds."""

    path: tuple[str | int, ...]  # keys and indexes from the top (to the object, for a member's name)
    character: str  # "\x00", or the lone surrogate
    in_name: bool = False  # in a member's name, not in a value

    def detail(self, whole: str = "the body") -> str:
        """One line naming the field: a member of the top by its name, deeper by its pointer."""
        if len(self.path) == 1 and isinstance(self.path[0], str):
            field = self.path[0]
        elif self.path:
            field = pointer(*self.path)
        else:
            field = whole
        where = f"a member name in {field}" if self.in_name else field
        if self.character == "\x00":
            return f"{where} has \\u0000, the NUL character: PostgreSQL cannot store it"
        return (f"{where} has half a UTF-16 surrogate pair, \\u{ord(self.character):04x}: "
                "PostgreSQL cannot store it")


def may_hold_unstorable(body: bytes) -> bool:
    """Whether JSON text writes an escape that makes a string PostgreSQL cannot store: when not,
    what was parsed from it needs no look (a scan of the bytes, no walk of the document)."""
    return b"\\" in body and b"\\" in _STORABLE_ESCAPE.sub(b"", body)  # memchr first: most bodies have none


def unstorable(value: Any, body: bytes | None = None) -> Iterator[Unstorable]:
    """Each string in `value` PostgreSQL cannot store, in the document's order; none without a
    look when `body`, the text `value` was parsed from, cannot hold one (may_hold_unstorable)."""
    if body is not None and not may_hold_unstorable(body):
        return
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            found = _UNSTORABLE.search(item)
            if found is not None:
                yield Unstorable(path, found.group())
        elif isinstance(item, dict):
            members = []
            for key, child in item.items():
                found = _UNSTORABLE.search(key)
                if found is not None:  # the name is the refusal: what it holds is not looked at
                    yield Unstorable(path, found.group(), in_name=True)
                else:
                    members.append(((*path, key), child))
            stack.extend(reversed(members))
        elif isinstance(item, list):
            stack.extend(reversed([((*path, index), child) for index, child in enumerate(item)]))


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text` (and an answer can repeat it)."""
    return _UNSTORABLE.search(text) is None


# Durations ------------------------------------------------------------------------------------

_FAR_S = Decimal(10**12)  # far beyond any duration allowed (100 years): the error says so


def duration(value: Any, name: str, *, allow_zero: bool = False) -> str | None:
    """A duration member `name` of a body as the text reminderd/duration.py reads: a string as it
    is (`2h`, `PT2H`, `300`), any JSON number of seconds (`300`, `1.5`, `1e3`) as a plain decimal.
    InvalidInput naming `name` otherwise; it repeats a number as the client wrote it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidInput(f'{name} must be a duration such as "2h" or a number of seconds', name)
    number = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    as_written = value.text if isinstance(value, _Written) else str(value)
    bounded = max(min(number, _FAR_S), -_FAR_S)
    plain = format(bounded, "f") if bounded.adjusted() >= -6 else "0"  # under a microsecond: none
    try:
        parse_duration(plain, name, allow_zero=allow_zero)
    except InvalidInput as exc:
        raise InvalidInput(str(exc).replace(repr(plain), repr(as_written), 1), name) from None
    return plain


def depth(value: Any, limit: int) -> int:
    """How deeply arrays and objects nest in `value`, counting no further than `limit` + 1."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:  # only arrays and objects go on the stack: a batch's scalars cost one check each
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1))
    return deepest


def text_of(value: Any) -> str:
    """A parsed JSON value as JSON text again, its numbers as they were written."""
    return encode(value)[0]


def encode(value: Any) -> tuple[str, bool]:
    """text_of(value), and whether json.dumps wrote it (no number kept as written inside)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False), True
    except TypeError:  # a _Written number inside
        return "".join(_write(value)), False


def _write(value: Any) -> Any:
    if isinstance(value, _Written):
        yield value.text
    elif isinstance(value, dict):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield (", " if index else "") + json.dumps(key, ensure_ascii=False) + ": "
            yield from _write(item)
        yield "}"
    elif isinstance(value, list):
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ", "
            yield from _write(item)
        yield "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


class Raw:
    """JSON text to embed as it is (a stored payload)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(document: Any) -> bytes:
    """An answer's JSON: datetimes as RFC 3339 UTC, Raw text embedded as it is."""
    raws: list[str] = []

    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return iso_utc(value, timespec="auto")
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"\x00{len(raws) - 1}\x00"  # no string from the database holds a NUL
        if isinstance(value, tuple | frozenset):
            return list(value)
        raise TypeError(f"cannot encode {type(value).__name__}")

    text = json.dumps(document, default=default, ensure_ascii=False, separators=(",", ":"))
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0000{index}\\u0000"', raw, 1)
    return encoded(text)


def encoded(text: str) -> bytes:
    """JSON text as UTF-8, always: a lone surrogate (only ever in a string) as its JSON escape."""
    return text.encode("utf-8", "backslashreplace")
