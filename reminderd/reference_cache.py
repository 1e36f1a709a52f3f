"""The reference tables' rows kept on disk between runs, so `reminderd migrate` on a new database
loads them without building them again (phones.reference_data(): 1.7 s of CPU with the collector
paused, 3.6 s without; read back and checked: 0.1 s).

One file per build, named by a digest of its key and holding the key: phones.versions()
(phonenumbers, tzdata, the tables' own version), reminderd's version, the Python version (the
builder reads the interpreter's own regular-expression parser) and a digest of the code that
builds them (phones.py, prefixes.py), so an upgraded library or an edited builder never reads old
rows. The files live in the user's cache directory, $XDG_CACHE_HOME/reminderd or else
~/.cache/reminderd.

The file is input: JSON (never pickle), used only when everything about it checks out: the
format line, the SHA-256 of the rest, the key, every table and column phones.COLUMNS names, and
every value of the type and range its column takes, and only from a regular file of at most
MAX_BYTES that this user owns and nobody else may write, in a directory of the same kind.
Anything else (a truncated, corrupt, other version's or other program's file, another user's)
is ignored: the rows are built again and the file rewritten. Rows from the cache that the
database still refuses are thrown away with their file, and built again (migrate.py).
Writing is atomic (a temporary file in the same directory, then renamed over the old) and a
directory that cannot be written (a read-only home, systemd's DynamicUser=) means no cache,
never an error.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from . import phones
from .phones import ReferenceData

__all__ = ["cache_directory", "collector_paused", "discard", "key", "load", "read", "reference_data", "write"]

FORMAT = b"reminderd-reference-cache 1"  # bumped when the file's layout changes
FILE_PREFIX = "reference-"
STALE_AFTER_S = 30 * 86_400  # other builds' files not used for this long are removed when writing
MAX_BYTES = 64 * 1024 * 1024  # a file is ~8 MB: anything much larger is not one of ours
_BUILDERS = ("phones.py", "prefixes.py")


def cache_directory() -> Path | None:
    """$XDG_CACHE_HOME/reminderd, else ~/.cache/reminderd; None when there is no home to speak of.
    (A relative XDG_CACHE_HOME is ignored, as the XDG base directory specification says.)"""
    configured = os.environ.get("XDG_CACHE_HOME", "")
    if configured and os.path.isabs(configured):
        return Path(configured) / "reminderd"
    try:
        return Path.home() / ".cache" / "reminderd"
    except RuntimeError:  # no HOME and no passwd entry
        return None


@functools.cache
def key() -> dict[str, str]:
    """What the rows depend on: the libraries' and tables' versions, reminderd's own, and the
    builder's code (an edited checkout keeps its version; an install without sources, its version)."""
    code = hashlib.sha256()
    try:
        for name in _BUILDERS:
            code.update(Path(__file__).with_name(name).read_bytes())
    except OSError:
        code = hashlib.sha256(b"no sources")
    try:
        release = metadata.version("reminderd")
    except metadata.PackageNotFoundError:
        release = "unknown"
    return {**phones.versions(), "reminderd": release, "python": "{}.{}".format(*sys.version_info[:2]),
            "code": code.hexdigest()[:16]}


def _path(directory: Path, of: dict[str, str]) -> Path:
    digest = hashlib.sha256(orjson.dumps(of, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return directory / f"{FILE_PREFIX}{digest[:16]}.json"


@functools.cache
def reference_data() -> ReferenceData:
    """The reference tables' rows: from the user's cache when it has this build's, else built (and
    cached for the next time). Once per process."""
    return load(cache_directory())


def load(directory: Path | None) -> ReferenceData:
    """The rows from `directory`'s cache file if it is sound, else built and written there."""
    with collector_paused():
        if directory is not None and (found := read(directory)) is not None:
            return found
        data = phones.reference_data()
        if directory is not None:
            write(directory, data)
        return data


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while. Building, reading or encoding the tables
    makes millions of objects and none of them garbage: each collection on the way walks the ones
    made so far, half the CPU of a build (3.6 s with it, 1.7 s without), two thirds of a read
    (0.35 s, 0.11 s) and a third of their COPY data's encoding (0.35 s, 0.21 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Writing ------------------------------------------------------------------------------------------


def write(directory: Path, data: ReferenceData, *, of: dict[str, str] | None = None) -> Path | None:
    """Write `data` (built under the key `of`, this build's by default) to `directory`
    atomically; the file, or None when the directory cannot be written."""
    of = key() if of is None else of
    body = orjson.dumps({"key": of, "versions": data.versions,
                         "tables": {table: _columnar(table, rows) for table, rows in data.rows.items()}})
    head = FORMAT + b" " + hashlib.sha256(body).hexdigest().encode("ascii") + b"\n"
    target = _path(directory, of)
    temporary: str | None = None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(os.stat(directory), directory=True):
            return None
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".reference-", suffix=".tmp")
        with os.fdopen(descriptor, "wb") as file:
            file.write(head)
            file.write(body)
        os.replace(temporary, target)
        temporary = None
        _remove_stale(directory, keep=target)
    except OSError:
        return None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return target


def _columnar(table: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A table column by column; each array column's distinct values (NULL among them) listed
    once and referred to by position (phone_prefixes repeats 600 masks over 203,000 rows)."""
    declared = phones.COLUMNS[table]
    values: dict[str, list[Any]] = {}
    shared: dict[str, list[Any]] = {}
    for column, column_values in zip(declared, zip(*rows, strict=True), strict=True):
        if "[]" in declared[column]:
            seen: dict[tuple[Any, ...] | None, int] = {}
            values[column] = [seen.setdefault(None if value is None else tuple(value), len(seen))
                              for value in column_values]
            shared[column] = [None if value is None else list(value) for value in seen]
        else:
            values[column] = list(column_values)
    return {"shared": shared, "values": values}


def _remove_stale(directory: Path, *, keep: Path) -> None:
    """Other builds' files unused for STALE_AFTER_S (reading one marks it used), and the temporary
    files of writers killed midway."""
    cutoff = time.time() - STALE_AFTER_S
    for path in [*directory.glob(f"{FILE_PREFIX}*.json"), *directory.glob(".reference-*.tmp")]:
        with contextlib.suppress(OSError):
            if path != keep and path.stat().st_mtime < cutoff:
                path.unlink()


def discard(directory: Path | None = None) -> bool:
    """Remove this build's file from `directory` (the user's cache by default); whether there was
    one. For rows the database refused (migrate.py): they are built again, not read again."""
    directory = cache_directory() if directory is None else directory
    if directory is None:
        return False
    reference_data.cache_clear()
    try:
        _path(directory, key()).unlink()
    except OSError:
        return False
    return True


def _private(status: os.stat_result, *, directory: bool = False) -> bool:
    """Owned by this user, writable by nobody else, and a directory or a regular file."""
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(status.st_mode) and status.st_uid == os.getuid() and not status.st_mode & 0o022


# Reading ------------------------------------------------------------------------------------------


def read(directory: Path) -> ReferenceData | None:
    """This build's rows from `directory`, or None: no file, or one that does not check out."""
    path = _path(directory, key())
    try:
        if not _private(os.stat(directory), directory=True):
            return None
        # Not a FIFO to hang on or a device to read forever: no link followed, nothing waited for.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not _private(status) or status.st_size > MAX_BYTES:
            return None
        try:
            content = file.read(MAX_BYTES + 1)
        except OSError:
            return None
    head, newline, body = content.partition(b"\n")
    name, _, digest = head.rpartition(b" ")
    if not newline or name != FORMAT or hashlib.sha256(body).hexdigest().encode("ascii") != digest:
        return None
    try:
        document = orjson.loads(body)
        data = _checked(document)
    except (orjson.JSONDecodeError, _Unsound, TypeError, KeyError, IndexError, ValueError):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # used: not stale
    return data


class _Unsound(Exception):
    """The file's content is not what this build writes."""


def _checked(document: Any) -> ReferenceData:
    if not isinstance(document, dict) or document.get("key") != key():
        raise _Unsound
    versions = document.get("versions")
    if versions != phones.versions():
        raise _Unsound
    tables = document.get("tables")
    if not isinstance(tables, dict) or list(tables) != list(phones.COLUMNS):
        raise _Unsound
    return ReferenceData(versions, {table: _rows(table, tables[table]) for table in phones.COLUMNS})


def _rows(table: str, stored: Any) -> list[tuple[Any, ...]]:
    """The rows of a table as _columnar() wrote it, every value checked against phones.COLUMNS."""
    declared = phones.COLUMNS[table]
    if not isinstance(stored, dict) or not isinstance(shared := stored.get("shared"), dict):
        raise _Unsound
    values = stored.get("values")
    if not isinstance(values, dict) or list(values) != list(declared):
        raise _Unsound
    columns: list[list[Any]] = []
    for column, kind in declared.items():
        found = values[column]
        if not isinstance(found, list) or not found or (columns and len(found) != len(columns[0])):
            raise _Unsound
        nullable, base = kind.endswith("?"), kind.rstrip("?")
        if base.endswith("[]"):
            distinct = shared.get(column)
            elements = _COLUMN_CHECKS[base[:-2]]
            if not isinstance(distinct, list) or not all(
                (value is None and nullable) or (type(value) is list and elements(value)) for value in distinct
            ):
                raise _Unsound
            if not _integers(0, len(distinct) - 1)(found):
                raise _Unsound
            columns.append(list(map(distinct.__getitem__, found)))
        else:
            if not _COLUMN_CHECKS[base]([value for value in found if value is not None] if nullable else found):
                raise _Unsound
            columns.append(found)
    return list(zip(*columns, strict=True))


def _integers(low: int, high: int) -> Callable[[list[Any]], bool]:
    def check(values: list[Any]) -> bool:
        return set(map(type, values)) <= {int} and (not values or (low <= min(values) and max(values) <= high))

    return check


def _texts(values: list[Any]) -> bool:
    return set(map(type, values)) <= {str} and "\x00" not in "".join(values)  # text holds no NUL


def _booleans(values: list[Any]) -> bool:
    return set(map(type, values)) <= {bool}


# Whether every value of a column (its NULLs left out) fits the column's type.
_COLUMN_CHECKS: dict[str, Callable[[list[Any]], bool]] = {
    "integer": _integers(-(2**31), 2**31 - 1),
    "smallint": _integers(-(2**15), 2**15 - 1),
    "boolean": _booleans,
    "text": _texts,
}
