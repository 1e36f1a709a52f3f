"""The one module that talks to PostgreSQL. Each method runs one named query from sql/queries.sql
and returns frozen dataclasses built by `from_row()`; asyncpg's errors become reminderd's own
(exceptions.py), so nothing else imports asyncpg."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import re
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import asyncpg

from . import copybinary
from .breaker import BreakerPolicy, Change, EndpointHealth, Observation, observe
from .exceptions import ConfigError, DatabaseMisconfigured, DatabaseRefused, DatabaseUnavailable, SchemaMissing
from .guard import describe
from .jobs import Job, Unplanned
from .lifecycle import Status
from .outcome import Outcome, Plan
from .queries import QUERIES
from .retry import backoff_s
from .schedule import DEFAULT_BACKFILL, DEFAULT_MAX_LATENESS_S, QuietHours

# The rows of the command line, the HTTP API, the audiences (rows.py) and the dashboard
# (dashboard_rows.py) are imported by the methods that return them: `reminderd run` never builds
# their classes (tests/unit/test_startup.py).
if TYPE_CHECKING:
    from .arguments import BroadcastRequest, CadenceRequest
    from .contact_files import ContactRow
    from .dashboard_rows import (
        Attempt,
        AuditEntry,
        BroadcastWave,
        Bucket,
        FeedCursor,
        FeedEntry,
        HourSends,
        LatenessCount,
        MessageLine,
        MessageStory,
        Requeued,
        SessionKey,
        SignOut,
        TenantCounts,
        TenantFires,
        TenantRulesView,
    )
    from .phones import ReferenceData
    from .registry import Identity
    from .rows import (
        ApiKey,
        ApiKeyInfo,
        AudienceSummary,
        BroadcastDetail,
        BroadcastProgress,
        CadenceStep,
        Contact,
        ContactMessage,
        DaemonStatus,
        DeliveryView,
        DueNow,
        EndpointLimits,
        EventView,
        ItemScheduled,
        MessageRef,
        MessageView,
        StagedOccurrence,
        StatusCount,
        StoredAnswer,
        TenantCalendar,
        TenantLimits,
        TenantOverview,
        TenantRules,
        TenantStats,
        TenantView,
        ZoneWave,
    )
    from .validation import ScheduleRequest

NOTIFY_CHANNEL = "reminderd_due"
FEED_CHANNEL = "reminderd_feed"  # the ids of the fires a statement recorded (migration 0011)
# The daemon's bound on every database call (acquiring a connection included). Shorter than
# systemd's WatchdogSec (30 s) with room for the claim loop's three calls in a row, so the
# watchdog only ever restarts a daemon that is stuck for another reason (a blocked event loop).
QUERY_DEADLINE_S = 8.0
CLOSE_DEADLINE_S = 5.0
NO_LIMIT = 2**31 - 1  # an endpoint's default max_in_flight when the caller gives none
# How the pool's sessions plan (PgBouncer refuses this at connect: docs/operations.md). The claim
# is one statement of many small steps: at a million due rows its estimated cost passes
# jit_above_cost, and compiling it takes seconds where running it takes milliseconds (make bench,
# (15c)).
DAEMON_SESSION = {"jit": "off"}
# With REMINDERD_SYNCHRONOUS_COMMIT=0 the daemon's own claims and outcomes do not wait for the WAL
# flush: after a PostgreSQL crash (not the daemon's), the last of them (at most 3 times
# wal_writer_delay, 0.6 s by default) are lost and redone: rows claimed go back to pending or are
# handed back, callbacks sent are sent again with the same webhook-id. Messages the application
# writes keep its own connection's setting.
UNFLUSHED_COMMITS = {"synchronous_commit": "off"}

P = ParamSpec("P")
T = TypeVar("T")

# "The database cannot take this call right now; the same call may succeed later" (it is
# restarting, a connection was lost, it failed over), as opposed to a statement it refused for
# what it says: unavailable() tells them apart, so a write is retried through an outage and only
# a real refusal drops it.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and asyncpg's "connection was closed"
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    # A session terminated mid-call (pg_terminate_backend, a PostgreSQL or PgBouncer restart)
    # can leave asyncpg's protocol in a state it did not expect (asyncpg 0.32: "cannot switch
    # to state 11; another operation (2) is in progress"); the pool replaces the connection.
    asyncpg.InternalClientError,
)
# Those of the server's refusals that say "not now" rather than "not this".
_UNAVAILABLE_SQLSTATES = frozenset({
    "57P01",  # admin_shutdown: a fast shutdown, or the session terminated
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: starting up, or in recovery
    "57P05",  # idle_session_timeout: the session was closed
    "53300",  # too_many_connections: a restart storm, waiting fixes it
    "25006",  # read_only_sql_transaction: failed over to a node not yet promoted
    "40001",  # serialization_failure (and a hot standby's recovery conflict): retry the transaction
    "40P01",  # deadlock_detected: one side was rolled back, retry it
    "40003",  # statement_completion_unknown
})
# An InterfaceError that is no outage: a value the query cannot take, a URL that cannot work.
_NOT_UNAVAILABLE = (asyncpg.DataError, asyncpg.ClientConfigurationError)


def unavailable(exc: BaseException) -> bool:
    """True when the database could not take a call for a reason that passes (a lost
    connection, a restart, a failover, a conflict between transactions): retry it. False for
    anything it refused for its content, and for errors that are not the database's."""
    if isinstance(exc, _NOT_UNAVAILABLE):
        return False
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    return isinstance(exc, _UNAVAILABLE)


_SCHEMA_MISSING = (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError)
# At connect: waiting cannot fix these, the URL (or the server's pg_hba.conf) must change.
_MISCONFIGURED = (
    asyncpg.ClientConfigurationError,
    asyncpg.InvalidAuthorizationSpecificationError,  # unknown role, no pg_hba.conf entry, bad password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.InsufficientPrivilegeError,  # no CONNECT privilege on the database
)
_SAID = {  # errno at connect, in words
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "no route to the host",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ECONNRESET: "the connection was reset",
    errno.ENOENT: "no server socket there",
}


def connect_error(exc: BaseException, database_url: str, setting: str) -> Exception:
    """reminderd's exception for a failed connection to `database_url` (read from `setting`): a
    DatabaseMisconfigured naming the problem in a sentence when the URL must change, else a
    DatabaseUnavailable saying why the server could not be reached and where."""
    hosts = _hosts(database_url)
    where = ", ".join(f"{host}:{port}" for host, port in hosts)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(exc, _MISCONFIGURED):
        return DatabaseMisconfigured(exc.message, setting=setting, hint=_first_line(exc.hint))
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _REFUSED_SETTING:
        # asyncpg sends the query parameters it does not know itself to the server as settings
        # (?connect_timeout=10, libpq's, is one): the server refused one by name or by value.
        return DatabaseMisconfigured(
            exc.message, setting=setting, hint=_first_line(exc.hint) or (
                "a query parameter asyncpg does not know is sent to the server as a setting: remove it"
                if exc.sqlstate == "42704" else None),
        )
    if isinstance(exc, ValueError | ArithmeticError | LookupError):  # asyncpg could not read the URL
        said = _unsecret(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, database_url)
        return DatabaseMisconfigured(f"asyncpg cannot read the URL ({said})", setting=setting)
    if isinstance(exc, FileNotFoundError | PermissionError) and (named := _missing_ssl_file(database_url)):
        return DatabaseMisconfigured(named, setting=setting)
    if isinstance(exc, asyncpg.ClientConfigurationError):  # an InterfaceError, yet no outage
        problem = str(exc).splitlines()[0]
        return DatabaseMisconfigured(problem, setting=setting, hint=_first_line(getattr(exc, "hint", None)))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DatabaseMisconfigured(
            f"the server's certificate is not trusted ({exc.verify_message})", setting=setting,
            hint="set sslrootcert to the CA that signed it, or sslmode=require to encrypt without verifying",
        )
    if isinstance(exc, ssl.SSLError):
        return DatabaseMisconfigured(f"SSL failed: {exc.reason or exc}", setting=setting)
    if isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc):
        return DatabaseMisconfigured(
            f"the server at {where} does not accept SSL, which the URL's sslmode asks for", setting=setting,
            hint="remove sslmode, or enable ssl on the server",
        )
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            names = " or ".join(f'"{host}"' for host, _ in hosts)
            return DatabaseMisconfigured(f"unknown host {names}: the name does not resolve", setting=setting)
        return DatabaseUnavailable(_described(exc), reason=f"cannot resolve the host name ({exc.strerror})",
                                   where=where, setting=setting)
    mine = translated(exc) if isinstance(exc, Exception) else exc
    if isinstance(mine, DatabaseUnavailable):
        return DatabaseUnavailable(str(mine), reason=_reason(exc), where=where, setting=setting)
    return mine if isinstance(mine, Exception) else DatabaseUnavailable(_described(exc))


# What a server says at connect of a setting the URL's query gave it: no such parameter (42704),
# a value it cannot take (22023), one only a restart sets (55P02), one only the server's file sets
# (55P02 too) or a superuser (42501, with the privileges above).
_REFUSED_SETTING = frozenset({"42704", "22023", "55P02"})
_SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


def _unsecret(text: str, database_url: str) -> str:
    """`text` without the URL's password (as written, decoded, or cut at an @ as asyncpg cuts it)
    or a secret parameter's value, wherever one stands apart from letters and digits."""
    from urllib.parse import parse_qsl, unquote, urlsplit  # here: the rest of the store parses no URL

    password = database_url.partition("://")[2].partition("/")[0].rpartition("@")[0].partition(":")[2]
    secrets = {password, *password.split("@")}
    with contextlib.suppress(ValueError):
        secrets |= {value for name, value in parse_qsl(urlsplit(database_url).query)
                    if name.lower() in ("password", "sslpassword")}
    for secret in sorted(secrets | {unquote(secret) for secret in secrets}, key=len, reverse=True):
        if secret:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def _missing_ssl_file(database_url: str) -> str | None:
    """The URL's sslrootcert, sslcert, sslkey or sslcrl that cannot be read, said so: asyncpg's
    FileNotFoundError names no file."""
    import os.path
    from urllib.parse import parse_qsl, urlsplit

    with contextlib.suppress(ValueError):
        for name, path in parse_qsl(urlsplit(database_url).query):
            if name in _SSL_FILES and not os.access(path, os.R_OK):
                return f"{name} {path}: {'permission denied' if os.path.exists(path) else 'no such file'}"
    return None


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in words: "connection refused", "timed out"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    codes = [exc.errno] if isinstance(exc, OSError) and exc.errno else []
    if isinstance(exc, OSError) and not codes:  # asyncpg tried several addresses: "Multiple exceptions: …"
        codes = [int(code) for code in _ERRNO.findall(str(exc))]
    for code in codes:
        if code in _SAID:
            return _SAID[code]
    return _described(exc)


def _hosts(database_url: str) -> list[tuple[str, str]]:
    """The (host, port) pairs a URL names, for messages: [("127.0.0.1", "5432")]."""
    netloc = database_url.partition("://")[2].partition("/")[0].partition("?")[0].rpartition("@")[2]
    hosts = []
    for host in netloc.split(",") if netloc else [""]:
        name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        hosts.append((name, port) if colon else (host or "localhost", "5432"))
    return hosts


def _first_line(text: str | None) -> str | None:
    """A server's HINT as a clause: its first line, lower-case first, no full stop."""
    if not text or not text.strip():
        return None
    line = text.strip().splitlines()[0].rstrip(".")
    return line[:1].lower() + line[1:]


def _described(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_ERRNO = re.compile(r"\[Errno (\d+)\]")


def translated(exc: Exception) -> Exception:
    """reminderd's exception for an asyncpg (or socket) error; any other exception as it is."""
    if isinstance(exc, asyncpg.ClientConfigurationError):  # an InterfaceError, yet no outage
        return ConfigError(f"REMINDERD_DATABASE_URL: {exc}")
    if unavailable(exc):
        return DatabaseUnavailable(_described(exc))
    if isinstance(exc, asyncpg.PostgresError):
        kind = SchemaMissing if isinstance(exc, _SCHEMA_MISSING) else DatabaseRefused
        # exc.message is the server's; one asyncpg raises itself (a value it cannot send) has none
        return kind(exc.message or str(exc), sqlstate=exc.sqlstate, detail=exc.detail, hint=exc.hint,
                    constraint=getattr(exc, "constraint_name", None), column=getattr(exc, "column_name", None))
    return exc


def cause(exc: BaseException) -> BaseException:
    """The asyncpg or socket error under a library's wrapping (SQLAlchemy's DBAPIError keeps it
    as the cause of `.orig`), or `exc` itself: what translated() and connect_error() read."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (asyncpg.PostgresError, *_UNAVAILABLE)):
            return current
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
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


class _RolledBack(Exception):
    """Raised in a savepoint to undo it: a dry run's real call (Store.broadcast_dry_run)."""


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
class DatabaseDefaults:
    """The defaults the database checks new rows with (reminderd.config), for rows without their
    own backfill policy and lateness: they should be the daemon's."""

    backfill: str | None
    max_lateness_s: float | None
    lookback_s: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DatabaseDefaults:
        return cls(row["backfill"], row["max_lateness_s"], row["lookback_s"])


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat: the database's time, and whether the daemon's row had to be inserted (its
    first beat, or another daemon had declared it dead and deleted the row)."""

    at: datetime
    started_at: datetime
    inserted: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Beat:
        return cls(row["at"], row["started_at"], row["inserted"])


@dataclass(frozen=True, slots=True)
class Held:
    """A row the database says a daemon holds (picked by it), and its claim token."""

    id: int
    picked_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Held:
        return cls(row["id"], row["picked_at"])


@dataclass(frozen=True, slots=True)
class HandedBack:
    """A picked row handed back: pending again, due now."""

    id: int
    tenant_id: str
    ref_id: str
    attempt: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HandedBack:
        return cls(row["id"], row["tenant_id"], row["ref_id"], row["attempts"])


@dataclass(frozen=True, slots=True)
class Rescued:
    """A dead daemon whose row was deleted, and one of the rows it held, now pending again
    (`message_id` None when it held none)."""

    daemon_id: uuid.UUID
    host: str
    pid: int
    heartbeat_at: datetime
    message_id: int | None
    tenant_id: str | None
    ref_id: str | None
    attempt: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Rescued:
        return cls(row["daemon_id"], row["host"], row["pid"], row["heartbeat_at"], row["id"], row["tenant_id"],
                   row["ref_id"], row["attempts"])


AppMembership = Literal["inherits", "member", "none"]


@dataclass(frozen=True, slots=True)
class HeldBack:
    """Due rows of one tenant a claim held back, and why: `tenant_per_second`, `tenant_per_hour`,
    `endpoint_per_second`, `endpoint_in_flight`, `circuit_open`, `circuit_half_open`,
    `endpoint_disabled`, `busy` (another daemon was granting that budget) or `batch_full`. `marked`
    rows were newly marked 'held' (last_error, the audit trail); look again in `retry_in_s`."""

    tenant_id: str
    reason: str
    rows: int
    marked: int
    retry_in_s: float | None

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> HeldBack:
        return cls(item["tenant"], item["reason"], item["rows"], item["marked"], item["retry_in_s"])


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A claimed row the daemon cannot make a job of (`reason` names the column and its value):
    dead-lettered (`Store.dead_letter_unreadable`) instead of wedging every claim."""

    id: int
    tenant_id: str
    ref_id: str
    picked_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim took, what it held back, and where its skip scan over the tenants stopped
    (the next claim starts there)."""

    jobs: list[Job]
    held: tuple[HeldBack, ...] = ()
    scanned_to: str | None = None
    unreadable: tuple[Unreadable, ...] = ()  # claimed, yet no job: to dead-letter

    @property
    def retry_in_s(self) -> float | None:
        """When to claim again for the rows held back (None: nothing held that will free up)."""
        waits = [h.retry_in_s for h in self.held if h.retry_in_s is not None]
        return max(0.0, min(waits)) if waits else None


@dataclass(frozen=True, slots=True)
class ContactSend:
    """A send to reserve under a frequency cap."""

    job: Job

    def as_v1(self) -> tuple[Any, ...]:
        job, cap = self.job, self.job.cap
        assert cap is not None
        return (job.webhook_id, job.tenant_id, job.recipient, job.category, cap.max_messages, cap.per_s)


@dataclass(frozen=True, slots=True)
class Reservation:
    webhook_id: str
    granted: bool
    frees_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Reservation:
        return cls(row["webhook_id"], row["granted"], row["frees_at"])


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A tenant endpoint whose circuit opened or closed, or that was disabled (`paused` rows)."""

    health: EndpointHealth
    change: Change
    paused: int = 0


@dataclass(frozen=True, slots=True)
class EndpointState:
    """A tenant endpoint that is not simply healthy, or an endpoint with limits (tenant_id None)."""

    tenant_id: str | None
    endpoint: str
    state: str  # failing, open, half_open, disabled, closed; limited for an endpoint's limits row
    consecutive_failures: int | None
    failing_since: datetime | None
    last_error: str | None
    circuit_open_until: datetime | None
    disabled_reason: str | None
    max_in_flight: int | None
    max_per_second: int | None
    in_flight: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EndpointState:
        return cls(row["tenant_id"], row["endpoint"], row["state"], row["consecutive_failures"],
                   row["failing_since"], row["last_error"], row["circuit_open_until"], row["disabled_reason"],
                   row["max_in_flight"], row["max_per_second"], row["in_flight"])


@dataclass(frozen=True, slots=True)
class UsageDay:
    """reminderd.usage_daily: one tenant's usage on one UTC day."""

    tenant_id: str
    day: date
    scheduled: int
    attempted: int
    delivered: int
    dead: int
    expired: int
    held: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UsageDay:
        return cls(**dict(row.items()))


# Audiences (issue 14; docs/audiences.md) ------------------------------------------------------




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


def _endpoint_health_v1(h: EndpointHealth) -> tuple[Any, ...]:
    return (h.tenant_id, h.endpoint, h.consecutive_failures, h.failing_since, h.last_failure_at, h.last_error,
            h.last_success_at, h.circuit_open_until, h.circuit_opens, h.disabled_at, h.disabled_reason)


def _schedule_item_v2(r: ScheduleRequest) -> tuple[Any, ...]:
    recurrence = r.recurrence
    return (
        r.ref_id, r.fire_at, None if r.fire_in_s is None else timedelta(seconds=r.fire_in_s), r.local_time,
        recurrence.cron if recurrence else None, recurrence.rrule if recurrence else None, r.timezone,
        r.payload_json, r.callback_url, r.category, r.max_attempts, r.calendar, r.holiday_rule, r.backfill,
        None if r.max_lateness_s is None else timedelta(seconds=r.max_lateness_s), r.until, r.max_runs,
        r.first_fire_at, r.contact_id,
    )


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """Encoded COPY data as the asynchronous source asyncpg's copy_to_table reads."""
    for chunk in chunks:
        yield chunk


async def _end_transaction(connection: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool. Nothing here changes session state
    (no SET, no session advisory lock, no LISTEN, no cursors), so asyncpg's default reset
    (RESET ALL; CLOSE ALL; UNLISTEN *; …: one extra round trip per query) is not needed; a
    transaction left open by a cancelled query is."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class DatabaseHealth:
    """Whether the database answers: the last call's fate, for /healthz."""

    def __init__(self) -> None:
        self.failing_since: float | None = None  # time.monotonic() of the first failure in a row
        self.last_error: str | None = None

    def answered(self) -> None:
        self.failing_since = None
        self.last_error = None

    def failed(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = describe(exc)


class BoundedPool:
    """The asyncpg pool with every call bounded by a deadline, acquiring the connection included.

    On the deadline the connection is terminated at once. asyncpg on its own would send the
    server a cancel request and keep the connection until the server acknowledged it: a hung
    server (stopped, or its host frozen) answers neither the query nor the cancel, and the pool
    would stay short of that connection. A fresh one is made on the next acquire.
    """

    def __init__(self, pool: asyncpg.Pool, deadline_s: float | None) -> None:
        self.pool = pool
        self.deadline_s = deadline_s
        self.health = DatabaseHealth()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._call("fetch", query, args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> Any:  # an asyncpg.Record, or None
        return await self._call("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._call("fetchval", query, args)

    async def execute(self, query: str, *args: Any) -> str:
        status: str = await self._call("execute", query, args)
        return status

    async def _call(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        try:
            async with asyncio.timeout(self.deadline_s):
                connection = await self.pool.acquire()
                try:
                    result = await getattr(connection, method)(query, *args)
                except asyncio.CancelledError:  # the deadline: the query's fate is unknown
                    connection.terminate()
                    raise
                finally:
                    await self.pool.release(connection)  # nothing to do once terminated
        except Exception as exc:
            if unavailable(exc):
                self.health.failed(exc)
            elif isinstance(exc, asyncpg.PostgresError):  # refused: the database answers all the same
                self.health.answered()
            raise
        self.health.answered()
        return result

    async def close(self) -> None:
        """Close gracefully, or, when the server does not answer, drop the connections."""
        try:
            async with asyncio.timeout(CLOSE_DEADLINE_S):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()


class Store:
    def __init__(
        self, pool: asyncpg.Pool | asyncpg.Connection, *, query_deadline_s: float | None = None
    ) -> None:
        # A pool, every call bounded by query_deadline_s; or one connection inside a transaction
        # (transaction()).
        self._pool: BoundedPool | asyncpg.Connection = (
            BoundedPool(pool, query_deadline_s) if isinstance(pool, asyncpg.Pool) else pool
        )

    @classmethod
    async def connect(
        cls, database_url: str, *, max_size: int = 4, pgbouncer: bool = False,
        setting: str = "REMINDERD_DATABASE_URL", application_name: str = "reminderd",
        query_deadline_s: float | None = None, synchronous_commit: bool = True,
    ) -> Store:
        """A pool of at most `max_size` connections. Behind PgBouncer in transaction mode, no
        prepared statement may outlive a transaction: the statement cache is off (the codecs of
        the composite types are cached per connection all the same). A failure names `setting`,
        where the URL came from (connect_error). Sessions plan as DAEMON_SESSION says. With
        `query_deadline_s` (the daemon: QUERY_DEADLINE_S), every call fails within it when the
        server hangs. Without `synchronous_commit` (the daemon's pool, REMINDERD_SYNCHRONOUS_COMMIT)
        a commit returns before its WAL is flushed (docs/operations.md, "Durability")."""
        session = {} if pgbouncer else {**DAEMON_SESSION, **({} if synchronous_commit else UNFLUSHED_COMMITS)}
        try:
            pool = await asyncpg.create_pool(
                database_url, min_size=1, max_size=max_size, command_timeout=60,
                timeout=query_deadline_s or 60,  # connecting: a server that accepts and hangs
                statement_cache_size=0 if pgbouncer else 100,
                server_settings={"application_name": application_name, **session},
                reset=_end_transaction,
            )
        except Exception as exc:
            raise connect_error(exc, database_url, setting) from None
        return cls(pool, query_deadline_s=query_deadline_s)

    @property
    def _bounded(self) -> BoundedPool:
        if not isinstance(self._pool, BoundedPool):
            raise TypeError("a Store inside a transaction (Store.transaction()) has no pool of its own")
        return self._pool

    @property
    def health(self) -> DatabaseHealth:
        return self._bounded.health

    @property
    def in_transaction(self) -> bool:
        """A Store of transaction(): its calls are one transaction."""
        return not isinstance(self._pool, BoundedPool)

    @classmethod
    async def connect_retrying(
        cls, database_url: str, stop: asyncio.Event, *, max_size: int = 4, pgbouncer: bool = False,
        application_name: str = "reminderd", query_deadline_s: float | None = None,
        synchronous_commit: bool = True, on_unreachable: Callable[[DatabaseUnavailable, float], None],
    ) -> Store | None:
        """connect(), retried with backoff while the database is unreachable (it may start after
        the daemon or the API server); `on_unreachable(error, retry_in_s)` says so each time. None
        once `stop` is set. ConfigError (sslmode=bogus, a wrong password) at once: waiting cannot
        fix it."""
        failures = 0
        while not stop.is_set():
            try:
                return await cls.connect(database_url, max_size=max_size, pgbouncer=pgbouncer,
                                         application_name=application_name, query_deadline_s=query_deadline_s,
                                         synchronous_commit=synchronous_commit)
            except DatabaseUnavailable as exc:
                failures += 1
                delay_s = backoff_s(failures, base_s=0.5, cap_s=30.0, jitter="half")
                on_unreachable(exc, delay_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
        return None

    def pool_in_use(self) -> float:
        pool = self._bounded.pool
        return float(pool.get_size() - pool.get_idle_size())

    def pool_idle(self) -> float:
        return float(self._bounded.pool.get_idle_size())

    async def close(self) -> None:
        await self._bounded.close()

    # The claim loop -------------------------------------------------------------------------

    async def claim(
        self, *, lookback_s: float, batch_size: int, lease_s: float, backfill: str = DEFAULT_BACKFILL,
        max_lateness_s: float = DEFAULT_MAX_LATENESS_S, picked_by: uuid.UUID | None = None,
    ) -> list[Job]:
        """Claim due rows for the daemon `picked_by`; `backfill` and `max_lateness_s` are the
        defaults for rows without their own."""
        claim = await self.claim_due(lookback_s=lookback_s, batch_size=batch_size, lease_s=lease_s,
                                     backfill=backfill, max_lateness_s=max_lateness_s, picked_by=picked_by)
        return claim.jobs

    @_translating
    async def claim_due(
        self, *, lookback_s: float, batch_size: int, lease_s: float, backfill: str = DEFAULT_BACKFILL,
        max_lateness_s: float = DEFAULT_MAX_LATENESS_S, default_max_in_flight: int = NO_LIMIT,
        scanned_to: str | None = None, bounded: bool = True, picked_by: uuid.UUID | None = None,
    ) -> Claim:
        """Claim due rows fairly and within the limits (queries.sql, claim) for the daemon
        `picked_by` (stamped on each row: a dead daemon's rows are rescued by it): the jobs, what
        was held back, and where the scan over tenants stopped (pass it as `scanned_to` next time).
        `default_max_in_flight` is the max_in_flight of an endpoint without its own; by default
        none: each daemon's REMINDERD_CONCURRENCY bounds its own callbacks, and only endpoints with
        a max_in_flight of their own are counted across daemons (the counting costs each claim a
        lock and an update of the endpoint's row). With `bounded` False (no limit anywhere, no
        circuit open: `sending_is_bounded`), the lean claim_fair runs instead."""
        # The lease as this process's clock sees it, counted from before the query: never later.
        lease_deadline = time.monotonic() + lease_s
        rows = await self._pool.fetch(
            QUERIES["claim" if bounded else "claim_fair"], lookback_s, batch_size, lease_s, backfill,
            max_lateness_s, default_max_in_flight, scanned_to, picked_by,
        )
        first = rows[0]
        held = tuple(HeldBack.from_json(item) for item in json.loads(first["held"] or "[]"))
        jobs: list[Job] = []
        unreadable: list[Unreadable] = []
        for row in rows:  # one row that cannot be read costs that row only
            if row["id"] is None:
                continue
            reason = row["unreadable"]
            if reason is None:
                try:
                    jobs.append(Job.from_row(row, lease_deadline))
                    continue
                except Exception as exc:
                    reason = f"cannot be read into a job: {describe(exc)}"
            unreadable.append(Unreadable(row["id"], row["tenant_id"], row["ref_id"], row["picked_at"], reason))
        return Claim(jobs, held, first["scanned_to"], tuple(unreadable))

    @_translating
    async def dead_letter_unreadable(self, row: Unreadable) -> bool:
        """Dead-letter a claimed row that could not be read (queries.sql); False when it was no
        longer picked by that claim."""
        moved = await self._pool.fetchval(QUERIES["dead_letter_unreadable"], row.id, row.picked_at, row.reason)
        return moved is not None

    @_translating
    async def locked_messages(self, message_ids: Sequence[int]) -> set[int]:
        """Of `message_ids`, those another transaction holds locked now (nothing waits)."""
        return {row["id"] for row in await self._pool.fetch(QUERIES["locked_messages"], list(message_ids))}

    @_translating
    async def extend_leases(self, claims: Sequence[tuple[int, datetime]], lease_s: float) -> set[int]:
        """Give the rows of `claims` (id, picked_at) still picked by them a lease of `lease_s` from
        now (queries.sql, extend_leases); the ids of those extended (a row another transaction
        holds locked is skipped: nothing waits)."""
        rows = await self._pool.fetch(
            QUERIES["extend_leases"], [c[0] for c in claims], [c[1] for c in claims], lease_s)
        return {row["id"] for row in rows}

    @_translating
    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> set[int]:
        """Write a batch of outcomes; the ids of the rows they moved on. The others were no
        longer picked by the same claim (rescued, lease expired, cancelled): not applied."""
        rows = await self._pool.fetch(QUERIES["record_outcomes"], [_outcome_v1(o) for o in outcomes])
        return {row["id"] for row in rows}

    @_translating
    async def dead_letter_refused(self, dead: Outcome) -> bool:
        """Dead-letter the row of an outcome whose record was refused, the row alone (queries.sql);
        False when it was no longer picked by that claim."""
        job = dead.job
        moved = await self._pool.fetchval(
            QUERIES["dead_letter_refused"], job.id, job.picked_at, dead.last_error, dead.delivered)
        return moved is not None

    @_translating
    async def outcomes_written(self, outcomes: Sequence[Outcome]) -> set[int]:
        """Of outcomes a repeated write did not apply, the ids of those an earlier write had."""
        rows = await self._pool.fetch(QUERIES["outcomes_written"], [_outcome_v1(o) for o in outcomes])
        return {row["id"] for row in rows}

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

    # The daemon registry -------------------------------------------------------------------

    @_translating
    async def heartbeat(
        self, identity: Identity, *, started_at: datetime | None, stopping: bool, last_claim_at: datetime | None
    ) -> Beat:
        """Register the daemon, or refresh its heartbeat (and say whether it is stopping)."""
        row = await self._pool.fetchrow(
            QUERIES["heartbeat"], identity.id, identity.host, identity.pid, identity.version, started_at,
            json.dumps(identity.settings), stopping, last_claim_at,
        )
        return Beat.from_row(row)

    @_translating
    async def deregister(self, daemon_id: uuid.UUID) -> None:
        await self._pool.execute(QUERIES["deregister"], daemon_id)

    @_translating
    async def held_by(self, daemon_id: uuid.UUID) -> list[Held]:
        """The rows the database says `daemon_id` holds: picked by it."""
        return [Held.from_row(row) for row in await self._pool.fetch(QUERIES["held_by"], daemon_id)]

    @_translating
    async def hand_back(self, rows: Sequence[Held], reason: str) -> list[HandedBack]:
        """Picked rows never attempted (a claim whose reply was lost): pending again, due now,
        their attempt given back, if they are still picked by the same claim."""
        batch = [(row.id, row.picked_at, False) for row in rows]
        return [HandedBack.from_row(r) for r in await self._pool.fetch(QUERIES["hand_back"], batch, reason)]

    @_translating
    async def rescue_dead_daemons(
        self, daemon_id: uuid.UUID, *, dead_after_s: float, heartbeat_s: float, contact_since: datetime,
        last_beat_at: datetime,
    ) -> list[Rescued]:
        """As daemon `daemon_id`, in unbroken contact with the database since `contact_since`, its
        last heartbeat at `last_beat_at`: return the rows of dead daemons to pending, and delete
        those daemons' rows."""
        rows = await self._pool.fetch(
            QUERIES["rescue_dead_daemons"], daemon_id, dead_after_s, heartbeat_s, contact_since, last_beat_at
        )
        return [Rescued.from_row(row) for row in rows]

    @_translating
    async def daemons(self) -> list[DaemonStatus]:
        """Every registered daemon: alive, stopping or dead, what it holds, its last claim."""
        from .rows import DaemonStatus

        return [DaemonStatus.from_row(row) for row in await self._pool.fetch(QUERIES["daemons"])]

    @_translating
    async def prune_counts(self) -> int:
        """The dashboard's aggregates past their use (reminderd.prune_counts); rows deleted."""
        deleted: int = await self._pool.fetchval(QUERIES["prune_counts"])
        return deleted

    @_translating
    async def schema_revision(self) -> str | None:
        try:
            value: str | None = await self._pool.fetchval(QUERIES["schema_revision"])
        except asyncpg.UndefinedTableError:
            return None
        return value

    @_translating
    async def database_defaults(self) -> DatabaseDefaults:
        return DatabaseDefaults.from_row(await self._pool.fetchrow(QUERIES["database_defaults"]))

    # Reference data (reminderd migrate) ------------------------------------------------------

    @_translating
    async def reference_versions(self) -> dict[str, str]:
        """Which library versions the reference tables were built from; empty before the first load."""
        return {row["source"]: row["version"] for row in await self._pool.fetch(QUERIES["reference_versions"])}

    @_translating
    async def load_reference_data(self, data: ReferenceData) -> None:
        """Replace the reference tables with `data`, in one transaction, then ANALYZE them.

        Each table is truncated and filled by one binary COPY with FREEZE, its rows written frozen
        and all-visible (no hint bits for the first reader to set, no vacuum pass to come);
        phone_prefixes' two indexes are built after its 203,000 rows are in. The rows are encoded
        before the transaction starts (reminderd/copybinary.py, by the columns' types in the
        catalog), so the tables are locked only while PostgreSQL reads them. PostgreSQL's CPU for
        a fresh database, ANALYZE's 0.11 s included: 0.72 s with copy_records_to_table into the
        indexed tables, 0.49-0.53 s so (issue 13's peers cluster, medians of 3)."""
        types = {(row["table_name"], row["column_name"]): row["type_name"]
                 for row in await self._pool.fetch(QUERIES["reference_column_types"], list(data.rows))}
        encoded = []
        for table, rows in data.rows.items():
            columns = data.columns(table)
            encoded.append((table, columns, list(copybinary.stream(rows, [types[table, c] for c in columns]))))
        async with self.transaction() as store:
            connection = store._pool
            assert isinstance(connection, asyncpg.Connection)  # inside a transaction: one connection
            await connection.execute(QUERIES["clear_reference_tables"])
            await connection.execute(QUERIES["drop_reference_indexes"])
            for table, columns, chunks in encoded:
                await connection.copy_to_table(
                    table, schema_name="reminderd", columns=columns, source=_chunks(chunks),
                    format="binary", freeze=True,
                )
            await connection.execute(QUERIES["build_reference_indexes"])
            await connection.execute(QUERIES["record_reference_versions"], json.dumps(data.versions))
        await self._pool.execute(QUERIES["analyze_reference_tables"])

    @_translating
    async def has_holiday_calendars(self) -> bool:
        """Whether the schema is recent enough to list holiday calendars (migration 0035)."""
        found: bool = await self._pool.fetchval(QUERIES["has_holiday_calendars"])
        return found

    @_translating
    async def load_holiday_calendars(self, version: str, codes: list[str]) -> None:
        """Replace reminderd.holiday_calendars with `codes` (the holidays package's, at `version`)."""
        async with self.transaction() as store:
            await store._pool.execute(QUERIES["clear_holiday_calendars"])
            await store._pool.execute(QUERIES["load_holiday_calendars"], codes, version)

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
                r.calendar, r.holiday_rule, r.backfill, r.max_lateness_s, r.first_fire_at, r.contact_id,
            )
        return message_id

    @_translating
    async def tenant_calendar(self, tenant_id: str, *, from_day: date) -> TenantCalendar | None:
        """The tenant's holiday settings and days off from `from_day` on; None for a tenant that
        does not exist (or that this role does not act for)."""
        from .rows import TenantCalendar

        row = await self._pool.fetchrow(QUERIES["tenant_calendar"], tenant_id, from_day)
        return None if row is None else TenantCalendar.from_row(row)

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
        from .rows import TenantRules

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
    async def tenant_exists(self, tenant_id: str) -> bool:
        """Whether `tenant_id` is a tenant this role sees (row-level security hides the others)."""
        exists: bool = await self._pool.fetchval(QUERIES["tenant_exists"], tenant_id)
        return exists

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
        from .rows import StatusCount

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
        from .rows import TenantOverview

        return [TenantOverview.from_row(row) for row in await self._pool.fetch(QUERIES["list_tenants"])]

    # The dashboard (sql/dashboard.sql): `tenant_id` is the tenant in view, None for every one --

    @_translating
    async def dashboard_session(self, prefix: str, nonce: str) -> SessionKey | None:
        """The key a session signed in with (by its prefix) and whether the session (by its nonce)
        was signed out, in one statement: every dashboard request asks."""
        from .dashboard_rows import SessionKey

        row = await self._pool.fetchrow(QUERIES["dashboard_session_key"], prefix, nonce)
        return None if row is None else SessionKey.from_row(row)

    @_translating
    async def dashboard_sign_out(self, nonce: str, key_id: int, expires_at: datetime) -> SignOut:
        """Sign a session out until it expires anyway; sign-outs long expired are deleted with it."""
        from .dashboard_rows import SignOut

        return SignOut.from_row(await self._pool.fetchrow(QUERIES["dashboard_sign_out"], nonce, key_id,
                                                          expires_at))

    def _scoped(self, name: str, tenant_id: str | None) -> str:
        """The statement `name` for every tenant (`name_all`) or for one (`name_tenant`, $1)."""
        return QUERIES[f"{name}_all" if tenant_id is None else f"{name}_tenant"]

    @_translating
    async def tenant_rules(self, tenant_id: str | None) -> list[TenantRulesView]:
        from .dashboard_rows import TenantRulesView

        rows = await self._pool.fetch(QUERIES["dashboard_tenants"], tenant_id)
        return [TenantRulesView.from_row(r) for r in rows]

    @_translating
    async def database_now(self) -> datetime:
        now: datetime = await self._pool.fetchval(QUERIES["database_now"])
        return now

    @_translating
    async def overview_counts(self, tenant_id: str | None) -> list[TenantCounts]:
        """Per tenant: its live and dead messages by status, and its backlog."""
        from .dashboard_rows import TenantCounts

        args = () if tenant_id is None else (tenant_id,)
        backlog = self._pool.fetch(self._scoped("overview_backlog", tenant_id), *args)
        if tenant_id is None:  # the big count, in two halves on two connections at once
            tenants = [row["id"] for row in await self._pool.fetch(QUERIES["tenant_ids"])]
            half = (len(tenants) + 1) // 2
            parts = [self._pool.fetch(QUERIES["overview_counts_of"], part)
                     for part in (tenants[:half], tenants[half:])]
        else:
            parts = [self._pool.fetch(QUERIES["overview_counts_tenant"], tenant_id)]
        awaiting = self._pool.fetch(self._scoped("overview_awaiting", tenant_id), *args)
        *by_status, backlog_rows, awaiting_rows = await asyncio.gather(*parts, backlog, awaiting)
        counts: dict[str, dict[str, Any]] = {}
        for row in (r for rows in by_status for r in rows):
            counts.setdefault(row["tenant_id"], {})[row["status"]] = row["messages"]
        for row in backlog_rows:
            counts.setdefault(row["tenant_id"], {}).update(due=row["due"], oldest_due=row["oldest_due"])
        for row in awaiting_rows:
            counts.setdefault(row["tenant_id"], {}).update(awaiting_approval=row["messages"],
                                                           awaiting_broadcasts=row["broadcasts"])
        return [TenantCounts.from_row({"tenant_id": tenant, **values})
                for tenant, values in sorted(counts.items())]

    @_translating
    async def overview_fires(self, tenant_id: str | None) -> list[TenantFires]:
        from .dashboard_rows import TenantFires

        args = () if tenant_id is None else (tenant_id,)
        rows = await self._pool.fetch(self._scoped("overview_fires", tenant_id), *args)
        return [TenantFires.from_row(r) for r in rows]

    @_translating
    async def overview_lateness(self, tenant_id: str | None) -> list[LatenessCount]:
        from .dashboard_rows import LatenessCount

        args = () if tenant_id is None else (tenant_id,)
        rows = await self._pool.fetch(self._scoped("overview_lateness", tenant_id), *args)
        return [LatenessCount.from_row(r) for r in rows]

    @_translating
    async def lateness_bounds_ms(self) -> tuple[float, ...]:
        return tuple(await self._pool.fetchval(QUERIES["lateness_bounds_ms"]))

    @_translating
    async def upcoming(self, tenant_id: str | None, *, start: datetime, end: datetime, unit: str,
                       timezone: str) -> list[Bucket]:
        """Pending messages by `unit` ('hour' or 'minute' on `timezone`'s clock), fire_at in [start, end)."""
        from .dashboard_rows import Bucket

        args = (start, end, unit, timezone) + (() if tenant_id is None else (tenant_id,))
        return [Bucket.from_row(r) for r in await self._pool.fetch(self._scoped("upcoming", tenant_id), *args)]

    @_translating
    async def upcoming_messages(self, tenant_id: str | None, *, start: datetime, end: datetime,
                                limit: int) -> list[MessageLine]:
        from .dashboard_rows import MessageLine

        args = (start, end, limit) + (() if tenant_id is None else (tenant_id,))
        rows = await self._pool.fetch(self._scoped("upcoming_messages", tenant_id), *args)
        return [MessageLine.from_row(r) for r in rows]

    @_translating
    async def next_timezone(self, tenant_id: str) -> str | None:
        timezone: str | None = await self._pool.fetchval(QUERIES["upcoming_timezone"], tenant_id)
        return timezone

    @_translating
    async def tenant_holidays_between(self, tenant_id: str, first: date, last: date) -> list[tuple[date, str]]:
        rows = await self._pool.fetch(QUERIES["tenant_holidays_between"], tenant_id, first, last)
        return [(r["day"], r["name"]) for r in rows]

    @_translating
    async def feed_recent(
        self, tenant_id: str | None, *, after: FeedCursor | None = None, limit: int = 1000,
        kinds: Sequence[str] | None = None, ref_range: tuple[str, str | None] = ("", None),
        look_back: int | None = None,
    ) -> list[FeedEntry]:
        """The newest `limit` fires past the cursor `after` (default: from the start), newest first,
        of those `kinds` (default: every fire) and refs in `ref_range`, found among the newest
        `look_back` fires of events and of deliveries each (default: `limit`, for a feed that
        filters by nothing but the tenant)."""
        from .dashboard_rows import FEED_START, FIRES, FeedEntry

        after = FEED_START if after is None else after
        kinds = FIRES if kinds is None else kinds
        args: tuple[Any, ...] = (after.event_id, after.delivery_id, limit, list(kinds), *ref_range,
                                 look_back or limit)
        if tenant_id is not None:
            args += (tenant_id,)
        rows = await self._pool.fetch(self._scoped("feed_recent", tenant_id), *args)
        return [FeedEntry.from_row(r) for r in rows]

    @_translating
    async def feed_newest(self) -> FeedCursor:
        """The cursor of a feed that has every fire recorded so far."""
        from .dashboard_rows import FeedCursor

        return FeedCursor.from_row(await self._pool.fetchrow(QUERIES["feed_newest"]))

    @_translating
    async def feed_entries(self, event_ids: Sequence[int], delivery_ids: Sequence[int]) -> list[FeedEntry]:
        """The fires among those events and deliveries (a NOTIFY named them), each table's in order."""
        from .dashboard_rows import FeedEntry

        rows = await self._pool.fetch(QUERIES["feed_entries"], list(event_ids), list(delivery_ids))
        return [FeedEntry.from_row(r) for r in rows]

    @_translating
    async def message_by_id(self, tenant_id: str | None, message_id: int) -> MessageLine | None:
        from .dashboard_rows import MessageLine

        row = await self._pool.fetchrow(QUERIES["search_by_id"], tenant_id, message_id)
        return None if row is None else MessageLine.from_row(row)

    @_translating
    async def messages_by_ref(self, tenant_id: str | None, ref_range: tuple[str, str], *, limit: int
                              ) -> list[MessageLine]:
        from .dashboard_rows import MessageLine

        args = (*ref_range, limit) + (() if tenant_id is None else (tenant_id,))
        rows = await self._pool.fetch(self._scoped("search_by_ref", tenant_id), *args)
        return [MessageLine.from_row(r) for r in rows]

    @_translating
    async def message_story(self, tenant_id: str | None, message_id: int, *, backfill: str = DEFAULT_BACKFILL,
                            max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
                            ) -> tuple[MessageStory, list[Attempt], list[AuditEntry]] | None:
        """One message in view with its attempts and its audit trail; None when there is no such
        message, or it is another tenant's."""
        from .dashboard_rows import Attempt, AuditEntry, MessageStory

        row = await self._pool.fetchrow(QUERIES["dashboard_message"], tenant_id, message_id, backfill,
                                        max_lateness_s)
        if row is None:
            return None
        story = MessageStory.from_row(row)
        # The message's own tenant's history only: the trail outlives a deleted message, and its id
        # may have been given to another tenant's row since.
        attempts = await self._pool.fetch(QUERIES["dashboard_deliveries"], message_id, story.tenant_id)
        events = await self._pool.fetch(QUERIES["dashboard_trail"], message_id, story.tenant_id)
        return (story, [Attempt.from_row(r) for r in attempts], [AuditEntry.from_row(r) for r in events])

    @_translating
    async def dead_letters(
        self, tenant_id: str | None, *, min_age_s: float, max_age_s: float, error: str | None,
        before: tuple[datetime, int], limit: int,
    ) -> list[MessageLine]:
        """Newest first, below the cursor `before` = (dead since, id); up to `limit` + 1 rows."""
        from .dashboard_rows import MessageLine

        rows = await self._pool.fetch(QUERIES["dead_letters"], tenant_id, min_age_s, max_age_s, error,
                                      before[0], before[1], limit)
        return [MessageLine.from_row(r) for r in rows]

    @_translating
    async def dead_letters_count(self, tenant_id: str | None, *, min_age_s: float, max_age_s: float,
                                 error: str | None) -> int:
        count: int = await self._pool.fetchval(QUERIES["dead_letters_count"], tenant_id, min_age_s,
                                               max_age_s, error)
        return count

    @_translating
    async def dead_letters_selected(self, tenant_id: str | None, message_ids: Sequence[int]
                                    ) -> list[MessageLine]:
        from .dashboard_rows import MessageLine

        rows = await self._pool.fetch(QUERIES["dead_letters_selected"], tenant_id, list(message_ids))
        return [MessageLine.from_row(r) for r in rows]

    async def _acting(self, on_behalf_of: str, query: str, *args: Any) -> Any:
        """Run `query` in a transaction whose audit events say whom it was done for."""
        async with self.transaction() as tx:
            await tx.act_for(on_behalf_of)
            return await tx._pool.fetchval(QUERIES[query], *args)

    async def _acting_row(self, on_behalf_of: str, query: str, *args: Any) -> asyncpg.Record:
        """`_acting`, for a query answering one row."""
        async with self.transaction() as tx:
            await tx.act_for(on_behalf_of)
            row = await tx._pool.fetchrow(QUERIES[query], *args)
            assert row is not None
            return row

    @_translating
    async def act_for(self, on_behalf_of: str) -> None:
        """Inside a transaction (transaction()): the audit events written in the rest of it say
        whom they were done for (events.on_behalf_of, migration 0011)."""
        if isinstance(self._pool, BoundedPool):
            raise TypeError("act_for() needs a transaction (Store.transaction()): it lasts until its end")
        await self._pool.execute(QUERIES["act_for"], on_behalf_of)

    @_translating
    async def requeue_dead(self, tenant_id: str | None, message_ids: Sequence[int], *, on_behalf_of: str
                           ) -> Requeued:
        from .dashboard_rows import Requeued

        return Requeued.from_row(
            await self._acting_row(on_behalf_of, "requeue_dead_ids", tenant_id, list(message_ids)))

    @_translating
    async def requeue_dead_matching(self, tenant_id: str | None, *, min_age_s: float, max_age_s: float,
                                    error: str | None, limit: int, on_behalf_of: str,
                                    upto: tuple[datetime, int] | None = None) -> Requeued:
        """Requeue what the filter matches, at most `limit`, taken after leaving out the one-offs
        that died delivered (counted apart, up to `limit`); with `upto` (dead_letters_mark's), none
        newer."""
        from .dashboard_rows import Requeued

        at, message_id = upto if upto is not None else (None, None)
        return Requeued.from_row(await self._acting_row(on_behalf_of, "requeue_dead_matching", tenant_id,
                                                        min_age_s, max_age_s, error, limit, at, message_id))

    @_translating
    async def dead_letters_mark(self, tenant_id: str | None, *, min_age_s: float, max_age_s: float,
                                error: str | None, upto: tuple[datetime, int] | None = None
                                ) -> tuple[int, tuple[datetime, int] | None]:
        """How many dead letters the filter matches (none newer than `upto`), and the newest."""
        at, message_id = upto if upto is not None else (None, None)
        row = await self._pool.fetchrow(QUERIES["dead_letters_mark"], tenant_id, min_age_s, max_age_s, error,
                                        at, message_id)
        assert row is not None
        newest = None if row["newest_id"] is None else (row["newest_at"], row["newest_id"])
        return row["matching"], newest

    @_translating
    async def send_now_as(self, tenant_id: str, ref_id: str, *, on_behalf_of: str) -> int | None:
        """reminderd.send_now: the id of the message that goes out (None: nothing live)."""
        message_id: int | None = await self._acting(on_behalf_of, "dashboard_send_now", tenant_id, ref_id)
        return message_id

    @_translating
    async def pause_as(self, tenant_id: str, ref_id: str, *, on_behalf_of: str) -> int:
        paused: int = await self._acting(on_behalf_of, "dashboard_pause", tenant_id, ref_id)
        return paused

    @_translating
    async def resume_as(self, tenant_id: str, ref_id: str, *, on_behalf_of: str) -> int:
        resumed: int = await self._acting(on_behalf_of, "dashboard_resume", tenant_id, ref_id)
        return resumed

    @_translating
    async def cancel_as(self, tenant_id: str, message_id: int, *, on_behalf_of: str) -> int:
        cancelled: int = await self._acting(on_behalf_of, "dashboard_cancel", tenant_id, message_id)
        return cancelled

    @_translating
    async def dashboard_broadcasts(self, tenant_id: str | None, *, before: int, limit: int,
                                   awaiting_only: bool = False) -> list[BroadcastProgress]:
        """Broadcasts with their progress, newest first, ids below `before`; up to `limit` + 1."""
        from .rows import BroadcastProgress

        args = (before, limit, awaiting_only) + (() if tenant_id is None else (tenant_id,))
        rows = await self._pool.fetch(self._scoped("dashboard_broadcasts", tenant_id), *args)
        return [BroadcastProgress.from_row(r) for r in rows]

    @_translating
    async def dashboard_broadcast(self, tenant_id: str | None, broadcast_id: int) -> BroadcastDetail | None:
        """One broadcast in view; None when there is none, or it is another tenant's."""
        from .rows import BroadcastDetail

        row = await self._pool.fetchrow(QUERIES["dashboard_broadcast"], tenant_id, broadcast_id)
        return None if row is None else BroadcastDetail.from_row(row)

    @_translating
    async def broadcast_waves(self, broadcast_id: int) -> list[BroadcastWave]:
        """A broadcast's waves, newest first (the last 50), each with its progress."""
        from .dashboard_rows import BroadcastWave

        rows = await self._pool.fetch(QUERIES["dashboard_broadcast_waves"], broadcast_id)
        return [BroadcastWave.from_row(r) for r in rows]

    @_translating
    async def awaiting_hours(self, broadcast_ids: Sequence[int]) -> list[HourSends]:
        """What these broadcasts' rows awaiting approval would send, per UTC hour."""
        from .dashboard_rows import HourSends

        rows = await self._pool.fetch(QUERIES["dashboard_awaiting_hours"], list(broadcast_ids))
        return [HourSends.from_row(r) for r in rows]

    @_translating
    async def approve_broadcast_as(self, tenant_id: str, broadcast_id: int, *, on_behalf_of: str,
                                   note: str | None) -> int:
        """reminderd.approve_broadcast with `on_behalf_of` as the actor (the key signed in): how
        many rows became pending."""
        released: int = await self._acting(on_behalf_of, "approve_broadcast", tenant_id, broadcast_id,
                                           on_behalf_of, note)
        return released

    @_translating
    async def reject_broadcast_as(self, tenant_id: str, broadcast_id: int, *, on_behalf_of: str,
                                  note: str | None) -> int:
        cancelled: int = await self._acting(on_behalf_of, "reject_broadcast", tenant_id, broadcast_id,
                                            on_behalf_of, note)
        return cancelled

    @_translating
    async def cancel_broadcast_as(self, tenant_id: str, broadcast_id: int, *, on_behalf_of: str) -> int:
        cancelled: int = await self._acting(on_behalf_of, "cancel_broadcast", tenant_id, broadcast_id)
        return cancelled
    # Fair and bounded sending ----------------------------------------------------------------

    @_translating
    async def sending_is_bounded(self) -> bool:
        """Whether any tenant or endpoint has a limit, or a tenant endpoint's circuit is not closed."""
        bounded: bool = await self._pool.fetchval(QUERIES["bounded_sending"])
        return bounded

    @_translating
    async def reserve_contact_sends(self, sends: Sequence[ContactSend]) -> dict[str, Reservation]:
        """Reserve sends under their frequency caps, by webhook-id."""
        rows = await self._pool.fetch(QUERIES["reserve_contact_sends"], [send.as_v1() for send in sends])
        return {row["webhook_id"]: Reservation.from_row(row) for row in rows}

    @_translating
    async def update_endpoint_health(
        self, observations: Sequence[Observation], policy: BreakerPolicy
    ) -> list[HealthChange]:
        """Apply what a batch of attempts said to their tenant endpoints' health, in one
        transaction holding those rows; disabling one pauses its rows. The changes."""
        if not observations:
            return []
        tenants = [o.tenant_id for o in observations]
        endpoints = [o.endpoint for o in observations]
        seen = {(o.tenant_id, o.endpoint): o for o in observations}
        changes: list[HealthChange] = []
        async with self.transaction() as tx:  # bounded, in the daemon, by its query deadline
            connection = tx._pool
            await connection.execute(QUERIES["add_endpoint_health"], tenants, endpoints)
            rows = await connection.fetch(QUERIES["lock_endpoint_health"], tenants, endpoints)
            written = []
            for row in rows:
                before = EndpointHealth.from_row(row)
                observed = seen[(before.tenant_id, before.endpoint)]
                after, change = observe(before, observed, row["db_now"], policy)
                if after != before:
                    written.append(after)
                if change is not None:
                    changes.append(HealthChange(after, change))
            if written:
                await connection.execute(QUERIES["write_endpoint_health"],
                                         [_endpoint_health_v1(h) for h in written])
            for index, item in enumerate(changes):
                if item.change == "disabled":
                    paused: int = await connection.fetchval(
                        QUERIES["disable_endpoint"], item.health.tenant_id, item.health.endpoint,
                        item.health.disabled_reason)
                    changes[index] = HealthChange(item.health, item.change, paused)
        return changes

    @_translating
    async def enable_endpoint(self, tenant_id: str, endpoint: str | None) -> int:
        resumed: int = await self._pool.fetchval(QUERIES["enable_endpoint"], tenant_id, endpoint)
        return resumed

    @_translating
    async def endpoint_states(self) -> list[EndpointState]:
        return [EndpointState.from_row(row) for row in await self._pool.fetch(QUERIES["endpoint_states"])]

    @_translating
    async def set_endpoint(self, endpoint: str, *, max_in_flight: int | str | None,
                           max_per_second: int | str | None) -> EndpointLimits:
        """Set an endpoint's limits: a number, "none" to clear, None to keep."""
        from .rows import EndpointLimits

        row = await self._pool.fetchrow(
            QUERIES["set_endpoint"], endpoint, max_in_flight is not None, _limit(max_in_flight),
            max_per_second is not None, _limit(max_per_second),
        )
        return EndpointLimits.from_row(row)

    @_translating
    async def set_tenant_limits(
        self, tenant_id: str, *, max_per_second: int | str | None, max_per_hour: int | str | None,
        policy: str | None, caps: Sequence[tuple[str, int | None, float | None]] = (),
    ) -> TenantLimits | None:
        """Set a tenant's sending limits ("none" clears, None keeps) and frequency caps
        ((category, max, per_s); max None removes the cap); the limits now in force, or None for an
        unknown tenant."""
        from .rows import TenantLimits

        async with self.transaction() as tx:
            connection = tx._pool
            row = await connection.fetchrow(
                QUERIES["set_tenant_limits"], tenant_id, max_per_second is not None, _limit(max_per_second),
                max_per_hour is not None, _limit(max_per_hour), policy,
            )
            if row is None:
                return None
            for category, max_messages, per_s in caps:
                if max_messages is None:
                    await connection.execute(QUERIES["remove_frequency_cap"], tenant_id, category)
                else:
                    await connection.execute(QUERIES["set_frequency_cap"], tenant_id, category, max_messages,
                                             per_s)
            caps_now = await connection.fetch(QUERIES["frequency_caps"], tenant_id)
        return TenantLimits(row["max_per_second"], row["max_per_hour"], row["frequency_cap_policy"],
                            tuple((c["category"], c["max_messages"], c["per_s"]) for c in caps_now))

    @_translating
    async def fold_audience_member_counts(self) -> int:
        """Each list's appended member-count changes folded into one (migration 0034); the lists folded."""
        folded: int = await self._pool.fetchval(QUERIES["fold_audience_member_counts"])
        return folded

    @_translating
    async def roll_up_usage(self, *, limit: int = 10_000) -> int:
        folded: int = await self._pool.fetchval(QUERIES["roll_up_usage"], limit)
        return folded

    @_translating
    async def usage(self, tenant_id: str, first_day: date, last_day: date) -> list[UsageDay]:
        rows = await self._pool.fetch(QUERIES["usage"], tenant_id, first_day, last_day)
        return [UsageDay.from_row(row) for row in rows]

    @_translating
    async def usage_today(self) -> list[UsageDay]:
        return [UsageDay.from_row(row) for row in await self._pool.fetch(QUERIES["usage_today"])]

    @_translating
    async def prune_contact_sends(self, *, limit: int = 1000) -> int:
        status: str = await self._pool.execute(QUERIES["prune_contact_sends"], limit)
        return int(status.split()[-1])

    # The HTTP API's side (reminderd serve, reminderd api-key) --------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        """A Store on one connection inside a transaction: committed when the block ends, rolled
        back when it raises. Inside one already, that one. With a query deadline (the daemon's),
        the whole transaction is bounded by it, acquiring the connection included; on the
        deadline the connection is terminated (as BoundedPool does for one statement) and
        DatabaseUnavailable raised."""
        if not isinstance(self._pool, BoundedPool):  # already in one: the same transaction
            yield self
            return
        bounded = self._pool
        pool = bounded.pool
        try:
            async with asyncio.timeout(bounded.deadline_s):
                connection = await pool.acquire()
                try:
                    transaction = connection.transaction()
                    await transaction.start()
                    try:
                        yield Store(connection)
                    except asyncio.CancelledError:  # the deadline: the transaction's fate is unknown
                        connection.terminate()
                        raise
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await transaction.rollback()
                        raise
                    try:
                        await transaction.commit()
                    except asyncio.CancelledError:
                        connection.terminate()
                        raise
                finally:
                    await pool.release(connection)  # nothing to do once terminated
        except Exception as exc:
            if unavailable(exc):
                bounded.health.failed(exc)
            elif isinstance(exc, asyncpg.PostgresError):
                bounded.health.answered()
            else:
                raise
            raise translated(exc) from exc

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Store]:
        """Inside transaction(): a savepoint, so that an error in the block undoes the block only
        and the transaction goes on (a batch refused, then written again without what was refused)."""
        if isinstance(self._pool, BoundedPool):
            raise TypeError("savepoint() needs a transaction (Store.transaction())")
        try:
            async with self._pool.transaction():  # nested in the transaction: SAVEPOINT
                yield self
        except asyncpg.PostgresError as exc:
            raise translated(exc) from exc

    @_translating
    async def api_key(self, prefix: str) -> ApiKey | None:
        from .rows import ApiKey

        row = await self._pool.fetchrow(QUERIES["api_key_by_prefix"], prefix)
        return None if row is None else ApiKey.from_row(row)

    @_translating
    async def api_keys_used(self, key_ids: Sequence[int]) -> None:
        await self._pool.execute(QUERIES["api_keys_used"], list(key_ids))

    @_translating
    async def create_api_key(self, prefix: str, key_hash: bytes, tenant_id: str | None, name: str,
                             scopes: Sequence[str]) -> ApiKeyInfo:
        from .rows import ApiKeyInfo

        if tenant_id is not None and not await self._pool.fetchval(QUERIES["tenant_exists"], tenant_id):
            raise ValueError(f'unknown tenant "{tenant_id}"')
        row = await self._pool.fetchrow(QUERIES["create_api_key"], prefix, key_hash, tenant_id, name,
                                        list(scopes))
        return ApiKeyInfo.from_row(row)

    @_translating
    async def api_keys(self, tenant_id: str | None) -> list[ApiKeyInfo]:
        from .rows import ApiKeyInfo

        return [ApiKeyInfo.from_row(r) for r in await self._pool.fetch(QUERIES["list_api_keys"], tenant_id)]

    @_translating
    async def revoke_api_key(self, prefix: str) -> ApiKeyInfo | None:
        from .rows import ApiKeyInfo

        row = await self._pool.fetchrow(QUERIES["revoke_api_key"], prefix)
        return None if row is None else ApiKeyInfo.from_row(row)

    @_translating
    async def idempotency_lock(self, tenant_id: str, key: str) -> bool:
        """Inside transaction(): False while another request with this key runs."""
        locked: bool = await self._pool.fetchval(QUERIES["idempotency_lock"], tenant_id, key)
        return locked

    @_translating
    async def idempotency_answer(self, tenant_id: str, key: str) -> StoredAnswer | None:
        from .rows import StoredAnswer

        row = await self._pool.fetchrow(QUERIES["idempotency_lookup"], tenant_id, key)
        return None if row is None else StoredAnswer.from_row(row)

    @_translating
    async def save_idempotency_answer(self, tenant_id: str, key: str, answer: StoredAnswer) -> None:
        await self._pool.execute(QUERIES["idempotency_save"], tenant_id, key, answer.request_hash,
                                 answer.status_code, answer.content_type, answer.body)

    @_translating
    async def prune_idempotency_keys(self, *, limit: int = 1000) -> int:
        status: str = await self._pool.execute(QUERIES["idempotency_prune"], limit)
        return int(status.split()[-1])

    @_translating
    async def schedule_many(self, tenant_id: str, requests: Sequence[ScheduleRequest], *, atomic: bool
                            ) -> list[ItemScheduled]:
        """Each request through reminderd.schedule()/schedule_recurring(), in one round trip."""
        from .rows import ItemScheduled

        rows = await self._pool.fetch(QUERIES["schedule_many"], tenant_id,
                                      [_schedule_item_v2(r) for r in requests], atomic)
        return [ItemScheduled.from_row(r) for r in rows]

    @_translating
    async def message(self, tenant_id: str, message_id: int) -> MessageView | None:
        from .rows import MessageView

        row = await self._pool.fetchrow(QUERIES["get_message"], tenant_id, message_id)
        return None if row is None else MessageView.from_row(row)

    @_translating
    async def message_history(
        self, tenant_id: str, message_id: int
    ) -> tuple[list[DeliveryView], list[EventView]]:
        from .rows import DeliveryView, EventView

        deliveries = await self._pool.fetch(QUERIES["message_deliveries"], tenant_id, message_id)
        events = await self._pool.fetch(QUERIES["message_events"], tenant_id, message_id)
        return [DeliveryView.from_row(r) for r in deliveries], [EventView.from_row(r) for r in events]

    @_translating
    async def list_newest(self, tenant_id: str, statuses: Sequence[str], *, before_id: int, limit: int,
                          fire_from: datetime, fire_until: datetime, keep_unplanned: bool) -> list[MessageView]:
        from .rows import MessageView

        rows = await self._pool.fetch(QUERIES["list_newest"], tenant_id, list(statuses), before_id, limit,
                                      fire_from, fire_until, keep_unplanned)
        return [MessageView.from_row(r) for r in rows]

    @_translating
    async def list_soonest(self, tenant_id: str, statuses: Sequence[str], *, after: tuple[datetime, int],
                           limit: int, fire_from: datetime, fire_until: datetime) -> list[MessageView]:
        from .rows import MessageView

        rows = await self._pool.fetch(QUERIES["list_soonest"], tenant_id, list(statuses), after[0], after[1],
                                      limit, fire_from, fire_until)
        return [MessageView.from_row(r) for r in rows]

    @_translating
    async def list_by_ref(
        self, tenant_id: str, ref_range: tuple[str, str], statuses: Sequence[str], *, soonest: bool,
        cursor: tuple[datetime, int], limit: int, fire_from: datetime, fire_until: datetime,
        keep_unplanned: bool,
    ) -> list[MessageView]:
        from .rows import MessageView

        rows = await self._pool.fetch(
            QUERIES["list_by_ref"], tenant_id, ref_range[0], ref_range[1], list(statuses), soonest, cursor[1],
            cursor[0], fire_from, fire_until, keep_unplanned, limit,
        )
        return [MessageView.from_row(r) for r in rows]

    @_translating
    async def message_ref(self, tenant_id: str, message_id: int) -> MessageRef | None:
        from .rows import MessageRef

        row = await self._pool.fetchrow(QUERIES["live_ref_of"], tenant_id, message_id)
        return None if row is None else MessageRef.from_row(row)

    async def _count(self, query: str, *args: Any) -> int:
        value: int | None = await self._pool.fetchval(QUERIES[query], *args)
        return value or 0

    @_translating
    async def cancel_message(self, tenant_id: str, message_id: int) -> int:
        return await self._count("cancel_message", tenant_id, message_id)

    @_translating
    async def cancel_matching(self, tenant_id: str, pattern: str) -> int:
        return await self._count("cancel_matching", tenant_id, pattern)

    @_translating
    async def pause(self, tenant_id: str, ref_id: str) -> int:
        return await self._count("pause_ref", tenant_id, ref_id)

    @_translating
    async def resume(self, tenant_id: str, ref_id: str) -> int:
        return await self._count("resume_ref", tenant_id, ref_id)

    @_translating
    async def reschedule(self, tenant_id: str, ref_id: str, *, fire_at: datetime | None = None,
                         fire_in_s: float | None = None, local_time: datetime | None = None) -> int:
        if fire_at is not None:
            return await self._count("reschedule_ref", tenant_id, ref_id, fire_at)
        if fire_in_s is not None:
            return await self._count("reschedule_ref_in", tenant_id, ref_id, fire_in_s)
        assert local_time is not None
        return await self._count("reschedule_ref_local", tenant_id, ref_id, local_time)

    @_translating
    async def set_payload(self, tenant_id: str, ref_id: str, payload_json: str) -> int:
        return await self._count("set_payload", tenant_id, ref_id, payload_json)

    @_translating
    async def requeue_message(self, tenant_id: str, message_id: int, *, resend: bool = False) -> int:
        """reminderd.requeue: 1 when requeued; 55000 refused for a one-off that died delivered."""
        return await self._count("requeue_message", tenant_id, message_id, resend)

    @_translating
    async def send_now(self, tenant_id: str, ref_id: str) -> int | None:
        """The id of the message that goes out now (None: the ref has nothing live)."""
        message_id: int | None = await self._pool.fetchval(QUERIES["send_now"], tenant_id, ref_id)
        return message_id

    @_translating
    async def due_now(self, tenant_id: str, message_id: int, *, backfill: str = DEFAULT_BACKFILL,
                      max_lateness_s: float = DEFAULT_MAX_LATENESS_S) -> DueNow | None:
        from .rows import DueNow

        row = await self._pool.fetchrow(QUERIES["send_now_timing"], tenant_id, message_id, backfill,
                                        max_lateness_s)
        return None if row is None else DueNow.from_row(row)

    @_translating
    async def api_tenant(self, tenant_id: str) -> TenantView | None:
        from .rows import TenantView

        row = await self._pool.fetchrow(QUERIES["api_tenant"], tenant_id)
        return None if row is None else TenantView.from_row(row)

    @_translating
    async def set_callback_url(self, tenant_id: str, callback_url: str | None) -> None:
        await self._pool.execute(QUERIES["set_callback_url"], tenant_id, callback_url)

    @_translating
    async def pause_tenant(self, tenant_id: str) -> int:
        return await self._count("pause_tenant", tenant_id)

    @_translating
    async def resume_tenant(self, tenant_id: str) -> int:
        return await self._count("resume_tenant", tenant_id)

    @_translating
    async def api_rotate_secret(self, tenant_id: str, grace_s: float) -> tuple[str, datetime | None]:
        row = await self._pool.fetchrow(QUERIES["api_rotate_secret"], tenant_id, grace_s)
        return row["secret"], row["previous_until"]

    @_translating
    async def set_api_rate_limit(self, tenant_id: str, rate: int | None) -> bool:
        status: str = await self._pool.execute(QUERIES["set_api_rate_limit"], tenant_id, rate)
        return status.endswith(" 1")

    @_translating
    async def tenant_stats(self, tenant_id: str) -> TenantStats:
        from .rows import TenantStats

        rows = await self._pool.fetch(QUERIES["stats_counts"], tenant_id, [status.value for status in Status])
        counts = {r["status"]: r["messages"] for r in rows}
        rows = await self._pool.fetch(QUERIES["stats_upcoming"], tenant_id)
        upcoming = [(r["hour"], r["messages"]) for r in rows]
        rates = dict((await self._pool.fetchrow(QUERIES["stats_rates"], tenant_id)).items())
        lateness = await self._pool.fetchrow(QUERIES["stats_lateness"], tenant_id)
        return TenantStats(counts, upcoming, rates, lateness["p50"], lateness["p99"])


    # Contacts, audiences, broadcasts, cadences (docs/audiences.md) -----------------------------

    @_translating
    async def upsert_contacts(self, tenant_id: str, contacts_json: str) -> int:
        """Add or change contacts (a JSON array, as reminderd.upsert_contacts takes it); how many
        were added or changed. Their zones are resolved by the database."""
        written: int = await self._pool.fetchval(QUERIES["upsert_contacts"], tenant_id, contacts_json)
        return written

    @_translating
    async def upsert_contact_rows(self, tenant_id: str, contacts: Sequence[ContactRow]) -> int:
        """Add or change contacts given as reminderd.contact_v1 rows (`reminderd contacts import`):
        the same rules and errors as upsert_contacts, without JSON to build and pick apart."""
        written: int = await self._pool.fetchval(QUERIES["upsert_contact_rows"], tenant_id, contacts)
        return written

    @_translating
    async def upsert_contacts_counted(self, tenant_id: str, contacts_json: str, contact_ids: Sequence[str]
                                      ) -> tuple[int, int]:
        """upsert_contacts(), and how many of `contact_ids` (the batch's, distinct) existed before:
        (added or changed, existed)."""
        row = await self._pool.fetchrow(QUERIES["upsert_contacts_counted"], tenant_id, contacts_json,
                                        list(contact_ids))
        return int(row["written"]), int(row["existed"])

    @_translating
    async def delete_contacts(self, tenant_id: str, contact_ids: Sequence[str]) -> int:
        deleted: int = await self._pool.fetchval(QUERIES["delete_contacts"], tenant_id, list(contact_ids))
        return deleted

    @_translating
    async def contact(self, tenant_id: str, contact_id: str) -> Contact | None:
        from .rows import Contact

        row = await self._pool.fetchrow(QUERIES["contact"], tenant_id, contact_id)
        return None if row is None else Contact.from_row(row)

    @_translating
    async def contact_messages(self, tenant_id: str, contact_id: str, *, recent_s: float, limit: int = 100
                               ) -> list[ContactMessage]:
        from .rows import ContactMessage

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
        from .rows import AudienceSummary

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

    async def broadcast_dry_run(self, request: BroadcastRequest) -> str:
        """What broadcast() would refuse, refused the same (DatabaseRefused): the call itself,
        made in a savepoint that is rolled back, so a dry run cannot disagree with it; else the
        approval the call gave it (not_needed, awaiting), as decided from the rows it staged.
        Nothing it wrote stays; it takes as long as the call, and uses up the ids it drew, as any
        rolled-back insert does."""
        approval = ""
        async with self.transaction() as tx:
            with contextlib.suppress(_RolledBack):
                async with tx.savepoint():
                    broadcast_id = await tx.broadcast(request)
                    approval = (await tx.broadcasts(request.tenant_id, broadcast_id))[0].approval
                    raise _RolledBack
        return approval

    @_translating
    async def broadcast_preview(self, request: BroadcastRequest, local_time: datetime) -> list[ZoneWave]:
        """What the broadcast would send at `local_time` (a wall time), per zone; nothing is staged."""
        from .rows import ZoneWave

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
        from .rows import BroadcastProgress

        rows = await self._pool.fetch(QUERIES["broadcasts"], tenant_id, broadcast_id)
        return [BroadcastProgress.from_row(row) for row in rows]

    @_translating
    async def broadcast_occurrences(self, broadcast_id: int) -> list[StagedOccurrence]:
        from .rows import StagedOccurrence

        rows = await self._pool.fetch(QUERIES["broadcast_occurrences"], broadcast_id)
        return [StagedOccurrence.from_row(row) for row in rows]

    @_translating
    async def schedule_cadence(self, request: CadenceRequest) -> list[CadenceStep]:
        from .rows import CadenceStep

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


def _limit(value: int | str | None) -> int | None:
    """A limit as the queries take it: a number, or NULL for "none" (and for "keep", with its flag)."""
    return value if isinstance(value, int) else None


class Listener:
    """A dedicated connection LISTENing for due-soon notifications (a pool connection cannot)."""

    def __init__(
        self, database_url: str, on_notify: Callable[[str], None], *, setting: str = "REMINDERD_DATABASE_URL",
        connect_timeout_s: float = QUERY_DEADLINE_S,
    ) -> None:
        self._database_url = database_url
        self._on_notify = on_notify
        self._setting = setting  # where the URL came from, for errors
        self._connect_timeout_s = connect_timeout_s
        self._connection: asyncpg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):  # a server that accepts and hangs
                connection = await asyncpg.connect(
                    self._database_url, server_settings={"application_name": "reminderd-listen"}
                )
        except Exception as exc:
            raise connect_error(exc, self._database_url, self._setting) from None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await connection.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException as exc:
            connection.terminate()
            mine = translated(exc) if isinstance(exc, Exception) else exc
            if mine is exc:
                raise
            raise mine from exc
        self._connection = connection

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            with contextlib.suppress(Exception):  # a server that does not answer: close() terminated it
                await self._connection.close(timeout=CLOSE_DEADLINE_S)
        self._connection = None


class FeedListener:
    """A dedicated connection LISTENing for the fires statements record (FEED_CHANNEL): each
    notification names one table of the trail and ids of its rows, `events:1,2,3` or
    `deliveries:4,5`; `on_ids` gets (event ids, delivery ids). `on_lost` is called when the
    connection ends (the feed then reconnects and catches up)."""

    def __init__(self, database_url: str, on_ids: Callable[[list[int], list[int]], None],
                 on_lost: Callable[[], None]) -> None:
        self._database_url = database_url
        self._on_ids = on_ids
        self._on_lost = on_lost
        self._connection: asyncpg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    @_translating
    async def connect(self) -> None:
        connection = await asyncpg.connect(
            self._database_url, server_settings={"application_name": "reminderd-feed"}
        )
        connection.add_termination_listener(self._terminated)
        await connection.add_listener(FEED_CHANNEL, self._notified)
        self._connection = connection

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        table, _, listed = payload.partition(":")
        ids = [int(part) for part in listed.split(",") if part.isascii() and part.isdecimal()]
        if table == "events":
            self._on_ids(ids, [])
        elif table == "deliveries":
            self._on_ids([], ids)

    def _terminated(self, _connection: Any) -> None:
        self._connection = None
        self._on_lost()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.remove_termination_listener(self._terminated)
            await connection.close()
