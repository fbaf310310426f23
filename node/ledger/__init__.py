"""The ledger: transactions, blocks, genesis and the deterministic state machine.

May import: ``node.core``, ``consensus`` (certificate and validator types) and ``fl``
(aggregation settings in genesis). Nothing here does I/O but reading and writing a genesis
file; the state machine bound to its store is ``node.store.ledger``.
"""
