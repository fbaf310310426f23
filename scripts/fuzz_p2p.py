"""Long fuzzing session for every transport decoder, and live floods against a host.

CI runs short hypothesis fuzz tests (tests/node/p2p/); this script runs the same kind
of targets for longer. Any exception other than the decoder's own typed error is a bug:
the script prints the failing input and exits non-zero.

``--floods N`` then runs N seeded rounds of live attacks on an in-process host over real
sockets, each bounded in count and time: a handshake flood of idle sockets (an honest
dialer must still get in within 2 s), many streams nobody reads (the victim connection's
buffer must stay within its per-connection budget), and many connections under one peer
ID (the victim keeps at most its per-peer cap). A broken bound is a finding.

    python scripts/fuzz_p2p.py --examples 20000            # per target
    python scripts/fuzz_p2p.py --examples 5000 --only yamux
    python scripts/fuzz_p2p.py --examples 0 --floods 20 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import sys
import time
from collections.abc import Awaitable, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.p2p import multistream as ms
from node.p2p import ping, yamux
from node.p2p.connection import Stream
from node.p2p.host import Host, HostConfig
from node.p2p.identify import IdentifyError, parse_message
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.noise import NoiseError, NoiseSession
from node.p2p.peer_id import IdentityKey, PeerID, PeerIDError, decode_public_key
from node.p2p.peer_record import PeerRecordError, open_record

KEY_A = IdentityKey.from_seed(bytes(32))
KEY_B = IdentityKey.from_seed(b"\x01" * 32)
chunks = st.lists(st.binary(max_size=200), max_size=12)


def target_multistream(data: list[bytes]) -> None:
    lst = ms.Listener(lambda p: p == "/x")
    d = ms.Dialer(["/x", "/y"])
    for side in (lst, d):
        with contextlib.suppress(ms.MultistreamError):
            for c in data:
                side.receive_data(c)


def target_noise_handshake(data: list[bytes]) -> None:
    for initiator in (False, True):
        s = NoiseSession(KEY_A, initiator=initiator)
        with contextlib.suppress(NoiseError):
            for c in data:
                s.receive_data(c)


def target_noise_transport(data: list[bytes]) -> None:
    i = NoiseSession(KEY_A, initiator=True)
    r = NoiseSession(KEY_B, initiator=False)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    with contextlib.suppress(NoiseError):
        for c in data:
            assert r.receive_data(c) == b""


frames = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, 5),
        st.integers(0, 15),
        st.integers(0, 9),
        st.one_of(st.integers(0, 70000), st.integers(0, 2**32 - 1)),
    ),
    max_size=20,
)


def target_yamux(items: list[tuple[int, int, int, int, int]]) -> None:
    s = yamux.YamuxSession(is_client=False, config=yamux.YamuxConfig(window=256 * 1024))
    with contextlib.suppress(yamux.YamuxError):
        for version, typ, flags, sid, length in items:
            body = b""
            if typ == yamux.TYPE_DATA:
                length = min(length, 70000)
                body = b"d" * length
            s.receive_data(yamux.HEADER.pack(version, typ, flags, sid, length) + body)
            for sid_open in list(s._streams)[:2]:
                s.consumed(sid_open, 1000)
            s.data_to_send()
    assert s.stream_count <= s.config.max_streams


def target_yamux_bytes(data: list[bytes]) -> None:
    s = yamux.YamuxSession(is_client=True)
    with contextlib.suppress(yamux.YamuxError):
        for c in data:
            s.receive_data(c)


def target_multiaddr(data: bytes) -> None:
    with contextlib.suppress(MultiaddrError):
        ma = Multiaddr.from_bytes(data)
        assert Multiaddr.parse(str(ma)) == ma


def target_multiaddr_text(text: str) -> None:
    with contextlib.suppress(MultiaddrError):
        ma = Multiaddr.parse(text)
        assert Multiaddr.from_bytes(ma.to_bytes()) == ma


def target_peer_id(data: bytes) -> None:
    with contextlib.suppress(PeerIDError):
        pid = PeerID.from_bytes(data)
        assert PeerID.from_base58(pid.to_base58()) == pid
    with contextlib.suppress(PeerIDError):
        decode_public_key(data)


def target_peer_record(data: bytes) -> None:
    with contextlib.suppress(PeerRecordError):
        open_record(data)


def target_identify(data: bytes) -> None:
    with contextlib.suppress(IdentifyError):
        parse_message(data, KEY_A.peer_id)


TARGETS: dict[str, tuple[Callable[..., None], st.SearchStrategy[object]]] = {
    "multistream": (target_multistream, chunks),
    "noise_handshake": (target_noise_handshake, chunks),
    "noise_transport": (target_noise_transport, chunks),
    "yamux": (target_yamux, frames),
    "yamux_bytes": (target_yamux_bytes, chunks),
    "multiaddr": (target_multiaddr, st.binary(max_size=200)),
    "multiaddr_text": (
        target_multiaddr_text,
        st.text(alphabet="/ip46dnstcpuq-v12345.:abfz", max_size=80),
    ),
    "peer_id": (target_peer_id, st.binary(max_size=80)),
    "identify": (target_identify, st.binary(max_size=400)),
    "peer_record": (target_peer_record, st.binary(max_size=400)),
}


# --------------------------------------------------------------------------- live floods

LOCAL = Multiaddr.parse("/ip4/127.0.0.1/tcp/0")
HOLD = "/hold/1"
FLOOD_TIMEOUT = 60.0  # seconds one flood round may take before it is a finding itself


async def _hold(stream: Stream) -> None:
    await asyncio.Event().wait()  # never reads: only the host's limits bound what it keeps


async def _victim(config: HostConfig) -> Host:
    host = Host(IdentityKey.generate(), listen=[LOCAL], config=config)
    host.set_stream_handler(HOLD, _hold)
    await host.start()
    return host


def _dial(host: Host) -> Multiaddr:
    return host.listen_addrs[0].with_peer_id(host.peer_id)


async def flood_handshakes(rng: random.Random) -> list[str]:
    """Idle sockets from one to eight loopback IPs, more than the pool holds."""
    pool = rng.randint(8, 64)
    cfg = HostConfig(max_pending_upgrades=pool, max_pending_upgrades_per_ip=rng.randint(2, pool))
    victim = await _victim(cfg)
    ips = [f"127.0.0.{k}" for k in range(1, rng.randint(2, 9))]
    h, p = victim.listen_addrs[0].tcp_endpoint()
    writers: list[asyncio.StreamWriter] = []
    findings: list[str] = []
    honest = Host(IdentityKey.generate())
    try:
        for _ in range(rng.randint(pool, 2 * pool)):
            _, w = await asyncio.open_connection(h, p, local_addr=(rng.choice(ips), 0))
            writers.append(w)
            if victim.pending_upgrades > pool:
                findings.append(f"{victim.pending_upgrades} pending upgrades, pool {pool}")
        await honest.start()
        try:
            async with asyncio.timeout(2):
                await honest.connect(_dial(victim))
        except Exception as e:
            findings.append(f"honest dialer kept out by {len(writers)} idle sockets: {e!r}")
    finally:
        for w in writers:
            w.close()
        await honest.close()
        await victim.close()
    return findings


async def flood_unread_streams(rng: random.Random) -> list[str]:
    """Many streams to a handler that never reads, each sent up to 2 MiB."""
    victim = await _victim(HostConfig())
    attacker = Host(IdentityKey.generate())
    await attacker.start()
    findings: list[str] = []
    writers: list[asyncio.Task[None]] = []
    try:
        peer = await attacker.connect(_dial(victim))
        count = rng.randint(1, 100)
        opened = await asyncio.gather(
            *(attacker.new_stream(peer, [HOLD]) for _ in range(count)), return_exceptions=True
        )
        streams = [st for st in opened if isinstance(st, Stream)]
        cfg = victim.config.yamux
        if len(streams) > cfg.max_inbound_streams:
            findings.append(f"{len(streams)} inbound streams kept, cap {cfg.max_inbound_streams}")

        async def send(st: Stream, n: int) -> None:
            with contextlib.suppress(ConnectionError):
                for k in range(0, n, 64 << 10):
                    await st.write(bytes(min(64 << 10, n - k)))

        writers = [asyncio.create_task(send(st, rng.randint(1, 2 << 20))) for st in streams]
        conn = attacker.connections(peer)[0]

        def stalled_or_done(w: asyncio.Task[None], st: Stream) -> bool:
            return w.done() or st.is_reset or conn.yamux.send_window(st.sid) == 0

        deadline = time.monotonic() + 20
        while not all(map(stalled_or_done, writers, streams)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await conn.ping(10)  # ordered behind the data: the victim has taken it all in
        buffered = sum(
            st._buffered for c in victim.connections(attacker.peer_id) for st in c.streams.values()
        )
        bound = min(cfg.max_buffered, len(streams) * yamux.INITIAL_WINDOW)
        if buffered > bound:
            findings.append(f"{buffered} bytes buffered unread, bound {bound}")
        if not await ping.ping(attacker, peer):
            findings.append("the victim stopped answering pings")
    finally:
        for w in writers:
            w.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        await attacker.close()
        await victim.close()
    return findings


async def flood_connections_per_peer(rng: random.Random) -> list[str]:
    """Many connections under one peer ID, from an attacker that keeps all of its own."""
    victim = await _victim(HostConfig(max_connections_per_peer=rng.randint(1, 4)))
    attacker = Host(IdentityKey.generate(), config=HostConfig(max_connections_per_peer=1000))
    await attacker.start()
    findings: list[str] = []
    try:
        plain = victim.listen_addrs[0]  # no /p2p: every dial is a new connection
        for _ in range(rng.randint(2, 30)):
            with contextlib.suppress(Exception):
                await attacker.connect(plain)
        cap = victim.config.max_connections_per_peer
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            live = [c for c in victim.connections(attacker.peer_id) if not c.closed]
            if len(live) <= cap:
                break
            await asyncio.sleep(0.05)
        else:
            findings.append(f"{len(live)} connections kept for one peer ID, cap {cap}")
    finally:
        await attacker.close()
        await victim.close()
    return findings


FLOODS: dict[str, Callable[[random.Random], Awaitable[list[str]]]] = {
    "handshakes": flood_handshakes,
    "unread_streams": flood_unread_streams,
    "connections_per_peer": flood_connections_per_peer,
}


@dataclasses.dataclass
class FloodReport:
    rounds: int = 0
    findings: list[str] = dataclasses.field(default_factory=list)


async def run_floods(rounds: int, seed: int) -> FloodReport:
    """``rounds`` seeded flood rounds, cycling through every kind of flood."""
    report = FloodReport()
    names = sorted(FLOODS)
    for i in range(rounds):
        name = names[i % len(names)]
        rng = random.Random(f"{seed}:{i}")
        try:
            async with asyncio.timeout(FLOOD_TIMEOUT):
                found = await FLOODS[name](rng)
        except Exception as e:
            found = [f"raised {e!r}"]
        report.rounds += 1
        report.findings += [f"{name} (round {i}, seed {seed}): {f}" for f in found]
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=10000, help="examples per target")
    ap.add_argument("--only", choices=sorted(TARGETS), action="append")
    ap.add_argument("--floods", type=int, default=0, help="rounds of live floods")
    ap.add_argument("--seed", type=int, default=0, help="seed of the flood rounds")
    args = ap.parse_args()
    failed = False
    for name in args.only or sorted(TARGETS) if args.examples else ():
        fn, strategy = TARGETS[name]
        test = settings(
            max_examples=args.examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(strategy)(fn))
        start = time.perf_counter()
        try:
            test()
        except Exception as e:
            failed = True
            print(f"{name}: FAILED: {e!r}", flush=True)
            continue
        print(f"{name}: {args.examples} examples ok in {time.perf_counter() - start:.1f} s")
    if args.floods:
        start = time.perf_counter()
        report = asyncio.run(run_floods(args.floods, args.seed))
        for finding in report.findings:
            failed = True
            print(f"flood: FAILED: {finding}", flush=True)
        took = time.perf_counter() - start
        print(f"floods: {report.rounds} rounds, {len(report.findings)} findings in {took:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
