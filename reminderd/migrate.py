"""Apply the Alembic migrations that ship inside the package, and say which revision this code needs.

Alembic (and SQLAlchemy under it) is imported inside the functions that run it: `reminderd run`
imports this module for HEAD_REVISION only, and importing Alembic would cost it a quarter of a second.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .retry import backoff_s

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "head"

# The newest revision in migrations/versions/: the schema this code works with. The daemon refuses
# to start on any other; tests/unit/test_migrate.py checks it against what Alembic reads there.
HEAD_REVISION = "0007"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    from . import migrations  # type: ignore[attr-defined]

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser interpolates %, which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The head revision as Alembic reads it from migrations/versions/ (slow: imports Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()


def upgrade(database_url: str, revision: str = HEAD) -> None:
    """Bring the schema to `revision`. Blocking: call it from a thread inside an event loop."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def upgrade_with_retry(database_url: str, *, give_up_after_s: float = 120.0) -> None:
    """upgrade(), waiting with backoff while the database is unreachable (at boot it may start
    after us); any other error is raised at once."""
    deadline = time.monotonic() + give_up_after_s
    failures = 0
    while True:
        try:
            upgrade(database_url)
            return
        except (OSError, ConnectionError) as exc:
            failures += 1
            delay_s = backoff_s(failures, base_s=0.5, cap_s=10.0, jitter="half")
            if time.monotonic() + delay_s > deadline:
                raise
            print(f"reminderd: database unreachable ({exc}); retrying in {delay_s:.1f}s", file=sys.stderr)
            time.sleep(delay_s)
