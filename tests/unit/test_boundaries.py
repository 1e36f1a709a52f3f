"""The layers docs/architecture.md describes, checked on the imports themselves: only the store
talks to PostgreSQL, the decisions do no I/O, and nothing below the command line reaches up
into it. (The time core's own wall is tests/unit/test_schedule_wall.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reminderd"

# Importing asyncpg is talking to the database: the store does, and the test harness (which
# creates databases for tests, the demo and the bench).
TALKS_TO_POSTGRES = {"store", "testing"}
# Pure decisions and rules: no database, no HTTP, no loop.
PURE = {"outcome", "retry", "guard", "lifecycle", "duration", "payload", "signing", "jobs", "callback_urls"}
IO_MODULES = {"store", "callback", "http1", "worker", "housekeeping", "daemon", "health", "cli", "demo"}
# What the loop's building blocks must not reach up into.
ENTRY_POINTS = {"cli", "daemon", "demo"}


def imports_of(path: Path) -> set[str]:
    """Top-level names this module imports: 'asyncpg', 'aiohttp', and 'reminderd.X' as 'X'."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level == 1:
                names.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module:
                module = node.module.split(".")
                names.add(module[1] if module[0] == "reminderd" and len(module) > 1 else module[0])
    return names


MODULES = {path.stem: imports_of(path) for path in sorted(PACKAGE.glob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_store_imports_asyncpg(module: str) -> None:
    if module not in TALKS_TO_POSTGRES:
        assert "asyncpg" not in MODULES[module], f"reminderd/{module}.py imports asyncpg: go through store.py"


@pytest.mark.parametrize("module", sorted(PURE))
def test_decisions_do_no_io(module: str) -> None:
    reached = MODULES[module] & (IO_MODULES | {"asyncpg", "aiohttp", "httptools"})
    assert not reached, f"reminderd/{module}.py is pure but imports {sorted(reached)}"


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS))
def test_nothing_reaches_up_into_the_entry_points(module: str) -> None:
    reached = MODULES[module] & ENTRY_POINTS
    assert not reached, f"reminderd/{module}.py imports the entry point(s) {sorted(reached)}"


def test_the_check_sees_imports(tmp_path: Path) -> None:
    """The scan must find what it is looking for, or every test above passes vacuously."""
    assert "asyncpg" in MODULES["store"]
    assert {"outcome", "store", "callback"} <= MODULES["worker"]
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncpg.pool\nfrom reminderd.cli import main\nfrom . import daemon\n")
    assert imports_of(sample) == {"asyncpg", "cli", "daemon"}
