"""The HTTP API's pure pieces: keys, the key cache, rate limits, JSON kept as written, problems,
ISO 8601 durations, the query files' one namespace."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime

import pytest

from reminderd import apikeys, wire
from reminderd.api import Cursor, _after_prefix, _refused
from reminderd.duration import parse_seconds
from reminderd.exceptions import DatabaseRefused, InvalidInput
from reminderd.problems import KINDS, Problem, invalid, pointer
from reminderd.queries import load_files
from reminderd.ratelimit import RateLimiter, retry_after_header
from reminderd.rows import ApiKey


def test_a_key_has_a_visible_prefix_and_256_bits_of_secret_and_is_stored_as_its_hash() -> None:
    made = apikeys.generate()
    prefix, _, secret = made.key.rpartition("_")
    assert prefix == made.prefix and len(prefix) == 15 and prefix.startswith("rk_")
    assert len(secret) == 43  # letters and digits: more than 256 bits
    assert apikeys.prefix_of(made.key) == made.prefix
    assert made.key_hash == apikeys.digest(made.key) and len(made.key_hash) == 32
    assert len({apikeys.generate().key for _ in range(100)}) == 100
    assert apikeys.prefix_of("rk_short_x") is None and apikeys.prefix_of(made.key + "x") is None


def test_every_key_splits_into_its_three_parts_at_its_two_underscores() -> None:
    """The secret holds no "_" (nor "-"): a key splits the same way whichever end one starts from,
    and prefix_of finds the prefix of each. 2,000 keys: with base64url secrets about half had one."""
    for _ in range(2000):
        made = apikeys.generate()
        rk, prefix, secret = made.key.split("_")
        assert (rk, f"rk_{prefix}") == ("rk", made.prefix) and len(prefix) == apikeys.PREFIX_LENGTH
        assert made.key.rpartition("_") == (made.prefix, "_", secret)
        assert len(secret) == 43 and secret.isascii() and secret.isalnum()
        assert apikeys.prefix_of(made.key) == made.prefix
    assert 43 * math.log2(len(apikeys.SECRET_ALPHABET)) >= 256
    assert apikeys.prefix_of("rk_abcdefghijkm_" + "A" * 42 + "_") is None


def _stored(made: apikeys.NewKey, *, revoked: bool = False) -> ApiKey:
    return ApiKey(
        1,
        made.prefix,
        made.key_hash,
        "acme",
        "n",
        ("read", "write"),
        datetime.now(UTC) if revoked else None,
        None,
    )


async def test_the_cache_verifies_each_request_and_reads_the_database_once_per_ttl() -> None:
    made = apikeys.generate()
    reads: list[str] = []
    now = [0.0]

    async def load(prefix: str) -> ApiKey | None:
        reads.append(prefix)
        return _stored(made)

    cache = apikeys.KeyCache(load, ttl_s=10, clock=lambda: now[0])
    assert (await cache.caller(made.key)) is not None
    assert await cache.caller(made.key[:-1] + ("A" if made.key[-1] != "A" else "B")) is None  # wrong secret
    assert (await cache.caller(made.key)) is not None
    assert reads == [made.prefix]
    now[0] = 10.5
    await cache.caller(made.key)
    assert reads == [made.prefix] * 2
    assert cache.take_usage() == [1] and cache.take_usage() == []


async def test_concurrent_misses_for_one_prefix_read_it_once_and_revoked_keys_fail() -> None:
    made = apikeys.generate()
    reads = 0

    async def load(prefix: str) -> ApiKey | None:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return _stored(made, revoked=True)

    cache = apikeys.KeyCache(load, ttl_s=10)
    assert await asyncio.gather(*(cache.caller(made.key) for _ in range(10))) == [None] * 10
    assert reads == 1


def test_a_token_bucket_allows_its_rate_and_says_how_long_to_wait() -> None:
    limiter = RateLimiter()
    assert [limiter.check(1, 2, 0.0) for _ in range(2)] == [None, None]
    wait = limiter.check(1, 2, 0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.check(2, 2, 0.0) is None  # another key has its own bucket
    assert limiter.check(1, 2, 0.5) is None
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


def test_json_keeps_numbers_as_written_and_embeds_raw_text() -> None:
    value = wire.parse(b'{"a": 12345678901234567.5, "b": [1e400, -0.0], "c": "\\u00e9"}')
    assert wire.text_of(value) == '{"a": 12345678901234567.5, "b": [1e400, -0.0], "c": "\u00e9"}'
    assert wire.text_of({"x": [1, True, None]}) == '{"x": [1, true, null]}'
    assert wire.dumps({"p": wire.Raw('{"k": 1.50}'), "t": datetime(2026, 12, 24, 3, 30, tzinfo=UTC)}) == (
        b'{"p":{"k": 1.50},"t":"2026-12-24T03:30:00Z"}'
    )
    for bad in (b"{", b"NaN", b'{"a": Infinity}', b"\xff"):
        with pytest.raises(wire.NotJSON):
            wire.parse(bad)
    assert wire.depth({"a": [[{"b": 1}]]}, 10) == 4
    assert wire.depth(json.loads("[" * 50 + "]" * 50), 10) == 11  # counts no further than needed


def test_a_problem_is_rfc_9457_with_a_stable_type_per_kind() -> None:
    problem = invalid("fire_at has no UTC offset", pointer("messages", 3, "fire_at"))
    document = problem.as_json("urn:reminderd:request:1")
    assert document == {
        "type": "urn:reminderd:problem:invalid-request",
        "title": "The request is invalid",
        "status": 422,
        "detail": "fire_at has no UTC offset",
        "instance": "urn:reminderd:request:1",
        "errors": [{"detail": "fire_at has no UTC offset", "pointer": "/messages/3/fire_at"}],
    }
    assert pointer("a/b", "c~d") == "/a~1b/c~0d"
    assert invalid("x", "limit", where="parameter").status == 400
    with pytest.raises(ValueError):
        Problem("no-such-kind", "x")
    assert len({status for status, _ in KINDS.values()}) >= 10


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT2H", 7200),
        ("P1DT2H30M", 95400),
        ("PT1.5S", 1.5),
        ("P2W", 1209600),
        ("pt90m", 5400),
        ("PT0,5S", 0.5),
    ],
)
def test_iso_8601_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "P1Y", "P1M", "PT1H2D"])
def test_iso_8601_durations_without_a_fixed_length_or_malformed_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_seconds(text)


def test_a_cursor_reads_back_and_a_foreign_one_is_a_400() -> None:
    cursor = Cursor("soonest", 42, datetime(2026, 12, 24, 3, 30, 0, 123456, tzinfo=UTC))
    assert Cursor.read(cursor.text(), "soonest") == cursor
    forged = [Cursor("newest", id_, datetime.min.replace(tzinfo=UTC)).text() for id_ in (2**63, -1)]
    for text, order in [("nonsense", "newest"), (cursor.text(), "newest"), *((f, "newest") for f in forged)]:
        with pytest.raises(Problem) as raised:
            Cursor.read(text, order)
        assert raised.value.status == 400 and raised.value.kind == "invalid-parameter"
    last = Cursor("newest", 2**63 - 1, datetime.min.replace(tzinfo=UTC))
    assert Cursor.read(last.text(), "newest") == last


def test_strings_postgresql_cannot_store_are_found_with_their_path() -> None:
    body = (b'{"ref_id": "a\\u0000b", "payload": {"k\\ud800": {"deep": "\\udc00"}, "list": [1, "x\\udfff"]},'
            b' "pair": "\\ud83d\\ude00", "kept": "\\\\u0000"}')
    found = list(wire.unstorable(wire.parse(body), body))
    assert [(u.path, u.character, u.in_name) for u in found] == [
        (("ref_id",), "\x00", False),
        (("payload",), "\ud800", True),  # a member's name: what it holds is not looked into
        (("payload", "list", 1), "\udfff", False),
    ]
    assert [u.detail() for u in found] == [
        "ref_id has \\u0000, the NUL character: PostgreSQL cannot store it",
        "a member name in payload has half a UTF-16 surrogate pair, \\ud800: PostgreSQL cannot store it",
        "/payload/list/1 has half a UTF-16 surrogate pair, \\udfff: PostgreSQL cannot store it",
    ]
    # A pair of escapes is one character beyond U+FFFF, an escaped backslash no escape: both stored.
    assert list(wire.unstorable(wire.parse(b'["\\ud83d\\ude00", "\\\\u0000"]'))) == []
    # Without an escape that could write one in the text, nothing is walked at all.
    assert list(wire.unstorable({"a": "\x00"}, b'{"a": "written otherwise"}')) == []


@pytest.mark.parametrize(
    "text",
    [rb'"\ud800"', rb'"\ude00"', rb'"\u0000"', rb'"x\udc00\ud800"', rb'"\ud83d\ud83d\ude00"',
     rb'"\ud800\u0041"', rb'"\\\u0000"', rb'"\\\\\ud800"', rb'"\\ud83d\ude00"',  # lone, however escaped
     rb'"\ud83d\ude00"', rb'"\uDBFF\uDFFF"', rb'"\\u0000"', rb'"\n\u00e9\"\/"', b'"caf\xc3\xa9"'],
)
def test_the_scan_of_a_bodys_escapes_finds_exactly_what_the_walk_finds(text: bytes) -> None:
    """may_hold_unstorable reads the escapes from the left, as JSON does: a pair, an escaped
    backslash before u0000, are no alarm; a lone half after an escaped backslash is no pair."""
    assert wire.may_hold_unstorable(text) == bool(list(wire.unstorable(wire.parse(text))))
    assert wire.storable("caf\u00e9 \U0001f600") and not wire.storable("a\x00") and not wire.storable("\udc00")


@pytest.mark.parametrize(
    ("written", "text"),
    [("300", "300"), ("1.5", "1.5"), ("1e3", "1000"), ("2.5E+2", "250"), ("1E-2", "0.01"), ('"2h"', "2h")],
)
def test_a_duration_is_text_or_any_json_number_of_seconds(written: str, text: str) -> None:
    assert wire.duration(wire.parse(written.encode()), "fire_in") == text
    if not written.startswith('"'):  # the same number of seconds, in text duration.py reads
        assert parse_seconds(text) == float(written)


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("-1e3", "fire_in '-1e3': a duration cannot be negative"),
        ("0e0", "fire_in '0e0': the delay must be positive"),
        ("1e400", "fire_in '1e400': the delay must be under 100 years"),
        ("1e999999999", "fire_in '1e999999999': the delay must be under 100 years"),
        ("1e-999999999", "fire_in '1e-999999999': the delay must be positive"),
        ("true", 'fire_in must be a duration such as "2h" or a number of seconds'),
        ("[300]", 'fire_in must be a duration such as "2h" or a number of seconds'),
    ],
)
def test_a_duration_number_refused_is_repeated_as_the_client_wrote_it(written: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        wire.duration(wire.parse(written.encode()), "fire_in")
    assert str(refused.value).startswith(says) and refused.value.field == "fire_in"
    assert wire.duration(wire.parse(b"0e0"), "grace", allow_zero=True) == "0"


def test_a_problem_and_an_answer_repeating_a_lone_surrogate_are_still_json() -> None:
    problem = invalid("timezone 'x\ud800' is not an IANA zone", pointer("timezone"))
    assert json.loads(problem.body())["detail"] == "timezone 'x\ud800' is not an IANA zone"
    assert b"\\ud800" in problem.body() and "\u00e9".encode() in invalid("caf\u00e9", None).body()
    assert json.loads(wire.dumps({"ref_id": "b\udc00", "n": 1})) == {"ref_id": "b\udc00", "n": 1}


def test_the_prefix_range_ends_after_every_string_with_the_prefix() -> None:
    assert _after_prefix("cart:") == "cart;"
    assert _after_prefix("a\U0010ffff") == "b"
    assert _after_prefix("\ud7ff") == "\ue000"
    for ref in ("cart:", "cart:1", "cart:\U0010ffff\U0010ffff"):
        assert "cart:" <= ref < _after_prefix("cart:")


def test_a_query_name_defined_in_two_files_is_refused() -> None:
    with pytest.raises(ValueError, match=r"defined in both sql/queries\.sql and sql/queries\.sql"):
        load_files(("sql/queries.sql", "sql/queries.sql"))


def test_an_encoded_payload_is_refused_for_what_jsonb_refuses_and_kept_otherwise() -> None:
    from reminderd.payload import PayloadError, check_encoded, check_payload

    for value in ({"a": "x\x00y"}, {"k\x00": 1}, {"a": "\ud800"}):
        text = json.dumps(value, ensure_ascii=False)
        with pytest.raises(PayloadError) as fast:
            check_encoded(text)
        with pytest.raises(PayloadError) as full:
            check_payload(json.dumps(value))  # the CLI's check, on the escaped text: the same verdict
        assert fast.value.args[0].split(" at ")[0] == full.value.args[0].split(" at ")[0]
    kept = json.dumps({"a": "\\u0000", "b": [1, 2.5]}, ensure_ascii=False)  # a backslash, not a NUL
    assert check_encoded(kept) == kept
    big = json.dumps({"a": "x" * 300_000})
    with pytest.raises(PayloadError, match="at most 262144"):
        check_encoded(big)


@pytest.mark.parametrize("sqlstate", ["55P03", "40P01", "40001"])
def test_a_lock_deadlock_or_serialization_refusal_is_a_503_to_retry_not_the_requests(sqlstate: str) -> None:
    refused = DatabaseRefused(
        'ref "p#completed" of message acme / p#completed cannot be checked now: broadcast "p" of tenant "acme" '
        "is being written", sqlstate=sqlstate, hint="Try again in a moment.",
    )
    problem = _refused(refused, "/messages/1/ref_id")
    assert (problem.status, problem.type) == (503, "urn:reminderd:problem:busy")
    assert problem.headers == {"Retry-After": "1"}
    assert problem.as_json()["sqlstate"] == sqlstate and problem.as_json()["hint"] == "Try again in a moment."
    assert [error.pointer for error in problem.errors] == ["/messages/1/ref_id"]


def test_a_refusal_of_the_request_itself_stays_a_422() -> None:
    problem = _refused(DatabaseRefused("payload of message acme / r is 300000 bytes", sqlstate="54000"))
    assert (problem.status, problem.kind, problem.headers) == (422, "database-refused", {})
