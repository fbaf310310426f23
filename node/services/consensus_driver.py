"""Drives a sans-I/O consensus engine: events in, effects out, in order.

``EngineRunner`` is the synchronous core: it feeds one event to the engine, performs the
effects it returns in order (application effects through ``consensus.app.AppConnector``,
whose answers are fed straight back), and hands network sends, timers, checkpoints and
evidence to callbacks. Because it has no clock or loop of its own, tests drive several
nodes in one process on a virtual clock with exactly the code the daemon runs.

``AsyncConsensus`` puts it on an asyncio loop: timers are ``loop.call_later``, broadcasts
go out through one ordered outbox task (votes must leave in the order the engine emitted
them), direct sends run as tasks, and a proposal whose update payloads this node lacks is
held back while ``fetch_payloads`` fetches them, then verified. The engine is created by
name through ``consensus.registry``: the node never imports a concrete engine.

A commit that leaves work in the mempool wakes the engine for the next height
(``TxsAvailable``). The synchronous core does that at once; the asyncio driver does it in
the loop's next iteration (``loop.call_soon``), so each height starts only after the loop
has served I/O and signals. A lone validator commits a height within one ``feed`` call,
and if ``has_work`` ever claimed work that no block can carry, waking in place would chain
height after height without returning: RPC, p2p and SIGTERM would wait forever.

``ConsensusHandle`` is the rest of the node's one reference to whichever driver runs now:
the engine is stopped and replaced while the node catches up, so nothing else keeps a
driver of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from consensus.app import AppConnector
from consensus.engine import (
    BlockCommitted,
    Broadcast,
    Checkpoint,
    CommitBlock,
    Effect,
    Engine,
    Event,
    EvidenceFound,
    ProposalVerdict,
    RequestProposal,
    RequestVerification,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutFired,
    TxsAvailable,
)
from node.app.application import NodeApp
from node.core.codec import Record
from node.p2p.tasks import TaskSet

__all__ = ["AsyncConsensus", "ConsensusHandle", "EngineRunner"]

log = logging.getLogger(__name__)


class EngineRunner:
    """Synchronous event pump around one engine (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        app: NodeApp,
        *,
        broadcast: Callable[[bytes], None],
        send: Callable[[str, bytes], None],
        schedule: Callable[[float, TimeoutFired], None],
        clock_ms: Callable[[], int],
        on_checkpoint: Callable[[int, bytes], None] = lambda h, d: None,
        on_evidence: Callable[[Record], None] = lambda e: None,
        defer_verification: Callable[[RequestVerification, list[bytes]], bool] | None = None,
        on_failure: Callable[[BaseException], None] = lambda e: None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        # How a commit with work left wakes the engine (default: queue it right here).
        self.wake = wake if wake is not None else lambda: self._queue.append(TxsAvailable())
        self.on_failure = on_failure
        self.app = app
        self.connector = AppConnector(app)
        self.broadcast = broadcast
        self.send = send
        self.schedule = schedule
        self.clock_ms = clock_ms
        self.on_checkpoint = on_checkpoint
        self.on_evidence = on_evidence
        self.defer_verification = defer_verification
        self._queue: deque[Event] = deque()
        self._running = False
        self.failed: BaseException | None = None

    def feed(self, event: Event) -> None:
        """Process ``event`` and everything it causes; re-entrant calls are queued."""
        if self.failed is not None:
            return
        self._queue.append(event)
        if self._running:
            return
        self._running = True
        try:
            while self._queue:
                ev = self._queue.popleft()
                for eff in self.engine.handle(ev):
                    self._perform(eff)
                if isinstance(ev, BlockCommitted) and self.app.has_work():
                    # Txs left in the mempool (or a round now closable) are work for the
                    # new height; the engine forgot the old height's TxsAvailable.
                    self.wake()
        except Exception as e:
            # An application failure here (a decided block that does not apply, a broken
            # store) means this node can no longer follow the chain safely: stop feeding.
            log.exception("consensus stopped")
            self.failed = e
            self._queue.clear()
            self.on_failure(e)
        finally:
            self._running = False

    def _perform(self, eff: Effect) -> None:
        if isinstance(eff, Broadcast):
            self.broadcast(eff.data)
        elif isinstance(eff, SendTo):
            self.send(eff.peer, eff.data)
        elif isinstance(eff, ScheduleTimeout):
            self.schedule(eff.duration, TimeoutFired(eff.kind, eff.height, eff.round))
        elif isinstance(eff, Checkpoint):
            self.on_checkpoint(eff.height, eff.data)
        elif isinstance(eff, EvidenceFound):
            self.on_evidence(eff.evidence)
        elif isinstance(eff, RequestVerification):
            missing = self.app.missing_payloads(eff.block.data)
            if (
                missing
                and self.defer_verification is not None
                and self.defer_verification(eff, missing)
            ):
                return
            self._queue.extend(self.connector.execute(eff, self.clock_ms()))
        elif isinstance(eff, RequestProposal | CommitBlock):
            self._queue.extend(self.connector.execute(eff, self.clock_ms()))

    def verified(self, eff: RequestVerification) -> None:
        """Resume a deferred verification (its payloads were fetched, or not)."""
        ok = self.app.process_proposal(eff.height, eff.block)
        self.feed(ProposalVerdict(eff.height, eff.block, ok))


class AsyncConsensus:
    """The engine on an asyncio loop (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        app: NodeApp,
        *,
        publish: Callable[[bytes], Awaitable[object]],
        send: Callable[[str, bytes], Awaitable[object]],
        fetch_payloads: Callable[[list[bytes]], Awaitable[object]] | None = None,
        on_checkpoint: Callable[[int, bytes], None] = lambda h, d: None,
        on_evidence: Callable[[Record], None] = lambda e: None,
        on_failure: Callable[[BaseException], None] = lambda e: None,
    ) -> None:
        self._publish = publish
        self._send = send
        self._fetch = fetch_payloads
        self._tasks = TaskSet("consensus")
        self._timers: set[asyncio.TimerHandle] = set()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._wake: asyncio.Handle | None = None
        self.runner = EngineRunner(
            engine,
            app,
            broadcast=self._outbox.put_nowait,
            send=self._spawn_send,
            schedule=self._schedule,
            clock_ms=lambda: int(time.time() * 1000),
            on_checkpoint=on_checkpoint,
            on_evidence=on_evidence,
            defer_verification=self._defer if fetch_payloads is not None else None,
            on_failure=on_failure,
            wake=self._wake_soon,
        )

    @property
    def engine(self) -> Engine:
        return self.runner.engine

    def start(self) -> None:
        self._tasks.spawn(self._sender(), name="consensus-outbox")
        self.feed(Start())

    def feed(self, event: Event) -> None:
        if not self._closed:
            self.runner.feed(event)

    def _wake_soon(self) -> None:
        """Wake the engine for the next height in the loop's next iteration (see the module
        docstring); at most one wake-up is pending."""
        if self._wake is None and not self._closed:
            self._wake = asyncio.get_running_loop().call_soon(self._woken)

    def _woken(self) -> None:
        self._wake = None
        if self.runner.app.has_work():  # still work: nothing else took it meanwhile
            self.feed(TxsAvailable())

    def _schedule(self, delay: float, event: TimeoutFired) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.feed(event)

        handle = loop.call_later(max(0.0, delay), fire)
        self._timers.add(handle)

    def _spawn_send(self, peer: str, data: bytes) -> None:
        async def go() -> None:
            try:
                await self._send(peer, data)
            except Exception as e:  # best effort: the engine re-sends what matters
                log.debug("direct consensus send to %s failed: %s", peer, e)

        if not self._closed:
            self._tasks.spawn(go(), name="consensus-send")

    async def _sender(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                await self._publish(data)
            except Exception as e:
                log.warning("consensus broadcast failed: %s", e)

    def _defer(self, eff: RequestVerification, missing: list[bytes]) -> bool:
        assert self._fetch is not None
        fetch = self._fetch

        async def go() -> None:
            try:
                await fetch(missing)
            except Exception as e:
                log.info("fetching %d payloads failed: %s", len(missing), e)
            if not self._closed:
                self.runner.verified(eff)

        if self._closed:
            return True
        self._tasks.spawn(go(), name="consensus-fetch")
        return True

    async def close(self) -> None:
        self._closed = True
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        for h in self._timers:
            h.cancel()
        self._timers.clear()
        await self._tasks.aclose()


class ConsensusHandle:
    """Which driver, if any, runs this node's consensus, and whether the node is catching
    up instead (``catching_up`` in /status).

    The catch-up supervisor (``node.services.catchup``) is the only writer: it installs a
    driver when an engine starts and removes it while it block-syncs. The gossip handlers
    and the transaction path feed events through ``feed``; one that arrives while no
    engine runs is dropped (a new engine learns the current height from its peers).
    """

    def __init__(self, *, catching_up: bool) -> None:
        self.driver: AsyncConsensus | None = None
        self.catching_up = catching_up

    @property
    def running(self) -> bool:
        return self.driver is not None

    def is_catching_up(self) -> bool:
        return self.catching_up

    def feed(self, event: Event) -> None:
        if self.driver is not None:
            self.driver.feed(event)
