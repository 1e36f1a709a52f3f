"""The one module that talks to PostgreSQL. Each method runs one named query from sql/queries.sql."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as TimeOfDay
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from .jobs import Job
from .outcome import Outcome
from .queries import QUERIES
from .schedule import QuietHours

if TYPE_CHECKING:
    from .arguments import ScheduleRequest

NOTIFY_CHANNEL = "reminderd_due"

# Outcome events as the audit trail (reminderd.events) names them.
AUDIT_EVENTS = {
    "delivered": "fired",
    "retry": "retry_scheduled",
    "dead": "dead_lettered",
    "advanced": "dead_lettered",  # a recurring row's occurrence; the row moves on
    # Held back before any request (reminderd/schedule/timing.py):
    "deferred": "deferred",  # quiet hours
    "holiday_skipped": "holiday_skipped",
    "missed_skipped": "missed_skipped",  # backfill=latest: older missed occurrences passed over
    "expired": "expired",  # too late for the backfill policy
    "finished": "finished",  # past until
}

# Errors that mean "the database is not reachable right now", as opposed to a bug in a query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Release:
    """A claimed job handed back at shutdown; `started` when its HTTP request may have gone out."""

    job: Job
    started: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """A recurring row's next fire_at, or its dead-letter reason when it cannot recur."""

    message_id: int
    seen_fire_at: datetime | None
    next_fire_at: datetime | None
    next_status: str
    last_error: str | None

    @property
    def event(self) -> str:
        """What the audit trail calls this change."""
        if self.next_status in ("dead", "finished"):
            return {"dead": "dead_lettered", "finished": "finished"}[self.next_status]
        return "planned" if self.seen_fire_at is None else "missed_skipped"


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
        prepared statement may outlive a transaction: the statement cache is off."""
        pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=max_size, command_timeout=60,
            statement_cache_size=0 if pgbouncer else 100,
            server_settings={"application_name": "reminderd"},
            reset=_end_transaction,
        )
        return cls(pool)

    def pool_in_use(self) -> float:
        return float(self._pool.get_size() - self._pool.get_idle_size())

    def pool_idle(self) -> float:
        return float(self._pool.get_idle_size())

    async def close(self) -> None:
        await self._pool.close()

    # The claim loop -------------------------------------------------------------------------

    async def claim(
        self, *, lookback_s: float, batch_size: int, lease_s: float, backfill: str = "send",
        max_lateness_s: float = 1800.0,
    ) -> list[Job]:
        """Claim due rows; `backfill` and `max_lateness_s` are the defaults for rows without their own."""
        # The lease as this process's clock sees it, counted from before the query: never later.
        lease_deadline = time.monotonic() + lease_s
        rows = await self._pool.fetch(
            QUERIES["claim"], lookback_s, batch_size, lease_s, backfill, max_lateness_s
        )
        return [Job.from_row(row, lease_deadline) for row in rows]

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        await self._pool.execute(
            QUERIES["record_outcomes"],
            [o.job.id for o in outcomes],
            [o.job.attempt for o in outcomes],
            [o.job.tenant_id for o in outcomes],
            [o.job.webhook_id for o in outcomes],
            [o.job.scheduled_for for o in outcomes],
            [o.result.status_code if o.result else None for o in outcomes],
            [o.result.error if o.result else None for o in outcomes],
            [o.result.duration_ms if o.result else 0 for o in outcomes],
            [o.next_status for o in outcomes],
            [o.next_fire_at for o in outcomes],
            [o.retry_in_s for o in outcomes],
            [o.next_scheduled_for for o in outcomes],
            [o.reset_attempts for o in outcomes],
            [o.delivered for o in outcomes],
            [o.last_error for o in outcomes],
            [AUDIT_EVENTS[o.event] for o in outcomes],
            [o.job.picked_at for o in outcomes],
            [o.result is not None for o in outcomes],
            [o.refund_attempt for o in outcomes],
            [o.ran for o in outcomes],
        )

    async def release(self, releases: Sequence[Release]) -> None:
        await self._pool.execute(
            QUERIES["release"],
            [r.job.id for r in releases],
            [r.job.picked_at for r in releases],
            [r.started for r in releases],
        )

    async def seconds_until_next_due(self, *, lookback_s: float) -> float | None:
        value: float | None = await self._pool.fetchval(QUERIES["seconds_until_next_due"], lookback_s)
        return value

    # Housekeeping ---------------------------------------------------------------------------

    async def reap_expired_leases(self, *, limit: int = 1000) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(QUERIES["reap_expired_leases"], limit))

    async def expire_missed(self, *, lookback_s: float, limit: int = 1000) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(QUERIES["expire_missed"], lookback_s, limit))

    async def recurring_to_plan(
        self, *, lookback_s: float, limit: int = 500, backfill: str = "send", max_lateness_s: float = 1800.0
    ) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(QUERIES["recurring_to_plan"], lookback_s, limit, backfill, max_lateness_s)
        )

    async def plan_recurring(self, plans: Sequence[Plan]) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                QUERIES["plan_recurring"],
                [p.message_id for p in plans],
                [p.seen_fire_at for p in plans],
                [p.next_fire_at for p in plans],
                [p.next_status for p in plans],
                [p.last_error for p in plans],
                [p.event for p in plans],
            )
        )

    async def queue_depth(self) -> tuple[dict[str, int], int]:
        row = await self._pool.fetchrow(QUERIES["queue_depth"])
        return {s: row[s] for s in ("pending", "picked", "paused")}, row["due_not_picked"]

    async def prune_batch(self, *, keep_finished_days: int, keep_dead_days: int, keep_history_days: int
                          ) -> tuple[int, int, int]:
        row = await self._pool.fetchrow(QUERIES["prune"], keep_finished_days, keep_dead_days, keep_history_days)
        return row["messages"], row["deliveries"], row["events"]

    async def schema_revision(self) -> str | None:
        try:
            value: str | None = await self._pool.fetchval(QUERIES["schema_revision"])
        except asyncpg.UndefinedTableError:
            return None
        return value

    # The application's side (CLI) -----------------------------------------------------------

    async def add_tenant(self, tenant_id: str, callback_url: str | None) -> str:
        secret: str = await self._pool.fetchval(QUERIES["add_tenant"], tenant_id, callback_url)
        return secret

    async def schedule(self, request: ScheduleRequest) -> int:
        """Schedule what `reminderd schedule` asked for; the message's id."""
        r = request
        if r.recurrence is None:
            message_id: int = await self._pool.fetchval(
                QUERIES["schedule_one_off"], r.tenant_id, r.ref_id, r.fire_at, r.payload_json,
                r.callback_url, r.timezone, r.category, r.calendar, r.holiday_rule, r.backfill,
                r.max_lateness_s,
            )
        else:
            message_id = await self._pool.fetchval(
                QUERIES["schedule_recurring"], r.tenant_id, r.ref_id, r.recurrence.cron, r.recurrence.rrule,
                r.timezone, r.payload_json, r.callback_url, r.until, r.max_runs, r.category,
                r.calendar, r.holiday_rule, r.backfill, r.max_lateness_s,
            )
        return message_id

    async def set_tenant(
        self, tenant_id: str, *, calendar: str | None, holiday_rule: str | None, quiet: QuietHours | str | None,
        quiet_exempt: list[str] | None,
    ) -> str | None:
        """Change a tenant's holiday and quiet-hour settings ("none" clears calendar or quiet);
        the settings now in force, in words, or None for an unknown tenant."""
        quiet_hours = quiet if isinstance(quiet, QuietHours) else None
        row = await self._pool.fetchrow(
            QUERIES["set_tenant"], tenant_id,
            calendar is not None, None if calendar is None or calendar.lower() == "none" else calendar,
            holiday_rule,
            quiet is not None,
            quiet_hours.start if quiet_hours else None,
            quiet_hours.end if quiet_hours else None,
            quiet_exempt,
        )
        if row is None:
            return None
        quiet_text = f"{row['quiet_start']:%H:%M}-{row['quiet_end']:%H:%M}" if row["quiet_start"] else "none"
        return (
            f"calendar {row['calendar'] or 'none'}, holidays {row['holiday_rule']}, "
            f"quiet hours {quiet_text} (exempt: {', '.join(row['quiet_exempt']) or 'none'})"
        )

    async def add_holiday(self, tenant_id: str, day: date, name: str) -> None:
        await self._pool.execute(QUERIES["add_holiday"], tenant_id, day, name)

    async def remove_holiday(self, tenant_id: str, day: date) -> bool:
        status: str = await self._pool.execute(QUERIES["remove_holiday"], tenant_id, day)
        return status.endswith(" 1")

    async def rotate_secret(self, tenant_id: str, grace_s: float) -> str:
        secret: str = await self._pool.fetchval(QUERIES["rotate_secret"], tenant_id, grace_s)
        return secret

    async def grant_tenant(self, tenant_id: str, role_name: str) -> None:
        """Let `role_name` act for `tenant_id`; ValueError naming what does not exist."""
        if not await self._pool.fetchval(QUERIES["tenant_exists"], tenant_id):
            raise ValueError(f'unknown tenant "{tenant_id}"')
        if not await self._pool.fetchval(QUERIES["role_exists"], role_name):
            raise ValueError(f'no database role "{role_name}" (CREATE ROLE it first)')
        await self._pool.execute(QUERIES["grant_tenant"], tenant_id, role_name)

    async def revoke_tenant(self, tenant_id: str, role_name: str) -> int:
        status: str = await self._pool.execute(QUERIES["revoke_tenant"], tenant_id, role_name)
        return int(status.split()[-1])

    async def cancel(self, tenant_id: str, ref_id: str) -> int:
        cancelled: int = await self._pool.fetchval(QUERIES["cancel"], tenant_id, ref_id)
        return cancelled

    async def status_counts(self) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(QUERIES["status_counts"]))

    async def app_membership(self, role_name: str) -> AppMembership:
        """How `role_name` stands to reminderd_app, whose privileges an app role needs."""
        row = await self._pool.fetchrow(QUERIES["role_uses_app"], role_name)
        if row["inherits"]:
            return "inherits"
        return "member" if row["member"] else "none"

    async def tenants(self) -> list[TenantOverview]:
        return [TenantOverview.from_row(row) for row in await self._pool.fetch(QUERIES["list_tenants"])]


class Listener:
    """A dedicated connection LISTENing for due-soon notifications (a pool connection cannot)."""

    def __init__(self, database_url: str, on_notify: Callable[[str], None]) -> None:
        self._database_url = database_url
        self._on_notify = on_notify
        self._connection: asyncpg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

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


AppMembership = Literal["inherits", "member", "none"]


@dataclass(frozen=True, slots=True)
class TenantOverview:
    """A tenant as `reminderd tenant list` shows it: its settings and its waiting and dead messages."""

    id: str
    callback_url: str | None
    calendar: str | None
    holiday_rule: str
    quiet_start: TimeOfDay | None
    quiet_end: TimeOfDay | None
    paused: bool
    pending: int
    picked: int
    paused_messages: int
    dead: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> TenantOverview:
        return cls(**dict(row.items()))
