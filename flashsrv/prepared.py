"""Whole responses ready to write: the fast lane of the connection layer.

The dominant request is a keep-alive HTTP/1.1 GET of a small, fresh, cached file with no
conditional, range or framing headers. Its answer is the same bytes for everyone until the Date
line changes or the file's entry must be looked at again, so the first such answer is kept
here, keyed by the exact request-target, and the next requests cost one dict lookup and one
write. The server's tick empties the table (four times a second), so every kept response is
younger than the path cache's trust period allows and carries the current Date; a reload
empties it at once. Only single-representation files qualify (nothing to negotiate), and the
table is bounded in bytes. No I/O here.

`RepeatedRequests` goes one step further for clients that send the very same bytes again (load
generators, health checks, a browser reloading an asset): the exact bytes of a whole request
that was answered from this table, mapped to what the parser made of them. Bytes arriving at a
message boundary that equal such a request parse to the same request, so the connection can
answer them without running the parser at all. The tick leaves it (the same bytes still parse
the same); a reload or a changed file empties it with everything else.

Files too large for a whole response get a lighter form of the same lane: the connection's
plan of their streamed answer (head, open file, span) is kept per target, so that the next
plain GET skips the lookup and the plan too; the file's residency and version are checked as
on every stream. Such a plan stands while the path cache trusts the entry it was made from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

# Bytes of responses kept at once; past this, new ones are not kept until the next tick.
MAX_BYTES = 8 << 20
# Streamed answers kept at once: each holds its open file (a descriptor) until it is dropped.
MAX_STREAMS = 4096
# Bytes of repeated requests remembered at once, and the largest one remembered.
MAX_REQUEST_BYTES = 1 << 20
MAX_REQUEST = 4096

# What the parser made of a request answered from the table: target, Host, kept header fields.
Parsed = tuple[bytes, bytes, dict[str, str]]


class RepeatedRequests(dict[bytes, Parsed]):
    """The exact bytes of a whole request -> what they parsed to; bounded in bytes."""

    def __init__(self, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.used = 0

    def remember(self, raw: bytes, parsed: Parsed) -> None:
        if len(raw) <= MAX_REQUEST and self.used + len(raw) <= self.max_bytes and raw not in self:
            self[raw] = parsed
            self.used += len(raw)

    def clear(self) -> None:
        super().clear()
        self.used = 0


S = TypeVar("S")


class PreparedResponses(dict[bytes, tuple[bytes, int]], Generic[S]):
    """request-target -> (the complete response: head, Date, blank line, body; body length)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.used = 0
        self.hits = 0  # responses sent from here, and their body bytes (all 200s)
        self.bytes_sent = 0
        # Files too large for a whole response: what their streamed answer needs (the
        # connection's plan, kept as it is), so that the next GET skips the lookups too. They
        # carry no Date, so they outlive a tick; the connection checks on every use that the
        # path cache still trusts the entry they were made from, and `expire` drops those
        # whose entry has left it.
        self.streams: dict[bytes, S] = {}
        self.stream_hits = 0
        # Two sets of repeated requests: what the parser kept of a request depends on whether
        # the connection's access log reads Referer and User-Agent (chosen per connection, so
        # connections made before and after a reload that changed the format may differ).
        self._repeats = (RepeatedRequests(), RepeatedRequests())

    def keep(self, target: bytes, parts: tuple[bytes | bytearray, ...]) -> None:
        """Keep the response made of parts (head, Date, blank line, body) if there is room;
        joined only then, so a full table costs no copy of the body."""
        size = sum(map(len, parts))
        if self.used + size <= self.max_bytes and target not in self:
            self[target] = (b"".join(parts), len(parts[-1]))
            self.used += size

    def keep_stream(self, target: bytes, kept: S) -> None:
        if self.max_bytes and len(self.streams) < MAX_STREAMS:  # nothing once stopped
            self.streams.setdefault(target, kept)

    def repeats(self, log_headers: bool) -> RepeatedRequests:
        """The repeated requests of connections that keep (or not) the fields the log reads."""
        return self._repeats[log_headers]

    def stop(self) -> None:
        """Keep nothing more (a draining server's responses must say Connection: close)."""
        self.clear()
        self.max_bytes = 0

    def expire(self, alive: Callable[[S], bool]) -> None:
        """The tick: whole responses go (their Date is old), kept streams whose file is no
        longer current go; repeated requests stay (the same bytes still parse the same)."""
        super().clear()
        self.used = 0
        for target in [t for t, kept in self.streams.items() if not alive(kept)]:
            del self.streams[target]

    def clear(self) -> None:
        """Everything goes: a reload (new rules, new heads) or a changed file."""
        super().clear()
        self.used = 0
        self.streams.clear()
        for repeats in self._repeats:
            repeats.clear()
