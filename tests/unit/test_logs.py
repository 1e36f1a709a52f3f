"""reminderd.logs: JSON lines rendered by orjson, written one per line or one write per batch,
switched to another file and level on reconfiguration."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from reminderd import logs

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
    configure(stream, "error", log_file=str(second))
    log.warning("filtered")
    log.error("two")
    assert [json.loads(line)["event"] for line in first.read_text().splitlines()] == ["one"]
    assert [json.loads(line)["event"] for line in second.read_text().splitlines()] == ["two"]
    assert stream.raw_writes == []
