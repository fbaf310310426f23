"""fedchain full node: p2p host, ledger, storage, mempool, RPC, CLI and wiring."""

__version__ = "0.1.0"
