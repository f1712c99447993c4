"""SSRF: real aiohttp requests through the guarded connector to servers on 127.0.0.1 and [::1].

Addresses outside loopback are never contacted: the connector gets a socket factory that
records every connection the guard lets through and refuses to open sockets to anything but
loopback, so "refused before connecting" is observed, not assumed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from contactsync.delivery.attempt import send
from contactsync.delivery.netguard import NetPolicy, create_connector
from contactsync.errors import BlockedAddressError


class Recorder:
    """Socket factory that records every destination and only ever opens loopback sockets."""

    def __init__(self) -> None:
        self.destinations: list[str] = []

    def __call__(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _canon, sockaddr = addr_info
        self.destinations.append(sockaddr[0])
        address = ipaddress.ip_address(sockaddr[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_loopback:
            raise OSError(f"test harness refuses to contact {sockaddr[0]}")
        return socket.socket(family=family, type=type_, proto=proto)


@asynccontextmanager
async def servers() -> AsyncIterator[tuple[int, int, list[str]]]:
    """An app on 127.0.0.1 and one on [::1]; yields both ports and the list of paths hit."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    v4 = web.TCPSite(runner, "127.0.0.1", 0)
    v6 = web.TCPSite(runner, "::1", 0)
    await v4.start()
    await v6.start()
    port4 = v4._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    port6 = v6._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port4, port6, hits
    finally:
        await runner.cleanup()


async def _get(policy: NetPolicy, recorder: Recorder, url: str) -> int:
    async with aiohttp.ClientSession(connector=create_connector(policy, socket_factory=recorder)) as session:
        policy.check_url(url)
        async with session.get(url, allow_redirects=False) as response:
            return response.status


def run(coro_fn: Callable[[int, int, list[str]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with servers() as (port4, port6, hits):
            await coro_fn(port4, port6, hits)

    asyncio.run(main())


LOOPBACK_URLS = [
    "http://127.0.0.1:{p4}/a",
    "http://localhost:{p4}/a",
    "http://[::ffff:127.0.0.1]:{p4}/a",
    "http://[::1]:{p6}/a",
]


@pytest.mark.parametrize("template", LOOPBACK_URLS)
def test_loopback_is_refused_by_default(template: str) -> None:
    async def check(port4: int, port6: int, hits: list[str]) -> None:
        recorder = Recorder()
        with pytest.raises(BlockedAddressError, match="loopback"):
            await _get(NetPolicy(), recorder, template.format(p4=port4, p6=port6))
        assert recorder.destinations == []
        assert hits == []

    run(check)


@pytest.mark.parametrize("template", LOOPBACK_URLS)
@pytest.mark.parametrize(
    "policy",
    [NetPolicy(allow_private_networks=True), NetPolicy(allowed_cidrs=["127.0.0.0/8", "::1/128"])],
    ids=["allow_private_networks", "allowed_cidrs"],
)
def test_loopback_is_allowed_when_the_settings_say_so(template: str, policy: NetPolicy) -> None:
    async def check(port4: int, port6: int, hits: list[str]) -> None:
        recorder = Recorder()
        assert await _get(policy, recorder, template.format(p4=port4, p6=port6)) == 200
        assert hits == ["/a"]
        assert len(recorder.destinations) >= 1

    run(check)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://10.255.1.2:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a00:1]/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
    ],
)
def test_internal_addresses_are_refused_before_connecting(url: str) -> None:
    async def check(port4: int, port6: int, hits: list[str]) -> None:
        recorder = Recorder()
        with pytest.raises(BlockedAddressError):
            await _get(NetPolicy(), recorder, url)
        assert recorder.destinations == []

    run(check)


@pytest.mark.parametrize("url", ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/"])
def test_internal_addresses_pass_the_guard_when_allowed(url: str) -> None:
    """With the setting on, the guard lets the connection through (the harness then stops it)."""

    async def check(port4: int, port6: int, hits: list[str]) -> None:
        for policy in (
            NetPolicy(allow_private_networks=True),
            NetPolicy(allowed_cidrs=["10.0.0.0/8", "169.254.0.0/16"]),
        ):
            recorder = Recorder()
            with pytest.raises(aiohttp.ClientConnectorError):
                await _get(policy, recorder, url)
            assert recorder.destinations == [url.split("/")[2]]

    run(check)


def test_a_redirect_to_an_internal_address_is_not_followed() -> None:
    async def check(port4: int, port6: int, hits: list[str]) -> None:
        recorder = Recorder()
        policy = NetPolicy(allowed_cidrs=["127.0.0.1/32"])
        async with aiohttp.ClientSession(
            connector=create_connector(policy, socket_factory=recorder)
        ) as session:
            result = await send(
                session,
                method="POST",
                url=f"http://127.0.0.1:{port4}/redirect",
                headers={},
                body=b"x=1",
                policy=policy,
            )
        assert result.status == 302
        assert result.outcome.headers["location"] == "http://169.254.169.254/latest/meta-data/"
        assert hits == ["/redirect"]
        assert recorder.destinations == ["127.0.0.1"]

    run(check)


def test_send_reports_a_blocked_address_as_an_outcome() -> None:
    async def check(port4: int, port6: int, hits: list[str]) -> None:
        recorder = Recorder()
        policy = NetPolicy()
        async with aiohttp.ClientSession(
            connector=create_connector(policy, socket_factory=recorder)
        ) as session:
            for url in (f"http://localhost:{port4}/", "http://169.254.169.254/", "file:///etc/passwd"):
                result = await send(session, method="GET", url=url, headers={}, body=None, policy=policy)
                assert result.status is None
                assert result.error == "blocked", result.detail
        assert recorder.destinations == []
        assert hits == []

    run(check)
