"""Long fuzzing session for every transport decoder (hypothesis, no sockets needed).

CI runs short hypothesis fuzz tests (tests/node/p2p/); this script runs the same kind
of targets for longer. Any exception other than the decoder's own typed error is a bug:
the script prints the failing input and exits non-zero.

    python scripts/fuzz_p2p.py --examples 20000            # per target
    python scripts/fuzz_p2p.py --examples 5000 --only yamux
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.p2p import multistream as ms
from node.p2p import yamux
from node.p2p.identify import IdentifyError, parse_message
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.noise import NoiseError, NoiseSession
from node.p2p.peer_id import IdentityKey, PeerID, PeerIDError, decode_public_key
from node.p2p.peer_record import PeerRecordError, open_record

KEY_A = IdentityKey.from_seed(bytes(32))
KEY_B = IdentityKey.from_seed(b"\x01" * 32)
chunks = st.lists(st.binary(max_size=200), max_size=12)


def target_multistream(data: list[bytes]) -> None:
    lst = ms.Listener(lambda p: p == "/x")
    d = ms.Dialer(["/x", "/y"])
    for side in (lst, d):
        with contextlib.suppress(ms.MultistreamError):
            for c in data:
                side.receive_data(c)


def target_noise_handshake(data: list[bytes]) -> None:
    for initiator in (False, True):
        s = NoiseSession(KEY_A, initiator=initiator)
        with contextlib.suppress(NoiseError):
            for c in data:
                s.receive_data(c)


def target_noise_transport(data: list[bytes]) -> None:
    i = NoiseSession(KEY_A, initiator=True)
    r = NoiseSession(KEY_B, initiator=False)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    with contextlib.suppress(NoiseError):
        for c in data:
            assert r.receive_data(c) == b""


frames = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, 5),
        st.integers(0, 15),
        st.integers(0, 9),
        st.one_of(st.integers(0, 70000), st.integers(0, 2**32 - 1)),
    ),
    max_size=20,
)


def target_yamux(items: list[tuple[int, int, int, int, int]]) -> None:
    s = yamux.YamuxSession(is_client=False, config=yamux.YamuxConfig(window=256 * 1024))
    with contextlib.suppress(yamux.YamuxError):
        for version, typ, flags, sid, length in items:
            body = b""
            if typ == yamux.TYPE_DATA:
                length = min(length, 70000)
                body = b"d" * length
            s.receive_data(yamux.HEADER.pack(version, typ, flags, sid, length) + body)
            for sid_open in list(s._streams)[:2]:
                s.consumed(sid_open, 1000)
            s.data_to_send()
    assert s.stream_count <= s.config.max_streams


def target_yamux_bytes(data: list[bytes]) -> None:
    s = yamux.YamuxSession(is_client=True)
    with contextlib.suppress(yamux.YamuxError):
        for c in data:
            s.receive_data(c)


def target_multiaddr(data: bytes) -> None:
    with contextlib.suppress(MultiaddrError):
        ma = Multiaddr.from_bytes(data)
        assert Multiaddr.parse(str(ma)) == ma


def target_multiaddr_text(text: str) -> None:
    with contextlib.suppress(MultiaddrError):
        ma = Multiaddr.parse(text)
        assert Multiaddr.from_bytes(ma.to_bytes()) == ma


def target_peer_id(data: bytes) -> None:
    with contextlib.suppress(PeerIDError):
        pid = PeerID.from_bytes(data)
        assert PeerID.from_base58(pid.to_base58()) == pid
    with contextlib.suppress(PeerIDError):
        decode_public_key(data)


def target_peer_record(data: bytes) -> None:
    with contextlib.suppress(PeerRecordError):
        open_record(data)


def target_identify(data: bytes) -> None:
    with contextlib.suppress(IdentifyError):
        parse_message(data, KEY_A.peer_id)


TARGETS: dict[str, tuple[Callable[..., None], st.SearchStrategy[object]]] = {
    "multistream": (target_multistream, chunks),
    "noise_handshake": (target_noise_handshake, chunks),
    "noise_transport": (target_noise_transport, chunks),
    "yamux": (target_yamux, frames),
    "yamux_bytes": (target_yamux_bytes, chunks),
    "multiaddr": (target_multiaddr, st.binary(max_size=200)),
    "multiaddr_text": (
        target_multiaddr_text,
        st.text(alphabet="/ip46dnstcpuq-v12345.:abfz", max_size=80),
    ),
    "peer_id": (target_peer_id, st.binary(max_size=80)),
    "identify": (target_identify, st.binary(max_size=400)),
    "peer_record": (target_peer_record, st.binary(max_size=400)),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=10000, help="examples per target")
    ap.add_argument("--only", choices=sorted(TARGETS), action="append")
    args = ap.parse_args()
    failed = False
    for name in args.only or sorted(TARGETS):
        fn, strategy = TARGETS[name]
        test = settings(
            max_examples=args.examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(strategy)(fn))
        start = time.perf_counter()
        try:
            test()
        except Exception as e:
            failed = True
            print(f"{name}: FAILED: {e!r}", flush=True)
            continue
        print(f"{name}: {args.examples} examples ok in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
