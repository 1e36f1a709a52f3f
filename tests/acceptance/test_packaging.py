"""`pip install .` builds a wheel without a warning, and the wheel carries every .sql file the
package reads (queries, schema, migrations)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_builds_without_warnings_and_ships_the_sql(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output

    (wheel,) = tmp_path.glob("reminderd-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"reminderd/sql/{path.name}" for path in (ROOT / "reminderd" / "sql").glob("*.sql")}
    expected |= {f"reminderd/migrations/sql/{path.name}"
                 for path in (ROOT / "migrations" / "sql").glob("*.sql")}
    expected |= {f"reminderd/migrations/versions/{path.name}"
                 for path in (ROOT / "migrations" / "versions").glob("0*.py")}
    expected |= {"reminderd/py.typed", "reminderd/migrations/script.py.mako"}
    assert expected <= shipped, sorted(expected - shipped)
