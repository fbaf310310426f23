"""The daemon's adapter from a machine's training slots to the worker's ``TrainingSlot``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from fl.train import TrainingStopped
from node.daemon import training_slot
from node.testnet.train_slots import TrainSlots


def test_a_job_holds_a_slot_on_its_core_and_a_stopped_wait_ends_it(tmp_path: Path) -> None:
    hold = training_slot(TrainSlots(tmp_path, 1))
    with hold(threading.Event()):
        if hasattr(os, "sched_getaffinity"):
            assert len(os.sched_getaffinity(0)) == 1  # pinned to the slot's core
        # The only slot is taken: a job whose node stops while it waits ends as stopped.
        stopped = threading.Event()
        stopped.set()
        with pytest.raises(TrainingStopped), hold(stopped):
            pass
    with hold(threading.Event()):  # released again on the way out
        pass
