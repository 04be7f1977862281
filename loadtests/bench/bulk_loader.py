"""The load generator for large bodies, a program of its own:

    python loadtests/bench/bulk_loader.py PORT PATH[,PATH...] CONNECTIONS SECONDS

wrk reads 8 KiB per recv(): for MiB-sized bodies it, not the server, is the limit. This one
reads with recv_into a 4 MiB buffer and never parses a body, so that one core can absorb what
the server sends. It prints wrk's result line (`WRKJSON {...}`, see load_generators.py), which
is all the harness reads from it.

Run by path in a process of its own (pinned to the load-generator core, its CPU time measured
apart from the harness's): it imports the standard library only, nothing of the package.
"""

from __future__ import annotations

import json
import random
import selectors
import socket
import sys
import time

BUFFER_BYTES = 4 * 1024 * 1024


class _BulkConn:
    """One keep-alive connection of the bulk loader: a tiny HTTP/1.1 response state machine."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.head = b""
        self.left = -1        # body bytes (Content-Length) or chunk bytes still expected
        self.chunked = False
        self.line = b""       # partial chunk-size line
        self.trailer = False  # after the last chunk: waiting for the final empty line
        self.sent = 0.0

    def send(self, request: bytes) -> None:
        self.sent = time.monotonic()
        self.sock.sendall(request)

    def feed(self, data: memoryview) -> bool:
        """Consume received bytes; True when the response is complete."""
        if self.left < 0 and not self.chunked:
            before = len(self.head)
            self.head += bytes(data[:16384])  # copy the head only, never the body
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    raise ValueError("bulk loader: response head too large")
                return False
            head, rest = self.head[:end], data[end + 4 - before:]
            self.head = b""
            if not head.startswith(b"HTTP/1.1 2"):
                raise ValueError(f"bulk loader: unexpected response {head[:100]!r}")
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.left = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked, self.left = True, 0
            if self.left < 0:
                raise ValueError("bulk loader: response without Content-Length")
            return self.feed(rest) if len(rest) or not self.chunked else False
        if not self.chunked:
            self.left -= len(data)
            if self.left <= 0:
                self.left = -1
                return True
            return False
        return self._feed_chunked(data)

    def _feed_chunked(self, data: memoryview) -> bool:
        i, n = 0, len(data)
        while i < n:
            if self.left > 0:
                take = min(self.left, n - i)
                self.left -= take
                i += take
                continue
            j = bytes(data[i:min(n, i + 64)]).find(b"\n")
            if j < 0:
                self.line += bytes(data[i:min(n, i + 64)])
                i = min(n, i + 64)
                continue
            line = (self.line + bytes(data[i:i + j])).strip()
            self.line = b""
            i += j + 1
            if self.trailer:
                if not line:
                    self.chunked, self.trailer, self.left = False, False, -1
                    return True
            elif line:
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.trailer = True
                self.left = size
        return False


def bulk_loader(port: int, paths: list[str], connections: int, seconds: float) -> None:
    """A load generator for large bodies: epoll plus recv_into a 4 MiB buffer (no parsing of
    the body), so that one core can absorb what the server sends. Prints wrk's JSON line.

    With several paths every request takes the next one from a shuffled deck (the same order
    for every server): no file is asked for twice before all of them were, so cold stays cold."""
    requests = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths]
    rng = random.Random(1999)
    deck: list[bytes] = []
    started = 0

    def next_request() -> bytes:
        nonlocal started
        if not deck:
            deck.extend(rng.sample(requests, len(requests)))
        started += 1
        return deck.pop()

    buf = memoryview(bytearray(BUFFER_BYTES))
    sel = selectors.DefaultSelector()
    conns = [_BulkConn(port) for _ in range(connections)]
    t0 = time.monotonic()
    end = t0 + seconds
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
        c.send(next_request())
    done, received, errors, lat = 0, 0, 0, []
    while (now := time.monotonic()) < end:
        for key, _ in sel.select(min(0.5, end - now)):
            c = key.data
            try:
                n = c.sock.recv_into(buf)
                if n == 0:
                    raise ConnectionError("closed by the server")
                received += n
                if c.feed(buf[:n]):
                    done += 1
                    lat.append(time.monotonic() - c.sent)
                    c.send(next_request())
            except (OSError, ValueError):
                errors += 1
                sel.unregister(c.sock)
                c.sock.close()
                c.__init__(port)
                sel.register(c.sock, selectors.EVENT_READ, c)
                c.send(next_request())
    elapsed = time.monotonic() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else 0.0

    print("WRKJSON " + json.dumps({
        "requests": done, "bytes": received, "duration_us": elapsed * 1e6, "connect": 0,
        "read": errors, "write": 0, "status": 0, "timeout": 0, "p50_us": pct(0.5),
        "p99_us": pct(0.99), "max_us": pct(1.0), "started": started}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    port, paths, connections, seconds = argv
    bulk_loader(int(port), paths.split(","), int(connections), float(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
