"""The process's memory budget: every buffer the relay holds for a peer is charged to it while held.

Request bodies (as their bytes arrive, framing included), pipelined requests waiting their turn,
pre-buffered provider answers and answer bytes the client has not read yet are charged when taken and
given back when freed; each connection keeps its own account (http11.HttpConnection.held), bounded by
the per-connection share. Over that share the connection is no longer read (back-pressure) or its
request is refused (413); when the process budget is spent, new work gets 503 with Retry-After while
what was admitted finishes, and an answer that cannot be pre-buffered is streamed instead.

Anchors: Envoy's per-connection buffer limit and overload manager, nginx's fixed per-connection
buffers. The budget counts payload bytes; the interpreter's own overhead on top of them is what the
defaults leave room for under the unit's MemoryMax (relay/docs/config.md).
"""

from __future__ import annotations


class MemoryBudget:
    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Charge `size` bytes if they fit; False (nothing charged) if the budget would be exceeded."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def force(self, size: int) -> None:
        """Charge bytes that are already held (e.g. written to a socket buffer): counted, never refused."""
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size

    @property
    def spent(self) -> bool:
        return self.used >= self.limit
