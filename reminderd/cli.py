"""The `reminderd` command line. Bad input gets one clear line on stderr and exit status 2, a
configuration error exit status 78.

Each subcommand registers its handler (`set_defaults(handler=...)`): a function of the parsed
arguments, or a DatabaseCommand that checks them into a typed request before it connects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from . import __version__, logs, refusals
from .audience_commands import register as register_audience_commands
from .audience_commands import require_tenant
from .exceptions import (
    EX_CONFIG,
    EX_USAGE,
    ConfigError,
    DatabaseMisconfigured,
    DatabaseRefused,
    DatabaseUnavailable,
    ReminderdError,
    RoleRefused,
    SchemaMissing,
)
from .exceptions import InvalidInput as UsageError  # arguments.UsageError, without importing arguments
from .options import add_recurrence_options, add_schedule_options
from .settings import Settings

# What the commands are read into and run against: imported when a command runs (DatabaseCommand),
# never to build the parser, so `reminderd run` starts without them (tests/unit/test_startup.py).
if TYPE_CHECKING:
    from .arguments import (
        ApiKeyCreateRequest,
        ApiKeyListRequest,
        ApiKeyRevokeRequest,
        ApiRateLimitRequest,
        CancelRequest,
        EnableEndpointRequest,
        EndpointSetRequest,
        HolidayRequest,
        RotateSecretRequest,
        ScheduleRequest,
        SendNowRequest,
        TenantAddRequest,
        TenantListRequest,
        TenantRoleRequest,
        TenantSetRequest,
        UsageRequest,
    )
    from .rows import ApiKeyInfo, DaemonStatus, TenantOverview
    from .store import EndpointState, Store, UsageDay

R = TypeVar("R")
Handler = Callable[[argparse.Namespace], int]
DATABASE_SETTINGS = ("database_url", "pgbouncer", "listen_database_url")
EX_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
INSUFFICIENT_PRIVILEGE = "42501"
EXIT_STATUSES = (
    "exit status: 0 done; 1 the database cannot be reached; 2 bad input (nothing was changed); "
    "78 a configuration error (REMINDERD_*, --config, --database-url); 130 interrupted"
)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class DatabaseCommand(Generic[R]):
    """A subcommand that needs the database: its arguments are checked into a request first, so a
    typo never costs a connection, then `run` gets a Store and the request.

    `parse` is a function of the arguments, or the name of a request class of
    reminderd/arguments.py (its `from_args`): that module is imported when the command runs, not
    when the parser is built (tests/unit/test_startup.py resolves every name)."""

    parse: str | Callable[[argparse.Namespace], R]
    run: Callable[[Store, R], Awaitable[int]]

    def parser(self) -> Callable[[argparse.Namespace], R]:
        if not isinstance(self.parse, str):
            return self.parse
        from . import arguments

        parse: Callable[[argparse.Namespace], R] = getattr(arguments, self.parse).from_args
        return parse

    def __call__(self, args: argparse.Namespace) -> int:
        request = self.parser()(args)
        return _run(self.run, request, _database_settings(args))


def _no_arguments(args: argparse.Namespace) -> None:
    return None


def _connection_options(*, config: bool = True) -> Parser:
    """--database-url and --config, accepted after the subcommand as well as before it."""
    options = Parser(add_help=False)
    options.add_argument("--database-url", default=argparse.SUPPRESS,
                         help="PostgreSQL URL (default: $REMINDERD_DATABASE_URL)")
    if config:
        options.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                             help="TOML file with the same settings (default: $REMINDERD_CONFIG)")
    return options


def _add_command(
    commands: argparse._SubParsersAction[Parser], name: str, summary: str, handler: Handler | None,
    *, parents: Sequence[Parser] = (),
) -> Parser:
    """A subcommand whose one-line summary is both its entry in the parent's --help and its own
    description."""
    command = commands.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.", parents=list(parents)
    )
    if handler is not None:
        command.set_defaults(handler=handler)
    return command


def _name_subcommands(commands: argparse._SubParsersAction[Parser]) -> None:
    """A group's summary ends with its subcommands, as registered ("manage tenants: add, list, …"),
    so that none is ever left out of `reminderd --help`."""
    for entry in commands._choices_actions:
        group = commands.choices[entry.dest]
        inner = [action for action in group._actions if isinstance(action, argparse._SubParsersAction)]
        if not inner or entry.help is None:
            continue
        stem = entry.help.split(": ")[0]
        entry.help = f"{stem}: {', '.join(inner[0].choices)}"
        group.description = f"{stem[0].upper()}{stem[1:]}."  # its own --help lists them below it


def build_parser() -> Parser:
    parser = Parser(prog="reminderd", description="Durable scheduled callbacks on PostgreSQL.",
                    epilog=EXIT_STATUSES)
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
    database = [_connection_options()]

    migrate = _add_command(commands, "migrate", "apply database migrations (run before `run`)", _migrate,
                           parents=database)
    migrate.add_argument("--wait", default="2m", metavar="DURATION",
                         help="how long to keep trying while the database is unreachable (default 2m; 0: once)")
    _add_command(commands, "run", "run the daemon (settings from REMINDERD_* variables)", _run_daemon,
                 parents=database)
    _add_command(commands, "status", "messages by tenant and status, the next due, and the running daemons",
                 DatabaseCommand(_no_arguments, _status), parents=database)
    _add_command(commands, "config", "the effective settings, secrets masked, and where each came from",
                 _show_config, parents=database)
    _add_command(commands, "demo", "a throwaway database, a demo receiver, callbacks that fire", _demo,
                 parents=[_connection_options(config=False)])

    dev_db = _add_command(
        commands, "dev-db", "a PostgreSQL for trying the CLI: start, stop, url, status, delete", None
    )
    dev_db_commands = dev_db.add_subparsers(dest="dev_db_command", required=True, parser_class=Parser)
    dev_start = _add_command(dev_db_commands, "start", "create (once), start and migrate it; prints its URL",
                             _dev_db_start)
    dev_start.add_argument("--export", action="store_true",
                           help='print `export REMINDERD_DATABASE_URL=…`, for '
                                'eval "$(reminderd dev-db start --export)"')
    dev_url = _add_command(dev_db_commands, "url", "print its URL", _dev_db_url)
    dev_url.add_argument("--export", action="store_true", help="print `export REMINDERD_DATABASE_URL=…`")
    _add_command(dev_db_commands, "stop", "stop it (its data stays)", _dev_db_stop)
    dev_status = _add_command(dev_db_commands, "status", "running, stopped or absent (exit 0, 3, 3)",
                              _dev_db_status)
    dev_status.add_argument("--json", action="store_true", help="a JSON object")
    _add_command(dev_db_commands, "delete", "stop it and delete its data", _dev_db_delete)

    tenant = _add_command(commands, "tenant", "manage tenants", None)  # ": add, list, …" (_name_subcommands)
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True, parser_class=Parser)
    add = _add_command(tenant_commands, "add", "create a tenant; prints its signing secret once",
                       DatabaseCommand("TenantAddRequest", _tenant_add), parents=database)
    add.add_argument("tenant_id", metavar="ID")
    add.add_argument("--callback-url", required=True, help="default callback endpoint (http/https)")
    add.add_argument("--timezone",
                     help="default IANA zone of its contacts that have none (needed to use contacts)")
    listing = _add_command(
        tenant_commands, "list", "every tenant, its settings and its messages waiting and dead",
        DatabaseCommand("TenantListRequest", _tenant_list), parents=database,
    )
    listing.add_argument("--json", action="store_true", help="a JSON list, one object per tenant")
    grant = _add_command(tenant_commands, "grant", "let a database role act for the tenant (RLS)",
                         DatabaseCommand("TenantRoleRequest", _tenant_grant), parents=database)
    grant.add_argument("tenant_id", metavar="TENANT")
    grant.add_argument("role", metavar="ROLE")
    revoke = _add_command(tenant_commands, "revoke", "stop a database role acting for the tenant",
                          DatabaseCommand("TenantRoleRequest", _tenant_revoke), parents=database)
    revoke.add_argument("tenant_id", metavar="TENANT")
    revoke.add_argument("role", metavar="ROLE")
    rotate = _add_command(
        tenant_commands, "rotate-secret", "issue a new signing secret; the old one keeps signing for --grace",
        DatabaseCommand("RotateSecretRequest", _tenant_rotate_secret), parents=database,
    )
    rotate.add_argument("tenant_id", metavar="TENANT")
    rotate.add_argument("--grace", default="24h", help="how long the old secret stays valid (default 24h)")

    tenant_set = _add_command(
        tenant_commands, "set",
        "holidays, quiet hours, sending limits, frequency caps ('none' clears)",
        DatabaseCommand("TenantSetRequest", _tenant_set), parents=database,
    )
    tenant_set.add_argument("tenant_id", metavar="TENANT")
    tenant_set.add_argument("--calendar", help="default holiday calendar, e.g. IN, GB, US-CA, or none")
    tenant_set.add_argument("--holiday-rule", choices=("skip", "send"), help="default rule on holidays")
    tenant_set.add_argument("--quiet", help="quiet hours in the recipient's timezone: 21:00-09:00, or none")
    tenant_set.add_argument("--quiet-exempt", help="categories sent in quiet hours too (default transactional)")
    tenant_set.add_argument("--timezone", help="default IANA zone of its contacts that have none, or none")
    tenant_set.add_argument("--broadcast-limit", metavar="N",
                            help="most contacts one broadcast may reach, or none")
    tenant_set.add_argument("--approval-threshold", metavar="N",
                            help="broadcasts to more contacts wait for a second person's approval, or none")
    tenant_set.add_argument("--max-per-second", metavar="N",
                            help="at most N callbacks a second, all daemons together (none: no limit)")
    tenant_set.add_argument("--max-per-hour", metavar="N",
                            help="at most N callbacks an hour: the subscription limit (none: no limit)")
    tenant_set.add_argument("--frequency-cap", metavar="CATEGORY=N/DURATION", action="append",
                            help="at most N messages of CATEGORY per recipient per rolling DURATION, "
                                 "e.g. marketing=2/1d (CATEGORY=none removes it; repeatable)")
    tenant_set.add_argument("--cap-policy", choices=("defer", "skip"),
                            help="over a frequency cap: defer the message until it fits, or skip it")
    enable = _add_command(
        tenant_commands, "enable-endpoint", "turn the tenant's disabled endpoints back on; paused rows resume",
        DatabaseCommand("EnableEndpointRequest", _tenant_enable_endpoint), parents=database,
    )
    enable.add_argument("tenant_id", metavar="TENANT")
    enable.add_argument("--endpoint", metavar="HOST:PORT", help="only this one (default: all of the tenant's)")
    holiday = _add_command(tenant_commands, "holiday", "add or remove one of the tenant's own days off",
                           DatabaseCommand("HolidayRequest", _tenant_holiday), parents=database)
    holiday.add_argument("action", choices=("add", "remove"))
    holiday.add_argument("tenant_id", metavar="TENANT")
    holiday.add_argument("day", metavar="YYYY-MM-DD")
    holiday.add_argument("name", nargs="?", default="holiday")

    endpoint = _add_command(commands, "endpoint", "callback endpoints (host:port): set their limits, list them",
                            None)
    endpoint_commands = endpoint.add_subparsers(dest="endpoint_command", required=True, parser_class=Parser)
    endpoint_set = _add_command(
        endpoint_commands, "set", "an endpoint's limits, for all daemons together ('none' clears)",
        DatabaseCommand("EndpointSetRequest", _endpoint_set), parents=database,
    )
    endpoint_set.add_argument("endpoint", metavar="HOST:PORT")
    endpoint_set.add_argument("--max-in-flight", metavar="N",
                              help="callbacks claimed at once, all daemons together "
                                   "(none: each daemon's REMINDERD_CONCURRENCY)")
    endpoint_set.add_argument("--max-per-second", metavar="N", help="callbacks a second (none: no limit)")
    _add_command(endpoint_commands, "list", "endpoints with limits, and tenant endpoints that are failing",
                 DatabaseCommand(_no_arguments, _endpoint_list), parents=database)

    usage = _add_command(commands, "usage", "a tenant's usage per day: scheduled, attempted, delivered, …",
                         DatabaseCommand(_usage_request, _usage), parents=database)
    usage.add_argument("tenant_id", metavar="TENANT")
    usage.add_argument("--month", metavar="YYYY-MM", help="the month (default: this month, UTC)")
    usage.add_argument("--json", action="store_true", help="a JSON list, one object per day")

    schedule = _add_command(commands, "schedule", "schedule a message; prints its id",
                            DatabaseCommand(_schedule_request, _schedule), parents=database)
    schedule.add_argument("tenant_id", metavar="TENANT")
    schedule.add_argument("ref_id", metavar="REF")
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO-8601 instant, or a wall time in --tz: 2026-12-24T09:00")
    when.add_argument("--in", dest="delay", help="relative delay: 90s, 15m, 2h, 3d")
    add_recurrence_options(when)
    add_schedule_options(schedule)

    show = _add_command(commands, "preview", "the next fire times of a schedule (no database)", _preview)
    recurrence = show.add_mutually_exclusive_group(required=True)
    add_recurrence_options(recurrence)
    show.add_argument("--tz", help="IANA timezone the schedule is read in (default UTC)")
    show.add_argument("--calendar", help="skip this calendar's holidays, e.g. IN, GB, US-CA")
    show.add_argument("--quiet", help="defer fires in these quiet hours, e.g. 21:00-09:00")
    show.add_argument("--from", dest="start", help="list fires after this ISO-8601 instant (default now)")
    show.add_argument("-n", type=int, default=10, help="how many fires (default 10)")
    show.add_argument("--json", action="store_true", help="a JSON list of {utc, local[, skipped, reason]}")

    send_now = _add_command(
        commands, "send-now", "send a message now (a recurring one: one extra occurrence); says if held",
        DatabaseCommand("SendNowRequest", _send_now), parents=database,
    )
    send_now.add_argument("tenant_id", metavar="TENANT")
    send_now.add_argument("ref_id", metavar="REF")

    _add_command(commands, "serve", "run the HTTP API (REMINDERD_API_HOST, REMINDERD_API_PORT)", _serve,
                 parents=database)
    api_key = _add_command(commands, "api-key", "manage the HTTP API's keys: create, list, revoke", None)
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True, parser_class=Parser)
    create = _add_command(api_key_commands, "create", "create an API key; prints it once",
                          DatabaseCommand("ApiKeyCreateRequest", _api_key_create), parents=database)
    create.add_argument("tenant_id", metavar="TENANT", nargs="?", help="the tenant the key acts for")
    create.add_argument("--name", required=True, help="what uses the key, e.g. booking-service")
    create.add_argument("--read-only", action="store_true", help="GET routes only")
    create.add_argument("--operator", action="store_true", help="all tenants (the dashboard); no TENANT")
    key_list = _add_command(api_key_commands, "list", "API keys (of one tenant), never the keys themselves",
                            DatabaseCommand("ApiKeyListRequest", _api_key_list), parents=database)
    key_list.add_argument("tenant_id", metavar="TENANT", nargs="?")
    key_list.add_argument("--json", action="store_true", help="a JSON list, one object per key")
    revoke_key = _add_command(api_key_commands, "revoke", "revoke an API key by its prefix (rk_…)",
                              DatabaseCommand("ApiKeyRevokeRequest", _api_key_revoke), parents=database)
    revoke_key.add_argument("prefix", metavar="PREFIX")
    rate = _add_command(
        tenant_commands, "rate-limit", "requests per second each of the tenant's API keys may make, or default",
        DatabaseCommand("ApiRateLimitRequest", _tenant_rate_limit), parents=database,
    )
    rate.add_argument("tenant_id", metavar="TENANT")
    rate.add_argument("rate", metavar="PER_SECOND")

    cancel = _add_command(commands, "cancel", "cancel a scheduled message (0 when none is live)",
                          DatabaseCommand("CancelRequest", _cancel), parents=database)
    cancel.add_argument("tenant_id", metavar="TENANT")
    cancel.add_argument("ref_id", metavar="REF")

    # Recipients: contacts, audiences, broadcasts, cadences (reminderd/audience_commands.py).
    register_audience_commands(commands, database, _add_command, DatabaseCommand)
    _name_subcommands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_negative_values_attached(sys.argv[1:] if argv is None else argv))
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"reminderd: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except DatabaseMisconfigured as exc:  # e.g. a wrong password in REMINDERD_DATABASE_URL
        print(f"reminderd: {exc.one_line()}", file=sys.stderr)
        return EX_CONFIG
    except ConfigError as exc:
        print(f"reminderd: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except DatabaseUnavailable as exc:
        print(f"reminderd: {exc.one_line()}", file=sys.stderr)
        return 1
    except ReminderdError as exc:  # an expected failure, said in its own words (a migration refused)
        print(f"reminderd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reminderd: interrupted", file=sys.stderr)
        return EX_INTERRUPTED


# Every option whose value is a duration (a cadence's --offsets are signed: -30d,-7d,-1d).
_DURATION_OPTIONS = ("--in", "--grace", "--max-lateness", "--wait", "--recent", "--stage-ahead", "--offsets")


def _negative_values_attached(argv: Sequence[str]) -> list[str]:
    """argparse reads `--in -5m` as two options and says "expected one argument"; the user meant
    `--in=-5m`, which parse_duration then refuses with a sentence saying why (and which a
    cadence's `--offsets -30d,-1d` means as written)."""
    attached: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        value = argv[index + 1] if index + 1 < len(argv) else ""
        if arg in _DURATION_OPTIONS and value[:1] == "-" and value[1:2].isdigit():
            attached.append(f"{arg}={value}")
            index += 2
        else:
            attached.append(arg)
            index += 1
    return attached


def _flags(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """The settings given as flags, which win over REMINDERD_* and --config and are named as typed."""
    return {"database_url": ("--database-url", args.database_url)} if args.database_url else {}


def _daemon_settings(args: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    """Every setting, and where each came from: for `run` and `config`."""
    return Settings.load(os.environ, args.config, flags=_flags(args))


@dataclass(frozen=True)
class Database:
    """The settings a command that connects needs, and where the URL came from, for errors
    ("--database-url", "REMINDERD_DATABASE_URL", "--config app.toml: database_url")."""

    settings: Settings
    url_source: str


def _database_settings(args: argparse.Namespace) -> Database:
    """What the other commands need: the database. Daemon tuning they do not use is not read (a
    bad REMINDERD_BATCH_SIZE is the daemon's problem), but every name is still checked."""
    settings, sources = Settings.load(os.environ, args.config, only=DATABASE_SETTINGS, flags=_flags(args))
    return Database(settings, _url_source(args, sources))


def _url_source(args: argparse.Namespace, sources: dict[str, str]) -> str:
    source = sources.get("REMINDERD_DATABASE_URL", "")
    if args.database_url:
        return "--database-url"
    if source.startswith("env file"):
        return "REMINDERD_DATABASE_URL_FILE"
    if source.startswith("config file"):
        return f"--config {args.config}: database_url"
    return "REMINDERD_DATABASE_URL"


def _dev_db_start(args: argparse.Namespace) -> int:
    from .devdb import DevDatabase, export_line

    state, _ = _dev_db_call(lambda: DevDatabase().start())
    print(export_line(state.url) if args.export else state.url)
    return 0


def _dev_db_url(args: argparse.Namespace) -> int:
    from .devdb import DevDatabase, export_line

    state = _dev_db_call(lambda: DevDatabase().state())
    if state is None:
        print("reminderd: there is no dev database yet: `reminderd dev-db start` creates it", file=sys.stderr)
        return 1
    print(export_line(state.url) if args.export else state.url)
    return 0


def _dev_db_stop(args: argparse.Namespace) -> int:
    from .devdb import DevDatabase

    print("reminderd dev-db: stopped" if _dev_db_call(lambda: DevDatabase().stop())
          else "reminderd dev-db: not running", file=sys.stderr)
    return 0


def _dev_db_status(args: argparse.Namespace) -> int:
    from .devdb import EX_NOT_RUNNING, DevDatabase, describe

    dev = DevDatabase()
    state = _dev_db_call(dev.state)
    running = state is not None and _dev_db_call(lambda: dev.running(state))
    if args.json:
        print(json.dumps(describe(state, running, dev.path), indent=2))
    elif state is None:
        print(f"absent: `reminderd dev-db start` creates it (in {dev.path})")
    elif running:
        print(f"running on 127.0.0.1:{state.port} (cluster in {state.cluster_dir})")
    else:
        print(f"stopped (cluster in {state.cluster_dir}): `reminderd dev-db start` starts it")
    return 0 if running else EX_NOT_RUNNING


def _dev_db_delete(args: argparse.Namespace) -> int:
    from .devdb import DevDatabase

    dev = DevDatabase()
    deleted = _dev_db_call(dev.delete)
    print(f"reminderd dev-db: deleted {dev.path}" if deleted else "reminderd dev-db: nothing to delete",
          file=sys.stderr)
    return 0


def _dev_db_call(call: Callable[[], R]) -> R:
    """A dev-db step; a cluster that cannot be created or started is one line, exit 1."""
    from .testing import ClusterError

    try:
        return call()
    except ClusterError as exc:
        raise DevDatabaseFailed(str(exc)) from None


class DevDatabaseFailed(ReminderdError):
    """The dev database could not be created or started."""


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args.database_url)


def _migrate(args: argparse.Namespace) -> int:
    from .arguments import parse_duration
    from .migrate import migrate

    wait_s = parse_duration(args.wait, "--wait", allow_zero=True).total_seconds()
    database = _database_settings(args)
    settings, url_source = database.settings, database.url_source
    url = settings.database_url
    if settings.pgbouncer:  # DDL and Alembic's prepared statements need a direct connection
        if not settings.listen_database_url:
            print("reminderd: migrate needs a direct connection: set REMINDERD_LISTEN_DATABASE_URL "
                  "or pass --database-url", file=sys.stderr)
            return EX_CONFIG
        url, url_source = settings.listen_database_url, "REMINDERD_LISTEN_DATABASE_URL"
    done = migrate(url, setting=url_source, wait_s=wait_s, say=lambda line: print(line, file=sys.stderr))
    print(f"reminderd: {done}")
    return 0


def _run_daemon(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    settings, _ = _daemon_settings(args)
    logs.configure(settings.log_level, log_file=settings.log_file)

    async def go() -> int:
        return await Daemon(settings, args.config).run()

    return _stopped_status(_event_loop_run(go()))


def _stopped_status(status: int) -> int:
    """A daemon's or server's exit status: 1, quietly, when it stopped because the reader of its
    log output went away (EPIPE), so a supervisor restarts it with a new one."""
    return 1 if status == 0 and logs.OUTPUT.broken else status


def _show_config(args: argparse.Namespace) -> int:
    settings, sources = _daemon_settings(args)
    for name, value in settings.masked().items():
        print(f"{name}={value}  # {sources.get(name, 'default')}")
    return 0


def _event_loop_run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def _run(command: Callable[[Store, R], Awaitable[int]], request: R, database: Database) -> int:
    from .store import Store

    async def go() -> int:
        settings = database.settings
        # A second connection is opened only when a command works on two at once (contacts import).
        store = await Store.connect(settings.database_url, max_size=2, pgbouncer=settings.pgbouncer,
                                    setting=database.url_source)
        try:
            return await command(store, request)
        except SchemaMissing:
            raise UsageError("the reminderd schema is missing: run `reminderd migrate`") from None
        except DatabaseRefused as exc:
            # PostgreSQL's own 42501 (permission denied, a row-level security check): the URL's
            # role, not the input, is wrong. reminderd's own (approving one's own broadcast, acting
            # under another name: docs/audiences.md) refuse the input and say what to do instead.
            if exc.sqlstate == INSUFFICIENT_PRIVILEGE and exc.hint is None:
                roles = exc.roles if isinstance(exc, RoleRefused) else (
                    "reminderd_app, reminderd_readonly or reminderd_daemon")
                raise DatabaseMisconfigured(refusals.one_line(exc), setting=database.url_source,
                                            hint=f"its role needs {roles}: docs/sql.md, Roles") from None
            raise UsageError(refusals.one_line(exc)) from None
        finally:
            await store.close()

    return asyncio.run(go())


async def _tenant_add(store: Store, request: TenantAddRequest) -> int:
    secret = await store.add_tenant(request.tenant_id, request.callback_url, request.timezone)
    print(f"tenant {request.tenant_id} created. Signing secret (shown once, keep it safe):")
    print(secret)
    return 0


async def _tenant_grant(store: Store, request: TenantRoleRequest) -> int:
    try:
        await store.grant_tenant(request.tenant_id, request.role)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    needs = {
        "inherits": "",
        "member": f" (it is a member of reminderd_app but does not inherit its privileges: "
                  f"ALTER ROLE {request.role} INHERIT, or SET ROLE reminderd_app after connecting)",
        "none": f" (it also needs: GRANT reminderd_app TO {request.role})",
    }[await store.app_membership(request.role)]
    print(f"role {request.role} acts for tenant {request.tenant_id}{needs}")
    return 0


async def _tenant_list(store: Store, request: TenantListRequest) -> int:
    tenants = await store.tenants()
    if request.as_json:
        print(json.dumps([_tenant_json(tenant) for tenant in tenants], indent=2))
        return 0
    if not tenants:
        print("no tenants")
        return 0
    header = (
        "TENANT", "CALLBACK URL", "CALENDAR", "QUIET HOURS", "STATE", "PENDING", "PICKED", "PAUSED", "DEAD"
    )
    rows = [header] + [(
        t.id, t.callback_url or "-", f"{t.calendar} ({t.holiday_rule})" if t.calendar else "-",
        f"{t.quiet_start:%H:%M}-{t.quiet_end:%H:%M}" if t.quiet_start and t.quiet_end else "-",
        "paused" if t.paused else "active", str(t.pending), str(t.picked), str(t.paused_messages), str(t.dead),
    ) for t in tenants]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        text = [cell.ljust(width) for cell, width in zip(row[:5], widths[:5], strict=True)]
        counts = [cell.rjust(width) for cell, width in zip(row[5:], widths[5:], strict=True)]
        print("  ".join(text + counts))
    return 0


def _tenant_json(tenant: TenantOverview) -> dict[str, Any]:
    return {
        "id": tenant.id, "callback_url": tenant.callback_url, "calendar": tenant.calendar,
        "holiday_rule": tenant.holiday_rule,
        "quiet_hours": f"{tenant.quiet_start:%H:%M}-{tenant.quiet_end:%H:%M}"
        if tenant.quiet_start and tenant.quiet_end else None,
        "paused": tenant.paused,
        "messages": {"pending": tenant.pending, "picked": tenant.picked, "paused": tenant.paused_messages,
                     "dead": tenant.dead},
    }


async def _tenant_revoke(store: Store, request: TenantRoleRequest) -> int:
    await require_tenant(store, request.tenant_id)
    removed = await store.revoke_tenant(request.tenant_id, request.role)
    print(f"role {request.role} no longer acts for tenant {request.tenant_id}" if removed
          else "nothing to revoke")
    return 0


async def _tenant_set(store: Store, request: TenantSetRequest) -> int:
    changed = await store.set_tenant(
        request.tenant_id, calendar=request.calendar, holiday_rule=request.holiday_rule, quiet=request.quiet,
        quiet_exempt=request.quiet_exempt, timezone=request.timezone, broadcast_limit=request.broadcast_limit,
        approval_threshold=request.approval_threshold,
    )
    if not changed:
        raise UsageError(f'unknown tenant "{request.tenant_id}"')
    print(f"tenant {request.tenant_id}: {changed}")
    if request.sets_limits:
        limits = await store.set_tenant_limits(
            request.tenant_id, max_per_second=request.max_per_second, max_per_hour=request.max_per_hour,
            policy=request.cap_policy, caps=request.frequency_caps,
        )
        print(f"tenant {request.tenant_id}: {limits}")
    return 0


async def _tenant_enable_endpoint(store: Store, request: EnableEndpointRequest) -> int:
    resumed = await store.enable_endpoint(request.tenant_id, request.endpoint)
    which = request.endpoint or "its endpoints"
    print(f"tenant {request.tenant_id}: {which} enabled; {resumed} paused message(s) resume "
          "(the first callback goes alone, then the rest as the limits allow)")
    return 0


async def _endpoint_set(store: Store, request: EndpointSetRequest) -> int:
    print(await store.set_endpoint(request.endpoint, max_in_flight=request.max_in_flight,
                                   max_per_second=request.max_per_second))
    return 0


async def _endpoint_list(store: Store, _request: None) -> int:
    states = await store.endpoint_states()
    if not states:
        print("no endpoint has limits, and none is failing")
        return 0
    _print_endpoints(states)
    return 0


def _print_endpoints(states: Sequence[EndpointState]) -> None:
    print(f"{'TENANT':<16} {'ENDPOINT':<32} {'STATE':<10} {'FAILURES':>8} {'IN FLIGHT':>9}  DETAIL")
    for s in states:
        if s.state == "limited":
            detail = (f"max_in_flight {s.max_in_flight or 'default'}, "
                      f"max_per_second {s.max_per_second or 'none'}")
        elif s.state == "disabled":
            detail = f"{s.disabled_reason}; reminderd tenant enable-endpoint {s.tenant_id}"
        elif s.state == "open" and s.circuit_open_until is not None:
            until = s.circuit_open_until.astimezone(UTC)
            detail = f"circuit open until {until:%H:%M:%SZ}: {s.last_error or ''}"
        else:
            detail = s.last_error or ""
        failures = "" if s.consecutive_failures is None else str(s.consecutive_failures)
        print(f"{s.tenant_id or '(all)':<16} {s.endpoint:<32} {s.state:<10} {failures:>8} {s.in_flight:>9}  "
              f"{detail}")


def _usage_request(args: argparse.Namespace) -> UsageRequest:
    from .arguments import UsageRequest

    return UsageRequest.from_args(args, datetime.now(UTC).date())


USAGE_COLUMNS = ("scheduled", "attempted", "delivered", "dead", "expired", "held")


async def _usage(store: Store, request: UsageRequest) -> int:
    await require_tenant(store, request.tenant_id)
    days = await store.usage(request.tenant_id, request.first_day, request.last_day)
    if request.as_json:
        print(json.dumps([{"day": f"{d.day:%Y-%m-%d}", **{k: getattr(d, k) for k in USAGE_COLUMNS}}
                          for d in days], indent=2))
        return 0
    print(f"tenant {request.tenant_id}, {request.first_day:%B %Y} (UTC days)")
    print(f"{'DAY':<10} " + " ".join(f"{c.upper():>10}" for c in USAGE_COLUMNS))
    for d in days:
        print(f"{d.day:%Y-%m-%d} " + " ".join(f"{getattr(d, c):>10}" for c in USAGE_COLUMNS))
    totals = _usage_totals(days)
    print(f"{'total':<10} " + " ".join(f"{totals[c]:>10}" for c in USAGE_COLUMNS))
    return 0


def _usage_totals(days: Sequence[UsageDay]) -> dict[str, int]:
    return {c: sum(getattr(d, c) for d in days) for c in USAGE_COLUMNS}


async def _tenant_holiday(store: Store, request: HolidayRequest) -> int:
    if request.add:
        await store.add_holiday(request.tenant_id, request.day, request.name)
        print(f"tenant {request.tenant_id}: {request.day:%Y-%m-%d} is a holiday ({request.name})")
    else:
        await require_tenant(store, request.tenant_id)
        removed = await store.remove_holiday(request.tenant_id, request.day)
        print(f"tenant {request.tenant_id}: {request.day:%Y-%m-%d} removed" if removed else "no such holiday")
    return 0


async def _tenant_rotate_secret(store: Store, request: RotateSecretRequest) -> int:
    secret = await store.rotate_secret(request.tenant_id, request.grace_s)
    old = f"the old one signs too for {request.grace}" if request.grace_s else "the old one no longer signs"
    print(f"tenant {request.tenant_id}: new signing secret (shown once; {old}):")
    print(secret)
    return 0


def _schedule_request(args: argparse.Namespace) -> ScheduleRequest:
    from .arguments import schedule_request

    return schedule_request(args, datetime.now(UTC))


async def _schedule(store: Store, request: ScheduleRequest) -> int:
    from .schedule import iso_utc, load_timezone

    now = datetime.now(UTC)
    if request.recurrence is not None:  # its first fire_at, timed as the daemon would time it
        tenant = await store.tenant_calendar(request.tenant_id, from_day=(now - timedelta(days=2)).date())
        if tenant is None:
            raise UsageError(f'unknown tenant "{request.tenant_id}"')
        request = request.with_first_occurrence(tenant, now)
    print(await store.schedule(request))  # the id alone on stdout, for scripts
    if request.recurrence is not None and request.timezone is None:  # the database times it in the contact's
        understood = request.recurrence.description("UTC", now)
        print(f"{understood} (in the contact's timezone)", file=sys.stderr)
    elif request.recurrence is not None and request.first_fire_at is not None:  # for people: what it understood
        assert request.timezone is not None  # a zone of its own: its first occurrence was computed here
        understood = request.recurrence.description(request.timezone, now)
        tz = load_timezone(request.timezone)
        first = request.first_fire_at.astimezone(tz)
        print(f"{understood} ({request.timezone}); first {first:%a %Y-%m-%d %H:%M:%S %Z} "
              f"({iso_utc(request.first_fire_at, timespec='auto')})", file=sys.stderr)
    elif (note := request.late_note()) is not None:
        print(f"reminderd: {note}", file=sys.stderr)
    return 0


def _preview(args: argparse.Namespace) -> int:
    """Print the next fires of a schedule; no database needed."""
    from .arguments import preview_request

    request = preview_request(args, datetime.now(UTC))
    recurrence, timezone, start = request.recurrence, request.timezone, request.start
    timing = request.timing()
    entries = request.entries()
    if request.as_json:
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


def _serve(args: argparse.Namespace) -> int:
    from .serve import Server

    settings, _ = _daemon_settings(args)
    logs.configure(settings.log_level, log_file=settings.log_file)

    async def go() -> int:
        return await Server(settings).run()

    return _stopped_status(_event_loop_run(go()))


async def _send_now(store: Store, request: SendNowRequest) -> int:
    from .api import describe_held

    message_id = await store.send_now(request.tenant_id, request.ref_id)
    if message_id is None:
        raise UsageError(
            f"{request.ref_id!r} of tenant {request.tenant_id} has no pending, picked or paused message"
        )
    settings = _lateness_defaults()
    due = await store.due_now(request.tenant_id, message_id, backfill=settings[0], max_lateness_s=settings[1])
    assert due is not None
    print(message_id)  # the id alone on stdout, for scripts
    what = f"an extra occurrence of message {due.extra_of}" if due.extra_of is not None else "the message"
    held = describe_held(due)
    print(f"{what} goes out now" if held is None else f"{what} is held: {held['reason']}", file=sys.stderr)
    return 0


def _lateness_defaults() -> tuple[str, float]:
    """The defaults the daemon judges lateness by (its REMINDERD_BACKFILL, REMINDERD_MAX_LATENESS)."""
    try:
        settings = Settings.load(os.environ, None, only=("database_url", "backfill", "max_lateness_s"))[0]
    except ConfigError:
        return "send", 1800.0
    return settings.backfill, settings.max_lateness_s


async def _api_key_create(store: Store, request: ApiKeyCreateRequest) -> int:
    from .apikeys import generate

    made = generate()
    try:
        info = await store.create_api_key(
            made.prefix, made.key_hash, request.tenant_id, request.name, request.scopes
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    whom = f"tenant {info.tenant_id}" if info.tenant_id else "all tenants (operator)"
    access = "read-only" if "write" not in info.scopes else "read and write"
    print(f"API key {info.prefix} ({info.name}) for {whom}, {access}. The key (shown once, keep it safe):",
          file=sys.stderr)
    print(made.key)
    return 0


async def _api_key_list(store: Store, request: ApiKeyListRequest) -> int:
    if request.tenant_id is not None:
        await require_tenant(store, request.tenant_id)
    keys = await store.api_keys(request.tenant_id)
    if request.as_json:
        print(json.dumps([_api_key_json(key) for key in keys], indent=2))
        return 0
    if not keys:
        print("no API keys")
        return 0
    header = ("PREFIX", "TENANT", "NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED")
    rows = [header] + [(
        k.prefix, k.tenant_id or "(operator)", k.name, ",".join(k.scopes), _when(k.created_at),
        _when(k.last_used_at), _when(k.revoked_at),
    ) for k in keys]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _api_key_json(key: ApiKeyInfo) -> dict[str, Any]:
    return {"prefix": key.prefix, "tenant_id": key.tenant_id, "name": key.name, "scopes": list(key.scopes),
            "created_at": _when(key.created_at), "last_used_at": None if key.last_used_at is None else
            _when(key.last_used_at), "revoked_at": None if key.revoked_at is None else _when(key.revoked_at)}


async def _api_key_revoke(store: Store, request: ApiKeyRevokeRequest) -> int:
    info = await store.revoke_api_key(request.prefix)
    if info is None:
        raise UsageError(f"no API key {request.prefix}")
    print(f"API key {info.prefix} ({info.name}) revoked; servers stop accepting it within "
          "REMINDERD_API_KEY_CACHE (10 s by default)")
    return 0


async def _tenant_rate_limit(store: Store, request: ApiRateLimitRequest) -> int:
    rate = None if request.rate is None else int(request.rate)
    if not await store.set_api_rate_limit(request.tenant_id, rate):
        raise UsageError(f'unknown tenant "{request.tenant_id}"')
    said = "the server's default (REMINDERD_API_RATE_LIMIT)" if rate is None else f"{rate} requests per second"
    print(f"tenant {request.tenant_id}: each API key may make {said}, per server process")
    return 0


async def _cancel(store: Store, request: CancelRequest) -> int:
    await require_tenant(store, request.tenant_id)  # reminderd.cancel() answers 0 for one
    print(await store.cancel(request.tenant_id, request.ref_id))
    return 0


async def _status(store: Store, _request: None) -> int:
    rows = await store.status_counts()
    if not rows:
        print("no messages")
    else:
        print(f"{'TENANT':<24} {'STATUS':<10} {'MESSAGES':>9}  NEXT DUE (UTC)")
        for row in rows:
            next_due = row.next_due.astimezone(UTC).isoformat(timespec="seconds") if row.next_due else ""
            print(f"{row.tenant_id:<24} {row.status:<10} {row.messages:>9}  {next_due}")
    endpoints = await store.endpoint_states()
    if endpoints:
        print()
        _print_endpoints(endpoints)
    print()
    _print_daemons(await store.daemons())
    return 0


def _print_daemons(daemons: Sequence[DaemonStatus]) -> None:
    """The registry: which daemons run, since when, whether they are alive, what they hold."""
    if not daemons:
        print("no daemons running")
        return

    def utc(moment: datetime | None) -> str:
        return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "-"

    header = (
        "DAEMON", "HOST", "PID", "VERSION", "STATE", "HEARTBEAT", "HELD", "STARTED (UTC)", "LAST CLAIM (UTC)"
    )
    rows = [header] + [(
        str(d.id), d.host, str(d.pid), d.version, d.state, f"{d.silent_for_s:.1f}s ago", str(d.held),
        utc(d.started_at), utc(d.last_claim_at),
    ) for d in daemons]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) if column in (2, 5, 6) else cell.ljust(width)
                        for column, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
