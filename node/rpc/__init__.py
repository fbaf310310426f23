"""The node's HTTP RPC: JSON endpoints, POST /txs, /model and Prometheus /metrics.

- ``view``    the narrow read interface the server serves from (``NodeView``) and
              ``LocalView``, a concrete one over a Ledger, a Mempool and the status the
              services own (``node.services.status``)
- ``render``  JSON renderings of blocks, transactions and accounts (hex byte strings)
- ``server``  the aiohttp application and ``RPCServer`` (start/close, bound port)
- ``client``  a small urllib client for the CLI
"""
