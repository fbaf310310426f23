"""Raw stream throughput between two hosts in separate processes on 127.0.0.1.

A sink process runs a Host with a handler that counts bytes and replies with the total
once the writer half-closes; the main process dials it and writes ``--count`` messages of
``--size`` bytes on one stream (Noise + yamux, exactly what GossipSub rides on). Reports
MB/s (10^6 bytes per second) per run and the median.

    python scripts/bench_stream.py --runs 3 --count 1000 --size 100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from node.p2p.connection import Stream
from node.p2p.host import Host, HostConfig, install_uvloop
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from node.p2p.yamux import YamuxConfig

PROTOCOL = "/bench/sink/1"
ECHO = "/bench/echo/1"


async def sink(stream: Stream) -> None:
    total = 0
    while data := await stream.read(1 << 20):
        total += len(data)
    await stream.write(str(total).encode())


async def echo(stream: Stream) -> None:
    while data := await stream.read(1 << 20):
        await stream.write(data)


async def serve(window: int) -> None:
    host = Host(
        IdentityKey.generate(),
        listen=[Multiaddr.parse("/ip4/127.0.0.1/tcp/0")],
        config=HostConfig(yamux=YamuxConfig(window=window)),
    )
    host.set_stream_handler(PROTOCOL, sink)
    host.set_stream_handler(ECHO, echo)
    async with host:
        print(host.listen_addrs[0].with_peer_id(host.peer_id), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def run_client(addr: str, count: int, size: int, runs: int, window: int) -> list[float]:
    host = Host(IdentityKey.generate(), config=HostConfig(yamux=YamuxConfig(window=window)))
    results = []
    async with host:
        peer = await host.connect(Multiaddr.parse(addr))
        payload = b"\xab" * size
        for _ in range(runs):
            stream = await host.new_stream(peer, [PROTOCOL])
            start = time.perf_counter()
            for _ in range(count):
                await stream.write(payload)
            await stream.close()
            reply = await stream.read()
            elapsed = time.perf_counter() - start
            assert int(reply) == count * size, reply
            results.append(count * size / elapsed / 1e6)
            print(f"run: {results[-1]:.1f} MB/s ({elapsed:.2f} s)", flush=True)
        stream = await host.new_stream(peer, [ECHO])
        small = b"\x5a" * 1024
        rtts = []
        for _ in range(2000):
            start = time.perf_counter()
            await stream.write(small)
            await stream.readexactly(len(small))
            rtts.append(time.perf_counter() - start)
        await stream.close()
        rtts.sort()
        p50, p99 = rtts[len(rtts) // 2] * 1e3, rtts[int(len(rtts) * 0.99)] * 1e3
        print(f"1 KiB echo round trip, 2000 samples: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=YamuxConfig().window)
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    uv = False if args.no_uvloop else install_uvloop()
    if args.serve:
        asyncio.run(serve(args.window))
        return
    cmd = [sys.executable, __file__, "--serve", "--window", str(args.window)]
    if args.no_uvloop:
        cmd.append("--no-uvloop")
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        addr = server.stdout.readline().strip()
        results = asyncio.run(run_client(addr, args.count, args.size, args.runs, args.window))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(
        f"raw stream throughput, {args.count} x {args.size} B writes, uvloop={uv}, "
        f"window={args.window}: median {statistics.median(results):.1f} MB/s "
        f"(runs: {', '.join(f'{r:.1f}' for r in results)})"
    )


if __name__ == "__main__":
    main()
