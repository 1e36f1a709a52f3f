"""The Quick start's first command: `reminderd demo`, here against the suite's own PostgreSQL."""

from __future__ import annotations

import re
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
    assert "over HTTP: created, once, at " in out
    assert "curl -X POST http://127.0.0.1:" in out and "Bearer rk_" in out
    assert "one message through the Python SDK:" in out
    assert "await rd.schedule('welcome:bob', fire_in='2s'" in out
    assert '"event": "deferred"' in out and "quiet hours" in out
    # "on time" is true: the daemon and the API run before anything is scheduled (a message due in
    # 1 s used to wait for `reminderd serve` to start), and each occurrence's first attempt arrived
    # within half a second of its time.
    first_scheduled = out.index("  scheduled #")
    assert out.index("reminderd demo: daemon running") < first_scheduled
    assert out.index("reminderd demo: reminderd serve listening on") < first_scheduled
    first_attempts = re.findall(r"receiver <- (\S+) +attempt 1 .* (-?\d+) ms after its time", out)
    assert len(first_attempts) == 6, out  # 7 deliveries, one a retry
    assert [(ref, int(ms)) for ref, ms in first_attempts if int(ms) > 500] == []
    summary = r"^reminderd demo: first attempts -?\d+ to \d+ ms after their time \(on time: within 500 ms\)$"
    assert re.search(summary, out, re.MULTILINE)
