"""The Tendermint BFT engine (Buchman, Kwon, Milosevic, arXiv:1807.04938, Algorithm 1)."""
