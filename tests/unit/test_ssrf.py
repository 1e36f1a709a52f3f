"""Unit tests for the SSRF guard: refusal(), check_url() and checked_addresses() (DNS faked, no network)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from support import make_job

from reminderd.callback import CallbackClient, check_url
from reminderd.exceptions import CallbackRefused
from reminderd.outcome import AttemptResult
from reminderd.settings import Network, Settings
from reminderd.ssrf import Resolver, checked_addresses, refusal, system_resolver

LOOPBACK_ALLOWED: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),)

NOT_PUBLIC = [
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "fd00::1",  # unique local
    "fe80::1",  # link local
    "fe80::1%eth0",  # with a zone
    "0.0.0.0",
    "::",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "ff02::1",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "2001:db8::1",
]

PUBLIC = ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001:80b::200e"]


async def send_once(url: str, resolver: Resolver = system_resolver) -> AttemptResult:
    """One attempt to `url` by a real client allowed no private networks (a refusal comes before
    any connection, so none is made)."""
    client = CallbackClient(Settings(database_url="postgresql://x@127.0.0.1:1/x"), resolver=resolver)
    try:
        return await client.send(make_job(callback_url=url))
    finally:
        await client.close()


# refusal()


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_refuses_non_public_address(address: str) -> None:
    reason = refusal(address, ())
    assert reason is not None
    assert "is not a public address" in reason
    assert "REMINDERD_ALLOWED_CALLBACK_NETWORKS" in reason


def test_refusal_names_the_embedded_ipv4_of_a_mapped_address() -> None:
    assert refusal("::ffff:127.0.0.1", ()) == refusal("127.0.0.1", ())


@pytest.mark.parametrize("address", PUBLIC)
def test_allows_public_address(address: str) -> None:
    assert refusal(address, ()) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_allowed_networks_let_a_private_address_through(address: str) -> None:
    assert refusal(address, LOOPBACK_ALLOWED) is None


def test_allowed_networks_do_not_open_other_private_ranges() -> None:
    assert refusal("10.0.0.1", LOOPBACK_ALLOWED) is not None
    assert refusal("::1", LOOPBACK_ALLOWED) is not None  # 127/8 does not cover IPv6 loopback


def test_allowed_ipv6_network() -> None:
    allowed = (ipaddress.ip_network("fd00::/8"),)
    assert refusal("fd00::1", allowed) is None
    assert refusal("fe80::1", allowed) is not None


@pytest.mark.parametrize("address", ["example.com", "", "10.0.0.256", "localhost"])
def test_refuses_what_is_not_an_ip_address(address: str) -> None:
    assert refusal(address, ()) == f"{address!r} is not an IP address"


# check_url()


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks?x=1",
        "http://hooks.example.org:8080/cb",
        "http://93.184.216.34/cb",
        "https://[2606:4700::1111]/cb",
    ],
)
def test_check_url_accepts_public_http_urls(url: str) -> None:
    checked = check_url(url, ())
    assert str(checked) == url
    assert checked.scheme in {"http", "https"}


def test_check_url_accepts_a_name_that_merely_looks_internal() -> None:
    # Names are judged on what they resolve to, by checked_addresses() at connection time.
    assert check_url("http://internal.corp/cb", ()).host == "internal.corp"


@pytest.mark.parametrize("raw", [None, ""])
def test_check_url_refuses_a_missing_url(raw: str | None) -> None:
    with pytest.raises(CallbackRefused, match="no callback_url"):
        check_url(raw, ())


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/file", "file:///etc/passwd", "gopher://example.com/", "example.com/cb", "http:///cb"],
)
def test_check_url_refuses_non_http_urls(url: str) -> None:
    with pytest.raises(CallbackRefused, match=r"must be an http\(s\) URL"):
        check_url(url, ())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/cb",
        "http://10.0.0.1/cb",
        "https://192.168.0.10/cb",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://[fe80::1%25eth0]/cb",
        "http://0.0.0.0/cb",
    ],
)
async def test_check_url_refuses_literal_private_addresses(url: str) -> None:
    with pytest.raises(CallbackRefused, match="is not a public address"):
        check_url(url, ())
    result = await send_once(url)  # a refusal is permanent: dead-lettered, never retried
    assert result.permanent and result.poison and result.refused


def test_check_url_allows_a_literal_in_an_allowed_network() -> None:
    assert check_url("http://127.0.0.1:9000/cb", LOOPBACK_ALLOWED).port == 9000


def test_check_url_refuses_an_unparseable_url() -> None:
    with pytest.raises(CallbackRefused):
        check_url("http://[::1/cb", ())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com:1234567/cb", 'callback_url has port "1234567": a port is 1 to 65535'),
        ("http://a b.example/cb", "callback_url has a space or a control character"),
        ("http://exa..mple.com/cb", 'callback_url has host "exa..mple.com" with an empty label'),
        ("http://" + "a" * 64 + ".example/cb",
         f'callback_url has host "{"a" * 64}.example" with a label longer than 63 characters'),
        ("http://\u00ad.example/cb", 'callback_url has host "\\u00ad.example", which is not an international'
                                    " domain name (IDNA)"),
    ],
)
async def test_a_url_written_before_urls_were_checked_is_refused_before_any_lookup(
    url: str, reason: str
) -> None:
    """A row written before migration 0019 (or past SQL's check: a name that does not encode):
    refused with what is wrong with it, permanently, and no name is looked up."""
    with pytest.raises(CallbackRefused) as refused:
        check_url(url, ())
    assert str(refused.value) == reason

    async def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError(f"looked up {host}")

    result = await send_once(url, no_lookup)
    assert result.error == f"refused: {reason}"
    assert result.permanent and result.poison and result.refused


# checked_addresses(), with a resolver answering from a fixed table


@pytest.fixture
def dns() -> Callable[..., tuple[Resolver, list[tuple[str, int]]]]:
    """`dns("1.2.3.4", ...)`: a resolver answering those addresses to every name, and the lookups made."""

    def install(*addresses: str) -> tuple[Resolver, list[tuple[str, int]]]:
        lookups: list[tuple[str, int]] = []

        async def resolve(host: str, port: int) -> list[str]:
            lookups.append((host, port))
            return list(addresses)

        return resolve, lookups

    return install


Dns = Callable[..., tuple[Resolver, list[tuple[str, int]]]]


async def test_resolver_passes_public_answers_through(dns: Dns) -> None:
    resolver, lookups = dns("93.184.216.34", "2606:4700::1111")
    results = await checked_addresses("hooks.example", 443, resolver, ())
    assert results == ["93.184.216.34", "2606:4700::1111"]
    assert lookups == [("hooks.example", 443)]


async def test_resolver_refuses_a_name_with_any_private_answer(dns: Dns) -> None:
    resolver, _ = dns("93.184.216.34", "10.0.0.1")
    with pytest.raises(CallbackRefused) as raised:
        await checked_addresses("rebind.example", 443, resolver, ())
    assert str(raised.value).startswith("rebind.example resolves to 10.0.0.1 is not a public address")
    result = await send_once("https://rebind.example/cb", resolver)  # a refusal is permanent: never retried
    assert result.permanent and result.poison and result.refused


@pytest.mark.parametrize("address", ["169.254.169.254", "::1", "fd00::1", "::ffff:127.0.0.1"])
async def test_resolver_refuses_a_name_resolving_to_internal_address(dns: Dns, address: str) -> None:
    resolver, _ = dns(address)
    with pytest.raises(CallbackRefused, match=r"^metadata\.example resolves to "):
        await checked_addresses("metadata.example", 80, resolver, ())


async def test_resolver_lets_allowed_networks_through(dns: Dns) -> None:
    resolver, _ = dns("127.0.0.1")
    results = await checked_addresses("receiver.local", 8080, resolver, LOOPBACK_ALLOWED)
    assert results == ["127.0.0.1"]


async def test_callback_client_never_connects_to_a_name_resolving_privately(dns: Dns) -> None:
    # End to end through the HTTP client: the refusal surfaces as a poison result, no request made.
    resolver, lookups = dns("10.1.2.3")
    job = make_job(callback_url="http://hooks.example:8080/cb")
    client = CallbackClient(Settings(database_url="postgresql://x@127.0.0.1:1/x"), resolver=resolver)
    try:
        result = await client.send(job)
    finally:
        await client.close()
    assert lookups == [("hooks.example", 8080)]
    assert result.delivered is False
    assert result.status_code is None
    assert result.permanent and result.poison and result.refused
    assert result.error is not None
    assert result.error.startswith("refused: hooks.example resolves to 10.1.2.3")


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.1", "127.000.000.001", "2852039166"])
def test_numeric_hosts_in_non_standard_forms_are_refused(host: str) -> None:
    with pytest.raises(CallbackRefused, match="non-standard form"):
        check_url(f"http://{host}:8080/cb", ())
