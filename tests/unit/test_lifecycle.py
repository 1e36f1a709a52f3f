"""One vocabulary: the statuses and events in reminderd.lifecycle are the ones docs/sql.md
documents and the SQL writes (tests/integration/test_schema.py checks the database's own)."""

from __future__ import annotations

import re
from pathlib import Path

from reminderd.lifecycle import Event, Status
from reminderd.metrics import OUTCOMES, REFUSED

ROOT = Path(__file__).resolve().parents[2]
SQL_DOC = (ROOT / "docs" / "sql.md").read_text(encoding="utf-8")
QUERIES = (ROOT / "reminderd" / "sql" / "queries.sql").read_text(encoding="utf-8")


def first_column(header: str) -> set[str]:
    """The `names` in the first column of the markdown table that starts with `header`."""
    table = SQL_DOC.split(header, 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        names.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return names


def test_the_documented_statuses_are_the_status_enum() -> None:
    assert first_column("| status | meaning | next |") == {s.value for s in Status}


def test_the_documented_audit_events_are_the_event_enum() -> None:
    assert first_column("| event | written by | reason |") == {e.value for e in Event}


def test_every_event_the_queries_write_is_an_event() -> None:
    written = set(re.findall(r"last_event = '([a-z_]+)'", QUERIES))
    # The rest come from the daemon (dead_lettered: dead_letter_unreadable, a claimed row it cannot read).
    assert written == {"released", "lease_expired", "rescued", "expired", "held", "dead_lettered"}
    assert written <= {e.value for e in Event}


def test_every_status_the_queries_name_is_a_status() -> None:
    named = set(re.findall(r"status (?:= |<> )'([a-z_]+)'", QUERIES))
    for group in re.findall(r"status IN \(([^)]*)\)", QUERIES):
        named |= set(re.findall(r"'(\w+)'", group))
    assert {"pending", "picked", "paused", "sent", "dead"} <= named <= {s.value for s in Status}


def test_the_callbacks_counter_counts_events_and_refusals() -> None:
    assert set(OUTCOMES) - {REFUSED} <= set(Event)
    assert {Event.FIRED, Event.RETRY_SCHEDULED, Event.DEAD_LETTERED, REFUSED} <= set(OUTCOMES)
