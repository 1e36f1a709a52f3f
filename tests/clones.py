"""Test databases made ahead and dropped behind, in a background thread.

Creating a clone of the migrated template (44 MB, most of it phone-prefix reference data) and
dropping it again takes about a quarter of a second of the server's time per test. Done in the
test's own thread, that was a third of the suite's wall time; done here, it overlaps the tests
that are running: a test takes a clone that is already there and hands it back to be dropped.

Ready clones come first, then drops: a test never waits behind a drop when no clone is ready.
A server that goes away (the tests that stop and restart the cluster) is waited for, up to
`patience` seconds; past that, `take` raises the last error instead of hanging.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import threading
import time

import asyncpg


class Clones:
    def __init__(self, server_url: str, create_suffix: str, ahead: int = 2, patience: float = 120.0):
        self._server_url = server_url
        self._create_suffix = create_suffix  # ' TEMPLATE "…" STRATEGY FILE_COPY'
        self._ahead = ahead
        self._patience = patience
        self._numbers = itertools.count()
        self._ready: collections.deque[str] = collections.deque()
        self._drops: collections.deque[str] = collections.deque()
        self._changed = threading.Condition()
        self._closing = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-database-clones", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The name of a fresh clone, this caller's to use and then to `give_back`."""
        with self._changed:
            while not self._ready:
                if self._failure is not None:
                    raise RuntimeError(f"could not clone the test template: {self._failure}") from self._failure
                self._changed.wait()
            name = self._ready.popleft()
            self._changed.notify_all()
            return name

    def give_back(self, name: str) -> None:
        """Drop this database (any database of the server's) soon, in the background."""
        with self._changed:
            self._drops.append(name)
            self._changed.notify_all()

    def close(self) -> None:
        """Drop what is queued and what was made ahead, then stop."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _next_job(self) -> tuple[str, str] | None:
        with self._changed:
            while True:
                making = self._failure is None and not self._closing
                if making and not self._ready:
                    return "create", self._new_name()
                if self._drops:
                    return "drop", self._drops.popleft()
                if self._closing:
                    return ("drop", self._ready.popleft()) if self._ready else None
                if making and len(self._ready) < self._ahead:
                    return "create", self._new_name()
                self._changed.wait()

    def _new_name(self) -> str:
        return f"reminderd_test_{os.getpid()}_{next(self._numbers)}"

    def _run(self) -> None:
        asyncio.run(self._work())

    async def _work(self) -> None:
        connection: asyncpg.Connection | None = None
        while (job := self._next_job()) is not None:
            kind, name = job
            statement = (
                f'CREATE DATABASE "{name}"{self._create_suffix}'
                if kind == "create"
                else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )
            connection, error = await self._execute(connection, statement)
            if kind == "create":
                with self._changed:
                    if error is None:
                        self._ready.append(name)
                    else:
                        self._failure = error
                    self._changed.notify_all()
            # a drop that keeps failing leaves a database behind, not a failure
        if connection is not None:
            await connection.close()

    async def _execute(
        self, connection: asyncpg.Connection | None, statement: str
    ) -> tuple[asyncpg.Connection | None, BaseException | None]:
        """Run `statement`, reconnecting while the server restarts, for up to `patience` seconds:
        the connection to go on with, and the last error if it never went through."""
        deadline = time.monotonic() + self._patience
        while True:
            try:
                if connection is None or connection.is_closed():
                    connection = await asyncpg.connect(self._server_url)
                await connection.execute(statement)
                return connection, None
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                if connection is not None:
                    connection.terminate()
                    connection = None
                if isinstance(error, asyncpg.DuplicateDatabaseError):
                    return None, None  # made before the connection was lost: it is there
                if time.monotonic() > deadline:
                    return None, error
                await asyncio.sleep(0.2)  # the server is restarting: wait for it to answer again
