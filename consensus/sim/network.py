"""Discrete-event network that drives real engines under delays, loss, partitions,
crashes and Byzantine validators, then checks agreement, validity and termination.

The engine is taken by registry name (``Scenario.engine``), so every registered engine
gets the same runs and the same checks (``consensus.sim.checks``); what the network needs
from a particular engine (its simulated-time options, conflicting twins of its messages)
comes from the adapter its spec provides (``consensus.spec.SimAdapter``).

Everything random comes from one ``random.Random(seed)``, and events are ordered by
(time, sequence number), so a seed replays exactly: a failing seed is a reproducible bug
report.

Byzantine validators are modelled as *clones*: a Byzantine node runs one honest engine per
audience (a subset of the honest nodes), all signing with its key and no double-sign
guard. Each clone sees and talks to only its audience (and the same-numbered clones of the
other Byzantine nodes), so the node as a whole proposes, prevotes and precommits different
things to different subsets -- the strongest split-brain attack -- while every message is
still well-formed. On top of that a Byzantine node can withhold messages, sign a
conflicting twin of every vote and proposal for part of the network, and propose or vote
for blocks the application rejects.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consensus.app import AppConnector, PrepareProposalRequest
from consensus.block import Block
from consensus.engine import (
    Broadcast,
    Checkpoint,
    CommitBlock,
    Effect,
    Engine,
    EngineConfig,
    Event,
    EvidenceFound,
    MessageReceived,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutFired,
)
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import create_engine, engine_spec
from consensus.sim.app import SimApp
from consensus.sim.checks import agreement_violations, validity_violations
from consensus.types import Proposal, Validator, ValidatorSet, Vote, VoteType
from node.core.codec import Record
from node.core.crypto import PrivateKey, verify

__all__ = [
    "DEFAULT_ENGINE",
    "ByzSpec",
    "Crash",
    "Scenario",
    "SimResult",
    "Simulator",
    "UnguardedSigner",
    "run",
]

DEFAULT_ENGINE = "tendermint"


@dataclass(frozen=True)
class ByzSpec:
    # One clone per audience (sets of node indices); empty: one clone that talks to all.
    audiences: tuple[frozenset[int], ...] = ()
    withhold: float = 0.0
    # Send part of the network a conflicting twin of each message (the engine's adapter
    # makes it; an engine whose messages have no twins just sends the originals).
    equivocate: bool = False
    invalid_blocks: bool = False


@dataclass(frozen=True)
class Crash:
    node: int
    at: float
    restart_at: float


@dataclass(frozen=True)
class Scenario:
    seed: int
    powers: tuple[int, ...]
    byzantine: Mapping[int, ByzSpec] = field(default_factory=dict)
    gst: float = 0.0
    delay: tuple[float, float] = (0.001, 0.05)  # before GST
    post_gst_delay: float = 0.05  # max delay after GST
    drop_rate: float = 0.0  # before GST
    partition: tuple[frozenset[int], ...] = ()  # groups cut off from each other until GST
    crashes: tuple[Crash, ...] = ()
    heights_after_gst: int = 3
    window: float = 120.0  # termination deadline after GST
    engine: str = DEFAULT_ENGINE  # a registry name (consensus.registry)
    # Engine options; None: the engine adapter's options for simulated time.
    options: Mapping[str, object] | None = None
    # height -> (node index, new power): returned by finalize_block at that height.
    power_changes: Mapping[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    chain_id: str = "sim"

    @property
    def byzantine_power(self) -> int:
        return sum(self.powers[i] for i in self.byzantine)


@dataclass
class SimResult:
    scenario: Scenario
    agreement_violations: list[int]
    validity_violations: list[tuple[int, int]]
    terminated: bool
    max_height: int
    sim_time: float
    evidence: list[Record]
    commits: dict[int, dict[int, bytes]]
    # node -> height -> simulated time of the commit
    commit_times: dict[int, dict[int, float]]
    # highest round any honest engine was in when the network stabilised
    round_at_gst: int

    @property
    def safe(self) -> bool:
        return not self.agreement_violations and not self.validity_violations

    @property
    def ok(self) -> bool:
        return self.safe and self.terminated


class UnguardedSigner:
    """A Byzantine validator's key: signs anything, remembers nothing."""

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        self.public_key = key.public_key
        self.address = key.address

    def sign_vote(
        self,
        chain_id: str,
        height: int,
        round: int,
        type: VoteType,
        block_hash: bytes,
        lock_payload: bytes = b"",
    ) -> Vote:
        v = Vote(chain_id, height, round, int(type), block_hash, self.address, b"\0" * 64)
        return v.replace(signature=self.key.sign(v.sign_bytes()))

    def sign_proposal(
        self, chain_id: str, height: int, round: int, pol_round: int, block_hash: bytes
    ) -> Proposal:
        p = Proposal(chain_id, height, round, pol_round, block_hash, self.address, b"\0" * 64)
        return p.replace(signature=self.key.sign(p.sign_bytes()))

    def lock(self, height: int) -> tuple[int, bytes, bytes] | None:
        return None

    def last_round(self, height: int) -> int | None:
        return None

    def recent_votes(self, chain_id: str, height: int) -> list[Vote]:
        return []


class _Endpoint:
    """One running engine: an honest node, or one clone of a Byzantine node."""

    def __init__(self, index: int, node: int, clone: int, audience: frozenset[int]) -> None:
        self.index = index
        self.node = node
        self.clone = clone
        self.audience = audience
        self.peer = f"{node}" if clone == 0 else f"{node}.{clone}"
        self.engine: Engine
        self.app: SimApp
        self.connector: AppConnector
        self.recipients: list[int] = []


class Simulator:
    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        self.spec = engine_spec(scenario.engine)
        self.options = self.spec.sim.options if scenario.options is None else scenario.options
        self.rng = random.Random(scenario.seed)
        n = len(scenario.powers)
        self.keys = [PrivateKey.from_secret(f"sim-validator-{i}") for i in range(n)]
        self.genesis = ValidatorSet.of(
            [Validator(k.public_key, p) for k, p in zip(self.keys, scenario.powers, strict=True)]
        )
        self.changes = {
            h: tuple(Validator(self.keys[i].public_key, p) for i, p in ch)
            for h, ch in scenario.power_changes.items()
        }
        self._memo: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.now = 0.0
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self.up = [True] * n
        self.incarnation = [0] * n
        self.stores = [MemoryStateStore() for _ in range(n)]
        # Each node's last checkpoint: the height it was emitted for and its bytes.
        self.disk: list[tuple[int, bytes] | None] = [None] * n
        self.commits: dict[int, dict[int, bytes]] = {i: {} for i in range(n)}
        self.commit_times: dict[int, dict[int, float]] = {i: {} for i in range(n)}
        self.round_at_gst = 0
        self.blocks: dict[tuple[int, int], Block] = {}
        self.evidence: list[Record] = []
        honest = [i for i in range(n) if i not in scenario.byzantine]
        self.honest = honest
        self.endpoints: list[_Endpoint] = []
        self.by_peer: dict[str, int] = {}
        everyone = frozenset(range(n))
        for i in range(n):
            spec = scenario.byzantine.get(i)
            audiences = (spec.audiences or (everyone,)) if spec else (everyone,)
            for c, aud in enumerate(audiences):
                ep = _Endpoint(len(self.endpoints), i, c, aud)
                self.endpoints.append(ep)
                self.by_peer[ep.peer] = ep.index
                ep.app = SimApp(
                    ep.peer,
                    self.changes,
                    propose_invalid=bool(spec and spec.invalid_blocks),
                    accept_all=bool(spec and spec.invalid_blocks),
                )
                ep.connector = AppConnector(ep.app)
                self._boot(ep)
        for a in self.endpoints:
            a.recipients = [b.index for b in self.endpoints if b is not a and self._link(a, b)]

    # ------------------------------------------------------------------ topology

    def _link(self, a: _Endpoint, b: _Endpoint) -> bool:
        byz = self.sc.byzantine
        if a.node == b.node:
            return False
        if a.node not in byz and b.node not in byz:
            return True
        if a.node in byz and b.node in byz:
            return (
                a.clone == b.clone
                or len(a.audience) == len(self.sc.powers)
                or len(b.audience) == len(self.sc.powers)
            )
        return b.node in a.audience if a.node in byz else a.node in b.audience

    def _verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        # Verification is a pure function; n engines in one process check the same votes.
        k = (public_key, signature, message)
        r = self._memo.get(k)
        if r is None:
            if len(self._memo) > 200_000:
                self._memo.clear()
            r = self._memo[k] = verify(public_key, signature, message)
        return r

    def _boot(self, ep: _Endpoint) -> None:
        byz = ep.node in self.sc.byzantine
        signer: Any = (
            UnguardedSigner(self.keys[ep.node])
            if byz
            else GuardedSigner(self.keys[ep.node], self.stores[ep.node])
        )
        saved = None if byz else self.disk[ep.node]
        height = 1 if saved is None else saved[0] + 1
        # Like the node, the engine gets its validator sets from the application's state
        # (here: genesis plus the scenario's power changes), never from recovery bytes.
        ep.engine = create_engine(
            self.sc.engine,
            EngineConfig(
                self.sc.chain_id,
                signer,
                self.validators_at(height),
                initial_height=height,
                recovery=None if saved is None else saved[1],
                options=self.options,
                verifier=self._verify,
                next_validators=self.validators_at(height + 1),
            ),
        )

    def validators_at(self, height: int) -> ValidatorSet:
        """The set in effect at ``height``: genesis with the power changes finalized at
        heights up to ``height - 2`` applied (changes take effect two heights later)."""
        merged = {v.address: v for v in self.genesis.validators}
        for h in sorted(self.changes):
            if h + 2 > height:
                break
            for u in self.changes[h]:
                if u.power == 0:
                    merged.pop(u.address, None)
                else:
                    merged[u.address] = u
        return ValidatorSet.of(list(merged.values()))

    # ------------------------------------------------------------------ event queue

    def _push(self, t: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, payload))

    def _delay(self) -> float | None:
        """Delay for one message sent now, or None when it is lost."""
        sc = self.sc
        if self.now < sc.gst:
            if self.rng.random() < sc.drop_rate:
                return None
            return self.rng.uniform(*sc.delay)
        return self.rng.uniform(sc.delay[0], max(sc.delay[0], sc.post_gst_delay))

    def _partitioned(self, a: int, b: int) -> bool:
        if self.now >= self.sc.gst or not self.sc.partition:
            return False
        return not any(a in g and b in g for g in self.sc.partition)

    def _send(self, src: _Endpoint, dst: int, data: bytes) -> None:
        d = self.endpoints[dst]
        if self._partitioned(src.node, d.node):
            return
        spec = self.sc.byzantine.get(src.node)
        if spec is not None and spec.withhold and self.rng.random() < spec.withhold:
            return
        delay = self._delay()
        if delay is None:
            return
        self._push(self.now + delay, "msg", (dst, src.peer, data, self.incarnation[d.node]))

    # ------------------------------------------------------------------ effects

    def _run(self, ep: _Endpoint, event: Event) -> None:
        work: list[Event] = [event]
        while work:
            effects = ep.engine.handle(work.pop(0))
            for eff in effects:
                work.extend(self._effect(ep, eff))

    def _effect(self, ep: _Endpoint, eff: Effect) -> list[Event]:
        if isinstance(eff, Broadcast):
            self._broadcast(ep, eff.data)
        elif isinstance(eff, SendTo):
            dst = self.by_peer.get(eff.peer)
            if dst is not None:
                self._send(ep, dst, eff.data)
        elif isinstance(eff, ScheduleTimeout):
            ev = TimeoutFired(eff.kind, eff.height, eff.round)
            self._push(
                self.now + eff.duration, "timeout", (ep.index, ev, self.incarnation[ep.node])
            )
        elif isinstance(eff, Checkpoint):
            if ep.node not in self.sc.byzantine:
                self.disk[ep.node] = (eff.height, eff.data)
        elif isinstance(eff, EvidenceFound):
            if ep.node not in self.sc.byzantine:
                self.evidence.append(eff.evidence)
        else:
            if isinstance(eff, CommitBlock) and ep.node not in self.sc.byzantine:
                self.commits[ep.node][eff.height] = eff.block.hash
                self.commit_times[ep.node][eff.height] = self.now
                self.blocks[(ep.node, eff.height)] = eff.block
            return ep.connector.execute(eff, int(self.now * 1000))
        return []

    def _broadcast(self, ep: _Endpoint, data: bytes) -> None:
        spec = self.sc.byzantine.get(ep.node)
        twin = self._twin(ep, data) if spec is not None and spec.equivocate else None
        for dst in ep.recipients:
            if twin is None:
                self._send(ep, dst, data)
                continue
            x = self.rng.random()
            if x < 0.4:
                self._send(ep, dst, data)
            elif x < 0.8:
                self._send(ep, dst, twin)
            else:
                self._send(ep, dst, data)
                self._send(ep, dst, twin)

    def _twin(self, ep: _Endpoint, data: bytes) -> bytes | None:
        """A conflicting message signed by the same Byzantine key (see ByzSpec)."""

        def new_block(height: int, round: int, proposer: bytes) -> Block:
            return ep.app.prepare_proposal(PrepareProposalRequest(height, round, proposer, None, 0))

        return self.spec.sim.twin(data, self.keys[ep.node], new_block)

    # ------------------------------------------------------------------ main loop

    def honest_height(self, i: int) -> int:
        return max(self.commits[i], default=0)

    def run(self) -> SimResult:
        sc = self.sc
        for c in sc.crashes:
            self._push(c.at, "crash", c.node)
            self._push(c.restart_at, "restart", c.node)
        self._push(sc.gst, "gst", None)
        for ep in self.endpoints:
            self._run(ep, Start())
        deadline = sc.gst + sc.window
        target: int | None = None
        terminated = False
        while self._queue:
            t, _, kind, payload = heapq.heappop(self._queue)
            if t > deadline:
                self.now = deadline
                break
            self.now = t
            if kind == "msg":
                dst, src, data, inc = payload
                ep = self.endpoints[dst]
                if self.up[ep.node] and inc == self.incarnation[ep.node]:
                    self._run(ep, MessageReceived(src, data))
            elif kind == "timeout":
                idx, ev, inc = payload
                ep = self.endpoints[idx]
                if self.up[ep.node] and inc == self.incarnation[ep.node]:
                    self._run(ep, ev)
            elif kind == "crash":
                self.up[payload] = False
                self.incarnation[payload] += 1
            elif kind == "restart":
                node = payload
                self.up[node] = True
                for ep in self.endpoints:
                    if ep.node == node:
                        self._boot(ep)
                        self._run(ep, Start())
            elif kind == "gst":
                target = max(self.honest_height(i) for i in self.honest) + sc.heights_after_gst
                self.round_at_gst = max(
                    ep.engine.round for ep in self.endpoints if ep.node not in sc.byzantine
                )
            if target is not None and all(self.honest_height(i) >= target for i in self.honest):
                terminated = True
                break
        return self._result(terminated)

    def _result(self, terminated: bool) -> SimResult:
        return SimResult(
            self.sc,
            agreement_violations(self.commits, self.honest),
            validity_violations(self.commits, self.blocks, self.honest),
            terminated,
            max((self.honest_height(i) for i in self.honest), default=0),
            self.now,
            self.evidence,
            self.commits,
            self.commit_times,
            self.round_at_gst,
        )


def run(scenario: Scenario) -> SimResult:
    return Simulator(scenario).run()
