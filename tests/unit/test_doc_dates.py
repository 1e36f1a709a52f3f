"""Dated examples never expire silently: every date in the code of the README, docs/*.md and the
clients' READMEs (fenced blocks and `code spans`), in the OpenAPI document and in the demo is more
than a year away from today. A one-off example must be in the future to be accepted, so an example
dated near today would soon be refused ("in the past") and fail the walkthroughs that run it; this
test fails a year before that happens. Examples are dated 2037 (the calendar of 2026: the same
weekdays, clock changes and holidays), deliberately past ones (a refusal) before 2025.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATE = re.compile(r"(?<![\d])(?P<year>(?:19|20)\d\d)-(?P<month>[01]\d)-(?P<day>[0-3]\d)(?![\d])")
FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
SPAN = re.compile(r"`[^`\n]+`")
NEAR = timedelta(days=366)


def documents() -> list[Path]:
    """Where a reader finds examples to copy."""
    return sorted([
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(path for path in (ROOT / "clients").glob("*/README.md")),
        ROOT / "reminderd" / "openapi.yaml",
        ROOT / "reminderd" / "demo.py",
    ])


def example_text(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of what is an example: all of a YAML or Python file, the code of Markdown
    (prose may say when something was measured)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".md":
        yield from enumerate(text.splitlines(), 1)
        return
    for block in FENCED.finditer(text):
        first = text.count("\n", 0, block.start()) + 1
        yield from enumerate(block.group().splitlines(), first)
    outside = FENCED.sub(lambda block: "\n" * block.group().count("\n"), text)
    for number, line in enumerate(outside.splitlines(), 1):
        for span in SPAN.finditer(line):
            yield number, span.group()


def dates_too_near(lines: Iterator[tuple[int, str]], today: date) -> list[tuple[int, str]]:
    near = []
    for number, line in lines:
        for found in DATE.finditer(line):
            try:
                day = date(int(found["year"]), int(found["month"]), int(found["day"]))
            except ValueError:
                continue  # not a date (a version, an id)
            if abs(day - today) < NEAR:
                near.append((number, found.group()))
    return near


def test_the_rule_finds_near_dates_in_code_only(tmp_path: Path) -> None:
    markdown = ("Measured on 2026-12-01.\n```sh\nreminderd schedule a b --at 2026-12-24T09:00\n"
                "reminderd schedule a c --at 2037-12-24T09:00\n```\nSee `--at 2027-06-30` and `2020-01-01`.\n")
    path = tmp_path / "dated.md"
    path.write_text(markdown, encoding="utf-8")
    assert dates_too_near(example_text(path), date(2026, 12, 2)) == [(3, "2026-12-24"), (6, "2027-06-30")]
    assert dates_too_near(example_text(path), date(2036, 12, 25)) == [(4, "2037-12-24")]
    assert dates_too_near(example_text(path), date(2029, 1, 1)) == []


@pytest.mark.parametrize("path", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_example_is_dated_within_a_year_of_today(path: Path) -> None:
    near = dates_too_near(example_text(path), date.today())
    assert near == [], (
        f"{path.relative_to(ROOT)}: examples dated within a year of today expire (a one-off in the past is "
        f"refused); date them in 2037 or later, keeping what the text says of them true: {near}")
