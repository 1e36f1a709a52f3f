"""A bug costs the row, never the daemon: a step that crashes on one row is logged with its
traceback and the row gets an outcome saying so (dead-lettered, requeue-able once fixed) instead
of the exception stopping a batch, a sender or the loop (healthchecks' sendalerts: "make sure we
don't trip on this check again")."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import structlog

log = structlog.get_logger("reminderd")

P = ParamSpec("P")
T = TypeVar("T")

# The step that crashed (its log line is f"{step}_crashed"), and what the row's reason says.
_DOING = {
    "timing": "while timing",
    "send": "while sending",
    "decide": "after the attempt",
    "plan": "while planning",
}


def contain(
    step: str, message_id: int, instead: Callable[[str], T], call: Callable[P, T], *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """call(*args, **kwargs), or, when it raises, instead(the reason) for this row."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        return instead(crashed(step, message_id, exc))


def crashed(step: str, message_id: int, exc: Exception) -> str:
    """Log a crash of `step` on one row; the reason that row records."""
    log.exception(f"{step}_crashed", message_id=message_id)
    return f"internal error {_DOING[step]}: {describe(exc)}"


def describe(exc: BaseException) -> str:
    """An exception on one line, for logs and reasons: "TypeError: bad operand"."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
