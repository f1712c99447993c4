"""Address classification of the network guard (pure): every range delivery.md names."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.delivery.netguard import NetPolicy, classify, embedded_ipv4
from contactsync.errors import BlockedAddressError, ConfigError
from support import examples

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback (IPv4 embedded"),
    ("::ffff:10.0.0.1", "private (RFC 1918) (IPv4 embedded"),
    ("::ffff:169.254.169.254", "link-local (IPv4 embedded"),
    ("::127.0.0.1", "loopback (IPv4 embedded"),
    ("::10.1.2.3", "private (RFC 1918) (IPv4 embedded"),
    ("64:ff9b::a9fe:a9fe", "link-local (IPv4 embedded"),
    ("64:ff9b::7f00:1", "loopback (IPv4 embedded"),
    ("2002:7f00:1::", "loopback (IPv4 embedded"),
    ("2002:a9fe:a9fe::1", "link-local (IPv4 embedded"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("64:ff9b:1::1", "local NAT64"),
    ("2001:db8::1", "reserved"),
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_ranges(address: str, reason: str) -> None:
    found = classify(ipaddress.ip_address(address))
    assert found is not None
    assert found[0].startswith(reason)
    with pytest.raises(BlockedAddressError, match="refusing to connect"):
        NetPolicy().check_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None
    NetPolicy().check_address(address)


@pytest.mark.parametrize(("address", "_reason"), BLOCKED)
def test_allow_private_networks_opens_private_ranges_only(address: str, _reason: str) -> None:
    found = classify(ipaddress.ip_address(address))
    assert found is not None
    policy = NetPolicy(allow_private_networks=True)
    if found[1]:
        policy.check_address(address)
    else:
        with pytest.raises(BlockedAddressError):
            policy.check_address(address)


def test_cidr_allow_list_opens_exactly_its_networks() -> None:
    policy = NetPolicy(allowed_cidrs=["10.1.0.0/16", "::1/128"])
    policy.check_address("10.1.2.3")
    policy.check_address("::ffff:10.1.2.3")  # the embedded address is what gets connected to
    policy.check_address("::1")
    for refused in ("10.2.0.1", "127.0.0.1", "169.254.169.254"):
        with pytest.raises(BlockedAddressError):
            policy.check_address(refused)


def test_bad_cidr_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="allowed_cidrs"):
        NetPolicy(allowed_cidrs=["10.0.0.0/33"])


def test_hostnames_are_not_addresses() -> None:
    with pytest.raises(BlockedAddressError, match="not an IP address"):
        NetPolicy().check_address("localhost")


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "http:///path"])
def test_only_http_and_https_urls(url: str) -> None:
    with pytest.raises(BlockedAddressError):
        NetPolicy().check_url(url)


def test_http_and_https_urls_pass_the_scheme_check() -> None:
    assert NetPolicy().check_url("https://example.com/x?y=1").host == "example.com"
    assert NetPolicy().check_url("http://example.com:8080/").port == 8080


ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


def _wrappings(inner: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    value = int(inner)
    return [
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address(value) if value > 1 else ipaddress.IPv6Address((0xFFFF << 32) | value),
        ipaddress.IPv6Address((0x64FF9B << 96) | value),  # 64:ff9b::/96
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),  # 2002:aabb:ccdd::/48
    ]


@settings(max_examples=examples(ci=2000))
@given(inner=ipv4)
def test_ipv4_embedded_in_ipv6_is_judged_like_the_ipv4_address(inner: ipaddress.IPv4Address) -> None:
    verdict = classify(inner)
    for outer in _wrappings(inner):
        assert embedded_ipv4(outer) == inner
        wrapped = classify(outer)
        assert (wrapped is None) == (verdict is None), (inner, outer)
        if verdict is not None and wrapped is not None:
            assert wrapped[1] == verdict[1]


@settings(max_examples=examples(ci=2000))
@given(address=st.one_of(ipv4, st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)))
def test_nothing_non_global_slips_through(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if classify(address) is None:
        target = address
        if isinstance(address, ipaddress.IPv6Address):
            target = embedded_ipv4(address) or address
        assert target.is_global
        assert not target.is_multicast
