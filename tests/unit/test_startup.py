"""`reminderd run` imports what the daemon runs and nothing else: its start-up is part of every
throughput figure (the peers harness times from the spawn). A fresh interpreter goes through the
command line exactly as `reminderd run` does, up to the point where the event loop would start,
and the modules it has imported by then are checked. Deterministic: names, not timings."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reminderd.cli import DatabaseCommand, build_parser

ROOT = Path(__file__).resolve().parents[2]

# cli.main(["run"]) with the event loop replaced: the daemon's coroutine is made, not run.
UP_TO_THE_LOOP = """
import json, sys
import reminderd.cli as cli

def stop_before_the_loop(coroutine):
    coroutine.close()
    print(json.dumps(sorted(sys.modules)))
    return 0

cli._event_loop_run = stop_before_the_loop
raise SystemExit(cli.main(["run"]))
"""

# What `reminderd run` must not import, and why it would be there.
NOT_FOR_RUN = {
    "reminderd.arguments": "the other commands' requests (cli.DatabaseCommand imports them when one runs)",
    "reminderd.validation": "the rules of `schedule` and the HTTP API",
    "reminderd.rows": "the rows of the CLI's, the API's and the audiences' reads",
    "reminderd.dashboard_rows": "the dashboard's rows",
    "reminderd.api": "the HTTP API (`reminderd serve`)",
    "reminderd.api_audiences": "the HTTP API's recipients' routes",
    "reminderd.dashboard": "the dashboard",
    "reminderd.serve": "`reminderd serve`",
    "reminderd.apikeys": "the API's keys",
    "reminderd.health": "the probes, imported once the first claim is made (daemon._serve_probes)",
    "reminderd.contact_files": "`contacts import`",
    "reminderd.phones": "the reference tables `reminderd migrate` loads",
    "reminderd.prefixes": "the reference tables `reminderd migrate` loads",
    "reminderd.devdb": "`reminderd dev-db`",
    "reminderd.testing": "the test harness",
    "reminderd.demo": "`reminderd demo`",
    "reminderd.client": "the Python SDK",
    "aiohttp": "the HTTP server (the probes start after the first claim)",
    "alembic": "migrations (the head revision is read without Alembic)",
    "sqlalchemy": "the schema's description for Alembic",
    "phonenumbers": "the reference tables",
    "jinja2": "the dashboard's templates",
    "yaml": "the API's OpenAPI document",
    "cron_descriptor": "crons said in words (`preview`, the dashboard)",
    "holidays": "public holidays, loaded when a row uses a calendar",
}
# What it must import, so that the check above cannot pass by importing nothing.
FOR_RUN = ("reminderd.daemon", "reminderd.worker", "reminderd.store", "asyncpg")


@pytest.fixture(scope="module")
def imported_by_run() -> set[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REMINDERD_")}
    env["REMINDERD_DATABASE_URL"] = "postgresql://reminderd@127.0.0.1:1/never_connected"
    done = subprocess.run([sys.executable, "-c", UP_TO_THE_LOOP], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return set(modules)


def test_run_imports_the_daemon(imported_by_run: set[str]) -> None:
    missing = [name for name in FOR_RUN if name not in imported_by_run]
    assert not missing, f"the check reached no daemon: {missing} not imported"


@pytest.mark.parametrize("module", sorted(NOT_FOR_RUN))
def test_run_does_not_import(module: str, imported_by_run: set[str]) -> None:
    assert module not in imported_by_run, f"`reminderd run` imports {module}: {NOT_FOR_RUN[module]}"


def _commands(parser: argparse.ArgumentParser, path: str = "reminderd") -> list[tuple[str, object]]:
    """(command line, handler) of every subcommand, nested ones included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{path} {name}", sub.get_default("handler")))
                found += _commands(sub, f"{path} {name}")
    return found


def test_every_database_command_names_a_request_that_exists() -> None:
    """A request named by its class (read when the command runs) must be one, with from_args."""
    named = [(line, handler) for line, handler in _commands(build_parser())
             if isinstance(handler, DatabaseCommand) and isinstance(handler.parse, str)]
    assert len(named) > 20  # the tenant, endpoint, API key and audience commands
    for line, handler in named:
        assert callable(handler.parser()), f"{line}: arguments.{handler.parse}.from_args"
