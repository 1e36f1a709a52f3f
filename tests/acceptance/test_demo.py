"""The Quick start's first command: `reminderd demo`, here against the suite's own PostgreSQL."""

from __future__ import annotations

import subprocess

import pytest

from reminderd.testing import CLI_COMMAND

pytestmark = pytest.mark.slow


def test_the_demo_fires_everything_once_and_exits_0(empty_database_url: str) -> None:
    done = subprocess.run(
        [*CLI_COMMAND, "--database-url", empty_database_url, "demo"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.rstrip().endswith(
        "every message fired once, on time; pulse fired 2 times and finished; "
        "promo:spring-sale waits for the end of quiet hours"
    )
    assert out.count("signature ok") == 7 and "BAD" not in out
    assert "over HTTP: 201" in out and "curl -X POST http://127.0.0.1:" in out and "Bearer rk_" in out
    assert '"event": "deferred"' in out and "quiet hours" in out
