"""reminderd/prefixes.py: a digit pattern turned into a prefix table says of every number exactly
what the pattern (with its lengths) says, checked against Python's own regular expressions."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reminderd.prefixes import DigitPattern, Leaf, expand, leading_prefixes

PATTERNS = [
    DigitPattern("[2-9]\\d{2}[2-9]\\d{6}", (10,)),  # NANPA
    DigitPattern("2(?:0[1-35-9]|1[02-9]|2[03-57-9])[2-9]\\d{6}", (10,)),
    DigitPattern("(?:1[0-2]|3[13-9])\\d{4,6}", (6, 8)),  # two lengths of three possible
    DigitPattern("7(?:[1-57-9]\\d|6[0-35-9])\\d{6}|8(?:00|1[0-2])\\d{5,7}", (9, 10)),
    DigitPattern("\\d{7}(?:\\d{2})?", ()),  # no lengths given: any the pattern allows
    DigitPattern("(?:5\\d|6[0-3])\\d{1,3}", ()),
]


def matches(pattern: DigitPattern, number: str) -> bool:
    return (not pattern.lengths or len(number) in pattern.lengths) and re.fullmatch(pattern.pattern, number) \
        is not None


def looked_up(leaves: list[Leaf], number: str) -> int:
    """The mask of the number's row: the longest recorded prefix of it."""
    best = max((leaf for leaf in leaves if number.startswith(leaf.prefix)),
               key=lambda leaf: len(leaf.prefix), default=None)
    return 0 if best is None else best.masks.get(len(number), 0)


def numbers(rng: random.Random, count: int) -> list[str]:
    found = []
    for _ in range(count):
        length = rng.randint(2, 12)
        found.append("".join(rng.choice("0123456789") for _ in range(length)))
    return found


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.pattern for p in PATTERNS])
def test_the_table_of_one_pattern_agrees_with_the_pattern(pattern: DigitPattern) -> None:
    leaves = expand([pattern], max_length=12)
    rng = random.Random(pattern.pattern)
    candidates = numbers(rng, 4000) + [leaf.prefix + "0" * (n - len(leaf.prefix))
                                       for leaf in leaves[:300] for n in leaf.masks]
    assert any(matches(pattern, number) for number in candidates)  # the check covers valid numbers too
    assert [n for n in candidates if (looked_up(leaves, n) == 1) != matches(pattern, n)] == []


def test_several_patterns_get_one_bit_each_and_the_first_is_required() -> None:
    chosen = PATTERNS[:4]
    leaves = expand(chosen, max_length=12)
    for number in numbers(random.Random(3), 6000):
        mask = looked_up(leaves, number)
        expected = sum(1 << i for i, p in enumerate(chosen) if matches(p, number))
        # Where the first (required) pattern does not match, its bit is clear and the rest says
        # nothing (a row records a prefix for the lengths where it can match).
        if expected & 1:
            assert mask == expected, number
        else:
            assert mask & 1 == 0, number


def test_split_prefixes_still_say_the_same_and_go_deeper() -> None:
    pattern = DigitPattern("[2-9]\\d{6}", (7,))
    plain = expand([pattern], max_length=10)
    deep = expand([pattern], max_length=10, split=lambda prefix: len(prefix) < 3)
    assert max(len(leaf.prefix) for leaf in plain) == 1
    assert {len(leaf.prefix) for leaf in deep} == {3}
    for number in numbers(random.Random(5), 3000):
        assert looked_up(deep, number) == looked_up(plain, number), number


PLAN = DigitPattern("(?:2[0-24-9]|3[0-4]|[4-6]\\d|7[0-24-9])\\d{7,8}|800\\d{6,7}", (9, 10, 11))
TABLE = expand([PLAN], max_length=17)


@given(st.text(alphabet="0123456789", min_size=2, max_size=11))
def test_any_number_against_a_real_plan(number: str) -> None:
    assert (looked_up(TABLE, number) == 1) == matches(PLAN, number)


def test_leading_prefixes_are_where_the_pattern_matches_at_the_start() -> None:
    pattern = "268|8(?:0[0-2]|2[89]|4[69])"
    prefixes = list(leading_prefixes(pattern, max_length=17))
    assert sorted(prefixes) == ["268", "800", "801", "802", "828", "829", "846", "849"]
    for number in numbers(random.Random(7), 3000):
        assert any(number.startswith(p) for p in prefixes) == (re.match(pattern, number) is not None)


def test_what_a_digit_pattern_may_not_use_is_refused() -> None:
    for unsupported in ("\\d+", "1*", "[a-z]\\d", "^1", "1(?=2)"):
        with pytest.raises(ValueError):
            expand([DigitPattern(unsupported)], max_length=10)
