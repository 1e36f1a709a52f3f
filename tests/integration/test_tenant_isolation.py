"""Row-level security and roles (migration 0002) with real LOGIN roles, as an application would
connect: each app role sees and changes only its own tenant's rows, whatever it tries; the readonly
role sees everything and changes nothing; signing secrets are hidden from both; a daemon that is not
a superuser delivers; secret rotation signs with both secrets during the grace period only.

The test superuser bypasses row-level security, so every check runs on a connection made as a
role created here (roles are cluster-wide: names are unique per test, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support import TEST_SECRET, drain, fast_settings, poll_until, row_by_ref
from test_fair_sending import claim

from reminderd.migrate import HEAD_REVISION, upgrade
from reminderd.queries import QUERIES
from reminderd.schedule.cron import next_fire
from reminderd.store import NOTIFY_CHANNEL, Store
from reminderd.testing import Receiver

ROLE_PASSWORD = "reminderd-test"  # ignored under trust authentication, needed under scram
OTHER_SECRET = "whsec_" + "R2xvYmV4U2VjcmV0MDEyMzQ1Njc4OWFiY2RlZmdoaWo="

# What an app role may read, and the column naming the tenant of each row.
TENANT_COLUMN = {
    "reminderd.scheduled_messages": "tenant_id",
    "reminderd.deliveries": "tenant_id",
    "reminderd.events": "tenant_id",
    "reminderd.tenants": "id",
    "reminderd.tenant_members": "tenant_id",
    "reminderd.queue_overview": "tenant_id",
    "reminderd.due_now": "tenant_id",
    "reminderd.stuck": "tenant_id",
    "reminderd.dead_letters": "tenant_id",
    "reminderd.upcoming_by_hour": "tenant_id",
    "reminderd.recent_deliveries": "tenant_id",
    "reminderd.trail": "tenant_id",
}


pytestmark = pytest.mark.shared_database


def url_as(database_url: str, user: str) -> str:
    """The same server and database, as another role."""
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{ROLE_PASSWORD}@{host}{port}"))


@dataclass
class Roles:
    """Creates LOGIN roles with unique names, connects as them, and cleans both up."""

    admin: asyncpg.Connection
    database_url: str
    names: list[str] = field(default_factory=list)
    connections: list[asyncpg.Connection] = field(default_factory=list)

    async def create(self, prefix: str, *member_of: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        groups = f" IN ROLE {', '.join(member_of)}" if member_of else ""
        await self.admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{ROLE_PASSWORD}'{groups}")
        self.names.append(name)
        return name

    def url(self, name: str) -> str:
        return url_as(self.database_url, name)

    async def connect(self, name: str) -> asyncpg.Connection:
        connection = await asyncpg.connect(self.url(name))
        self.connections.append(connection)
        return connection

    async def cleanup(self) -> None:
        for connection in self.connections:
            await connection.close()
        for name in self.names:
            await self.admin.execute(f"DROP OWNED BY {name}")
            await self.admin.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
async def roles(db: asyncpg.Connection, database_url: str) -> AsyncIterator[Roles]:
    made = Roles(db, database_url)
    yield made
    await made.cleanup()


@dataclass
class TwoTenants:
    app_a: asyncpg.Connection  # acts for acme
    app_b: asyncpg.Connection  # acts for globex
    role_a: str
    role_b: str
    ids: dict[tuple[str, str], int]  # (tenant, ref) -> message id


async def arrange_messages(db: asyncpg.Connection, tenant_id: str) -> dict[tuple[str, str], int]:
    """One row for every view: upcoming, due, stuck (lease expired), dead, sent with a delivery."""
    rows = await db.fetch(
        "INSERT INTO reminderd.scheduled_messages"
        " (tenant_id, ref_id, fire_at, status, attempts, picked_at, lease_expires_at, last_error) VALUES"
        " ($1, 'upcoming', now() + interval '1 hour', 'pending', 0, NULL, NULL, NULL),"
        " ($1, 'due', now() - interval '10 seconds', 'pending', 0, NULL, NULL, NULL),"
        " ($1, 'stuck', now() - interval '10 minutes', 'picked', 1, now() - interval '6 minutes',"
        "  now() - interval '1 minute', NULL),"
        " ($1, 'dead', now() - interval '1 hour', 'dead', 8, NULL, NULL, 'gave up after 8 attempts: HTTP 503'),"
        " ($1, 'sent', now() - interval '1 hour', 'sent', 1, NULL, NULL, NULL),"
        " ($1, $1 || '-only', now() + interval '2 hours', 'pending', 0, NULL, NULL, NULL)"
        " RETURNING id, ref_id",
        tenant_id,
    )
    ids = {(tenant_id, r["ref_id"]): r["id"] for r in rows}
    await db.execute(
        "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for,"
        " status_code, duration_ms) VALUES ($1, $2, 'sent', $3, 1, now() - interval '1 hour', 200, 12)",
        ids[tenant_id, "sent"], tenant_id, f"msg_{ids[tenant_id, 'sent']}_0",
    )
    return ids


@pytest.fixture
async def two_tenants(db: asyncpg.Connection, store: Store, roles: Roles, tenant: str) -> TwoTenants:
    """acme (the receiver's tenant) and globex, each with one app role mapped to it only."""
    await db.execute(
        "INSERT INTO reminderd.tenants (id, callback_url, signing_secret) VALUES ('globex', $1, $2)",
        "https://globex.example/hooks", OTHER_SECRET,
    )
    role_a = await roles.create("app_a", "reminderd_app")
    role_b = await roles.create("app_b", "reminderd_app")
    await store.grant_tenant("acme", role_a)
    await store.grant_tenant("globex", role_b)
    ids = {**await arrange_messages(db, "acme"), **await arrange_messages(db, "globex")}
    return TwoTenants(await roles.connect(role_a), await roles.connect(role_b), role_a, role_b, ids)


def everywhere(*tenants: str) -> dict[str, set[str]]:
    """What a role should see: these tenants in every table and view."""
    return {relation: set(tenants) for relation in TENANT_COLUMN}


async def tenants_seen(connection: asyncpg.Connection) -> dict[str, set[str]]:
    """For each table and view: the tenants whose rows this connection can see."""
    seen = {}
    for relation, column in TENANT_COLUMN.items():
        rows = await connection.fetch(f"SELECT DISTINCT {column} AS tenant FROM {relation}")
        seen[relation] = {r["tenant"] for r in rows}
    return seen


async def snapshot(db: asyncpg.Connection, tenant_id: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT id, ref_id, status, fire_at, payload::text, attempts, paused_by, updated_at"
        " FROM reminderd.scheduled_messages WHERE tenant_id = $1 ORDER BY id", tenant_id,
    )
    return [tuple(r) for r in rows]


async def failure_of(call: Any) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as failure:
        await call
    return failure.value


async def run_cli(database_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reminderd.cli", "--database-url", database_url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# Mapping roles to tenants --------------------------------------------------------------------------


async def test_cli_grant_and_revoke_map_a_role_to_a_tenant(
    database_url: str, db: asyncpg.Connection, roles: Roles, tenant: str
) -> None:
    role = await roles.create("booking_service", "reminderd_app")
    app = await roles.connect(role)
    assert await app.fetch("SELECT tenant_id FROM reminderd.my_tenants") == []

    code, out, err = await run_cli(database_url, "tenant", "grant", "acme", role)
    assert (code, err) == (0, ""), err
    assert f"role {role} acts for tenant acme" in out

    assert [r["tenant_id"] for r in await app.fetch("SELECT tenant_id FROM reminderd.my_tenants")] == ["acme"]
    assert await app.fetchval("SELECT reminderd.schedule('acme', 'via-cli-grant', now() + interval '1 hour')")
    code, _, _ = await run_cli(database_url, "tenant", "grant", "acme", role)
    assert code == 0  # granting twice is harmless

    code, out, err = await run_cli(database_url, "tenant", "grant", "acme", f"{role}_missing")
    assert code == 2 and f'no database role "{role}_missing"' in err
    code, out, err = await run_cli(database_url, "tenant", "grant", "nope", role)
    assert code == 2 and 'unknown tenant "nope"' in err

    code, out, _ = await run_cli(database_url, "tenant", "revoke", "acme", role)
    assert code == 0 and "no longer acts for tenant acme" in out
    assert await app.fetch("SELECT tenant_id FROM reminderd.my_tenants") == []
    assert await app.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_cli_grant_says_what_else_the_role_needs_only_when_it_needs_it(
    database_url: str, db: asyncpg.Connection, roles: Roles, tenant: str
) -> None:
    app = await roles.create("app_member", "reminderd_app")
    bare = await roles.create("not_yet_app")
    noinherit = await roles.create("noinherit_app", "reminderd_app")
    await db.execute(f"ALTER ROLE {noinherit} NOINHERIT")

    code, out, err = await run_cli(database_url, "tenant", "grant", "acme", app)
    assert (code, err, out) == (0, "", f"role {app} acts for tenant acme\n")
    code, out, err = await run_cli(database_url, "tenant", "grant", "acme", bare)
    assert (code, err) == (0, "")
    assert out == f"role {bare} acts for tenant acme (it also needs: GRANT reminderd_app TO {bare})\n"
    code, out, err = await run_cli(database_url, "tenant", "grant", "acme", noinherit)
    assert (code, err) == (0, "")
    assert out == (
        f"role {noinherit} acts for tenant acme (it is a member of reminderd_app but does not inherit its "
        f"privileges: ALTER ROLE {noinherit} INHERIT, or SET ROLE reminderd_app after connecting)\n"
    )

    await db.execute(f"GRANT reminderd_app TO {bare}")  # and the hint goes away once it is done
    code, out, err = await run_cli(database_url, "tenant", "grant", "acme", bare)
    assert (code, err, out) == (0, "", f"role {bare} acts for tenant acme\n")


# Reading -------------------------------------------------------------------------------------------


async def test_each_app_role_sees_only_its_own_tenant_in_every_table_and_view(two_tenants: TwoTenants) -> None:
    seen_by_a = await tenants_seen(two_tenants.app_a)
    seen_by_b = await tenants_seen(two_tenants.app_b)

    assert seen_by_a == everywhere("acme")  # non-empty: every view has a row
    assert seen_by_b == everywhere("globex")
    assert await two_tenants.app_a.fetchval(
        "SELECT count(*) FROM reminderd.scheduled_messages WHERE tenant_id = 'globex'"
    ) == 0
    mine = await two_tenants.app_a.fetch("SELECT * FROM reminderd.my_tenants")
    assert [r["tenant_id"] for r in mine] == ["acme"]


async def test_session_variables_and_set_role_do_not_switch_tenants(two_tenants: TwoTenants) -> None:
    app = two_tenants.app_a
    await app.execute("SELECT set_config('app.tenant', 'globex', false)")
    await app.execute("SET reminderd.tenant = 'globex'")
    await app.execute("SET app.current_tenant = 'globex'")

    assert await tenants_seen(app) == everywhere("acme")
    assert await app.fetchval("SELECT count(*) FROM reminderd.events WHERE tenant_id = 'globex'") == 0

    failure = await failure_of(app.execute(f"SET ROLE {two_tenants.role_b}"))
    assert failure.sqlstate == "42501"
    failure = await failure_of(app.execute(f"SET SESSION AUTHORIZATION {two_tenants.role_b}"))
    assert failure.sqlstate == "42501"


async def test_a_role_mapped_to_no_tenant_sees_nothing(
    roles: Roles, two_tenants: TwoTenants
) -> None:
    lonely = await roles.connect(await roles.create("app_none", "reminderd_app"))

    assert await tenants_seen(lonely) == everywhere()
    failure = await failure_of(lonely.fetchval("SELECT reminderd.schedule('acme', 'x', now())"))
    assert failure.sqlstate == "23503" and 'unknown tenant "acme"' in str(failure)
    assert await lonely.execute("UPDATE reminderd.scheduled_messages SET status = 'cancelled'") == "UPDATE 0"


async def test_readonly_role_sees_every_tenant_and_writes_nothing(
    db: asyncpg.Connection, roles: Roles, two_tenants: TwoTenants
) -> None:
    readonly = await roles.connect(await roles.create("dba_ro", "reminderd_readonly"))
    every = everywhere("acme", "globex")
    assert await tenants_seen(readonly) == every
    total = await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages")
    assert await readonly.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == total
    before = await snapshot(db, "acme")

    for statement in (
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('acme', 'ro', now())",
        "UPDATE reminderd.scheduled_messages SET status = 'cancelled'",
        "DELETE FROM reminderd.scheduled_messages",
        "UPDATE reminderd.tenants SET callback_url = 'https://evil.example/'",
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
        " VALUES (1, 'acme', 'x', 'fired', 'sent', current_user)",
        "SELECT reminderd.schedule('acme', 'ro', now() + interval '1 hour')",
        "SELECT reminderd.cancel('acme', 'upcoming')",
        "SELECT reminderd.pause('acme', 'upcoming')",
        "UPDATE reminderd.config SET value = '1000 days'",
    ):
        failure = await failure_of(readonly.execute(statement))
        assert failure.sqlstate == "42501", statement
    assert await snapshot(db, "acme") == before


# Writing the other tenant's rows ---------------------------------------------------------------


async def test_app_role_cannot_change_the_other_tenants_messages(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    app = two_tenants.app_a
    before = await snapshot(db, "globex")
    globex_dead = two_tenants.ids["globex", "dead"]

    # Through the SQL API: cancelling the other's refs finds nothing to cancel...
    assert await app.fetchval("SELECT reminderd.cancel('globex', 'upcoming')") == 0
    assert await app.fetchval("SELECT reminderd.cancel_matching('globex', '%')") == 0
    # ...and everything else treats the other tenant as one that does not exist.
    for call in (
        "reminderd.pause('globex', 'upcoming')",
        "reminderd.resume('globex', 'upcoming')",
        "reminderd.reschedule('globex', 'upcoming', now() + interval '5 hours')",
        "reminderd.requeue_dead('globex', now() - interval '1 day')",
        "reminderd.schedule('globex', 'upcoming', now() + interval '1 hour')",
    ):
        failure = await failure_of(app.fetchval(f"SELECT {call}"))
        assert failure.sqlstate == "23503" and 'unknown tenant "globex"' in str(failure), call
    # Its own tenant never reaches the other's refs.
    assert await app.fetchval("SELECT reminderd.cancel('acme', 'globex-only')") == 0
    assert await app.fetchval("SELECT reminderd.cancel_matching('acme', 'globex-only%')") == 0
    failure = await failure_of(app.fetchval("SELECT reminderd.requeue($1)", globex_dead))
    assert failure.sqlstate == "P0002"  # as if it did not exist

    # Plain SQL.
    assert await app.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'cancelled' WHERE tenant_id = 'globex'"
    ) == "UPDATE 0"
    assert await app.execute("UPDATE reminderd.scheduled_messages SET status = 'cancelled' WHERE id = $1",
                             two_tenants.ids["globex", "upcoming"]) == "UPDATE 0"
    delete = "DELETE FROM reminderd.scheduled_messages WHERE "
    assert await app.execute(delete + "tenant_id = 'globex'") == "DELETE 0"
    assert await app.execute(delete + "ref_id = 'globex-only'") == "DELETE 0"
    # Moving an own row over to the other tenant: refused, whatever else changes (0039).
    own = two_tenants.ids["acme", "upcoming"]
    for also in ("", ", callback_url = 'https://a.example/'"):
        failure = await failure_of(app.execute(
            f"UPDATE reminderd.scheduled_messages SET tenant_id = 'globex'{also} WHERE id = $1", own))
        assert failure.sqlstate == "0A000" and 'from tenant "acme" to tenant "globex"' in str(failure)

    assert await snapshot(db, "globex") == before


async def test_inserting_a_message_for_the_other_tenant_fails_naming_it(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    app = two_tenants.app_a
    failure = await failure_of(app.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " VALUES ('globex', 'sneak', now())"
    ))
    assert failure.sqlstate == "23503" and 'unknown tenant "globex"' in str(failure)
    failure = await failure_of(app.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, callback_url)"
        " VALUES ('globex', 'sneak', now(), 'https://acme.example/steal')"
    ))
    assert failure.sqlstate == "42501"
    assert 'row-level security policy for table "scheduled_messages"' in str(failure)
    for statement in (
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
        " VALUES (1, 'globex', 'x', 'fired', 'sent', current_user)",
        "INSERT INTO reminderd.deliveries"
        " (message_id, tenant_id, ref_id, webhook_id, attempt, scheduled_for, duration_ms)"
        " VALUES (1, 'acme', 'upcoming', 'w', 1, now(), 1)",
        "INSERT INTO reminderd.tenant_members (role_name, tenant_id) VALUES (current_user, 'globex')",
        "UPDATE reminderd.tenants SET callback_url = 'https://acme.example/steal' WHERE id = 'globex'",
    ):
        assert (await failure_of(app.execute(statement))).sqlstate == "42501", statement
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id = 'sneak'") == 0


async def test_a_frequency_cap_for_another_tenant_is_refused_as_one_for_a_tenant_that_does_not_exist(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    """Whether globex exists is none of acme's business: its cap is refused in the very words a
    ghost's is (0029's check once looked as the owner, and said which ids exist)."""
    app = two_tenants.app_a
    await app.execute("INSERT INTO reminderd.frequency_caps VALUES ('acme', 'marketing', 2, '1 day')")

    def answer(failure: asyncpg.PostgresError, tenant_id: str) -> tuple[Any, ...]:
        return (failure.sqlstate, failure.message.replace(f'"{tenant_id}"', '"X"'), failure.hint,
                failure.constraint_name)

    for statement in (
        "INSERT INTO reminderd.frequency_caps VALUES ('{}', 'marketing', 2, '1 day')",
        "UPDATE reminderd.frequency_caps SET tenant_id = '{}' WHERE tenant_id = 'acme'",
    ):
        other, ghost = [
            answer(await failure_of(app.execute(statement.format(tenant_id))), tenant_id)
            for tenant_id in ("globex", "ghost")
        ]
        assert other == ghost, statement
        assert other[:2] == ("23503", 'unknown tenant "X"'), statement
    assert await db.fetchval("SELECT count(*) FROM reminderd.frequency_caps WHERE tenant_id <> 'acme'") == 0


async def test_an_app_role_cannot_forge_audit_rows_in_another_roles_name(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    """reminderd.events answers "who did it" with `actor`. The app may insert audit rows of its own
    tenant (its triggers do, as the app), but not claim another role did something."""
    app = two_tenants.app_a
    forged = app.fetchval(
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, reason, actor)"
        " VALUES ($1, 'acme', 'upcoming', 'cancelled', 'cancelled', 'cancelled by the DBA', 'postgres')"
        " RETURNING id", two_tenants.ids["acme", "upcoming"],
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await forged
    assert await db.fetchval("SELECT count(*) FROM reminderd.events WHERE actor = 'postgres'") == 0


async def test_an_app_role_cannot_hide_a_change_from_the_trail(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    """The audit trigger leaves to deliveries the changes whose row moves last_delivery_id (an
    attempt records them): only the daemon may move it, or an app could cancel without a trace."""
    app = two_tenants.app_a
    message_id = two_tenants.ids["acme", "upcoming"]
    hidden = app.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'cancelled', last_event = 'cancelled',"
        " last_delivery_id = 1 WHERE id = $1", message_id,
    )
    assert (await failure_of(hidden)).sqlstate == "42501"
    assert await app.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'cancelled', last_event = 'cancelled',"
        " updated_at = now() WHERE id = $1", message_id,
    ) == "UPDATE 1"
    assert await db.fetchval(
        "SELECT count(*) FROM reminderd.trail WHERE message_id = $1 AND event = 'cancelled'", message_id
    ) == 1


# What only the sequence and the daemon's claim set (migration 0023), and last_delivery_id (the trail).
NOT_UPDATABLE_BY_APPLICATIONS = {"last_delivery_id", "id", "picked_at", "picked_by", "endpoint"}


async def test_an_app_role_may_update_every_column_but_the_trails_and_the_daemons(
    db: asyncpg.Connection,
) -> None:
    """Its UPDATE privilege is granted column by column (all but last_delivery_id and, since 0023,
    the columns only the sequence and a claim set): a column added later must be added to that
    grant too, or applications cannot set it."""
    rows = await db.fetch(
        "SELECT attname, has_column_privilege('reminderd_app', attrelid, attname, 'UPDATE') AS updatable"
        " FROM pg_attribute WHERE attrelid = 'reminderd.scheduled_messages'::regclass"
        " AND attnum > 0 AND NOT attisdropped"
    )
    assert {r["attname"] for r in rows if not r["updatable"]} == NOT_UPDATABLE_BY_APPLICATIONS


async def test_the_api_role_may_update_every_column_but_the_trails_and_the_daemons(
    db: asyncpg.Connection,
) -> None:
    """`reminderd serve` connects as reminderd_api, granted UPDATE column by column like
    reminderd_app: it cannot hide a change from the trail either, and may set every other column
    (picked_by, extra_of and last_delivery_id came after its role; 0023 took id, picked_at,
    picked_by and endpoint back from both)."""
    rows = await db.fetch(
        "SELECT attname, has_column_privilege('reminderd_api', attrelid, attname, 'UPDATE') AS updatable"
        " FROM pg_attribute WHERE attrelid = 'reminderd.scheduled_messages'::regclass"
        " AND attnum > 0 AND NOT attisdropped"
    )
    assert {r["attname"] for r in rows if not r["updatable"]} == NOT_UPDATABLE_BY_APPLICATIONS
    assert await db.fetchval("SELECT has_table_privilege('reminderd_api', 'reminderd.trail', 'SELECT')")


# Secrets ------------------------------------------------------------------------------------------


async def test_signing_secrets_are_hidden_from_app_and_readonly_roles(
    store: Store, roles: Roles, two_tenants: TwoTenants
) -> None:
    await store.rotate_secret("acme", 3600)  # so previous_signing_secret holds a secret too
    await store.rotate_secret("acme", 3600)  # and earlier_signing_secret (migration 0035)
    readonly = await roles.connect(await roles.create("dba_ro", "reminderd_readonly"))
    daemon = await roles.connect(await roles.create("daemon", "reminderd_daemon"))

    for connection in (two_tenants.app_a, readonly):
        for query in (
            "SELECT signing_secret FROM reminderd.tenants",
            "SELECT previous_signing_secret FROM reminderd.tenants",
            "SELECT earlier_signing_secret FROM reminderd.tenants",
            "SELECT * FROM reminderd.tenants",
            "SELECT t FROM reminderd.tenants t",
            "SELECT id FROM reminderd.tenants WHERE signing_secret LIKE 'whsec_%'",
        ):
            failure = await failure_of(connection.fetch(query))
            assert failure.sqlstate == "42501" and "permission denied" in str(failure), query
        visible = await connection.fetch("SELECT id, callback_url, paused FROM reminderd.tenants")
        assert {r["id"] for r in visible}
    # The claim query returns secrets, so an app role cannot run it (nor take messages that way).
    failure = await failure_of(
        two_tenants.app_a.fetch(QUERIES["claim"], 120.0, 10, 300.0, "send", 1800.0, 64, None, None)
    )
    assert failure.sqlstate == "42501"
    # The daemon signs callbacks: it reads them.
    assert await daemon.fetchval("SELECT count(signing_secret) FROM reminderd.tenants") == 2


async def test_daemon_only_functions_are_not_executable_by_app_or_readonly_roles(
    db: asyncpg.Connection, roles: Roles, two_tenants: TwoTenants
) -> None:
    """The migration grants pause_tenant, resume_tenant, rotate_secret and prune to reminderd_daemon
    only; a function is executable by PUBLIC unless that is revoked after it is created."""
    readonly = await roles.create("dba_ro", "reminderd_readonly")
    executable: dict[str, list[str]] = {}
    for role in (two_tenants.role_a, readonly):
        for function in (
            "reminderd.pause_tenant(text)",
            "reminderd.resume_tenant(text)",
            "reminderd.rotate_secret(text, interval)",
            "reminderd.prune(interval, interval, interval, integer)",
        ):
            if await db.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, function):
                executable.setdefault(role, []).append(function)
    assert executable == {}


# Own tenant, as the app role -------------------------------------------------------------------


async def test_app_role_uses_the_sql_api_and_plain_sql_for_its_own_tenant(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    app, role = two_tenants.app_a, two_tenants.role_a
    notifications: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener(NOTIFY_CHANNEL, lambda *args: notifications.put_nowait(args[-1]))

    scheduled = await app.fetchval("SELECT reminderd.schedule('acme', 'api', now() + interval '1 hour')")
    replaced = await app.fetchval("SELECT reminderd.schedule('acme', 'api', now() + interval '2 hours')")
    assert await app.fetchval("SELECT reminderd.pause('acme', 'api')") == 1
    assert await app.fetchval("SELECT reminderd.resume('acme', 'api')") == 1
    assert await app.fetchval("SELECT reminderd.reschedule('acme', 'api', now() + interval '3 hours')") == 1
    assert await app.fetchval("SELECT reminderd.cancel('acme', 'api')") == 1
    inserted = await app.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES ('acme', 'plain', now())"
        " RETURNING id"
    )
    notified = await asyncio.wait_for(notifications.get(), 5)
    assert notified != "plan"  # the due-soon NOTIFY of the plain insert fired under RLS too
    assert await app.fetchval("SELECT reminderd.cancel_matching('acme', 'plai%')") == 1
    assert await app.fetchval("SELECT reminderd.requeue($1)", two_tenants.ids["acme", "dead"]) == 1
    assert await app.execute("UPDATE reminderd.scheduled_messages SET payload = '{\"v\": 2}'"
                             " WHERE ref_id = 'upcoming'") == "UPDATE 1"

    events = await db.fetch(
        "SELECT message_id, event, actor FROM reminderd.events WHERE actor <> current_user ORDER BY id"
    )
    assert {e["actor"] for e in events} == {role}
    assert [(e["message_id"], e["event"]) for e in events] == [
        (scheduled, "created"), (scheduled, "replaced"), (replaced, "created"), (replaced, "paused"),
        (replaced, "resumed"), (replaced, "rescheduled"), (replaced, "cancelled"), (inserted, "created"),
        (inserted, "cancelled"), (two_tenants.ids["acme", "dead"], "requeued"),
    ]
    # ...and the app reads its own trail back.
    assert await app.fetchval("SELECT count(*) FROM reminderd.events WHERE actor = current_user") == len(events)


async def test_app_role_schedules_a_cron_due_at_once_reading_its_tenant_s_days_off(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    """schedule_cron computes the first occurrence under the app's privileges and RLS: the cron
    functions, the tenant's holiday settings and its own days off."""
    app = two_tenants.app_a
    schedule = ("SELECT reminderd.schedule_cron('acme', 'new-year', '30 1 1 1 *', 'Asia/Kolkata') AS id,"
                " now() AS at")
    fire_at = "SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1"
    row = await app.fetchrow(schedule)
    first = next_fire("30 1 1 1 *", "Asia/Kolkata", row["at"])
    assert await app.fetchval(fire_at, row["id"]) == first
    new_year = first.astimezone(ZoneInfo("Asia/Kolkata")).date()
    await app.execute("INSERT INTO reminderd.tenant_holidays VALUES ('acme', $1, 'Company day')", new_year)
    row = await app.fetchrow(schedule)
    assert await app.fetchval(fire_at, row["id"]) is None  # the planner's: it skips the day off


# The daemon as a non-superuser -----------------------------------------------------------------


async def test_a_daemon_role_that_is_not_a_superuser_delivers(
    db: asyncpg.Connection, roles: Roles, receiver: Receiver, tenant: str
) -> None:
    daemon = await roles.create("reminderd_svc", "reminderd_daemon")
    assert await db.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", daemon
    ) == (False, False)
    await db.execute("SELECT reminderd.schedule('acme', 'as-daemon', now())")

    await drain(fast_settings(roles.url(daemon)))
    row = await row_by_ref(db, "as-daemon")
    assert row["status"] == "sent" and len(receiver.received) == 1

    got = receiver.received[0]
    assert Webhook(TEST_SECRET).verify(got.body, got.headers)["ref_id"] == "as-daemon"
    delivery = await db.fetchrow("SELECT * FROM reminderd.deliveries WHERE message_id = $1", row["id"])
    assert delivery["status_code"] == 200
    fired = await db.fetchrow(
        "SELECT * FROM reminderd.trail WHERE message_id = $1 AND event = 'fired'", row["id"]
    )
    assert fired["actor"] == daemon
    # Its retention job runs as that role too.
    connection = await roles.connect(daemon)
    assert tuple(await connection.fetchrow(
        "SELECT * FROM reminderd.prune('7 days', '30 days', '30 days')"
    )) == (0, 0, 0)


# Secret rotation --------------------------------------------------------------------------------


async def test_rotation_signs_with_both_secrets_during_the_grace_period_then_only_the_new_one(
    database_url: str, db: asyncpg.Connection, store: Store, receiver: Receiver, tenant: str
) -> None:
    code, out, err = await run_cli(database_url, "tenant", "rotate-secret", "acme", "--grace", "1h")
    assert code == 0, err
    rotated = out.strip().splitlines()[-1]
    assert rotated.startswith("whsec_") and rotated != TEST_SECRET
    expires = await db.fetchval(
        "SELECT previous_secret_expires_at - now() FROM reminderd.tenants WHERE id = 'acme'"
    )
    assert 3590 < expires.total_seconds() <= 3600

    await db.execute("SELECT reminderd.schedule('acme', 'during-grace', now())")
    await drain(fast_settings(database_url))
    assert len(receiver.received) == 1

    newest = await store.rotate_secret("acme", 0.2)

    async def grace_over() -> bool:
        return bool(await db.fetchval(
            "SELECT previous_secret_expires_at < now() FROM reminderd.tenants WHERE id = 'acme'"
        ))

    await poll_until(grace_over)  # the database's clock passing the grace period, not the worker
    await db.execute("SELECT reminderd.schedule('acme', 'after-grace', now())")
    await drain(fast_settings(database_url))
    assert len(receiver.received) == 2

    during, after = receiver.by_ref()["during-grace"][0], receiver.by_ref()["after-grace"][0]
    assert len(during.signature.split(" ")) == 2
    assert Webhook(TEST_SECRET).verify(during.body, during.headers)["ref_id"] == "during-grace"
    assert Webhook(rotated).verify(during.body, during.headers)["ref_id"] == "during-grace"

    assert len(after.signature.split(" ")) == 1
    assert Webhook(newest).verify(after.body, after.headers)["ref_id"] == "after-grace"
    for stale in (rotated, TEST_SECRET):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(after.body, after.headers)
    assert time.time() - after.received_at < 60


async def test_rotating_again_after_a_lost_answer_keeps_the_original_secret_signing_until_its_grace_ends(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    """The first rotation's answer was lost, so its secret was never deployed: rotating again must
    not end the original's grace (migration 0035). Receivers that know only the original, only
    the lost one or only the newest verify every callback until the grace each one was given ends."""
    lost = await db.fetchval("SELECT reminderd.rotate_secret('acme', interval '1 hour')")  # the answer lost
    first_grace = await db.fetchval(
        "SELECT previous_secret_expires_at FROM reminderd.tenants WHERE id = 'acme'")
    code, out, err = await run_cli(database_url, "tenant", "rotate-secret", "acme", "--grace", "2h")
    assert code == 0, err
    newest = out.strip().splitlines()[-1]
    row = await db.fetchrow("SELECT earlier_signing_secret, earlier_secret_expires_at, previous_signing_secret,"
                            " previous_secret_expires_at - now() AS grace"
                            " FROM reminderd.tenants WHERE id = 'acme'")
    assert (row["earlier_signing_secret"], row["previous_signing_secret"]) == (TEST_SECRET, lost)
    assert row["earlier_secret_expires_at"] == first_grace  # not cut short, nor lengthened
    assert 7190 < row["grace"].total_seconds() <= 7200

    await db.execute("SELECT reminderd.schedule('acme', 'twice-rotated', now())")
    await drain(fast_settings(database_url))
    (during,) = receiver.by_ref()["twice-rotated"]
    assert len(during.signature.split(" ")) == 3
    for secret in (TEST_SECRET, lost, newest):
        assert Webhook(secret).verify(during.body, during.headers)["ref_id"] == "twice-rotated"

    # A third rotation within the graces keeps the oldest (the original) and the one it replaces.
    third = await db.fetchval("SELECT reminderd.rotate_secret('acme', interval '1 hour')")
    row = await db.fetchrow("SELECT earlier_signing_secret, earlier_secret_expires_at, previous_signing_secret"
                            " FROM reminderd.tenants WHERE id = 'acme'")
    assert tuple(row) == (TEST_SECRET, first_grace, newest)
    await db.execute("SELECT reminderd.schedule('acme', 'thrice-rotated', now())")
    await drain(fast_settings(database_url))
    (thrice,) = receiver.by_ref()["thrice-rotated"]
    for secret in (TEST_SECRET, newest, third):
        assert Webhook(secret).verify(thrice.body, thrice.headers)["ref_id"] == "thrice-rotated"
    with pytest.raises(WebhookVerificationError):
        Webhook(lost).verify(thrice.body, thrice.headers)

    # Grace 0 (a leaked secret): every old one stops signing at once.
    leaked = await db.fetchval("SELECT reminderd.rotate_secret('acme', interval '0')")
    await db.execute("SELECT reminderd.schedule('acme', 'after-leak', now())")
    await drain(fast_settings(database_url))
    (after,) = receiver.by_ref()["after-leak"]
    assert len(after.signature.split(" ")) == 1
    assert Webhook(leaked).verify(after.body, after.headers)["ref_id"] == "after-leak"
    for stale in (TEST_SECRET, lost, newest, third):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(after.body, after.headers)


# Values that point into another tenant's data (migration 0023) -------------------------------------
# Row-level security checks a row's own tenant_id; what a row names (a broadcast, a message id, a
# claim against a shared endpoint, a count) is checked by the constraints, triggers and privileges
# of 0023: each attempt is one line with a documented SQLSTATE, and the victim goes on unaffected.


async def globex_recurring_broadcast(db: asyncpg.Connection) -> tuple[int, datetime]:
    """globex's daily broadcast with a completion callback, its next occurrence tomorrow at 09:00."""
    await db.execute(
        """SELECT reminderd.upsert_contacts('globex', '[{"contact_id": "g1", "timezone": "Europe/London"}]')"""
    )
    broadcast_id: int = await db.fetchval(
        "SELECT reminderd.broadcast('globex', 'globex-campaign', cron => '0 9 * * *', everyone => true,"
        " notify => true, callback_url => 'https://globex.example/private-hook')"
    )
    wall = (datetime.now(UTC) + timedelta(days=1)).replace(
        tzinfo=None, hour=9, minute=0, second=0, microsecond=0
    )
    await db.execute(
        "UPDATE reminderd.broadcast_requests SET next_occurrence = $1 WHERE id = $2", wall, broadcast_id
    )
    return broadcast_id, wall


# Broadcasts ---------------------------------------------------------------------------------------


async def test_an_app_cannot_file_a_wave_or_counts_under_another_tenants_broadcast(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    broadcast_id, wall = await globex_recurring_broadcast(db)
    acme = two_tenants.app_a

    forged_wave = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
            " VALUES ($1, $2, 'acme', 0)",
            broadcast_id,
            wall,
        )
    )
    nobodys_wave = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
            " VALUES ($1, $2, 'acme', 0)",
            broadcast_id + 1000,
            wall,
        )
    )
    forged_counts = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, sent, waiting)"
            " VALUES ($1, $2, 'acme', 999999, 1)",
            broadcast_id,
            wall,
        )
    )

    # Another tenant's broadcast and no broadcast at all are refused alike: no existence oracle.
    assert (forged_wave.sqlstate, nobodys_wave.sqlstate) == ("23503", "23503")
    assert forged_wave.constraint_name == nobodys_wave.constraint_name == "broadcast_occurrences_broadcast_fkey"
    assert str(forged_wave).replace(str(broadcast_id), "N") == str(nobodys_wave).replace(
        str(broadcast_id + 1000), "N"
    )
    assert forged_counts.sqlstate == "42501"
    assert "permission denied for table broadcast_counts" in str(forged_counts)
    assert (await failure_of(acme.execute("DELETE FROM reminderd.broadcast_occurrences"))).sqlstate == "42501"

    # globex's occurrence stages and its progress is its own.
    assert (
        await db.fetchval(
            "SELECT reminderd.stage_broadcast($1, $2, $3)", broadcast_id, wall, wall + timedelta(days=1)
        )
        == 1
    )
    shown = await db.fetchrow(
        "SELECT occurrences, staged, sent, waiting FROM reminderd.broadcasts WHERE id = $1", broadcast_id
    )
    assert dict(shown) == {"occurrences": 1, "staged": 1, "sent": 0, "waiting": 1}


async def test_counts_filed_under_another_tenant_are_neither_shown_nor_completed(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    """Defence in depth: a count row of acme's under globex's broadcast (as only a bug or a DBA could
    now write it) changes nothing globex reads, and completes nothing in acme's name."""
    broadcast_id, wall = await globex_recurring_broadcast(db)
    assert await db.fetchval("SELECT reminderd.stage_broadcast($1, $2, NULL)", broadcast_id, wall) == 1
    await db.execute(
        "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, waiting, sent)"
        " VALUES ($1, $2, 'acme', -1, 999999)",
        broadcast_id,
        wall,
    )

    shown = await db.fetchrow(
        "SELECT sent, waiting, done FROM reminderd.broadcasts WHERE id = $1", broadcast_id
    )
    assert dict(shown) == {"sent": 0, "waiting": 1, "done": False}
    assert await db.fetch("SELECT * FROM reminderd.complete_broadcasts()") == []
    assert (
        await db.fetchval(
            "SELECT count(*) FROM reminderd.scheduled_messages WHERE tenant_id = 'acme' AND broadcast_id = $1",
            broadcast_id,
        )
        == 0
    )


async def test_an_app_cannot_point_its_messages_at_another_tenants_broadcast(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    broadcast_id, _ = await globex_recurring_broadcast(db)
    await db.execute(
        "UPDATE reminderd.broadcast_requests SET approval = 'awaiting' WHERE id = $1", broadcast_id
    )
    acme = two_tenants.app_a
    hitched = await acme.fetchval("SELECT reminderd.schedule('acme', 'hitch', now() + interval '1 day')")

    moved = await failure_of(
        acme.execute(
            "UPDATE reminderd.scheduled_messages SET broadcast_id = $1, status = 'awaiting_approval'"
            " WHERE id = $2",
            broadcast_id,
            hitched,
        )
    )
    inserted = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, broadcast_id)"
            " VALUES ('acme', 'stowaway', now() + interval '1 day', $1)",
            broadcast_id,
        )
    )

    for failure in (moved, inserted):
        assert failure.sqlstate == "23503"
        assert failure.message.startswith(f'tenant "acme" has no broadcast {broadcast_id}: ')
        assert "\n" not in failure.message and failure.hint
    assert (
        await db.fetchval("SELECT reminderd.approve_broadcast('globex', $1, 'globex-boss')", broadcast_id) == 0
    )
    row = await db.fetchrow(
        "SELECT status, last_error, broadcast_id FROM reminderd.scheduled_messages WHERE id = $1", hitched
    )
    assert dict(row) == {"status": "pending", "last_error": None, "broadcast_id": None}


# Message ids --------------------------------------------------------------------------------------


async def test_an_app_cannot_take_the_ids_another_tenant_is_given_next(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    acme, globex = two_tenants.app_a, two_tenants.app_b
    top = await acme.fetchval("SELECT reminderd.schedule('acme', 'probe', now() + interval '1 day')")

    squat = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.scheduled_messages (id, tenant_id, ref_id, fire_at)"
            " SELECT g, 'acme', 'squat-' || g, now() + interval '1 day'"
            " FROM generate_series($1::bigint + 1, $1::bigint + 50) g",
            top,
        )
    )
    renumbered = await failure_of(
        acme.execute("UPDATE reminderd.scheduled_messages SET id = $1 + 1 WHERE id = $1", top)
    )

    assert squat.sqlstate == "42501"
    assert squat.message == (
        f"message id {top + 50} is not yours to choose: reminderd.scheduled_messages_id_seq"
        " numbers the messages and has not reached it"
    )
    assert squat.hint and "Leave id out" in squat.hint
    assert renumbered.sqlstate == "42501"
    assert (
        await globex.fetchval("SELECT reminderd.schedule('globex', 'victim', now() + interval '1 hour')")
        == top + 1
    )
    assert (
        await globex.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " VALUES ('globex', 'plain', now() + interval '1 hour')"
        )
        == "INSERT 0 1"
    )


# The dashboard ------------------------------------------------------------------------------------


async def test_a_reused_id_shows_only_its_own_tenants_attempts_and_trail(
    db: asyncpg.Connection, store: Store, two_tenants: TwoTenants
) -> None:
    gone = two_tenants.ids["globex", "sent"]
    await db.execute(
        "UPDATE reminderd.deliveries SET error = 'globex receiver said: card declined' WHERE message_id = $1",
        gone,
    )
    await db.execute("SELECT set_config('reminderd.on_behalf_of', 'rk_globexkey01 (globex billing)', false)")
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET fire_at = fire_at + interval '1 minute' WHERE id = $1", gone
    )
    await two_tenants.app_b.execute("DELETE FROM reminderd.scheduled_messages WHERE id = $1", gone)
    # An id below the sequence's is not another tenant's next one: acme may still write it.
    await two_tenants.app_a.execute(
        "INSERT INTO reminderd.scheduled_messages (id, tenant_id, ref_id, fire_at)"
        " VALUES ($1, 'acme', 'borrowed', now() + interval '1 day')",
        gone,
    )

    for session_tenant in ("acme", None):  # acme's session, and an operator's (every tenant)
        story = await store.message_story(session_tenant, gone)
        assert story is not None
        message, attempts, trail = story
        assert (message.tenant_id, message.ref_id) == ("acme", "borrowed")
        assert attempts == []
        assert [(e.event, e.actor, e.on_behalf_of) for e in trail] == [("created", two_tenants.role_a, None)]


# Claims -------------------------------------------------------------------------------------------


async def test_an_app_cannot_hold_a_shared_endpoints_in_flight(
    db: asyncpg.Connection, store: Store, two_tenants: TwoTenants
) -> None:
    await db.execute(
        "UPDATE reminderd.tenants SET callback_url = 'https://hooks.shared.example/globex' WHERE id = 'globex'"
    )
    await db.execute(
        "INSERT INTO reminderd.endpoints (endpoint, max_in_flight) VALUES ('hooks.shared.example:443', 2)"
        " ON CONFLICT (endpoint) DO UPDATE SET max_in_flight = 2"
    )
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'cancelled' WHERE status IN ('pending', 'picked')"
    )
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 'globex', 'g' || i, now() - interval '1 second' FROM generate_series(1, 5) i"
    )
    acme = two_tenants.app_a
    mine = await acme.fetchval("SELECT reminderd.schedule('acme', 'squat', now() + interval '1 day')")

    squatted = await failure_of(
        acme.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'picked', endpoint = 'hooks.shared.example:443',"
            " picked_at = now(), lease_expires_at = now() + interval '100 years', picked_by = NULL"
            " WHERE id = $1",
            mine,
        )
    )
    picked = await failure_of(
        acme.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'picked',"
            " lease_expires_at = now() + interval '100 years' WHERE id = $1",
            mine,
        )
    )
    inserted = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.scheduled_messages"
            " (tenant_id, ref_id, fire_at, status, endpoint, lease_expires_at) VALUES"
            " ('acme', 'held', now(), 'picked', 'hooks.shared.example:443', now() + interval '100 years')"
        )
    )

    assert squatted.sqlstate == "42501" and "permission denied for table scheduled_messages" in str(squatted)
    for failure, ref in ((picked, "squat"), (inserted, "held")):
        assert failure.sqlstate == "42501"
        assert failure.message == (
            f"message acme / {ref} cannot be set to picked by role {two_tenants.role_a}:"
            " only a reminderd daemon claims messages"
        )
        assert failure.hint == "Leave status to the daemon: a pending message that is due is claimed at once."
    result = await claim(store, batch_size=100, default_max_in_flight=2147483647)
    assert len(result.jobs) == 2 and {j.tenant_id for j in result.jobs} == {"globex"}


# Usage --------------------------------------------------------------------------------------------


async def test_an_app_cannot_write_its_own_usage(db: asyncpg.Connection, two_tenants: TwoTenants) -> None:
    acme = two_tenants.app_a
    before = await acme.fetchval("SELECT scheduled FROM reminderd.usage_daily WHERE tenant_id = 'acme'")

    forged = await failure_of(
        acme.execute(
            "INSERT INTO reminderd.usage_increments (tenant_id, scheduled, delivered)"
            " VALUES ('acme', -1000000, -1000000)"
        )
    )
    negative = await failure_of(
        db.execute("INSERT INTO reminderd.usage_increments (tenant_id, delivered) VALUES ('acme', -1)")
    )

    assert forged.sqlstate == "42501" and "permission denied for table usage_increments" in str(forged)
    assert (negative.sqlstate, negative.constraint_name) == ("23514", "usage_increments_not_negative")
    await acme.fetchval("SELECT reminderd.schedule('acme', 'metered', now() + interval '1 day')")
    assert (
        await acme.fetchval("SELECT scheduled FROM reminderd.usage_daily WHERE tenant_id = 'acme'")
        == before + 1
    )


# The migration ------------------------------------------------------------------------------------


async def test_a_database_at_0021_with_forged_rows_upgrades_to_head(empty_database_url: str) -> None:
    """0023 on a database where the holes were used: waves and counts filed under another tenant's
    broadcast are deleted, a message naming one forgets it, negative usage becomes 0, and a row picked
    by nobody with a lease that never ends is reaped; everything else stays."""
    await asyncio.to_thread(upgrade, empty_database_url, "0021")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://acme.example/cb'),"
            " ('globex', 'https://globex.example/cb')"
        )
        await connection.execute(
            """SELECT reminderd.upsert_contacts('globex', '[{"contact_id": "g1", "timezone": "UTC"}]')"""
        )
        broadcast_id = await connection.fetchval(
            "SELECT reminderd.broadcast('globex', 'camp', local_time => (now() + interval '1 day')::timestamp,"
            " everyone => true)"
        )
        await connection.execute(
            "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
            " VALUES ($1, '2030-01-01', 'acme', 0)",
            broadcast_id,
        )
        await connection.execute(
            "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, sent)"
            " VALUES ($1, '2030-01-01', 'acme', 999)",
            broadcast_id,
        )
        hitched = await connection.fetchval(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, broadcast_id)"
            " VALUES ('acme', 'hitch', now() + interval '1 day', $1) RETURNING id",
            broadcast_id,
        )
        squatter = await connection.fetchval(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, picked_at,"
            " lease_expires_at, endpoint) VALUES ('acme', 'squat', now(), 'picked', 1, now(),"
            " now() + interval '100 years', 'globex.example:443') RETURNING id"
        )
        await connection.execute(
            "INSERT INTO reminderd.usage_increments (tenant_id, scheduled, delivered) VALUES ('acme', -50, 3)"
        )

        await asyncio.to_thread(upgrade, empty_database_url)

        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
        waves = await connection.fetch("SELECT tenant_id FROM reminderd.broadcast_occurrences")
        counts = await connection.fetch("SELECT DISTINCT tenant_id FROM reminderd.broadcast_counts")
        hitch = await connection.fetchval(
            "SELECT broadcast_id FROM reminderd.scheduled_messages WHERE id = $1", hitched
        )
        usage = await connection.fetchrow(
            "SELECT min(scheduled) AS scheduled, max(delivered) AS delivered FROM reminderd.usage_increments"
            " WHERE tenant_id = 'acme'"
        )
        reaped = await connection.fetch(QUERIES["reap_expired_leases"], 100)
    finally:
        await connection.close()
    assert version == HEAD_REVISION
    assert [w["tenant_id"] for w in waves] == ["globex"]
    assert [c["tenant_id"] for c in counts] == ["globex"]
    assert hitch is None
    assert dict(usage) == {"scheduled": 0, "delivered": 3}
    assert [r["id"] for r in reaped] == [squatter]


async def test_a_message_never_moves_to_another_tenant(db: asyncpg.Connection, two_tenants: TwoTenants) -> None:
    """Not even for the owner, who passes RLS and whose checks find the other tenant (0039)."""
    own = await db.fetchval("SELECT reminderd.schedule('acme', 'acme-only', now() + interval '1 hour')")
    with pytest.raises(asyncpg.FeatureNotSupportedError) as refused:
        await db.execute("UPDATE reminderd.scheduled_messages SET tenant_id = 'globex' WHERE id = $1", own)
    error = refused.value
    assert (error.message, error.hint) == (
        f'message {own} (acme / acme-only) cannot move from tenant "acme" to tenant "globex": a message belongs'
        ' to its tenant',
        'Create a new message for tenant "globex" (reminderd.schedule) and cancel this one'
        " (reminderd.cancel('acme', 'acme-only')).")
    assert await db.fetchval("SELECT tenant_id FROM reminderd.scheduled_messages WHERE id = $1", own) == "acme"
    assert await db.execute("UPDATE reminderd.scheduled_messages SET tenant_id = 'acme' WHERE id = $1",
                            own) == "UPDATE 1"  # the same tenant: no move
