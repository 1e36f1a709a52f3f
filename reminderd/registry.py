"""This daemon as the registry (`reminderd.daemons`) knows it: who it is (Identity), whether the
database has answered it without a break (Contact), and which rows it holds (ClaimBook).

Pure bookkeeping: no database, no clock of its own (times are passed in). The services that act
on it, the heartbeat, the rescuer and the reconciler, are in housekeeping.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from . import __version__
from .jobs import Job
from .settings import Settings

Claim = tuple[int, datetime | None]
"""A claimed row: its message id and the claim's token (picked_at)."""

# Contact is broken when a heartbeat fails, or comes later than this many heartbeat intervals
# after the previous one: the database stalled (or this daemon did) for at least half an interval.
CONTACT_GAP_HEARTBEATS = 1.5


@dataclass(frozen=True, slots=True)
class Identity:
    """This daemon's row in reminderd.daemons: chosen once at start."""

    id: uuid.UUID
    host: str
    pid: int
    version: str
    settings: Mapping[str, object] = field(repr=False)  # its effective settings, secrets masked

    @classmethod
    def of_this_process(cls, settings: Settings) -> Identity:
        return cls(uuid.uuid4(), socket.gethostname(), os.getpid(), __version__, settings.public())

    @property
    def short(self) -> str:
        """The first 8 hex digits of the id, as `reminderd status` shows it."""
        return str(self.id)[:8]


@dataclass
class Contact:
    """Since when (the database's time) the database has answered this daemon's heartbeats
    without a break. The rescuer trusts nothing else: after the database itself stalls, every
    daemon's heartbeat looks old, and none of them is dead."""

    heartbeat_s: float
    _since: datetime | None = None  # the database's time of the first beat of the unbroken run
    _last_ok: float | None = None  # time.monotonic() of the last successful beat
    last_beat_at: datetime | None = None  # the database's time of the last successful beat

    def answered(self, db_time: datetime, now: float) -> None:
        """A heartbeat succeeded at `db_time` (the database's clock), `now` (monotonic)."""
        if self.unbroken_since(now) is None:
            self._since = db_time
        self._last_ok = now
        self.last_beat_at = db_time

    def failed(self) -> None:
        self._since = None
        self._last_ok = None
        self.last_beat_at = None

    def unbroken_since(self, now: float) -> datetime | None:
        """The database's time since which contact is unbroken, or None when it is broken now."""
        if self._last_ok is None or now - self._last_ok > CONTACT_GAP_HEARTBEATS * self.heartbeat_s:
            return None
        return self._since


@dataclass(frozen=True, slots=True)
class Comparison:
    """What the database says this daemon holds, against what it holds in memory."""

    never_received: list[Claim]  # picked by this daemon, unknown here: a claim whose reply was lost
    taken_away: list[Claim]  # held here, no longer picked by this claim: rescued, reaped, cancelled


class ClaimBook:
    """The rows this daemon claimed and is not done with, by message id and claim token.

    The claim loop records each claim under `lock`, so the reconciler, holding the same lock,
    never compares while a claim's reply is on its way. A row is done with once its outcome is
    recorded; one left to its lease (its outcome could not be written, or it was not sent) is
    kept apart: the reconciler leaves it alone. A row taken away before it was sent is revoked:
    the sender skips it.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self._held: dict[int, datetime | None] = {}
        self._left: dict[int, datetime | None] = {}
        self._revoked: set[Claim] = set()
        self.last_claim_at: datetime | None = None  # the database's time of the last claim with rows

    @property
    def holding(self) -> int:
        """Rows claimed and not done with, or left to their lease."""
        return len(self._held) + len(self._left)

    def claimed(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self._held[job.id] = job.picked_at
            if job.picked_at is not None and (self.last_claim_at is None or job.picked_at > self.last_claim_at):
                self.last_claim_at = job.picked_at

    def finished(self, job: Job) -> None:
        """Its outcome is recorded (or it was skipped as revoked)."""
        if self._held.get(job.id, job.picked_at) == job.picked_at:
            self._held.pop(job.id, None)
        self._revoked.discard((job.id, job.picked_at))

    def left_to_lease(self, job: Job) -> None:
        """Done with here, yet still picked in the database: its lease (or a rescue) hands it on."""
        self.finished(job)
        self._left[job.id] = job.picked_at

    @property
    def held(self) -> list[Claim]:
        """The claims not done with (queued, in flight, or their outcome not yet recorded)."""
        return list(self._held.items())

    @property
    def revoked(self) -> frozenset[Claim]:
        """The claims taken away that the sender has not skipped yet."""
        return frozenset(self._revoked)

    def is_revoked(self, job: Job) -> bool:
        return (job.id, job.picked_at) in self._revoked

    def revoke(self, claims: Iterable[Claim]) -> None:
        """Rows taken away from this daemon: the sender skips those it has not started."""
        self._revoked.update(claim for claim in claims if self._held.get(claim[0], ...) == claim[1])

    def compare(self, in_database: Mapping[int, datetime | None]) -> Comparison:
        """`in_database`: the rows the database says this daemon holds (picked_by it), by id.
        Rows left to their lease that the database no longer shows are forgotten."""
        for message_id in [m for m, token in self._left.items() if in_database.get(m, ...) != token]:
            del self._left[message_id]
        never_received = [
            (message_id, token) for message_id, token in in_database.items()
            if self._held.get(message_id, ...) != token and self._left.get(message_id, ...) != token
        ]
        taken_away = [
            (message_id, token) for message_id, token in self._held.items()
            if in_database.get(message_id, ...) != token
        ]
        return Comparison(never_received, taken_away)
