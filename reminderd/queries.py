"""The named SQL statements of sql/queries.sql (the daemon and the CLI), sql/api.sql (the HTTP
API) and sql/dashboard.sql (the dashboard), loaded once into one namespace: a name is unique
across the files."""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
_INCLUDE = re.compile(r"\{([a-z_]+)((?: \$\d+)*)\}")  # {fragment $4 $5}
_NAMED_PARAMETER = re.compile(r"\$[a-z_]+")


def load(text: str) -> dict[str, str]:
    """Split `-- name --` blocks into {name: statement}; `{name $4 $5}` includes the block `name`,
    its named parameters ($backfill, …, in order of first use) numbered as given."""
    parts = _HEADER.split(text)
    statements = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.startswith("--"))
        statements[name] = sql.strip().rstrip(";")

    def include(match: re.Match[str]) -> str:
        if match[1] not in statements:  # a literal such as '{transactional}', not an include
            return match[0]
        fragment = statements[match[1]]
        named = list(dict.fromkeys(_NAMED_PARAMETER.findall(fragment)))
        numbered = match[2].split()
        if len(named) != len(numbered):
            raise ValueError(f"{match[0]}: {match[1]} takes {len(named)} parameters ({' '.join(named)})")
        for placeholder, number in zip(named, numbered, strict=True):
            fragment = fragment.replace(placeholder, number)
        return fragment

    return {name: _INCLUDE.sub(include, sql) for name, sql in statements.items()}


SQL_FILES = ("sql/queries.sql", "sql/api.sql", "sql/dashboard.sql")


def load_files(names: tuple[str, ...] = SQL_FILES) -> dict[str, str]:
    """Every file's statements in one dict; a name defined twice is an error naming both files.
    Includes ({fragment $n}) may use a fragment of any file."""
    # Beside this module, as the wheel installs them (importlib.resources costs 3 ms at every start).
    package = Path(__file__).parent
    texts = [(name, (package / name).read_text(encoding="utf-8")) for name in names]
    seen: dict[str, str] = {}
    for name, text in texts:
        for statement in _HEADER.findall(text):
            if statement in seen:
                raise ValueError(f"query {statement!r} is defined in both {seen[statement]} and {name}")
            seen[statement] = name
    return load("\n".join(text for _, text in texts))


QUERIES = load_files()
