"""An asyncio host that speaks libp2p on the wire: TCP, Noise, yamux, identify, GossipSub.

Layout (protocol cores are sans-I/O; ``connection`` and ``host`` are the asyncio drivers):

- ``peer_id``      Ed25519 identity keys, peer IDs (identity multihash, base58btc)
- ``multiaddr``    text and binary multiaddrs (/ip4, /ip6, /dns*, /tcp, /p2p)
- ``multistream``  multistream-select 1.0 negotiators
- ``noise``        Noise XX handshake with the libp2p identity payload, transport frames
- ``yamux``        yamux 1.0.0 session: streams, flow-control windows, ping, GoAway
- ``connection``   socket protocol, the upgrade pipeline, Connection and Stream
- ``hostconfig``   HostConfig: the limits and timers of a host and its protocols
- ``peerstore``    PeerStore: addresses, signed records and identify results of peers
- ``behaviour``    the interface between the host and its protocols (below)
- ``host``         Host: listen, dial, stream handlers, counters, bans, notifees
- ``connmgr``      bootstrap, persistent peers with backoff, discovery dials, pruning
- ``identify``, ``ping``, ``peer_record``, ``reqresp``, ``streamio``: protocols and helpers
- ``gossipsub``    the GossipSub v1.1 router and its glue to the Host

How the host and its protocols talk (rust-libp2p's NetworkBehaviour idea, kept small):

- events in: the host calls each ``behaviour.Behaviour`` when a connection is
  established (``first`` for a peer's first) or closed (``last`` for its last) and when
  its own protocols change; ``add_notifee`` is the peer-level form of the same events.
  Inbound streams go to the handler set for their protocol.
- calls out: a protocol uses only ``behaviour.HostAPI``, the host's public methods:
  streams, dials, connections, ``count``, ``report_misbehaviour``, ``spawn`` (a task
  owned by the host), and the host's ``peerstore``, whose methods are the only writers
  of what is known about peers.
- a ``Connection`` reports to its owner through ``connection.ConnectionOwner``: streams
  to serve, counted drops, misbehaviour and its own loss. It never sees the Host type.

Identify and the connection manager are behaviours the host builds for itself. Protocols
import ``behaviour``, never ``host``, so these modules import each other without a cycle
(``tests/test_layers.py`` checks it, and that no module reaches into another's privates).
"""
