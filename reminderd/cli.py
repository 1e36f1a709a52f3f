"""The `reminderd` command line. Bad input gets one clear line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import asyncpg

from . import __version__, logs
from .cron import InvalidSchedule, load_timezone, validate_cron
from .exceptions import ConfigError
from .settings import Settings
from .store import CONNECTION_ERRORS, Store

EX_USAGE = 2
EX_CONFIG = 78


class UsageError(Exception):
    """Bad input from the command line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message} (see --help)\n")


_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DELAY_S = 100 * 365 * 86400


def parse_duration(text: str, flag: str = "--in") -> timedelta:
    """'90s', '15m', '2h', '3d' or combinations such as '1h30m'."""
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not compact or _DURATION_PART.sub("", compact).strip():
        raise UsageError(f"{flag} {text!r}: use a duration such as 90s, 15m, 2h, 3d or 1h30m")
    seconds = sum(int(amount) * _UNIT_S[unit] for amount, unit in parts)
    if seconds <= 0:
        raise UsageError(f"{flag} {text!r}: the delay must be positive")
    if seconds > MAX_DELAY_S:
        raise UsageError(f"{flag} {text!r}: the delay must be under 100 years")
    return timedelta(seconds=seconds)


def parse_instant(text: str, tz_name: str | None) -> datetime:
    """An ISO-8601 instant. Without a UTC offset it is read as wall time in --tz."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--at {text!r} is not ISO-8601, e.g. 2026-12-24T09:00:00Z") from None
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    if tz_name is None:
        raise UsageError(
            f"--at {text!r} has no UTC offset: add one (Z, +05:30) or say --tz Region/City"
        )
    return value.replace(tzinfo=load_timezone(tz_name)).astimezone(UTC)


def parse_payload(text: str | None) -> Any:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc.msg} at character {exc.pos}") from None


def build_parser() -> Parser:
    parser = Parser(prog="reminderd", description="Durable scheduled callbacks on PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"reminderd {__version__}")
    parser.add_argument(
        "--database-url", default=None,
        help="PostgreSQL URL (default: $REMINDERD_DATABASE_URL)",
    )
    parser.add_argument(
        "--config", metavar="FILE", default=os.environ.get("REMINDERD_CONFIG"),
        help="TOML file with the same settings, lower-case without REMINDERD_ "
             "(env wins over it; default: $REMINDERD_CONFIG)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    commands.add_parser("migrate", help="apply database migrations (run before `run`)")
    commands.add_parser("run", help="run the daemon (settings from REMINDERD_* variables)")
    commands.add_parser("status", help="messages by tenant and status, and the next due")
    commands.add_parser("config", help="the effective settings, secrets masked, and where each came from")
    commands.add_parser("demo", help="a throwaway database, a demo receiver, callbacks that fire")

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True, parser_class=Parser)
    add = tenant_commands.add_parser("add", help="create a tenant; prints its signing secret once")
    add.add_argument("tenant_id", metavar="ID")
    add.add_argument("--callback-url", required=True, help="default callback endpoint (http/https)")
    grant = tenant_commands.add_parser("grant", help="let a database role act for the tenant (RLS)")
    grant.add_argument("tenant_id", metavar="TENANT")
    grant.add_argument("role", metavar="ROLE")
    revoke = tenant_commands.add_parser("revoke", help="stop a database role acting for the tenant")
    revoke.add_argument("tenant_id", metavar="TENANT")
    revoke.add_argument("role", metavar="ROLE")
    rotate = tenant_commands.add_parser(
        "rotate-secret", help="issue a new signing secret; the old one keeps signing for --grace"
    )
    rotate.add_argument("tenant_id", metavar="TENANT")
    rotate.add_argument("--grace", default="24h", help="how long the old secret stays valid (default 24h)")

    schedule = commands.add_parser("schedule", help="schedule a message; prints its id")
    schedule.add_argument("tenant_id", metavar="TENANT")
    schedule.add_argument("ref_id", metavar="REF")
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO-8601 instant, e.g. 2026-12-24T09:00:00Z")
    when.add_argument("--in", dest="delay", help="relative delay: 90s, 15m, 2h, 3d")
    when.add_argument("--cron", help='5-field cron, e.g. "0 9 * * MON-FRI"')
    schedule.add_argument("--tz", help="IANA timezone for --cron (default UTC) or an offset-less --at")
    schedule.add_argument("--payload", help="JSON payload sent in the callback")
    schedule.add_argument("--callback-url", help="override the tenant's callback URL")

    cancel = commands.add_parser("cancel", help="cancel a scheduled message (0 when none is live)")
    cancel.add_argument("tenant_id", metavar="TENANT")
    cancel.add_argument("ref_id", metavar="REF")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args.database_url)
    try:
        settings, sources = _settings(args)
    except ConfigError as exc:
        print(f"reminderd: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "run":
            return _run_daemon(settings, args.config)
        if args.command == "config":
            return _show_config(settings, sources)
        if args.command == "schedule":
            args.request = ScheduleRequest.from_args(args)
        return _run(_commands[args.command], args, settings)
    except UsageError as exc:
        print(f"reminderd: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except CONNECTION_ERRORS as exc:
        print(f"reminderd: cannot reach the database: {exc}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    env = dict(os.environ)
    if args.database_url:
        env["REMINDERD_DATABASE_URL"] = args.database_url
    if args.command in {"run", "config"}:
        return Settings.load(env, args.config)
    # Other commands need only the database: ignore daemon tuning they do not use.
    database_only = {k: v for k, v in env.items() if k.startswith(
        ("REMINDERD_DATABASE_URL", "REMINDERD_PGBOUNCER", "REMINDERD_LISTEN_DATABASE_URL"))}
    return Settings.load(database_only)


def _migrate(settings: Settings) -> int:
    from .migrate import upgrade_with_retry

    url = settings.database_url
    if settings.pgbouncer:  # DDL and Alembic's prepared statements need a direct connection
        if not settings.listen_database_url:
            print("reminderd: migrate needs a direct connection: set REMINDERD_LISTEN_DATABASE_URL "
                  "or pass --database-url", file=sys.stderr)
            return EX_CONFIG
        url = settings.listen_database_url
    upgrade_with_retry(url)
    print("reminderd: schema is at the latest migration")
    return 0


def _run_daemon(settings: Settings, config_file: str | None) -> int:
    from .daemon import Daemon

    logs.configure(settings.log_level, log_file=settings.log_file)

    async def go() -> int:
        return await Daemon(settings, config_file).run()

    return _event_loop_run(go())


def _show_config(settings: Settings, sources: dict[str, str]) -> int:
    for name, value in settings.masked().items():
        print(f"{name}={value}  # {sources.get(name, 'default')}")
    return 0


def _event_loop_run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def _run(command: Callable[[Store, argparse.Namespace], Awaitable[int]], args: argparse.Namespace,
         settings: Settings) -> int:
    async def go() -> int:
        store = await Store.connect(settings.database_url, max_size=1, pgbouncer=settings.pgbouncer)
        try:
            return await command(store, args)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
                raise UsageError("the reminderd schema is missing: run `reminderd migrate`") from None
            hint = f" ({exc.hint})" if getattr(exc, "hint", None) else ""
            raise UsageError(f"{exc.message}{hint}") from None
        finally:
            await store.close()

    return asyncio.run(go())


async def _tenant(store: Store, args: argparse.Namespace) -> int:
    if args.tenant_command == "add":
        secret = await store.add_tenant(args.tenant_id, args.callback_url)
        print(f"tenant {args.tenant_id} created. Signing secret (shown once, keep it safe):")
        print(secret)
    elif args.tenant_command == "grant":
        try:
            await store.grant_tenant(args.tenant_id, args.role)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"role {args.role} acts for tenant {args.tenant_id} "
              f"(it also needs: GRANT reminderd_app TO {args.role})")
    elif args.tenant_command == "revoke":
        removed = await store.revoke_tenant(args.tenant_id, args.role)
        print(f"role {args.role} no longer acts for tenant {args.tenant_id}" if removed
              else "nothing to revoke")
    else:
        grace = parse_duration(args.grace, flag="--grace")
        secret = await store.rotate_secret(args.tenant_id, grace.total_seconds())
        print(f"tenant {args.tenant_id}: new signing secret "
              f"(shown once; the old one signs too for {args.grace}):")
        print(secret)
    return 0


@dataclass(frozen=True)
class ScheduleRequest:
    """`reminderd schedule` arguments, checked before any connection is made."""

    tenant_id: str
    ref_id: str
    payload: Any
    callback_url: str | None
    fire_at: datetime | None = None
    cron: str | None = None
    timezone: str = "UTC"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ScheduleRequest:
        payload = parse_payload(args.payload)
        common = {"tenant_id": args.tenant_id, "ref_id": args.ref_id, "payload": payload,
                  "callback_url": args.callback_url}
        try:
            if args.tz is not None:
                load_timezone(args.tz)
            if args.cron is not None:
                validate_cron(args.cron)
                return cls(**common, cron=args.cron, timezone=args.tz or "UTC")
        except InvalidSchedule as exc:
            raise UsageError(str(exc)) from None
        if args.delay is not None:
            return cls(**common, fire_at=datetime.now(UTC) + parse_duration(args.delay))
        return cls(**common, fire_at=parse_instant(args.at, args.tz))


async def _schedule(store: Store, args: argparse.Namespace) -> int:
    request: ScheduleRequest = args.request
    if request.cron is not None:
        message_id = await store.schedule_cron(
            request.tenant_id, request.ref_id, request.cron, request.timezone, request.payload,
            request.callback_url,
        )
    else:
        assert request.fire_at is not None
        message_id = await store.schedule_at(
            request.tenant_id, request.ref_id, request.fire_at, request.payload, request.callback_url
        )
    print(message_id)
    return 0


async def _cancel(store: Store, args: argparse.Namespace) -> int:
    print(await store.cancel(args.tenant_id, args.ref_id))
    return 0


async def _status(store: Store, args: argparse.Namespace) -> int:
    rows = await store.status_counts()
    if not rows:
        print("no messages")
        return 0
    print(f"{'TENANT':<24} {'STATUS':<10} {'MESSAGES':>9}  NEXT DUE (UTC)")
    for row in rows:
        next_due = row["next_due"].astimezone(UTC).isoformat(timespec="seconds") if row["next_due"] else ""
        print(f"{row['tenant_id']:<24} {row['status']:<10} {row['messages']:>9}  {next_due}")
    return 0


_commands: dict[str, Callable[[Store, argparse.Namespace], Awaitable[int]]] = {
    "tenant": _tenant,
    "schedule": _schedule,
    "cancel": _cancel,
    "status": _status,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
