"""The ledger state machine: accounts, stake, unbonding, the FL registry, rewards, slashing.

The state is one key-value map from short byte keys to canonical records (prefix ``a``
accounts, ``v`` bonds, ``u`` unbonding queues by maturity height, ``t`` trainers, ``o``
punished offences, ``s`` the validator-set schedule, ``m`` chain metadata). One map keeps
three things trivially consistent: the app hash, what the store persists per block (the
changed keys), and rollback (an undo journal of the keys' previous records).

**App hash.** Every entry has a leaf hash ``sha256(len(key) || key || encoding)``. Entries
fall into 65,536 buckets by the last two key bytes; a bucket's digest is SHA-256 over its
leaf hashes in key order (SHA-256 of nothing when empty), a group's digest is SHA-256 over
its 256 consecutive bucket digests, and the app hash is SHA-256 over the 256 group
digests. Only buckets and groups touched by a block are re-hashed, so the cost follows the
block, not the state size (``scripts/bench_ledger.py`` measures both), while the result is
still a pure function of the whole sorted state: two nodes with the same entries get the
same hash whatever order they wrote them in.

**Atomicity.** ``apply_block`` runs under an undo journal; any failure restores every
touched key and raises ``BlockError``, so a block is applied completely or not at all.
A block is valid only if every transaction in it is: proposers filter their candidates
with ``select_valid`` (which the mempool's ``reap`` does for them).

**Economics.** Fees and the block reward go to the block's proposer; each included model
update mints ``update_reward`` to its trainer. Evidence (anyone may submit it, paying the
fee) burns ``slash_fraction_ppm`` of the offender's bonded stake and of its unbonding
entries created at or after the offence height, and jails it for good. Evidence is two
conflicting votes (``Evidence``) or proposals (``ProposalEvidence``) signed by a key that
was a validator at the offence height, by the set in effect then, not by today's bonds:
the schedule of validator sets keeps the sets of the last ``unbonding_blocks`` heights
for that. An offence is identified by (validator, height, round, vote type; 0 for a
proposal) and punished once. Unstaked tokens
return to the balance ``unbonding_blocks`` after the unstake. Validator-set changes made
by block H take effect at H + ``valset_delay``.

**FL boundary.** The aggregation itself is not checked here (the node re-computes it in
``process_proposal``). The ledger enforces who may train, one update per trainer per round,
the round/base model of each update, and that a block including updates advances the
round (header ``fl_round`` = current + 1, ``global_model_hash`` = the aggregate) while any other
block repeats the current values. A round closes with at least ``min_updates`` updates, or
with at least one once ``round_timeout_blocks`` blocks have passed since it opened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated

from consensus.types import (
    MAX_VALIDATORS,
    CommitError,
    DuplicateVoteEvidence,
    Validator,
    ValidatorSet,
)
from node.core.codec import U8, U32, U64, Bytes20, Bytes32, CodecError, Record, Seq
from node.core.crypto import address_of
from node.ledger.block import Block, BlockError, commit_hash, txs_root
from node.ledger.genesis import PPM, Genesis
from node.ledger.tx import (
    MAX_TX_BYTES,
    BadNonce,
    BadSignature,
    DuplicateUpdate,
    Evidence,
    EvidenceError,
    FeeTooLow,
    InsufficientFunds,
    InsufficientStake,
    ModelUpdate,
    NotATrainer,
    ProposalEvidence,
    Stake,
    StaleUpdate,
    Transfer,
    Tx,
    TxError,
    TxTooLarge,
    Unstake,
    WrongChain,
)

__all__ = [
    "Account",
    "Bond",
    "ChainMeta",
    "State",
    "Trainer",
    "UnbondingQueue",
]

U64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------- records


class Account(Record):
    balance: U64
    nonce: U64


class Bond(Record):
    """Stake bonded by one key; it is a validator while ``stake`` >= the minimum and not
    jailed. Jailing is permanent for that key (the stake can still be unbonded)."""

    public_key: Bytes32
    stake: U64
    jailed: bool


class UnbondingEntry(Record):
    address: Bytes20
    amount: U64
    created: U64  # height of the unstake; slashing reaches entries created after an offence


class UnbondingQueue(Record):
    """Everything that matures at one height (the key holds the height)."""

    entries: Annotated[tuple[UnbondingEntry, ...], Seq(100_000)]


class Trainer(Record):
    genesis: bool  # listed in genesis (otherwise registered by stake)
    contributions: U64  # model updates included so far
    next_round: U64  # last contributed round + 1 (0: never contributed)


class Offence(Record):
    """Marker that (validator, height, round, type) was already punished."""

    validator: Bytes20
    height: U64
    round: U32
    type: U8


class ScheduledSet(Record):
    height: U64  # first height this set is in effect for
    validators: ValidatorSet


# Sets the schedule holds: the ones in effect and pending, and the history evidence needs.
MAX_SCHEDULE_ENTRIES = 256


class ValsetSchedule(Record):
    entries: Annotated[tuple[ScheduledSet, ...], Seq(MAX_SCHEDULE_ENTRIES)]


class ChainMeta(Record):
    height: U64  # last applied height (0 at genesis)
    time_ms: U64
    last_block_hash: Bytes32  # the genesis hash at height 0
    fl_round: U64
    global_model: Bytes32
    round_start_height: U64


_META = b"m"
_BOND = ord("v")
_SCHED = b"s"
_KINDS: dict[int, type[Record]] = {
    ord("a"): Account,
    ord("v"): Bond,
    ord("u"): UnbondingQueue,
    ord("t"): Trainer,
    ord("o"): Offence,
    ord("s"): ValsetSchedule,
    ord("m"): ChainMeta,
}


def _k_acct(addr: bytes) -> bytes:
    return b"a" + addr


def _k_bond(addr: bytes) -> bytes:
    return b"v" + addr


def _k_unbond(height: int) -> bytes:
    return b"u" + height.to_bytes(8, "big")


def _k_trainer(addr: bytes) -> bytes:
    return b"t" + addr


def _leaf(key: bytes, value: Record) -> bytes:
    return hashlib.sha256(bytes((len(key),)) + key + value.encode()).digest()


_EMPTY_BUCKET = hashlib.sha256(b"").digest()
_EMPTY_GROUP = hashlib.sha256(_EMPTY_BUCKET * 256).digest()
_ZERO_ACCOUNT = Account(0, 0)


# --------------------------------------------------------------------------- state


class State:
    """The deterministic ledger state; see the module docstring for the rules."""

    def __init__(self, genesis: Genesis, items: dict[bytes, Record]) -> None:
        self.genesis = genesis
        self._kv: dict[bytes, Record] = {}
        self._buckets: dict[int, set[bytes]] = {}
        self._leaves: dict[bytes, bytes] = {}
        self._bucket_digest: dict[int, bytes] = {}  # absent: empty bucket
        self._group_digest: list[bytes] = [_EMPTY_GROUP] * 256
        self._dirty_buckets: set[int] = set()
        self._all_groups_dirty = True
        self._journal: list[dict[bytes, Record | None]] = []
        self._bond_keys: set[bytes] = set()  # index for active_set(): bonds are few
        self._last_changes: dict[bytes, Record | None] = {}
        self._last_undo: dict[bytes, Record | None] = {}
        self._bonds_changed = False
        for k, v in items.items():
            self._set(k, v)

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> State:
        genesis.validate()
        items: dict[bytes, Record] = {}
        for a in genesis.accounts:
            items[_k_acct(a.address)] = Account(a.balance, 0)
        for v in genesis.validators:
            items[_k_bond(v.address)] = Bond(v.public_key, v.stake, False)
        for t in genesis.trainers:
            items[_k_trainer(t)] = Trainer(True, 0, 0)
        vset = ValidatorSet.of([Validator(v.public_key, v.stake) for v in genesis.validators])
        items[_SCHED] = ValsetSchedule((ScheduledSet(1, vset),))
        items[_META] = ChainMeta(
            height=0,
            time_ms=genesis.genesis_time_ms,
            last_block_hash=genesis.hash,
            fl_round=0,
            global_model=genesis.fl.initial_model_hash,
            round_start_height=0,
        )
        return cls(genesis, items)

    @classmethod
    def from_encoded(cls, genesis: Genesis, rows: Iterable[tuple[bytes, bytes]]) -> State:
        """Rebuild from persisted (key, canonical encoding) rows; raises CodecError."""
        items: dict[bytes, Record] = {}
        for k, v in rows:
            kind = _KINDS.get(k[0]) if k else None
            if kind is None:
                raise CodecError(f"unknown state key {k.hex()}")
            items[k] = kind.decode(v)
        if _META not in items or _SCHED not in items:
            raise CodecError("state lacks chain metadata")
        return cls(genesis, items)

    def items(self) -> Iterator[tuple[bytes, Record]]:
        return iter(self._kv.items())

    # ----------------------------------------------------------------- raw map

    def _set(self, key: bytes, value: Record | None) -> None:
        if self._journal:
            top = self._journal[-1]
            if key not in top:
                top[key] = self._kv.get(key)
        self._write(key, value)

    def _write(self, key: bytes, value: Record | None) -> None:
        b = int.from_bytes(key[-2:], "big")
        self._dirty_buckets.add(b)
        self._leaves.pop(key, None)
        if value is None:
            self._kv.pop(key, None)
            bucket = self._buckets.get(b)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._buckets[b]
            if key[0] == _BOND:
                self._bond_keys.discard(key)
        else:
            self._kv[key] = value
            self._buckets.setdefault(b, set()).add(key)
            if key[0] == _BOND:
                self._bond_keys.add(key)

    # Savepoints: a stack of undo maps (key -> record before the savepoint's first write).

    def _begin(self) -> None:
        self._journal.append({})

    def _rollback(self) -> None:
        for k, v in self._journal.pop().items():
            self._write(k, v)

    def _release(self) -> dict[bytes, Record | None]:
        """Keep a savepoint's writes; returns the touched keys' new records."""
        child = self._journal.pop()
        if self._journal:
            parent = self._journal[-1]
            for k, v in child.items():
                parent.setdefault(k, v)
        return {k: self._kv.get(k) for k in child}

    def app_hash(self) -> bytes:
        groups = set(range(256)) if self._all_groups_dirty else set()
        for b in self._dirty_buckets:
            groups.add(b >> 8)
            keys = self._buckets.get(b)
            if not keys:
                self._bucket_digest.pop(b, None)
                continue
            h = hashlib.sha256()
            for k in sorted(keys):
                leaf = self._leaves.get(k)
                if leaf is None:
                    leaf = self._leaves[k] = _leaf(k, self._kv[k])
                h.update(leaf)
            self._bucket_digest[b] = h.digest()
        self._dirty_buckets.clear()
        self._all_groups_dirty = False
        get = self._bucket_digest.get
        for g in groups:
            base = g << 8
            self._group_digest[g] = hashlib.sha256(
                b"".join(get(base | i, _EMPTY_BUCKET) for i in range(256))
            ).digest()
        return hashlib.sha256(b"".join(self._group_digest)).digest()

    def recompute_app_hash(self) -> bytes:
        """The app hash from scratch, ignoring every cache (a self-check, and the
        baseline the incremental scheme is measured against)."""
        self._leaves.clear()
        self._bucket_digest.clear()
        self._dirty_buckets = set(self._buckets)
        self._all_groups_dirty = True
        return self.app_hash()

    def last_changes(self) -> dict[bytes, bytes | None]:
        """Keys written by the last applied block, with their new encodings (None: deleted)."""
        return {k: (None if v is None else v.encode()) for k, v in self._last_changes.items()}

    # ----------------------------------------------------------------- queries

    @property
    def meta(self) -> ChainMeta:
        m = self._kv[_META]
        assert isinstance(m, ChainMeta)
        return m

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    @property
    def height(self) -> int:
        return self.meta.height

    def account(self, address: bytes) -> Account:
        a = self._kv.get(_k_acct(address))
        return a if isinstance(a, Account) else _ZERO_ACCOUNT

    def bond(self, address: bytes) -> Bond | None:
        b = self._kv.get(_k_bond(address))
        return b if isinstance(b, Bond) else None

    def trainer(self, address: bytes) -> Trainer | None:
        t = self._kv.get(_k_trainer(address))
        return t if isinstance(t, Trainer) else None

    def unbonding(self, mature_height: int) -> tuple[UnbondingEntry, ...]:
        q = self._kv.get(_k_unbond(mature_height))
        return q.entries if isinstance(q, UnbondingQueue) else ()

    def is_trainer(self, address: bytes) -> bool:
        t = self.trainer(address)
        if t is not None and t.genesis:
            return True
        b = self.bond(address)
        return b is not None and not b.jailed and b.stake >= self.genesis.staking.min_trainer_stake

    def offence_punished(self, o: Offence) -> bool:
        return (b"o" + o.hash) in self._kv

    def _schedule(self) -> ValsetSchedule:
        s = self._kv[_SCHED]
        assert isinstance(s, ValsetSchedule)
        return s

    def validator_set(self, height: int | None = None) -> ValidatorSet:
        """The validator set in effect at ``height`` (default: the next height)."""
        h = self.height + 1 if height is None else height
        current = None
        for e in self._schedule().entries:
            if e.height <= h:
                current = e.validators
        if current is None:
            raise KeyError(f"no validator set known for height {h}")
        return current

    def min_fee(self, size: int) -> int:
        f = self.genesis.fees
        return f.base + f.per_byte * size

    # ----------------------------------------------------------------- transactions

    def check_tx(self, tx: Tx, pending: Sequence[Tx] = ()) -> None:
        """Raise a TxError unless ``tx`` would apply in the next block after ``pending``
        (the sender's earlier, not yet committed transactions, which are assumed valid)."""
        self._begin()
        try:
            height = self.height + 1
            for p in pending:
                self._apply_tx(p, height, [])
            self._apply_tx(tx, height, [])
        finally:
            self._rollback()

    def check_sequence(self, txs: Sequence[Tx]) -> tuple[int, TxError | None]:
        """Apply ``txs`` in order on a scratch copy; returns how many applied before the
        first failure and that failure (None if all did). The state is unchanged."""
        self._begin()
        try:
            height = self.height + 1
            for i, tx in enumerate(txs):
                try:
                    self._apply_tx(tx, height, [])
                except TxError as e:
                    return i, e
            return len(txs), None
        finally:
            self._rollback()

    def select_valid(self, txs: Iterable[Tx]) -> list[Tx]:
        """The txs that apply one after another in the next block (for proposers);
        invalid ones are skipped. The state is unchanged afterwards."""
        out: list[Tx] = []
        self._begin()
        try:
            height = self.height + 1
            for tx in txs:
                self._begin()
                try:
                    self._apply_tx(tx, height, [])
                except TxError:
                    self._rollback()
                    continue
                self._release()
                out.append(tx)
        finally:
            self._rollback()
        return out

    def _check_stateless(self, tx: Tx) -> None:
        if tx.chain_id != self.chain_id:
            raise WrongChain(f"tx for chain {tx.chain_id!r}, this is {self.chain_id!r}")
        if tx.size > MAX_TX_BYTES:
            raise TxTooLarge(f"tx of {tx.size} bytes exceeds {MAX_TX_BYTES}")
        need = self.min_fee(tx.size)
        if tx.fee < need:
            raise FeeTooLow(f"fee {tx.fee} below minimum {need} for {tx.size} bytes")
        if not tx.signature_ok():
            raise BadSignature("signature does not verify")

    def _credit(self, addr: bytes, amount: int) -> None:
        if amount == 0:
            return
        a = self.account(addr)
        if a.balance + amount > U64_MAX:
            raise TxError("balance would overflow")
        self._set(_k_acct(addr), Account(a.balance + amount, a.nonce))

    def _apply_tx(self, tx: Tx, height: int, updates: list[bytes]) -> None:
        self._check_stateless(tx)
        sender = tx.address
        acct = self.account(sender)
        if tx.nonce != acct.nonce:
            raise BadNonce(f"nonce {tx.nonce}, expected {acct.nonce}")
        body = tx.body
        spend = tx.fee
        if isinstance(body, Transfer | Stake):
            spend += body.amount
        if acct.balance < spend:
            raise InsufficientFunds(f"balance {acct.balance} < {spend}")
        self._set(_k_acct(sender), Account(acct.balance - spend, acct.nonce + 1))

        if isinstance(body, Transfer):
            self._credit(body.to, body.amount)
        elif isinstance(body, Stake):
            bond = self.bond(sender) or Bond(tx.sender, 0, False)
            if bond.stake + body.amount > U64_MAX:
                raise TxError("stake would overflow")
            self._set(_k_bond(sender), bond.replace(stake=bond.stake + body.amount))
            self._bonds_changed = True
        elif isinstance(body, Unstake):
            self._unstake(sender, body.amount, height)
        elif isinstance(body, ModelUpdate):
            self._model_update(sender, body)
            updates.append(sender)
        else:
            assert isinstance(body, Evidence | ProposalEvidence)
            self._slash(body, height)

    def _unstake(self, sender: bytes, amount: int, height: int) -> None:
        bond = self.bond(sender)
        if bond is None or bond.stake < amount:
            have = 0 if bond is None else bond.stake
            raise InsufficientStake(f"unstake {amount} but only {have} bonded")
        left = bond.stake - amount
        # The bond record stays even at zero stake: evidence against a validator that
        # just left must still verify (it carries the key) and reach its unbonding stake.
        self._set(_k_bond(sender), bond.replace(stake=left))
        self._bonds_changed = True
        mature = height + self.genesis.staking.unbonding_blocks
        q = self.unbonding(mature)
        self._set(_k_unbond(mature), UnbondingQueue((*q, UnbondingEntry(sender, amount, height))))

    def _model_update(self, sender: bytes, u: ModelUpdate) -> None:
        if not self.is_trainer(sender):
            raise NotATrainer("sender is neither a genesis trainer nor bonded enough stake")
        meta = self.meta
        if u.round != meta.fl_round:
            raise StaleUpdate(f"update for round {u.round}, current round is {meta.fl_round}")
        if u.base_model != meta.global_model:
            raise StaleUpdate("update is not based on the current global model")
        if u.payload_size > self.genesis.fl.max_update_bytes:
            raise TxTooLarge(
                f"update payload of {u.payload_size} bytes exceeds "
                f"{self.genesis.fl.max_update_bytes}"
            )
        t = self.trainer(sender) or Trainer(False, 0, 0)
        if t.next_round == u.round + 1:
            raise DuplicateUpdate(f"trainer already contributed to round {u.round}")
        self._set(_k_trainer(sender), Trainer(t.genesis, t.contributions + 1, u.round + 1))
        self._credit(sender, self.genesis.rewards.update_reward)

    def _slash(self, body: Evidence | ProposalEvidence, height: int) -> None:
        ev = body.evidence
        period = self.genesis.staking.unbonding_blocks
        if ev.height >= height:
            raise EvidenceError("evidence from the future")
        if height - ev.height > period:
            raise EvidenceError(f"evidence older than the unbonding period ({period} blocks)")
        try:
            vset = self.validator_set(ev.height)
        except KeyError:
            raise EvidenceError(f"validator set of height {ev.height} no longer known") from None
        member = vset.by_address().get(ev.validator)
        if member is None:
            raise EvidenceError(
                f"evidence against a key that was not a validator at height {ev.height}"
            )
        if not ev.verify(self.chain_id, member.public_key):
            raise EvidenceError("evidence is not validly signed on this chain")
        bond = self.bond(ev.validator)
        if bond is None:
            raise EvidenceError("evidence against a validator without a bond")
        if isinstance(ev, DuplicateVoteEvidence):
            offence = Offence(ev.validator, ev.height, ev.vote_a.round, ev.vote_a.type)
        else:
            offence = Offence(ev.validator, ev.height, ev.proposal_a.round, 0)
        okey = b"o" + offence.hash
        if okey in self._kv:
            raise EvidenceError("this offence was already punished")
        self._set(okey, offence)
        ppm = self.genesis.staking.slash_fraction_ppm
        self._set(
            _k_bond(ev.validator),
            bond.replace(stake=bond.stake - bond.stake * ppm // PPM, jailed=True),
        )
        self._bonds_changed = True
        # Stake that started unbonding after the offence is still on the hook.
        for mature in range(ev.height + period, height + period + 1):
            q = self.unbonding(mature)
            if not any(e.address == ev.validator and e.created >= ev.height for e in q):
                continue
            entries = tuple(
                e.replace(amount=e.amount - e.amount * ppm // PPM)
                if e.address == ev.validator and e.created >= ev.height
                else e
                for e in q
            )
            self._set(_k_unbond(mature), UnbondingQueue(entries))

    # ----------------------------------------------------------------- blocks

    def apply_block(
        self, block: Block, *, verify_commit: bool = True
    ) -> tuple[bytes, list[Validator]]:
        """Apply ``block`` atomically; returns (app hash after it, validator updates).

        Validator updates are ABCI-style: the validators whose power changes at height
        ``block.height + valset_delay``, with power 0 for removals. ``verify_commit=False``
        skips checking ``last_commit`` signatures when consensus has already done so.
        """
        assert not self._journal, "apply_block inside another state transaction"
        self._begin()
        self._bonds_changed = False
        try:
            updates = self._apply_block(block, verify_commit)
        except TxError as e:
            self._rollback()
            raise BlockError(str(e)) from e
        except BaseException:
            self._rollback()
            raise
        self._last_undo = self._journal[-1]
        self._last_changes = self._release()
        return self.app_hash(), updates

    def simulate_block(
        self, block: Block, *, verify_commit: bool = True
    ) -> tuple[bytes, list[Validator]]:
        """What ``apply_block`` would return, leaving the state unchanged (for
        ``process_proposal``: check a proposed block without committing it)."""
        last_undo, last_changes = self._last_undo, self._last_changes
        result = self.apply_block(block, verify_commit=verify_commit)
        self.revert_last_block()
        self._last_undo, self._last_changes = last_undo, last_changes
        return result

    def revert_last_block(self) -> None:
        """Undo the last ``apply_block`` (when persisting it failed)."""
        for k, v in self._last_undo.items():
            self._write(k, v)
        self._last_undo, self._last_changes = {}, {}

    def _apply_block(self, block: Block, verify_commit: bool) -> list[Validator]:
        h = block.header
        meta = self.meta
        if h.chain_id != self.chain_id:
            raise BlockError(f"block for chain {h.chain_id!r}")
        if h.height != meta.height + 1:
            raise BlockError(f"block height {h.height}, expected {meta.height + 1}")
        if h.prev_hash != meta.last_block_hash:
            raise BlockError("prev_hash does not match the last block")
        if h.time_ms < meta.time_ms or (h.height > 1 and h.time_ms == meta.time_ms):
            raise BlockError("block time does not increase")
        if h.app_hash != self.app_hash():
            raise BlockError("app_hash does not match the state after the previous block")
        vset = self.validator_set(h.height)
        if h.validators_hash != vset.hash:
            raise BlockError("validators_hash does not match the validator set")
        if h.proposer not in vset.by_address():
            raise BlockError("proposer is not a validator at this height")
        if (h.height == 1) != (block.last_commit is None):
            raise BlockError("last_commit is required for every height but 1")
        if block.last_commit is not None:
            c = block.last_commit
            if c.height != meta.height or c.block_hash != meta.last_block_hash:
                raise BlockError("last_commit is not for the previous block")
            if verify_commit:
                try:
                    self.validator_set(meta.height).verify_commit(self.chain_id, c)
                except CommitError as e:
                    raise BlockError(f"last_commit: {e}") from e
        if txs_root(block.txs) != h.txs_root:
            raise BlockError("txs_root does not match the transactions")
        if commit_hash(block.last_commit) != h.last_commit_hash:
            raise BlockError("last_commit_hash does not match last_commit")

        trainers: list[bytes] = []
        fees = 0
        for i, tx in enumerate(block.txs):
            try:
                self._apply_tx(tx, h.height, trainers)
            except TxError as e:
                raise BlockError(f"tx {i} ({tx.hash.hex()[:16]}): {e.code}: {e}") from e
            fees += tx.fee

        fl = self.genesis.fl
        if trainers:
            age = h.height - meta.round_start_height
            if len(trainers) < fl.min_updates and age < fl.round_timeout_blocks:
                raise BlockError(
                    f"{len(trainers)} updates close round {meta.fl_round} early "
                    f"(minimum {fl.min_updates}, or wait {fl.round_timeout_blocks} blocks)"
                )
            if h.fl_round != meta.fl_round + 1:
                raise BlockError("a block with model updates must advance fl_round by one")
            round_start = h.height
        else:
            if h.fl_round != meta.fl_round or h.global_model_hash != meta.global_model:
                raise BlockError("a block without model updates must not change the FL round")
            round_start = meta.round_start_height

        try:
            self._credit(h.proposer, self.genesis.rewards.block_reward + fees)
        except TxError as e:
            raise BlockError(str(e)) from e
        for entry in self.unbonding(h.height):
            self._credit(entry.address, entry.amount)
        if self.unbonding(h.height):
            self._set(_k_unbond(h.height), None)

        updates = self._update_valset(h.height) if self._bonds_changed else []
        self._set(
            _META,
            ChainMeta(
                height=h.height,
                time_ms=h.time_ms,
                last_block_hash=block.hash,
                fl_round=h.fl_round,
                global_model=h.global_model_hash,
                round_start_height=round_start,
            ),
        )
        self._prune_schedule(h.height)
        return updates

    def active_set(self) -> ValidatorSet:
        """Validators as the bonds stand now: unjailed, at least the minimum stake, the
        MAX_VALIDATORS largest (ties by address)."""
        min_stake = max(1, self.genesis.staking.min_validator_stake)
        cands = []
        for k in self._bond_keys:
            v = self._kv[k]
            if isinstance(v, Bond) and not v.jailed and v.stake >= min_stake:
                cands.append(v)
        cands.sort(key=lambda b: (-b.stake, address_of(b.public_key)))
        return ValidatorSet.of([Validator(b.public_key, b.stake) for b in cands[:MAX_VALIDATORS]])

    def _update_valset(self, height: int) -> list[Validator]:
        sched = self._schedule()
        latest = sched.entries[-1].validators
        new = self.active_set()
        if new == latest:
            return []
        old = latest.by_address()
        cur = new.by_address()
        updates = [v for a, v in cur.items() if old.get(a) != v]
        updates += [Validator(v.public_key, 0) for a, v in old.items() if a not in cur]
        updates.sort(key=lambda v: v.address)
        at = height + self.genesis.staking.valset_delay
        entries = (*(e for e in sched.entries if e.height < at), ScheduledSet(at, new))
        self._set(_SCHED, ValsetSchedule(entries))
        return updates

    def _prune_schedule(self, height: int) -> None:
        # The next block needs the sets for ``height`` (its last_commit) and later, and
        # evidence the sets of the last ``unbonding_blocks`` heights (the offence height's
        # set decides who could equivocate). Bounded by the record's capacity: at worst
        # the oldest sets go first, and evidence that old is refused as unverifiable.
        entries = self._schedule().entries
        oldest = max(1, height - self.genesis.staking.unbonding_blocks)
        keep_from = current = 0
        for i, e in enumerate(entries):
            if e.height <= oldest:
                keep_from = i
            if e.height <= height:
                current = i
        keep_from = min(current, max(keep_from, len(entries) - (MAX_SCHEDULE_ENTRIES - 1)))
        if keep_from:
            self._set(_SCHED, ValsetSchedule(entries[keep_from:]))
