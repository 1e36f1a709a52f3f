"""Settings: one frozen object, built once from the environment, failing loudly on bad values."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from .duration import parse_seconds
from .exceptions import ConfigError
from .schedule import BACKFILL_POLICIES, DEFAULT_BACKFILL, DEFAULT_LOOKBACK_S, DEFAULT_MAX_LATENESS_S

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Setting:
    """One REMINDERD_* variable: its name, how its text is read, and what it means. The README's
    configuration table is this declaration, checked by tests/unit/test_settings.py."""

    env: str
    parse: Callable[[str], Any]
    help: str
    unset: str = ""  # how the README shows a default of None or nothing: "(required)", "(stdout)"
    secret: bool = False  # may hold a password: masked when shown


def setting(
    env: str, default: T, parse: Callable[[str], T], help: str, *, unset: str = "", secret: bool = False
) -> T:
    """A field of Settings, declared once: its variable, default, parser and meaning."""
    return field(
        default=default, repr=not secret, metadata={"setting": Setting(env, parse, help, unset, secret)}
    )


# Parsers: text -> value, or ValueError saying what is allowed.


def _number(kind: Callable[[str], T], *, minimum: float, maximum: float) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"not a valid {kind.__name__}") from None
        if not minimum <= value <= maximum:  # type: ignore[operator]
            raise ValueError(f"must be between {minimum:g} and {maximum:g}")
        return value

    return parse


def _seconds(minimum: float, maximum: float) -> Callable[[str], float]:
    """A duration read as reminderd reads every duration (reminderd/duration.py): 300, 300s, 5m, 1h30m."""

    def parse(raw: str) -> float:
        value = parse_seconds(raw)
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum:g} and {maximum:g} seconds")
        return value

    return parse


def _networks(raw: str) -> tuple[Network, ...]:
    networks = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not a CIDR network like 10.0.0.0/8") from None
    return tuple(networks)


def _database_url(raw: str) -> str:
    """A PostgreSQL URL whose shape asyncpg reads as written: hosts as `host`, `host:port` or
    `[v6]:port` (a list: `h1:5432,h2:5433`), ports 1-65535, the query as `name=value` pairs.
    What the server must judge (a setting's name or value in the query) is judged at connect."""
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql://")
    try:
        parts = urlsplit(raw)
    except ValueError:  # "Invalid IPv6 URL"
        raise ValueError("a host in [brackets] is not closed: write an IPv6 address as [::1]:5432") from None
    if parts.netloc.count("@") > 1:  # asyncpg splits at the first @, libpq at the last
        raise ValueError("the user name or password holds an @: write it as %40")
    if _unsure_password(raw):  # a password's / ? or # may have ended the host early
        raise ValueError("an @ comes after the host: write a /, ? or # of the user name or password as %2F, "
                         "%3F or %23 (and an @ of the database name as %40)")
    hosts = parts.netloc.rpartition("@")[2]
    if hosts:
        _check_hosts(hosts)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True) if parts.query else []
    except ValueError:
        raise ValueError("its query is not name=value pairs joined by &, such as ?sslmode=require") from None
    for index, (name, value) in enumerate(query):
        try:
            if name == "host" and value:
                _check_hosts(value)
            elif name == "port" and value:
                for number in value.split(","):
                    _check_port(number)
        except ValueError:
            if any("pass" in earlier.lower() for earlier, _ in query[:index]):  # it may be a password's rest
                said = f"its {name} parameter is not a {name} (not shown: it follows a password)"
                raise ValueError(said) from None
            raise
    return raw


def _password_span(url: str) -> tuple[int, int] | None:
    """Where a password may lie in `url` (from, to), whatever the URL's shape, or None if it holds
    none. A password starts after the user name's `:` and ends at an @, but a /, ? or # in it ends
    urlsplit's (and asyncpg's) host early: `postgresql://app:pa/ss@db/app` is host `app`, port `pa`.
    So when an @ comes after the host, the password may run to the last @. Only a user name
    without a password (`app@db/my@db`: the @ of the database name) is sure to hold none."""
    start = url.find("://") + 3
    last_at = url.rfind("@")
    if start < 3 or last_at < start:
        return None
    host_end = next((at for at in range(start, len(url)) if url[at] in "/?#"), len(url))
    authority = url[start:host_end]
    if last_at >= host_end and authority.count("@") == 1 and ":" not in authority.partition("@")[0]:
        return None
    colon = url.find(":", start, last_at)
    return None if colon < 0 else (colon + 1, last_at)


def _unsure_password(url: str) -> bool:
    """Does an @ after the host leave unsure where a password ends (`app:Zq?k=9mP@db/app`,
    `app:pw@db/my@db`)? Such a URL is refused: read as asyncpg reads it, its password's rest would be
    sent as a host, a port or a database name, and come back in their errors."""
    span = _password_span(url)
    if span is None:
        return False
    start = url.find("://") + 3
    return any(url[at] in "/?#" for at in range(start, span[1]))


_HOST = re.compile(r"(?P<name>\[[^\]]+\]|[^:\[\]]*)(?::(?P<port>.*))?", re.DOTALL)


def _check_hosts(hosts: str) -> None:
    """`host`, `host:port`, `[::1]:5432` or a socket directory, comma-separated."""
    for host in hosts.split(","):  # libpq and asyncpg accept host1:5432,host2:5433
        match = _HOST.fullmatch(host)
        if not host or match is None or not match["name"]:
            shown = f"{host!r} is" if host else "an empty host is"
            raise ValueError(f"{shown} not a host or host:port (an IPv6 address goes in brackets: [::1]:5432)")
        if match["port"] and not match["name"].startswith("/"):  # "db:" is the default port, as for libpq
            _check_port(match["port"])


def _check_port(number: str) -> None:
    if not (number.isascii() and number.isdecimal() and 0 < int(number) <= 65535):
        raise ValueError(f"port {number!r} is not a port number (1-65535)")


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be 1 or 0 (true or false)")


def _host(raw: str) -> str:
    if not raw or any(c.isspace() for c in raw):
        raise ValueError("must be a host name or address to listen on")
    return raw


def _path(raw: str) -> str:
    return raw


def _session_secret(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters (e.g. `openssl rand -base64 32`)")
    return raw


def _origin(raw: str) -> str:
    parts = urlsplit(raw.strip())
    try:
        no_port = parts.port == 0
    except ValueError:  # not a number, or beyond 65535
        no_port = True
    if no_port:
        raise ValueError("has a port that is not one (1 to 65535)")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be an origin, scheme and host (and port): `https://reminderd.example.com`")
    # As a browser's Origin spells it (RFC 6454): the scheme's default port left out, a port as a number.
    netloc = parts.netloc.lower()
    host = netloc if netloc.endswith("]") else netloc.rsplit(":", 1)[0]  # an IPv6 address keeps its colons
    port = "" if parts.port in (None, {"http": 80, "https": 443}[parts.scheme]) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def _log_level(raw: str) -> str:
    level = raw.lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be one of debug, info, warning, error")
    return level


def _backfill(raw: str) -> str:
    policy = raw.strip().lower()
    if policy not in BACKFILL_POLICIES:
        raise ValueError("must be one of " + ", ".join(BACKFILL_POLICIES))
    return policy


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False, metadata={"setting": Setting(
        "REMINDERD_DATABASE_URL", _database_url, "PostgreSQL URL, `postgresql://user:pass@host:5432/db`",
        unset="(required)", secret=True)})
    # The NOTIFY trigger wakes daemons for rows due within 10 minutes; a longer poll could miss one.
    poll_interval_s: float = setting(
        "REMINDERD_POLL_INTERVAL", 2.0, _seconds(0.01, 600),
        "seconds between polls when nothing is known to be due (≤ 600)")
    lookback_s: float = setting(
        "REMINDERD_LOOKBACK", DEFAULT_LOOKBACK_S, _seconds(1, 30 * 86400),
        "hard limit, seconds: nothing later than this is ever sent, whatever the policy")
    backfill: str = setting(
        "REMINDERD_BACKFILL", DEFAULT_BACKFILL, _backfill,
        "after an outage, for rows without their own: `send`, `latest` or `skip` "
        "([docs/time.md](docs/time.md))")
    max_lateness_s: float = setting(
        "REMINDERD_MAX_LATENESS", DEFAULT_MAX_LATENESS_S, _seconds(0, 30 * 86400),
        "seconds late a message may still be sent (`send` policy), for rows without their own")
    batch_size: int = setting(
        "REMINDERD_BATCH_SIZE", 100, _number(int, minimum=1, maximum=10_000), "rows claimed per query")
    concurrency: int = setting(
        "REMINDERD_CONCURRENCY", 64, _number(int, minimum=1, maximum=10_000), "callbacks in flight at once")
    lease_s: float = setting(
        "REMINDERD_LEASE", 300.0, _seconds(1, 86400),
        "seconds a claim is held before another daemon may redeliver it")
    callback_timeout_s: float = setting(
        "REMINDERD_CALLBACK_TIMEOUT", 10.0, _seconds(0.1, 3600),
        "seconds per callback request (must be below the lease)")
    heartbeat_s: float = setting(
        "REMINDERD_HEARTBEAT", 5.0, _seconds(0.1, 300),
        "seconds between the daemon's heartbeats in `reminderd.daemons`")
    dead_after_s: float = setting(
        "REMINDERD_DEAD_AFTER", 15.0, _seconds(0.3, 3600),
        "a daemon silent this long is dead: its claimed rows are rescued at once (≥ 3 heartbeats)")
    max_attempts: int = setting(
        "REMINDERD_MAX_ATTEMPTS", 8, _number(int, minimum=1, maximum=1000),
        "attempts before dead-lettering (a row's `max_attempts` wins)")
    retry_base_s: float = setting(
        "REMINDERD_RETRY_BASE", 5.0, _seconds(0, 86400),
        "backoff: attempt *n* waits up to `base * 2^(n-1)` seconds")
    retry_cap_s: float = setting(
        "REMINDERD_RETRY_CAP", 3600.0, _seconds(0, 7 * 86400), "backoff never waits longer than this")
    shutdown_timeout_s: float = setting(
        "REMINDERD_SHUTDOWN_TIMEOUT", 30.0, _seconds(0, 3600),
        "seconds in-flight callbacks get to finish on SIGTERM")
    allowed_callback_networks: tuple[Network, ...] = setting(
        "REMINDERD_ALLOWED_CALLBACK_NETWORKS", (), _networks,
        "CIDRs callbacks may reach although not public, e.g. `10.1.0.0/16`", unset="(empty)")
    log_level: str = setting(
        "REMINDERD_LOG_LEVEL", "info", _log_level, "`debug`, `info`, `warning`, `error`")
    log_file: str | None = setting(
        "REMINDERD_LOG_FILE", None, _path, "write logs to this file instead; reopened on SIGHUP",
        unset="(stdout)")
    http_host: str = setting(
        "REMINDERD_HTTP_HOST", "127.0.0.1", _host, "address of `/healthz`, `/readyz` and `/metrics`")
    http_port: int = setting(
        "REMINDERD_HTTP_PORT", 9464, _number(int, minimum=0, maximum=65535),
        "port of `/healthz`, `/readyz` and `/metrics`; `0` disables them")
    metrics_tenant_labels: bool = setting(
        "REMINDERD_METRICS_TENANT_LABELS", True, _flag, "`0` drops the tenant label (many tenants)")
    pgbouncer: bool = setting(
        "REMINDERD_PGBOUNCER", False, _flag, "`1` when the URL goes through PgBouncer in transaction mode")
    synchronous_commit: bool = setting(
        "REMINDERD_SYNCHRONOUS_COMMIT", True, _flag,
        "`0`: the daemon's claims and outcomes do not wait for their WAL flush, and a PostgreSQL crash "
        "makes it redo its last ≤ 0.6 s of them (the same webhook-ids); for a slow WAL disk")
    listen_database_url: str | None = setting(
        "REMINDERD_LISTEN_DATABASE_URL", None, _database_url,
        "direct connection for `LISTEN`; with PgBouncer and without it the daemon only polls",
        unset="(the main URL)", secret=True)
    retention_days: int = setting(
        "REMINDERD_RETENTION_DAYS", 7, _number(int, minimum=1, maximum=3650),
        "sent, cancelled and expired rows are pruned after this")
    dead_retention_days: int = setting(
        "REMINDERD_DEAD_RETENTION_DAYS", 30, _number(int, minimum=1, maximum=3650),
        "dead letters are pruned after this")
    history_retention_days: int = setting(
        "REMINDERD_HISTORY_RETENTION_DAYS", 30, _number(int, minimum=1, maximum=3650),
        "deliveries and audit events are pruned after this")
    circuit_failures: int = setting(
        "REMINDERD_CIRCUIT_FAILURES", 10, _number(int, minimum=1, maximum=100_000),
        "failures in a row that open a tenant endpoint's circuit (its rows wait, then one probe)")
    circuit_open_s: float = setting(
        "REMINDERD_CIRCUIT_OPEN", 30.0, _seconds(0.01, 86400),
        "seconds a circuit stays open first; doubled after each failed probe, at most 32 times as long")
    endpoint_disable_after_s: float = setting(
        "REMINDERD_ENDPOINT_DISABLE_AFTER", 5 * 86400.0, _seconds(1, 365 * 86400),
        "a tenant endpoint failing every attempt this long is disabled, its rows paused (410 Gone: at once)")
    # `reminderd serve`, the HTTP API (docs/api.md).
    api_host: str = setting(
        "REMINDERD_API_HOST", "127.0.0.1", _host, "address `reminderd serve` listens on")
    api_port: int = setting(
        "REMINDERD_API_PORT", 8080, _number(int, minimum=0, maximum=65535),
        "port of `reminderd serve` (`0`: any free port, logged)")
    api_rate_limit: float = setting(
        "REMINDERD_API_RATE_LIMIT", 100.0, _number(float, minimum=0.1, maximum=1_000_000),
        "requests per second per API key and server process, for tenants without their own")
    api_max_body: int = setting(
        "REMINDERD_API_MAX_BODY", 8 * 2**20, _number(int, minimum=1024, maximum=2**30),
        "bytes a request body may have (413 beyond)")
    api_max_json_depth: int = setting(
        "REMINDERD_API_MAX_JSON_DEPTH", 64, _number(int, minimum=2, maximum=500),
        "how deeply arrays and objects may nest in a request body")
    api_request_timeout_s: float = setting(
        "REMINDERD_API_REQUEST_TIMEOUT", 30.0, _seconds(0.1, 3600),
        "seconds a request may take, body included (503 beyond)")
    api_key_cache_s: float = setting(
        "REMINDERD_API_KEY_CACHE", 10.0, _seconds(0, 3600),
        "seconds a verified API key is trusted without asking the database (how late a revocation "
        "takes effect)")
    api_pool_size: int = setting(
        "REMINDERD_API_POOL_SIZE", 10, _number(int, minimum=1, maximum=1000),
        "database connections of `reminderd serve`")
    session_secret: str | None = setting(
        "REMINDERD_SESSION_SECRET", None, _session_secret,
        "signs the dashboard's session cookies (16+ characters; give every `reminderd serve` the same); "
        "unset: one per process, drawn at start", unset="(random)", secret=True)
    dashboard_origin: str | None = setting(
        "REMINDERD_DASHBOARD_ORIGIN", None, _origin,
        "the dashboard's public origin (`https://reminderd.example.com`) when a proxy in front does not "
        "pass the browser's Host: a form's Origin may then name it", unset="(the request's Host)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every REMINDERD_* variable; raise ConfigError naming the first bad one."""
        return cls.load(environ)[0]

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: str | None = None,
        *, only: Collection[str] | None = None, flags: Mapping[str, tuple[str, str]] | None = None,
    ) -> tuple[Settings, dict[str, str]]:
        """Settings from command-line flags over the environment over a TOML file over the
        defaults, and where each came from ("flag --database-url", "env", "env file", "config
        file" or "default"), keyed by variable name. `flags` maps a field to the flag it was given
        by and its value ({"database_url": ("--database-url", url)}): a bad value is named by the
        flag the user typed, not by the variable it stands in for. With `only`, just those fields
        are read (the others keep their defaults); every REMINDERD_* name in the environment is
        checked all the same, so a misspelt one never passes unnoticed."""
        env = os.environ if environ is None else environ
        check_variable_names(env)
        from_file = _read_config_file(config_file) if config_file else {}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, spec in SETTINGS.items():
            if only is not None and name not in only:
                continue
            if flags and name in flags:
                flag, given = flags[name]
                try:
                    values[name] = spec.parse(given)
                except ValueError as exc:
                    raise ConfigError(f"{flag} {_shown(spec, given)}: {exc}") from None
                sources[spec.env] = f"flag {flag}"
                continue
            raw, source = _read(env, spec.env)
            where = spec.env
            if raw is None and name in from_file:
                entry = from_file[name]
                raw, source = entry.raw, f"config file {config_file}"
                where = f"--config {config_file}, line {entry.line}: {entry.key}"
            if raw is None:
                if name == "database_url":
                    raise ConfigError(f"{spec.env} is required ({spec.help.replace('`', '')})")
                sources[spec.env] = "default"
                continue
            try:
                values[name] = spec.parse(raw)
            except ValueError as exc:
                shown = _shown(spec, raw)
                if source.startswith("env file"):  # the variable the user set is NAME_FILE
                    message = f"{spec.env}={shown} (from {spec.env}_FILE={env[spec.env + '_FILE']}): {exc}"
                elif where == spec.env:
                    message = f"{where}={shown}: {exc}"
                else:
                    message = f"{where} = {shown}: {exc}"
                raise ConfigError(message) from None
            sources[spec.env] = source
        settings = cls(**values)
        settings._check_relations()
        return settings, sources

    @property
    def listen_url(self) -> str | None:
        """Where to LISTEN: its own URL, else the main one unless that goes through PgBouncer in
        transaction mode (which cannot hold a LISTEN): then None, and the daemon only polls."""
        if self.listen_database_url:
            return self.listen_database_url
        return None if self.pgbouncer else self.database_url

    def _check_relations(self) -> None:
        if self.lease_s <= self.callback_timeout_s:
            raise ConfigError(
                f"REMINDERD_LEASE ({self.lease_s:g}s) must be longer than "
                f"REMINDERD_CALLBACK_TIMEOUT ({self.callback_timeout_s:g}s), or a slow callback "
                "would be handed to another daemon while still in flight"
            )
        if self.dead_after_s < 3 * self.heartbeat_s:
            raise ConfigError(
                f"REMINDERD_DEAD_AFTER ({self.dead_after_s:g}s) must be at least 3 heartbeats "
                f"(3 x REMINDERD_HEARTBEAT = {3 * self.heartbeat_s:g}s), or a daemon that is only slow "
                "would be declared dead and its rows sent twice"
            )
        if self.retry_cap_s < self.retry_base_s:
            raise ConfigError(
                f"REMINDERD_RETRY_CAP ({self.retry_cap_s:g}s) must be at least "
                f"REMINDERD_RETRY_BASE ({self.retry_base_s:g}s)"
            )

    def masked(self) -> dict[str, str]:
        """Effective settings for display, with the password in the database URL hidden."""
        shown: dict[str, str] = {}
        for name, spec in SETTINGS.items():
            value = getattr(self, name)
            env_name = spec.env
            if spec.secret:
                shown[env_name] = mask_url(value) if value else ""
            elif value is None:
                shown[env_name] = ""
            elif isinstance(value, tuple):
                shown[env_name] = ",".join(str(v) for v in value)
            else:
                shown[env_name] = str(value)
        return shown


    def public(self) -> dict[str, object]:
        """Effective settings as JSON values, keyed like the TOML file (`poll_interval`), secrets
        masked: what a daemon publishes in `reminderd.daemons.settings`."""
        shown: dict[str, object] = {}
        for name, spec in SETTINGS.items():
            value = getattr(self, name)
            if spec.secret:
                value = mask_url(value) if value else None
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            shown[spec.env.removeprefix("REMINDERD_").lower()] = value
        return shown


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Settings)}
"""Each Settings field's declaration, in declaration order, by field name."""


def _read(env: Mapping[str, str], name: str) -> tuple[str | None, str]:
    """A value from NAME, or from the file named by NAME_FILE (systemd credentials, k8s secrets)."""
    value = env.get(name)
    if value is not None and value.strip() != "":
        return value.strip(), "env"
    path = env.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip(), f"env file {name}_FILE"
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path}: cannot read it ({exc.strerror})") from None
    return None, "default"


OTHER_VARIABLES = {
    "REMINDERD_CONFIG": "the TOML file --config reads",
    "REMINDERD_TEST_DATABASE_URL": "the server the test suite makes its databases on",
    "REMINDERD_PG_BINDIR": "where the throwaway cluster finds PostgreSQL's programs",
    "REMINDERD_CI": "set to 1 by .ci/run: tests needing a tool (promtool) fail instead of skipping",
    "REMINDERD_API_KEY": "an app's API key where docs/api.md's SDK examples read it (the SDKs read none)",
}
"""REMINDERD_* variables that are not settings but are read all the same: never misspellings."""


def check_variable_names(env: Mapping[str, str]) -> None:
    """Refuse REMINDERD_* variables that nothing reads, naming the closest real one: a misspelt
    name must not silently keep a default."""
    known = set(OTHER_VARIABLES)
    for spec in SETTINGS.values():
        known |= {spec.env, f"{spec.env}_FILE"}
    unknown = sorted(name for name in env if name.startswith("REMINDERD_") and name not in known)
    if unknown:
        raise ConfigError("; ".join(_unknown_variable(name, known) for name in unknown))


def _unknown_variable(name: str, known: Collection[str]) -> str:
    # Compared without the prefix, which every candidate shares and which would make all look close.
    close = difflib.get_close_matches(
        name.removeprefix("REMINDERD_"), [k.removeprefix("REMINDERD_") for k in known], n=1
    )
    if close:
        return f"{name} is not a reminderd setting; did you mean REMINDERD_{close[0]}?"
    return f"{name} is not a reminderd setting (the README's configuration table lists them)"


@dataclass(frozen=True)
class _FileValue:
    """A value from the --config file, as text, and where it was written."""

    raw: str
    key: str
    line: int | None


def _read_config_file(path: str) -> dict[str, _FileValue]:
    """A TOML file with the same keys as the variables, lower-case and without REMINDERD_
    (`poll_interval = 2`), or spelled exactly like them. Unknown keys are errors: a typo must not
    silently keep a default."""
    try:
        with open(path, "rb") as handle:
            content = handle.read()
        document = tomllib.loads(content.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    lines = content.decode("utf-8").splitlines()
    by_key = {spec.env.removeprefix("REMINDERD_").lower(): name for name, spec in SETTINGS.items()}
    values: dict[str, _FileValue] = {}
    for key, value in document.items():
        line = _line_of(lines, key)
        at = f"--config {path}, line {line}"
        name = by_key.get(key.removeprefix("REMINDERD_").lower())
        if name is None:
            close = difflib.get_close_matches(key.removeprefix("REMINDERD_").lower(), by_key, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{at}: unknown setting {key!r}{hint}")
        if isinstance(value, dict):
            raise ConfigError(f"{at}: [{key}] is a table; settings are top-level keys, like poll_interval = 2")
        values[name] = _FileValue(_as_text(value), key, line)
    return values


def _as_text(value: object) -> str:
    """A TOML value as the text an environment variable would hold."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(_as_text(item) for item in value)
    if isinstance(value, float) and "e" in repr(value):
        return format(value, "f")
    return str(value)


def _line_of(lines: Sequence[str], key: str) -> int | None:
    """The line where `key = ` (or the table [key]) is written. tomllib gives no positions."""
    pattern = re.compile(rf"""^\s*(?:\[\s*)?(["']?){re.escape(key)}\1\s*[=.\]]""")
    return next((number for number, text in enumerate(lines, 1) if pattern.match(text)), None)


def _shown(spec: Setting, raw: str) -> str:
    return mask_url(raw) if spec.secret else repr(raw)


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db?password=x -> postgresql://user:***@host/db?password=***.

    Conservative: where it is unsure where a password ends (an @ after the host), all between
    :// and the last @ is hidden; a query value named like a password (password, sslpassword,
    passfile) is hidden with all after it. Text that is not a PostgreSQL URL is hidden whole.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return "<hidden>"
    span = _password_span(url)
    if span is None:
        return _mask_query(url)
    start = url.find("://") + 3
    shown = url[:start] if _unsure_password(url) else url[:span[0]]  # unsure: the user name too
    return shown + "***" + _mask_query(url[span[1]:])


_SECRET_QUERY = re.compile(r"(?<=[?&#;])([^=&?#;]*)=")


def _mask_query(text: str) -> str:
    """`text` up to the value of its first parameter named like a password, then ***."""
    for match in _SECRET_QUERY.finditer(text):
        if "pass" in unquote_plus(match[1]).lower():
            return text[:match.end()] + "***"
    return text



