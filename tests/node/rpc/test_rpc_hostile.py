"""Hostile RPC clients over real sockets: slowloris, connection floods, slow bodies,
aborted requests and DNS rebinding (issue 15, item 12)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.config import parse_config, render_config
from node.rpc.connections import ConnectionLimits
from node.rpc.hosts import HostPolicy, host_name
from node.rpc.server import BODY_TIMEOUT, HOSTS, RPCServer
from tests.helpers import wait_for
from tests.node.nodekit import RunningNode, running_node

HEADER_TIMEOUT = 0.6
LIMITS = ConnectionLimits(
    max_connections=24, max_per_ip=16, header_timeout=HEADER_TIMEOUT, idle_timeout=1.0
)


@contextlib.asynccontextmanager
async def guarded(node: RunningNode, **kw: Any) -> AsyncIterator[RPCServer]:
    server = RPCServer(node.view, "127.0.0.1", 0, limits=LIMITS, body_timeout=0.6, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(url + "/status", headers=headers) as r,
    ):
        return r.status, await r.json()


class Slowloris:
    """One connection that sends a request head a byte at a time and never ends it."""

    def __init__(self) -> None:
        self.closed_at: float | None = None
        self.opened_at: float | None = None

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.opened_at = time.monotonic()
        try:
            writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while True:
                writer.write(b"X")
                await writer.drain()
                try:
                    # Anything (EOF included) from the server ends the attack.
                    await asyncio.wait_for(reader.read(1024), 0.1)
                    break
                except TimeoutError:
                    continue
        except ConnectionError:
            pass
        finally:
            self.closed_at = time.monotonic()
            writer.close()


async def test_slowloris_is_closed_after_the_header_timeout_and_honest_requests_answered(
    node: RunningNode,
) -> None:
    async with guarded(node) as server:
        attackers = [Slowloris() for _ in range(LIMITS.max_per_ip)]
        tasks = [asyncio.create_task(a.run(server.port)) for a in attackers]
        try:
            await wait_for(lambda: all(a.opened_at for a in attackers), 5, "slowloris connected")
            # While the attack runs (every slot of 127.0.0.1 is taken), honest clients on
            # the same address keep getting answers: each takes the place of the
            # connection that has waited longest for its request head.
            for _ in range(5):
                status, st = await _status(server.url)
                assert status == 200 and st["latest_height"] == 3
            await asyncio.wait_for(asyncio.gather(*tasks), 5 + 2 * HEADER_TIMEOUT)
        finally:
            for t in tasks:
                t.cancel()
    for a in attackers:
        assert a.closed_at is not None and a.opened_at is not None
        # Closed by the deadline (or evicted by an honest newcomer), not held for minutes.
        assert a.closed_at - a.opened_at < HEADER_TIMEOUT + 2.0
    assert server.guard.counters.get("header_timeout", 0) + server.guard.counters.get(
        "evicted_per_ip", 0
    ) >= len(attackers)


async def test_connection_flood_holds_at_most_the_per_ip_cap(node: RunningNode) -> None:
    async with guarded(node) as server:
        socks = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(60)]
        try:
            await wait_for(
                lambda: len(server.guard) <= LIMITS.max_per_ip, 5, "flood trimmed to the cap"
            )
            assert len(server.guard) == LIMITS.max_per_ip
            status, _ = await _status(server.url)
            assert status == 200
            # The server closed the evicted sockets on its side: they read EOF.
            eofs = 0
            for reader, _w in socks[: 60 - LIMITS.max_per_ip]:
                data = await asyncio.wait_for(reader.read(100), 5)
                eofs += data == b""
            assert eofs == 60 - LIMITS.max_per_ip
        finally:
            for _r, w in socks:
                w.close()


async def test_busy_connections_are_not_evicted_and_the_newcomer_gets_503(
    node: RunningNode,
) -> None:
    limits = ConnectionLimits(max_connections=4, max_per_ip=2, header_timeout=5, idle_timeout=5)
    server = RPCServer(node.view, "127.0.0.1", 0, limits=limits, body_timeout=5)
    await server.start()
    socks = []
    try:
        # Two requests whose bodies are still coming: busy, so no newcomer may evict them.
        for _ in range(2):
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(
                b"POST /txs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\nab"
            )
            socks.append((r, w))
        await wait_for(lambda: server.guard.busy == 2, 5, "both requests being served")
        status, err = await _status(server.url)
        assert status == 503 and err["error"]["code"] == "too_many_connections"
    finally:
        for _r, w in socks:
            w.close()
        await server.close()


async def test_a_body_that_does_not_arrive_in_time_gets_408(node: RunningNode) -> None:
    async with guarded(node) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /txs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nabc"
        )
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 3
        writer.close()


async def test_an_aborted_request_is_one_log_line_without_traceback(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with guarded(node) as server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /txs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\nabc"
        )
        await writer.drain()
        await wait_for(lambda: server.guard.busy == 1, 5, "the request being served")
        writer.transport.abort()
        await wait_for(lambda: any("aborted" in r.message for r in caplog.records), 5, "log")
        # The server still answers afterwards.
        status, _ = await _status(server.url)
        assert status == 200
    aborted = [r for r in caplog.records if "aborted" in r.getMessage()]
    assert len(aborted) == 1 and aborted[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_malformed_request_is_one_log_line_without_traceback(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for junk in (b"GET /status HTTP/9\r\n\r\n", b"GET /status HTTP/1.1\r\nX-A" + b"a" * 9000):
        reader, writer = await asyncio.open_connection("127.0.0.1", node.server.port)
        writer.write(junk + b"\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(1000), 5)
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        writer.close()
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in lines)
    assert all("\n" not in r.getMessage() for r in lines)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:26657",
        # DNS rebinding: the attacker's name now resolves to 127.0.0.1, so the browser
        # connects to the node but still names the attacker's host.
        "rebind.attacker.example:{port}",
        "127.0.0.1.attacker.example",
        "localhost.attacker.example:{port}",
    ],
)
async def test_a_foreign_host_header_is_refused(node: RunningNode, host: str) -> None:
    # The node fixture's server has the default settings: the check is on by default.
    h = host.format(port=node.server.port)
    headers = {"Host": h, "Origin": f"http://{h}"}
    status, err = await _status(node.url, headers)
    assert status == 403 and err["error"]["code"] == "host_not_allowed"
    async with aiohttp.ClientSession() as s:
        async with s.post(
            node.url + "/txs",
            data=b"\x00",
            headers={**headers, "Content-Type": "application/octet-stream"},
        ) as r:
            assert r.status == 403
        # The server is still there for the right name.
        async with s.get(node.url + "/status") as r:
            assert r.status == 200


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.", "[::1]:{port}", "node.lan"]
)
async def test_ip_literals_localhost_and_configured_names_are_answered(
    node: RunningNode, host: str
) -> None:
    async with guarded(node, allowed_hosts=("Node.LAN",)) as server:
        status, st = await _status(server.url, {"Host": host.format(port=server.port)})
        assert status == 200 and json.dumps(st)


def test_host_policy() -> None:
    p = HostPolicy(["0.0.0.0", "rpc.example.org"])
    assert host_name("[::1]:80") == "::1" and host_name("Example.COM.:1") == "example.com"
    assert p.allows(None)  # HTTP/1.0 without Host; browsers always send one
    for ok in ("10.1.2.3:5", "::1", "rpc.example.org:443", "a.localhost"):
        assert p.allows(ok), ok
    for bad in ("", ":80", "example.org", "rpc.example.org.evil", "localhost.evil"):
        assert not p.allows(bad), bad
    assert HostPolicy(["*"]).allows("anything.example")


def test_the_rpc_budget_is_read_from_config_toml(node: RunningNode) -> None:
    cfg = parse_config(
        "[rpc]\nlisten = '0.0.0.0:0'\nheader_timeout = 3\nidle_timeout = 7\nbody_timeout = 9\n"
        "max_connections = 100\nmax_connections_per_ip = 10\nallowed_hosts = ['rpc.example']\n"
    )
    assert parse_config(render_config(cfg)) == cfg
    server = RPCServer.from_config(node.view, cfg.rpc)
    assert server.guard.limits == ConnectionLimits(
        max_connections=100, max_per_ip=10, header_timeout=3, idle_timeout=7
    )
    assert server.app[BODY_TIMEOUT] == 9
    hosts = server.app[HOSTS]
    assert hosts.allows("rpc.example:443") and not hosts.allows("other.example")


def test_the_guard_works_on_uvloop(tmp_path: Path) -> None:
    """The node serves RPC on uvloop, whose transports are not asyncio.Transport."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async with running_node(tmp_path) as node, guarded(node) as server:
            slow = Slowloris()
            task = asyncio.create_task(slow.run(server.port))
            status, _ = await _status(server.url)
            assert status == 200
            await asyncio.wait_for(task, 5)
            assert server.guard.counters.get("header_timeout") == 1

    uvloop.run(scenario())
