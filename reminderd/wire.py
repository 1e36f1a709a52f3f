"""JSON on the API's wire. Bodies are read keeping every number as written (a float's text is not
rounded: `12345678901234567.5` stays that, as the CLI and SQL keep it), so a payload reaches the
database and the callback as the client wrote it; answers embed stored payloads as the database
holds them, never decoded and encoded again."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from .schedule import iso_utc


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
        return json.loads(text, parse_float=_Written, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise NotJSON(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise NotJSON("the body nests arrays and objects too deeply") from None
    except ValueError as exc:  # an integer of more digits than int() converts (4300)
        raise NotJSON(f"the body is not usable JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def depth(value: Any, limit: int) -> int:
    """How deeply arrays and objects nest in `value`, counting no further than `limit` + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
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
    return text.encode()
