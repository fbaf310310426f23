"""Training slots: at most N holders at once across processes, freed when a holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from node.testnet.train_slots import SlotWaitAborted, TrainSlots


def test_at_most_n_threads_hold_a_slot(tmp_path: Path) -> None:
    slots = TrainSlots(tmp_path / "slots", 2)
    stop = threading.Event()
    active, peak, lock = [0], [0], threading.Lock()
    # Holders leave in pairs: two are inside at once whatever the scheduler does, and a
    # third could only join them if the limit were broken.
    pair = threading.Barrier(2, timeout=10)

    def work() -> None:
        with slots.hold(stop):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            pair.wait()
            with lock:
                active[0] -= 1

    # With both slots held, a third holder that will not wait is refused at once.
    impatient = threading.Event()
    impatient.set()
    with slots.hold(stop) as first, slots.hold(stop) as second:
        assert {first, second} == {0, 1}
        with pytest.raises(SlotWaitAborted), slots.hold(impatient):
            pass
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and active[0] == 0


def test_stop_ends_the_wait(tmp_path: Path) -> None:
    slots = TrainSlots(tmp_path, 1)
    stop = threading.Event()
    with slots.hold(stop):
        stop.set()
        with pytest.raises(SlotWaitAborted), slots.hold(stop):
            pass


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    """Another process holds the only slot; once it is SIGKILLed the slot is ours."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, threading, time; from pathlib import Path\n"
            "from node.testnet.train_slots import TrainSlots\n"
            f"with TrainSlots(Path({str(tmp_path)!r}), 1).hold(threading.Event()):\n"
            "    print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        # Still held by the other process: a holder that will not wait gives up at once.
        impatient = threading.Event()
        impatient.set()
        with pytest.raises(SlotWaitAborted), TrainSlots(tmp_path, 1).hold(impatient):
            pass
        stop = threading.Event()
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.extend(_take(tmp_path, stop)))
        waiter.start()
        holder.kill()
        waiter.join(5)
        assert got == [0]
    finally:
        holder.kill()
        holder.wait()


def _take(directory: Path, stop: threading.Event) -> list[int]:
    with TrainSlots(directory, 1).hold(stop) as i:
        return [i]


def test_testnet_nodes_share_the_cores(tmp_path: Path) -> None:
    import os

    from node.home import testnet_init

    homes = testnet_init(tmp_path / "net", 3, base_port=27600)
    fls = [h.config().fl for h in homes]
    assert {f.train_slots for f in fls} == {os.cpu_count() or 1}
    assert len({f.train_slots_dir for f in fls}) == 1
    assert Path(fls[0].train_slots_dir).is_absolute()
    docker = testnet_init(tmp_path / "dk", 2, base_port=26656, hostnames=["a", "b"])
    assert {h.config().fl.train_slots for h in docker} == {0}  # one machine per container


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_slot_holder_runs_on_its_own_core_and_gets_its_affinity_back() -> None:
    from node.testnet.train_slots import pin_to_slot

    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    seen: dict[int, set[int]] = {}

    def in_thread(slot: int) -> None:
        with pin_to_slot(slot):
            seen[slot] = os.sched_getaffinity(0)
        assert os.sched_getaffinity(0) == allowed

    for slot in range(len(cpus) + 1):  # the last one wraps around
        t = threading.Thread(target=in_thread, args=(slot,))
        t.start()
        t.join()
    assert [seen[i] for i in range(len(cpus))] == [{c} for c in cpus]
    assert seen[len(cpus)] == {cpus[0]}
    assert os.sched_getaffinity(0) == allowed  # other threads were never touched
    with pin_to_slot(-1):  # no slot (no fcntl): nothing changes
        assert os.sched_getaffinity(0) == allowed
