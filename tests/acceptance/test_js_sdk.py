"""The JavaScript SDK's tests (clients/js/test), run by Node's own test runner (`node --test`) as a
subprocess so `make test` stays the one entry point: its unit tests, and its live tests against a real
`reminderd serve` started here. (tests/unit/test_js_types.py checks its types against the document.)"""

from __future__ import annotations

import asyncio
import json
import re

import asyncpg
import pytest
from live_api import LiveApi, new_tenant
from support import JS, node

from reminderd.testing import add_api_key

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LIVE_TESTS = 14  # tests in live.test.js, each with a key of its own


def summary(output: str) -> dict[str, int]:
    """The counts of `node --test`'s TAP summary (# tests 12, # pass 12, …)."""
    found = re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", output, re.MULTILINE)
    return {name: int(count) for name, count in found}


async def run_node_tests(test_file: str, env: dict[str, str], timeout_s: float = 240) -> dict[str, int]:
    """Run one file of clients/js/test; its counts, once every test passed and none was skipped."""
    process = await asyncio.create_subprocess_exec(
        node(), "--test", test_file, cwd=JS, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    output = out.decode(errors="replace")
    counts = summary(output)
    assert process.returncode == 0 and counts.get("fail") == 0, output[-6000:]
    assert (counts.get("skipped"), counts.get("todo"), counts.get("cancelled")) == (0, 0, 0), output[-6000:]
    return counts


async def test_the_js_unit_tests_pass() -> None:
    counts = await run_node_tests("test/unit.test.js", env=_env())
    assert counts["pass"] >= 20


async def test_the_js_sdk_against_a_real_server(live_api: LiveApi, api_db: asyncpg.Connection) -> None:
    keys = [(await new_tenant(api_db)).key for _ in range(LIVE_TESTS)]
    read_only = await new_tenant(api_db, read_only=True)
    slow = await new_tenant(api_db)
    await api_db.execute("UPDATE reminderd.tenants SET api_rate_limit = 1 WHERE id = $1", slow.tenant)
    counts = await run_node_tests("test/live.test.js", env=_env(
        SDK_TEST_BASE_URL=live_api.url, SDK_TEST_KEYS=json.dumps(keys), SDK_TEST_READ_ONLY_KEY=read_only.key,
        SDK_TEST_SLOW_KEY=slow.key,
    ))
    assert counts["pass"] == counts["tests"] == LIVE_TESTS
    created = await api_db.fetchval(
        "SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id IN ('retried', 'cut')")
    assert created == 4  # one per retried call (three through failures, one cut after commit), never two


AUDIENCE_TESTS = 4  # tests in audiences.test.js with a key of their own (and one with SDK_TEST_PAIR)


async def test_the_js_sdk_contacts_audiences_and_broadcasts(
        live_api: LiveApi, api_db: asyncpg.Connection) -> None:
    keys = [(await new_tenant(api_db)).key for _ in range(AUDIENCE_TESTS)]
    pair = await new_tenant(api_db)
    await api_db.execute("UPDATE reminderd.tenants SET approval_threshold = 2 WHERE id = $1", pair.tenant)
    second = await add_api_key(api_db, pair.tenant, name="second-person")
    counts = await run_node_tests("test/audiences.test.js", env=_env(
        SDK_TEST_BASE_URL=live_api.url, SDK_TEST_KEYS=json.dumps(keys),
        SDK_TEST_PAIR=json.dumps([pair.key, second]),
    ))
    assert counts["pass"] == counts["tests"] == AUDIENCE_TESTS + 1


def _env(**variables: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMINDERD_", "SDK_TEST_", "NODE_"))}
    return {**env, **variables}
