"""The reference tables in a real PostgreSQL as `reminderd migrate` loads them (Store.load_reference_data,
reminderd/reference_cache.py): loaded from the cache they hold what a fresh build gives, row for
row; the load leaves phone_prefixes' indexes as schema.sql declares them and its rows frozen; the
binary COPY writes every type it knows as PostgreSQL reads it; and a migrate whose cache
directory cannot be written still loads them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reminderd import copybinary, phones, reference_cache
from reminderd.migrate import upgrade
from reminderd.queries import QUERIES
from reminderd.schedule import calendars_version
from reminderd.store import Store


async def sums(database_url: str) -> dict[str, tuple[int, str]]:
    """Each reference table's row count and a checksum of its rows in order."""
    connection = await asyncpg.connect(database_url)
    try:
        found = {}
        for table in phones.COLUMNS:
            row = await connection.fetchrow(
                f"SELECT count(*) AS n, md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS sum"
                f" FROM reminderd.{table} t")
            found[table] = (row["n"], row["sum"])
        return found
    finally:
        await connection.close()


async def test_the_tables_loaded_from_the_cache_are_those_of_a_fresh_build(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    built = phones.reference_data()
    reference_cache.load(tmp_path)  # writes the file
    from_disk = reference_cache.read(tmp_path)
    assert from_disk is not None and from_disk is not built

    await store.load_reference_data(built)
    fresh = await sums(database_url)
    await store.load_reference_data(from_disk)  # a reload, into tables full of rows
    assert await sums(database_url) == fresh
    assert {table: count for table, (count, _) in fresh.items()} == {
        table: len(rows) for table, rows in built.rows.items()}
    assert fresh["phone_prefixes"][0] > 100_000
    assert await store.reference_versions() == {**phones.versions(), "holidays": calendars_version()}


async def test_the_load_leaves_the_indexes_of_schema_sql_and_frozen_rows(
    store: Store, db: asyncpg.Connection
) -> None:
    indexes = ("SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition, x.indisprimary"
               " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
               " WHERE x.indrelid = 'reminderd.phone_prefixes'::regclass ORDER BY 1")
    before = await db.fetch(indexes)
    assert [row["name"] for row in before] == ["phone_prefixes_any_region", "phone_prefixes_pkey"]
    await store.load_reference_data(phones.reference_data())
    assert await db.fetch(indexes) == before
    # COPY FREEZE: every page all-visible and all-frozen at once, nothing left for a vacuum to do.
    await db.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
    for table in phones.COLUMNS:
        pages, visible, frozen = await db.fetchrow(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, s.all_visible, s.all_frozen"
            " FROM pg_class c, pg_visibility_map_summary(c.oid) s WHERE c.oid = $1::regclass",
            f"reminderd.{table}")
        assert pages > 0 and visible == frozen == pages, table


async def test_the_declared_columns_are_the_databases(db: asyncpg.Connection) -> None:
    catalog: dict[str, dict[str, str]] = {}
    for row in await db.fetch(QUERIES["reference_column_types"], list(phones.COLUMNS)):
        catalog.setdefault(row["table_name"], {})[row["column_name"]] = row["type_name"]
    assert {table: dict(sorted(columns.items())) for table, columns in catalog.items()} == {
        table: dict(sorted(columns.items())) for table, columns in phones.COLUMNS.items()}
    assert catalog["phone_prefixes"]["masks"] == "smallint[]?"


VALUES: list[tuple[Any, ...]] = [
    (0, True, "", [], [], []),
    (-(2**31), False, "\u00c5land Islands, C\u00f4te d'Ivoire, \u2019", [2**31 - 1, -1], [-(2**15), 2**15 - 1],
     ["Europe/London", ""]),
    (None, None, None, None, None, None),
    (7, True, "x" * 10_000, [None, 3], [None], [None, "Asia/Kolkata"]),
]


async def test_the_binary_copy_writes_each_type_as_postgresql_reads_it(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TEMPORARY TABLE every_type (i integer, b boolean, t text, ia integer[],"
                     " sa smallint[], ta text[], n serial)")
    types = ["integer?", "boolean?", "text?", "integer[]?", "smallint[]?", "text[]?"]
    chunks = list(copybinary.stream(VALUES, types, chunk_rows=3))  # two chunks of rows

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    await db.copy_to_table("every_type", columns=["i", "b", "t", "ia", "sa", "ta"], source=source(),
                           format="binary")
    rows = await db.fetch("SELECT i, b, t, ia, sa, ta FROM every_type ORDER BY n")
    assert [tuple(row) for row in rows] == VALUES
    not_null = [row for row in VALUES if None not in row]
    await db.execute("TRUNCATE every_type")
    data = b"".join(copybinary.stream(not_null, [name.rstrip("?") for name in types]))  # the NOT NULL paths
    await db.copy_to_table("every_type", columns=["i", "b", "t", "ia", "sa", "ta"], format="binary",
                           source=io.BytesIO(data))
    rows = await db.fetch("SELECT i, b, t, ia, sa, ta FROM every_type ORDER BY n")
    assert [tuple(row) for row in rows] == not_null


def test_the_binary_copy_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="no binary COPY encoder for the column type 'bigint'"):
        list(copybinary.stream(VALUES, ["bigint"]))
    with pytest.raises(ValueError, match="not all booleans"):
        list(copybinary.stream([(1,)], ["boolean"]))
    with pytest.raises(ValueError, match="not a boolean"):
        list(copybinary.stream([(1,)], ["boolean?"]))
    with pytest.raises(ValueError):
        list(copybinary.stream([(1, 2)], ["integer"]))
    with pytest.raises(ValueError):
        list(copybinary.stream([(1,)], ["integer", "integer"]))
    # A value its column cannot hold: ValueError naming the rows, whatever the encoder tripped on.
    for rows, types in (([(1,), (None,)], ["integer"]), ([("1",)], ["integer"]), ([(2**31,)], ["integer"]),
                        ([(1,)], ["text"]), ([(None,)], ["text"]), ([([1, "x"],)], ["smallint[]?"])):
        with pytest.raises(ValueError, match=rf"^rows 1 to {len(rows)}: "):
            list(copybinary.stream(rows, types))


@pytest.fixture
def unwritable_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))  # even root cannot make a directory in it
    reference_cache.reference_data.cache_clear()
    yield
    reference_cache.reference_data.cache_clear()


@pytest.mark.usefixtures("unwritable_cache")
async def test_migrate_loads_the_tables_when_the_cache_cannot_be_written(
    empty_database_url: str, database_url: str
) -> None:
    directory = reference_cache.cache_directory()
    assert directory is not None
    await asyncio.to_thread(upgrade, empty_database_url)
    assert not directory.exists()
    assert await sums(empty_database_url) == await sums(database_url)  # the template's, loaded as usual


@pytest.fixture
def cache_of_refused_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """This build's cache file, sound in every value, holding a row twice: the load refuses it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    directory = tmp_path / "reminderd"
    built = phones.reference_data()
    twice = {**built.rows, "countries": [*built.rows["countries"], built.rows["countries"][0]]}
    path = reference_cache.write(directory, phones.ReferenceData(built.versions, twice))
    assert path is not None and reference_cache.read(directory) is not None
    reference_cache.reference_data.cache_clear()
    yield directory
    reference_cache.reference_data.cache_clear()


async def test_rows_from_the_cache_the_database_refuses_are_built_again(
    cache_of_refused_rows: Path, empty_database_url: str, database_url: str
) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)  # not a failure, then one on every migrate
    assert await sums(empty_database_url) == await sums(database_url)
    # The refused file is gone: in its place, a fresh build's rows.
    assert reference_cache.read(cache_of_refused_rows) == phones.reference_data()
