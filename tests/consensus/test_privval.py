"""Double-sign protection: the guard must never emit two different signatures for one
(height, round, step), not even across crashes at arbitrary moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consensus.privval import FileStateStore, GuardedSigner, MemoryStateStore, SignStateError
from consensus.types import VoteType
from node.core.crypto import PrivateKey

KEY = PrivateKey.from_secret("privval-test")
H1 = b"\x01" * 32
H2 = b"\x02" * 32


def test_refuses_conflicts_and_regressions() -> None:
    s = GuardedSigner(KEY, MemoryStateStore())
    v = s.sign_vote("c", 5, 1, VoteType.PREVOTE, H1)
    assert v is not None and v.verify(KEY.public_key)
    assert s.sign_vote("c", 5, 1, VoteType.PREVOTE, H2) is None  # conflicting
    again = s.sign_vote("c", 5, 1, VoteType.PREVOTE, H1)  # identical: same signature
    assert again is not None and again.signature == v.signature
    assert s.sign_vote("c", 5, 0, VoteType.PRECOMMIT, H1) is None  # lower round
    assert s.sign_vote("c", 4, 9, VoteType.PRECOMMIT, H1) is None  # lower height
    assert s.sign_proposal("c", 5, 1, 0, H1) is None  # proposal step < prevote step
    assert s.sign_vote("c", 5, 1, VoteType.PRECOMMIT, H1) is not None  # higher step
    assert s.sign_proposal("c", 5, 2, 0, H2) is not None  # higher round


def test_state_survives_restart_and_records_lock(tmp_path: Path) -> None:
    path = tmp_path / "priv_validator_state.json"
    s = GuardedSigner(KEY, FileStateStore(path))
    assert s.sign_vote("c", 3, 2, VoteType.PRECOMMIT, H1) is not None
    assert s.sign_vote("c", 3, 3, VoteType.PREVOTE, b"") is not None
    restarted = GuardedSigner(KEY, FileStateStore(path))
    assert restarted.sign_vote("c", 3, 3, VoteType.PREVOTE, H2) is None
    assert restarted.lock(3) == (2, H1, b"")
    assert restarted.lock(4) is None
    assert restarted.last_round(3) == 3
    recent = restarted.recent_votes("c", 3)
    assert [(v.round, v.type, v.block_hash) for v in recent] == [
        (2, VoteType.PRECOMMIT, H1),
        (3, VoteType.PREVOTE, b""),
    ]
    assert all(v.verify(KEY.public_key) for v in recent)


def test_corrupt_state_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"height": "x"}')
    with pytest.raises(SignStateError):
        GuardedSigner(KEY, FileStateStore(path))


CHILD = r"""
import random, sys
from consensus.privval import FileStateStore, GuardedSigner
from consensus.types import VoteType
from node.core.crypto import PrivateKey
s = GuardedSigner(PrivateKey.from_secret("privval-test"), FileStateStore(sys.argv[1]))
rng = random.Random(int(sys.argv[2]))
sys.stderr.write("ready\n")
sys.stderr.flush()
hashes = [b"", b"\x01" * 32, b"\x02" * 32]
while True:
    st = s._state
    h, r, step = (st.height, st.round, st.step) if st else (1, 0, 2)
    x = rng.random()
    if x < 0.5:  # same (h, r, step), possibly different bytes: the dangerous case
        pass
    elif x < 0.8:
        step = 3 if step == 2 else 2
        r += step == 2
    else:
        h, r, step = h + 1, 0, 2
    t = VoteType.PREVOTE if step == 2 else VoteType.PRECOMMIT
    v = s.sign_vote("c", h, r, t, rng.choice(hashes))
    if v is not None:
        bh = v.block_hash.hex() or "-"
        sys.stdout.write(f"{v.height} {v.round} {v.type} {bh} {v.signature.hex()}\n")
        sys.stdout.flush()
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_double_signs(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    rng = random.Random(7)
    signed: dict[tuple[int, int, int], set[str]] = {}
    lines = 0
    deadline = time.monotonic() + 20
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    iterations = 0
    while iterations < 40 and time.monotonic() < deadline:
        iterations += 1
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(iterations)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"ready\n"
        # Kill it somewhere in its signing loop (each signature costs a few fsyncs).
        time.sleep(rng.random() * 0.2)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        for line in out.decode().split("\n")[:-1]:  # the last piece may be cut off
            h, r, t, block_hash, _sig = line.split()
            signed.setdefault((int(h), int(r), int(t)), set()).add(block_hash)
            lines += 1
    assert iterations >= 10 and lines > 100, "the signer barely ran; the test proved nothing"
    conflicts = {k: v for k, v in signed.items() if len(v) > 1}
    assert not conflicts
