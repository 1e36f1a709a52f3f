"""What a callback URL must be: one rule for the command line, the HTTP API and the daemon, the
same as reminderd.callback_url_problem() in SQL (docs/sql.md, "Callback URLs"). Pure: no I/O.

`problem(url)` says what is wrong with a URL in a few words, as the SQL function says it, checked
in the same order: an http(s) URL; no space or control character anywhere; at most one @ (the
user:password part's own is %40); a host; a port from 1 to 65535; and the host an IPv6 address in
brackets, an IPv4 address as four numbers, or a name — ASCII letters, digits, - and _ in labels of 1
to 63 characters, 253 at most, a trailing dot allowed, and each label starting xn-- an A-label that
decodes (punycode, IDNA) to the label it stands for. An international name is written in its IDNA
form (https://xn--bcher-kva.example/, not https://bücher.example/): `idna_form(url)` gives it.
SQL checks A-labels as punycode, not against the IDNA tables: one that decodes to a character IDNA
refuses (xn--4ba, an upper-case Á) is refused here alone, and by the daemon on a row written past it.

The daemon, which also sends rows written before international names were refused (migration
0039), checks with `international=True`: a non-ASCII name is then taken when it encodes (IDNA).
"""
from __future__ import annotations

import ipaddress
import re

import idna

__all__ = ["UNREADABLE", "idna_form", "problem"]

# The problem of a URL that is not an http(s) URL at all (the CLI and the API say it their way).
UNREADABLE = "is not an http(s) URL"

_HTTP = re.compile(r"https?://[^/?#]", re.IGNORECASE | re.ASCII)
# Spaces and control characters: C0, space, DEL, C1, and the Unicode spaces (every character
# str.isspace() or category Cc says is one; tests/unit/test_callback_urls.py checks the list).
SPACE_OR_CONTROL = "\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE_OR_CONTROL = re.compile(f"[{SPACE_OR_CONTROL}]")
_AUTHORITY = re.compile(r"[A-Za-z]+://([^/?#]*)")
_BRACKETED = re.compile(r"(\[[^]]*\])(.*)", re.DOTALL)
_PORT = re.compile(r"[0-9]{1,5}")

# Hosts inet_aton would read as an address (2130706433, 127.1, 0x7f.1): only a.b.c.d is one here.
NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\.?", re.IGNORECASE | re.ASCII)
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
# Hex digits and colons, perhaps ending in an IPv4 address as four numbers.
_IPV6 = re.compile(rf"[0-9A-Fa-f:]+(:{_OCTET}(\.{_OCTET}){{3}})?")
# ASCII a host name cannot have (printable ASCII but letters, digits, - . _).
_NOT_IN_A_NAME = re.compile(r"[\x21-\x2c\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7e]")
_EMPTY_LABEL = re.compile(r"(^|\.)(\.|$)")
_LONG_LABEL = re.compile(r"[^.]{64}")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")


def problem(url: str, *, international: bool = False) -> str | None:
    """What is wrong with `url` as a callback URL ('has port "1234567": a port is 1 to 65535'),
    to follow the URL in a sentence; None when it is a callback URL. `international`: a non-ASCII
    name that encodes (IDNA) is one too (the daemon's rule for rows written before 0039)."""
    if not _HTTP.match(url):
        return UNREADABLE
    if _SPACE_OR_CONTROL.search(url):
        return "has a space or a control character"
    authority = _match(_AUTHORITY, url).group(1)
    if authority.count("@") > 1:
        return "has more than one @ before its host (write an @ of the user or password as %40)"
    host_and_port = authority.rpartition("@")[2]
    bracketed = _BRACKETED.fullmatch(host_and_port)
    if bracketed and (bracketed.group(2) == "" or bracketed.group(2).startswith(":")):
        host, rest = bracketed.group(1), bracketed.group(2)
    elif host_and_port.startswith("["):
        host, rest = host_and_port, ""
    else:
        host, colon, port = host_and_port.partition(":")
        rest = colon + port
    if not host:
        return "has no host"
    if rest:
        port = rest[1:]
        if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
            return f'has port "{port}": a port is 1 to 65535'
    return _host_problem(host, international)


def _host_problem(host: str, international: bool) -> str | None:
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if not _IPV6.fullmatch(inner) or not _is_ipv6(inner):
            return f'has host "{host}", which is not an IPv6 address'
        return None
    if NUMERIC_HOST.fullmatch(host):
        if not _DOTTED_QUAD.fullmatch(host):
            return f'has host "{host}", an address in a non-standard form (write four numbers, like 192.0.2.1)'
        return None
    name = host.removesuffix(".")
    wrong = _NOT_IN_A_NAME.search(name)
    if wrong:
        return f'has host "{host}" with "{wrong.group()}", which a host name cannot have'
    if _EMPTY_LABEL.search(name):
        return f'has host "{host}" with an empty label'
    if _LONG_LABEL.search(name):
        return f'has host "{host}" with a label longer than 63 characters'
    if len(name) > 253:
        return f'has host "{host}" longer than 253 characters'
    if name.isascii():
        return _a_label_problem(host, name)
    if not international:
        wide = _NOT_ASCII.search(name)
        assert wide is not None, "checked by isascii"
        return (f'has host "{host}" with "{wide.group()}" (U+{ord(wide.group()):04X}), which a host name cannot'
                ' have: write an international name in its IDNA form (xn--)')
    encoded = _idna(name)
    if encoded is None:
        return f'has host "{_visible(host)}", which is not an international domain name (IDNA)'
    if (NUMERIC_HOST.fullmatch(encoded) or _NOT_IN_A_NAME.search(encoded) or _EMPTY_LABEL.search(encoded)
            or _LONG_LABEL.search(encoded) or len(encoded) > 253):
        return f'has host "{_visible(host)}", which encoded (IDNA) as "{encoded}" is not a host name'
    return _a_label_problem(host, encoded)


def _a_label_problem(host: str, name: str) -> str | None:
    for label in name.split("."):
        if label[:4].lower() == "xn--" and _decoded(label) is None:
            return f'has host "{host}" with label "{label}", which is not a valid IDNA A-label (punycode)'
    return None


def _decoded(label: str) -> str | None:
    """The U-label an A-label stands for, decoded as the daemon's URLs decode it (yarl: IDNA 2008,
    else IDNA 2003, each checking that it encodes back to the same A-label); None if it does not."""
    label = label.lower()  # as URLs hold hosts (the IDNA 2003 codec reads an XN-- label as ASCII)
    try:
        return idna.decode(label)
    except (UnicodeError, IndexError):
        pass
    try:
        return label.encode("ascii").decode("idna")
    except UnicodeError:
        return None


def idna_form(url: str) -> str | None:
    """`url` with its non-ASCII host name in its IDNA form (https://xn--bcher-kva.example/hook for
    https://bücher.example/hook), when that form is a callback URL; None otherwise."""
    authority = _AUTHORITY.match(url)
    if authority is None:
        return None
    user, at, host_and_port = authority.group(1).rpartition("@")
    host, colon, port = host_and_port.partition(":")
    encoded = _idna(host.removesuffix("."))
    if encoded is None or encoded == host.removesuffix("."):
        return None
    dot = "." if host.endswith(".") else ""
    start, end = authority.span(1)
    written = url[:start] + user + at + encoded + dot + colon + port + url[end:]
    return written if problem(written) is None else None


def _visible(text: str) -> str:
    """`text` with what does not print (a soft hyphen, a zero-width joiner) as \\uXXXX."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _idna(name: str) -> str | None:
    """The name as the daemon encodes it (yarl: IDNA 2008 with UTS 46 mapping, else IDNA 2003)."""
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except UnicodeError:
        pass
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _match(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    match = pattern.match(text)
    assert match is not None, "checked by _HTTP first"
    return match
