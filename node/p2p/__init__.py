"""An asyncio host that speaks libp2p on the wire: TCP, Noise, yamux, identify, GossipSub.

Layout (protocol cores are sans-I/O; ``connection`` and ``host`` are the asyncio drivers):

- ``peer_id``      Ed25519 identity keys, peer IDs (identity multihash, base58btc)
- ``multiaddr``    text and binary multiaddrs (/ip4, /ip6, /dns*, /tcp, /p2p)
- ``multistream``  multistream-select 1.0 negotiators
- ``noise``        Noise XX handshake with the libp2p identity payload, transport frames
- ``yamux``        yamux 1.0.0 session: streams, flow-control windows, ping, GoAway
- ``connection``   socket protocol, the upgrade pipeline, Connection and Stream
- ``host``         Host: listen, dial, stream handlers, counters, bans, notifees
- ``connmgr``      bootstrap, persistent peers with backoff, discovery dials, pruning
- ``identify``, ``ping``, ``peer_record``, ``reqresp``, ``streamio``: protocols and helpers
- ``gossipsub``    the GossipSub v1.1 router and its glue to the Host
"""
