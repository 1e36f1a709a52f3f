"""Rows written in PostgreSQL's binary COPY format (the protocol's own documentation, "COPY ...
File Formats"), for a COPY that asyncpg's copy_records_to_table cannot say: `(FORMAT binary,
FREEZE)`. Pure: bytes out, no connection; store.py sends them.

A column is given by its type as format_type() writes it, with "?" after it when it may be NULL
("integer", "text?", "smallint[]?"). Only the types the reference tables use are known
(`ENCODERS`); any other raises ValueError naming it, before anything is written.
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = ["ENCODERS", "HEADER", "TRAILER", "stream"]

# The signature, flags (no OIDs) and an empty header extension; the trailer is a field count of -1.
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
_LENGTH = struct.Struct("!i")
_INT4 = struct.Struct("!ii")  # a field: its length (4), then the value
_INT2 = struct.Struct("!ih")
_BOOLEANS = (struct.pack("!ib", 1, 0), struct.pack("!ib", 1, 1))  # indexed by the value

Encoder = Callable[[Any], bytes]  # one value (not None) to one field, its length first


def _int4(value: int) -> bytes:
    return _INT4.pack(4, value)


def _int2(value: int) -> bytes:
    return _INT2.pack(2, value)


def _boolean(value: bool) -> bytes:
    return _BOOLEANS[value is True] if type(value) is bool else _wrong("boolean", value)


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return _LENGTH.pack(len(data)) + data


def _wrong(type_name: str, value: Any) -> bytes:
    raise ValueError(f"{value!r} is not a {type_name}")


def _array(element_oid: int, element: Encoder) -> Encoder:
    """A one-dimensional array (lower bound 1) of elements written by `element`; None is NULL."""

    def encode(values: Sequence[Any]) -> bytes:
        if not values:
            body = struct.pack("!iii", 0, 0, element_oid)
        else:
            has_null = any(value is None for value in values)
            body = struct.pack("!iiiii", 1, int(has_null), element_oid, len(values), 1) + b"".join(
                _NULL if value is None else element(value) for value in values
            )
        return _LENGTH.pack(len(body)) + body

    return encode


# By the type's name as format_type() writes it.
ENCODERS: dict[str, Encoder] = {
    "integer": _int4,
    "boolean": _boolean,
    "text": _text,
    "smallint[]": _array(21, _int2),
    "integer[]": _array(23, _int4),
    "text[]": _array(25, _text),
}

ColumnEncoder = Callable[[Sequence[Any]], Iterable[bytes]]  # a column's values to its fields


def _column(type_name: str) -> ColumnEncoder:
    """How a whole column of `type_name` is written, by map() over C functions where it can (the
    203,000 prefixes: 0.2 s of CPU): a column that may not be NULL and holds integers, booleans
    or texts field by field; arrays and NULL-able columns by their distinct values, each written
    once (the prefixes repeat 600 masks and 180 zones)."""
    nullable, name = type_name.endswith("?"), type_name.removesuffix("?")
    try:
        encode = ENCODERS[name]
    except KeyError:
        raise ValueError(f"no binary COPY encoder for the column type {name!r}") from None
    array = name.endswith("[]")
    if array or nullable:
        def distinct(values: Sequence[Any]) -> Iterable[bytes]:
            keys = [None if value is None else tuple(value) for value in values] if array else values
            fields: dict[Any, bytes] = {None: _NULL} if nullable else {}
            for key in set(keys) - fields.keys():
                fields[key] = encode(list(key) if array else key)
            return map(fields.__getitem__, keys)

        return distinct
    if name == "integer":
        return lambda values: map(_INT4.pack, itertools.repeat(4), values)
    if name == "text":
        def texts(values: Sequence[Any]) -> Iterable[bytes]:
            data = [value.encode("utf-8") for value in values]
            return map(operator.add, map(_LENGTH.pack, map(len, data)), data)

        return texts

    def booleans(values: Sequence[Any]) -> Iterable[bytes]:
        if not set(map(type, values)) <= {bool}:
            others = sorted({repr(value) for value in values if type(value) is not bool})
            raise ValueError(f"not all booleans: {', '.join(others)}")
        return map(_BOOLEANS.__getitem__, values)

    return booleans


def stream(rows: Sequence[Sequence[Any]], types: Sequence[str], *, chunk_rows: int = 8192) -> Iterator[bytes]:
    """The COPY data of `rows` (each a sequence of values in column order, None for NULL) whose
    columns have `types`: the header, then the rows in chunks of `chunk_rows`, then the trailer.
    ValueError for a row of another length, or a value its column's type cannot hold (an integer
    out of its range, a value of another type, NULL in a column that may not be NULL), naming the
    rows of the chunk it is in."""
    encoders = [_column(name) for name in types]
    count = struct.pack("!h", len(encoders))
    yield HEADER
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start:start + chunk_rows]
        try:
            values = zip(*chunk, strict=True)
            columns = [encode(column) for encode, column in zip(encoders, values, strict=True)]
            data = b"".join(map(b"".join, zip(itertools.repeat(count, len(chunk)), *columns, strict=True)))
        except (struct.error, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"rows {start + 1} to {start + len(chunk)}: {exc}") from exc
        yield data
    yield TRAILER
