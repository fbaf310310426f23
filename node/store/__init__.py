"""Persistent storage, all of it: the SQLite chain store (blocks, state), commit
certificates and checkpoints, the content-addressed blob store and the global-model store.

May import: ``node.core``, ``node.ledger`` (the block format) and ``fl`` (model encoding).
"""
