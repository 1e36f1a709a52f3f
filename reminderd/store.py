"""The one module that talks to PostgreSQL. Each method runs one named query from sql/queries.sql
and returns frozen dataclasses built by `from_row()`; asyncpg's errors become reminderd's own
(exceptions.py), so nothing else imports asyncpg."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import asyncpg

from .exceptions import ConfigError, DatabaseRefused, DatabaseUnavailable, SchemaMissing
from .jobs import Job, Unplanned
from .lifecycle import Status
from .outcome import Outcome, Plan
from .queries import QUERIES
from .schedule import DEFAULT_BACKFILL, DEFAULT_MAX_LATENESS_S, QuietHours

if TYPE_CHECKING:
    from .arguments import BroadcastRequest, CadenceRequest, ScheduleRequest
    from .phones import ReferenceData

NOTIFY_CHANNEL = "reminderd_due"

P = ParamSpec("P")
T = TypeVar("T")

# "The database is not reachable right now", as opposed to a statement it refused.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,  # a restart storm: waiting fixes it
    TimeoutError,
)
_SCHEMA_MISSING = (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError)
# At connect: waiting cannot fix these, the URL (or the server's pg_hba.conf) must change.
_MISCONFIGURED = (
    asyncpg.ClientConfigurationError,
    asyncpg.InvalidAuthorizationSpecificationError,  # unknown role, no pg_hba.conf entry, bad password
    asyncpg.InvalidCatalogNameError,  # no such database
)


def translated(exc: Exception) -> Exception:
    """reminderd's exception for an asyncpg (or socket) error; any other exception as it is."""
    if isinstance(exc, asyncpg.ClientConfigurationError):  # an InterfaceError, yet no outage
        return ConfigError(f"REMINDERD_DATABASE_URL: {exc}")
    if isinstance(exc, _UNAVAILABLE):
        text = str(exc).splitlines()[0] if str(exc) else ""
        return DatabaseUnavailable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    if isinstance(exc, asyncpg.PostgresError):
        kind = SchemaMissing if isinstance(exc, _SCHEMA_MISSING) else DatabaseRefused
        return kind(exc.message, sqlstate=exc.sqlstate, detail=exc.detail, hint=exc.hint)
    return exc


def _translating(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            mine = translated(exc)
            if mine is exc:
                raise
            raise mine from exc

    return call


# What the queries return -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    """A claimed job handed back at shutdown; `started` when its HTTP request may have gone out."""

    job: Job
    started: bool


@dataclass(frozen=True, slots=True)
class ReapedLease:
    """A row whose lease ran out (its daemon died mid-flight): due again now."""

    id: int
    tenant_id: str
    ref_id: str
    attempt: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ReapedLease:
        return cls(row["id"], row["tenant_id"], row["ref_id"], row["attempts"])


@dataclass(frozen=True, slots=True)
class Expired:
    """A one-off missed beyond the lookback: expired, never sent."""

    id: int
    tenant_id: str
    ref_id: str
    scheduled_for: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Expired:
        return cls(row["id"], row["tenant_id"], row["ref_id"], row["scheduled_for"])


@dataclass(frozen=True, slots=True)
class Planned:
    """A recurring row as planning left it."""

    id: int
    tenant_id: str
    ref_id: str
    status: Status
    fire_at: datetime | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Planned:
        return cls(row["id"], row["tenant_id"], row["ref_id"], Status(row["status"]), row["fire_at"],
                   row["last_error"])


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Live messages by status, database-wide, and how many pending ones are already due."""

    pending: int
    picked: int
    paused: int
    due_not_picked: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QueueDepth:
        return cls(row["pending"], row["picked"], row["paused"], row["due_not_picked"])


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one round of retention pruning deleted."""

    messages: int
    deliveries: int
    events: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Pruned:
        return cls(row["messages"], row["deliveries"], row["events"])

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.messages + other.messages, self.deliveries + other.deliveries,
                      self.events + other.events)


@dataclass(frozen=True, slots=True)
class StatusCount:
    """`reminderd status`: one tenant's messages in one status, and the next due."""

    tenant_id: str
    status: Status
    messages: int
    next_due: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StatusCount:
        return cls(row["tenant_id"], Status(row["status"]), row["messages"], row["next_due"])


@dataclass(frozen=True, slots=True)
class TenantRules:
    """A tenant's holiday and quiet-hour settings, and its audience settings (default timezone,
    broadcast limit, approval threshold); str() says them in words."""

    calendar: str | None
    holiday_rule: str
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    quiet_exempt: tuple[str, ...]
    timezone: str | None = None
    broadcast_limit: int | None = None
    approval_threshold: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantRules:
        return cls(row["calendar"], row["holiday_rule"], row["quiet_start"], row["quiet_end"],
                   tuple(row["quiet_exempt"]), row["timezone"], row["broadcast_limit"],
                       row["approval_threshold"])

    def __str__(self) -> str:
        quiet = f"{self.quiet_start:%H:%M}-{self.quiet_end:%H:%M}" if self.quiet_start else "none"
        said = (
            f"calendar {self.calendar or 'none'}, holidays {self.holiday_rule}, "
            f"quiet hours {quiet} (exempt: {', '.join(self.quiet_exempt) or 'none'})"
        )
        if self.timezone is not None:
            said += f", timezone {self.timezone}"
        if self.broadcast_limit is not None:
            said += f", broadcasts of at most {self.broadcast_limit:,} contacts"
        if self.approval_threshold is not None:
            said += f", approval above {self.approval_threshold:,}"
        return said


AppMembership = Literal["inherits", "member", "none"]


@dataclass(frozen=True, slots=True)
class TenantOverview:
    """A tenant as `reminderd tenant list` shows it: its settings and its waiting and dead messages."""

    id: str
    callback_url: str | None
    calendar: str | None
    holiday_rule: str
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    paused: bool
    pending: int
    picked: int
    paused_messages: int
    dead: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantOverview:
        return cls(**dict(row.items()))


# Audiences (issue 14; docs/audiences.md) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact, and the zone its messages get (`zone`) and why (`zone_source`: contact, phone,
    country, tenant; None when it has none and its tenant has no default)."""

    contact_id: str
    timezone: str | None
    phone: str | None
    country: str | None
    attributes: dict[str, Any]
    zone: str | None
    zone_source: str | None
    audiences: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Contact:
        return cls(row["contact_id"], row["timezone"], row["phone"], row["country"],
                   json.loads(row["attributes"]),
                   row["zone"], row["zone_source"], tuple(row["audiences"]), row["created_at"],
                       row["updated_at"])


@dataclass(frozen=True, slots=True)
class ContactMessage:
    """One of a contact's messages (reminderd.contact_messages): live, or ended recently."""

    id: int
    ref_id: str
    status: Status
    fire_at: datetime | None
    local_fire_at: datetime | None  # on the contact's clock
    timezone: str
    timezone_source: str
    recurrence: str | None
    category: str
    broadcast_id: int | None
    last_event: str | None
    reason: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ContactMessage:
        return cls(row["id"], row["ref_id"], Status(row["status"]), row["fire_at"], row["local_fire_at"],
                   row["timezone"], row["timezone_source"], row["recurrence"], row["category"],
                       row["broadcast_id"],
                   row["last_event"], row["reason"], row["updated_at"])


@dataclass(frozen=True, slots=True)
class AudienceSummary:
    name: str
    members: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AudienceSummary:
        return cls(row["name"], row["members"], row["created_at"])


@dataclass(frozen=True, slots=True)
class ZoneWave:
    """One zone of a broadcast's audience: when its wave fires, and where its contacts' zone came from."""

    timezone: str | None  # None: contacts with no zone (the tenant has no default)
    fire_at: datetime | None
    contacts: int
    from_contact: int
    from_phone: int
    from_country: int
    from_tenant: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ZoneWave:
        return cls(row["timezone"], row["fire_at"], row["contacts"], row["from_contact"], row["from_phone"],
                   row["from_country"], row["from_tenant"])


@dataclass(frozen=True, slots=True)
class BroadcastProgress:
    """A broadcast and its counts, as the reminderd.broadcasts view shows them."""

    id: int
    tenant_id: str
    ref_prefix: str
    audience: str
    local_time: datetime | None
    cron: str | None
    rrule: str | None
    category: str
    approval: str
    created_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    occurrences: int
    staged: int
    waiting: int
    held: int
    sent: int
    failed: int
    expired: int
    cancelled: int
    done: bool
    next_occurrence: datetime | None
    ended_at: datetime | None
    ended_reason: str | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BroadcastProgress:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class StagedOccurrence:
    """One staged wave of a broadcast (a one-off broadcast has one)."""

    occurrence: datetime  # the wall time, read in each contact's zone
    contacts: int
    first_fire_at: datetime | None
    last_fire_at: datetime | None
    staged_at: datetime
    completed_at: datetime | None
    completion_message_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StagedOccurrence:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class CadenceStep:
    """One offset of a cadence: its message, or why it was skipped."""

    ref_id: str
    message_id: int | None
    fire_at: datetime
    local_time: datetime
    skipped: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CadenceStep:
        return cls(row["ref_id"], row["message_id"], row["fire_at"], row["local_time"], row["skipped"])


@dataclass(frozen=True, slots=True)
class RecurringBroadcast:
    """A recurring broadcast the daemon stages, wave by wave; `db_now` is the database's clock."""

    id: int
    tenant_id: str
    ref_prefix: str
    cron: str | None
    rrule: str | None
    until: datetime | None
    next_occurrence: datetime | None  # a wall time; None until planned
    stage_ahead_s: float
    db_now: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RecurringBroadcast:
        return cls(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class CompletedOccurrence:
    """A wave whose rows have all ended; `message_id` its broadcast.completed callback, if asked for."""

    broadcast_id: int
    tenant_id: str
    occurrence: datetime
    message_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CompletedOccurrence:
        return cls(row["broadcast_id"], row["tenant_id"], row["occurrence"], row["message_id"])


# Batch writes pass one array of a composite type (migration 0004); each tuple below is in the
# order of its type's attributes. A type is never altered once released: a new version is added
# beside it, so daemons of the previous release keep working during a rolling upgrade.


def _outcome_v1(o: Outcome) -> tuple[Any, ...]:
    job, result = o.job, o.result
    return (
        job.id, job.picked_at, job.attempt, job.tenant_id, job.webhook_id, job.scheduled_for,
        result is not None,
        result.status_code if result else None, result.error if result else None,
        result.duration_ms if result else 0,
        o.event, o.next_status, o.next_fire_at, o.retry_in_s, o.next_scheduled_for,
        o.reset_attempts, o.refund_attempt, o.ran, o.delivered, o.last_error,
    )


def _plan_v1(p: Plan) -> tuple[Any, ...]:
    return (p.message_id, p.seen_fire_at, p.next_fire_at, p.next_status, p.event, p.last_error)


def _release_v1(r: Release) -> tuple[Any, ...]:
    return (r.job.id, r.job.picked_at, r.started)


async def _end_transaction(connection: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool. Nothing here changes session state
    (no SET, no session advisory lock, no LISTEN, no cursors), so asyncpg's default reset
    (RESET ALL; CLOSE ALL; UNLISTEN *; …: one extra round trip per query) is not needed; a
    transaction left open by a cancelled query is."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, database_url: str, *, max_size: int = 4, pgbouncer: bool = False) -> Store:
        """A pool of at most `max_size` connections. Behind PgBouncer in transaction mode, no
        prepared statement may outlive a transaction: the statement cache is off (the codecs of
        the composite types are cached per connection all the same)."""
        try:
            pool = await asyncpg.create_pool(
                database_url, min_size=1, max_size=max_size, command_timeout=60,
                statement_cache_size=0 if pgbouncer else 100,
                server_settings={"application_name": "reminderd"},
                reset=_end_transaction,
            )
        except _MISCONFIGURED as exc:
            raise ConfigError(f"REMINDERD_DATABASE_URL: {exc}") from None
        except Exception as exc:
            raise translated(exc) from exc
        return cls(pool)

    def pool_in_use(self) -> float:
        return float(self._pool.get_size() - self._pool.get_idle_size())

    def pool_idle(self) -> float:
        return float(self._pool.get_idle_size())

    async def close(self) -> None:
        await self._pool.close()

    # The claim loop -------------------------------------------------------------------------

    @_translating
    async def claim(
        self, *, lookback_s: float, batch_size: int, lease_s: float, backfill: str = DEFAULT_BACKFILL,
        max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    ) -> list[Job]:
        """Claim due rows; `backfill` and `max_lateness_s` are the defaults for rows without their own."""
        # The lease as this process's clock sees it, counted from before the query: never later.
        lease_deadline = time.monotonic() + lease_s
        rows = await self._pool.fetch(
            QUERIES["claim"], lookback_s, batch_size, lease_s, backfill, max_lateness_s
        )
        return [Job.from_row(row, lease_deadline) for row in rows]

    @_translating
    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        await self._pool.execute(QUERIES["record_outcomes"], [_outcome_v1(o) for o in outcomes])

    @_translating
    async def release(self, releases: Sequence[Release]) -> None:
        await self._pool.execute(QUERIES["release"], [_release_v1(r) for r in releases])

    @_translating
    async def seconds_until_next_due(self, *, lookback_s: float) -> float | None:
        value: float | None = await self._pool.fetchval(QUERIES["seconds_until_next_due"], lookback_s)
        return value

    # Housekeeping ---------------------------------------------------------------------------

    @_translating
    async def reap_expired_leases(self, *, limit: int = 1000) -> list[ReapedLease]:
        return [ReapedLease.from_row(r) for r in await self._pool.fetch(QUERIES["reap_expired_leases"], limit)]

    @_translating
    async def expire_missed(self, *, lookback_s: float, limit: int = 1000) -> list[Expired]:
        rows = await self._pool.fetch(QUERIES["expire_missed"], lookback_s, limit)
        return [Expired.from_row(r) for r in rows]

    @_translating
    async def recurring_to_plan(
        self, *, lookback_s: float, limit: int = 500, backfill: str = DEFAULT_BACKFILL,
        max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    ) -> list[Unplanned]:
        rows = await self._pool.fetch(QUERIES["recurring_to_plan"], lookback_s, limit, backfill, max_lateness_s)
        return [Unplanned.from_row(r) for r in rows]

    @_translating
    async def plan_recurring(self, plans: Sequence[Plan]) -> list[Planned]:
        rows = await self._pool.fetch(QUERIES["plan_recurring"], [_plan_v1(p) for p in plans])
        return [Planned.from_row(r) for r in rows]

    @_translating
    async def queue_depth(self) -> QueueDepth:
        return QueueDepth.from_row(await self._pool.fetchrow(QUERIES["queue_depth"]))

    @_translating
    async def prune_batch(self, *, keep_finished_days: int, keep_dead_days: int, keep_history_days: int
                          ) -> Pruned:
        row = await self._pool.fetchrow(QUERIES["prune"], keep_finished_days, keep_dead_days, keep_history_days)
        return Pruned.from_row(row)

    @_translating
    async def schema_revision(self) -> str | None:
        try:
            value: str | None = await self._pool.fetchval(QUERIES["schema_revision"])
        except asyncpg.UndefinedTableError:
            return None
        return value

    # Reference data (reminderd migrate) ------------------------------------------------------

    @_translating
    async def reference_versions(self) -> dict[str, str]:
        """Which library versions the reference tables were built from; empty before the first load."""
        return {row["source"]: row["version"] for row in await self._pool.fetch(QUERIES["reference_versions"])}

    @_translating
    async def load_reference_data(self, data: ReferenceData) -> None:
        """Replace the reference tables with `data`, in one transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(QUERIES["clear_reference_tables"])
            for query, rows in (
                ("load_phone_plans", data.plans), ("load_phone_regions", data.regions),
                ("load_phone_prefixes", data.prefixes), ("load_phone_timezones", data.timezones),
                ("load_countries", data.countries),
            ):
                await connection.execute(QUERIES[query], json.dumps(rows))
            await connection.execute(QUERIES["record_reference_versions"], json.dumps(data.versions))
        await self._pool.execute(QUERIES["analyze_reference_tables"])

    # The application's side (CLI) -----------------------------------------------------------

    @_translating
    async def add_tenant(self, tenant_id: str, callback_url: str | None, timezone: str | None = None) -> str:
        secret: str = await self._pool.fetchval(QUERIES["add_tenant"], tenant_id, callback_url, timezone)
        return secret

    @_translating
    async def schedule(self, request: ScheduleRequest) -> int:
        """Schedule what `reminderd schedule` asked for; the message's id."""
        r = request
        if r.recurrence is None:
            message_id: int = await self._pool.fetchval(
                QUERIES["schedule_one_off"], r.tenant_id, r.ref_id, r.fire_at, r.payload_json,
                r.callback_url, r.timezone, r.category, r.calendar, r.holiday_rule, r.backfill,
                r.max_lateness_s, r.local_time, r.contact_id,
            )
        else:
            message_id = await self._pool.fetchval(
                QUERIES["schedule_recurring"], r.tenant_id, r.ref_id, r.recurrence.cron, r.recurrence.rrule,
                r.timezone, r.payload_json, r.callback_url, r.until, r.max_runs, r.category,
                r.calendar, r.holiday_rule, r.backfill, r.max_lateness_s, r.contact_id,
            )
        return message_id

    @_translating
    async def set_tenant(
        self, tenant_id: str, *, calendar: str | None, holiday_rule: str | None, quiet: QuietHours | str | None,
        quiet_exempt: list[str] | None, timezone: str | None = None,
        broadcast_limit: int | Literal["none"] | None = None,
        approval_threshold: int | Literal["none"] | None = None,
    ) -> TenantRules | None:
        """Change a tenant's settings ("none" clears calendar, quiet hours, timezone, broadcast
        limit or approval threshold; None leaves one alone); the settings now in force, or None for
        an unknown tenant."""
        quiet_hours = quiet if isinstance(quiet, QuietHours) else None
        row = await self._pool.fetchrow(
            QUERIES["set_tenant"], tenant_id,
            calendar is not None, None if calendar is None or calendar.lower() == "none" else calendar,
            holiday_rule,
            quiet is not None,
            quiet_hours.start if quiet_hours else None,
            quiet_hours.end if quiet_hours else None,
            quiet_exempt,
            timezone is not None, None if timezone is None or timezone.lower() == "none" else timezone,
            broadcast_limit is not None, broadcast_limit if isinstance(broadcast_limit, int) else None,
            approval_threshold is not None, approval_threshold if isinstance(approval_threshold, int) else None,
        )
        return None if row is None else TenantRules.from_row(row)

    @_translating
    async def add_holiday(self, tenant_id: str, day: date, name: str) -> None:
        await self._pool.execute(QUERIES["add_holiday"], tenant_id, day, name)

    @_translating
    async def remove_holiday(self, tenant_id: str, day: date) -> bool:
        status: str = await self._pool.execute(QUERIES["remove_holiday"], tenant_id, day)
        return status.endswith(" 1")

    @_translating
    async def rotate_secret(self, tenant_id: str, grace_s: float) -> str:
        secret: str = await self._pool.fetchval(QUERIES["rotate_secret"], tenant_id, grace_s)
        return secret

    @_translating
    async def grant_tenant(self, tenant_id: str, role_name: str) -> None:
        """Let `role_name` act for `tenant_id`; ValueError naming what does not exist."""
        if not await self._pool.fetchval(QUERIES["tenant_exists"], tenant_id):
            raise ValueError(f'unknown tenant "{tenant_id}"')
        if not await self._pool.fetchval(QUERIES["role_exists"], role_name):
            raise ValueError(f'no database role "{role_name}" (CREATE ROLE it first)')
        await self._pool.execute(QUERIES["grant_tenant"], tenant_id, role_name)

    @_translating
    async def revoke_tenant(self, tenant_id: str, role_name: str) -> int:
        status: str = await self._pool.execute(QUERIES["revoke_tenant"], tenant_id, role_name)
        return int(status.split()[-1])

    @_translating
    async def cancel(self, tenant_id: str, ref_id: str) -> int:
        cancelled: int = await self._pool.fetchval(QUERIES["cancel"], tenant_id, ref_id)
        return cancelled

    @_translating
    async def status_counts(self) -> list[StatusCount]:
        return [StatusCount.from_row(r) for r in await self._pool.fetch(QUERIES["status_counts"])]

    @_translating
    async def app_membership(self, role_name: str) -> AppMembership:
        """How `role_name` stands to reminderd_app, whose privileges an app role needs."""
        row = await self._pool.fetchrow(QUERIES["role_uses_app"], role_name)
        if row["inherits"]:
            return "inherits"
        return "member" if row["member"] else "none"

    @_translating
    async def tenants(self) -> list[TenantOverview]:
        return [TenantOverview.from_row(row) for row in await self._pool.fetch(QUERIES["list_tenants"])]


    # Contacts, audiences, broadcasts, cadences (docs/audiences.md) -----------------------------

    @_translating
    async def upsert_contacts(self, tenant_id: str, contacts_json: str) -> int:
        """Add or change contacts (a JSON array, as reminderd.upsert_contacts takes it); how many
        were added or changed. Their zones are resolved by the database."""
        written: int = await self._pool.fetchval(QUERIES["upsert_contacts"], tenant_id, contacts_json)
        return written

    @_translating
    async def delete_contacts(self, tenant_id: str, contact_ids: Sequence[str]) -> int:
        deleted: int = await self._pool.fetchval(QUERIES["delete_contacts"], tenant_id, list(contact_ids))
        return deleted

    @_translating
    async def contact(self, tenant_id: str, contact_id: str) -> Contact | None:
        row = await self._pool.fetchrow(QUERIES["contact"], tenant_id, contact_id)
        return None if row is None else Contact.from_row(row)

    @_translating
    async def contact_messages(self, tenant_id: str, contact_id: str, *, recent_s: float, limit: int = 100
                               ) -> list[ContactMessage]:
        rows = await self._pool.fetch(QUERIES["contact_messages"], tenant_id, contact_id, recent_s, limit)
        return [ContactMessage.from_row(row) for row in rows]

    @_translating
    async def add_to_audience(self, tenant_id: str, audience: str, contact_ids: Sequence[str]) -> int:
        added: int = await self._pool.fetchval(QUERIES["add_to_audience"], tenant_id, audience,
                                               list(contact_ids))
        return added

    @_translating
    async def remove_from_audience(self, tenant_id: str, audience: str, contact_ids: Sequence[str]) -> int:
        removed: int = await self._pool.fetchval(QUERIES["remove_from_audience"], tenant_id, audience,
                                                 list(contact_ids))
        return removed

    @_translating
    async def drop_audience(self, tenant_id: str, audience: str) -> bool:
        return bool(await self._pool.fetchval(QUERIES["drop_audience"], tenant_id, audience))

    @_translating
    async def audiences(self, tenant_id: str) -> list[AudienceSummary]:
        return [AudienceSummary.from_row(row) for row in await self._pool.fetch(QUERIES["audiences"],
                                                                                tenant_id)]

    @_translating
    async def broadcast(self, request: BroadcastRequest) -> int:
        """Save (and for a one-off, stage) a broadcast; its id."""
        r = request
        broadcast_id: int = await self._pool.fetchval(
            QUERIES["broadcast"], r.tenant_id, r.ref_prefix, r.local_time, r.audience.name, r.payload_json,
            r.category, r.audience.contact_ids, r.audience.everyone,
            r.recurrence.cron if r.recurrence else None, r.recurrence.rrule if r.recurrence else None, r.until,
            r.callback_url, r.calendar, r.holiday_rule, r.backfill, r.max_lateness_s, r.notify, r.stage_ahead_s,
            r.actor,
        )
        return broadcast_id

    @_translating
    async def broadcast_preview(self, request: BroadcastRequest, local_time: datetime) -> list[ZoneWave]:
        """What the broadcast would send at `local_time` (a wall time), per zone; nothing is staged."""
        r = request
        rows = await self._pool.fetch(QUERIES["broadcast_preview"], r.tenant_id, local_time, r.audience.name,
                                      r.audience.contact_ids, r.audience.everyone)
        return [ZoneWave.from_row(row) for row in rows]

    @_translating
    async def approve_broadcast(self, tenant_id: str, broadcast_id: int, *, actor: str | None,
                                note: str | None) -> int:
        released: int = await self._pool.fetchval(QUERIES["approve_broadcast"], tenant_id, broadcast_id,
                                                  actor, note)
        return released

    @_translating
    async def reject_broadcast(self, tenant_id: str, broadcast_id: int, *, actor: str | None,
                               note: str | None) -> int:
        cancelled: int = await self._pool.fetchval(QUERIES["reject_broadcast"], tenant_id, broadcast_id,
                                                   actor, note)
        return cancelled

    @_translating
    async def cancel_broadcast(self, tenant_id: str, broadcast_id: int) -> int:
        cancelled: int = await self._pool.fetchval(QUERIES["cancel_broadcast"], tenant_id, broadcast_id)
        return cancelled

    @_translating
    async def broadcasts(self, tenant_id: str, broadcast_id: int | None = None) -> list[BroadcastProgress]:
        rows = await self._pool.fetch(QUERIES["broadcasts"], tenant_id, broadcast_id)
        return [BroadcastProgress.from_row(row) for row in rows]

    @_translating
    async def broadcast_occurrences(self, broadcast_id: int) -> list[StagedOccurrence]:
        rows = await self._pool.fetch(QUERIES["broadcast_occurrences"], broadcast_id)
        return [StagedOccurrence.from_row(row) for row in rows]

    @_translating
    async def schedule_cadence(self, request: CadenceRequest) -> list[CadenceStep]:
        r = request
        rows = await self._pool.fetch(
            QUERIES["schedule_cadence"], r.tenant_id, r.ref_prefix, r.anchor, r.offsets, r.at_local,
                r.contact_id,
            r.payload_json, r.timezone, r.callback_url, r.category,
        )
        return [CadenceStep.from_row(row) for row in rows]

    # The daemon's broadcast services (housekeeping.py)

    @_translating
    async def recurring_broadcasts(self) -> list[RecurringBroadcast]:
        rows = await self._pool.fetch(QUERIES["recurring_broadcasts"])
        return [RecurringBroadcast.from_row(row) for row in rows]

    @_translating
    async def broadcast_zones(self, broadcast_id: int) -> list[str]:
        return [row["timezone"] for row in await self._pool.fetch(QUERIES["broadcast_zones"], broadcast_id)]

    @_translating
    async def plan_broadcast(self, broadcast_id: int, occurrence: datetime) -> bool:
        status: str = await self._pool.execute(QUERIES["plan_broadcast"], broadcast_id, occurrence)
        return status.endswith(" 1")

    @_translating
    async def stage_broadcast(self, broadcast_id: int, occurrence: datetime, following: datetime | None) -> int:
        staged: int = await self._pool.fetchval(QUERIES["stage_broadcast"], broadcast_id, occurrence, following)
        return staged

    @_translating
    async def skip_broadcast_occurrence(self, broadcast_id: int, occurrence: datetime,
                                        following: datetime | None,
                                        reason: str) -> bool:
        status: str = await self._pool.execute(QUERIES["skip_broadcast_occurrence"], broadcast_id, occurrence,
                                               following, reason)
        return status.endswith(" 1")

    @_translating
    async def end_broadcast(self, broadcast_id: int, reason: str) -> None:
        await self._pool.execute(QUERIES["end_broadcast"], broadcast_id, reason)

    @_translating
    async def complete_broadcasts(self) -> list[CompletedOccurrence]:
        rows = await self._pool.fetch(QUERIES["complete_broadcasts"])
        return [CompletedOccurrence.from_row(row) for row in rows]


class Listener:
    """A dedicated connection LISTENing for due-soon notifications (a pool connection cannot)."""

    def __init__(self, database_url: str, on_notify: Callable[[str], None]) -> None:
        self._database_url = database_url
        self._on_notify = on_notify
        self._connection: asyncpg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    @_translating
    async def connect(self) -> None:
        connection = await asyncpg.connect(
            self._database_url, server_settings={"application_name": "reminderd-listen"}
        )
        await connection.add_listener(NOTIFY_CHANNEL, self._notified)
        self._connection = connection

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()
        self._connection = None

