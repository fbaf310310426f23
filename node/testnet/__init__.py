"""Local testnet tooling: starting and watching node processes on one machine, and the
machine tuning that only such a testnet needs (training slots, start-up code pages).

May import: ``node.core``, ``node.home``, ``node.config`` and ``node.rpc`` (client);
it runs nodes as processes and never imports the daemon.
"""
