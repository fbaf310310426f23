"""GossipSub v1.1 (``/meshsub/1.1.0``, with ``/meshsub/1.0.0`` fallback): a sans-I/O router
(router.py, mcache.py, score.py) plus the asyncio service that attaches it to the Host."""
