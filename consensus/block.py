"""The engine's view of a block: the hash votes and commits refer to, and opaque bytes.

It sits below both the event vocabulary (``consensus.engine``, whose events and effects
carry blocks) and the application boundary (``consensus.app``, which builds and checks
them), so neither has to import the other to name it.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.core.codec import sha256

__all__ = ["Block", "sha256_id"]


@dataclass(frozen=True)
class Block:
    """An application block as the engine sees it: an identifier and opaque bytes.

    The engine never parses ``data``: the application owns the block format. The engine
    asks the application's ``block_id`` whether proposed bytes are the block of ``hash``
    before it acts on them (``EngineConfig.block_id``); ``process_proposal`` checks it too.
    """

    hash: bytes
    data: bytes


def sha256_id(data: bytes) -> bytes:
    """The id of applications whose block id is the SHA-256 of its bytes (the simulator's
    application, and test blocks); the default ``EngineConfig.block_id``."""
    return sha256(data)
