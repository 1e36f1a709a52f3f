"""reminderd/schedule/ is the pure time core: it imports nothing else from reminderd, its modules
import each other without a cycle, and the rest of reminderd reaches it only through its face,
`reminderd.schedule`. Read from the source (the AST of every file), so a new module is covered too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

import reminderd
import reminderd.schedule

ROOT = Path(reminderd.__file__).parent.parent  # the directory holding the reminderd package
SCHEDULE_DIR = Path(reminderd.schedule.__file__).parent
FACE = "reminderd.schedule"


class Import(NamedTuple):
    line: int
    module: str  # absolute: relative imports resolved
    name: str | None  # `from module import name`; None for `import module`


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> Iterator[Import]:
    """Every import in `path` at any depth: inside functions and `if TYPE_CHECKING:` blocks too,
    and importlib.import_module("...") / __import__("...") with the name spelled out."""
    own = module_name(path, root).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                yield Import(node.lineno, module, alias.name)
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)) is not None:
            yield Import(node.lineno, name, None)


def _dynamic_import(call: ast.Call) -> str | None:
    func = call.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    first = call.args[0] if call.args else None
    if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
        return first.value if isinstance(first.value, str) else None
    return None


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def schedule_files() -> list[Path]:
    files = sorted(SCHEDULE_DIR.rglob("*.py"))
    assert len(files) >= 10, files  # the walk finds the package, not an empty directory
    return files


SUBMODULES = {module_name(path) for path in schedule_files()} - {FACE}


def where(path: Path, found: Import, root: Path = ROOT) -> str:
    target = found.module if found.name is None else f"{found.module}.{found.name}"
    return f"{path.relative_to(root)}:{found.line} imports {target}"


def escapes(path: Path, root: Path = ROOT) -> list[str]:
    """Where `path` imports reminderd outside reminderd.schedule."""
    found = []
    for each in imports(path, root):
        # `from reminderd import x` runs the module reminderd.x; `from reminderd.y import x` runs reminderd.y.
        target = f"reminderd.{each.name}" if each.module == "reminderd" and each.name else each.module
        if inside(target, "reminderd") and not inside(target, FACE):
            found.append(where(path, each, root))
    return found


def test_schedule_imports_nothing_else_from_reminderd() -> None:
    found = [escape for path in schedule_files() for escape in escapes(path)]
    assert found == [], "reminderd/schedule/ must stay pure:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "line", "target"),
    [
        ("from reminderd.store import Store", 1, "reminderd.store.Store"),
        ("from ..jobs import Job", 1, "reminderd.jobs.Job"),
        ("from .. import settings", 1, "reminderd.settings"),
        ("import reminderd.worker", 1, "reminderd.worker"),
        ("import re\ndef f():\n    from reminderd import outcome", 3, "reminderd.outcome"),
        ("if TYPE_CHECKING:\n    from ..callback import AttemptResult", 2, "reminderd.callback.AttemptResult"),
        ("importlib.import_module('reminderd.store')", 1, "reminderd.store"),
    ],
)
def test_the_wall_names_an_escape(tmp_path: Path, source: str, line: int, target: str) -> None:
    (tmp_path / "reminderd" / "schedule").mkdir(parents=True)
    path = tmp_path / "reminderd" / "schedule" / "leaky.py"
    path.write_text(source + "\n")
    assert escapes(path, tmp_path) == [f"reminderd/schedule/leaky.py:{line} imports {target}"]


def test_the_wall_lets_schedule_import_itself(tmp_path: Path) -> None:
    (tmp_path / "reminderd" / "schedule").mkdir(parents=True)
    path = tmp_path / "reminderd" / "schedule" / "fine.py"
    path.write_text(
        "import re\nfrom .wallclock import wall\nfrom . import cron\n"
        "from reminderd.schedule.cron import parse_cron\nimport reminderd.schedule.quiet\n"
    )
    assert escapes(path, tmp_path) == []


def schedule_graph() -> dict[str, set[str]]:
    """Each schedule module (the face left out) and the schedule modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in schedule_files():
        if path.name == "__init__.py":
            continue
        targets = set()
        for each in imports(path):
            named = f"{each.module}.{each.name}"
            if named in SUBMODULES:  # from . import cron
                targets.add(named)
            elif each.module in SUBMODULES:  # from .cron import parse_cron
                targets.add(each.module)
        graph[module_name(path)] = targets
    return graph


def test_no_import_cycle_inside_schedule() -> None:
    graph = schedule_graph()
    assert "reminderd.schedule.rrule_words" in graph["reminderd.schedule.rrule"]  # the graph is read
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycle = [*trail[trail.index(module) :], module]
            pytest.fail("import cycle in reminderd/schedule/: " + " -> ".join(cycle))
        if module not in done:
            for target in sorted(graph[module]):
                visit(target, [*trail, module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_rrule_words_is_a_leaf() -> None:
    """As cronsim's explain: the words read the parsed parts and never import the parser back."""
    assert schedule_graph()["reminderd.schedule.rrule_words"] == {"reminderd.schedule.rrule_parts"}


def test_schedule_modules_do_not_import_the_face() -> None:
    """A module of schedule/ importing reminderd.schedule would see the face half-built."""
    found = [
        where(path, each)
        for path in schedule_files()
        if path.name != "__init__.py"
        for each in imports(path)
        if each.module == FACE and f"{FACE}.{each.name}" not in SUBMODULES
    ]
    assert found == []


def test_the_rest_of_reminderd_uses_the_face() -> None:
    face = set(reminderd.schedule.__all__)
    found = [
        where(path, each)
        for path in sorted((ROOT / "reminderd").rglob("*.py"))
        if not path.is_relative_to(SCHEDULE_DIR)
        for each in imports(path)
        if any(inside(each.module, submodule) for submodule in SUBMODULES)
        or (each.module == FACE and each.name not in face)
    ]
    assert found == [], "import from reminderd.schedule, not its modules:\n" + "\n".join(found)
