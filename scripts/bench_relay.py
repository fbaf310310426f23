#!/usr/bin/env python3
"""CPU a gossip relay spends per message on its data path, in one process.

What relay B of ``bench_gossip.py`` does for every message, without sockets, event loop
or scheduler: receive A's wire bytes in 64 KB reads (Noise, yamux, frame parser, RPC
decoder, StrictSign verification, the message kept as the message cache keeps it), then
forward the message (RPC encoding, yamux, Noise). Process CPU time per message is far
steadier than the three-process line on a shared machine, which makes it the measure for
a data-path change that is smaller than the line's run-to-run spread.

    python scripts/bench_relay.py                       # 2,000 messages of 100 KB
    python scripts/bench_relay.py --size 8388608 --count 12
"""

from __future__ import annotations

import argparse
import time

from node.p2p import yamux
from node.p2p.gossipsub.frames import FrameParser
from node.p2p.gossipsub.messages import RPC, Message
from node.p2p.gossipsub.signing import IdentitySigner, verify_message
from node.p2p.gossipsub.wire import decode_rpc, encode_rpc_framed
from node.p2p.noise import NoiseSession
from node.p2p.peer_id import IdentityKey

READ = 64 * 1024
LIMIT = 64 * 1024 * 1024
CACHE = 500


def secure_pair() -> tuple[NoiseSession, NoiseSession]:
    i = NoiseSession(IdentityKey.generate(), initiator=True)
    r = NoiseSession(IdentityKey.generate(), initiator=False)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    return i, r


def mux_pair() -> tuple[yamux.YamuxSession, yamux.YamuxSession, int]:
    """A client and server session with one open stream whose windows never run out."""
    cfg = yamux.YamuxConfig(window=yamux.MAX_WINDOW_VALUE)
    c = yamux.YamuxSession(is_client=True, config=cfg)
    s = yamux.YamuxSession(is_client=False, config=cfg)
    sid = c.open_stream()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    return c, s, sid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    signer = IdentitySigner(IdentityKey.from_seed(b"\x05" * 32))
    a_noise, b_in = secure_pair()
    b_out, _ = secure_pair()
    a_mux, b_mux, a_sid = mux_pair()
    b_fwd, _, b_sid = mux_pair()
    wires = []  # what A sends, made before the clock starts
    for k in range(args.count):
        seq = k.to_bytes(8, "big")
        msg = Message("bench", seq + bytes(args.size - 8), from_=signer.author, seqno=seq)
        signer.sign(msg)
        a_mux.send_data(a_sid, encode_rpc_framed(RPC(publish=[msg])))
        wires.append(b"".join(a_noise.encrypt_pieces(a_mux.pieces_to_send())))
    parser = FrameParser(LIMIT)
    cache: list[Message] = []
    t0 = time.process_time()
    for wire in wires:
        view = memoryview(wire)
        for off in range(0, len(wire), READ):
            for ev in b_mux.receive_data(b_in.receive_data(view[off : off + READ])):
                if not isinstance(ev, yamux.StreamData):
                    continue
                for frame in parser.feed(ev.data):
                    rpc = decode_rpc(frame, LIMIT)
                    assert verify_message(rpc.publish[0])
                    cache.append(rpc.publish[0])
                    b_fwd.send_data(b_sid, encode_rpc_framed(RPC(publish=rpc.publish)))
                    b_out.encrypt_pieces(b_fwd.pieces_to_send())
        del cache[:-CACHE]
    per_msg = (time.process_time() - t0) / args.count
    print(f"relay CPU per {args.size}-byte message: {per_msg * 1e3:.3f} ms ({args.count} messages)")


if __name__ == "__main__":
    main()
