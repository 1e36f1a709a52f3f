"""JSON payloads, checked as PostgreSQL's jsonb will take them and kept as written.

The text is validated, never decoded and encoded again: `12345678901234567.5` and a 5,000-digit
integer reach the database (and the callback) as written, not as a float's approximation.
Refused, each with the position of what is wrong: what is not JSON (including `NaN` and
`Infinity`, which Python's json module would accept) and what jsonb cannot store — a number beyond
numeric's range (131072 digits before the decimal point, 16383 after), `\\u0000`, half a UTF-16
surrogate pair — and payloads over the 256 KiB the database allows.
"""

from __future__ import annotations

import json
import re

MAX_PAYLOAD_BYTES = 262144  # the scheduled_messages payload trigger refuses more (SQLSTATE 54000)
MAX_DEPTH = 500  # arrays and objects inside each other; Python's parser is recursive
MAX_INTEGER_DIGITS = 131072  # PostgreSQL's numeric: digits before the decimal point
MAX_FRACTION_DIGITS = 16383  # and after it
MAX_EXPONENT = 2**30 - 1  # numeric_in refuses an exponent this large, even on zero

_TOKEN = re.compile(
    r"""
      (?P<string> "[^"\\]*(?:\\.[^"\\]*)*" )
    | (?P<number> -?(?P<int>0|[1-9][0-9]*)(?:\.(?P<frac>[0-9]+))?(?:[eE](?P<exp>[-+]?[0-9]+))? )
    | (?P<constant> NaN | -?Infinity )
    | (?P<open> [\[{] )
    | (?P<close> []}] )
    | (?P<space> [ \t\n\r]+ )
    | (?P<other> true | false | null | [:,] )
    """,
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")
_SURROGATE = re.compile("[\ud800-\udfff]")


class PayloadError(ValueError):
    """The payload cannot be stored; the message follows the payload's name ("--payload …")."""


def check_payload(text: str) -> str:
    """`text` itself when PostgreSQL's jsonb will take it; PayloadError saying what and where."""
    raw = _SURROGATE.search(text)
    if raw:  # undecodable bytes on the command line arrive as lone surrogates
        raise PayloadError(f"is not valid UTF-8 text at {where(text, raw.start())}")
    size = _scan(text)
    try:  # the structure; numbers stay text, so no int-digit limit and no float rounding
        json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"is not valid JSON: {exc.msg} at {where(text, exc.pos)}") from None
    except RecursionError:  # pragma: no cover - _scan refuses nesting this deep first
        raise PayloadError(f"nests arrays and objects more than {MAX_DEPTH} levels deep") from None
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"is {size} bytes of JSON (not counting whitespace between values); "
            f"at most {MAX_PAYLOAD_BYTES} (256 KiB): a callback is a nudge, not a file transfer"
        )
    return text


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_encoded(text: str) -> str:
    """check_payload for text json.dumps wrote from a parsed JSON value (the API's): valid JSON by
    construction, with no NaN, no number outside numeric's range (a float prints at most 17
    digits, an int parses from at most 4,300) and whitespace only after `,` and `:`. What jsonb
    would still refuse is looked for directly: an escaped NUL, half a surrogate pair; and the size.
    A large one gets the whole check_payload."""
    if len(text) * 4 > MAX_PAYLOAD_BYTES:
        return check_payload(text)
    raw = _SURROGATE.search(text)
    if raw:  # ensure_ascii=False writes a lone surrogate as it is
        half = f"\\u{ord(raw.group()):04x}"
        raise PayloadError(
            f"has half a UTF-16 surrogate pair, {half}, at {where(text, raw.start())}: PostgreSQL refuses it"
        )
    nul = _NUL_ESCAPE.search(text)
    if nul:
        at = where(text, nul.end() - 6)
        raise PayloadError(f"has \\u0000 at {at}: PostgreSQL cannot store the NUL character")
    return text


def where(text: str, position: int) -> str:
    """ "character 12", or for text on several lines "line 3, column 5 (character 42)"."""
    line = text.count("\n", 0, position) + 1
    if line == 1:
        return f"character {position}"
    column = position - text.rfind("\n", 0, position)
    return f"line {line}, column {column} (character {position})"


def _scan(text: str) -> int:
    """Check what json.loads accepts but jsonb refuses, up to the first text that is not a JSON
    token (json.loads then says what is wrong there). The size without whitespace."""
    position, depth, whitespace = 0, 0, 0
    while position < len(text):
        token = _TOKEN.match(text, position)
        if token is None:
            break
        kind = token.lastgroup
        if kind == "constant":
            raise PayloadError(
                f"is not valid JSON: {token.group()} at {where(text, position)} "
                "(JSON has no NaN or Infinity, and PostgreSQL refuses them)"
            )
        if kind == "number":
            _check_number(token, text)
        elif kind == "string" and "\\u" in token.group():
            _check_escapes(token.group(), text, position)
        elif kind == "open":
            depth += 1
            if depth > MAX_DEPTH:
                raise PayloadError(
                    f"nests arrays and objects more than {MAX_DEPTH} levels deep at {where(text, position)}"
                )
        elif kind == "close":
            depth -= 1
        elif kind == "space":
            whitespace += token.end() - position
        position = token.end()
    return len(text.encode("utf-8", "surrogatepass")) - whitespace


def _check_number(token: re.Match[str], text: str) -> None:
    """PostgreSQL's numeric holds at most 131072 digits before the decimal point and 16383 after."""
    integer, fraction = token.group("int"), token.group("frac") or ""
    exponent = _exponent(token.group("exp"))
    number = token.group()
    shown = number if len(number) <= 24 else f"{number[:12]}…{number[-8:]}"
    at = where(text, token.start())
    if abs(exponent) >= MAX_EXPONENT:
        raise PayloadError(f"has a number PostgreSQL cannot read at {at}: {shown} has too large an exponent")
    if _integer_digits(integer, fraction, exponent) > MAX_INTEGER_DIGITS:
        raise PayloadError(
            f"has a number too large for PostgreSQL at {at}: {shown} has more than "
            f"{MAX_INTEGER_DIGITS} digits before the decimal point"
        )
    if len(fraction) - exponent > MAX_FRACTION_DIGITS:
        raise PayloadError(
            f"has a number too precise for PostgreSQL at {at}: {shown} has more than "
            f"{MAX_FRACTION_DIGITS} digits after the decimal point"
        )


def _exponent(text: str | None) -> int:
    if text is None:
        return 0
    if len(text.lstrip("+-").lstrip("0")) > 12:  # far beyond MAX_EXPONENT: no need to read it all
        return -(10**12) if text.startswith("-") else 10**12
    return int(text)


def _integer_digits(integer: str, fraction: str, exponent: int) -> int:
    """How many digits `integer.fraction` times 10**exponent has before its decimal point."""
    significant = (integer + fraction).lstrip("0")
    if not significant:
        return 0
    first = len(integer + fraction) - len(significant)  # index of the first non-zero digit
    power = len(integer) - 1 - first + exponent  # its power of ten
    return max(power + 1, 0)


def _check_escapes(string: str, text: str, offset: int) -> None:
    """jsonb stores text: no NUL character, and each UTF-16 surrogate in a pair, high then low."""
    high: re.Match[str] | None = None  # a high surrogate waiting for its low half
    for escape in _ESCAPE.finditer(string):
        code = int(escape.group(1), 16) if escape.group(1) else None
        if high is not None:
            if code is not None and 0xDC00 <= code <= 0xDFFF and escape.start() == high.end():
                high = None
                continue
            break
        if code == 0:
            at = where(text, offset + escape.start())
            raise PayloadError(f"has \\u0000 at {at}: PostgreSQL cannot store the NUL character")
        if code is not None and 0xD800 <= code <= 0xDFFF:
            high = escape
            if code >= 0xDC00:  # a low half first
                break
    if high is not None:
        raise PayloadError(
            f"has half a UTF-16 surrogate pair, {high.group()}, at {where(text, offset + high.start())}: "
            "PostgreSQL refuses it"
        )
