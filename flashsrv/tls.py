"""TLS termination on the event loop: the server's certificate, its reload, and the hand-over
of a connection to the protocol ALPN chose (HTTP/2 or HTTP/1.1) once its handshake is done.

Reading the certificate and key is disk work: at start-up it happens before the loop runs,
on reload in a thread (`load_context` is blocking).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from functools import partial

log = logging.getLogger("flashsrv.tls")

# Mozilla's "intermediate" TLS 1.2 cipher list (TLS 1.3 suites are OpenSSL's, all AEAD):
# forward secrecy and AEAD only, in the order Mozilla recommends.
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))
ALPN_PROTOCOLS = ("h2", "http/1.1")  # the server's order: HTTP/2 when the client offers it


def load_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for this certificate chain and key (blocking: reads both files).
    Raises ssl.SSLError or OSError for a file that is missing, unreadable or not a pair."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    # No TLS compression (CRIME); no renegotiation (a cheap way to make the server compute);
    # a fresh ECDH key per handshake. Session tickets stay on (OpenSSL's default, keys rotated
    # per context, so per reload): a returning client skips the full handshake.
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                        | ssl.OP_SINGLE_ECDH_USE)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    for path in (cert, key):  # a missing or unreadable file, named (ssl's error names none)
        with open(path, "rb"):
            pass
    context.load_cert_chain(cert, key)
    return context


class Certificates:
    """The context new handshakes use. `reload` swaps it; connections already open keep the
    one they were made with."""

    def __init__(self, context: ssl.SSLContext, cert: str, key: str) -> None:
        self.context = context
        self.cert = cert
        self.key = key

    async def reload(self, cert: str, key: str) -> bool:
        """Read the pair again in a thread; a broken pair is refused with a log line and the
        running certificate stays in use. Whether the new pair was taken."""
        loop = asyncio.get_running_loop()
        try:
            context = await loop.run_in_executor(None, load_context, cert, key)
        except (ssl.SSLError, OSError) as exc:
            log.error("TLS reload refused, keeping the running certificate: %s", exc)
            return False
        self.context, self.cert, self.key = context, cert, key
        log.info("TLS certificate reloaded from %s", cert)
        return True


ProtocolFactory = Callable[[str | None], asyncio.Protocol]


class AlpnSwitch(asyncio.Protocol):
    """A TLS connection's first protocol: asyncio calls connection_made once the handshake is
    done, and this hands the transport to the protocol ALPN chose, before any request byte
    is delivered."""

    def __init__(self, choose: ProtocolFactory) -> None:
        self.choose = choose

    def connection_made(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        protocol = self.choose(ssl_object.selected_alpn_protocol() if ssl_object else None)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class TlsListeners:
    """The HTTPS sockets of one main process and the servers that accept on them.

    A server's TLS context is fixed when it starts; a reload starts new servers with the new
    context on duplicates of the same listening sockets and closes the old ones. Closing a
    server closes only its descriptor of the socket, not the connections it accepted: they
    carry on with the certificate they were made with, and no connection is ever refused.
    (Upgrading accepted connections with `loop.start_tls` instead, each with the context of
    the moment, lost handshakes under uvloop: seen, 10 of 18 in a row timed out.)
    """

    def __init__(self, certificates: Certificates, socks: list[socket.socket]) -> None:
        self.certificates = certificates
        self.socks = socks
        self.servers: list[asyncio.Server] = []
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._timeout = 0.0
        self._backlog = 0

    async def start(self, choose: ProtocolFactory, handshake_timeout: float,
                    backlog: int) -> None:
        self._factory = partial(AlpnSwitch, choose)
        self._timeout = handshake_timeout
        self._backlog = backlog
        await self._serve()

    async def _serve(self) -> None:
        assert self._factory is not None
        loop = asyncio.get_running_loop()
        self.servers = [await loop.create_server(
            self._factory, sock=sock.dup(), ssl=self.certificates.context,
            ssl_handshake_timeout=self._timeout, backlog=self._backlog)
            for sock in self.socks]

    async def reload(self, cert: str, key: str) -> None:
        """SIGHUP: read the pair again; when it is good, new handshakes present it."""
        if await self.certificates.reload(cert, key):
            old = self.servers
            await self._serve()
            for server in old:
                server.close()

    def close(self) -> None:
        for server in self.servers:
            server.close()
