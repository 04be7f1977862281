"""The Python floor: the cheapest HTTP server that uvloop and httptools make possible.

    python loadtests/floor_server.py --port N [--body-bytes 2048]

flashsrv is built on these two libraries; this server uses them and nothing else. Every request,
whatever its method and target, gets one constant response prepared at start-up (200, a
Content-Length, a Content-Type, a body of --body-bytes; keep-alive unless the client asked for
`Connection: close` or spoke HTTP/1.0). No file, no cache, no Date header, no logging: whatever
this server spends per request is the event loop, the parser and the kernel, a cost no Python
server on this machine can go below.

That is why the benchmark (`python -m loadtests.bench`) runs it next to flashsrv in the same
run: flashsrv's CPU per request is judged against this floor (what Python itself costs here),
not only against nginx, whose lead over any Python server moves with the CPU the benchmark
happens to run on.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import httptools
import uvloop


def responses(body_bytes: int) -> tuple[bytes, bytes]:
    """(keep-alive response, `Connection: close` response), each complete with its body."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {body_bytes}\r\n"
    body = b"x" * body_bytes
    return (head + "\r\n").encode() + body, (head + "Connection: close\r\n\r\n").encode() + body


class Floor(asyncio.Protocol):
    keep_alive = closing = b""  # the responses, set by serve()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.parser.should_keep_alive():
            self.transport.write(self.keep_alive)
        else:
            self.transport.write(self.closing)
            self.transport.close()


async def serve(host: str, port: int, body_bytes: int) -> None:
    Floor.keep_alive, Floor.closing = responses(body_bytes)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor server listening on http://{host}:{port}/ ({body_bytes}-byte body)",
          flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--body-bytes", type=int, default=2048)
    args = p.parse_args()
    uvloop.run(serve(args.host, args.port, args.body_bytes))


if __name__ == "__main__":
    main()
