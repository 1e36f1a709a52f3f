"""reminderd.schedule_many()'s set-based path (migration 0012: schedule_set, and schedule_one for a
batch of one) against the item-by-item path it falls back to (reminderd.schedule_item() for each
item; atomic: all in one savepoint, the first error the only row; otherwise a savepoint each):
for every mix of items the same results in item order, the same rows and the same audit trail.

Both run in one transaction (so with one now()), for two tenants set up alike (a default timezone,
a contact with a zone of its own, a contact without), and the transaction is rolled back. A
property test draws the mixes (new refs, identical repeats, replacements, extra occurrences, sent
messages, contacts' messages, a broadcast's message awaiting approval, refs given twice, a paused
tenant, refused items, recurring items, atomic or not); a table names the cases that matter, with
the results they must have; and the function statistics of the transaction prove the set-based path
was the one taken whenever it could be.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reminderd.migrate import head_revision, upgrade
from reminderd.testing import add_tenant

pytestmark = pytest.mark.shared_database

T = TypeVar("T")
A, B = "tenant-a", "tenant-b"  # the same length: refusals name the tenant
# schedule_item_v2 (migration 0014): v1 and a contact_id; the v1 functions hand their items to the
# v2 ones without a contact (migration 0018).
MANY = "SELECT * FROM reminderd.schedule_many($1, $2::reminderd.schedule_item_v2[], $3)"
MANY_V1 = "SELECT * FROM reminderd.schedule_many($1, $2::reminderd.schedule_item_v1[], $3)"
ONE = "SELECT * FROM reminderd.schedule_item($1, $2::reminderd.schedule_item_v2)"
ZONE = "Asia/Kolkata"
TENANT_ZONE = "Europe/London"  # the tenants' default: a zoneless contact's (and OPTIONS' timezone)
CONTACTS = {"zoned": (ZONE, "contact"), "bare": (TENANT_ZONE, "tenant")}  # zone, timezone_source
PAYLOADS = ('{}', '{"n": 1}')
# Everything else an identical call must repeat: each alone, and two together.
OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"max_attempts": 3},
    {"backfill": "skip"},
    {"max_lateness": timedelta(minutes=5)},
    {"callback_url": "https://other.example/cb"},
    {"category": "marketing"},
    {"calendar": "GB"},
    {"holiday_rule": "skip"},
    {"timezone": TENANT_ZONE},
    {"category": "marketing", "calendar": "GB"},
)
OPTION_COLUMNS = (
    "max_attempts", "backfill", "max_lateness", "callback_url", "category", "calendar", "holiday_rule",
    "timezone",
)

# What an item says about when it fires, by name (offsets from the transaction's now()).
WHEN: dict[str, dict[str, Any]] = {
    "at+1h": {"fire_at": timedelta(hours=1)},
    "at+2h": {"fire_at": timedelta(hours=2)},
    "at-10s": {"fire_at": timedelta(seconds=-10)},  # a little late: accepted, due now
    "at-2d": {"fire_at": timedelta(days=-2)},  # beyond the lookback: refused (22008)
    "at+400d": {"fire_at": timedelta(days=400)},  # beyond the horizon: refused (22008)
    "in1h": {"fire_in": timedelta(hours=1)},
    "in2h": {"fire_in": timedelta(hours=2)},
    "in-1m": {"fire_in": timedelta(minutes=-1)},  # a negative delay: refused (22023)
    "local": {"local_time": timedelta(hours=3), "timezone": ZONE},
    "both": {"fire_at": timedelta(hours=1), "fire_in": timedelta(hours=1)},  # refused (22023)
    "badtz": {"fire_at": timedelta(hours=1), "timezone": "Mars/Base"},  # refused (22023)
    "badcat": {"fire_at": timedelta(hours=1), "category": "Not A Category"},  # refused (23514)
    "cron": {"cron": "0 9 * * *"},
    "badcron": {"cron": "61 * * * *"},  # refused (22023)
}
REFUSED = {"at-2d", "at+400d", "in-1m", "both", "badtz", "badcat", "badcron"}
FAILING_ROW_ID = re.compile(r"Failing row contains \(\d+,")
FIELDS = (  # reminderd.schedule_item_v2's
    "ref_id", "fire_at", "fire_in", "local_time", "cron", "rrule", "timezone", "payload", "callback_url",
    "category", "max_attempts", "calendar", "holiday_rule", "backfill", "max_lateness", "until", "max_runs",
    "first_fire_at", "contact_id",
)


@dataclass(frozen=True)
class Item:
    ref: str
    when: str
    payload: str = PAYLOADS[0]
    options: int = 0
    contact: str | None = None  # a contact's message: read in its zone, unless an option names one

    def value(self, now: datetime) -> tuple[Any, ...]:
        when = {name: value for name, value in WHEN[self.when].items()
                if not (self.contact is not None and name == "timezone")}
        given = {**OPTIONS[self.options], **when, "contact_id": self.contact}
        if "fire_at" in given:
            given["fire_at"] = now + given["fire_at"]
        if "local_time" in given:
            given["local_time"] = (now + given["local_time"]).astimezone(ZoneInfo(ZONE)).replace(tzinfo=None)
        given.update(ref_id=self.ref, payload=self.payload)
        return tuple(given.get(name) for name in FIELDS)


@dataclass(frozen=True)
class Before:
    """A row the ref has before the batch."""

    ref: str
    # pending, picked, paused, awaiting_approval (at most one live row per ref), sent, cancelled, dead
    status: str
    fire_in: timedelta = timedelta(hours=1)  # its fire_at, from now (its created_at)
    payload: str = PAYLOADS[0]
    extra: bool = False  # an extra occurrence sent now (extra_of set)
    options: int = 0
    # A contact's message (CONTACTS: its zone, and a wall time in it kept in local_time, as
    # schedule(contact_id => …) keeps them); awaiting approval, a broadcast's, for "zoned" if None.
    contact: str | None = None

    @property
    def contact_id(self) -> str | None:
        return "zoned" if self.contact is None and self.status == "awaiting_approval" else self.contact


@dataclass(frozen=True)
class Case:
    items: tuple[Item, ...]
    before: tuple[Before, ...] = ()
    atomic: bool = True
    paused: bool = False


Result = tuple[Any, ...]


@dataclass
class Outcome:
    results: list[Result]
    rows: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    schedule_item_calls: int = field(default=0, compare=False)


class Sql:
    """One connection to the module's database on its own event loop (hypothesis tests are plain)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection: asyncpg.Connection = self.run(asyncpg.connect(url))

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.run(self.connection.close())
        self.loop.close()

    def both(self, case: Case, many: str = MANY) -> tuple[Outcome, Outcome]:
        """The case through schedule_many() (`many`: of schedule_item_v2, or MANY_V1) for tenant A,
        item by item (schedule_item of schedule_item_v2) for tenant B."""
        return self.run(self._both(case, many))

    async def _both(self, case: Case, many: str) -> tuple[Outcome, Outcome]:
        db = self.connection
        transaction = db.transaction()
        await transaction.start()
        try:
            await db.execute("SET LOCAL track_functions = 'pl'")
            now: datetime = await db.fetchval("SELECT now()")
            for number, tenant in enumerate((A, B)):
                await add_tenant(db, tenant, "https://example.com/hooks")
                await db.execute("UPDATE reminderd.tenants SET timezone = $2 WHERE id = $1",
                                 tenant, TENANT_ZONE)
                await db.execute(
                    "SELECT reminderd.upsert_contacts($1, $2::jsonb)", tenant,
                    json.dumps([{"contact_id": "zoned", "timezone": ZONE}, {"contact_id": "bare"}]),
                )
                if case.paused:
                    await db.execute("UPDATE reminderd.tenants SET paused = true WHERE id = $1", tenant)
                broadcast = None  # a message awaiting approval names a broadcast of its tenant (0023)
                if any(row.status == "awaiting_approval" for row in case.before):
                    broadcast = await db.fetchval(
                        "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, everyone, local_time,"
                        " created_by) VALUES ($1, 'b', true, localtimestamp + interval '1 day', 'test')"
                        " RETURNING id",
                        tenant)
                for index, row in enumerate(case.before):
                    options = {"category": "transactional", "timezone": "UTC", **OPTIONS[row.options]}
                    source, local_time = "message", None
                    if row.contact_id is not None:
                        options["timezone"], source = CONTACTS[row.contact_id]
                        wall = (now + row.fire_in).astimezone(ZoneInfo(options["timezone"]))
                        local_time = wall.replace(tzinfo=None)
                    await db.execute(
                        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload, status,"
                        " extra_of, contact_id, timezone_source, local_time, broadcast_id,"
                        f" {', '.join(OPTION_COLUMNS)})"
                        " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10,"
                        " $11, $12, $13, $14, $15, $16, $17, $18)",
                        tenant, row.ref, now + row.fire_in, row.payload, row.status,
                        1_000_000 * (number + 1) + index if row.extra else None,
                        row.contact_id, source, local_time,
                        broadcast if row.status == "awaiting_approval" else None,
                        *(options.get(column) for column in OPTION_COLUMNS),
                    )
            items = [item.value(now) for item in case.items]
            calls_before = await self._schedule_item_calls()
            version_1 = [item[:-1] for item in items]  # schedule_item_v1: no contact_id
            answered = await db.fetch(many, A, version_1 if many == MANY_V1 else items, case.atomic)
            fast = [tuple(r)[:10] for r in answered]
            for r in answered if many == MANY else ():  # each message's zone and its source, as its row says
                zone = await db.fetchrow("SELECT timezone, timezone_source FROM reminderd.scheduled_messages"
                                         " WHERE id = $1", r["message_id"])
                assert (r["timezone"], r["timezone_source"]) == ((None, None) if zone is None else tuple(zone))
            calls = await self._schedule_item_calls() - calls_before
            slow = await self._item_by_item(B, items, case.atomic)
            return (await self._outcome(A, fast, calls), await self._outcome(B, slow, 0))
        finally:
            await transaction.rollback()

    async def _schedule_item_calls(self) -> int:
        calls: int | None = await self.connection.fetchval(
            "SELECT calls FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'reminderd' AND funcname = 'schedule_item'"
        )
        return calls or 0

    async def _item_by_item(self, tenant: str, items: Sequence[tuple[Any, ...]], atomic: bool) -> list[Result]:
        db, results = self.connection, []
        if atomic:
            position = 0
            try:
                async with db.transaction():
                    for position, item in enumerate(items, 1):
                        row = await db.fetchrow(ONE, tenant, item)
                        results.append((position, *_scheduled(row)))
            except asyncpg.PostgresError as exc:
                return [(position, None, "error", None, None, *_error(exc))]
            return results
        for position, item in enumerate(items, 1):
            try:
                async with db.transaction():
                    row = await db.fetchrow(ONE, tenant, item)
                results.append((position, *_scheduled(row)))
            except asyncpg.PostgresError as exc:
                results.append((position, None, "error", None, None, *_error(exc)))
        return results

    async def _outcome(self, tenant: str, results: list[Result], calls: int) -> Outcome:
        """Results, rows and events with the tenant's name and the message ids replaced by what
        they are: (ref, its n-th row)."""
        db = self.connection
        # Every column (a column a later migration adds too) but the ids, which differ (a
        # broadcast's too: each tenant names its own, migration 0023; whether one is named is kept).
        rows = await db.fetch(
            "SELECT id, ref_id, (to_jsonb(m) - 'id' - 'tenant_id' - 'extra_of' || jsonb_build_object("
            "'broadcast_id', broadcast_id IS NOT NULL))::text AS columns,"
            " extra_of IS NOT NULL AS extra"
            " FROM reminderd.scheduled_messages m WHERE tenant_id = $1 ORDER BY ref_id, id",
            tenant,
        )
        label: dict[int, tuple[str, int]] = {}
        for row in rows:
            label[row["id"]] = (row["ref_id"], sum(1 for known in label.values() if known[0] == row["ref_id"]))
        events = await db.fetch(
            "SELECT message_id, regexp_replace((to_jsonb(e) - 'id' - 'message_id' - 'tenant_id')::text,"
            " 'broadcast [0-9]+ ', 'broadcast N ', 'g') AS columns"  # each tenant's own broadcast
            " FROM reminderd.events e WHERE tenant_id = $1 ORDER BY id",
            tenant,
        )
        by_message: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for row in events:
            by_message.setdefault(label[row["message_id"]], []).append(tuple(row)[1:])
        return Outcome(
            results=[_same_words(tenant, (r[0], label.get(r[1]), *r[2:])) for r in results],
            rows=[_same_words(tenant, (label[r["id"]], *tuple(r)[1:])) for r in rows],
            events=sorted((key, trail) for key, trail in by_message.items()),
            schedule_item_calls=calls,
        )


def _error(exc: asyncpg.PostgresError) -> tuple[Any, ...]:
    return (exc.sqlstate, exc.args[0] if exc.args else None, exc.hint or None, exc.detail or None,
            getattr(exc, "constraint_name", None) or None)


def _same_words(tenant: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The tenant's name as TENANT, and no message id in a constraint's DETAIL (the paths draw
    different ids: an attempt undone has used some)."""
    return tuple(
        FAILING_ROW_ID.sub("Failing row contains (ID,", v.replace(tenant, "TENANT")) if isinstance(v, str)
        else v
        for v in values
    )


def _scheduled(row: asyncpg.Record) -> tuple[Any, ...]:
    """schedule_item()'s answer as a row of schedule_many() without the item: no error."""
    return (row["message_id"], row["result"], row["status"], row["fire_at"], None, None, None, None, None)


@pytest.fixture(scope="module")
def sql(module_database_url: str) -> Iterator[Sql]:
    connection = Sql(module_database_url)
    yield connection
    connection.close()


def check(sql: Sql, case: Case) -> Outcome:
    """The set-based path answers as the item-by-item path does, and was taken whenever it could be."""
    fast, slow = sql.both(case)
    assert fast.results == slow.results
    assert fast.rows == slow.rows
    assert fast.events == slow.events
    refs = [item.ref for item in case.items]
    failed = any(result[2] == "error" for result in slow.results)
    recurring = sum(1 for item in case.items if "cron" in WHEN[item.when])
    set_based = len(set(refs)) == len(refs) and not failed
    if set_based and recurring < len(refs):
        assert fast.schedule_item_calls == recurring, "the set-based path was not taken"
    return fast


# The cases that matter, by name, with what they must answer ------------------------------------


def results_of(outcome: Outcome) -> list[str]:
    return [r[2] if r[2] != "error" else f"error {r[5]}" for r in outcome.results]


CASES = {
    "new refs": (Case((Item("r0", "at+1h"), Item("r1", "in2h"), Item("r2", "local"))),
                 ["created", "created", "created"]),
    "a batch of one": (Case((Item("r0", "in1h"),)), ["created"]),
    "an identical repeat is unchanged": (
        Case((Item("r0", "at+1h"), Item("r1", "in2h")),
             (Before("r0", "pending"), Before("r1", "pending", fire_in=timedelta(hours=2)))),
        ["unchanged", "unchanged"]),
    "an identical repeat of a sent message is unchanged": (
        Case((Item("r0", "at+1h"),), (Before("r0", "sent"),)), ["unchanged"]),
    "another schedule replaces": (
        Case((Item("r0", "at+2h"), Item("r1", "at+1h", PAYLOADS[1])),
             (Before("r0", "pending"), Before("r1", "picked"))),
        ["replaced", "replaced"]),
    "a live extra occurrence is cancelled too": (
        Case((Item("r0", "at+2h"),), (Before("r0", "paused"), Before("r0", "pending", extra=True))),
        ["replaced"]),
    "a ref given twice: the later replaces the earlier": (
        Case((Item("r0", "at+1h"), Item("r0", "at+2h"), Item("r1", "in1h"))),
        ["created", "replaced", "created"]),
    "a ref given twice alike: the later is unchanged": (
        Case((Item("r0", "at+1h"), Item("r0", "at+1h"))), ["created", "unchanged"]),
    "a paused tenant holds new messages": (
        Case((Item("r0", "at+1h"), Item("r1", "in1h")), paused=True), ["created", "created"]),
    "a one-off already too late is refused, atomic": (
        Case((Item("r0", "at+1h"), Item("r1", "at-2d"))), ["error 22008"]),
    "a one-off already too late is refused alone": (
        Case((Item("r0", "at+1h"), Item("r1", "at-2d"), Item("r2", "in1h")), atomic=False),
        ["created", "error 22008", "created"]),
    "a bad timezone is refused, atomic": (Case((Item("r0", "badtz"), Item("r1", "at+1h"))), ["error 22023"]),
    "a bad timezone is refused alone": (
        Case((Item("r0", "at+1h"), Item("r1", "badtz")), atomic=False), ["created", "error 22023"]),
    "beyond the horizon, a negative delay, both times, a bad category": (
        Case((Item("r0", "at+400d"), Item("r1", "in-1m"), Item("r2", "both"), Item("r3", "badcat")),
             atomic=False),
        ["error 22008", "error 22023", "error 22023", "error 23514"]),
    "an empty ref is refused": (Case((Item("", "at+1h"), Item("r1", "at+1h")), atomic=False),
                                ["error 22023", "created"]),
    "recurring items beside one-offs": (
        Case((Item("r0", "cron"), Item("r1", "at+1h"), Item("r2", "cron")), (Before("r2", "pending"),)),
        ["created", "created", "replaced"]),
    "a bad cron among one-offs": (
        Case((Item("r0", "at+1h"), Item("r1", "badcron")), atomic=False), ["created", "error 22023"]),
    "a little late is sent now": (Case((Item("r0", "at-10s"),)), ["created"]),
    "identical to a sent message while another is live": (
        Case((Item("r0", "at+1h"),), (Before("r0", "sent"), Before("r0", "pending", timedelta(hours=3)))),
        ["replaced"]),  # schedule_item's words: the sent one is the answer, the live one stays
    "the same, in a batch": (
        Case((Item("r0", "at+1h"), Item("r1", "at+1h")),
             (Before("r0", "sent"), Before("r0", "pending", timedelta(hours=3)))),
        ["replaced", "created"]),
    "identical to a live extra occurrence": (
        Case((Item("r0", "at+1h"), Item("r1", "in1h")), (Before("r0", "pending", extra=True),)),
        ["created", "created"]),
    "every option repeated is unchanged": (
        Case(tuple(Item(f"r{n}", "at+1h", options=n) for n in range(1, len(OPTIONS))),
             tuple(Before(f"r{n}", "pending", options=n) for n in range(1, len(OPTIONS)))),
        ["unchanged"] * (len(OPTIONS) - 1)),
    "any option changed replaces": (
        Case(tuple(Item(f"r{n}", "at+1h", options=n) for n in range(1, len(OPTIONS))),
             tuple(Before(f"r{n}", "paused") for n in range(1, len(OPTIONS)))),
        ["replaced"] * (len(OPTIONS) - 1)),
    "a contact's message is never identical (its contact_id): replaced": (
        Case((Item("r0", "local"), Item("r1", "at+1h", options=8)),
             (Before("r0", "pending", timedelta(hours=3), contact="zoned"),
              Before("r1", "picked", contact="bare"))),
        ["replaced", "replaced"]),
    "a contact's message in a batch of one": (
        Case((Item("r0", "local"),), (Before("r0", "paused", timedelta(hours=3), contact="zoned"),)),
        ["replaced"]),
    "a contact's sent message is no answer": (
        Case((Item("r0", "at+1h", options=8), Item("r1", "local")),
             (Before("r0", "sent", contact="bare"), Before("r1", "sent", timedelta(hours=3), contact="zoned"))),
        ["created", "created"]),
    # Items naming a contact (schedule_item_v2, migration 0014): read in the contact's zone.
    "a contact's message again is unchanged": (
        Case((Item("r0", "local", contact="zoned"),),
             (Before("r0", "pending", timedelta(hours=3), contact="zoned"),)),
        ["unchanged"]),
    "contacts' messages in a batch, set-based": (
        Case((Item("r0", "local", contact="zoned"), Item("r1", "at+1h", contact="bare"), Item("r2", "in1h"),
              Item("r3", "local", contact="bare"), Item("r4", "at+1h", options=8, contact="zoned"))),
        ["created"] * 5),
    "a contact's message in a batch, identical to one before": (
        Case((Item("r0", "local", contact="zoned"), Item("r1", "in1h")),
             (Before("r0", "paused", timedelta(hours=3), contact="zoned"),)),
        ["unchanged", "created"]),
    "an unknown contact is refused, by item": (
        Case((Item("r0", "at+1h", contact="nobody"), Item("r1", "at+1h")), atomic=False),
        ["error P0002", "created"]),
    "a contact's recurring message": (
        Case((Item("r0", "cron", contact="zoned"), Item("r1", "at+1h", contact="bare"))),
        ["created", "created"]),
    "a broadcast's message awaiting approval is live: replaced": (
        Case((Item("r0", "at+1h"), Item("r1", "in1h")), (Before("r0", "awaiting_approval"),)),
        ["replaced", "created"]),
    "awaiting approval in a batch of one": (
        Case((Item("r0", "in1h"),), (Before("r0", "awaiting_approval", contact="bare"),)), ["replaced"]),
    "any option dropped replaces": (
        Case(tuple(Item(f"r{n}", "at+1h") for n in range(1, len(OPTIONS))),
             tuple(Before(f"r{n}", "picked", options=n) for n in range(1, len(OPTIONS)))),
        ["replaced"] * (len(OPTIONS) - 1)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_case_answers_as_item_by_item(sql: Sql, name: str) -> None:
    case, expected = CASES[name]
    outcome = check(sql, case)
    assert results_of(outcome) == expected


@pytest.mark.parametrize("options", range(1, len(OPTIONS)))
def test_one_item_repeats_and_replaces_by_every_option(sql: Sql, options: int) -> None:
    """A batch of one (reminderd.schedule_one): identical with the option, replaced without it."""
    same = check(sql, Case((Item("r0", "in1h", options=options),),
                           (Before("r0", "pending", options=options),)))
    changed = check(sql, Case((Item("r0", "in1h", options=options),), (Before("r0", "pending"),)))
    dropped = check(sql, Case((Item("r0", "in1h"),), (Before("r0", "pending", options=options),)))
    assert [results_of(o) for o in (same, changed, dropped)] == [["unchanged"], ["replaced"], ["replaced"]]


@pytest.mark.parametrize("when", sorted(REFUSED))
@pytest.mark.parametrize("atomic", [True, False])
def test_a_refused_item_alone_is_refused_as_item_by_item(sql: Sql, when: str, atomic: bool) -> None:
    outcome = check(sql, Case((Item("r0", when),), atomic=atomic))
    assert results_of(outcome)[0].startswith("error")


def test_a_paused_tenants_new_messages_are_held(sql: Sql) -> None:
    outcome = check(sql, CASES["a paused tenant holds new messages"][0])
    assert [r[3] for r in outcome.results] == ["paused", "paused"]


@pytest.mark.parametrize("size", [1, 2])
def test_a_wall_time_is_kept_in_local_time(sql: Sql, size: int) -> None:
    """As schedule() keeps it since 0009 (for re-planning in a contact's new zone)."""
    outcome = check(sql, Case(tuple(Item(f"r{n}", "local") for n in range(size))))
    kept = [json.loads(row[2])["local_time"] for row in outcome.rows]
    assert len(kept) == size and all(kept), kept
    assert [json.loads(row[2])["timezone_source"] for row in outcome.rows] == ["message"] * size


def test_a_contacts_message_replaced_is_cancelled(sql: Sql) -> None:
    outcome = check(sql, CASES["a contact's message is never identical (its contact_id): replaced"][0])
    rows = {(label, json.loads(columns)["status"], json.loads(columns)["contact_id"])
            for label, _, columns, _ in outcome.rows}
    assert rows == {(("r0", 0), "cancelled", "zoned"), (("r0", 1), "pending", None),
                    (("r1", 0), "cancelled", "bare"), (("r1", 1), "pending", None)}


def test_an_empty_batch_schedules_nothing(sql: Sql) -> None:
    assert sql.both(Case(())) == (Outcome([], [], []), Outcome([], [], []))
    assert sql.both(Case(()), MANY_V1) == (Outcome([], [], []), Outcome([], [], []))


@pytest.mark.parametrize("name", [name for name, (case, _) in CASES.items()
                                  if all(item.contact is None for item in case.items)])
def test_version_1_items_answer_as_version_2_without_a_contact(sql: Sql, name: str) -> None:
    """schedule_many() of schedule_item_v1 (the previous release's servers) gives the results, rows
    and events of schedule_item() of schedule_item_v2, item by item, for the same items."""
    case, expected = CASES[name]
    fast, slow = sql.both(case, MANY_V1)
    assert (fast.results, fast.rows, fast.events) == (slow.results, slow.rows, slow.events)
    assert results_of(fast) == expected


# Any mix ---------------------------------------------------------------------------------------

REFS = st.sampled_from(["r0", "r1", "r2", "r3"])
OPTION_INDEXES = st.sampled_from([0, 0, 0, *range(len(OPTIONS))])
CONTACT_IDS = st.sampled_from([None, None, *CONTACTS])
ITEMS = st.builds(Item, REFS, st.sampled_from([w for w in WHEN if w not in REFUSED] * 4 + sorted(REFUSED)),
                  st.sampled_from(PAYLOADS), OPTION_INDEXES, st.sampled_from([None, None, *CONTACTS, "nobody"]))


@st.composite
def befores(draw: st.DrawFn) -> tuple[Before, ...]:
    """Each ref's history: old rows, at most one live row (maybe awaiting approval), maybe a live
    extra occurrence; any of the first two maybe a contact's."""
    rows: list[Before] = []
    for ref in draw(st.lists(REFS, unique=True, max_size=4)):
        for status in draw(st.lists(st.sampled_from(["sent", "cancelled", "dead"]), max_size=2)):
            rows.append(Before(ref, status, draw(st.sampled_from([timedelta(hours=1), timedelta(hours=2)])),
                               draw(st.sampled_from(PAYLOADS)), options=draw(OPTION_INDEXES),
                               contact=draw(CONTACT_IDS)))
        live = draw(st.sampled_from([None, "pending", "picked", "paused", "awaiting_approval"]))
        if live is not None:
            rows.append(Before(ref, live, draw(st.sampled_from([timedelta(hours=1), timedelta(hours=2)])),
                               draw(st.sampled_from(PAYLOADS)), options=draw(OPTION_INDEXES),
                               contact=draw(CONTACT_IDS)))
        if draw(st.booleans()):
            rows.append(Before(ref, "pending", timedelta(hours=1), PAYLOADS[0], extra=True))
    return tuple(rows)


BATCHES = st.one_of(  # half with distinct refs and fewer refusals: the set-based path's batches
    st.lists(
        st.builds(Item, REFS, st.sampled_from([w for w in WHEN if w not in REFUSED] * 12 + sorted(REFUSED)),
                  st.sampled_from(PAYLOADS), OPTION_INDEXES, CONTACT_IDS),
        min_size=1, max_size=4, unique_by=lambda item: item.ref,
    ),
    st.lists(ITEMS, min_size=1, max_size=6),
).map(tuple)
CASES_DRAWN = st.builds(Case, BATCHES, befores(), st.booleans(), st.sampled_from([False, False, False, True]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES_DRAWN)
def test_any_mix_answers_as_item_by_item(sql: Sql, case: Case) -> None:
    check(sql, case)
    refs = [item.ref for item in case.items]
    set_based = len(set(refs)) == len(refs) and not any(item.when in REFUSED for item in case.items)
    event("distinct refs, none refused" if set_based else "item by item")  # --hypothesis-show-statistics


# The migration, on a database with rows -----------------------------------------------------------


async def test_0012_upgrades_a_database_with_messages_and_schedules_them_set_based(
    empty_database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, empty_database_url, "0011")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", "https://example.com/hooks")
        payload = json.dumps({"n": 1})
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload, status) VALUES"
            " ('acme', 'kept', now() + interval '1 hour', $1::jsonb, 'pending'),"
            " ('acme', 'moved', now() + interval '1 hour', '{}', 'pending'),"
            " ('acme', 'done', now() - interval '1 hour', '{}', 'sent')",
            payload,
        )
        before = await db.fetch("SELECT id, ref_id FROM reminderd.scheduled_messages ORDER BY id")
        await asyncio.to_thread(upgrade, empty_database_url)
        version = await db.fetchval("SELECT version_num FROM reminderd.alembic_version")
        at = await db.fetchval("SELECT fire_at FROM reminderd.scheduled_messages WHERE ref_id = 'kept'")
        items = [
            Item("kept", "at+1h", payload).value(at - timedelta(hours=1)),
            Item("moved", "at+2h").value(at - timedelta(hours=1)),
            Item("new", "in1h").value(at),
        ]
        results = await db.fetch(MANY, "acme", items, True)
        statuses = await db.fetch("SELECT ref_id, status FROM reminderd.scheduled_messages ORDER BY id")
    finally:
        await db.close()
    assert version == head_revision("postgresql://unused")
    ids = {row["ref_id"]: row["id"] for row in before}
    assert [(r["item"], r["result"]) for r in results] == [(1, "unchanged"), (2, "replaced"), (3, "created")]
    assert results[0]["message_id"] == ids["kept"]
    assert [tuple(row) for row in statuses] == [
        ("kept", "pending"), ("moved", "cancelled"), ("done", "sent"), ("moved", "pending"), ("new", "pending"),
    ]


@pytest.mark.parametrize("size", [0, 1, 2])
def test_an_unknown_tenant_is_refused_whatever_the_batch(sql: Sql, size: int) -> None:
    async def attempt() -> asyncpg.PostgresError:
        now: datetime = await sql.connection.fetchval("SELECT now()")
        items = [Item(f"r{n}", "at+1h").value(now) for n in range(size)]
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await sql.connection.fetch(MANY, "nobody", items, True)
        return refused.value

    assert sql.run(attempt()).args[0] == 'unknown tenant "nobody"'


async def test_0014_upgrades_a_database_with_contacts_and_a_broadcast_the_api_role_then_approves(
    empty_database_url: str,
) -> None:
    """0014 on a database with a contact, its message and a broadcast awaiting approval: the API's
    role then schedules for the contact in a batch and approves the broadcast naming its key."""
    await asyncio.to_thread(upgrade, empty_database_url, "0012")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", "https://example.com/hooks")
        await db.execute("UPDATE reminderd.tenants SET timezone = 'UTC', approval_threshold = 1"
                         " WHERE id = 'acme'")
        contacts = [{"contact_id": "c1", "timezone": ZONE}, {"contact_id": "c2", "timezone": "Asia/Tokyo"}]
        await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps(contacts))
        await db.execute("SELECT reminderd.schedule('acme', 'old', fire_in => '1 hour', contact_id => 'c1')")
        broadcast_id = await db.fetchval(
            "SELECT reminderd.broadcast('acme', 'bf', everyone => true, actor => 'alice',"
            " local_time => (now() + interval '3 days')::date + time '09:00')")
        await asyncio.to_thread(upgrade, empty_database_url)
        now: datetime = await db.fetchval("SELECT now()")
        async with db.transaction():
            await db.execute("SET LOCAL ROLE reminderd_api")
            results = await db.fetch(MANY, "acme", [Item("new", "at+1h", contact="c2").value(now)], True)
            released = await db.fetchval("SELECT reminderd.approve_broadcast('acme', $1, 'rk_x (bob)', 'ok')",
                                         broadcast_id)
        rows = await db.fetch("SELECT ref_id, status, timezone, timezone_source"
                              " FROM reminderd.scheduled_messages ORDER BY ref_id")
        decided = await db.fetchval("SELECT decided_by FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    finally:
        await db.close()
    assert [(r["result"], r["timezone"], r["timezone_source"]) for r in results] == [
        ("created", "Asia/Tokyo", "contact")], [(r["error_sqlstate"], r["error_message"]) for r in results]
    assert released == 2 and decided == "rk_x (bob)"
    assert [tuple(r) for r in rows] == [
        ("bf:c1", "pending", ZONE, "contact"), ("bf:c2", "pending", "Asia/Tokyo", "contact"),
        ("new", "pending", "Asia/Tokyo", "contact"), ("old", "pending", ZONE, "contact")]


V1_AND_V2 = {  # each function of schedule_item_v1, and its schedule_item_v2 counterpart: $1 tenant, $2 item
    "schedule_item": "SELECT result, status, fire_at FROM reminderd.schedule_item($1, $2::reminderd.{type})",
    "schedule_one": "SELECT (s).result, (s).status, (s).fire_at"
                    " FROM reminderd.schedule_one($1, $2::reminderd.{type}) AS s",
    "schedule_set": "SELECT result, status, fire_at"
                    " FROM reminderd.schedule_set($1, ARRAY[$2::reminderd.{type}])",
}


@pytest.mark.parametrize(("function", "when"), [
    (function, when) for function in V1_AND_V2 for when in ("at+1h", "local", "cron", "badtz", "at-2d")
    if function == "schedule_item" or when != "cron"  # schedule_one and schedule_set take one-off items
])
def test_each_version_1_function_answers_as_its_version_2(sql: Sql, function: str, when: str) -> None:
    """The same answer, or the same error (SQLSTATE, message, DETAIL, HINT), for tenants A and B."""

    async def answer(tenant: str, type_: str) -> tuple[Any, ...]:
        now: datetime = await sql.connection.fetchval("SELECT now()")
        item = Item("r0", when).value(now)
        try:
            async with sql.connection.transaction():
                row = await sql.connection.fetchrow(V1_AND_V2[function].format(type=type_), tenant,
                                                    item[:-1] if type_.endswith("v1") else item)
        except asyncpg.PostgresError as exc:
            return _same_words(tenant, _error(exc))
        assert row is not None
        return tuple(row)

    async def both() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        transaction = sql.connection.transaction()
        await transaction.start()
        try:
            for tenant in (A, B):
                await add_tenant(sql.connection, tenant, "https://example.com/hooks")
            return await answer(A, "schedule_item_v1"), await answer(B, "schedule_item_v2")
        finally:
            await transaction.rollback()

    version_1, version_2 = sql.run(both())
    assert version_1 == version_2
    assert version_1[0] in {"created", "22023", "22008"}, version_1


async def test_0018_upgrades_a_database_whose_version_1_batches_then_answer_as_before(
    empty_database_url: str,
) -> None:
    """Messages written through 0017's own version 1 functions, then 0018: the same items again are
    unchanged, a changed one replaces, and the API's role may still call them."""
    await asyncio.to_thread(upgrade, empty_database_url, "0017")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", "https://example.com/hooks")
        now: datetime = await db.fetchval("SELECT now()")
        items = [Item("kept", "at+1h").value(now)[:-1], Item("moved", "local").value(now)[:-1]]
        first = await db.fetch(MANY_V1, "acme", items, True)
        await asyncio.to_thread(upgrade, empty_database_url)
        items[1] = Item("moved", "at+2h").value(now)[:-1]
        async with db.transaction():
            await db.execute("SET LOCAL ROLE reminderd_api")
            again = await db.fetch(MANY_V1, "acme", items, True)
        statuses = await db.fetch("SELECT ref_id, status FROM reminderd.scheduled_messages ORDER BY id")
    finally:
        await db.close()
    assert [r["result"] for r in first] == ["created", "created"]
    assert [(r["result"], r["message_id"]) for r in again] == [
        ("unchanged", first[0]["message_id"]), ("replaced", again[1]["message_id"])]
    assert [tuple(row) for row in statuses] == [
        ("kept", "pending"), ("moved", "cancelled"), ("moved", "pending")]
