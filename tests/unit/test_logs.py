"""reminderd.logs: records of the standard logging module (libraries) come out as reminderd's own
lines do: one JSON line each, the exception summarised, repeats held back with a count."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from reminderd import logs
from reminderd.logs import Repeats


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide state: the root logger, warnings, the excepthooks."""
    import sys
    import threading

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook, threading.excepthook)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hooks
    if logs._log_file is not None:
        logs._log_file.close()
        logs._log_file = None
    structlog.reset_defaults()


def configured(tmp_path: Path, level: str = "info") -> Path:
    path = tmp_path / "reminderd.log"
    logs.configure(level, json=True, log_file=str(path))
    return path


def lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]  # every line is one JSON object


def failing() -> ConnectionRefusedError:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as exc:
        return exc


def test_a_library_warning_with_a_traceback_is_one_json_line(tmp_path: Path) -> None:
    path = configured(tmp_path)
    logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor; retrying",
                                              exc_info=failing())
    [line] = lines(path)
    assert line["event"] == "Failed to restore the pool connection floor; retrying"
    assert (line["logger"], line["level"]) == ("asyncpg.pool", "warning")
    assert line["error"] == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert "traceback" not in line and "timestamp" in line


def test_at_debug_the_traceback_comes_too_as_one_string(tmp_path: Path) -> None:
    path = configured(tmp_path, "debug")
    logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=failing())
    [line] = lines(path)
    assert str(line["traceback"]).startswith("Traceback (most recent call last):")
    assert str(line["traceback"]).endswith("ConnectionRefusedError: [Errno 111] Connection refused")


def test_libraries_info_lines_are_kept_only_at_debug(tmp_path: Path) -> None:
    path = configured(tmp_path)
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    assert path.read_text(encoding="utf-8") == ""
    logs.configure("debug", json=True, log_file=str(path))
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    assert [line["event"] for line in lines(path)] == ["Context impl PostgresqlImpl."]


def test_the_same_message_is_held_back_and_counted(tmp_path: Path) -> None:
    path = configured(tmp_path)
    pool = logging.getLogger("asyncpg.pool")
    for _ in range(50):
        pool.warning("Failed to restore the pool connection floor; retrying", exc_info=failing())
    pool.warning("something else")
    assert [line["event"] for line in lines(path)] == [
        "Failed to restore the pool connection floor; retrying", "something else",
    ]


def test_repeats_pass_again_after_the_interval_with_the_count_held_back() -> None:
    now = [0.0]
    repeats = Repeats(30.0, clock=lambda: now[0])

    def record(message: str = "pool floor") -> logging.LogRecord:
        return logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1, message, (), None)

    assert repeats.filter(record())
    now[0] = 10.0
    assert not repeats.filter(record()) and not repeats.filter(record())
    assert repeats.filter(record("another message"))
    now[0] = 30.0
    passed = record()
    assert repeats.filter(passed)
    assert passed.suppressed == 2  # type: ignore[attr-defined]


def test_the_suppressed_count_is_in_the_line(tmp_path: Path) -> None:
    path = configured(tmp_path)
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    [repeats] = [f for f in handler.filters if isinstance(f, Repeats)]
    now = [0.0]
    repeats._clock = lambda: now[0]
    pool = logging.getLogger("asyncpg.pool")
    pool.warning("pool floor")
    pool.warning("pool floor")
    now[0] = 31.0
    pool.warning("pool floor")
    first, second = lines(path)
    assert "suppressed" not in first
    assert (second["suppressed"], second["suppressed_over_s"]) == (1, logs.REPEAT_S)


def test_warnings_become_log_lines(tmp_path: Path) -> None:
    path = configured(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        warnings.warn("a library is deprecated", DeprecationWarning, stacklevel=1)
    [line] = lines(path)
    assert line["logger"] == "py.warnings" and "a library is deprecated" in str(line["event"])


def test_configuring_again_replaces_the_handler(tmp_path: Path) -> None:
    path = configured(tmp_path)
    configured(tmp_path)
    logging.getLogger("aiohttp.server").error("Error handling request")
    assert len(lines(path)) == 1


def test_a_crash_is_one_line_with_its_traceback(tmp_path: Path) -> None:
    import sys

    path = configured(tmp_path)
    exc = failing()
    sys.excepthook(type(exc), exc, exc.__traceback__)
    [line] = lines(path)
    assert (line["event"], line["level"]) == ("crashed", "critical")
    assert "Traceback" in str(line["traceback"])


def test_on_a_terminal_library_lines_are_readable_too() -> None:
    stream = io.StringIO()
    logs.route_standard_logging(stream, structlog.dev.ConsoleRenderer(colors=False), "info")
    logging.getLogger("asyncpg.pool").warning("pool floor", exc_info=failing())
    [text] = stream.getvalue().splitlines()
    assert "pool floor" in text and "ConnectionRefusedError" in text
