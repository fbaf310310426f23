"""The engine's view of a block: the hash votes and commits refer to, and opaque bytes.

It sits below both the event vocabulary (``consensus.engine``, whose events and effects
carry blocks) and the application boundary (``consensus.app``, which builds and checks
them), so neither has to import the other to name it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Block"]


@dataclass(frozen=True)
class Block:
    """An application block as the engine sees it: an identifier and opaque bytes.

    The engine never parses ``data``: the application owns the block format, and checking
    that the bytes really hash to ``hash`` is part of its ``process_proposal``.
    """

    hash: bytes
    data: bytes
