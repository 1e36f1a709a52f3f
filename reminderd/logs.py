"""structlog set-up: JSON lines on stdout (or a log file) for machines, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

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
