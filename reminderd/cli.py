"""The `reminderd` command line. Bad input gets one clear line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from . import __version__, logs
from .arguments import (
    Recurrence,
    ScheduleRequest,
    UsageError,
    add_recurrence_options,
    add_schedule_options,
    checked_calendar,
    checked_quiet,
    checked_timezone,
    parse_duration,
    parse_instant,
)
from .calendars import Holidays
from .exceptions import ConfigError, DatabaseRefused, DatabaseUnavailable, SchemaMissing
from .preview import anchor_rrule, preview
from .settings import Settings
from .store import Store
from .timing import Timing

EX_USAGE = 2
EX_CONFIG = 78


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message} (see --help)\n")


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

    tenant_set = tenant_commands.add_parser(
        "set", help="the tenant's holiday calendar and rule, and quiet hours ('none' clears)"
    )
    tenant_set.add_argument("tenant_id", metavar="TENANT")
    tenant_set.add_argument("--calendar", help="default holiday calendar, e.g. IN, GB, US-CA, or none")
    tenant_set.add_argument("--holiday-rule", choices=("skip", "send"), help="default rule on holidays")
    tenant_set.add_argument("--quiet", help="quiet hours in the recipient's timezone: 21:00-09:00, or none")
    tenant_set.add_argument("--quiet-exempt", help="categories sent in quiet hours too (default transactional)")
    holiday = tenant_commands.add_parser("holiday", help="add or remove one of the tenant's own days off")
    holiday.add_argument("action", choices=("add", "remove"))
    holiday.add_argument("tenant_id", metavar="TENANT")
    holiday.add_argument("day", metavar="YYYY-MM-DD")
    holiday.add_argument("name", nargs="?", default="holiday")

    schedule = commands.add_parser("schedule", help="schedule a message; prints its id")
    schedule.add_argument("tenant_id", metavar="TENANT")
    schedule.add_argument("ref_id", metavar="REF")
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO-8601 instant, or a wall time in --tz: 2026-12-24T09:00")
    when.add_argument("--in", dest="delay", help="relative delay: 90s, 15m, 2h, 3d")
    add_recurrence_options(when)
    add_schedule_options(schedule)

    show = commands.add_parser("preview", help="the next fire times of a schedule (no database)")
    recurrence = show.add_mutually_exclusive_group(required=True)
    add_recurrence_options(recurrence)
    show.add_argument("--tz", help="IANA timezone the schedule is read in (default UTC)")
    show.add_argument("--calendar", help="skip this calendar's holidays, e.g. IN, GB, US-CA")
    show.add_argument("--quiet", help="defer fires in these quiet hours, e.g. 21:00-09:00")
    show.add_argument("--from", dest="start", help="list fires after this ISO-8601 instant (default now)")
    show.add_argument("-n", type=int, default=10, help="how many fires (default 10)")
    show.add_argument("--json", action="store_true", help="a JSON list of {utc, local[, skipped, reason]}")

    cancel = commands.add_parser("cancel", help="cancel a scheduled message (0 when none is live)")
    cancel.add_argument("tenant_id", metavar="TENANT")
    cancel.add_argument("ref_id", metavar="REF")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args.database_url)
    if args.command == "preview":
        try:
            return _preview(args, datetime.now(UTC))
        except UsageError as exc:
            print(f"reminderd: error: {exc}", file=sys.stderr)
            return EX_USAGE
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
            args.request = ScheduleRequest.from_args(args, datetime.now(UTC))
        if args.command == "tenant":
            _check_tenant_args(args)
        return _run(_commands[args.command], args, settings)
    except UsageError as exc:
        print(f"reminderd: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except DatabaseUnavailable as exc:
        print(f"reminderd: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # e.g. a wrong password in REMINDERD_DATABASE_URL
        print(f"reminderd: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG


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
        except SchemaMissing:
            raise UsageError("the reminderd schema is missing: run `reminderd migrate`") from None
        except DatabaseRefused as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
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
    elif args.tenant_command == "set":
        changed = await store.set_tenant(
            args.tenant_id, calendar=args.calendar, holiday_rule=args.holiday_rule, quiet=args.quiet,
            quiet_exempt=args.quiet_exempt,
        )
        if not changed:
            raise UsageError(f'unknown tenant "{args.tenant_id}"')
        print(f"tenant {args.tenant_id}: {changed}")
    elif args.tenant_command == "holiday":
        if args.action == "add":
            await store.add_holiday(args.tenant_id, args.day, args.name)
            print(f"tenant {args.tenant_id}: {args.day:%Y-%m-%d} is a holiday ({args.name})")
        else:
            removed = await store.remove_holiday(args.tenant_id, args.day)
            print(f"tenant {args.tenant_id}: {args.day:%Y-%m-%d} removed" if removed else "no such holiday")
    else:
        grace = parse_duration(args.grace, flag="--grace")
        secret = await store.rotate_secret(args.tenant_id, grace.total_seconds())
        print(f"tenant {args.tenant_id}: new signing secret "
              f"(shown once; the old one signs too for {args.grace}):")
        print(secret)
    return 0


def _check_tenant_args(args: argparse.Namespace) -> None:
    """Turn `tenant set` and `tenant holiday` text into checked values ("none" clears a setting)."""
    if args.tenant_command == "set":
        if args.calendar is not None and args.calendar.lower() != "none":
            checked_calendar(args.calendar)
        if args.quiet is not None and args.quiet.lower() != "none":
            args.quiet = checked_quiet(args.quiet)
        if args.quiet_exempt is not None:
            args.quiet_exempt = [c.strip() for c in args.quiet_exempt.split(",") if c.strip()]
    elif args.tenant_command == "holiday":
        try:
            args.day = datetime.strptime(args.day, "%Y-%m-%d").date()
        except ValueError:
            raise UsageError(f"{args.day!r} is not a date like 2026-12-31") from None


async def _schedule(store: Store, args: argparse.Namespace) -> int:
    request: ScheduleRequest = args.request
    print(await store.schedule(request))  # the id alone on stdout, for scripts
    if request.recurrence is not None:  # and, for people, what it understood
        understood = request.recurrence.description(request.timezone, datetime.now(UTC))
        print(f"{understood} ({request.timezone})", file=sys.stderr)
    return 0


def _preview(args: argparse.Namespace, now: datetime) -> int:
    """Print the next fires of a schedule; no database needed."""
    if args.n < 1:
        raise UsageError(f"-n {args.n}: must be at least 1")
    timezone = checked_timezone(args.tz)
    start = now if args.start is None else parse_instant(args.start, timezone, flag="--from")
    recurrence = Recurrence.from_args(args, timezone, start)
    assert recurrence is not None  # argparse requires one of the flags
    timing = Timing(
        timezone=timezone, cron=recurrence.cron,
        rrule=None if recurrence.rrule is None else anchor_rrule(recurrence.rrule, timezone, start),
        holidays=Holidays.of(checked_calendar(args.calendar)), quiet=checked_quiet(args.quiet),
    )
    entries = preview(timing, start, args.n)
    if args.json:
        print(json.dumps([entry.as_json() for entry in entries], indent=2))
        return 0
    print(recurrence.description(timezone, start))
    fires = sum(not entry.skipped for entry in entries)
    print(f"next {fires} fires after {start.astimezone(timing.tz):%Y-%m-%d %H:%M:%S %Z} ({timezone}):")
    for entry in entries:
        line = f"  {entry.local:%a %Y-%m-%d %H:%M:%S %Z}   {entry.utc.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        if entry.skipped:
            line += f"   skipped: {entry.reason}"
        elif entry.deferred:
            line += f"   {entry.reason}"
        print(line)
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
        next_due = row.next_due.astimezone(UTC).isoformat(timespec="seconds") if row.next_due else ""
        print(f"{row.tenant_id:<24} {row.status:<10} {row.messages:>9}  {next_due}")
    return 0


_commands: dict[str, Callable[[Store, argparse.Namespace], Awaitable[int]]] = {
    "tenant": _tenant,
    "schedule": _schedule,
    "cancel": _cancel,
    "status": _status,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
