"""The daemon's start-up lines never show a piece of its database URL's password, whatever the
password holds (tests/unit/test_url_secrets.py: the errors and `reminderd config`)."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import HOSTILE_URL_CHARACTERS, PASSWORD_MARKS, assert_password_hidden, url_with_password

from reminderd.testing import CLI_COMMAND, daemon_env

pytestmark = pytest.mark.slow

PASSWORDS = st.text(alphabet=HOSTILE_URL_CHARACTERS + PASSWORD_MARKS, min_size=4, max_size=24).filter(
    lambda password: any(c in PASSWORD_MARKS for c in password))


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port bound and not listening: a connection to it is refused at once."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def _daemon_output(env: dict[str, str]) -> str:
    """`reminderd run`'s lines until it exits (a refused URL) or reports the database unreachable."""
    with subprocess.Popen([*CLI_COMMAND, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        assert process.stdout is not None
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if "database_unreachable" in line:
                    break
        finally:
            process.terminate()
            process.wait(timeout=20)
    return "".join(lines)


@given(password=PASSWORDS)
@example(password="Zq?k=9mP")  # the reviewer's: '?' then '=', the @ then in a query value
@example(password="QXZJ7")  # a plain password: the daemon starts, its URL masked
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_piece_of_a_password_shows_in_the_daemon_start_up_lines(password: str, closed_port: int) -> None:
    url = url_with_password(password, closed_port)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "url")
        path.write_text(url + "\n", encoding="utf-8")
        from_file = {name: value for name, value in daemon_env(url).items() if name != "REMINDERD_DATABASE_URL"}
        for env in (daemon_env(url), {**from_file, "REMINDERD_DATABASE_URL_FILE": str(path)}):
            output = _daemon_output(env)
            assert "configuration error" in output or "database_unreachable" in output, output
            assert_password_hidden(password, url, output)
