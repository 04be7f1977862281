"""Whole responses ready to write: the fast lane of the connection layer.

The dominant request is a keep-alive HTTP/1.1 GET of a small, fresh, cached file with no
conditional, range or framing headers. Its answer is the same bytes for everyone until the Date
line changes or the file's entry must be looked at again, so the first such answer is kept
here, keyed by the exact request-target, and the next requests cost one dict lookup and one
write. The server's tick empties the table (four times a second), so every kept response is
younger than the path cache's trust period allows and carries the current Date; a reload
empties it at once. Only single-representation files qualify (nothing to negotiate), and the
table is bounded in bytes. No I/O here.
"""

from __future__ import annotations

# Bytes of responses kept at once; past this, new ones are not kept until the next tick.
MAX_BYTES = 8 << 20


class PreparedResponses(dict[bytes, tuple[bytes, int]]):
    """request-target -> (the complete response: head, Date, blank line, body; body length)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.used = 0
        self.hits = 0  # responses sent from here, and their body bytes (all 200s)
        self.bytes_sent = 0

    def keep(self, target: bytes, response: bytes, body_length: int) -> None:
        if self.used + len(response) <= self.max_bytes and target not in self:
            self[target] = (response, body_length)
            self.used += len(response)

    def stop(self) -> None:
        """Keep nothing more (a draining server's responses must say Connection: close)."""
        self.clear()
        self.max_bytes = 0

    def clear(self) -> None:
        super().clear()
        self.used = 0
