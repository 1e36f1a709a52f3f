"""Refuse callbacks to addresses inside the operator's own network (SSRF guard).

Checked on the addresses a name actually resolves to, inside the HTTP client's resolver, so a DNS
answer that changes between a check and the connection (rebinding) cannot slip past.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from .exceptions import CallbackRefused
from .settings import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


class GuardedResolver(ThreadedResolver):
    """Resolves like aiohttp's default resolver, then refuses any non-public answer."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        super().__init__()
        self._allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        for result in results:
            reason = refusal(result["host"], self._allowed)
            if reason:
                # One bad answer refuses the name: a mixed answer is how rebinding attacks start.
                raise CallbackRefused(f"{host} resolves to {reason.removeprefix('callback address ')}")
        return results

