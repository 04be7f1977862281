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
answer them without running the parser at all. It is emptied with the table.
"""

from __future__ import annotations

# Bytes of responses kept at once; past this, new ones are not kept until the next tick.
MAX_BYTES = 8 << 20
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


class PreparedResponses(dict[bytes, tuple[bytes, int]]):
    """request-target -> (the complete response: head, Date, blank line, body; body length)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.used = 0
        self.hits = 0  # responses sent from here, and their body bytes (all 200s)
        self.bytes_sent = 0
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

    def repeats(self, log_headers: bool) -> RepeatedRequests:
        """The repeated requests of connections that keep (or not) the fields the log reads."""
        return self._repeats[log_headers]

    def stop(self) -> None:
        """Keep nothing more (a draining server's responses must say Connection: close)."""
        self.clear()
        self.max_bytes = 0

    def clear(self) -> None:
        super().clear()
        self.used = 0
        for repeats in self._repeats:
            repeats.clear()
