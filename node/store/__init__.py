"""Persistent storage: the SQLite block/state store and the content-addressed blob store."""
