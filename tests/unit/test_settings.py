"""Unit tests for reminderd.settings: defaults, validation naming the variable, *_FILE, masking."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from reminderd.exceptions import ConfigError
from reminderd.settings import OTHER_VARIABLES, SETTINGS, Settings, mask_url

PASSWORD = "hunter2-s3cret"
URL = f"postgresql://app:{PASSWORD}@db.example:5432/reminderd"


def load(**variables: str) -> Settings:
    """Settings from an explicit environment holding URL plus REMINDERD_<name>=value for each keyword."""
    env = {"REMINDERD_DATABASE_URL": URL}
    env.update({f"REMINDERD_{name}": value for name, value in variables.items()})
    return Settings.from_env(env)


# Defaults


def test_defaults_match_the_documented_values() -> None:
    settings = load()
    assert settings.database_url == URL
    assert settings.poll_interval_s == 2
    assert settings.lookback_s == 86400
    assert (settings.backfill, settings.max_lateness_s) == ("send", 1800)
    assert settings.batch_size == 100
    assert settings.concurrency == 64
    assert settings.lease_s == 300
    assert settings.callback_timeout_s == 10
    assert (settings.heartbeat_s, settings.dead_after_s) == (5, 15)
    assert settings.max_attempts == 8
    assert settings.retry_base_s == 5
    assert settings.retry_cap_s == 3600
    assert settings.shutdown_timeout_s == 30
    assert settings.allowed_callback_networks == ()
    assert settings.log_level == "info"


def test_blank_values_fall_back_to_defaults() -> None:
    settings = load(BATCH_SIZE="   ", CONCURRENCY="")
    assert (settings.batch_size, settings.concurrency) == (100, 64)


def test_unrelated_environment_is_ignored() -> None:
    # REMINDERD_UNKNOWN was here: since issue 10 an unknown REMINDERD_* name is refused (below).
    settings = Settings.from_env(
        {"REMINDERD_DATABASE_URL": URL, "PATH": "/bin", "REMINDERDX_UNKNOWN": "x", "MY_REMINDERD_UNKNOWN": "x"}
    )
    assert settings.batch_size == 100


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("REMINDERD_ALLOWED_CALLBACK_NETWORK",
         "REMINDERD_ALLOWED_CALLBACK_NETWORK is not a reminderd setting; "
         "did you mean REMINDERD_ALLOWED_CALLBACK_NETWORKS?"),
        ("REMINDERD_DATABSE_URL",
         "REMINDERD_DATABSE_URL is not a reminderd setting; did you mean REMINDERD_DATABASE_URL?"),
        ("REMINDERD_LOGLEVEL",
         "REMINDERD_LOGLEVEL is not a reminderd setting; did you mean REMINDERD_LOG_LEVEL?"),
        ("REMINDERD_LEASE_FIEL",
         "REMINDERD_LEASE_FIEL is not a reminderd setting; did you mean REMINDERD_LEASE_FILE?"),
        ("REMINDERD_UNKNOWN",
         "REMINDERD_UNKNOWN is not a reminderd setting (the README's configuration table lists them)"),
    ],
)
def test_a_misspelt_variable_is_a_config_error_naming_the_closest(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REMINDERD_DATABASE_URL": URL, name: "1"})
    assert str(raised.value) == message


def test_a_misspelt_database_url_is_named_before_the_missing_one() -> None:
    with pytest.raises(ConfigError, match="did you mean REMINDERD_DATABASE_URL"):
        Settings.from_env({"REMINDERD_DATABASE_URI": URL})


def test_every_misspelling_is_named_on_one_line() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REMINDERD_DATABASE_URL": URL, "REMINDERD_LOGLEVEL": "", "REMINDERD_CONCURENCY": ""})
    assert "\n" not in str(raised.value)
    assert "REMINDERD_CONCURENCY" in str(raised.value) and "REMINDERD_LOGLEVEL" in str(raised.value)


@pytest.mark.parametrize(
    "name", ["REMINDERD_CONFIG", "REMINDERD_TEST_DATABASE_URL", "REMINDERD_PG_BINDIR", "REMINDERD_LEASE_FILE"]
)
def test_variables_read_elsewhere_are_not_misspellings(name: str, tmp_path: Path) -> None:
    (tmp_path / "value").write_text("300", encoding="utf-8")
    env = {"REMINDERD_DATABASE_URL": URL, name: str(tmp_path / "value")}
    assert Settings.from_env(env).batch_size == 100


def test_every_variable_the_project_reads_or_documents_is_known() -> None:
    """A REMINDERD_* name used by the code, the bench or the docs but missing from the declaration
    or OTHER_VARIABLES would be refused at start."""
    root = Path(__file__).parents[2]
    places = ["reminderd/**/*.py", "bench/**/*.py", "systemd/*", "examples/**/*", "docs/*.md", "README.md",
              "tests/conftest.py", "tests/support.py"]
    used: set[str] = set()
    for pattern in places:
        for path in root.glob(pattern):
            if path.is_file():
                used |= set(re.findall(r"REMINDERD_[A-Z_]*[A-Z]", path.read_text(encoding="utf-8")))
    known = set(OTHER_VARIABLES)
    for spec in SETTINGS.values():
        known |= {spec.env, f"{spec.env}_FILE"}
    assert used - known == {
        "REMINDERD_NAME",  # bench's placeholder in --daemon-env REMINDERD_NAME=VALUE
        "REMINDERD_ALLOWED_CALLBACK_NETWORK",  # the README's example of a misspelling
    }


# Valid overrides


def test_overrides_are_parsed_to_their_types() -> None:
    settings = load(
        POLL_INTERVAL="0.5",
        LOOKBACK="60",
        BATCH_SIZE="250",
        CONCURRENCY="8",
        LEASE="90",
        CALLBACK_TIMEOUT="2.5",
        MAX_ATTEMPTS="3",
        RETRY_BASE="1",
        RETRY_CAP="60",
        SHUTDOWN_TIMEOUT="0",
        LOG_LEVEL="DEBUG",
    )
    assert settings.poll_interval_s == 0.5
    assert settings.lookback_s == 60
    assert settings.batch_size == 250 and isinstance(settings.batch_size, int)
    assert settings.concurrency == 8
    assert settings.lease_s == 90
    assert settings.callback_timeout_s == 2.5
    assert settings.max_attempts == 3
    assert (settings.retry_base_s, settings.retry_cap_s) == (1, 60)
    assert settings.shutdown_timeout_s == 0
    assert settings.log_level == "debug"


def test_allowed_networks_parse_a_comma_separated_list() -> None:
    settings = load(ALLOWED_CALLBACK_NETWORKS=" 10.0.0.0/8, fd00::/8,,127.0.0.1, 192.168.1.7/24 ")
    assert settings.allowed_callback_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("192.168.1.0/24"),  # host bits are tolerated, not an error
    )


def test_postgres_scheme_alias_is_accepted() -> None:
    url = "postgres://app@db/reminderd"
    assert Settings.from_env({"REMINDERD_DATABASE_URL": url}).database_url == url


# Errors name the variable


@pytest.mark.parametrize("environ", [{}, {"REMINDERD_DATABASE_URL": "   "}, {"DATABASE_URL": URL}])
def test_missing_database_url_is_a_config_error_naming_it(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="REMINDERD_DATABASE_URL is required"):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BATCH_SIZE", "abc"),
        ("BATCH_SIZE", "0"),
        ("BATCH_SIZE", "1.5"),
        ("BATCH_SIZE", "10001"),
        ("CONCURRENCY", "0"),
        ("CONCURRENCY", "-4"),
        ("POLL_INTERVAL", "0"),
        ("POLL_INTERVAL", "601"),
        ("POLL_INTERVAL", "fast"),
        ("LOOKBACK", "0.5"),
        ("LEASE", "5 minutes"),  # was "5m", a duration now (see test_durations_are_read_one_way)
        ("LEASE", "1.5h"),
        ("LEASE", "-5m"),
        ("CALLBACK_TIMEOUT", "0"),
        ("MAX_ATTEMPTS", "0"),
        ("MAX_ATTEMPTS", "1001"),
        ("RETRY_BASE", "-1"),
        ("RETRY_CAP", "nan"),
        ("SHUTDOWN_TIMEOUT", "inf"),
        ("ALLOWED_CALLBACK_NETWORKS", "10.0.0.0/33"),
        ("ALLOWED_CALLBACK_NETWORKS", "10.0.0.0/8,example.com"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_URL", "mysql://app@db/reminderd"),
    ],
)
def test_bad_value_is_a_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(**{name: value})
    assert str(raised.value).startswith(f"REMINDERD_{name}=")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), ("300s", 300), ("2.5", 2.5), ("1.5s", 1.5), ("5m", 300), ("1h30m", 5400), ("1h 30m", 5400),
     ("2H", 7200), ("1d", 86400)],
)
def test_durations_are_read_one_way(text: str, seconds: float) -> None:
    settings = load(LEASE=text, LOOKBACK=text, MAX_LATENESS=text, RETRY_CAP=text, CALLBACK_TIMEOUT="1",
                    RETRY_BASE="1")
    read = (settings.lease_s, settings.lookback_s, settings.max_lateness_s, settings.retry_cap_s)
    assert read == (seconds,) * 4


def test_a_bad_duration_says_what_a_duration_looks_like() -> None:
    with pytest.raises(ConfigError) as raised:
        load(LEASE="5 minutes")
    assert str(raised.value) == (
        "REMINDERD_LEASE='5 minutes': use a duration such as 90s, 15m, 2h, 3d or 1h30m "
        "(a bare number is seconds)"
    )
    with pytest.raises(ConfigError, match=r"^REMINDERD_LEASE='-5m': must be between 1 and 86400 seconds$"):
        load(LEASE="-5m")


def test_bad_value_error_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"REMINDERD_CONCURRENCY='0': must be between 1 and 10000"):
        load(CONCURRENCY="0")
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.0/33' is not a CIDR network"):
        load(ALLOWED_CALLBACK_NETWORKS="10.0.0.0/33")


@pytest.mark.parametrize(("lease", "timeout"), [("10", "10"), ("5", "10"), ("30", "31")])
def test_lease_not_longer_than_callback_timeout_is_rejected(lease: str, timeout: str) -> None:
    with pytest.raises(ConfigError, match=r"REMINDERD_LEASE .* must be longer than REMINDERD_CALLBACK_TIMEOUT"):
        load(LEASE=lease, CALLBACK_TIMEOUT=timeout)


def test_lease_just_longer_than_callback_timeout_is_accepted() -> None:
    assert load(LEASE="11", CALLBACK_TIMEOUT="10").lease_s == 11


@pytest.mark.parametrize(("heartbeat", "dead_after"), [("5", "14.9"), ("5", "5"), ("1m", "2m")])
def test_dead_after_shorter_than_three_heartbeats_is_rejected(heartbeat: str, dead_after: str) -> None:
    with pytest.raises(ConfigError, match=r"REMINDERD_DEAD_AFTER .* must be at least 3 heartbeats"):
        load(HEARTBEAT=heartbeat, DEAD_AFTER=dead_after)


def test_dead_after_of_exactly_three_heartbeats_is_accepted() -> None:
    settings = load(HEARTBEAT="1.5", DEAD_AFTER="4.5s")
    assert (settings.heartbeat_s, settings.dead_after_s) == (1.5, 4.5)


def test_public_settings_are_json_values_keyed_like_the_config_file_with_the_password_masked() -> None:
    settings = load(HEARTBEAT="2", ALLOWED_CALLBACK_NETWORKS="10.0.0.0/8")
    public = settings.public()
    assert json.loads(json.dumps(public)) == public
    assert public["heartbeat"] == 2.0 and public["dead_after"] == 15.0 and public["concurrency"] == 64
    assert public["allowed_callback_networks"] == ["10.0.0.0/8"]
    assert public["database_url"] == mask_url(URL) and public["listen_database_url"] is None
    assert set(public) == {spec.env.removeprefix("REMINDERD_").lower() for spec in SETTINGS.values()}


def test_retry_cap_below_retry_base_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"REMINDERD_RETRY_CAP .* must be at least REMINDERD_RETRY_BASE"):
        load(RETRY_BASE="60", RETRY_CAP="30")


@pytest.mark.parametrize("port", ["notaport", "99999", "0", "-1"])
def test_a_database_url_with_a_bad_port_is_a_config_error(port: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REMINDERD_DATABASE_URL": f"postgresql://app:{PASSWORD}@db:{port}/app"})
    assert str(raised.value) == (
        f"REMINDERD_DATABASE_URL=postgresql://app:***@db:{port}/app: "
        f"port {port!r} is not a port number (1-65535)"
    )


@pytest.mark.parametrize(
    "url",
    ["postgresql://app@db:5432/app", "postgresql://app@db/app", "postgresql://app@[::1]:5432/app",
     "postgresql://app@h1:5432,h2:5433/app", "postgresql:///app?host=/run/postgresql",
     f"postgresql://app:{PASSWORD}:x@db/app"],
)
def test_database_urls_with_good_ports_are_accepted(url: str) -> None:
    assert Settings.from_env({"REMINDERD_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://app:{PASSWORD}@127.0.0.1:5432:5/app", "port '5432:5' is not a port number (1-65535)"),
        (f"postgresql://app:{PASSWORD}@db:5432,/app",
         "an empty host is not a host or host:port (an IPv6 address goes in brackets: [::1]:5432)"),
        (f"postgresql://app:{PASSWORD}@[::1]x:5432/app",
         "'[::1]x:5432' is not a host or host:port (an IPv6 address goes in brackets: [::1]:5432)"),
        (f"postgresql://app:{PASSWORD}@[::1/app",
         "a host in [brackets] is not closed: write an IPv6 address as [::1]:5432"),
        (f"postgresql://app:{PASSWORD}@db:5432/app?sslmode",
         "its query is not name=value pairs joined by &, such as ?sslmode=require"),
        (f"postgresql://app:{PASSWORD}@db/app?sslmode=require&&application_name=x",
         "its query is not name=value pairs joined by &, such as ?sslmode=require"),
        ("postgresql:///app?host=/run/postgresql&port=5432x", "port '5432x' is not a port number (1-65535)"),
        ("postgresql:///app?host=db:5432:5", "port '5432:5' is not a port number (1-65535)"),
        (f"postgresql://app:{PASSWORD}@secret@db/app", "the user name or password holds an @: write it as %40"),
    ],
    ids=["two-ports", "empty-host", "after-brackets", "unclosed-bracket", "no-value", "empty-pair",
         "query-port", "query-host", "unescaped-at"],
)
def test_a_malformed_database_url_is_a_config_error_saying_what_is_wrong(url: str, problem: str) -> None:
    """asyncpg reads these as a traceback (int('5432:5'), an IndexError), or reads the wrong thing
    ([::1]x is ::1): refused up front, the password never shown."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REMINDERD_DATABASE_URL": url})
    message = str(raised.value)
    assert message.startswith("REMINDERD_DATABASE_URL=") and message.endswith(f": {problem}")
    assert PASSWORD not in message and "secret" not in message


@pytest.mark.parametrize(
    "url",
    ["postgresql://app@db:/app", "postgresql://app@/app", "postgresql://%2Frun%2Fpostgresql/app",
     "postgresql:///app?host=/run/postgresql&port=5433", "postgresql://app@db/app?sslmode=require&target_session_attrs=any",
     "postgresql://app@db/app?application_name=", "postgresql://app@h1,h2:5433,[::1]/app"],
)
def test_database_urls_of_every_legitimate_shape_are_accepted(url: str) -> None:
    assert Settings.from_env({"REMINDERD_DATABASE_URL": url}).database_url == url


# *_FILE


def test_database_url_is_read_from_the_named_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "database-url"
    secret_file.write_text(f"  {URL}\n", encoding="utf-8")
    settings = Settings.from_env({"REMINDERD_DATABASE_URL_FILE": str(secret_file)})
    assert settings.database_url == URL


def test_variable_takes_precedence_over_its_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "database-url"
    secret_file.write_text("postgresql://other@elsewhere/db", encoding="utf-8")
    settings = Settings.from_env(
        {"REMINDERD_DATABASE_URL": URL, "REMINDERD_DATABASE_URL_FILE": str(secret_file)}
    )
    assert settings.database_url == URL


def test_other_settings_can_come_from_files_too(tmp_path: Path) -> None:
    (tmp_path / "batch").write_text("7\n", encoding="utf-8")
    assert load(BATCH_SIZE_FILE=str(tmp_path / "batch")).batch_size == 7


def test_unreadable_file_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"REMINDERD_DATABASE_URL_FILE={missing}: cannot read it"):
        Settings.from_env({"REMINDERD_DATABASE_URL_FILE": str(missing)})


def test_bad_value_from_a_file_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "batch").write_text("lots", encoding="utf-8")
    with pytest.raises(ConfigError, match="REMINDERD_BATCH_SIZE="):
        load(BATCH_SIZE_FILE=str(tmp_path / "batch"))


# Masking the password


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:hunter2@db:5432/reminderd", "postgresql://app:***@db:5432/reminderd"),
        ("postgres://app:p@ss:w@rd@db/reminderd", "postgres://app:***@db/reminderd"),
        ("postgresql://app:@db/reminderd", "postgresql://app:***@db/reminderd"),
        ("postgresql://app@db/reminderd", "postgresql://app@db/reminderd"),
        ("postgresql://db/reminderd", "postgresql://db/reminderd"),
        ("postgresql:///reminderd?host=/run/postgresql", "postgresql:///reminderd?host=/run/postgresql"),
    ],
)
def test_mask_url_hides_the_password_and_keeps_the_rest(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_hides_a_password_given_as_a_query_parameter() -> None:
    # asyncpg and libpq accept the password as ?password=…; the daemon logs masked() at startup.
    masked = mask_url(f"postgresql://app@db/reminderd?sslmode=require&password={PASSWORD}")
    assert PASSWORD not in masked, f"BUG: mask_url leaves a query-string password in clear: {masked}"


def test_masked_settings_do_not_contain_the_password() -> None:
    shown = load(ALLOWED_CALLBACK_NETWORKS="10.0.0.0/8,fd00::/8").masked()
    assert shown["REMINDERD_DATABASE_URL"] == "postgresql://app:***@db.example:5432/reminderd"
    assert shown["REMINDERD_ALLOWED_CALLBACK_NETWORKS"] == "10.0.0.0/8,fd00::/8"
    assert shown["REMINDERD_BATCH_SIZE"] == "100"
    assert not any(PASSWORD in value for value in shown.values())


@pytest.mark.parametrize(
    "bad_url",
    [
        f"mysql://app:{PASSWORD}@db/reminderd",
        f"postgresql:/app:{PASSWORD}@db/reminderd",
        f"app:{PASSWORD}@db/reminderd",
        f"host=db user=app password={PASSWORD}",
    ],
    ids=["wrong-scheme", "one-slash", "no-scheme", "libpq-keywords"],
)
def test_bad_database_url_error_does_not_leak_the_password(bad_url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REMINDERD_DATABASE_URL": bad_url})
    message = str(raised.value)
    assert message.startswith("REMINDERD_DATABASE_URL=")
    assert PASSWORD not in message, f"BUG: the configuration error prints the password: {message}"


# The README's configuration table is the declaration


def documented_default(name: str) -> str:
    """How the README shows a setting's default: the text that, set as the variable, gives it."""
    declared = next(f for f in fields(Settings) if f.name == name)
    value = declared.default
    if value is MISSING or value is None or value == ():
        return SETTINGS[name].unset
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{spec.env}` | {documented_default(name)} | {spec.help} |" for name, spec in SETTINGS.items()]
    return "\n".join(rows)


def test_the_readme_configuration_table_is_the_declaration() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    table = settings_table()
    assert table in readme, (
        "README.md's configuration table differs from reminderd/settings.py: replace it with\n\n" + table
    )


@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_documented_default_reads_back_as_the_default(name: str) -> None:
    shown = documented_default(name)
    if not shown.startswith("`"):
        assert shown.startswith("(") and shown.endswith(")"), f"{name}: say what an unset value means"
        return
    value = SETTINGS[name].parse(shown.strip("`"))
    assert value == getattr(load(), name)


def test_each_setting_has_its_own_variable_and_a_meaning() -> None:
    names = [spec.env for spec in SETTINGS.values()]
    assert len(set(names)) == len(names) == len(fields(Settings))
    assert all(name.startswith("REMINDERD_") and name.isupper() for name in names)
    assert all(spec.help for spec in SETTINGS.values())


# The --config file


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "reminderd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_bad_value_in_the_config_file_is_named_by_its_key_and_line(tmp_path: Path) -> None:
    path = config_file(tmp_path, '# reminderd\n\nconcurrency = 8\n  lease = "soon"   # five minutes\n')
    with pytest.raises(ConfigError) as raised:
        Settings.load({"REMINDERD_DATABASE_URL": URL}, path)
    assert str(raised.value) == (
        f"--config {path}, line 4: lease = 'soon': use a duration such as 90s, 15m, 2h, 3d or 1h30m "
        "(a bare number is seconds)"
    )


def test_a_secret_in_the_config_file_is_not_shown_in_its_error(tmp_path: Path) -> None:
    path = config_file(tmp_path, f'database_url = "mysql://app:{PASSWORD}@db/app"\n')
    with pytest.raises(ConfigError) as raised:
        Settings.load({}, path)
    assert str(raised.value) == f"--config {path}, line 1: database_url = <hidden>: must start with postgresql://"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_size = 1\npol_interval = 5\n",
         "line 2: unknown setting 'pol_interval'; did you mean poll_interval?"),
        ("[daemon]\nlease = 5\n", "line 1: unknown setting 'daemon'"),
        ("[lease]\nseconds = 5\n",
         "line 1: [lease] is a table; settings are top-level keys, like poll_interval = 2"),
        ("lease = \n", "not valid TOML (Invalid value (at line 1, column 9))"),
    ],
)
def test_config_file_mistakes_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        Settings.load({"REMINDERD_DATABASE_URL": URL}, path)
    assert str(raised.value).startswith(f"--config {path}")
    assert str(raised.value).endswith(message)


def test_config_file_values_read_like_the_variables(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'lease = "5m"\nREMINDERD_POLL_INTERVAL = 0.5\npgbouncer = true\n'
                                 'allowed_callback_networks = ["10.0.0.0/8", "fd00::/8"]\n"batch_size" = 7\n')
    settings, sources = Settings.load({"REMINDERD_DATABASE_URL": URL}, path)
    assert (settings.lease_s, settings.poll_interval_s, settings.pgbouncer, settings.batch_size) == (
        300, 0.5, True, 7)
    assert len(settings.allowed_callback_networks) == 2
    assert sources["REMINDERD_LEASE"] == f"config file {path}"


def test_only_reads_the_named_settings_but_checks_every_name(tmp_path: Path) -> None:
    path = config_file(tmp_path, f'database_url = "{URL}"\nbatch_size = "lots"\n')
    settings, _ = Settings.load({"REMINDERD_CONCURRENCY": "0"}, path, only=("database_url",))
    assert (settings.database_url, settings.batch_size, settings.concurrency) == (URL, 100, 64)
    with pytest.raises(ConfigError, match="did you mean REMINDERD_CONCURRENCY"):
        Settings.load({"REMINDERD_CONCURENCY": "0"}, path, only=("database_url",))


@pytest.mark.parametrize("url", ["postgresql://app:pa/ss@db/app", "postgresql://app:pa?ss@db/app",
                                 "postgresql://app:pa#ss@db/app", "postgresql://app:p@a/ss@db/app"])
def test_mask_url_hides_a_password_that_ends_the_host_early(url: str) -> None:
    """A / ? or # in a password ends urlsplit's host there (host app, port pa): all before the
    last @ is hidden, and the URL is refused saying how to write it."""
    assert mask_url(url) == "postgresql://***@db/app"
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"REMINDERD_DATABASE_URL": url})
    assert "pa" not in str(raised.value).replace("password", "")
