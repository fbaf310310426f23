"""The mempool: validated, deduplicated, bounded pending transactions for proposers.

Rules (each chosen so that every reaped tx applies in the next block):

* **Admission** runs the ledger's own transition on a scratch copy of the committed state:
  signature, chain id, size, fee, nonce, balance and body rules (trainer registration, FL
  round and base model, one update per trainer per round) all come from
  ``State.check_sequence``, applied to the sender's pending txs followed by the new one.
* **No nonce gaps.** A sender's pending txs are exactly the nonces ``n, n+1, ...`` after
  its committed nonce; a tx with any other nonce is refused (``BadNonce``). Future nonces
  are not parked, which keeps every pending tx executable and eviction simple. At most
  ``max_per_sender`` are pending per sender.
* **Bounds and eviction.** Count and bytes (of encoded txs) are bounded. When a new tx does
  not fit, the pool evicts the tail (highest-nonce tx) of the sender whose tail pays the
  lowest fee per byte, if that is lower than the newcomer's; only tails are evicted, so no
  gap appears. Otherwise the newcomer is refused with ``MempoolFull``.
* **Update payloads** are accounted separately (``max_payload_bytes``), because one payload
  is thousands of times larger than a tx and would otherwise crowd out all transfers. A
  ``model_update`` is admitted only with its payload, fully validated against the tx
  (``node.app.updates.check_update``: decodable, shaped like the genesis model, finite,
  same round, samples and base model), so every pending update is one a proposer can
  aggregate, and ``model_updates`` never counts work that cannot go into a block.
* **Reaping.** ``reap`` takes txs in fee-per-byte order across senders and nonce order within
  each; a sender's ``model_update`` and everything after it are left out, because updates go
  into the block that closes an FL round, which the proposer builds from
  ``model_updates(round)`` together with the aggregation.
* **After each block** ``update`` drops committed txs and re-checks the rest against the new
  state: a sender's txs from its first failure on are dropped (stale-round updates, spent
  balances, replaced nonces).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from node.app.updates import PayloadMismatch, check_update
from node.ledger.block import Block
from node.ledger.state import State
from node.ledger.tx import ModelUpdate, Tx, TxError

__all__ = [
    "AlreadyKnown",
    "Mempool",
    "MempoolFull",
    "PayloadMismatch",
    "SenderLimit",
]


class MempoolFull(TxError):
    code = "mempool_full"


class AlreadyKnown(TxError):
    code = "already_known"


class SenderLimit(TxError):
    code = "sender_limit"


@dataclass
class _Sender:
    txs: list[Tx] = field(default_factory=list)


def _fee_rate(tx: Tx) -> float:
    # A float is fine here: ordering only, never consensus.
    return tx.fee / tx.size


class Mempool:
    def __init__(
        self,
        state: State,
        *,
        max_txs: int = 5000,
        max_bytes: int = 4 << 20,
        max_per_sender: int = 64,
        max_payload_bytes: int = 256 << 20,
    ) -> None:
        self.state = state
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_per_sender = max_per_sender
        self.max_payload_bytes = max_payload_bytes
        self._by_hash: dict[bytes, Tx] = {}
        self._senders: dict[bytes, _Sender] = {}
        self._payloads: dict[bytes, bytes] = {}  # tx hash -> update payload
        self._bytes = 0
        self._payload_bytes = 0
        self._arrival: dict[bytes, int] = {}
        self._seq = 0

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def payload_bytes(self) -> int:
        return self._payload_bytes

    def get(self, tx_hash: bytes) -> Tx | None:
        return self._by_hash.get(tx_hash)

    def payload(self, tx_hash: bytes) -> bytes | None:
        return self._payloads.get(tx_hash)

    def pending(self, address: bytes) -> list[Tx]:
        s = self._senders.get(address)
        return list(s.txs) if s else []

    def next_nonce(self, address: bytes) -> int:
        """The nonce of ``address``'s next tx: after those committed and those pending
        here, so a node signing several txs in a row (updates, evidence) never reuses one."""
        return self.state.account(address).nonce + len(self.pending(address))

    def has_ordinary(self) -> bool:
        """Whether some ordinary (non-update) tx could go into the next block."""
        return any(not isinstance(s.txs[0].body, ModelUpdate) for s in self._senders.values())

    def model_updates(self, round: int) -> list[Tx]:
        """Pending updates for ``round`` that are the next tx of their sender (so they can
        go into the next block), in hash order (a proposer-independent order)."""
        out = []
        for s in self._senders.values():
            tx = s.txs[0]
            if isinstance(tx.body, ModelUpdate) and tx.body.round == round:
                out.append(tx)
        return sorted(out, key=lambda t: t.hash)

    # ----------------------------------------------------------------- admission

    def add(self, tx: Tx, payload: bytes | None = None) -> None:
        """Admit ``tx`` or raise a TxError saying why not."""
        h = tx.hash
        if h in self._by_hash:
            raise AlreadyKnown("tx already in the mempool")
        body = tx.body
        if payload is not None and not isinstance(body, ModelUpdate):
            raise PayloadMismatch("only model updates carry a payload")
        sender = self._senders.get(tx.address)
        queue = sender.txs if sender else []
        if len(queue) >= self.max_per_sender:
            raise SenderLimit(f"sender already has {len(queue)} pending txs")
        n, err = self.state.check_sequence([*queue, tx])
        if err is not None:
            if n < len(queue):  # earlier pending txs no longer apply: state moved on
                self._drop_from(tx.address, n)
            raise err
        if isinstance(body, ModelUpdate):
            # After the ledger's checks, so a stale or duplicate update is refused without
            # decoding its payload; the payload budget is checked before the decode too.
            held = self._payload_bytes + len(payload or b"")
            if held > self.max_payload_bytes:
                raise MempoolFull("update payload budget exhausted")
            check_update(self.state.genesis.fl, body, payload)
        self._make_room(tx)
        if sender is None:
            sender = self._senders[tx.address] = _Sender()
        sender.txs.append(tx)
        self._by_hash[h] = tx
        self._bytes += tx.size
        self._arrival[h] = self._seq
        self._seq += 1
        if payload is not None:
            self._payloads[h] = payload
            self._payload_bytes += len(payload)

    def _make_room(self, tx: Tx) -> None:
        rate = _fee_rate(tx)
        while len(self._by_hash) + 1 > self.max_txs or self._bytes + tx.size > self.max_bytes:
            victim: Tx | None = None
            for addr, s in self._senders.items():
                if addr == tx.address or not s.txs:
                    continue
                tail = s.txs[-1]
                if victim is None or _fee_rate(tail) < _fee_rate(victim):
                    victim = tail
            if victim is None or _fee_rate(victim) >= rate:
                raise MempoolFull("mempool full and no pending tx pays a lower fee per byte")
            self._drop_from(victim.address, len(self._senders[victim.address].txs) - 1)

    def _drop_from(self, address: bytes, index: int) -> None:
        """Remove a sender's txs from ``index`` on (never leaves a nonce gap)."""
        s = self._senders.get(address)
        if s is None:
            return
        for tx in s.txs[index:]:
            self._forget(tx)
        del s.txs[index:]
        if not s.txs:
            del self._senders[address]

    def _forget(self, tx: Tx) -> None:
        h = tx.hash
        if self._by_hash.pop(h, None) is None:
            return
        self._bytes -= tx.size
        self._arrival.pop(h, None)
        p = self._payloads.pop(h, None)
        if p is not None:
            self._payload_bytes -= len(p)

    # ----------------------------------------------------------------- proposer side

    def reap(self, max_bytes: int, max_txs: int) -> list[Tx]:
        """Ordinary txs for the next block: highest fee per byte first across senders,
        nonce order within a sender, within both limits; all apply in sequence."""
        heap: list[tuple[float, int, bytes, int]] = []
        for addr, s in self._senders.items():
            first = s.txs[0]
            if not isinstance(first.body, ModelUpdate):
                heapq.heappush(heap, (-_fee_rate(first), self._arrival[first.hash], addr, 0))
        out: list[Tx] = []
        used = 0
        while heap and len(out) < max_txs:
            _, _, addr, i = heapq.heappop(heap)
            tx = self._senders[addr].txs[i]
            if used + tx.size > max_bytes:
                continue  # this sender's later txs must wait too (nonce order)
            out.append(tx)
            used += tx.size
            txs = self._senders[addr].txs
            if i + 1 < len(txs) and not isinstance(txs[i + 1].body, ModelUpdate):
                nxt = txs[i + 1]
                heapq.heappush(heap, (-_fee_rate(nxt), self._arrival[nxt.hash], addr, i + 1))
        return self.state.select_valid(out)

    # ----------------------------------------------------------------- after a block

    def update(self, block: Block, state: State | None = None) -> None:
        """Forget ``block``'s txs and re-check everything else against the new state."""
        if state is not None:
            self.state = state
        for tx in block.txs:
            s = self._senders.get(tx.address)
            if s is not None and tx.hash in self._by_hash:
                s.txs = [t for t in s.txs if t.hash != tx.hash]
                self._forget(tx)
                if not s.txs:
                    del self._senders[tx.address]
        self.recheck()

    def recheck(self, addresses: Iterable[bytes] | None = None) -> None:
        for addr in list(self._senders if addresses is None else addresses):
            s = self._senders.get(addr)
            if s is None:
                continue
            # Nonces already used on chain (by these txs or by others): drop only those.
            nonce = self.state.account(addr).nonce
            used = sum(1 for t in s.txs if t.nonce < nonce)
            for t in s.txs[:used]:
                self._forget(t)
            del s.txs[:used]
            if not s.txs:
                del self._senders[addr]
                continue
            n, err = self.state.check_sequence(s.txs)
            if err is not None:
                self._drop_from(addr, n)
