"""An HTTP/2 client for the tests: the `h2` library's state machine over a real socket (it
checks every frame the server sends, Content-Length against the DATA received included).

Used directly by tests/system/test_http2.py, and by `support.get` and
`support.on_one_connection` for a server seen through `ServerProcess.over_h2()`, so that a
conformance test runs over HTTP/2 unchanged. Its socket-free core (`H2ClientCore`) also speaks
to an in-process connection over a fake transport in tests/unit/test_h2_connection.py.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable

import h2.config
import h2.connection
import h2.events
from support import Response, ServerProcess, connect


class Stream:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.fields: list[tuple[bytes, bytes]] = []  # the response's header list as sent
        self.body = bytearray()
        self.ended = False
        self.reset: int | None = None
        self.frames = 0  # DATA frames received

    @property
    def status(self) -> int:
        return int(self.headers[b":status"])


class H2ClientCore:
    """The client side of one HTTP/2 connection, whatever carries its bytes: `request` opens a
    stream and calls `flush` (a subclass sends what h2 has to send), `receive` takes what the
    server sent. GOAWAY frames are noted (`goaways`: last stream id, error code) and kept from
    h2, which would stop at once (python-hyper/h2#1181) where a real client finishes the open
    streams. The client hands back flow-control credit for what it received unless `acking`
    is off."""

    def __init__(self, settings: dict[int, int] | None = None, acking: bool = True,
                 scheme: str = "http", authority: str = "localhost") -> None:
        self.scheme = scheme
        self.authority = authority
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.acking = acking
        self.streams: dict[int, Stream] = {}
        self.goaways: list[tuple[int, int]] = []
        self._buffer = b""

    def flush(self) -> None:
        raise NotImplementedError

    def request(self, path: str, *extra: tuple[str, str], method: str = "GET",
                end: bool = True) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, [(":method", method), (":path", path),
                                         (":scheme", self.scheme),
                                         (":authority", self.authority), *extra],
                             end_stream=end)
        self.streams[stream_id] = Stream()
        self.flush()
        return stream_id

    def receive(self, data: bytes) -> None:
        """Take bytes from the server (frames may be split anywhere) and handle the events;
        what h2 has to send in turn is left for `flush`."""
        self._buffer += data
        kept = []
        while len(self._buffer) >= 9:
            end = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < end:
                break
            frame, self._buffer = self._buffer[:end], self._buffer[end:]
            if frame[3] == 0x7:
                self.goaways.append((int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF,
                                     int.from_bytes(frame[13:17], "big")))
            else:
                kept.append(frame)
        for event in self.h2.receive_data(b"".join(kept)):
            self._event(event)

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].fields = list(event.headers)
            self.streams[event.stream_id].headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams[event.stream_id]
            stream.body += event.data
            stream.frames += 1
            if self.acking:
                self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                  event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset = event.error_code


class H2Client(H2ClientCore):
    """One HTTP/2 connection over a socket."""

    def __init__(self, sock: socket.socket, settings: dict[int, int] | None = None,
                 acking: bool = True, scheme: str = "http", authority: str = "localhost",
                 ) -> None:
        super().__init__(settings, acking, scheme, authority)
        self.sock = sock
        self.closed = False
        self.flush()

    @classmethod
    def connect(cls, server: ServerProcess, timeout: float = 10.0, **kwargs) -> H2Client:
        """A connection to server: h2c with prior knowledge on a plain view, h2 on a TLS view
        (whose context must offer ALPN h2: `ServerProcess.over_h2` sets it)."""
        sock = connect(server, timeout=timeout)
        if isinstance(sock, ssl.SSLSocket) and sock.selected_alpn_protocol() != "h2":
            sock.close()
            raise AssertionError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        kwargs.setdefault("scheme", "https" if server.tls else "http")
        kwargs.setdefault("authority", f"{server.host}:{server.port}")
        return cls(sock, **kwargs)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def read_once(self, timeout: float) -> bool:
        """Handle what arrives within timeout; False when the server closed the connection."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.receive(data)
        self.flush()
        return True

    def wait(self, done: Callable[[], bool], timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline or not self.read_once(0.2):
                return done()
        return True

    def fetch(self, path: str, *extra: tuple[str, str], method: str = "GET",
              timeout: float = 15.0) -> Stream:
        stream = self.streams[self.request(path, *extra, method=method)]
        assert self.wait(lambda: stream.ended or stream.reset is not None, timeout), \
            f"no complete answer to {path}"
        return stream

    def response(self, method: str, path: str, headers: dict[str, str],
                 timeout: float = 15.0) -> Response:
        """One request on this connection, answered as the `Response` an HTTP/1.1 exchange
        gives (version "HTTP/2", no reason phrase, the header list without pseudo-headers)."""
        stream = self.fetch(path, *((k.lower(), v) for k, v in headers.items()), method=method,
                            timeout=timeout)
        assert stream.reset is None, f"{method} {path}: stream reset with code {stream.reset}"
        fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in stream.fields
                  if not k.startswith(b":")]
        return Response(stream.status, "", "HTTP/2", fields, bytes(stream.body))

    def close(self) -> None:
        self.sock.close()


def exchanges(server: ServerProcess, requests: Iterable[tuple[str, str, dict[str, str]]],
              timeout: float = 10.0) -> list[Response]:
    """(method, path, headers) requests one after another on one new HTTP/2 connection."""
    client = H2Client.connect(server, timeout=timeout)
    try:
        return [client.response(method, path, headers, timeout=timeout)
                for method, path, headers in requests]
    finally:
        client.close()
