"""The stores' errors, below every store so that each can raise them."""

from __future__ import annotations

__all__ = ["CorruptStore", "StoreError"]


class StoreError(Exception):
    """The store is unreadable, belongs to another chain, or its contents are inconsistent."""


class CorruptStore(StoreError):
    """A database file is damaged; the message names it and what to do about it."""
