"""The ledger: transactions, blocks, genesis and the deterministic state machine."""
