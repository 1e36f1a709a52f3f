"""Integration tests for the schema: schema.sql against the migrations, tables, constraints, triggers, SQL API.

Every test runs against a real PostgreSQL database: one clone of the migrated template per module
(cloning costs ~0.3 s). Tests that only need one connection run in a transaction rolled back at the
end (`tx`); tests that commit (NOTIFY, concurrency) get the database emptied first (`db`).
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support import poll_until, status_by_id

from reminderd.migrate import HEAD_REVISION, head_revision, upgrade
from reminderd.queries import QUERIES as QUERIES_NOW
from reminderd.queries import load
from reminderd.schedule.cron import InvalidSchedule, load_timezone, next_fire
from reminderd.testing import add_tenant

LIVE = ("pending", "picked", "paused")
NOTIFY_CHANNEL = "reminderd_due"
NOTIFY_TIMEOUT_S = 5.0

SCHEMA_SQL = files("reminderd").joinpath("sql/schema.sql")
CATALOG_QUERIES = load(Path(__file__).with_name("schema_catalog.sql").read_text(encoding="utf-8"))
Catalog = dict[str, list[str]]

pytestmark = pytest.mark.shared_database


async def live_rows(conn: asyncpg.Connection, tenant_id: str, ref_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM reminderd.scheduled_messages"
        " WHERE tenant_id = $1 AND ref_id = $2 AND status = ANY($3::text[]) ORDER BY id",
        tenant_id, ref_id, list(LIVE),
    )
    return rows


def asyncpg_to_sqlalchemy(url: str) -> str:
    _, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}"


@pytest.fixture
async def tx(module_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction rolled back after the test: nothing it does is seen by others."""
    connection = await asyncpg.connect(module_database_url)
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


# Migration ------------------------------------------------------------------------------------


async def test_upgrade_creates_the_schema_and_is_idempotent(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    await asyncio.to_thread(upgrade, empty_database_url)  # nothing left to do: must not fail

    connection = await asyncpg.connect(empty_database_url)
    try:
        versions = await connection.fetch("SELECT version_num FROM reminderd.alembic_version")
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'reminderd' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
        functions = await connection.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'reminderd'"
        )
    finally:
        await connection.close()

    assert [v["version_num"] for v in versions] == [HEAD_REVISION]
    assert [t["table_name"] for t in tables] == [
        "alembic_version", "api_keys", "audience_member_counts", "audience_members", "audiences",
        "broadcast_counts",
        "broadcast_occurrences", "broadcast_requests", "config", "contact_sends", "contacts",
        "countries", "daemons", "dashboard_signouts", "deliveries", "endpoint_health", "endpoints", "events",
        "fire_counts", "frequency_caps", "holiday_calendars", "idempotency_keys", "lateness_counts",
        "phone_plans", "phone_prefixes",
        "phone_regions", "phone_timezones", "reference_versions", "scheduled_messages",
        "tenant_budgets", "tenant_holidays", "tenant_members", "tenants", "usage_days",
        "usage_increments",
    ]
    assert {f["proname"] for f in functions} >= {
        "schedule", "schedule_cron", "cancel", "cancel_live", "generate_secret",
        "is_timezone", "validate_message", "admit_message", "record_inserts",
    }


async def test_a_database_at_0003_with_data_upgrades_to_head(empty_database_url: str) -> None:
    # 0004 adds the batch types: a database already in use at 0003 keeps its rows and gains them.
    await asyncio.to_thread(upgrade, empty_database_url, "0003")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://example.com/cb')"
        )
        message_id = await connection.fetchval(
            "SELECT reminderd.schedule('acme', 'r1', now() + interval '1 hour')"
        )
        assert await connection.fetchval("SELECT to_regtype('reminderd.outcome_v1')") is None
        await asyncio.to_thread(upgrade, empty_database_url)
        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
        row = await connection.fetchrow(
            "SELECT ref_id, status FROM reminderd.scheduled_messages WHERE id = $1", message_id
        )
        types = [
            await connection.fetchval(
                "SELECT t.typname FROM pg_type t WHERE t.oid = to_regtype($1) AND t.typtype = 'c'", name
            )
            for name in ("reminderd.outcome_v1", "reminderd.plan_v1", "reminderd.release_v1")
        ]
    finally:
        await connection.close()
    assert version == HEAD_REVISION
    assert (row["ref_id"], row["status"]) == ("r1", "pending")
    assert types == ["outcome_v1", "plan_v1", "release_v1"]  # composite types, in the reminderd schema


async def test_a_database_at_0004_with_data_upgrades_to_0006(empty_database_url: str) -> None:
    # 0006 rebuilds the live-ref index and adds two more on scheduled_messages: rows already there
    # keep their ref rules (one live row each) and schedule()'s identical-call answer.
    await asyncio.to_thread(upgrade, empty_database_url, "0004")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://example.com/cb')"
        )
        fire_at = await connection.fetchval("SELECT date_trunc('second', now()) + interval '1 hour'")
        live = await connection.fetchval("SELECT reminderd.schedule('acme', 'r1', $1)", fire_at)
        cron = await connection.fetchval("SELECT reminderd.schedule_cron('acme', 'c1', '0 9 * * *')")
        await asyncio.to_thread(upgrade, empty_database_url, "0006")
        assert await connection.fetchval("SELECT reminderd.schedule('acme', 'r1', $1)", fire_at) == live
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                " VALUES ('acme', 'r1', now())"
            )
        extra = await connection.fetchval("SELECT reminderd.send_now('acme', 'c1')")
        rows = await connection.fetch(
            "SELECT m.id, m.status, m.extra_of, t.api_rate_limit FROM reminderd.scheduled_messages m"
            " JOIN reminderd.tenants t ON t.id = m.tenant_id ORDER BY m.id"
        )
    finally:
        await connection.close()
    assert [(r["id"], r["status"], r["extra_of"], r["api_rate_limit"]) for r in rows] == [
        (live, "pending", None, None), (cron, "pending", None, None), (extra, "pending", cron, None),
    ]


async def test_a_database_at_0004_with_rows_in_flight_upgrades_to_head(empty_database_url: str) -> None:
    # 0008 adds the registry: rows claimed by a daemon of the previous release (no picked_by) keep
    # their claim and stay the lease's to hand back; the upgraded daemon registers and stamps.
    await asyncio.to_thread(upgrade, empty_database_url, "0004")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(connection, "acme")
        await connection.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, picked_at,"
            " lease_expires_at) VALUES"
            " ('acme', 'in-flight', now(), 'picked', 1, now(), now() + interval '5 minutes'),"
            " ('acme', 'later', now() + interval '1 hour', 'pending', 0, NULL, NULL)"
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        rows = await connection.fetch(
            "SELECT ref_id, status, attempts, picked_by FROM reminderd.scheduled_messages ORDER BY ref_id"
        )
        daemons = await connection.fetchval("SELECT count(*) FROM reminderd.daemon_overview")
        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
    finally:
        await connection.close()
    assert version == head_revision("postgresql://unused")
    assert [tuple(row) for row in rows] == [("in-flight", "picked", 1, None), ("later", "pending", 0, None)]
    assert daemons == 0


async def test_a_database_at_0004_with_history_upgrades_to_head(empty_database_url: str) -> None:
    # 0007 moves an attempt's change into its deliveries row: the attempts logged before keep their
    # events (written by the old trigger), gain their ref, and read as one story in the trail.
    await asyncio.to_thread(upgrade, empty_database_url, "0004")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://example.com/cb')"
        )
        message_id = await connection.fetchval("SELECT reminderd.schedule('acme', 'r1', now())")
        await connection.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'picked', picked_at = now() WHERE id = $1",
            message_id,
        )
        await connection.execute(
            "INSERT INTO reminderd.deliveries (message_id, tenant_id, webhook_id, attempt, scheduled_for,"
            " status_code, duration_ms) VALUES ($1, 'acme', 'msg_1_0', 1, now(), 200, 4)", message_id,
        )
        await connection.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'sent', last_event = 'fired', updated_at = now()"
            " WHERE id = $1", message_id,
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
        delivery = await connection.fetchrow("SELECT * FROM reminderd.deliveries")
        trail = await connection.fetch(
            "SELECT event, status, attempt FROM reminderd.trail WHERE tenant_id = 'acme' AND ref_id = 'r1'"
            " ORDER BY at, event_id, delivery_id"
        )
    finally:
        await connection.close()
    assert version == HEAD_REVISION
    assert (delivery["ref_id"], delivery["status_code"], delivery["event"]) == ("r1", 200, None)
    assert [tuple(t) for t in trail] == [("created", "pending", None), (None, None, 1), ("fired", "sent", None)]


async def test_a_database_at_0006_with_api_history_upgrades_to_head(empty_database_url: str) -> None:
    # 0007 then 0008 on a database the HTTP API has used: an extra occurrence's attempt gains its
    # ref, the API's role keeps updating the columns it had (extra_of, picked_by), not last_delivery_id.
    await asyncio.to_thread(upgrade, empty_database_url, "0006")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(connection, "acme")
        await connection.fetchval("SELECT reminderd.schedule_cron('acme', 'c1', '0 9 * * *')")
        extra = await connection.fetchval("SELECT reminderd.send_now('acme', 'c1')")
        await connection.execute(
            "INSERT INTO reminderd.deliveries (message_id, tenant_id, webhook_id, attempt, scheduled_for,"
            " status_code, duration_ms) VALUES ($1, 'acme', 'msg_x', 1, now(), 503, 4)", extra,
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        delivery = await connection.fetchrow("SELECT ref_id, message_id, event FROM reminderd.deliveries")
        updatable = {
            column: await connection.fetchval(
                "SELECT has_column_privilege('reminderd_api', 'reminderd.scheduled_messages', $1, 'UPDATE')",
                column)
            for column in ("extra_of", "picked_by", "last_delivery_id")
        }
        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
    finally:
        await connection.close()
    assert version == HEAD_REVISION
    assert tuple(delivery) == ("c1", extra, None)
    # picked_by is the daemon's since 0023 (only a daemon claims): reminderd serve never set it.
    assert updatable == {"extra_of": True, "picked_by": False, "last_delivery_id": False}


async def test_a_database_at_0008_with_data_upgrades_to_audiences(empty_database_url: str) -> None:
    # 0009 rebuilds the live-ref index (one more live status, extras still aside) and re-creates the
    # scheduling functions with contact_id: rows of day one, the API and the registry keep theirs.
    await asyncio.to_thread(upgrade, empty_database_url, "0008")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(connection, "acme")
        cron = await connection.fetchval("SELECT reminderd.schedule_cron('acme', 'c1', '0 9 * * *')")
        extra = await connection.fetchval("SELECT reminderd.send_now('acme', 'c1')")
        daemon = uuid.uuid4()
        await connection.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, picked_at,"
            " lease_expires_at, picked_by) VALUES ('acme', 'in-flight', now(), 'picked', 1, now(),"
            " now() + interval '5 minutes', $1)", daemon)
        before = await connection.fetchval("SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1",
                                           cron)
        await asyncio.to_thread(upgrade, empty_database_url)
        rows = await connection.fetch(
            "SELECT ref_id, status, extra_of, picked_by, timezone_source, contact_id, fire_at"
            " FROM reminderd.scheduled_messages ORDER BY id")
        again = await connection.fetchval("SELECT reminderd.send_now('acme', 'c1')")
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                " VALUES ('acme', 'c1', now())"
            )
    finally:
        await connection.close()
    assert [tuple(r)[:6] for r in rows] == [
        ("c1", "pending", None, None, "message", None), ("c1", "pending", cron, None, "message", None),
        ("in-flight", "picked", None, daemon, "message", None),
    ]
    assert rows[0]["fire_at"] == before  # its first occurrence, timed when it was scheduled (0005)
    assert again == extra  # the extra occurrence still waiting is the one send_now returns


async def test_a_database_at_0004_with_data_upgrades_to_audiences(empty_database_url: str) -> None:
    # 0009 adds contacts and broadcasts: messages already there keep everything, take their zone
    # from themselves ('message'), and stay claimable; the reference data is loaded with it.
    await asyncio.to_thread(upgrade, empty_database_url, "0004")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://example.com/cb')"
        )
        due = await connection.fetchval("SELECT reminderd.schedule('acme', 'due', now(), timezone => "
                                        "'Asia/Kolkata')")
        later = await connection.fetchval("SELECT reminderd.schedule_cron('acme', 'weekly', '0 9 * * 1')")
        await asyncio.to_thread(upgrade, empty_database_url)
        rows = {r["id"]: r for r in await connection.fetch("SELECT * FROM reminderd.scheduled_messages")}
        claimed = await connection.fetch(QUERIES_NOW["claim"], 120.0, 10, 300.0, "send", 1800.0, 2**31 - 1,
                                         None, uuid.uuid4())
        await connection.execute("UPDATE reminderd.tenants SET timezone = 'UTC' WHERE id = 'acme'")
        await connection.execute(
            """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "c1", "phone": "+919876543210"}]')"""
        )
        zone = await connection.fetchval("SELECT resolved_timezone FROM reminderd.contacts")
    finally:
        await connection.close()
    assert (rows[due]["timezone"], rows[due]["timezone_source"], rows[due]["contact_id"]) == (
        "Asia/Kolkata", "message", None)
    assert (rows[later]["cron"], rows[later]["status"]) == ("0 9 * * 1", "pending")
    assert [(r["id"], r["contact_id"], r["timezone_source"]) for r in claimed] == [(due, None, "message")]
    assert zone == "Asia/Kolkata"  # phonenumbers' Asia/Calcutta, by its current name


async def test_a_database_at_0008_with_messages_upgrades_to_the_lean_claim(empty_database_url: str) -> None:
    # 0013 re-adds category_format (the same rule, a cheaper regex), checking the rows already
    # there, and drops the index on sent refs: sent rows are still found by a retried call.
    await asyncio.to_thread(upgrade, empty_database_url, "0008")
    connection = await asyncpg.connect(empty_database_url)
    longest = "a" + "-_0z" * 7 + "abc"  # 32 characters
    try:
        await add_tenant(connection, "acme")
        fire_at = await connection.fetchval("SELECT date_trunc('second', now()) + interval '1 hour'")
        await connection.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category) VALUES"
            " ('acme', 'r1', $1, 'transactional'), ('acme', 'r2', $1, $2)", fire_at, longest,
        )
        sent = await connection.fetchval("SELECT reminderd.schedule('acme', 'r3', $1)", fire_at)
        await connection.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'sent', last_event = 'fired', updated_at = now()"
            " WHERE id = $1", sent,
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
        categories = await connection.fetch(
            "SELECT ref_id, category FROM reminderd.scheduled_messages ORDER BY id"
        )
        retried = await connection.fetchval("SELECT reminderd.schedule('acme', 'r3', $1)", fire_at)
        refused = []
        for category in (longest + "b", "Marketing", "9lives", "", "news letter"):
            try:
                await connection.execute(
                    "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category)"
                    " VALUES ('acme', 'x', $1, $2)", fire_at, category,
                )
            except asyncpg.CheckViolationError as exc:
                refused.append(exc.constraint_name)
        await connection.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, category)"
            " VALUES ('acme', 'x', $1, 'a')", fire_at,
        )
    finally:
        await connection.close()
    assert version == HEAD_REVISION
    assert [tuple(c) for c in categories] == [("r1", "transactional"), ("r2", longest), ("r3", "transactional")]
    assert retried == sent
    assert refused == ["category_format"] * 5


# schema.sql: the current schema for reading, kept equal to what the migrations build ------------


@pytest.fixture
async def schema_sql_database_url(empty_database_url: str) -> str:
    """An empty database with reminderd/sql/schema.sql loaded into it, as `psql -f` would."""
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
    finally:
        await connection.close()
    return empty_database_url


@pytest.fixture
def migrated_database_url(pg_server_url: str, template_database: str) -> str:
    """The session's template database: empty, then brought to head by the migrations (conftest)."""
    return f"{pg_server_url.rpartition('/')[0]}/{template_database}"


async def catalog_of(connection: asyncpg.Connection) -> Catalog:
    """Every aspect of the reminderd schema that schema_catalog.sql lists, as sorted lines."""
    return {
        aspect: [row["line"] for row in await connection.fetch(query)]
        for aspect, query in CATALOG_QUERIES.items()
    }


async def catalog_at(database_url: str) -> Catalog:
    # search_path = pg_catalog: every name comes out schema-qualified, whoever the role is.
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "pg_catalog"})
    try:
        return await catalog_of(connection)
    finally:
        await connection.close()


def differences(expected: Catalog, actual: Catalog, expected_name: str, actual_name: str) -> str:
    """A unified diff of each aspect in which the two catalogs disagree; empty when they agree."""
    diff: list[str] = []
    for aspect in CATALOG_QUERIES:
        if expected[aspect] != actual[aspect]:
            diff += difflib.unified_diff(
                [line for entry in expected[aspect] for line in entry.splitlines()],
                [line for entry in actual[aspect] for line in entry.splitlines()],
                f"{aspect} ({expected_name})", f"{aspect} ({actual_name})", lineterm="",
            )
    return "\n".join(diff)


async def test_schema_sql_builds_the_schema_the_migrations_build(
    schema_sql_database_url: str, migrated_database_url: str
) -> None:
    migrated = await catalog_at(migrated_database_url)
    built = await catalog_at(schema_sql_database_url)

    # Every query saw the schema (none of these may be empty), so equality below means something.
    seen = {"relations", "columns", "constraints", "indexes", "functions", "triggers", "views", "policies",
            "grants", "comments", "config_rows"}
    assert {aspect for aspect in seen if not migrated[aspect]} == set()
    diff = differences(migrated, built, "the migrations", "reminderd/sql/schema.sql")
    assert not diff, (
        "reminderd/sql/schema.sql no longer builds what the migrations build: a schema change needs both"
        " a new migration and the same change in schema.sql.\n" + diff
    )


# One change of each kind the comparison covers, and the aspect it must show up in.
CHANGES = {
    "ALTER TABLE reminderd.scheduled_messages SET (fillfactor = 90)": "relations",
    "ALTER TABLE reminderd.tenants ALTER COLUMN paused DROP DEFAULT": "columns",
    "ALTER TABLE reminderd.scheduled_messages ALTER COLUMN id SET MAXVALUE 1000": "sequences",
    "CREATE TYPE reminderd.outcome AS (message_id bigint, status text)": "relations columns types grants",
    "CREATE DOMAIN reminderd.positive AS integer CHECK (VALUE > 0)": "types constraints grants",
    "ALTER TABLE reminderd.scheduled_messages DROP CONSTRAINT one_recurrence": "constraints",
    "DROP INDEX reminderd.scheduled_messages_dead": "indexes",
    "ALTER FUNCTION reminderd.is_timezone(text) IMMUTABLE": "functions",
    "ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER scheduled_messages_payload_size": "triggers",
    "CREATE RULE no_delete AS ON DELETE TO reminderd.config DO INSTEAD NOTHING": "rules",
    "CREATE OR REPLACE VIEW reminderd.due_now WITH (security_invoker) AS"
    " SELECT id, tenant_id, ref_id, fire_at, now() - fire_at AS late_by, attempts, last_error"
    " FROM reminderd.scheduled_messages WHERE status = 'pending'": "views",
    "ALTER POLICY read_all ON reminderd.events TO reminderd_readonly, reminderd_app": "policies",
    "REVOKE SELECT ON reminderd.config FROM reminderd_readonly": "grants",
    "COMMENT ON TABLE reminderd.events IS 'the audit trail'": "comments",
    "CREATE STATISTICS reminderd.due_by_tenant ON tenant_id, status FROM reminderd.scheduled_messages":
        "extended_statistics",
    "UPDATE reminderd.config SET value = '1 day' WHERE key = 'horizon'": "config_rows",
}


async def test_the_comparison_sees_each_kind_of_difference(schema_sql_database_url: str) -> None:
    connection = await asyncpg.connect(schema_sql_database_url, server_settings={"search_path": "pg_catalog"})
    try:
        before = await catalog_of(connection)
        seen = {}
        for change in CHANGES:
            transaction = connection.transaction()
            await transaction.start()
            try:
                await connection.execute(change)
                after = await catalog_of(connection)
            finally:
                await transaction.rollback()
            seen[change] = " ".join(aspect for aspect in CATALOG_QUERIES if after[aspect] != before[aspect])
    finally:
        await connection.close()

    assert seen == CHANGES
    assert set(" ".join(CHANGES.values()).split()) == set(CATALOG_QUERIES) - {"schema"}


def reflecting_engine(database_url: str) -> AsyncEngine:
    # The test role is named "reminderd": with the default search_path ("$user", public) our schema
    # would be the default one, reflected as schema=None and compared wrongly. Pin it to public.
    return create_async_engine(
        asyncpg_to_sqlalchemy(database_url), connect_args={"server_settings": {"search_path": "public"}}
    )


async def test_alembic_finds_no_difference_between_schema_sql_and_the_migrations(
    schema_sql_database_url: str, migrated_database_url: str
) -> None:
    """A second opinion, from Alembic's own comparison: the tables of schema.sql's database,
    reflected into a SQLAlchemy description, against the migrated database."""
    description = MetaData()
    engine = reflecting_engine(schema_sql_database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(lambda sync_conn: description.reflect(sync_conn, schema="reminderd"))
    finally:
        await engine.dispose()

    engine = reflecting_engine(migrated_database_url)
    try:
        async with engine.connect() as connection:
            diffs = await connection.run_sync(
                lambda sync_conn: compare_metadata(
                    MigrationContext.configure(
                        sync_conn, opts={"include_schemas": True, "version_table_schema": "reminderd"}
                    ),
                    description,
                )
            )
    finally:
        await engine.dispose()

    def kind(diff: object) -> str:
        # A table/index diff is a tuple ("add_table", ...); column modifications come as a list of them.
        first = diff[0] if isinstance(diff, list) else diff
        return str(first[0])  # type: ignore[index]  # alembic's diffs are untyped tuples (or lists of them)

    structural = {
        "add_table", "remove_table", "add_column", "remove_column", "modify_type", "modify_nullable",
        "add_fk", "remove_fk",
    }
    assert [d for d in diffs if kind(d) in structural] == []
    # Reflected, the description has the partial indexes and comments too: nothing may differ.
    assert diffs == []
    # The description is the whole of schema.sql's tables, so the comparison above covered them.
    assert set(description.tables) == {
        "reminderd.api_keys", "reminderd.config", "reminderd.daemons", "reminderd.dashboard_signouts",
        "reminderd.deliveries",
        "reminderd.events", "reminderd.fire_counts", "reminderd.idempotency_keys", "reminderd.lateness_counts",
        "reminderd.scheduled_messages", "reminderd.tenant_holidays", "reminderd.tenant_members",
        "reminderd.tenants",
        "reminderd.audience_member_counts", "reminderd.audience_members", "reminderd.audiences",
        "reminderd.broadcast_counts",
        "reminderd.broadcast_occurrences", "reminderd.broadcast_requests", "reminderd.contacts",
        "reminderd.countries", "reminderd.phone_plans", "reminderd.phone_prefixes", "reminderd.phone_regions",
        "reminderd.phone_timezones", "reminderd.reference_versions", "reminderd.holiday_calendars",
        "reminderd.contact_sends", "reminderd.endpoint_health", "reminderd.endpoints",
        "reminderd.frequency_caps", "reminderd.tenant_budgets", "reminderd.usage_days",
        "reminderd.usage_increments",
    }
    messages = description.tables["reminderd.scheduled_messages"]
    assert "scheduled_messages_due" in {index.name for index in messages.indexes}


# Plain inserts and defaults ---------------------------------------------------------------------


async def test_plain_insert_gets_pending_status_zero_attempts_and_utc(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    row = await tx.fetchrow(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload)"
        " VALUES ('t1', 'r1', now() + interval '1 hour', '{\"a\": 1}') RETURNING *"
    )
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert row["timezone"] == "UTC"
    assert row["cron"] is None
    assert row["callback_url"] is None  # falls back to the tenant's at claim time
    assert json.loads(row["payload"]) == {"a": 1}


async def test_cron_row_may_have_no_fire_at(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    row = await tx.fetchrow(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron) VALUES ('t1', 'r1', '*/5 * * * *')"
        " RETURNING fire_at, status"
    )
    assert row["fire_at"] is None
    assert row["status"] == "pending"


async def test_one_off_without_fire_at_is_rejected(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await tx.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id) VALUES ('t1', 'r1')")
    assert caught.value.constraint_name == "one_off_needs_fire_at"


# One live row per reference ---------------------------------------------------------------------


async def test_second_live_row_for_a_ref_is_a_unique_violation(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    insert = "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('t1', 'r1', now())"
    await tx.execute(insert)
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        await tx.execute(insert)
    assert caught.value.constraint_name == "scheduled_messages_live_ref"


@pytest.mark.parametrize("status", ["picked", "paused"])
async def test_picked_and_paused_rows_count_as_live(tx: asyncpg.Connection, status: str) -> None:
    await add_tenant(tx)
    await tx.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('t1', 'r1', now(), $1)", status,
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await tx.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('t1', 'r1', now())"
        )


@pytest.mark.parametrize("finished", ["sent", "cancelled", "dead", "expired"])
async def test_new_row_is_allowed_once_the_previous_one_finished(tx: asyncpg.Connection, finished: str) -> None:
    await add_tenant(tx)
    insert = (
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('t1', 'r1', now())"
        " RETURNING id"
    )
    first = await tx.fetchval(insert)
    await tx.execute("UPDATE reminderd.scheduled_messages SET status = $1 WHERE id = $2", finished, first)
    second = await tx.fetchval(insert)

    assert second != first
    assert [r["id"] for r in await live_rows(tx, "t1", "r1")] == [second]


async def test_same_ref_under_two_tenants_is_two_live_rows(tx: asyncpg.Connection) -> None:
    await add_tenant(tx, "t1")
    await add_tenant(tx, "t2")
    await tx.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('t1', 'r1', now()), ('t2', 'r1', now())"
    )
    assert len(await live_rows(tx, "t1", "r1")) == 1
    assert len(await live_rows(tx, "t2", "r1")) == 1


# The SQL API: schedule, schedule_cron, cancel ---------------------------------------------------


async def test_schedule_stores_payload_and_callback_url(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    fire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    message_id = await tx.fetchval(
        "SELECT reminderd.schedule('t1', 'r1', $1, '{\"k\": [1, 2]}', 'https://hooks.example.org/x')", fire_at
    )
    row = await tx.fetchrow("SELECT * FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    assert row["fire_at"] == fire_at
    assert json.loads(row["payload"]) == {"k": [1, 2]}
    assert row["callback_url"] == "https://hooks.example.org/x"
    assert row["cron"] is None
    assert row["status"] == "pending"


async def test_schedule_defaults_to_empty_payload_and_tenant_callback(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval("SELECT reminderd.schedule('t1', 'r1', now())")
    row = await tx.fetchrow(
        "SELECT payload, callback_url FROM reminderd.scheduled_messages WHERE id = $1", message_id
    )
    assert json.loads(row["payload"]) == {}
    assert row["callback_url"] is None


async def test_schedule_twice_replaces_the_live_row(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    schedule = "SELECT reminderd.schedule('t1', 'r1', now() + $1::interval, $2::jsonb)"
    first = await tx.fetchval(schedule, timedelta(hours=1), '{"v": 1}')
    second = await tx.fetchval(schedule, timedelta(hours=2), '{"v": 2}')

    assert first != second
    old = await tx.fetchrow("SELECT status, last_error FROM reminderd.scheduled_messages WHERE id = $1", first)
    assert old["status"] == "cancelled"
    assert old["last_error"] == "replaced by a new schedule"
    live = await live_rows(tx, "t1", "r1")
    assert [r["id"] for r in live] == [second]
    assert json.loads(live[0]["payload"]) == {"v": 2}


async def test_schedule_with_null_fire_at_is_refused(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="fire_at"):
        await tx.fetchval("SELECT reminderd.schedule('t1', 'r1', NULL)")


async def test_schedule_cron_stores_cron_timezone_and_first_occurrence(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval(
        "SELECT reminderd.schedule_cron('t1', 'r1', '30 9 * * 1-5', 'Europe/London', '{\"x\": true}')"
    )
    row = await tx.fetchrow("SELECT *, now() AS scheduled_at FROM reminderd.scheduled_messages WHERE id = $1",
                            message_id)
    assert row["cron"] == "30 9 * * 1-5"
    assert row["timezone"] == "Europe/London"
    assert row["fire_at"] == next_fire("30 9 * * 1-5", "Europe/London", row["scheduled_at"])
    assert row["status"] == "pending"
    assert json.loads(row["payload"]) == {"x": True}


async def test_schedule_rrule_stores_the_rule_with_no_fire_at_for_the_planner(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval(
        "SELECT reminderd.schedule_rrule('t1', 'r1', 'FREQ=WEEKLY;BYDAY=MO', 'Europe/London', '{\"x\": true}')"
    )
    row = await tx.fetchrow("SELECT * FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    assert row["rrule"].endswith("\nFREQ=WEEKLY;BYDAY=MO")
    assert row["timezone"] == "Europe/London"
    assert row["fire_at"] is None
    assert row["status"] == "pending"
    assert json.loads(row["payload"]) == {"x": True}


async def test_schedule_cron_replaces_a_one_off_for_the_same_ref(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    one_off = await tx.fetchval("SELECT reminderd.schedule('t1', 'r1', now() + interval '1 hour')")
    recurring = await tx.fetchval("SELECT reminderd.schedule_cron('t1', 'r1', '@daily')")
    assert await status_by_id(tx, one_off) == "cancelled"
    assert [r["id"] for r in await live_rows(tx, "t1", "r1")] == [recurring]


async def test_cancel_cancels_the_live_row_then_is_a_no_op(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval("SELECT reminderd.schedule('t1', 'r1', now() + interval '1 hour')")

    assert await tx.fetchval("SELECT reminderd.cancel('t1', 'r1')") == 1
    assert await tx.fetchval("SELECT reminderd.cancel('t1', 'r1')") == 0
    row = await tx.fetchrow(
        "SELECT status, last_error FROM reminderd.scheduled_messages WHERE id = $1", message_id
    )
    assert (row["status"], row["last_error"]) == ("cancelled", "cancelled")


async def test_cancel_of_an_unknown_ref_returns_zero(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    assert await tx.fetchval("SELECT reminderd.cancel('t1', 'never-scheduled')") == 0


async def test_cancel_of_a_picked_row_cancels_it_and_drops_its_lease(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval(
        "INSERT INTO reminderd.scheduled_messages"
        " (tenant_id, ref_id, fire_at, status, attempts, lease_expires_at)"
        " VALUES ('t1', 'r1', now(), 'picked', 1, now() + interval '5 minutes') RETURNING id"
    )
    assert await tx.fetchval("SELECT reminderd.cancel('t1', 'r1')") == 1
    row = await tx.fetchrow(
        "SELECT status, lease_expires_at FROM reminderd.scheduled_messages WHERE id = $1", message_id
    )
    assert row["status"] == "cancelled"
    assert row["lease_expires_at"] is None


# Validation -------------------------------------------------------------------------------------


async def test_plain_insert_for_unknown_tenant_names_it(tx: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError, match='"ghost"'):
        await tx.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " VALUES ('ghost', 'r1', now())"
        )


async def test_plain_insert_with_url_for_unknown_tenant_is_a_foreign_key_violation(
    tx: asyncpg.Connection,
) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
        await tx.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, callback_url)"
            " VALUES ('ghost', 'r1', now(), 'https://example.com/x')"
        )
    assert "ghost" in f"{caught.value} {caught.value.detail}"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT reminderd.schedule('ghost', 'r1', now())",
        "SELECT reminderd.schedule_cron('ghost', 'r1', '@hourly')",
    ],
    ids=["schedule", "schedule_cron"],
)
async def test_sql_api_names_an_unknown_tenant(tx: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError, match='unknown tenant "ghost"'):
        await tx.fetchval(statement)


async def test_cancel_for_an_unknown_tenant_has_nothing_to_cancel(tx: asyncpg.Connection) -> None:
    assert await tx.fetchval("SELECT reminderd.cancel('ghost', 'r1')") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, timezone)"
        " VALUES ('t1', 'r1', '@daily', 'Mars/Base')",
        "SELECT reminderd.schedule_cron('t1', 'r1', '@daily', 'Mars/Base')",
    ],
    ids=["insert", "schedule_cron"],
)
async def test_unknown_timezone_is_rejected_by_name(tx: asyncpg.Connection, statement: str) -> None:
    await add_tenant(tx)
    with pytest.raises(asyncpg.InvalidParameterValueError, match='unknown timezone "Mars/Base"'):
        await tx.execute(statement)


@pytest.mark.parametrize("posix", ["UTC+3", "UTC-3", "<+03>-3"])
async def test_posix_timezone_strings_are_rejected(tx: asyncpg.Connection, posix: str) -> None:
    """POSIX 'UTC+3' means three hours *behind* UTC; the schema promises IANA names only."""
    await add_tenant(tx)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown timezone"):
        await tx.fetchval("SELECT reminderd.schedule_cron('t1', 'r1', '@daily', $1)", posix)


@pytest.mark.parametrize("iana", ["Europe/London", "Asia/Kolkata", "America/Argentina/Buenos_Aires",
                                  "Etc/GMT+3", "EST5EDT", "Etc/UTC", "UTC"])
async def test_iana_timezones_are_accepted(tx: asyncpg.Connection, iana: str) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval("SELECT reminderd.schedule_cron('t1', 'r1', '@daily', $1)", iana)
    row = await tx.fetchrow("SELECT timezone FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    assert row["timezone"] == iana


@pytest.mark.parametrize(
    ("zone", "hint"),
    [
        ("america/new_york", "Timezone names are case-sensitive: America/New_York."),
        ("EUROPE/LONDON", "Timezone names are case-sensitive: Europe/London."),
        ("PST", "Use an IANA name such as Europe/London or Asia/Kolkata."),  # an abbreviation, no zone
    ],
)
async def test_a_zone_postgresql_takes_but_the_daemon_cannot_read_is_refused(
    tx: asyncpg.Connection, zone: str, hint: str
) -> None:
    """Python's zoneinfo reads tz database files by their names: a row in such a zone would be dead
    on arrival. Refused as the daemon would refuse it, with the spelling it reads."""
    with pytest.raises(InvalidSchedule):
        load_timezone(zone)
    await add_tenant(tx)
    assert await tx.fetchval("SELECT reminderd.is_timezone($1)", zone) is False
    of_the_message = f'unknown timezone "{zone}" for message t1 / r1'
    for statement, message in [
        ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, timezone)"
         " VALUES ('t1', 'r1', '@daily', $1)", of_the_message),
        ("SELECT reminderd.schedule_cron('t1', 'r1', '@daily', $1)", of_the_message),
        ("SELECT reminderd.schedule('t1', 'r1', local_time => '2026-12-24 09:00', timezone => $1)",
         f'unknown timezone "{zone}"'),
    ]:
        with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
            async with tx.transaction():
                await tx.execute(statement, zone)
        assert (refused.value.message, refused.value.hint) == (message, hint)


async def test_timezone_is_checked_on_update_too(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval("SELECT reminderd.schedule_cron('t1', 'r1', '@daily')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="Mars/Base"):
        await tx.execute(
            "UPDATE reminderd.scheduled_messages SET timezone = 'Mars/Base' WHERE id = $1", message_id
        )


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("callback_url", "'ftp://x'", "callback_url_is_http"),
        ("callback_url", "'https://'", "callback_url_is_http"),
        ("ref_id", "''", "ref_id_not_empty"),
        ("max_attempts", "0", "max_attempts_positive"),
        ("status", "'bogus'", "status_is_known"),
    ],
)
async def test_check_constraints_reject_bad_values(
    tx: asyncpg.Connection, column: str, value: str, constraint: str
) -> None:
    await add_tenant(tx)
    values = {"tenant_id": "'t1'", "ref_id": "'r1'", "fire_at": "now()", column: value}
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await tx.execute(
            f"INSERT INTO reminderd.scheduled_messages ({', '.join(values)})"
            f" VALUES ({', '.join(values.values())})"
        )
    assert caught.value.constraint_name == constraint


@pytest.mark.parametrize("cron", ["* * *", "* * * * * * *", "@fortnightly", ""])
async def test_cron_without_five_or_six_fields_is_rejected(tx: asyncpg.Connection, cron: str) -> None:
    await add_tenant(tx)
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await tx.fetchval("SELECT reminderd.schedule_cron('t1', 'r1', $1)", cron)
    assert caught.value.constraint_name == "cron_shape"


@pytest.mark.parametrize(
    "cron", ["*/5 * * * *", "0 9 * * MON-FRI", "@hourly", " @weekly ", "0 0 9 * * MON-FRI", "0 9 * * 1#1"]
)
async def test_five_and_six_field_and_alias_crons_are_accepted(tx: asyncpg.Connection, cron: str) -> None:
    await add_tenant(tx)
    message_id = await tx.fetchval("SELECT reminderd.schedule_cron('t1', 'r1', $1)", cron)
    assert await tx.fetchval("SELECT cron FROM reminderd.scheduled_messages WHERE id = $1", message_id) == cron


async def test_schedule_with_empty_ref_is_refused(tx: asyncpg.Connection) -> None:
    await add_tenant(tx)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="ref_id"):
        await tx.fetchval("SELECT reminderd.schedule('t1', '', now())")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('quiet', 'r1', now())",
        "SELECT reminderd.schedule('quiet', 'r1', now())",
        "SELECT reminderd.schedule_cron('quiet', 'r1', '@daily')",
    ],
    ids=["insert", "schedule", "schedule_cron"],
)
async def test_message_without_any_callback_url_is_refused(tx: asyncpg.Connection, statement: str) -> None:
    await add_tenant(tx, "quiet", callback_url=None)
    no_default = r'no callback_url .* tenant "quiet" has no default'
    with pytest.raises(asyncpg.NotNullViolationError, match=no_default):
        await tx.execute(statement)


async def test_callback_url_on_the_row_suffices_when_the_tenant_has_none(tx: asyncpg.Connection) -> None:
    await add_tenant(tx, "quiet", callback_url=None)
    message_id = await tx.fetchval("SELECT reminderd.schedule('quiet', 'r1', now(), '{}', 'https://example.com/x')")
    assert await tx.fetchval(
        "SELECT callback_url FROM reminderd.scheduled_messages WHERE id = $1", message_id
    ) == "https://example.com/x"


async def test_tenant_callback_url_must_be_http(tx: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await add_tenant(tx, "t1", callback_url="ftp://example.com/cb")
    assert caught.value.constraint_name == "tenant_callback_url_is_http"


@pytest.mark.parametrize("tenant_id", ["", "-leading-dash", "has space", "x" * 129])
async def test_tenant_id_format_is_checked(tx: asyncpg.Connection, tenant_id: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await add_tenant(tx, tenant_id)
    assert caught.value.constraint_name == "tenant_id_format"


# Tenants --------------------------------------------------------------------------------------


async def test_tenants_get_distinct_32_byte_whsec_secrets(tx: asyncpg.Connection) -> None:
    await add_tenant(tx, "t1")
    await add_tenant(tx, "t2")
    secrets = [r["signing_secret"] for r in await tx.fetch("SELECT signing_secret FROM reminderd.tenants")]

    assert len(secrets) == 2
    assert secrets[0] != secrets[1]
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


# Concurrency (committed transactions: a database of its own) -------------------------------------


async def test_concurrent_schedules_of_one_ref_serialise_to_one_live_row(
    db: asyncpg.Connection, database_url: str
) -> None:
    """The second schedule() waits for the first transaction, then replaces its row: no UniqueViolation."""
    await add_tenant(db)
    first_conn = await asyncpg.connect(database_url)
    second_conn = await asyncpg.connect(database_url)
    try:
        first_tx = first_conn.transaction()
        await first_tx.start()
        first = await first_conn.fetchval("SELECT reminderd.schedule('t1', 'r1', now() + interval '1 hour')")

        async def schedule_in_own_transaction() -> int:
            async with second_conn.transaction():
                value: int = await second_conn.fetchval(
                    "SELECT reminderd.schedule('t1', 'r1', now() + interval '2 hours')"
                )
                return value

        second_task = asyncio.create_task(schedule_in_own_transaction())
        second_pid = second_conn.get_server_pid()

        async def second_is_blocked() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", second_pid
                )
            )

        await poll_until(second_is_blocked, timeout_s=5)  # both transactions now overlap
        await first_tx.commit()
        second = await asyncio.wait_for(second_task, timeout=5)
    finally:
        await first_conn.close()
        await second_conn.close()

    assert [r["id"] for r in await live_rows(db, "t1", "r1")] == [second]
    old = await db.fetchrow("SELECT status, last_error FROM reminderd.scheduled_messages WHERE id = $1", first)
    assert (old["status"], old["last_error"]) == ("cancelled", "replaced by a new schedule")


async def test_many_concurrent_schedules_of_one_ref_leave_exactly_one_live_row(
    db: asyncpg.Connection, database_url: str
) -> None:
    await add_tenant(db)
    connections = [await asyncpg.connect(database_url) for _ in range(6)]
    try:

        async def schedule(connection: asyncpg.Connection, n: int) -> int:
            async with connection.transaction():
                value: int = await connection.fetchval(
                    "SELECT reminderd.schedule('t1', 'r1', now() + make_interval(mins => $1::int))", n
                )
                return value

        ids = await asyncio.gather(*(schedule(c, n) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()

    assert len(set(ids)) == len(connections)
    assert len(await live_rows(db, "t1", "r1")) == 1
    counts = await db.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE status = 'cancelled') AS cancelled"
        " FROM reminderd.scheduled_messages"
    )
    assert (counts["total"], counts["cancelled"]) == (len(connections), len(connections) - 1)


# NOTIFY -----------------------------------------------------------------------------------------


class Notifications:
    """Collects reminderd_due payloads; `until_marker` waits for a marker sent after the statement.

    Notifications of one sender arrive in commit order, so once the marker is in, every
    notification of the statements before it is in too: no timed wait needed for a negative check.
    """

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._consumed = 0  # payloads up to here were returned by until_marker already
        self._arrived = asyncio.Event()

    def callback(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)
        self._arrived.set()

    async def wait_for(self, predicate: Callable[[list[str]], bool]) -> None:
        async with asyncio.timeout(NOTIFY_TIMEOUT_S):
            while not predicate(self.payloads):
                self._arrived.clear()
                await self._arrived.wait()

    async def until_marker(self, sender: asyncpg.Connection) -> list[str]:
        """The payloads received before a marker notification sent now by `sender`."""
        start = self._consumed
        marker = f"marker-{start}"
        await sender.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{marker}')")
        await self.wait_for(lambda payloads: marker in payloads[start:])
        end = self.payloads.index(marker, start)
        self._consumed = end + 1
        return self.payloads[start:end]


@pytest.fixture
async def notifications(database_url: str) -> AsyncIterator[Notifications]:
    collected = Notifications()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(NOTIFY_CHANNEL, collected.callback)
    yield collected
    await listener.remove_listener(NOTIFY_CHANNEL, collected.callback)
    await listener.close()


async def test_row_due_soon_notifies_its_fire_at(db: asyncpg.Connection, notifications: Notifications) -> None:
    await add_tenant(db)
    fire_at = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('t1', 'r1', now() + interval '3 minutes') RETURNING fire_at"
    )
    received = await notifications.until_marker(db)
    assert len(received) == 1
    assert float(received[0]) == pytest.approx(fire_at.timestamp(), abs=0.001)


async def test_past_due_row_notifies(db: asyncpg.Connection, notifications: Notifications) -> None:
    await add_tenant(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('t1', 'r1', now() - interval '5 seconds')"
    )
    assert len(await notifications.until_marker(db)) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT reminderd.schedule_rrule('t1', 'r1', 'FREQ=HOURLY')",
        "SELECT reminderd.schedule_cron('t1', 'r1', '@hourly', calendar => 'GB')",  # holidays: the planner's
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron) VALUES ('t1', 'r1', '@hourly')",
    ],
    ids=["schedule_rrule", "schedule_cron with a calendar", "insert"],
)
async def test_unplanned_recurring_row_notifies_plan(
    db: asyncpg.Connection, notifications: Notifications, statement: str
) -> None:
    await add_tenant(db)
    await db.execute(statement)
    assert await notifications.until_marker(db) == ["plan"]


async def test_row_due_in_two_hours_does_not_notify(
    db: asyncpg.Connection, notifications: Notifications
) -> None:
    await add_tenant(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('t1', 'r1', now() + interval '2 hours')"
    )
    assert await notifications.until_marker(db) == []


async def test_update_making_a_row_due_notifies(db: asyncpg.Connection, notifications: Notifications) -> None:
    await add_tenant(db)
    message_id = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('t1', 'r1', now() + interval '2 hours') RETURNING id"
    )
    assert await notifications.until_marker(db) == []
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE id = $1", message_id)
    assert len(await notifications.until_marker(db)) == 1


async def test_finished_rows_do_not_notify(db: asyncpg.Connection, notifications: Notifications) -> None:
    await add_tenant(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('t1', 'r1', now(), 'sent'), ('t1', 'r2', now(), 'cancelled')"
    )
    assert await notifications.until_marker(db) == []


async def test_multi_row_insert_notifies_once_with_the_earliest(
    db: asyncpg.Connection, notifications: Notifications
) -> None:
    await add_tenant(db)
    earliest = await db.fetchval(
        "WITH inserted AS ("
        "  INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        "  SELECT 't1', 'r' || n, now() - make_interval(secs => n) FROM generate_series(1, 500) AS n"
        "  RETURNING fire_at"
        ") SELECT min(fire_at) FROM inserted"
    )
    received = await notifications.until_marker(db)
    assert len(received) == 1, f"expected one notification per statement, got {len(received)}"
    assert float(received[0]) == pytest.approx(earliest.timestamp(), abs=0.001)


async def test_notification_is_sent_only_on_commit(
    db: asyncpg.Connection, database_url: str, notifications: Notifications
) -> None:
    await add_tenant(db)
    writer = await asyncpg.connect(database_url)
    try:
        async with writer.transaction():
            await writer.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                " VALUES ('t1', 'r1', now())"
            )
            assert await notifications.until_marker(db) == []  # not committed yet
        assert len(await notifications.until_marker(writer)) == 1
    finally:
        await writer.close()

