#!/usr/bin/env python3
"""GossipSub benchmark: ours vs py-libp2p 0.8.1, measured in the same run.

Three hosts in a line A - B - C on 127.0.0.1, each a separate process. A publishes
(1) ``--count`` messages of ``--size`` bytes as fast as its publish call allows, (2) one
``--big`` message, (3) ``--small-count`` 1 KB messages paced ``--small-interval`` apart for
latency. C reports what it received; every payload carries its sequence number and the
sender's wall clock (same machine, same clock), so latency is end to end (two hops).
py-libp2p runs twice: with its limits raised (outbound queue, own-publish rate limit, 1 MiB
RPC limit, 32-slot subscription channel) and with its defaults, to show what they lose.
Finally the 20-node random mesh statistics come from the deterministic in-memory network.

    python scripts/bench_gossip.py                       # everything (needs .interop-venv)
    python scripts/bench_gossip.py --impls ours --count 200

The same file is the worker for each process (``worker-ours`` / ``worker-py``); the py-libp2p
worker runs under .interop-venv/bin/python and imports only trio and libp2p.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INTEROP_PYTHON = ROOT / ".interop-venv" / "bin" / "python"
HEADER = struct.Struct(">QQ")  # sequence number, sender wall clock in ns
TOPICS = {"bulk": "bench-bulk", "big": "bench-big", "small": "bench-small"}
BIG_LIMIT = 64 * 1024 * 1024


_FILL: dict[int, bytes] = {}


def payload(seq: int, size: int) -> bytes:
    # One copy per payload (the filler is made once per size): building the workload
    # should cost the publishing process as little as possible, for either implementation.
    n = max(0, size - HEADER.size)
    fill = _FILL.get(n)
    if fill is None:
        fill = _FILL[n] = bytes(n)
    return HEADER.pack(seq, time.time_ns()) + fill


def out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# =========================================================================== our worker
def worker_ours() -> None:
    import asyncio

    from node.p2p.gossipsub.params import GossipParams
    from node.p2p.gossipsub.service import GossipSub, Received
    from node.p2p.host import Host, install_uvloop
    from node.p2p.multiaddr import Multiaddr
    from node.p2p.peer_id import IdentityKey

    install_uvloop()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line)
            loop.call_soon_threadsafe(commands.put_nowait, '{"cmd": "quit"}')

        threading.Thread(target=read_stdin, daemon=True).start()
        host = Host(IdentityKey.generate(), listen=[Multiaddr.parse("/ip4/127.0.0.1/tcp/0")])
        await host.start()
        gs = GossipSub(host, params=GossipParams(max_message_size=BIG_LIMIT))
        await gs.start()
        received: dict[str, list[tuple[int, int, int]]] = {t: [] for t in TOPICS.values()}

        def on_msg(r: Received) -> None:
            if r.source is None:
                return
            seq, sent = HEADER.unpack_from(r.data)
            received[r.topic].append((seq, sent, time.time_ns()))

        out(
            {
                "peer": str(host.peer_id),
                "addr": str(host.listen_addrs[0].with_peer_id(host.peer_id)),
            }
        )
        try:
            while True:
                cmd = json.loads(await commands.get())
                c = cmd["cmd"]
                if c == "quit":
                    break
                if c == "connect":
                    await host.connect(Multiaddr.parse(cmd["addr"]))
                    out({"ok": True})
                elif c == "subscribe":
                    for t in TOPICS.values():
                        gs.subscribe(t, callback=on_msg)
                    out({"ok": True})
                elif c == "publish":
                    t0 = time.perf_counter()
                    for seq in range(cmd["count"]):
                        await gs.publish(cmd["topic"], payload(seq, cmd["size"]))
                        if cmd["interval"]:
                            await asyncio.sleep(cmd["interval"])
                    out({"ok": True, "elapsed": time.perf_counter() - t0})
                elif c == "collect":
                    await _collect(received[cmd["topic"]], cmd, asyncio.sleep)
                    out({"received": received[cmd["topic"]], "counters": gs.all_counters()})
                elif c == "cpu":
                    out({"cpu": time.process_time(), "sys": os.times().system})
        finally:
            await gs.close()
            await host.close()

    asyncio.run(run())


async def _collect(got: list[Any], cmd: dict[str, Any], sleep: Any) -> None:
    """Wait until ``expect`` messages arrived, or nothing new came for ``idle`` seconds."""
    last_n, last_change = -1, time.monotonic()
    while len(got) < cmd["expect"]:
        if len(got) != last_n:
            last_n, last_change = len(got), time.monotonic()
        elif time.monotonic() - last_change > cmd["idle"]:
            return
        await sleep(0.02)


# =========================================================================== py-libp2p worker
def worker_py(raised: bool) -> None:
    import functools

    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.pubsub import pubsub as pubsub_mod
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
    from libp2p.tools.anyio_service import background_trio_service

    if raised:
        # The limits the issue names: 32-slot outbound queue, 1 MiB RPC limit, 32-slot
        # subscription channel (and the 10 msg/s rate limit, via the router argument).
        pubsub_mod.RpcQueue = functools.partial(
            pubsub_mod.RpcQueue, max_size=1_000_000, max_message_size=BIG_LIMIT
        )
        pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE = 1_000_000

    async def service(svc: Any) -> None:
        async with background_trio_service(svc):
            await trio.sleep_forever()

    async def run() -> None:
        listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
        host = new_host(key_pair=create_new_key_pair(), listen_addrs=[listen])
        kw: dict[str, Any] = {"max_messages_per_topic_per_second": 1e12} if raised else {}
        router = GossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,
            **kw,
        )
        pkw: dict[str, Any] = {"max_inbound_rpc_size": BIG_LIMIT} if raised else {}
        received: dict[str, list[tuple[int, int, int]]] = {t: [] for t in TOPICS.values()}
        async with host.run(listen_addrs=[listen]), trio.open_nursery() as nursery:
            ps = pubsub_mod.Pubsub(host, router, strict_signing=True, **pkw)
            nursery.start_soon(service, ps)
            nursery.start_soon(service, router)
            await ps.wait_until_ready()
            addr = f"{host.get_addrs()[0]}"
            if "/p2p/" not in addr:
                addr += f"/p2p/{host.get_id().to_string()}"
            out({"peer": host.get_id().to_string(), "addr": addr})

            async def drain(sub: Any, topic: str) -> None:
                while True:
                    msg = await sub.get()
                    if msg.from_id == host.get_id().to_bytes():
                        continue
                    seq, sent = HEADER.unpack_from(msg.data)
                    received[topic].append((seq, sent, time.time_ns()))

            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            buf = b""
            while True:
                data = await stdin.receive_some(65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    cmd = json.loads(raw)
                    c = cmd["cmd"]
                    if c == "quit":
                        nursery.cancel_scope.cancel()
                        return
                    if c == "connect":
                        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(cmd["addr"])))
                        out({"ok": True})
                    elif c == "subscribe":
                        for t in TOPICS.values():
                            nursery.start_soon(drain, await ps.subscribe(t), t)
                        out({"ok": True})
                    elif c == "publish":
                        t0 = time.perf_counter()
                        errors = 0
                        for seq in range(cmd["count"]):
                            try:
                                await ps.publish(cmd["topic"], payload(seq, cmd["size"]))
                            except Exception:
                                errors += 1
                            if cmd["interval"]:
                                await trio.sleep(cmd["interval"])
                        out({"ok": True, "elapsed": time.perf_counter() - t0, "errors": errors})
                    elif c == "collect":
                        await _collect(received[cmd["topic"]], cmd, trio.sleep)
                        out({"received": received[cmd["topic"]], "counters": {}})
                    elif c == "cpu":
                        out({"cpu": time.process_time(), "sys": os.times().system})

    trio.run(run)


# =========================================================================== orchestrator
class Proc:
    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.info = self.read()

    def read(self) -> dict[str, Any]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("worker exited")
        return dict(json.loads(line))

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()

    def stop(self) -> None:
        try:
            assert self.p.stdin is not None
            self.p.stdin.write('{"cmd": "quit"}\n')
            self.p.stdin.flush()
            self.p.wait(10)
        except (OSError, subprocess.TimeoutExpired, AssertionError):
            self.p.kill()
            self.p.wait()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run_line(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    procs = [Proc(argv) for _ in range(3)]
    a, b, c = procs
    try:
        b.call(cmd="connect", addr=a.info["addr"])
        c.call(cmd="connect", addr=b.info["addr"])
        for p in procs:
            p.call(cmd="subscribe")
        time.sleep(args.settle)
        res: dict[str, Any] = {}
        cpu0 = [p.call(cmd="cpu") for p in procs]
        pub = a.call(
            cmd="publish", topic=TOPICS["bulk"], count=args.count, size=args.size, interval=0
        )
        got = c.call(cmd="collect", topic=TOPICS["bulk"], expect=args.count, idle=args.idle)[
            "received"
        ]
        cpu1 = [p.call(cmd="cpu") for p in procs]
        res["bulk"] = summarize(got, args.count, args.size, pub)
        # CPU time (user + system) each process spent on the burst, per message sent:
        # unlike wall-clock rates this hardly depends on what else the machine is running.
        # The kernel's share (system time: TCP over loopback) is reported separately.
        for name, t0, t1 in zip("abc", cpu0, cpu1, strict=True):
            res["bulk"][f"cpu_ms_per_msg_{name}"] = (t1["cpu"] - t0["cpu"]) * 1000 / args.count
            res["bulk"][f"sys_ms_per_msg_{name}"] = (t1["sys"] - t0["sys"]) * 1000 / args.count
        pub = a.call(cmd="publish", topic=TOPICS["big"], count=1, size=args.big, interval=0)
        got = c.call(cmd="collect", topic=TOPICS["big"], expect=1, idle=args.idle)["received"]
        res["big"] = summarize(got, 1, args.big, pub)
        pub = a.call(
            cmd="publish",
            topic=TOPICS["small"],
            count=args.small_count,
            size=1024,
            interval=args.small_interval,
        )
        got = c.call(cmd="collect", topic=TOPICS["small"], expect=args.small_count, idle=args.idle)[
            "received"
        ]
        res["small"] = summarize(got, args.small_count, 1024, pub)
        return res
    finally:
        for p in procs:
            p.stop()


def summarize(got: list[list[int]], sent: int, size: int, pub: dict[str, Any]) -> dict[str, Any]:
    seqs = {g[0] for g in got}
    lat_ms = [(g[2] - g[1]) / 1e6 for g in got]
    r: dict[str, Any] = {
        "sent": sent,
        "received": len(seqs),
        "lost": sent - len(seqs),
        "publish_errors": pub.get("errors", 0),
        "p50_ms": pct(lat_ms, 0.5),
        "p99_ms": pct(lat_ms, 0.99),
    }
    if got:
        first_sent = min(g[1] for g in got)
        last_recv = max(g[2] for g in got)
        span = max(1e-9, (last_recv - first_sent) / 1e9)
        r["mb_per_s"] = len(seqs) * size / span / 1e6
        r["seconds"] = span
    return r


def mesh20(seed: int, messages: int) -> dict[str, Any]:
    from node.p2p.gossipsub.sim import SimNetwork

    net = SimNetwork(20, seed=seed)
    net.random_graph(4)
    net.subscribe_all("mesh")
    net.heartbeat(3)
    before = {p: n.copies_received for p, n in net.nodes.items()}
    mids = []
    for i in range(messages):
        mids.append(net.publish(net.ids[i % 20], "mesh", b"m%d" % i))
        if i % 10 == 9:
            net.heartbeat()
    dup_per_msg = [(n.copies_received - before[p]) / messages - 1 for p, n in net.nodes.items()]
    degrees = [len(n.router.mesh["mesh"]) for n in net.nodes.values()]
    return {
        "nodes": 20,
        "messages": messages,
        "delivered_all": all(set(mids) <= set(n.delivered) for n in net.nodes.values()),
        "duplicates_per_msg_mean": statistics.mean(dup_per_msg),
        "duplicates_per_msg_max_node": max(dup_per_msg),
        "mesh_degree_mean": statistics.mean(degrees),
        "mesh_degree_min": min(degrees),
        "mesh_degree_max": max(degrees),
    }


def run_worker(argv: list[str]) -> None:
    """Run one worker; with BENCH_PROFILE=DIR set, under cProfile with a CPU-time clock,
    writing DIR/<worker>-<pid>.prof (wall-clock profiles on a shared box mostly show
    the time other processes held the CPU)."""

    def work() -> None:
        if argv[0] == "worker-ours":
            worker_ours()
        else:
            worker_py(argv[1] == "raised")

    prof_dir = os.environ.get("BENCH_PROFILE")
    if not prof_dir:
        work()
        return
    import cProfile

    prof = cProfile.Profile(time.process_time)
    try:
        prof.runcall(work)
    finally:
        prof.dump_stats(str(Path(prof_dir) / f"{argv[0]}-{os.getpid()}.prof"))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("worker-"):
        run_worker(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--impls", default="ours,pylibp2p-raised,pylibp2p-defaults")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=8 * 1024 * 1024)
    ap.add_argument("--small-count", type=int, default=300)
    ap.add_argument("--small-interval", type=float, default=0.005)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds for meshes to form")
    ap.add_argument("--idle", type=float, default=5.0, help="collect gives up after this idle")
    ap.add_argument("--mesh-messages", type=int, default=200)
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs (this VM is noisy); medians are reported"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    me = str(Path(__file__).resolve())
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeat):
        # Interleave the implementations so that a change in machine load hits all of them.
        for impl in args.impls.split(","):
            if impl == "ours":
                argv = [sys.executable, me, "worker-ours"]
            elif impl.startswith("pylibp2p"):
                if not INTEROP_PYTHON.exists():
                    print(f"skip {impl}: {INTEROP_PYTHON} missing (scripts/interop_venv.sh)")
                    continue
                mode = "raised" if impl.endswith("raised") else "defaults"
                argv = [str(INTEROP_PYTHON), me, "worker-py", mode]
            else:
                raise SystemExit(f"unknown impl {impl}")
            t0 = time.time()
            runs.setdefault(impl, []).append(run_line(argv, args))
            print(f"run {rep + 1}: {impl} done in {time.time() - t0:.1f}s", file=sys.stderr)
    results: dict[str, Any] = {impl: median_of(rs) for impl, rs in runs.items()}
    if args.mesh_messages:
        results["mesh20"] = mesh20(1, args.mesh_messages)
    ratios = throughput_ratios(runs)
    if args.json:
        print(json.dumps({"median": results, "runs": runs, "ratios": ratios}, indent=2))
        return
    print(f"medians over {args.repeat} run(s); latencies are end to end over 2 hops")
    for impl, r in results.items():
        if impl == "mesh20":
            continue
        bl, bg, sm = r["bulk"], r["big"], r["small"]
        print(
            f"{impl:18s} {bl['sent']:.0f}x{args.size}B: {bl.get('mb_per_s', 0):7.1f} MB/s "
            f"lost {bl['lost']:4.0f} p50 {bl['p50_ms']:8.1f} ms p99 {bl['p99_ms']:8.1f} ms | "
            f"{args.big}B: lost {bg['lost']:.0f} {bg['p50_ms']:7.1f} ms | 1KBx{sm['sent']:.0f}: "
            f"lost {sm['lost']:.0f} p50 {sm['p50_ms']:.2f} p99 {sm['p99_ms']:.2f} ms | "
            f"CPU ms/msg A {bl['cpu_ms_per_msg_a']:.2f} B {bl['cpu_ms_per_msg_b']:.2f} "
            f"C {bl['cpu_ms_per_msg_c']:.2f} (system A {bl['sys_ms_per_msg_a']:.2f} "
            f"B {bl['sys_ms_per_msg_b']:.2f} C {bl['sys_ms_per_msg_c']:.2f})"
        )
        for rep, run in enumerate(runs[impl]):
            b = run["bulk"]
            print(
                f"  run {rep + 1}: {b.get('mb_per_s', 0):.1f} MB/s lost {b['lost']}, "
                f"1 KB p99 {run['small']['p99_ms']:.2f} ms"
            )
    if ratios:
        print(
            f"ours / pylibp2p-raised throughput, per run: {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"median {statistics.median(ratios):.2f}x (goal: 5x)"
        )
    if "mesh20" in results:
        print("mesh20:", json.dumps(results["mesh20"]))


def throughput_ratios(runs: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Ours over py-libp2p (raised limits), run by run. The implementations of one run go
    back to back, so each ratio compares them under the same machine load; the spread of
    these ratios is smaller than that of either side's throughput on a noisy VM."""
    pairs = zip(runs.get("ours", []), runs.get("pylibp2p-raised", []), strict=False)
    return [
        a["bulk"]["mb_per_s"] / b["bulk"]["mb_per_s"]
        for a, b in pairs
        if a["bulk"].get("mb_per_s") and b["bulk"].get("mb_per_s")
    ]


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase and metric, the median over repeated runs."""
    out: dict[str, Any] = {}
    for phase in runs[0]:
        keys = set().union(*(r[phase].keys() for r in runs))
        out[phase] = {
            k: statistics.median(r[phase].get(k, float("nan")) for r in runs) for k in keys
        }
    return out


if __name__ == "__main__":
    main()
