"""The schema revision the daemon expects, and what `reminderd run` imports on its way to the first claim."""

from __future__ import annotations

import subprocess
import sys

from reminderd.migrate import HEAD_REVISION, head_revision


def test_head_revision_is_the_newest_revision_in_migrations_versions() -> None:
    assert head_revision() == HEAD_REVISION, (
        "reminderd/migrate.py HEAD_REVISION must name the newest migration in migrations/versions/"
    )


def test_the_daemon_starts_without_importing_alembic_sqlalchemy_or_the_http_server() -> None:
    """`reminderd run` checks the schema against HEAD_REVISION instead of asking Alembic (0.25 s of
    imports), and imports aiohttp (0.15 s) only once it claims, to serve its probes."""
    probe = (
        "import sys; import reminderd.cli, reminderd.daemon; "
        "print(' '.join(sorted(m for m in ('alembic', 'sqlalchemy', 'aiohttp') if m in sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []
