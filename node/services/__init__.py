"""Long-running parts of a node, each owning its own state:

- ``consensus_driver``  the engine's event pump, and ``ConsensusHandle`` (the running one)
- ``engine_factory``    the engine for the next height, fresh or from a checkpoint
- ``catchup``           the catch-up supervisor: start-up sync, lag watcher, engine restarts
- ``block_sync``, ``blob_sync``  blocks, checkpoints and blobs from peers, verified
- ``rounds``            FL round tracking and the FL status (/status, /model, /fl/history)
- ``round_log``         the per-round benchmark log (``rounds.jsonl``)
- ``gossip_topics``, ``gossip``  the topics and their validators; what the node does with
                        received txs, updates and consensus messages, and its publish path
- ``evidence``          equivocation found by the engine, submitted as an evidence tx
- ``fl_worker``         training and evaluation off the event loop
- ``status``            the records the services fill and the RPC view serves

May import: ``node.core``, ``node.ledger``, ``node.store``, ``node.app``, ``node.p2p``,
``node.config``, ``consensus`` and ``fl``. The daemon builds and starts them and injects
what they need from above (metrics, the RPC view's submit path, training slots); services
never import the daemon, the RPC layer, the testnet tooling or the CLI.
"""
