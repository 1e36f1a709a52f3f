"""What `make demo` and `make test` install: the demo only what it runs (PostgreSQL, the project);
PgBouncer, Node.js (the JavaScript SDK's tests) and promtool only on the test path
(.ci/setup --test), promtool in CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP = (ROOT / ".ci" / "setup").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def recipe(target: str) -> tuple[list[str], list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    match = re.search(rf"^{target}:([^\n#]*)(?:##[^\n]*)?\n((?:\t[^\n]*\n)*)", MAKEFILE, re.MULTILINE)
    assert match, f"no target {target}"
    return match.group(1).split(), [line.strip() for line in match.group(2).splitlines()]


def guard_of(package: str) -> str:
    """The condition of the `if` under which `apt_install <package>` runs."""
    lines = SETUP.splitlines()
    (index,) = [i for i, line in enumerate(lines) if re.search(rf"apt_install {package}\b", line)]
    for line in reversed(lines[:index]):
        if line.startswith("if "):
            return line
    raise AssertionError(f"apt_install {package} runs unconditionally")


def test_the_demo_path_installs_neither_pgbouncer_nor_prometheus() -> None:
    assert guard_of("pgbouncer").startswith('if [ -n "$for_tests" ]')
    assert guard_of("prometheus").startswith('if [ -n "$for_tests" ] && [ "${REMINDERD_CI:-}" = "1" ]')
    prerequisites, _ = recipe("demo")
    assert prerequisites == ["install"]
    assert recipe("install")[1] == ["@bash .ci/setup"]


def test_the_demo_path_installs_no_nodejs() -> None:
    """The demo schedules through the Python SDK; only the JavaScript SDK's tests need Node."""
    assert guard_of("nodejs").startswith('if [ -n "$for_tests" ]')
    assert guard_of("npm").startswith('if [ -n "$for_tests" ]')
    lines = SETUP.splitlines()
    (index,) = [i for i, line in enumerate(lines) if "npm ci" in line and not line.lstrip().startswith("echo")]
    guard = next(line for line in reversed(lines[:index]) if line.startswith("if "))
    assert guard.startswith('if [ -n "$for_tests" ]')


def test_the_test_path_installs_what_the_tests_need() -> None:
    _, lines = recipe("test")
    assert lines[0] == "@bash .ci/setup --test"
    assert "REMINDERD_CI=1" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
