"""Apply the Alembic migrations that ship inside the package, say what was done, and say which
revision this code needs.

Alembic (and SQLAlchemy under it) is imported inside the functions that run it: `reminderd run`
imports this module for HEAD_REVISION only, and importing Alembic would cost it a quarter of a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import DatabaseMisconfigured, DatabaseRefused, DatabaseUnavailable, ReminderdError
from .retry import backoff_s
from .store import Store, cause, translated

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "head"
WAIT_S = 120.0  # how long `reminderd migrate` waits for an unreachable database by default


class MigrationFailed(ReminderdError):
    """A migration failed; the message says which and why."""


@dataclass(frozen=True)
class Migrated:
    """What `reminderd migrate` did: the revisions it applied, in order, and the head."""

    applied: tuple[str, ...]
    head: str | None

    def __str__(self) -> str:
        if self.applied:
            return f"applied {', '.join(self.applied)} (head {self.head})"
        return f"already at head {self.head}"


# The newest revision in migrations/versions/: the schema this code works with. The daemon refuses
# to start on any other; tests/unit/test_migrate.py checks it against what Alembic reads there.
HEAD_REVISION = "0040"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    from . import migrations  # type: ignore[attr-defined]

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser interpolates %, which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision(database_url: str = "postgresql://unused") -> str | None:
    """The head revision as Alembic reads it from migrations/versions/ (slow: imports Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def upgrade(database_url: str, revision: str = HEAD) -> list[str]:
    """Bring the schema to `revision`, and at the head the reference data up to the installed
    phonenumbers and tzdata; the revisions applied, in order. Blocking: call it from a thread
    inside an event loop."""
    from alembic import command

    config = alembic_config(database_url)
    applied: list[str] = []

    def note(*, step: Any, **_: Any) -> None:
        if step.is_upgrade:
            applied.append(step.up_revision_id)

    config.attributes["on_version_apply"] = note  # read by migrations/env.py
    command.upgrade(config, revision)
    if revision == HEAD:
        asyncio.run(refresh_reference_data(database_url))
    return applied


async def refresh_reference_data(database_url: str) -> bool:
    """Load the tables the database resolves timezones with (reminderd/phones.py) and the holiday
    calendars it checks a calendar against (reminderd.holiday_calendars), unless they were built
    from the libraries installed here already; whether it loaded any. The phone tables' rows come
    from the user's cache when it has them (reminderd/reference_cache.py)."""
    # phonenumbers is imported for migrating only, not by the daemon
    from . import phones, reference_cache
    from .schedule import calendars_version, known_calendars

    store = await Store.connect(database_url, max_size=1)
    try:
        loaded = await store.reference_versions()
        holidays_version = calendars_version()
        refreshed = False
        if loaded.get("holidays") != holidays_version and await store.has_holiday_calendars():
            await store.load_holiday_calendars(holidays_version, known_calendars())
            refreshed = True
        if {source: loaded.get(source) for source in phones.versions()} == phones.versions():
            return refreshed
        with reference_cache.collector_paused():
            try:
                await store.load_reference_data(reference_cache.reference_data())
            except DatabaseRefused:
                if not reference_cache.discard():  # not the cache's rows: the database's own refusal
                    raise
                await store.load_reference_data(reference_cache.reference_data())  # built afresh, cached again
        return True
    finally:
        await store.close()


def migrate(
    database_url: str, *, setting: str = "REMINDERD_DATABASE_URL", wait_s: float = WAIT_S,
    say: Callable[[str], None] = print,
) -> Migrated:
    """Wait (up to `wait_s`) for the database to answer, then upgrade it to the head.

    While the database is unreachable `say` is told, once, how long this keeps trying, then one
    line per retry. DatabaseMisconfigured when the URL is wrong (at once: waiting cannot fix it),
    DatabaseUnavailable when the time is up, MigrationFailed when a migration is refused."""
    from alembic.util.exc import CommandError

    wait_for_database(database_url, setting=setting, wait_s=wait_s, say=say)
    applied: list[str] = []
    try:
        applied = upgrade(database_url)
    except CommandError as exc:  # e.g. the database is at a revision this release does not know
        raise MigrationFailed(f"migrate: {exc} (is this reminderd older than the database's schema?)") from None
    except Exception as exc:
        mine = translated(found) if isinstance(found := cause(exc), Exception) else exc
        if isinstance(mine, DatabaseRefused):
            if mine.sqlstate == "42501":
                raise DatabaseMisconfigured(
                    mine.message, setting=setting,
                    hint="migrations need the database's owner, a role that may also create roles",
                ) from None
            hint = f" ({mine.hint})" if mine.hint else ""
            raise MigrationFailed(
                f"a migration failed: {mine.message}{hint} [SQLSTATE {mine.sqlstate}]"
            ) from None
        if isinstance(mine, DatabaseUnavailable):
            raise DatabaseUnavailable(str(mine), reason=f"lost the connection while migrating ({mine})",
                                      setting=setting) from None
        raise
    return Migrated(tuple(applied), head_revision(database_url))


def wait_for_database(
    database_url: str, *, setting: str, wait_s: float, say: Callable[[str], None] = print
) -> None:
    """Return once the database accepts a connection; retry with backoff for up to `wait_s` (at
    boot it may start after us), saying so once and then once per retry."""
    deadline = time.monotonic() + wait_s
    failures = 0
    while True:
        try:
            asyncio.run(_connect_once(database_url, setting))
            return
        except DatabaseUnavailable as exc:
            failures += 1
            delay_s = backoff_s(failures, base_s=0.5, cap_s=10.0, jitter="half")
            if time.monotonic() + delay_s > deadline:
                if failures > 1:
                    exc.reason = f"{exc.reason or exc}; gave up after {_duration(wait_s)}"
                raise
            if failures == 1:
                say(f"reminderd: {exc.one_line()}; retrying for up to {_duration(wait_s)}")
            else:
                say(f"reminderd: still unreachable ({exc.reason or exc}); next try in {delay_s:.1f}s")
            time.sleep(delay_s)


async def _connect_once(database_url: str, setting: str) -> None:
    store = await Store.connect(database_url, max_size=1, setting=setting)
    await store.close()


def _duration(seconds: float) -> str:
    """2m, 90s, 1h 30m."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return " ".join(part for part in parts if part) or f"{seconds:g}s"
