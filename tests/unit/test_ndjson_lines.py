"""PUT /v1/contacts's NDJSON reader (reminderd/api_audiences.py): lines from chunks cut anywhere,
never more than a line's limit held, a longer line refused once and the rest of it dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reminderd.api_audiences import _lines
from reminderd.contact_files import MAX_LINE


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def lines(*parts: bytes) -> list[bytes]:
    return [line async for line in _lines(chunks(*parts))]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
async def test_lines_come_out_whole_wherever_the_chunks_are_cut(size: int) -> None:
    body = b'{"a": 1}\n\n{"b": 2}\n{"c": 3}'
    parts = [body[start:start + size] for start in range(0, len(body), size)]
    assert await lines(*parts) == [b'{"a": 1}', b"", b'{"b": 2}', b'{"c": 3}']


async def test_a_line_over_the_limit_is_cut_once_and_the_rest_of_it_dropped() -> None:
    long = b"x" * (3 * MAX_LINE)
    parts = [b"first\n", long[:MAX_LINE // 2], long[MAX_LINE // 2:], b"\nafter\n"]
    out = await lines(*parts)
    assert out[0] == b"first" and out[2] == b"after" and len(out) == 3
    assert len(out[1]) == MAX_LINE + 1  # refused as too long; never more held
    assert await lines(b"y" * MAX_LINE + b"\n") == [b"y" * MAX_LINE]  # at the limit: a line
