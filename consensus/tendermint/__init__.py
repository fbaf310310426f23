"""The Tendermint BFT engine (Buchman, Kwon, Milosevic, arXiv:1807.04938, Algorithm 1).

Its registration: the state machine (``engine``), its genesis options (its timeouts) and
its simulator adapter (``simulation``) and the check gossip runs on its messages
(``screen``). Catch-up gossip (``catchup``), the per-height
state (``height``), wire messages, proposer schedule and validator sets have their own
modules.
"""

from consensus.spec import EngineSpec
from consensus.tendermint.engine import OPTIONS, TendermintEngine
from consensus.tendermint.screen import screen
from consensus.tendermint.simulation import TendermintSim

__all__ = ["ENGINE"]

ENGINE = EngineSpec("tendermint", TendermintEngine, OPTIONS, TendermintSim(), screen)
