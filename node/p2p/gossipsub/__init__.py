"""GossipSub v1.2 (``/meshsub/1.2.0``: v1.1 plus IDONTWANT, with ``/meshsub/1.1.0`` and
``/meshsub/1.0.0`` fallback): a sans-I/O router (router.py, mcache.py, score.py) plus the
asyncio service that attaches it to the Host."""
