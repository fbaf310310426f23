"""fedchain full node. Packages, lowest layer first (``tests/test_layers.py`` enforces it):

- ``core``      foundation: codec, keys, crash-safe files (imports nothing of the project)
- ``p2p``       the libp2p-compatible host and its protocols (imports ``core``)
- ``ledger``    transactions, blocks, genesis, the state machine
- ``store``     chain, commit, blob and model stores
- ``app``       the ABCI++ application (``NodeApp``) and the mempool
- ``services``  consensus driver, block/blob sync, catch-up, rounds, gossip, FL worker
- ``rpc``       HTTP RPC, metrics, the read view it serves from
- ``config``, ``home``  a node's home directory: config.toml, genesis, keys
- ``daemon``    the composition root: builds the parts in order, starts and stops them
- ``cli``, ``testnet``  the user layer: the ``fedchain`` command, local testnets
"""

__version__ = "0.1.0"
