"""Long-running parts of a node, each owning its own state: consensus driver, block and blob
sync, catch-up, FL round tracking, gossip topics and handlers, the FL worker.

May import: ``node.core``, ``node.ledger``, ``node.store``, ``node.app``, ``node.p2p``,
``consensus`` and ``fl``. The daemon builds and starts them; services never import the
daemon, the RPC server or the CLI.
"""
