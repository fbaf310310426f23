"""An asyncio host that speaks libp2p on the wire: TCP, Noise, yamux, identify, GossipSub."""
