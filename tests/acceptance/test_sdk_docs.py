"""docs/api.md's SDK examples run as written: each ```python block of "The Python SDK" with this
venv's Python, each ```js block of "The JavaScript SDK" with Node (importing @reminderd/client from
clients/js), against a real `reminderd serve`, each with a tenant of its own. Only the server's
address is changed, from http://127.0.0.1:8080 to the test server's."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest
from live_api import LiveApi, new_tenant
from support import JS, ROOT, node

pytestmark = pytest.mark.slow
in_module_loop = pytest.mark.asyncio(loop_scope="module")  # the live server's loop (tests/live_api.py)

DOCUMENTED_URL = "http://127.0.0.1:8080"


def blocks(section: str, language: str) -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start:end if end > 0 else None], re.DOTALL)


PYTHON = blocks("The Python SDK", "python")
JAVASCRIPT = blocks("The JavaScript SDK", "js")


def test_each_sdk_has_its_examples() -> None:
    assert len(PYTHON) >= 5 and len(JAVASCRIPT) >= 3
    assert all(DOCUMENTED_URL in block for block in PYTHON + JAVASCRIPT)


async def run(command: list[str], key: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERD_")}
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env={**env, "REMINDERD_API_KEY": key},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{' '.join(command)}\n{out.decode()}\n{err.decode()}"
    assert not err.strip(), err.decode()
    return out.decode()


@in_module_loop
@pytest.mark.parametrize("index", range(len(PYTHON)))
async def test_a_python_example_runs_as_written(
        live_api: LiveApi, api_db: asyncpg.Connection, tmp_path: Path, index: int) -> None:
    tenant = await new_tenant(api_db)
    script = tmp_path / "example.py"
    script.write_text(PYTHON[index].replace(DOCUMENTED_URL, live_api.url), encoding="utf-8")
    printed = await run([sys.executable, str(script)], tenant.key, tmp_path)
    assert printed.strip(), "an example shows what it did"
    assert await api_db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE tenant_id = $1",
                                 tenant.tenant) > 0


@in_module_loop
@pytest.mark.parametrize("index", range(len(JAVASCRIPT)))
async def test_a_javascript_example_runs_as_written(
        live_api: LiveApi, api_db: asyncpg.Connection, tmp_path: Path, index: int) -> None:
    tenant = await new_tenant(api_db)
    package = tmp_path / "node_modules" / "@reminderd"
    package.mkdir(parents=True)
    (package / "client").symlink_to(JS, target_is_directory=True)  # as `npm install ./clients/js` links it
    script = tmp_path / "example.mjs"
    script.write_text(JAVASCRIPT[index].replace(DOCUMENTED_URL, live_api.url), encoding="utf-8")
    printed = await run([node(), str(script)], tenant.key, tmp_path)
    assert printed.strip(), "an example shows what it did"
    assert await api_db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE tenant_id = $1",
                                 tenant.tenant) > 0
