"""The chain application: the ABCI++-shaped ``NodeApp`` that consensus drives, and the mempool.

Owns: block building and re-checking (FL aggregation happens in ``prepare_proposal`` and is
recomputed in ``process_proposal``), finalize/commit against the ledger, the pool of
admitted transactions and update payloads, and the one check a model update's payload
passes wherever it enters (``updates``: RPC, gossip and this node's own worker alike).

May import: ``node.core``, ``node.ledger``, ``node.store``, ``consensus`` (the boundary
types) and ``fl``. Never the network, services, RPC or daemon.
"""
