"""The HTTP/2 floor: what the `h2` library alone costs per request, with no socket and no file.

    python loadtests/h2_floor.py [--requests 20000] [--streams 10]

flashsrv's HTTP/2 is built on `h2` (the design card says so), a pure-Python protocol stack.
This measures the server side of it and nothing else: a client made with `h2` too sends GET
requests the way `h2load -m 10` does (10 streams at a time, the same pseudo-header fields,
WINDOW_UPDATE for the data it receives), and a server state configured as flashsrv's
(`flashsrv.h2_connection`) decodes them and answers each with a 200 head and a 2 KB body.
Only the server's calls are timed (process CPU time). No HPACK of flashsrv's own, no loop,
no files: whatever this prints, flashsrv's h2 path cannot go below it on this machine, and
`1e6 / µs` is the most requests per second one core could serve over h2 with this library.
"""

from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection
import h2.events

from flashsrv.h2_connection import _ServerState

REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1:8443"),
           (":path", "/small.html"), ("user-agent", "h2load nghttp2/1.52.0")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"2048"), (b"etag", b'"6b2e1f-800"'),
            (b"last-modified", b"Tue, 01 Dec 2026 09:00:00 GMT"), (b"accept-ranges", b"bytes"),
            (b"cache-control", b"public, max-age=0"),
            (b"date", b"Tue, 01 Dec 2026 16:00:00 GMT")]
BODY = b"x" * 2048


def measure(requests: int, streams: int) -> float:
    """Server CPU seconds per request; every request must get its whole response."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = _ServerState()
    client.initiate_connection()
    server.initiate_connection()
    spent = 0.0
    done = answered = 0
    while done < requests:
        for _ in range(streams):
            client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
        wire = client.data_to_send()
        server.frames.roll(time.monotonic())  # flashsrv's flood window, which counts per second
        t0 = time.process_time()
        for event in server.receive_data(wire):
            if isinstance(event, h2.events.RequestReceived):
                server.send_headers(event.stream_id, RESPONSE)
                server.send_data(event.stream_id, BODY, end_stream=True)
        out = server.data_to_send()
        spent += time.process_time() - t0
        for event in client.receive_data(out):
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                answered += len(event.data)
        done += streams
        if answered != done * len(BODY):
            raise RuntimeError(f"{done} requests, {answered} body bytes received")
    return spent / done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--streams", type=int, default=10)
    args = p.parse_args()
    measure(1000, args.streams)  # warm-up
    per = measure(args.requests, args.streams)
    print(f"h2 library, server side: {per * 1e6:.1f} µs CPU per request "
          f"(at most {1 / per:,.0f} req/s on one core), {args.streams} streams at a time")


if __name__ == "__main__":
    main()
