"""The foundation every layer shares: canonical codec, keys and signatures, crash-safe files.

Owns: ``codec`` (the canonical msgpack ``Record`` encoding and SHA-256), ``crypto``
(Ed25519 account keys, addresses, key files), ``atomic_file`` (write-rename with fsync).

May import: the standard library and third-party packages only. ``consensus/`` and ``fl/``
import this package and nothing else of ``node``; see ``tests/test_layers.py``.
"""
