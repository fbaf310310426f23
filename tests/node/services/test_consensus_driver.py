"""The consensus driver: effects performed in the engine's order, re-entrant events
queued, a failing application stops it, verification waits for missing payloads, and the
asyncio driver keeps broadcasts ordered and leaves nothing running after ``close``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.app import Block, FinalizeResult, PrepareProposalRequest
from consensus.engine import (
    BlockCommitted,
    Broadcast,
    Checkpoint,
    CommitBlock,
    Effect,
    Engine,
    Event,
    EvidenceFound,
    MessageReceived,
    ProposalVerdict,
    RequestVerification,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutFired,
    TxsAvailable,
)
from consensus.types import Commit
from node.core.codec import Record
from node.services.consensus_driver import AsyncConsensus, ConsensusHandle, EngineRunner
from tests.helpers import wait_for

BLOCK = Block(b"\x01" * 32, b"block bytes")
COMMIT = Commit(1, 0, BLOCK.hash, ())


class Note(Record):
    text: str


class Scripted(Engine):
    """An engine that answers each event with the effects ``script`` returns for it."""

    def __init__(self, script: Callable[[Event], list[Effect]]) -> None:
        self.script = script
        self.seen: list[Event] = []

    @property
    def height(self) -> int:
        return 1

    def handle(self, event: Event) -> list[Effect]:
        self.seen.append(event)
        return self.script(event)


@dataclass
class FakeApp:
    """The application calls the driver makes, recorded."""

    work: bool = False
    missing: list[bytes] = field(default_factory=list)
    verdict: bool = True
    fail_finalize: bool = False
    calls: list[str] = field(default_factory=list)

    def has_work(self) -> bool:
        return self.work

    def missing_payloads(self, data: bytes) -> list[bytes]:
        return list(self.missing)

    def prepare_proposal(self, req: PrepareProposalRequest) -> Block:
        self.calls.append("prepare")
        return BLOCK

    def process_proposal(self, height: int, block: Block) -> bool:
        self.calls.append("process")
        return self.verdict

    def finalize_block(self, height: int, block: Block, commit: Commit) -> FinalizeResult:
        self.calls.append("finalize")
        if self.fail_finalize:
            raise RuntimeError("the block does not apply")
        return FinalizeResult(b"\x02" * 32, ())

    def commit(self) -> None:
        self.calls.append("commit")


def _runner(engine: Engine, app: FakeApp, out: list[object], **kw: object) -> EngineRunner:
    return EngineRunner(
        engine,
        app,  # type: ignore[arg-type]
        broadcast=lambda d: out.append(("broadcast", d)),
        send=lambda p, d: out.append(("send", p, d)),
        schedule=lambda dt, ev: out.append(("timer", dt, ev)),
        clock_ms=lambda: 0,
        on_checkpoint=lambda h, d: out.append(("checkpoint", h, d)),
        on_evidence=lambda e: out.append(("evidence", e)),
        **kw,  # type: ignore[arg-type]
    )


def test_effects_are_performed_in_order_and_reentrant_events_wait_their_turn() -> None:
    out: list[object] = []
    note = Note("equivocation")

    def script(ev: Event) -> list[Effect]:
        if isinstance(ev, Start):
            return [
                Broadcast(b"vote"),
                SendTo("peer", b"reply"),
                ScheduleTimeout("propose", 1, 0, 0.5),
                Checkpoint(1, b"state"),
                EvidenceFound(note),
            ]
        return [Broadcast(b"after")]

    engine = Scripted(script)
    runner = _runner(engine, FakeApp(), out)

    def broadcast(data: bytes) -> None:
        out.append(("broadcast", data))
        if data == b"vote":
            runner.feed(TxsAvailable())  # re-entrant: queued behind Start's effects

    runner.broadcast = broadcast
    runner.feed(Start())
    assert out[:5] == [
        ("broadcast", b"vote"),
        ("send", "peer", b"reply"),
        ("timer", 0.5, TimeoutFired("propose", 1, 0)),
        ("checkpoint", 1, b"state"),
        ("evidence", note),
    ]
    # The event fed from inside a broadcast ran after Start's effects, not in between.
    assert engine.seen[:2] == [Start(), TxsAvailable()]
    assert out[5] == ("broadcast", b"after")


def test_a_commit_with_work_left_wakes_the_engine_for_the_next_height() -> None:
    for work in (True, False):
        engine = Scripted(lambda ev: [])
        runner = _runner(engine, FakeApp(work=work), [])
        runner.feed(BlockCommitted(1, b"h"))
        woken: list[Event] = [TxsAvailable()] if work else []
        assert engine.seen == [BlockCommitted(1, b"h"), *woken]


def test_app_effects_are_answered_through_the_connector() -> None:
    def script(ev: Event) -> list[Effect]:
        if isinstance(ev, Start):
            return [CommitBlock(1, BLOCK, COMMIT)]
        return []

    engine = Scripted(script)
    app = FakeApp()
    _runner(engine, app, []).feed(Start())
    assert app.calls == ["finalize", "commit"]
    assert engine.seen[1] == BlockCommitted(1, b"\x02" * 32, ())


def test_a_block_that_does_not_apply_stops_the_runner_for_good() -> None:
    failures: list[BaseException] = []
    engine = Scripted(lambda ev: [CommitBlock(1, BLOCK, COMMIT)] if isinstance(ev, Start) else [])
    runner = _runner(engine, FakeApp(fail_finalize=True), [], on_failure=failures.append)
    runner.feed(Start())
    assert len(failures) == 1 and isinstance(runner.failed, RuntimeError)
    runner.feed(MessageReceived("peer", b"vote"))
    assert engine.seen == [Start()]  # nothing is fed to a runner that failed


def test_verification_of_a_block_with_missing_payloads_waits_until_they_are_fetched() -> None:
    ask = RequestVerification(1, 0, BLOCK)
    engine = Scripted(lambda ev: [ask] if isinstance(ev, Start) else [])
    app = FakeApp(missing=[b"\x03" * 32], verdict=False)
    deferred: list[tuple[RequestVerification, list[bytes]]] = []
    runner = _runner(
        engine, app, [], defer_verification=lambda e, m: deferred.append((e, m)) or True
    )
    runner.feed(Start())
    assert deferred == [(ask, [b"\x03" * 32])] and app.calls == []
    assert engine.seen == [Start()]
    runner.verified(ask)  # the fetch is over (here: it failed, so the block is refused)
    assert app.calls == ["process"]
    assert engine.seen[1] == ProposalVerdict(1, BLOCK, False)
    # Without a fetcher the block is verified at once, missing payloads and all.
    engine2 = Scripted(lambda ev: [ask] if isinstance(ev, Start) else [])
    _runner(engine2, FakeApp(missing=[b"\x03" * 32]), []).feed(Start())
    assert engine2.seen[1] == ProposalVerdict(1, BLOCK, True)


async def test_broadcasts_leave_in_order_and_timers_fire_on_the_loop() -> None:
    sent: list[bytes] = []

    def script(ev: Event) -> list[Effect]:
        if isinstance(ev, Start):
            return [Broadcast(b"a"), Broadcast(b"b"), ScheduleTimeout("t", 1, 0, 0.01)]
        if isinstance(ev, TimeoutFired):
            return [Broadcast(b"c")]
        return []

    async def publish(data: bytes) -> None:
        await asyncio.sleep(0)  # a publish that yields: order must still hold
        sent.append(data)

    async def send(peer: str, data: bytes) -> None:
        return None

    driver = AsyncConsensus(Scripted(script), FakeApp(), publish=publish, send=send)  # type: ignore[arg-type]
    driver.start()
    try:
        await wait_for(lambda: len(sent) == 3, 10, "three broadcasts")
        assert sent == [b"a", b"b", b"c"]
    finally:
        await driver.close()


async def test_a_proposal_is_verified_only_after_its_payloads_were_fetched() -> None:
    ask = RequestVerification(1, 0, BLOCK)
    engine = Scripted(lambda ev: [ask] if isinstance(ev, Start) else [])
    app = FakeApp(missing=[b"\x04" * 32])
    fetched = asyncio.Event()
    asked: list[list[bytes]] = []

    async def fetch(missing: list[bytes]) -> None:
        asked.append(missing)
        await fetched.wait()

    async def noop(*args: object) -> None:
        return None

    driver = AsyncConsensus(engine, app, publish=noop, send=noop, fetch_payloads=fetch)  # type: ignore[arg-type]
    driver.start()
    try:
        await wait_for(lambda: asked == [[b"\x04" * 32]], 10, "the payload fetch")
        assert app.calls == []
        fetched.set()
        await wait_for(lambda: len(engine.seen) == 2, 10, "the verdict")
        assert engine.seen[1] == ProposalVerdict(1, BLOCK, True)
    finally:
        await driver.close()


async def test_close_cancels_timers_and_sends_and_ignores_later_events() -> None:
    engine = Scripted(
        lambda ev: (
            [ScheduleTimeout("t", 1, 0, 0.05), SendTo("p", b"x")] if isinstance(ev, Start) else []
        )
    )
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def send(peer: str, data: bytes) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a peer that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def publish(data: bytes) -> None:
        return None

    driver = AsyncConsensus(engine, FakeApp(), publish=publish, send=send)  # type: ignore[arg-type]
    driver.start()
    await asyncio.wait_for(started.wait(), 10)
    timers = list(driver._timers)
    assert len(timers) == 1
    await asyncio.wait_for(driver.close(), 10)
    assert cancelled.is_set()
    assert all(t.cancelled() for t in timers)
    driver.feed(MessageReceived("p", b"late"))
    assert engine.seen == [Start()]


def test_the_handle_feeds_whichever_driver_runs_and_drops_events_meanwhile() -> None:
    fed: list[Event] = []

    class Driver:
        def feed(self, event: Event) -> None:
            fed.append(event)

    handle = ConsensusHandle(catching_up=True)
    assert not handle.running and handle.is_catching_up()
    handle.feed(TxsAvailable())  # no engine: dropped
    handle.driver = Driver()  # type: ignore[assignment]
    handle.feed(MessageReceived("p", b"vote"))
    assert handle.running and fed == [MessageReceived("p", b"vote")]


async def test_commits_with_work_claimed_forever_still_yield_to_the_loop() -> None:
    """Issue 15 item 1, defence in depth: an application whose ``has_work`` always says yes
    and an engine that commits a block whenever it is woken (a lone validator). Waking the
    next height in place chained commit after commit inside one ``feed`` call and the event
    loop never ran again; each height must start in a later loop iteration."""
    limit = 500  # the engine stops by itself here, so the unfixed driver returns at all
    commits: list[int] = []

    def script(ev: Event) -> list[Effect]:
        if isinstance(ev, Start | TxsAvailable) and len(commits) < limit:
            commits.append(len(commits) + 1)
            return [CommitBlock(len(commits), BLOCK, COMMIT)]
        return []

    async def noop(*args: object) -> None:
        return None

    driver = AsyncConsensus(Scripted(script), FakeApp(work=True), publish=noop, send=noop)  # type: ignore[arg-type]
    driver.start()
    try:
        assert len(commits) == 1  # the next height waits for the loop
        for turn in range(1, 20):
            await asyncio.sleep(0)  # this task gets every loop iteration in between
            assert len(commits) <= turn + 1
        assert len(commits) >= 5  # and the chain still moves on, a height per iteration
    finally:
        await driver.close()
    stopped = len(commits)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(commits) == stopped  # a closed driver's pending wake-up was cancelled
