"""Every error reminderd raises on purpose. A class's docstring is its default message."""

from __future__ import annotations

# Exit statuses of the command line and the daemon.
EX_USAGE = 2  # bad command-line input (argparse's own status)
EX_CONFIG = 78  # sysexits.h: a configuration error; systemd should not restart-loop on it


class ReminderdError(Exception):
    """reminderd failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ConfigError(ReminderdError):
    """The configuration is invalid: fix the named REMINDERD_* setting."""


class DeliveryError(ReminderdError):
    """The callback was not delivered.

    `permanent` errors dead-letter at once; the retry policy decides about the others.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class CallbackRefused(DeliveryError):
    """The callback address is not allowed (not http(s), or not a public address)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class CallbackFailed(DeliveryError):
    """The callback's HTTP exchange failed before a complete answer (connection, TLS or protocol)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)
