"""A tenant's row in plain SQL (migration 0025): INSERT … ON CONFLICT works (the primary key, not a
trigger, says a tenant already exists, and reminderd says that in a sentence), and a signing secret
the daemon could not sign with is refused when written (22023, naming the tenant and the column,
never the value), by reminderd/signing.py's SECRET_FORMAT. Secrets written before stay
readable, are named by the migration, and their messages are dead-lettered saying why."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random

import asyncpg
import pytest
from support import CALLBACK, drain, fast_settings

from reminderd.exceptions import DatabaseRefused
from reminderd.migrate import upgrade
from reminderd.refusals import one_line
from reminderd.signing import generate_secret, is_signing_secret, secret_key
from reminderd.store import translated
from reminderd.testing import Receiver, add_tenant

pytestmark = pytest.mark.shared_database

DUPLICATE = ('tenant "acme" already exists; change it with UPDATE reminderd.tenants (or reminderd tenant set), '
             "or choose another id")
BAD = "whsec_not-base64!"


def sentence(error: asyncpg.PostgresError) -> str:
    """What the CLI and the API say of it."""
    refused = translated(error)
    assert isinstance(refused, DatabaseRefused)
    return one_line(refused)


def signable(secret: str) -> bool:
    try:
        secret_key(secret)
    except ValueError:
        return False
    return True


def secrets_to_compare() -> list[str]:
    """Valid and invalid secrets: every short string over an alphabet of base64's edges, padding,
    an outsider and a space, with and without the prefix; real secrets and damaged ones."""
    short = ["".join(chars) for size in range(7) for chars in itertools.product("A/+=-", repeat=size)]
    rng = random.Random(26)
    real = [generate_secret() for _ in range(50)] + [
        "whsec_" + base64.b64encode(rng.randbytes(size)).decode() for size in range(1, 40)]
    damaged = [s[:-1] for s in real] + [s + "=" for s in real] + [s.replace("whsec_", "") for s in real]
    damaged += [s + "\n" for s in real] + [" " + s for s in real] + [s.replace("+", "-") for s in real]
    return ["whsec_" + s for s in short] + short[:400] + real + damaged + [
        "", "whsec_", "whsec_====", "whsec_AA==\n", "WHSEC_AAAA", "whsec_AAAA AAAA", "whsec_AAAÀ", BAD]


async def test_the_database_and_signing_py_refuse_the_same_secrets_and_the_daemon_signs_with_every_one_allowed(
    db: asyncpg.Connection,
) -> None:
    secrets = secrets_to_compare()
    in_sql = await db.fetch("SELECT s, reminderd.is_signing_secret(s) AS ok FROM unnest($1::text[]) AS s",
                            secrets)
    disagree = [(row["s"], row["ok"]) for row in in_sql if row["ok"] != is_signing_secret(row["s"])]
    assert disagree == []
    # What may be written, the daemon signs with; it still signs with some a write now refuses
    # (no prefix, loose padding: secrets written before 0025 keep working).
    assert all(signable(row["s"]) for row in in_sql if row["ok"])
    assert signable("AAAA") and not is_signing_secret("AAAA")
    assert sum(row["ok"] for row in in_sql) > 100 and sum(not row["ok"] for row in in_sql) > 1000
    assert await db.fetchval("SELECT reminderd.is_signing_secret(NULL)") is None


@pytest.mark.parametrize("column", ["signing_secret", "previous_signing_secret", "earlier_signing_secret"])
async def test_a_bad_secret_is_refused_in_one_line_without_its_value(
    db: asyncpg.Connection, column: str
) -> None:
    statements = [
        f"INSERT INTO reminderd.tenants (id, callback_url, {column}) VALUES ('acme', '{CALLBACK}', $1)",
        f"UPDATE reminderd.tenants SET {column} = $1 WHERE id = 'globex'",
    ]
    await add_tenant(db, "globex", CALLBACK)
    for statement in statements:
        for secret in (BAD, "whsec_", "not-prefixed-AAAA", "whsec_AAAA="):
            with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
                await db.execute(statement, secret)
            error = refused.value
            tenant = "acme" if statement.startswith("INSERT") else "globex"
            assert error.message == f'the {column} of tenant "{tenant}" is not whsec_ followed by base64'
            assert error.sqlstate == "22023" and error.hint.startswith(("Leave it out", "It is the secret"))
            said = " ".join(filter(None, (error.message, error.detail, error.hint)))
            assert secret == "whsec_" or secret not in said  # the value is never echoed
            assert "\n" not in error.message
            assert sentence(error).startswith(error.message + "; ")  # the CLI's and the API's line, its hint
    good = generate_secret()
    await db.execute(f"UPDATE reminderd.tenants SET {column} = $1 WHERE id = 'globex'", good)
    assert await db.fetchval(f"SELECT {column} FROM reminderd.tenants WHERE id = 'globex'") == good


async def test_insert_on_conflict_works_and_a_plain_duplicate_is_one_sentence(db: asyncpg.Connection) -> None:
    secret = await add_tenant(db, "acme", CALLBACK)
    status = await db.execute("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://b.example/h')"
                              " ON CONFLICT DO NOTHING")
    assert status == "INSERT 0 0"
    status = await db.execute("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://b.example/h')"
                              " ON CONFLICT (id) DO UPDATE SET callback_url = EXCLUDED.callback_url")
    assert status == "INSERT 0 1"
    row = await db.fetchrow("SELECT callback_url, signing_secret FROM reminderd.tenants WHERE id = 'acme'")
    assert tuple(row) == ("https://b.example/h", secret)  # the same tenant, its secret kept
    with pytest.raises(asyncpg.InvalidParameterValueError, match="signing_secret of tenant \"acme\""):
        await db.execute("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://c.example/h')"
                         " ON CONFLICT (id) DO UPDATE SET signing_secret = $1",
                         BAD)
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await db.execute("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://c.example/h')")
    assert refused.value.constraint_name == "tenants_pkey"
    assert sentence(refused.value) == DUPLICATE


async def test_0025_keeps_bad_secrets_written_before_names_them_and_their_messages_fail_clearly(
    empty_database_url: str, receiver: Receiver, capfd: pytest.CaptureFixture[str]
) -> None:
    await asyncio.to_thread(upgrade, empty_database_url, "0021")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", receiver.url, signing_secret=BAD)  # 0021 took it
        await add_tenant(db, "globex", receiver.url)
        await db.execute("UPDATE reminderd.tenants SET previous_signing_secret = 'whsec_', "
                         "previous_secret_expires_at = now() + interval '1 day' WHERE id = 'globex'")
        await add_tenant(db, "initech", receiver.url)
        capfd.readouterr()

        await asyncio.to_thread(upgrade, empty_database_url)

        said = capfd.readouterr().err
        assert ("reminderd migrate: warning: tenants whose signing secret is not whsec_ followed by base64: "
                "acme (signing_secret), globex (previous_signing_secret)\n") in said
        assert "  hint: Rotate it: reminderd tenant rotate-secret TENANT" in said
        assert "not-base64" not in said and "initech" not in said
        assert await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'") == BAD
        await db.execute("UPDATE reminderd.tenants SET calendar = 'GB' WHERE id = 'acme'")  # still changeable
        await db.execute("SELECT reminderd.schedule('acme', 'unsignable', now())")
        await drain(fast_settings(empty_database_url))
        dead = await db.fetchrow("SELECT status, last_error FROM reminderd.scheduled_messages"
                                 " WHERE ref_id = 'unsignable'")
        assert dead["status"] == "dead"
        assert dead["last_error"].endswith(
            "cannot sign for tenant acme: signing secret is not whsec_ followed by base64: rotate it "
            "(reminderd tenant rotate-secret)")
        fresh = await db.fetchval("SELECT reminderd.rotate_secret('acme')")  # the way out
        row = await db.fetchrow("SELECT signing_secret, previous_signing_secret FROM reminderd.tenants"
                                " WHERE id = 'acme'")
        assert tuple(row) == (fresh, None)  # the damaged one is not kept to sign beside it
        await db.execute("SELECT reminderd.schedule('acme', 'signable', now())")
        await drain(fast_settings(empty_database_url))
        assert [item.message["ref_id"] for item in receiver.received] == ["signable"]
    finally:
        await db.close()


async def test_0035_upgrades_a_database_mid_rotation_and_keeps_what_it_now_refuses(
    empty_database_url: str,
) -> None:
    """Written under 0034: a tenant in a rotation's grace, a message with a calendar the holidays
    package does not know. After 0035 rotating again keeps the original secret signing, and the
    message stays as it was, changeable otherwise; a new such calendar is refused."""
    await asyncio.to_thread(upgrade, empty_database_url, "0034")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", CALLBACK)
        original = await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'")
        lost = await db.fetchval("SELECT reminderd.rotate_secret('acme', interval '1 hour')")
        await db.execute("SELECT reminderd.schedule('acme', 'zz', now() + interval '1 day', calendar => 'ZZ')")

        await asyncio.to_thread(upgrade, empty_database_url)

        newest = await db.fetchval("SELECT reminderd.rotate_secret('acme', interval '1 hour')")
        row = await db.fetchrow("SELECT signing_secret, previous_signing_secret, earlier_signing_secret"
                                " FROM reminderd.tenants WHERE id = 'acme'")
        assert tuple(row) == (newest, lost, original)
        await db.execute("UPDATE reminderd.scheduled_messages SET payload = '{\"n\": 1}' WHERE ref_id = 'zz'")
        kept = "SELECT calendar FROM reminderd.scheduled_messages WHERE ref_id = 'zz'"
        assert await db.fetchval(kept) == "ZZ"
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await db.execute("SELECT reminderd.schedule('acme', 'zz2', now() + interval '1 day',"
                             " calendar => 'ZZ')")
        assert refused.value.constraint_name == "calendar_known"
    finally:
        await db.close()
