"""A database URL's password never shows, whatever it holds: in the error that refuses the URL, in
`reminderd config`, or in the daemon's start-up lines. A password holding /, ? or # ends the URL's
host early (`app:Zq?k=9mP@db` is host `app`, port `Zq`), so what the parser calls the host, the
port, the database or the query may be the password's rest."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import HOSTILE_URL_CHARACTERS, PASSWORD_MARKS, assert_password_hidden, url_with_password

from reminderd.cli import main
from reminderd.exceptions import ConfigError
from reminderd.settings import Settings, mask_url

PASSWORDS = st.text(alphabet=HOSTILE_URL_CHARACTERS + PASSWORD_MARKS, min_size=4, max_size=24).filter(
    lambda password: any(c in PASSWORD_MARKS for c in password))
_url = url_with_password
_assert_hidden = assert_password_hidden


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("REMINDERD_")}
    with mock.patch.dict(os.environ, {**clean, **variables}, clear=True):
        yield


def _cli(argv: list[str], **variables: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with _environment(**variables), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue() + err.getvalue()


REVIEWED = [  # the reviewer's: '?' then '=' (the @ then falls in a query value), a / with a query password
    "Zq?k=9mP", "pw/x@127.0.0.1/app?password=Hunter2secret",
]


@given(password=PASSWORDS)
@example(password=REVIEWED[0])
@example(password="QX@Z/J7")  # an @ then a host that parses, then a /
@example(password="7890/QXZ")  # host `app`, port 7890, database `QXZ@127.0.0.1:5432/app`
@example(password="[QX]Z:J")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_piece_of_a_password_shows_in_errors_or_in_reminderd_config(password: str) -> None:
    url = _url(password)
    try:
        Settings.load({"REMINDERD_DATABASE_URL": url}, only={"database_url"})
    except ConfigError as exc:
        _assert_hidden(password, url, str(exc))
    _assert_hidden(password, url, mask_url(url))
    for argv, variables in [
        (["config", "--database-url", url], {}),
        (["config"], {"REMINDERD_DATABASE_URL": url}),
    ]:
        status, output = _cli(argv, **variables)
        assert status in {0, 78}, output
        _assert_hidden(password, url, output)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "url")
        path.write_text(url + "\n", encoding="utf-8")
        status, output = _cli(["config"], REMINDERD_DATABASE_URL_FILE=str(path))
    assert status in {0, 78}, output
    _assert_hidden(password, url, output)


@pytest.mark.parametrize("url", [
    "postgresql://app:pw/x@127.0.0.1/app?password=Hunter2secret",
    "postgresql://app@127.0.0.1/app?sslmode=require&password=Hunter2secret&x=1",
    "postgresql://app@127.0.0.1/app?PassWord=Hunter2secret",
    "postgresql://app@127.0.0.1/app?p%61ssword=Hunter2secret",
    "postgresql://app@127.0.0.1/app?sslpassword=Hunter2secret",
    "postgresql://app@127.0.0.1/app?password=Hunter2&secret#x",
])
def test_a_password_in_the_query_is_hidden_whatever_comes_before_it(url: str) -> None:
    assert "Hunter2" not in mask_url(url) and "secret" not in mask_url(url), mask_url(url)


def test_a_query_value_after_a_password_is_not_echoed_when_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load({"REMINDERD_DATABASE_URL": "postgresql://app@127.0.0.1/app?password=a&port=Hunter2"},
                      only={"database_url"})
    assert "Hunter2" not in str(raised.value) and str(raised.value).endswith(
        "its port parameter is not a port (not shown: it follows a password)")


@pytest.mark.parametrize("url", [
    "postgresql://reminderd@127.0.0.1:53083/my@db", "postgresql://127.0.0.1/my@db",
    "postgresql://app@127.0.0.1/app?application_name=me@corp", "postgresql:///app?host=/run/user@1000/pg",
])
def test_an_at_after_a_user_without_a_password_belongs_to_the_database_name_or_query(url: str) -> None:
    """Taken (it was on main; asyncpg connects to the database `my@db`) and shown whole."""
    settings, _ = Settings.load({"REMINDERD_DATABASE_URL": url}, only={"database_url"})
    assert settings.database_url == url and mask_url(url) == url


def test_a_bad_port_before_a_database_name_with_an_at_is_named_with_user_and_host() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load({"REMINDERD_DATABASE_URL": "postgresql://reminderd@127.0.0.1:0/my@db"},
                      only={"database_url"})
    assert str(raised.value) == ("REMINDERD_DATABASE_URL=postgresql://reminderd@127.0.0.1:0/my@db: "
                                 "port '0' is not a port number (1-65535)")


@pytest.mark.parametrize("url", ["postgresql://app:pw@127.0.0.1:5432/my@db",
                                 "postgresql://app:pw@127.0.0.1/app?application_name=me@corp"])
def test_a_password_then_an_at_after_the_host_is_refused_as_unsure(url: str) -> None:
    """`pw@127.0.0.1:5432/my` may be the password: read as asyncpg reads it, its rest would go to
    the server as a database name or a setting and come back in an error. Refused, all hidden."""
    with pytest.raises(ConfigError, match="an @ comes after the host") as raised:
        Settings.load({"REMINDERD_DATABASE_URL": url}, only={"database_url"})
    assert "pw" not in str(raised.value).replace("password", "")
