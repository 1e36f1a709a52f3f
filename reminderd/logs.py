"""structlog set-up: JSON lines on stdout (or a log file) for machines, readable lines on a terminal.

The daemon writes one line per delivery, so the line is cheap: rendered by orjson, stamped by a
stamper that formats the date once a second, and written by `Output`, one write per line, or one
per batch of lines inside `batch()` (the worker logs each recorded batch that way). A logger bound
once (`log.bind()`) skips structlog's per-call rebuilding of the lazy module-level logger; the
worker binds one per batch, so a SIGHUP's new level or file applies from the next batch on.
"""

from __future__ import annotations

import contextlib
import json as json_module
import logging
import sys
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Output:
    """Where rendered lines go: the stream of the current configuration, swapped on SIGHUP.

    Lines are bytes (orjson) or text (the console renderer). Outside `batch()` each line is written
    and flushed at once; inside, the lines wait and are written together when the batch ends.
    """

    def __init__(self) -> None:
        self.text: TextIO = sys.stdout
        self.binary: BinaryIO | None = None
        self._pending: list[bytes] | None = None

    def use(self, stream: TextIO) -> None:
        self.text = stream
        self.binary = getattr(stream, "buffer", None)

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

    def _write(self, data: bytes) -> None:
        if self.binary is not None:
            self.text.flush()  # anything printed through the text layer goes first
            self.binary.write(data)
            self.binary.flush()
        else:
            self.text.write(data.decode())
            self.text.flush()


OUTPUT = Output()
_log_file: TextIO | None = None


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
    global _log_file
    stream: TextIO = sys.stdout
    if log_file:
        stream = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    previous, _log_file = _log_file, (stream if log_file else None)
    OUTPUT.use(stream)
    if previous is not None:
        previous.close()
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
