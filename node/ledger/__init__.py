"""The ledger: transactions, blocks, genesis and the deterministic state machine.

May import: ``node.core``, ``consensus`` (certificate and validator types) and ``fl``
(aggregation settings in genesis). Nothing here does I/O except ``ledger``'s store handle.
"""
