"""Apply the Alembic migrations that ship inside the package."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config

from . import migrations  # type: ignore[attr-defined]
from .retry import backoff_s

HEAD = "head"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser interpolates %, which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = HEAD) -> None:
    """Bring the schema to `revision`, and at the head the reference data up to the installed
    phonenumbers and tzdata. Blocking: call it from a thread inside an event loop."""
    command.upgrade(alembic_config(database_url), revision)
    if revision == HEAD:
        asyncio.run(refresh_reference_data(database_url))


async def refresh_reference_data(database_url: str) -> bool:
    """Load the tables the database resolves timezones with (reminderd/phones.py), unless they were
    built from the libraries installed here already; whether it loaded them."""
    from . import phones  # phonenumbers is imported for migrating only, not by the daemon
    from .store import Store

    store = await Store.connect(database_url, max_size=1)
    try:
        if await store.reference_versions() == phones.versions():
            return False
        await store.load_reference_data(phones.reference_data())
        return True
    finally:
        await store.close()


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
