"""The simulator's safety checks over what honest nodes committed, for any engine.

Agreement: no two honest nodes commit different blocks at one height. Validity: every
block an honest node committed passes the rule honest nodes apply in
``process_proposal`` (``consensus.sim.app.is_valid``). Both look only at CommitBlock
effects, never at an engine's messages or state, so every registered engine is held to
exactly the same checks. (Termination, the liveness check, is the simulator's main loop
reaching the target height before its deadline.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from consensus.block import Block
from consensus.sim.app import is_valid

__all__ = ["agreement_violations", "validity_violations"]

# node -> height -> the block (hash) it committed there
Commits = Mapping[int, Mapping[int, bytes]]


def agreement_violations(commits: Commits, honest: Iterable[int]) -> list[int]:
    """Heights at which honest nodes committed different blocks."""
    nodes = list(honest)
    bad = []
    for h in sorted({h for i in nodes for h in commits[i]}):
        if len({commits[i][h] for i in nodes if h in commits[i]}) > 1:
            bad.append(h)
    return bad


def validity_violations(
    commits: Commits, blocks: Mapping[tuple[int, int], Block], honest: Iterable[int]
) -> list[tuple[int, int]]:
    """(node, height) of every invalid block an honest node committed."""
    return [(i, h) for i in honest for h in commits[i] if not is_valid(h, blocks[(i, h)])]
