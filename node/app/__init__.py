"""The chain application: the ABCI++-shaped ``NodeApp`` that consensus drives, and the mempool.

Owns: block building and re-checking (FL aggregation happens in ``prepare_proposal`` and is
recomputed in ``process_proposal``), finalize/commit against the ledger, and the pool of
admitted transactions and update payloads.

May import: ``node.core``, ``node.ledger``, ``node.store``, ``consensus`` (the boundary
types) and ``fl``. Never the network, services, RPC or daemon.
"""
