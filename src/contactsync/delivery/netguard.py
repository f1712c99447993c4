"""The network guard: customer-supplied URLs must not reach the platform's own network (SSRF).

Every address a hostname resolves to is checked when the connection is made, inside the
connector, and the connection goes to exactly the addresses that passed — there is no second
lookup an attacker's DNS could answer differently (no rebinding window). IP literals go
through the same check, including IPv4 hidden inside IPv6 (mapped, compatible, NAT64, 6to4).
Redirects are never followed by the dispatcher, so a public URL cannot bounce inward.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from yarl import URL

from contactsync.errors import BlockedAddressError, ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# (networks, reason, private): "private" ranges open up with allow_private_networks; the rest
# (unspecified, multicast, broadcast) are never a sensible unicast destination.
_V4_RULES: tuple[tuple[tuple[IPNetwork, ...], str, bool], ...] = (
    (_nets("0.0.0.0/8"), "unspecified", False),
    (_nets("127.0.0.0/8"), "loopback", True),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "private (RFC 1918)", True),
    (_nets("169.254.0.0/16"), "link-local", True),
    (_nets("100.64.0.0/10"), "carrier-grade NAT", True),
    (_nets("224.0.0.0/4"), "multicast", False),
    (_nets("255.255.255.255/32"), "broadcast", False),
    (
        _nets(
            "192.0.0.0/24",
            "192.0.2.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
        ),
        "reserved",
        True,
    ),
)
_V6_RULES: tuple[tuple[tuple[IPNetwork, ...], str, bool], ...] = (
    (_nets("fc00::/7"), "unique-local", True),
    (_nets("fe80::/10", "fec0::/10"), "link-local", True),
    (_nets("ff00::/8"), "multicast", False),
    (_nets("2001::/32"), "Teredo (embedded IPv4)", True),
    (_nets("64:ff9b:1::/48"), "local NAT64", True),
    (_nets("100::/64", "2001:db8::/32", "2001:10::/28", "2001:20::/28"), "reserved", True),
)
_V6_LOOPBACK = ipaddress.IPv6Address("::1")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64 or 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _V4_COMPATIBLE or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def classify(address: IPAddress) -> tuple[str, bool] | None:
    """Why ``address`` is not a public unicast address — ``(reason, opened_by_allow_private)`` — or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.packed == bytes(16):
            return "unspecified", False
        if address == _V6_LOOPBACK:
            return "loopback", True
        inner = embedded_ipv4(address)
        if inner is not None:
            found = classify(inner)
            return (f"{found[0]} (IPv4 embedded in IPv6)", found[1]) if found else None
        rules = _V6_RULES
    else:
        rules = _V4_RULES
    for networks, reason, private in rules:
        if any(address in network for network in networks):
            return reason, private
    if not address.is_global:
        return "reserved", True
    return None


@dataclass(frozen=True, slots=True)
class NetPolicy:
    """Which destinations the dispatcher may connect to.

    By default only public unicast addresses. ``allow_private_networks`` opens loopback,
    RFC 1918, link-local, CGNAT, unique-local and reserved ranges (for on-premise receivers);
    ``allowed_cidrs`` opens exactly the listed networks.
    """

    allow_private_networks: bool = False
    allowed_cidrs: Sequence[str] = field(default_factory=tuple)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            networks = tuple(ipaddress.ip_network(c, strict=False) for c in self.allowed_cidrs)
        except ValueError as exc:
            raise ConfigError(f"allowed_cidrs: {exc}") from exc
        object.__setattr__(self, "_networks", networks)

    def _listed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)) is not None:
            candidates.append(inner)
        return any(a in n for a in candidates for n in self._networks if a.version == n.version)

    def check_address(self, host: str) -> None:
        """Raise :class:`BlockedAddressError` unless a connection to IP ``host`` is allowed."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError as exc:
            raise BlockedAddressError(f"{host!r} is not an IP address") from exc
        found = classify(address)
        if found is None or self._listed(address):
            return
        reason, private = found
        if private and self.allow_private_networks:
            return
        raise BlockedAddressError(f"refusing to connect to {address} ({reason})")

    def check_url(self, url: str | URL) -> URL:
        """Refuse URLs the dispatcher never sends to: other schemes, no host, user info."""
        # encoded=True: the URL goes on the wire exactly as rendered (and as a GET signature covers it)
        parsed = _parsed(url) if isinstance(url, str) else url
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise BlockedAddressError(f"refusing scheme {parsed.scheme!r}: only http and https are sent")
        if not parsed.raw_host:
            raise BlockedAddressError(f"URL {str(parsed)!r} has no host")
        return parsed


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> URL:
    """URLs repeat (an action sends to one URL): parse each once (a ``URL`` is immutable)."""
    return URL(url, encoded=True)


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that connects only to addresses the policy allows, pinned at resolve time.

    aiohttp connects to exactly the list :meth:`_resolve_host` returns, so filtering that list
    (IP literals included — they never reach a resolver) is the connect-time check.
    """

    def __init__(self, *, policy: NetPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[ResolveResult]:
        results = await super()._resolve_host(host, port, traces=traces)
        allowed, refusals = filter_results(self.policy, results)
        if not allowed:
            raise BlockedAddressError(f"{host}: " + "; ".join(refusals or ["no address"]))
        return allowed


def filter_results(
    policy: NetPolicy, results: Iterable[ResolveResult]
) -> tuple[list[ResolveResult], list[str]]:
    """Split resolved addresses into the allowed ones and the reasons the others were refused."""
    allowed: list[ResolveResult] = []
    refusals: list[str] = []
    for result in results:
        try:
            policy.check_address(result["host"])
        except BlockedAddressError as exc:
            refusals.append(str(exc))
        else:
            allowed.append(result)
    return allowed, refusals


def create_connector(
    policy: NetPolicy,
    *,
    limit: int = 200,
    limit_per_host: int = 0,
    dns_cache_ttl_s: int = 10,
    **kwargs: Any,
) -> GuardedConnector:
    """The dispatcher's shared connection pool, guarded by ``policy``."""
    return GuardedConnector(
        policy=policy, limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=dns_cache_ttl_s, **kwargs
    )
