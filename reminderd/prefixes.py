"""Regular expressions over digits turned into prefix tables, so a database can test a number with
one index lookup instead of running a regular expression per pattern.

phonenumbers describes each kind of number of a region with a pattern such as
`2(?:0[1-35-9]|1[02-9])[2-9]\\d{6}`. Walked digit by digit (a DFA built from the pattern), every
number soon reaches a point after which only its length matters (`\\d{6}` is left). The walk stops
there and records the prefix with, for each total length, which patterns accept it: the prefixes
recorded are prefix-free unless the caller asks for finer ones (`split`); a number's row is the
longest recorded prefix of it.

    table = expand([DigitPattern("[2-9]\\d{2}", (3,))], max_length=17)
    # [Leaf(prefix="2", masks={3: 1}), …, Leaf(prefix="9", masks={3: 1})]

Only what phonenumbers' patterns use is understood: digits, \\d, classes, groups, alternation,
and bounded repetition (?, {n}, {n,m}). Anything else raises ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from re import _constants as sre  # type: ignore[attr-defined]  # the parser's own vocabulary
from re import _parser as sre_parse  # type: ignore[attr-defined]  # Python's regex parser, no public name

__all__ = ["DigitPattern", "Leaf", "expand", "leading_prefixes"]

DIGITS = "0123456789"


@dataclass(frozen=True)
class DigitPattern:
    """A pattern a whole number must match, and the lengths it may have (empty: any)."""

    pattern: str
    lengths: tuple[int, ...] = ()


@dataclass(frozen=True)
class Leaf:
    """Numbers starting with `prefix`: for each total length, a bit mask of the patterns (bit i for
    the i-th pattern) that accept every number of that length with this prefix."""

    prefix: str
    masks: dict[int, int]


class _Automaton:
    """A DFA over the ten digits, built lazily from a Thompson NFA of the pattern."""

    def __init__(self, pattern: str) -> None:
        self._epsilon: list[list[int]] = []
        self._moves: list[dict[str, list[int]]] = []
        start = self._state()
        self._accept = self._build(sre_parse.parse(pattern), start)
        self.start = self._closure({start})
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}
        self._remaining: dict[frozenset[int], frozenset[int] | None] = {}

    def _state(self) -> int:
        self._epsilon.append([])
        self._moves.append({})
        return len(self._epsilon) - 1

    def _build(self, tree: sre_parse.SubPattern, start: int) -> int:
        """Add `tree` after `start`; its end state."""
        current = start
        for op, argument in tree:
            if op is sre.LITERAL or op is sre.IN or (op is sre.CATEGORY and argument is sre.CATEGORY_DIGIT):
                following = self._state()
                for digit in _digits(op, argument):
                    self._moves[current].setdefault(digit, []).append(following)
                current = following
            elif op is sre.SUBPATTERN:
                current = self._build(argument[-1], current)
            elif op is sre.BRANCH:
                end = self._state()
                for alternative in argument[1]:
                    branch = self._state()
                    self._epsilon[current].append(branch)
                    self._epsilon[self._build(alternative, branch)].append(end)
                current = end
            elif op is sre.MAX_REPEAT:
                low, high, repeated = argument
                if high is sre.MAXREPEAT:
                    raise ValueError("unbounded repetition")
                for _ in range(low):
                    current = self._build(repeated, current)
                end = self._state()
                self._epsilon[current].append(end)
                for _ in range(high - low):
                    current = self._build(repeated, current)
                    self._epsilon[current].append(end)
                current = end
            else:
                raise ValueError(f"unsupported in a digit pattern: {op}")
        return current

    def _closure(self, states: set[int]) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for following in self._epsilon[stack.pop()]:
                if following not in seen:
                    seen.add(following)
                    stack.append(following)
        return frozenset(seen)

    def accepts(self, state: frozenset[int]) -> bool:
        return self._accept in state

    def step(self, state: frozenset[int], digit: str) -> frozenset[int]:
        key = (state, digit)
        if key not in self._steps:
            following: set[int] = set()
            for nfa_state in state:
                following.update(self._moves[nfa_state].get(digit, ()))
            self._steps[key] = self._closure(following) if following else frozenset()
        return self._steps[key]

    def remaining(self, state: frozenset[int]) -> frozenset[int] | None:
        """The lengths k such that every k more digits are accepted from `state`, when nothing but
        length matters from here; None when the digits still matter."""
        if state not in self._remaining:
            self._remaining[state] = self._lengths_only(state)
        return self._remaining[state]

    def _lengths_only(self, state: frozenset[int]) -> frozenset[int] | None:
        if not state:
            return frozenset()
        followings = {self.step(state, digit) for digit in DIGITS}
        if len(followings) != 1:
            return None
        after = self.remaining(next(iter(followings)))
        if after is None:
            return None
        return frozenset({0} if self.accepts(state) else ()) | frozenset(k + 1 for k in after)


def _digits(op: object, argument: object) -> set[str]:
    """The digits a literal, \\d or a class stands for; ValueError for anything but digits."""
    if op is sre.LITERAL:
        return _only_digits({chr(argument)})  # type: ignore[arg-type]
    if op is sre.CATEGORY:
        return set(DIGITS)
    found, negate = set(), False
    for item, value in argument:  # type: ignore[attr-defined]
        if item is sre.NEGATE:
            negate = True
        elif item is sre.LITERAL:
            found |= _only_digits({chr(value)})
        elif item is sre.RANGE:
            found |= _only_digits({chr(code) for code in range(value[0], value[1] + 1)})
        elif item is sre.CATEGORY and value is sre.CATEGORY_DIGIT:
            found |= set(DIGITS)
        else:
            raise ValueError(f"unsupported in a character class: {item}")
    return set(DIGITS) - found if negate else found


def _only_digits(characters: set[str]) -> set[str]:
    if not characters <= set(DIGITS):
        raise ValueError(f"not a digit in a digit pattern: {''.join(sorted(characters - set(DIGITS)))!r}")
    return characters


def expand(
    patterns: Sequence[DigitPattern | None], *, max_length: int, required: int = 0,
    split: Callable[[str], bool] | None = None,
) -> list[Leaf]:
    """The prefix table of `patterns` (None: a pattern that accepts nothing) for numbers of at most
    `max_length` digits. A number matches pattern i when it has one of its lengths and the pattern
    matches it whole; its leaf is the longest recorded prefix of it, and gives its mask at its
    length. Prefixes where the pattern `required` can no longer match are left out, so a number
    with no leaf (or a mask without that bit) does not match it.

    `split(prefix)` asks for numbers starting with `prefix` to get leaves of their own below it
    even where only their length matters (the caller tells them apart by something else): the
    prefix then keeps only the numbers that end there, and its children the rest. Once it says no
    for a prefix it must say no for every longer one."""
    automata = [None if p is None else _Automaton(p.pattern) for p in patterns]
    lengths = [() if p is None else p.lengths for p in patterns]
    def masks(prefix: str, ends: Sequence[frozenset[int]]) -> dict[int, int]:
        found: dict[int, int] = {}
        for index, (automaton, end) in enumerate(zip(automata, ends, strict=True)):
            if automaton is None:
                continue
            for extra in end:
                total = len(prefix) + extra
                if total <= max_length and (not lengths[index] or total in lengths[index]):
                    found[total] = found.get(total, 0) | (1 << index)
        return found

    def keep(found: dict[int, int]) -> bool:
        return any(mask & (1 << required) for mask in found.values())

    # Below a prefix `split` declines, what follows depends only on the automata's states and the
    # depth, not on the digits so far: those subtrees are walked once (NANPA's area codes share them).
    Found = list[tuple[str, dict[int, int]]]
    memo: dict[tuple[tuple[frozenset[int], ...], int], Found] = {}

    def walk(prefix: str, states: tuple[frozenset[int], ...], splitting: bool) -> Found:
        """The leaves below `prefix`, as (suffix, masks)."""
        key = (states, len(prefix))
        if not splitting and key in memo:
            return memo[key]
        found_below: Found = []
        if automata[required] is None or states[required]:  # else the required pattern cannot match any more
            ends = [frozenset() if a is None else a.remaining(s) for a, s in zip(automata, states, strict=True)]
            if len(prefix) == max_length:  # no longer number: only what is accepted now
                ends = [frozenset({0}) if a is not None and a.accepts(s) else frozenset()
                        for a, s in zip(automata, states, strict=True)]
            descend = True
            if all(end is not None for end in ends):
                found = masks(prefix, ends)  # type: ignore[arg-type]  # none is None here
                if not splitting or len(prefix) == max_length:
                    descend = False
                    if keep(found):
                        found_below.append(("", found))
                else:
                    ending_here = {total: mask for total, mask in found.items() if total == len(prefix)}
                    if keep(ending_here):
                        found_below.append(("", ending_here))
            if descend:
                for digit in DIGITS:
                    child = prefix + digit
                    child_states = tuple(state if a is None else a.step(state, digit)
                                         for a, state in zip(automata, states, strict=True))
                    below = walk(child, child_states, splitting and split is not None and split(child))
                    found_below += [(digit + suffix, found) for suffix, found in below]
        if not splitting:
            memo[key] = found_below
        return found_below

    start = tuple(frozenset() if a is None else a.start for a in automata)
    return [Leaf(suffix, found) for suffix, found in walk("", start, split is not None and split(""))]



def leading_prefixes(pattern: str, *, max_length: int) -> Iterator[str]:
    """The shortest digit strings a number must start with for `pattern` to match at its start
    (re.match), prefix-free."""
    automaton = _Automaton(pattern)

    def walk(prefix: str, state: frozenset[int]) -> Iterator[str]:
        if not state:
            return
        if automaton.accepts(state):
            yield prefix
            return
        if len(prefix) < max_length:
            for digit in DIGITS:
                yield from walk(prefix + digit, automaton.step(state, digit))

    yield from walk("", automaton.start)
