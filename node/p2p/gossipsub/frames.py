"""Varint-length-prefixed RPC frames cut out of received stream chunks, sans-I/O.

The GossipSub service feeds every chunk a ``/meshsub`` stream receives into a FrameParser
straight from the connection's ``data_received``. The common case on a busy stream is a
chunk that holds whole frames (yamux delivers a sender's write as one data frame): those
frames are returned as memoryviews of the chunk itself, so a 100 KB RPC reaches the
protobuf parser without being copied. Only a frame split across chunks is assembled in a
buffer (one copy). A length above ``max_size`` raises MessageTooLarge as soon as its prefix
is complete, before any of the announced bytes are buffered.
"""

from __future__ import annotations

from node.p2p.streamio import MessageTooLarge
from node.p2p.varint import decode_uvarint


class FrameParser:
    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._buf = bytearray()
        self._need = 0  # total length (prefix + body) of the frame being assembled, if known
        self._done: memoryview | None = None  # the body of the frame _fill just completed

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back (0 at a frame boundary)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """The frames completed by ``data``, in order. Returned views stay valid; each
        refers either to ``data`` or to a buffer the parser no longer touches."""
        frames: list[memoryview] = []
        buf = self._buf
        view = memoryview(data)
        pos = 0
        if buf:
            # Finish the frame in progress first: take just the bytes it still needs.
            pos = self._fill(view)
            done = self._done
            if done is None:
                return frames  # still incomplete; everything was consumed into the buffer
            self._done = None
            frames.append(done)
            buf = self._buf
        end = len(view)
        while pos < end:
            head = decode_uvarint(view, pos)
            if head is None:
                buf += view[pos:]
                return frames
            length, start = head
            if length > self._max:
                raise MessageTooLarge(f"RPC of {length} bytes exceeds {self._max}")
            stop = start + length
            if stop > end:
                self._need = stop - pos
                buf += view[pos:]
                return frames
            frames.append(view[start:stop])
            pos = stop
        return frames

    def _fill(self, view: memoryview) -> int:
        """Move bytes of ``view`` into the pending frame; returns how many were used. When
        the frame completes, its body is left in ``_done`` and a new buffer replaces it."""
        buf = self._buf
        if not self._need:
            # The prefix itself was split: complete it a byte at a time (at most 9).
            used = 0
            while used < len(view):
                buf.append(view[used])
                used += 1
                head = decode_uvarint(buf, 0)
                if head is not None:
                    length, start = head
                    if length > self._max:
                        raise MessageTooLarge(f"RPC of {length} bytes exceeds {self._max}")
                    self._need = start + length
                    break
            else:
                return used
            used += self._take(view[used:])
            return used
        return self._take(view)

    def _take(self, view: memoryview) -> int:
        buf = self._buf
        want = self._need - len(buf)
        take = min(want, len(view))
        buf += view[:take]
        if len(buf) == self._need:
            head = decode_uvarint(buf, 0)
            assert head is not None
            # Hand out the body as a view and retire the buffer instead of copying the
            # body out of it: the parser never writes to it again.
            self._done = memoryview(buf).toreadonly()[head[1] :]
            self._buf = bytearray()
            self._need = 0
        return take

    def at_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the stream to end)."""
        return not self._buf
