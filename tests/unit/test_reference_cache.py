"""The reference tables' cache on disk (reminderd/reference_cache.py): read back it gives the rows a
build gives; a file that does not check out (truncated, corrupt, of other versions, of another
program, wrong in a value) is never used but rebuilt; a directory that cannot be written is no
error. The tables loaded from it in PostgreSQL: tests/integration/test_reference_load.py."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from reminderd import phones, reference_cache
from reminderd.phones import ReferenceData


@pytest.fixture(scope="module")
def built() -> ReferenceData:
    with reference_cache.collector_paused():
        return phones.reference_data()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, built: ReferenceData) -> Path:
    directory = tmp_path_factory.mktemp("cache")
    assert reference_cache.load(directory) == built
    return the_file(directory)


@pytest.fixture
def cached(tmp_path: Path, written: Path) -> Path:
    """A directory holding this build's cache file, as `reminderd migrate` leaves it."""
    (tmp_path / written.name).write_bytes(written.read_bytes())
    os.chmod(tmp_path / written.name, written.stat().st_mode)
    return tmp_path


def the_file(directory: Path) -> Path:
    (found,) = directory.glob("reference-*.json")
    return found


def rewritten(path: Path, change: Any) -> None:
    """The cache file with its document changed by `change` and its checksum made right again,
    as a program that knows the format would write it."""
    document = orjson.loads(path.read_bytes().partition(b"\n")[2])
    change(document)
    body = orjson.dumps(document)
    path.write_bytes(reference_cache.FORMAT + b" " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def test_a_build_is_written_and_read_back_as_the_same_rows(cached: Path, built: ReferenceData) -> None:
    path = the_file(cached)
    assert path.parent == cached and path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(reference_cache.FORMAT + b" ")
    found = reference_cache.read(cached)
    assert found is not None and found is not built
    assert found == built
    assert {table: len(rows) for table, rows in found.rows.items()} == {
        table: len(rows) for table, rows in built.rows.items()}
    assert found.versions == phones.versions()
    assert not [name for name in os.listdir(cached) if name.endswith(".tmp")]  # renamed into place


def test_the_rows_a_build_makes_are_what_phones_declares(built: ReferenceData) -> None:
    types = {"integer": int, "smallint": int, "boolean": bool, "text": str}
    for table, declared in phones.COLUMNS.items():
        for row in built.rows[table]:
            assert len(row) == len(declared)
            for value, kind in zip(row, declared.values(), strict=True):
                if value is None:
                    assert kind.endswith("?"), (table, row)
                elif kind.rstrip("?").endswith("[]"):
                    assert isinstance(value, list)
                    assert all(type(item) is types[kind.rstrip("?")[:-2]] for item in value), (table, row)
                else:
                    assert type(value) is types[kind.rstrip("?")], (table, row)


@pytest.mark.parametrize("damage", ["truncated", "a byte changed", "empty", "not ours", "no newline"])
def test_a_damaged_file_is_ignored_and_rebuilt(cached: Path, built: ReferenceData, damage: str) -> None:
    path = the_file(cached)
    content = path.read_bytes()
    middle = len(content) // 2
    path.write_bytes({
        "truncated": content[:middle],
        "a byte changed": content[:middle] + bytes([content[middle] ^ 0x01]) + content[middle + 1:],
        "empty": b"",
        "not ours": b'{"phone_prefixes": []}\n',
        "no newline": content.replace(b"\n", b" ", 1),
    }[damage])
    assert reference_cache.read(cached) is None
    assert reference_cache.load(cached) == built
    assert reference_cache.read(cached) == built  # the rebuilt file replaced the damaged one


def test_a_file_of_other_versions_is_not_used(cached: Path, built: ReferenceData) -> None:
    def older(document: dict[str, Any]) -> None:
        document["key"]["phonenumbers"] = document["versions"]["phonenumbers"] = "8.0.0"

    rewritten(the_file(cached), older)
    assert reference_cache.read(cached) is None
    assert reference_cache.load(cached) == built
    assert reference_cache.read(cached) == built


def test_another_build_of_the_tables_is_another_file(tmp_path: Path, built: ReferenceData) -> None:
    other = {**reference_cache.key(), "code": "0" * 16}
    written = reference_cache.write(tmp_path, built, of=other)
    assert written is not None and written.exists()
    assert reference_cache.read(tmp_path) is None  # not this build's file
    assert reference_cache.load(tmp_path) == built
    assert len(list(tmp_path.glob("reference-*.json"))) == 2  # the other build's is still in use


def test_other_builds_files_unused_for_a_month_are_removed(tmp_path: Path, built: ReferenceData) -> None:
    old = reference_cache.write(tmp_path, built, of={**reference_cache.key(), "tables": "0"})
    assert old is not None
    month_ago = time.time() - reference_cache.STALE_AFTER_S - 60
    os.utime(old, (month_ago, month_ago))
    assert reference_cache.load(tmp_path) == built
    assert not old.exists()
    assert the_file(tmp_path) != old


@pytest.mark.parametrize("wrong", [
    "a text where an integer goes", "an integer too large", "a mask too large", "a mask position past the list",
    "a NULL where none may be", "a column missing", "a table missing", "rows of two lengths", "a NUL in a text",
])
def test_a_file_wrong_in_a_value_is_not_used(cached: Path, built: ReferenceData, wrong: str) -> None:
    def change(document: dict[str, Any]) -> None:
        prefixes = document["tables"]["phone_prefixes"]
        values = prefixes["values"]
        match wrong:
            case "a text where an integer goes":
                values["country_code"][5] = "44"
            case "an integer too large":
                values["position"][5] = 2**31
            case "a mask too large":
                next(masks for masks in prefixes["shared"]["masks"] if masks)[0] = 2**15
            case "a mask position past the list":
                values["masks"][5] = len(prefixes["shared"]["masks"])
            case "a NULL where none may be":
                values["prefix"][5] = None
            case "a column missing":
                del values["timezone"]
            case "a table missing":
                del document["tables"]["countries"]
            case "rows of two lengths":
                values["prefix"].pop()
            case "a NUL in a text":
                document["tables"]["countries"]["values"]["name"][0] += "\x00"

    rewritten(the_file(cached), change)
    assert reference_cache.read(cached) is None
    assert reference_cache.load(cached) == built


def test_the_rewritten_file_itself_is_read_when_nothing_is_wrong(cached: Path, built: ReferenceData) -> None:
    rewritten(the_file(cached), lambda document: None)  # the test's own writer, for the tests above
    assert reference_cache.read(cached) == built


def test_a_directory_that_cannot_be_written_means_no_cache(tmp_path: Path, built: ReferenceData) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    unwritable = tmp_path / "a-file" / "reminderd"  # even root cannot make this (tests run as root)
    assert reference_cache.write(unwritable, built) is None
    assert reference_cache.read(unwritable) is None
    assert reference_cache.load(unwritable) == built
    assert reference_cache.load(None) == built


def test_the_cache_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert reference_cache.cache_directory() == tmp_path / "reminderd"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert reference_cache.cache_directory() == tmp_path / "home" / ".cache" / "reminderd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert reference_cache.cache_directory() == tmp_path / "home" / ".cache" / "reminderd"


def test_the_key_names_the_versions_and_the_builders_code() -> None:
    key = reference_cache.key()
    assert {name: key[name] for name in phones.versions()} == phones.versions()
    assert set(key) == {*phones.versions(), "reminderd", "python", "code"}
    assert key["python"] == "{}.{}".format(*sys.version_info[:2])  # prefixes.py reads its re parser
    assert len(key["code"]) == 16


def test_a_file_others_may_write_is_not_used(cached: Path, built: ReferenceData) -> None:
    os.chmod(the_file(cached), 0o666)
    assert reference_cache.read(cached) is None
    os.chmod(the_file(cached), 0o600)
    assert reference_cache.read(cached) == built


def test_a_directory_others_may_write_is_neither_read_nor_written(cached: Path, built: ReferenceData) -> None:
    os.chmod(cached, 0o777)  # e.g. XDG_CACHE_HOME=/tmp with a reminderd/ someone else could swap files in
    assert reference_cache.read(cached) is None
    assert reference_cache.write(cached, built) is None
    assert reference_cache.load(cached) == built  # built, as without a cache


def test_no_link_is_followed_and_no_fifo_waited_on(cached: Path, built: ReferenceData, tmp_path: Path) -> None:
    path = the_file(cached)
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)  # a link, even to a sound file
    assert reference_cache.read(cached) is None
    path.unlink()
    os.mkfifo(path)  # reading a FIFO with no writer would block forever
    assert reference_cache.read(cached) is None


def test_a_file_far_larger_than_ours_is_not_read(cached: Path) -> None:
    with open(the_file(cached), "ab") as file:
        file.truncate(reference_cache.MAX_BYTES + 1)
    assert reference_cache.read(cached) is None


def test_discard_removes_this_builds_file(cached: Path, built: ReferenceData) -> None:
    assert reference_cache.discard(cached) is True
    assert reference_cache.read(cached) is None
    assert reference_cache.discard(cached) is False  # nothing left to remove
