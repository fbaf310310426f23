"""A py-libp2p 0.8.1 reference peer driven by line commands (runs in .interop-venv, trio).

Started as a subprocess by the interop tests (and usable by the GossipSub interop tests
and benchmarks). On start it prints ``peer <base58 id>`` and ``listen <multiaddr>``, then
reads commands from stdin, one per line, and answers on stdout, one line each:

    connect <multiaddr with /p2p/>    -> ok connect <peer> | err connect <reason>
    ping <peer>                       -> ok ping <rtt microseconds> | err ping <reason>
    identify <peer>                   -> ok identify <json> | err identify <reason>
    peers                             -> ok peers <space separated ids>
    subscribe <topic>                 -> ok subscribe <topic>; later: recv <topic> <hex data>
    publish <topic> <hex data>        -> ok publish <topic> | err publish <reason>
    send <peer> <protocol> <nbytes>   -> ok send <reply>: writes nbytes on a new stream,
                                         half-closes, reads the reply until EOF
    quit                              -> exits

The peer also serves ``/interop/echo/1.0.0`` (echoes everything until EOF, then closes).
Options: --port N (default 0), --seed HEX (32-byte identity seed), --gossip (enable
GossipSub /meshsub/1.1.0 + 1.0.0 with StrictSign), --max-msg BYTES.
This file is not imported by the project; it only runs under the interop venv.
"""

from __future__ import annotations

import argparse
import json
import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.host.ping import PingService
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_all(stream) -> bytes:  # type: ignore[no-untyped-def]
    chunks = []
    while True:
        try:
            data = await stream.read(65536)
        except Exception:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", default="")
    ap.add_argument("--gossip", action="store_true")
    ap.add_argument("--max-msg", type=int, default=1 << 20)
    args = ap.parse_args()

    key_pair = create_new_key_pair(bytes.fromhex(args.seed) if args.seed else None)
    listen = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{args.port}")
    host = new_host(key_pair=key_pair, listen_addrs=[listen])
    pubsub = None
    async with host.run(listen_addrs=[listen]), trio.open_nursery() as nursery:
        if args.gossip:
            from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
            from libp2p.pubsub.pubsub import Pubsub

            router = GossipSub(
                protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
                degree=6,
                degree_low=4,
                degree_high=12,
                heartbeat_interval=1,
            )
            pubsub = Pubsub(host, router, strict_signing=True, max_inbound_rpc_size=args.max_msg)
            nursery.start_soon(_run_service, pubsub)
            nursery.start_soon(_run_service, router)
            await pubsub.wait_until_ready()

        host.set_stream_handler(ECHO_PROTOCOL, _echo)
        out(f"peer {host.get_id().to_string()}")
        for addr in host.get_addrs():
            out(f"listen {addr}")

        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buf = b""
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                parts = raw.decode().strip().split()
                if not parts:
                    continue
                if parts[0] == "quit":
                    nursery.cancel_scope.cancel()
                    return
                nursery.start_soon(handle, host, pubsub, nursery, parts)


ECHO_PROTOCOL = "/interop/echo/1.0.0"


async def _echo(stream) -> None:  # type: ignore[no-untyped-def]
    while True:
        try:
            data = await stream.read(65536)
        except Exception:
            break
        if not data:
            break
        await stream.write(data)
    await stream.close()


async def _run_service(service) -> None:  # type: ignore[no-untyped-def]
    async with background_trio_service(service):
        await trio.sleep_forever()


async def _print_subscription(sub, topic: str) -> None:  # type: ignore[no-untyped-def]
    while True:
        msg = await sub.get()
        out(f"recv {topic} {msg.data.hex()}")


async def handle(host, pubsub, nursery, parts: list[str]) -> None:  # type: ignore[no-untyped-def]
    cmd = parts[0]
    try:
        if cmd == "connect":
            info = info_from_p2p_addr(multiaddr.Multiaddr(parts[1]))
            with trio.fail_after(20):
                await host.connect(info)
            out(f"ok connect {info.peer_id.to_string()}")
        elif cmd == "ping":
            with trio.fail_after(20):
                rtts = await PingService(host).ping(ID.from_base58(parts[1]), 3)
            out(f"ok ping {max(rtts)}")
        elif cmd == "identify":
            with trio.fail_after(20):
                stream = await host.new_stream(ID.from_base58(parts[1]), [IDENTIFY_ID])
                data = await read_all(stream)
            msg = parse_identify_response(data)
            info = {
                "agent": msg.agent_version,
                "protocol_version": msg.protocol_version,
                "protocols": list(msg.protocols),
                "listen_addrs": [str(multiaddr.Multiaddr(a)) for a in msg.listen_addrs],
                "observed_addr": str(multiaddr.Multiaddr(msg.observed_addr))
                if msg.observed_addr
                else "",
                "key_matches": ID.from_pubkey(deserialize_public_key(msg.public_key)).to_string()
                == parts[1],
            }
            out(f"ok identify {json.dumps(info)}")
        elif cmd == "send":
            with trio.fail_after(60):
                stream = await host.new_stream(ID.from_base58(parts[1]), [parts[2]])
                chunk = b"\xa5" * 65536
                left = int(parts[3])
                while left > 0:
                    await stream.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
                await stream.close_write()
                reply = await read_all(stream)
            out(f"ok send {reply.decode(errors='replace')}")
        elif cmd == "peers":
            out("ok peers " + " ".join(p.to_string() for p in host.get_connected_peers()))
        elif cmd == "subscribe":
            sub = await pubsub.subscribe(parts[1])
            nursery.start_soon(_print_subscription, sub, parts[1])
            out(f"ok subscribe {parts[1]}")
        elif cmd == "publish":
            await pubsub.publish(parts[1], bytes.fromhex(parts[2]))
            out(f"ok publish {parts[1]}")
        else:
            out(f"err {cmd} unknown command")
    except BaseException as e:  # report every failure as a line; the test decides
        if isinstance(e, trio.Cancelled):
            raise
        out(f"err {cmd} {type(e).__name__}: {str(e)[:200]}".replace("\n", " "))


if __name__ == "__main__":
    trio.run(main)
