"""structlog set-up: JSON lines on stdout (or a log file) for machines, readable lines on a terminal.

Libraries log through the standard `logging` module (asyncpg's pool, asyncio, aiohttp, alembic);
their records are routed to the same place in the same format: one line per record, the exception
summarised in `error` (its traceback only at debug level), and the same message at most once per
`REPEAT_S` seconds, with the count of those left out (`suppressed`), so a database outage does not
fill stderr with tracebacks outside the JSON stream.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
REPEAT_S = 30.0  # a library's same message is logged at most once per this many seconds

_log_file: TextIO | None = None


def configure(level: str = "info", *, json: bool | None = None, log_file: str | None = None) -> None:
    """(Re)configure logging. Called again on SIGHUP: a log file is closed and reopened, so
    logrotate can move it away."""
    global _log_file
    if _log_file is not None:
        _log_file.close()
        _log_file = None
    stream: TextIO = sys.stdout
    if log_file:
        stream = _log_file = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    as_json = not stream.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    route_standard_logging(stream, renderer, level)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler that configure() installs (and replaces on the next call)."""


def route_standard_logging(stream: TextIO, renderer: structlog.typing.Processor, level: str) -> None:
    """Send every standard `logging` record (libraries: asyncpg, asyncio, aiohttp, alembic) and
    every warning to `stream`, rendered like reminderd's own lines. Libraries' info lines are
    chatter (alembic's "Context impl PostgresqlImpl."): only their warnings and errors are kept,
    unless the level is debug."""
    verbose = level == "debug"
    handler = _Handler(stream)
    handler.addFilter(Repeats(REPEAT_S))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _suppressed_count,
            summarise_exception(with_traceback=verbose),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else max(logging.WARNING, LEVELS[level]))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def summarise_exception(*, with_traceback: bool) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    """A processor: a record's exception as `error` ("CannotConnectNowError: the database system is
    shutting down"), one line; with `with_traceback` (and always for a crash, level critical), the
    traceback too, as one JSON string."""

    def summarise(_logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        exc_info = event_dict.pop("exc_info", None)
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if not exc_info or exc_info[0] is None:
            return event_dict
        exc = exc_info[1]
        event_dict["error"] = describe(exc)
        if with_traceback or name == "critical":
            event_dict["traceback"] = "".join(traceback.format_exception(*exc_info)).rstrip()
        return event_dict

    return summarise


def describe(exc: BaseException) -> str:
    """An exception on one line: "TypeError: bad operand"."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Repeats(logging.Filter):
    """Let the same message (logger, level, text before formatting, exception type) through at
    most once per `interval_s`; the next one that passes carries how many were held back
    (`record.suppressed`)."""

    MAX_KEYS = 1000  # messages remembered; a library logging endlessly varied text is not a leak

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, str(record.msg), exc_type)
        now = self._clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.interval_s:
                self._seen[key] = (last, held + 1)
                return False
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if held:
            record.suppressed = held
        return True


def _suppressed_count(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    held = getattr(event_dict.get("_record"), "suppressed", 0)
    if held:
        event_dict["suppressed"] = held
        event_dict["suppressed_over_s"] = REPEAT_S
    return event_dict


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """A crash is one log line too (with its traceback in one JSON string), not a bare traceback."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("reminderd").critical("crashed", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: Any) -> None:
    if args.exc_type is not None and args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)

