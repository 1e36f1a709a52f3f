"""reminderd.logs: JSON lines rendered by orjson, written one per line or one write per batch,
switched to another file and level on reconfiguration; records of the standard logging module
(libraries) come out as reminderd's own lines do: one JSON line each, the exception summarised,
repeats held back with a count."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from reminderd import logs
from reminderd.exceptions import EX_CONFIG, ConfigError
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
    logs.OUTPUT.use(sys.stdout)  # closes a log file a test configured
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


# orjson lines, batches and reconfiguration ---------------------------------------------------

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Stream(io.TextIOWrapper):
    """A text stream over a byte buffer that counts the writes reaching the buffer."""

    def __init__(self) -> None:
        self.raw_writes: list[bytes] = []
        outer = self

        class Buffer(io.BytesIO):
            def write(self, data: bytes) -> int:  # type: ignore[override]  # bytes only, here
                outer.raw_writes.append(bytes(data))
                return super().write(data)

        super().__init__(Buffer(), encoding="utf-8", write_through=True)

    def isatty(self) -> bool:
        return False

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in b"".join(self.raw_writes).splitlines()]


@pytest.fixture
def stream() -> Iterator[Stream]:
    yield Stream()
    logs.configure("info")  # closes a log file a test opened
    structlog.reset_defaults()


def configure(stream: Stream, level: str = "info", log_file: str | None = None) -> None:
    """logs.configure() with `stream` as stdout (set in the test itself: pytest's own capture
    replaces sys.stdout between a fixture and its test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", stream)
        logs.configure(level, log_file=log_file)


def test_a_line_is_one_json_object_written_at_once(stream: Stream) -> None:
    configure(stream)
    structlog.get_logger("reminderd").info("fired", message_id=7, tenant="acme", latency_ms=3)
    assert len(stream.raw_writes) == 1
    [line] = stream.lines()
    assert {k: line[k] for k in ("event", "message_id", "tenant", "latency_ms", "level")} == {
        "event": "fired", "message_id": 7, "tenant": "acme", "latency_ms": 3, "level": "info",
    }
    assert TIMESTAMP.match(str(line["timestamp"])), line["timestamp"]


def test_a_batch_of_lines_is_one_write_in_order(stream: Stream) -> None:
    configure(stream)
    bound = structlog.get_logger("reminderd").bind()
    with logs.batch():
        for n in range(100):
            bound.info("fired", message_id=n)
        assert stream.raw_writes == []  # nothing written until the batch ends
    assert len(stream.raw_writes) == 1
    assert [line["message_id"] for line in stream.lines()] == list(range(100))


def test_lines_below_the_level_cost_nothing_and_write_nothing(stream: Stream) -> None:
    configure(stream, "warning")
    log = structlog.get_logger("reminderd")
    log.info("fired", message_id=1)
    log.warning("retry_scheduled", message_id=2)
    assert [line["event"] for line in stream.lines()] == ["retry_scheduled"]


def test_what_orjson_refuses_is_still_logged(stream: Stream) -> None:
    configure(stream)
    structlog.get_logger("reminderd").info("odd", huge=2**70, thing=object)
    [line] = stream.lines()
    assert line["huge"] == 2**70 and "object" in str(line["thing"])


def test_reconfiguring_reopens_the_log_file_and_applies_to_a_logger_made_before(
    stream: Stream, tmp_path: Path
) -> None:
    log = structlog.get_logger("reminderd")
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    configure(stream, "info", log_file=str(first))
    log.info("one")
    first_file = logs.OUTPUT.text
    configure(stream, "error", log_file=str(second))
    assert first_file.closed  # the replaced file is closed, not leaked
    log.warning("filtered")
    log.error("two")
    assert [json.loads(line)["event"] for line in first.read_text().splitlines()] == ["one"]
    assert [json.loads(line)["event"] for line in second.read_text().splitlines()] == ["two"]
    assert stream.raw_writes == []


# A log file that cannot be opened: a configuration error, not a traceback


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("missing/reminderd.log", "no such directory {tmp}/missing"),
        ("a-file/reminderd.log", "a part of its path is not a directory"),
        (".", "it is a directory"),
    ],
    ids=["no-directory", "under-a-file", "a-directory"],
)
def test_a_log_file_that_cannot_be_opened_is_a_config_error_saying_why(
    stream: Stream, tmp_path: Path, where: str, why: str
) -> None:
    (tmp_path / "a-file").write_text("")
    path = str(tmp_path / where)
    configure(stream, "info")
    with pytest.raises(ConfigError) as raised:
        configure(stream, "info", log_file=path)
    assert str(raised.value) == f"REMINDERD_LOG_FILE={path}: cannot write to it ({why.format(tmp=tmp_path)})"
    structlog.get_logger("reminderd").info("still here")  # the output in use is kept (SIGHUP)
    assert [line["event"] for line in stream.lines()] == ["still here"]


def test_a_log_file_without_permission_says_so(
    stream: Stream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root nothing is refused for permissions: the refusal is the kernel's EACCES, given."""

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("builtins.open", refused)
    with pytest.raises(ConfigError, match=r"^REMINDERD_LOG_FILE=/var/log/x\.log: cannot write to it "
                                          r"\(permission denied\)$"):
        logs.open_log_file("/var/log/x.log")


@pytest.mark.parametrize("command", ["run", "serve"])
def test_run_and_serve_with_a_log_file_they_cannot_open_exit_78_on_one_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reminderd.cli import main

    monkeypatch.setenv("REMINDERD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("REMINDERD_LOG_FILE", str(tmp_path / "missing" / "x.log"))
    assert main([command]) == EX_CONFIG
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"reminderd: configuration error: REMINDERD_LOG_FILE={tmp_path}/missing/x.log: "
                              f"cannot write to it (no such directory {tmp_path}/missing)\n")


def test_a_sighup_whose_log_file_cannot_be_opened_keeps_the_current_one(
    stream: Stream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reminderd.daemon import Daemon
    from reminderd.settings import Settings

    monkeypatch.setenv("REMINDERD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    daemon = Daemon(Settings.from_env())
    configure(stream, "info")
    gone = tmp_path / "gone"  # the log's directory went away
    monkeypatch.setenv("REMINDERD_LOG_FILE", str(gone / "x.log"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", stream)
        daemon.reload()  # a signal handler: raising here would be asyncio's "Exception in callback"
    [line] = stream.lines()
    assert (line["event"], line["keeping"]) == ("reload_failed", "the current settings")
    assert line["error"] == f"REMINDERD_LOG_FILE={gone}/x.log: cannot write to it (no such directory {gone})"


# stdout as a pipe: a reader that stops reading, or goes away, never stops the daemon


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, io.TextIOWrapper]]:
    """OUTPUT writing to a pipe of 64 KiB whose read end the test holds; a stall is 50 ms."""
    monkeypatch.setattr(logs, "STALL_S", 0.05)
    monkeypatch.setattr(logs, "PIPE_BYTES", 2**16)
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    logs.configure("info", json=True)
    logs.OUTPUT.use(stream)
    yield read_fd, stream
    logs.OUTPUT.use(sys.stdout)
    stream.close()
    with contextlib.suppress(OSError):
        os.close(read_fd)


def drain(read_fd: int) -> bytes:
    os.set_blocking(read_fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_fd, 2**16):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_reader_that_stops_reading_holds_a_write_up_for_a_stall_then_lines_are_dropped_and_counted(
    pipe: tuple[int, io.TextIOWrapper],
) -> None:
    read_fd, _ = pipe
    log = structlog.get_logger("reminderd")
    slowest_s, written = 0.0, 0
    while written < 400:  # 400 lines of 1 KiB: six times what the pipe holds
        started = time.monotonic()
        log.info("fired", message_id=written, padding="x" * 1000)
        slowest_s = max(slowest_s, time.monotonic() - started)
        written += 1
    assert slowest_s < 1.0  # once the pipe is full, a line waits one stall (50 ms), then none do
    first = drain(read_fd)
    log.info("caught_up")
    rest = drain(read_fd)
    lines = [json.loads(line) for line in (first + rest).splitlines()]  # every line whole: JSON
    fired = [line["message_id"] for line in lines if line["event"] == "fired"]
    [notice] = [line for line in lines if line["event"] == "log_lines_dropped"]
    assert fired == list(range(len(fired))) and 0 < len(fired) < 400  # the first ones, in order
    assert notice["dropped"] == 400 - len(fired) and notice["level"] == "warning"
    assert [line["event"] for line in lines[-2:]] == ["log_lines_dropped", "caught_up"]


def test_a_reader_that_goes_away_breaks_the_output_once_quietly_and_calls_on_broken(
    pipe: tuple[int, io.TextIOWrapper], capsys: pytest.CaptureFixture[str],
) -> None:
    read_fd, stream = pipe
    calls: list[str] = []
    logs.OUTPUT.on_broken = lambda: calls.append("broken")
    try:
        log = structlog.get_logger("reminderd")
        log.info("one")
        os.close(read_fd)  # `| head -c 200` has read enough
        log.info("two")
        logging.getLogger("asyncpg").error("a library's line")  # through the same output, no "Logging error"
        log.info("three")
        assert calls == ["broken"] and logs.OUTPUT.broken
        assert stat.S_ISCHR(os.fstat(stream.fileno()).st_mode)  # /dev/null now: Python's own flush at exit
        print("printed", file=stream, flush=True)
    finally:
        logs.OUTPUT.on_broken = None
    assert capsys.readouterr().err == ""
