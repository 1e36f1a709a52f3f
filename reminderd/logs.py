"""structlog set-up: JSON lines on stdout (or a log file) for machines, readable lines on a terminal.

The daemon writes one line per delivery, so the line is cheap: rendered by orjson, stamped by a
stamper that formats the date once a second, and written by `Output`, one write per line, or one
per batch of lines inside `batch()` (the worker logs each recorded batch that way). A logger bound
once (`log.bind()`) skips structlog's per-call rebuilding of the lazy module-level logger; the
worker binds one per batch, so a SIGHUP's new level or file applies from the next batch on.

Libraries log through the standard `logging` module (asyncpg's pool, asyncio, aiohttp, alembic);
their records are routed to the same place in the same format: one line per record, the exception
summarised in `error` (its traceback only at debug level), and the same message at most once per
`REPEAT_S` seconds, with the count of those left out (`suppressed`), so a database outage does not
fill stderr with tracebacks outside the JSON stream.

When stdout is a pipe or a socket (journald, `| jq`, a supervisor), nothing its reader does can
stop the daemon (`_Pipe`): a reader that stops reading holds a write up for at most `STALL_S`,
after which lines are dropped, and counted in a `log_lines_dropped` line once it reads again; a
reader that goes away (EPIPE) leaves the output writing to /dev/null and calls `on_broken`, for
the daemon to stop as on SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json as json_module
import logging
import os
import select
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from types import TracebackType
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from .exceptions import ConfigError

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
REPEAT_S = 30.0  # a library's same message is logged at most once per this many seconds
# The longest a log line may hold up the event loop when stdout's reader does not read: then lines
# are dropped. Well below the default REMINDERD_DEAD_AFTER (15 s), so a stuck reader does not make
# a live daemon look dead; SIGTERM is seen within it.
STALL_S = 2.0
PIPE_BYTES = 2**20  # asked of a pipe's buffer (Linux's pipe-max-size by default), for a slow reader


class Output:
    """Where rendered lines go: the stream of the current configuration, swapped on SIGHUP.

    Lines are bytes (orjson) or text (the console renderer). Outside `batch()` each line is written
    and flushed at once; inside, the lines wait and are written together when the batch ends.
    """

    def __init__(self) -> None:
        self.text: TextIO = sys.stdout
        self.binary: BinaryIO | None = None
        self._pending: list[bytes] | None = None
        self._opened: TextIO | None = None  # a log file this output opened, closed when replaced
        self._pipe: _Pipe | None = None  # when the stream is a pipe or a socket
        self.on_broken: Callable[[], object] | None = None  # called once when its reader has gone

    @property
    def broken(self) -> bool:
        """The reader of the pipe or socket written to has gone (EPIPE): lines go to /dev/null."""
        return self._pipe is not None and self._pipe.broken

    def use(self, stream: TextIO, *, opened: bool = False) -> None:
        """Write to `stream` from now on; `opened`: a file configure() opened, so this output
        closes it when the next one replaces it (SIGHUP, for logrotate)."""
        previous, self._opened = self._opened, (stream if opened else None)
        self.text = stream
        self.binary = getattr(stream, "buffer", None)
        self._pipe = _Pipe.of(stream, self._pipe, self._reader_gone)
        if previous is not None and previous is not stream:
            previous.close()

    def _reader_gone(self) -> None:
        if self.on_broken is not None:
            self.on_broken()

    def msg(self, line: bytes | str) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        if self._pending is not None:
            self._pending.append(data)
        else:
            self._write(data + b"\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        if self._pending is not None:  # already batching: the outer batch writes
            yield
            return
        self._pending = []
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            if pending:
                pending.append(b"")
                self._write(b"\n".join(pending))

    def write_now(self, data: bytes) -> None:
        """Write `data` (whole lines) at once, even inside a batch: the standard library's records."""
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):  # what print() left in the text layer goes first
                self.text.flush()
            self._pipe.write(data)
        elif self.binary is not None:
            self.text.flush()  # anything printed through the text layer goes first
            self.binary.write(data)
            self.binary.flush()
        else:
            self.text.write(data.decode())
            self.text.flush()


class _Pipe:
    """stdout as a pipe or a socket, written without blocking (O_NONBLOCK): a write waits for its
    reader at most STALL_S, then the output is stalled and lines are dropped without waiting
    until one goes through whole, preceded by the rest of a line cut short and a
    `log_lines_dropped` line with their count. EPIPE (or any other error of the stream) breaks
    it: the descriptor is pointed at /dev/null (nothing written later, by anyone, fails) and
    `on_broken` is called once."""

    def __init__(self, fd: int, on_broken: Callable[[], None]) -> None:
        self.fd = fd
        self.on_broken = on_broken
        self.broken = False
        self.stalled = False
        self.dropped = 0  # whole lines dropped since the output stalled
        self._cut = b""  # the rest of a line written in part: it goes first
        os.set_blocking(fd, False)
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            with contextlib.suppress(OSError, AttributeError):  # Linux only; more than allowed: kept
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        atexit.register(self.restore)

    @classmethod
    def of(cls, stream: TextIO, current: _Pipe | None, on_broken: Callable[[], None]) -> _Pipe | None:
        """A _Pipe for `stream` when it is a pipe or a socket (the one in use when it is the same),
        else None: files and terminals are written as they are."""
        try:
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError too
            return None
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return None
        return current if current is not None and current.fd == fd else cls(fd, on_broken)

    def write(self, data: bytes) -> None:
        """Write `data`, whole lines, or drop them: see the class."""
        if self.broken:
            return
        deadline = time.monotonic() + (0.0 if self.stalled else STALL_S)
        cut, notice = self._cut, self._notice() if self.dropped else b""
        # One write: the notice never goes out without a line after it (a pipe takes a write of
        # up to 4 KiB whole or not at all).
        sent = self._send(cut + notice + data, deadline)
        if self.broken or sent == len(cut) + len(notice) + len(data):
            self._cut, self.dropped, self.stalled = b"", 0, False
            return
        if sent < len(cut):  # still on the line cut short: the notice waits with its count
            self._cut = cut[sent:]
            self._drop(data)
            return
        sent -= len(cut)
        if sent < len(notice):
            self._cut = notice[sent:] if sent else b""
            self.dropped = 0 if sent else self.dropped  # told, once the notice is out
            self._drop(data)
            return
        sent -= len(notice)
        self.dropped = 0
        if sent and data[sent - 1:sent] != b"\n":  # a line written in part: its rest is owed
            end = data.find(b"\n", sent) + 1 or len(data)
            self._cut, data = data[sent:end], data[end:]
        else:
            self._cut, data = b"", data[sent:]
        self._drop(data)

    def _notice(self) -> bytes:
        return orjson.dumps({"event": "log_lines_dropped", "dropped": self.dropped, "level": "warning",
                             "timestamp": _now_iso(), "why": f"stdout was not read for {STALL_S:g} s"}) + b"\n"

    def _drop(self, data: bytes) -> None:
        self.stalled = True
        self.dropped += data.count(b"\n")

    def _send(self, data: bytes, deadline: float) -> int:
        """Bytes of `data` written by `deadline` (all of them once the stream broke)."""
        view, sent = memoryview(data), 0
        while sent < len(data):
            try:
                sent += os.write(self.fd, view[sent:])
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                    break
            except OSError:  # EPIPE, ECONNRESET: the reader is gone
                self._break()
                return len(data)
        return sent

    def _break(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.fd)  # Python's own flush of stdout at exit must not fail either
            os.close(devnull)
        self.on_broken()

    def restore(self) -> None:
        """Blocking again at exit: others may write to the same pipe after this process (a shell)."""
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, True)


def _now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(now)) + f"{int(now % 1 * 1_000_000):06d}Z"


OUTPUT = Output()


def batch() -> contextlib.AbstractContextManager[None]:
    """Inside this block, log lines are written in one go at its end."""
    return OUTPUT.batch()


class _UtcStamper:
    """`timestamp`: UTC, ISO 8601 with microseconds ("2026-12-01T10:58:52.854251Z"); the date and
    time of day are formatted once a second, not once a line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def _render_json(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(event_dict, default=repr)
    except TypeError:  # what orjson refuses outright (an integer beyond 64 bits): the slow way
        return json_module.dumps(event_dict, default=repr).encode()


def configure(level: str = "info", *, json: bool | None = None, log_file: str | None = None) -> None:
    """(Re)configure logging. Called again on SIGHUP: a log file is closed and reopened, so
    logrotate can move it away."""
    stream: TextIO = sys.stdout
    if log_file:
        stream = open_log_file(log_file)
    OUTPUT.use(stream, opened=bool(log_file))
    as_json = not stream.isatty() if json is None else json
    renderer: structlog.typing.Processor = _render_json if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _UtcStamper(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_args: OUTPUT,
        cache_logger_on_first_use=False,  # SIGHUP changes level and file: module loggers follow
    )
    route_standard_logging(stream, _render_json_text if as_json else renderer, level)


_CANNOT_OPEN = {
    errno.ENOENT: "no such directory",
    errno.ENOTDIR: "a part of its path is not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a directory",
    errno.EROFS: "the file system is read-only",
}


def open_log_file(path: str) -> TextIO:
    """REMINDERD_LOG_FILE opened for appending, or ConfigError saying why it cannot be."""
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        why = _CANNOT_OPEN.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
        if exc.errno == errno.ENOENT:
            why = f"{why} {os.path.dirname(os.path.abspath(path))}"
        raise ConfigError(f"REMINDERD_LOG_FILE={path}: cannot write to it ({why})") from None


def _render_json_text(logger: object, method: str, event_dict: MutableMapping[str, Any]) -> str:
    """The JSON line as text: what logging's handlers write."""
    return _render_json(logger, method, event_dict).decode()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler that configure() installs (and replaces on the next call)."""


class _ToOutput:
    """The stream logging's handler writes to: OUTPUT, a record's text at a time."""

    def write(self, text: str) -> None:
        OUTPUT.write_now(text.encode())

    def flush(self) -> None:
        pass


def route_standard_logging(stream: TextIO, renderer: structlog.typing.Processor, level: str) -> None:
    """Send every standard `logging` record (libraries: asyncpg, asyncio, aiohttp, alembic) and
    every warning to `stream`, rendered like reminderd's own lines. Libraries' info lines are
    chatter (alembic's "Context impl PostgresqlImpl."): only their warnings and errors are kept,
    unless the level is debug."""
    verbose = level == "debug"
    # Through OUTPUT when it is OUTPUT's stream: one writer, which a stopped reader cannot block.
    handler = _Handler(_ToOutput() if stream is OUTPUT.text else stream)
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

