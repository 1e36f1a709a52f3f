"""Every error reminderd raises on purpose. A class's docstring is its default message."""

from __future__ import annotations

import re

# Exit statuses of the command line and the daemon.
EX_USAGE = 2  # bad command-line input (argparse's own status)
EX_CONFIG = 78  # sysexits.h: a configuration error; systemd should not restart-loop on it


class ReminderdError(Exception):
    """reminderd failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class InvalidInput(Exception):
    """Bad input: the message names the field (`field`, as the caller calls it) and what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(ReminderdError):
    """The configuration is invalid: fix the named REMINDERD_* setting."""


class DatabaseMisconfigured(ConfigError):
    """The database refused the connection for a reason waiting cannot fix (no such database or
    role, a wrong password, pg_hba.conf, SSL): the URL in the named setting must change.

    str() is "SETTING: problem"; `one_line()` is "problem (SETTING)", what the CLI prints."""

    def __init__(
        self, problem: str, *, setting: str = "REMINDERD_DATABASE_URL", hint: str | None = None
    ) -> None:
        super().__init__(f"{setting}: {problem}" + (f" ({hint})" if hint else ""))
        self.problem = problem
        self.setting = setting
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.problem} ({self.setting}" + (f"; {self.hint})" if self.hint else ")")


class CallbackRefused(ReminderdError):
    """The callback address is not allowed (not http(s), or not a public address): every attempt
    would be refused, so the row is dead-lettered at once."""


class CallbackFailed(ReminderdError):
    """The callback's HTTP exchange failed before a complete answer (connection, TLS or protocol):
    a retry may succeed."""


class DatabaseError(ReminderdError):
    """The database failed."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot take the call right now (refused, reset, timed out, restarting, failing
    over to a read-only node, a conflict between transactions): retry.

    str() names the exception ("ConnectionRefusedError: ..."), for logs; at connect, `reason`
    says it in words ("connection refused"), `where` names the host and port tried and `setting`
    the URL's setting, for `one_line()`."""

    def __init__(
        self, message: str | None = None, *, reason: str | None = None, where: str | None = None,
        setting: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.where = where
        self.setting = setting

    def one_line(self) -> str:
        at = f" at {self.where}" if self.where else ""
        setting = f" ({self.setting})" if self.setting else ""
        return f"cannot reach the database{at}: {self.reason or self}{setting}"


class DatabaseRefused(DatabaseError):
    """The database refused a statement; its SQLSTATE, message, DETAIL and HINT say why."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, detail: str | None = None, hint: str | None = None,
        constraint: str | None = None, column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.constraint = constraint  # the constraint a 23xxx violation names, if any
        self.column = column  # the error's column field: "contacts[17]" for an element of a contacts batch

    @property
    def batch_element(self) -> int | None:
        """The element of a contacts batch (from 1) that upsert_contacts or upsert_contact_rows
        refused, as its error's column field names it ("contacts[17]"); None for any other refusal."""
        named = _BATCH_ELEMENT.fullmatch(self.column or "")
        return int(named.group(1)) if named else None

    @property
    def element_said(self) -> str:
        """The refusal of an element without its number in the batch (which the caller says as its
        own index or line): '(contact_id "x") has unknown country "ZZ"'."""
        return self.message.removeprefix(f"contact {self.batch_element} of the batch ")


_BATCH_ELEMENT = re.compile(r"contacts\[([1-9][0-9]{0,9})\]")


class RoleRefused(DatabaseRefused):
    """PostgreSQL's 42501 (permission denied) for a call only some roles may make: the URL's role,
    not the input, is wrong; `roles` says which roles may, for the hint."""

    def __init__(self, refused: DatabaseRefused, roles: str) -> None:
        super().__init__(refused.message, sqlstate=refused.sqlstate, detail=refused.detail,
                         constraint=refused.constraint, column=refused.column)
        self.roles = roles


class SchemaMissing(DatabaseRefused):
    """The reminderd schema is missing or out of date: run `reminderd migrate`."""
