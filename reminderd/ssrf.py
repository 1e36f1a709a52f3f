"""Refuse callbacks to addresses inside the operator's own network (SSRF guard).

Checked on the addresses a name actually resolves to, when the HTTP client opens a connection, and
the client connects to the very address checked: a DNS answer that changes between a check and the
connection (rebinding) cannot slip past.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

from .exceptions import CallbackRefused
from .settings import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`resolve(host, port)`: the addresses a name stands for, best first (tests inject their own)."""


def refusal(address: str, allowed: Sequence[Network]) -> str | None:
    """Why a callback may not connect to `address`, or None when it may."""
    try:
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded  # judge the IPv4 host it really reaches
    if any(ip in network for network in allowed):
        return None
    # is_global is False for loopback, private (RFC 1918), link-local (169.254/16, where cloud
    # metadata lives), CGNAT (100.64/10), unique-local, documentation and reserved ranges.
    if not ip.is_global or ip.is_multicast:
        return (
            f"callback address {ip} is not a public address; allow it with "
            "REMINDERD_ALLOWED_CALLBACK_NETWORKS if it is meant to be reached"
        )
    return None


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's answer (getaddrinfo, in the loop's thread pool), in its order, each address once."""
    answers = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in answers))


async def checked_addresses(host: str, port: int, resolve: Resolver, allowed: Sequence[Network]) -> list[str]:
    """The addresses `host` resolves to, or CallbackRefused if any of them is refused."""
    addresses = list(await resolve(host, port))
    for address in addresses:
        reason = refusal(address, allowed)
        if reason:
            # One bad answer refuses the name: a mixed answer is how rebinding attacks start.
            raise CallbackRefused(f"{host} resolves to {reason.removeprefix('callback address ')}")
    return addresses
