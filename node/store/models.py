"""Global models by their on-chain hash, kept in the content-addressed blob store.

A model is stored as ``fl.models.canonical_bytes(params)``: the SHA-256 of those bytes IS
``fl.models.model_hash(params)``, the value block headers carry, so the blob store's own
name-is-checksum rule verifies a model fetched from a peer without a second hash scheme.
Parsing goes back through the architecture's fixed layout and re-encodes to compare, so a
blob that merely hashes right but is laid out for another architecture is refused.

Round 0 is special: genesis may leave ``initial_model_hash`` all zeros, meaning "the model
``fl.models.init_params(model, init_seed)`` derives"; ``resolve`` maps that placeholder to
the derived parameters so every node trains and aggregates from the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import struct

import numpy as np

from fl.models import Params, architecture, canonical_bytes, init_params, model_hash
from node.ledger.genesis import FLParams
from node.store.blobs import BlobError, BlobStore

__all__ = ["ZERO_HASH", "ModelBytesError", "ModelStore", "params_from_canonical"]

log = logging.getLogger(__name__)

ZERO_HASH = bytes(32)


class ModelBytesError(ValueError):
    """Bytes are not the canonical encoding of a model of the expected architecture."""


def params_from_canonical(data: bytes, arch_name: str) -> Params:
    """Parse ``canonical_bytes`` output for architecture ``arch_name`` (validated)."""
    arch = architecture(arch_name)
    view = memoryview(data)
    out: Params = {}
    # Layout: domain, u32 count, then per tensor: u32 name len, name, "F32", u8 ndim,
    # ndim x u64 shape, float32 LE data. Only the expected layout is accepted.
    domain = canonical_bytes({})[:-4]
    pos = len(domain)
    if len(data) < pos + 4 or bytes(view[:pos]) != domain:
        raise ModelBytesError("not canonical model bytes (bad prefix)")
    (count,) = struct.unpack_from("<I", view, pos)
    pos += 4
    if count != len(arch.tensors):
        raise ModelBytesError(f"{count} tensors, {arch_name} has {len(arch.tensors)}")
    for t in arch.tensors:
        name = t.name.encode()
        header = (
            struct.pack("<I", len(name))
            + name
            + b"F32"
            + struct.pack("<B", len(t.shape))
            + struct.pack(f"<{len(t.shape)}Q", *t.shape)
        )
        if bytes(view[pos : pos + len(header)]) != header:
            raise ModelBytesError(f"tensor {t.name} header does not match {arch_name}")
        pos += len(header)
        nbytes = 4 * t.numel
        if pos + nbytes > len(data):
            raise ModelBytesError("model bytes are truncated")
        arr = np.frombuffer(view[pos : pos + nbytes], dtype="<f4").astype(np.float32)
        out[t.name] = arr.reshape(t.shape)
        pos += nbytes
    if pos != len(data):
        raise ModelBytesError(f"{len(data) - pos} trailing bytes after the model")
    if canonical_bytes(out) != bytes(data):
        raise ModelBytesError("model bytes are not canonical")
    try:
        arch.check(out)
    except ValueError as e:
        raise ModelBytesError(str(e)) from e
    return out


class ModelStore:
    """Global models of one chain: resolve a header hash to parameters, store new ones."""

    def __init__(self, blobs: BlobStore, fl: FLParams) -> None:
        self.blobs = blobs
        self.arch = fl.model
        self.fl = fl
        self._cache: tuple[bytes, Params] | None = None

    def initial(self) -> Params:
        return init_params(self.fl.model, self.fl.init_seed)

    def has(self, ledger_hash: bytes) -> bool:
        return ledger_hash == ZERO_HASH or self.blobs.has(ledger_hash)

    def intact(self, ledger_hash: bytes) -> bool:
        """Whether this node holds the model and its bytes are undamaged: they are read and
        parsed (cheap next to a fetch, so a node checks its current model at start).
        Bytes that no longer hash to their name are removed by the blob store, so the
        caller fetches the model again from peers by its hash."""
        try:
            self.resolve(ledger_hash)
        except KeyError:
            return False
        except (BlobError, ModelBytesError) as e:
            log.warning("global model %s is unusable: %s", ledger_hash.hex()[:16], e)
            return False
        return True

    def resolve(self, ledger_hash: bytes) -> Params:
        """The parameters behind a header's ``global_model_hash``; raises KeyError when
        this node does not hold them (fetch them by hash first) or BlobError if corrupt."""
        if self._cache is not None and self._cache[0] == ledger_hash:
            return self._cache[1]
        if ledger_hash == ZERO_HASH:
            params = self.initial()
        else:
            data = self.blobs.get(ledger_hash)  # BlobNotFound is a KeyError
            params = params_from_canonical(data, self.arch)
        self._cache = (ledger_hash, params)
        return params

    def fl_hash(self, ledger_hash: bytes) -> bytes:
        """The ``fl.models.model_hash`` trainers put in their payloads' ``base_hash``."""
        if ledger_hash == ZERO_HASH:
            return model_hash(self.resolve(ledger_hash))
        return ledger_hash

    def put(self, params: Params, *, round: int) -> bytes:
        """Store a model; returns its hash (== ``model_hash(params)``)."""
        data = canonical_bytes(params)
        digest = self.blobs.put(data, round=round)
        self._cache = (digest, params)
        return digest

    def put_bytes(self, data: bytes, expected: bytes, *, round: int | None = None) -> Params:
        """Verify and store model bytes received from a peer for hash ``expected``."""
        if hashlib.sha256(data).digest() != expected:
            raise ModelBytesError("model bytes do not hash to the requested model")
        params = params_from_canonical(data, self.arch)
        try:
            self.blobs.put(data, round=round)
        except BlobError as e:
            raise ModelBytesError(f"cannot store model: {e}") from e
        return params
