"""The named SQL statements of sql/queries.sql, loaded once."""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def load(text: str) -> dict[str, str]:
    """Split `-- name --` blocks into {name: statement}."""
    parts = _HEADER.split(text)
    statements = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.startswith("--"))
        statements[name] = sql.strip().rstrip(";")
    return statements


QUERIES = load(files("reminderd").joinpath("sql/queries.sql").read_text(encoding="utf-8"))
