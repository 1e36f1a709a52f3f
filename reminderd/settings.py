"""Settings: one frozen object, built once from the environment, failing loudly on bad values."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .exceptions import ConfigError
from .timing import BACKFILL_POLICIES, DEFAULT_BACKFILL, DEFAULT_MAX_LATENESS_S

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Setting:
    """How one field is read from the environment."""

    env: str
    help: str


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)  # may hold a password
    poll_interval_s: float = 2.0
    lookback_s: float = 86400.0
    backfill: str = DEFAULT_BACKFILL
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S
    batch_size: int = 100
    concurrency: int = 64
    lease_s: float = 300.0
    callback_timeout_s: float = 10.0
    max_attempts: int = 8
    retry_base_s: float = 5.0
    retry_cap_s: float = 3600.0
    shutdown_timeout_s: float = 30.0
    allowed_callback_networks: tuple[Network, ...] = ()
    log_level: str = "info"
    log_file: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9464
    metrics_tenant_labels: bool = True
    pgbouncer: bool = False
    listen_database_url: str | None = field(default=None, repr=False)
    retention_days: int = 7
    dead_retention_days: int = 30
    history_retention_days: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every REMINDERD_* variable; raise ConfigError naming the first bad one."""
        return cls.load(environ)[0]

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: str | None = None
    ) -> tuple[Settings, dict[str, str]]:
        """Settings from the environment over a TOML file over the defaults, and where each came
        from ("env", "env file", "config file" or "default"), keyed by variable name."""
        env = os.environ if environ is None else environ
        from_file = _read_config_file(config_file) if config_file else {}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for setting in fields(cls):
            spec = SETTINGS[setting.name]
            raw, source = _read(env, spec.env)
            if raw is None and setting.name in from_file:
                raw, source = from_file[setting.name], f"config file {config_file}"
            if raw is None:
                if setting.name == "database_url":
                    raise ConfigError(f"{spec.env} is required ({spec.help})")
                sources[spec.env] = "default"
                continue
            try:
                values[setting.name] = PARSERS[setting.name](raw)
            except ValueError as exc:
                raise ConfigError(f"{spec.env}={_shown(setting.name, raw)!s}: {exc}") from None
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
        if self.retry_cap_s < self.retry_base_s:
            raise ConfigError(
                f"REMINDERD_RETRY_CAP ({self.retry_cap_s:g}s) must be at least "
                f"REMINDERD_RETRY_BASE ({self.retry_base_s:g}s)"
            )

    def masked(self) -> dict[str, str]:
        """Effective settings for display, with the password in the database URL hidden."""
        shown: dict[str, str] = {}
        for setting in fields(self):
            value = getattr(self, setting.name)
            env_name = SETTINGS[setting.name].env
            if setting.name in {"database_url", "listen_database_url"}:
                shown[env_name] = mask_url(value) if value else ""
            elif value is None:
                shown[env_name] = ""
            elif isinstance(value, tuple):
                shown[env_name] = ",".join(str(v) for v in value)
            else:
                shown[env_name] = str(value)
        return shown


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


def _read_config_file(path: str) -> dict[str, str]:
    """A TOML file with the same keys as the variables, lower-case and without REMINDERD_
    (`poll_interval = 2`), or spelled exactly like them. Unknown keys are errors: a typo must not
    silently keep a default."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    by_key = {spec.env.removeprefix("REMINDERD_").lower(): name for name, spec in SETTINGS.items()}
    values: dict[str, str] = {}
    for key, value in document.items():
        name = by_key.get(key.removeprefix("REMINDERD_").lower())
        if name is None:
            raise ConfigError(f"--config {path}: unknown setting {key!r}")
        if isinstance(value, bool):
            values[name] = "1" if value else "0"
        elif isinstance(value, list):
            values[name] = ",".join(str(item) for item in value)
        else:
            values[name] = str(value)
    return values


def _shown(field_name: str, raw: str) -> str:
    return mask_url(raw) if field_name in {"database_url", "listen_database_url"} else repr(raw)


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db?password=x -> postgresql://user:***@host/db?password=***.

    Text that is not a URL this can take apart is hidden whole: it may be a password.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<hidden>"
    if not url.startswith(("postgresql://", "postgres://")):
        return "<hidden>"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if password is None and not any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = parts.query
    if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        query = urlencode(
            [(key, "***" if key.lower() in _SECRET_PARAMETERS else value) for key, value in pairs],
            safe="*/",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_PARAMETERS = {"password", "sslpassword"}


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
    return _number(float, minimum=minimum, maximum=maximum)


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
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql://")
    return raw


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


SETTINGS: dict[str, Setting] = {
    "database_url": Setting("REMINDERD_DATABASE_URL", "PostgreSQL URL, postgresql://…"),
    "poll_interval_s": Setting("REMINDERD_POLL_INTERVAL", "seconds between polls when idle"),
    "lookback_s": Setting(
        "REMINDERD_LOOKBACK", "hard limit, seconds: nothing later than this is ever sent, whatever the policy"
    ),
    "backfill": Setting(
        "REMINDERD_BACKFILL", "after an outage, by default: send (if at most max lateness late), latest or skip"
    ),
    "max_lateness_s": Setting("REMINDERD_MAX_LATENESS", "seconds late a message may still be sent, by default"),
    "batch_size": Setting("REMINDERD_BATCH_SIZE", "rows claimed per query"),
    "concurrency": Setting("REMINDERD_CONCURRENCY", "callbacks in flight at once"),
    "lease_s": Setting("REMINDERD_LEASE", "seconds a claim is held before another daemon may retry"),
    "callback_timeout_s": Setting("REMINDERD_CALLBACK_TIMEOUT", "seconds per callback request"),
    "max_attempts": Setting("REMINDERD_MAX_ATTEMPTS", "attempts before dead-lettering"),
    "retry_base_s": Setting("REMINDERD_RETRY_BASE", "first retry delay ceiling, seconds"),
    "retry_cap_s": Setting("REMINDERD_RETRY_CAP", "largest retry delay, seconds"),
    "shutdown_timeout_s": Setting("REMINDERD_SHUTDOWN_TIMEOUT", "seconds to drain on SIGTERM"),
    "allowed_callback_networks": Setting(
        "REMINDERD_ALLOWED_CALLBACK_NETWORKS", "CIDRs callbacks may reach despite being private"
    ),
    "log_level": Setting("REMINDERD_LOG_LEVEL", "debug, info, warning or error"),
    "log_file": Setting("REMINDERD_LOG_FILE", "write logs to this file (reopened on SIGHUP)"),
    "http_host": Setting("REMINDERD_HTTP_HOST", "address of /healthz, /readyz and /metrics"),
    "http_port": Setting("REMINDERD_HTTP_PORT", "port of /healthz, /readyz and /metrics; 0 disables"),
    "metrics_tenant_labels": Setting(
        "REMINDERD_METRICS_TENANT_LABELS", "label callback metrics by tenant (0 for many tenants)"
    ),
    "pgbouncer": Setting(
        "REMINDERD_PGBOUNCER", "1 when the database URL goes through PgBouncer in transaction mode"
    ),
    "listen_database_url": Setting(
        "REMINDERD_LISTEN_DATABASE_URL", "direct PostgreSQL URL for LISTEN (with REMINDERD_PGBOUNCER)"
    ),
    "retention_days": Setting("REMINDERD_RETENTION_DAYS", "days sent, cancelled and expired rows are kept"),
    "dead_retention_days": Setting("REMINDERD_DEAD_RETENTION_DAYS", "days dead letters are kept"),
    "history_retention_days": Setting(
        "REMINDERD_HISTORY_RETENTION_DAYS", "days deliveries and audit events are kept"
    ),
}

PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _database_url,
    # The NOTIFY trigger wakes daemons for rows due within 10 minutes; a longer poll could miss one.
    "poll_interval_s": _seconds(0.01, 600),
    "lookback_s": _seconds(1, 30 * 86400),
    "backfill": _backfill,
    "max_lateness_s": _seconds(0, 30 * 86400),
    "batch_size": _number(int, minimum=1, maximum=10_000),
    "concurrency": _number(int, minimum=1, maximum=10_000),
    "lease_s": _seconds(1, 86400),
    "callback_timeout_s": _seconds(0.1, 3600),
    "max_attempts": _number(int, minimum=1, maximum=1000),
    "retry_base_s": _seconds(0, 86400),
    "retry_cap_s": _seconds(0, 7 * 86400),
    "shutdown_timeout_s": _seconds(0, 3600),
    "allowed_callback_networks": _networks,
    "log_level": _log_level,
    "log_file": _path,
    "http_host": _host,
    "http_port": _number(int, minimum=0, maximum=65535),
    "metrics_tenant_labels": _flag,
    "pgbouncer": _flag,
    "listen_database_url": _database_url,
    "retention_days": _number(int, minimum=1, maximum=3650),
    "dead_retention_days": _number(int, minimum=1, maximum=3650),
    "history_retention_days": _number(int, minimum=1, maximum=3650),
}
