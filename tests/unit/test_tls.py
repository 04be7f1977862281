"""flashsrv.tls in-process: the server context `load_context` makes (checked by handshakes over
memory buffers), `Certificates.reload`, the ALPN hand-over of `AlpnSwitch` (a fake transport),
and `TlsListeners` on real loopback sockets with a real TLS client, before and after a reload.

The certificates come from a test CA made by trustme (`support.tls_files`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from support import TlsFiles, peer_serial, tls_files

from flashsrv.tls import (
    ALPN_PROTOCOLS,
    INTERMEDIATE_CIPHERS,
    AlpnSwitch,
    Certificates,
    TlsListeners,
    load_context,
)

HOST = "127.0.0.1"  # a name the test certificate carries
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def certs(tmp_path: Path) -> TlsFiles:
    return tls_files(tmp_path / "certs")


def server_context(certs: TlsFiles) -> ssl.SSLContext:
    return load_context(str(certs.cert), str(certs.key))


def handshake(server: ssl.SSLContext, client: ssl.SSLContext
              ) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A full TLS handshake between the two contexts over memory buffers (no socket): the
    server's and the client's side once both are done. Raises ssl.SSLError when it fails."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname=HOST)
    done = [False, False]
    for _ in range(10):
        for i, side in enumerate((client_side, server_side)):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done):
            return server_side, client_side
    raise AssertionError("the handshake did not finish in 10 round trips")


# --- load_context ----------------------------------------------------------------------------


def test_the_context_speaks_tls_1_2_and_1_3_only(certs: TlsFiles) -> None:
    context = server_context(certs)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3


def test_the_tls_1_2_ciphers_are_the_intermediate_list_all_aead_and_forward_secret(
        certs: TlsFiles) -> None:
    ciphers = server_context(certs).get_ciphers()
    tls12 = [c for c in ciphers if c["protocol"] == "TLSv1.2"]
    assert tls12, ciphers
    assert {c["name"] for c in tls12} <= set(INTERMEDIATE_CIPHERS.split(":"))
    assert all(c["aead"] for c in tls12), [c["name"] for c in tls12 if not c["aead"]]
    assert {c["kea"] for c in tls12} <= {"kx-ecdhe", "kx-dhe"}
    assert any(c["protocol"] == "TLSv1.3" for c in ciphers), "TLS 1.3 suites are kept"


def test_a_tls_1_2_client_offering_only_cbc_ciphers_is_refused(certs: TlsFiles) -> None:
    client = certs.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    # Legacy ciphers allowed on the client: the refusal must be the server's choice.
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
                       "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(server_context(certs), client)


def test_a_tls_1_2_client_gets_an_aead_cipher(certs: TlsFiles) -> None:
    client = certs.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    server_side, client_side = handshake(server_context(certs), client)
    cipher = client_side.cipher()
    assert cipher is not None
    name, version, _ = cipher
    assert version == "TLSv1.2"
    assert name in INTERMEDIATE_CIPHERS.split(":")
    assert server_side.version() == "TLSv1.2"


@pytest.mark.parametrize(("offered", "chosen"), [
    (["http/1.1", "h2"], "h2"),  # the server's order wins: HTTP/2 whenever it is offered
    (["h2"], "h2"),
    (["http/1.1"], "http/1.1"),
    ([], None),  # a client without ALPN
])
def test_alpn_offers_h2_then_http_1_1(certs: TlsFiles, offered: list[str],
                                      chosen: str | None) -> None:
    assert ALPN_PROTOCOLS == ("h2", "http/1.1")
    client = certs.client_context()
    if offered:
        client.set_alpn_protocols(offered)
    server_side, client_side = handshake(server_context(certs), client)
    assert server_side.selected_alpn_protocol() == chosen
    assert client_side.selected_alpn_protocol() == chosen


def test_compression_and_renegotiation_are_off(certs: TlsFiles) -> None:
    options = server_context(certs).options
    assert options & ssl.OP_NO_COMPRESSION
    assert options & ssl.OP_NO_RENEGOTIATION


def test_a_key_that_is_not_the_certificates_is_refused(certs: TlsFiles, tmp_path: Path) -> None:
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    certs.issue(other_cert, other_key)
    with pytest.raises(ssl.SSLError):
        load_context(str(certs.cert), str(other_key))


def test_a_file_that_is_no_pem_is_refused(certs: TlsFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ssl.SSLError):
        load_context(str(garbage), str(certs.key))


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_a_missing_file_is_an_os_error_that_names_it(certs: TlsFiles, tmp_path: Path,
                                                      missing: str) -> None:
    gone = str(tmp_path / "gone.pem")
    cert, key = (gone, str(certs.key)) if missing == "cert" else (str(certs.cert), gone)
    with pytest.raises(OSError) as failure:
        load_context(cert, key)
    assert not isinstance(failure.value, ssl.SSLError)
    assert failure.value.filename == gone


# --- Certificates.reload ---------------------------------------------------------------------


def test_a_good_new_pair_replaces_the_context(certs: TlsFiles, tmp_path: Path) -> None:
    old = server_context(certs)
    certificates = Certificates(old, str(certs.cert), str(certs.key))
    new_cert, new_key = tmp_path / "new.pem", tmp_path / "new.key"
    serial = certs.issue(new_cert, new_key)

    taken = asyncio.run(certificates.reload(str(new_cert), str(new_key)))

    assert taken is True
    assert certificates.context is not old
    assert (certificates.cert, certificates.key) == (str(new_cert), str(new_key))
    _, client_side = handshake(certificates.context, certs.client_context())
    peer = client_side.getpeercert()
    assert peer and int(str(peer["serialNumber"]), 16) == serial, "the new certificate"


@pytest.mark.parametrize("broken", ["mismatched", "missing", "garbage"])
def test_a_broken_pair_keeps_the_running_context_and_is_logged(
        certs: TlsFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str) -> None:
    old = server_context(certs)
    certificates = Certificates(old, str(certs.cert), str(certs.key))
    new_cert, new_key = tmp_path / "new.pem", tmp_path / "new.key"
    if broken == "mismatched":
        certs.issue(new_cert, tmp_path / "unused.key")
        certs.issue(tmp_path / "unused.pem", new_key)
    elif broken == "garbage":
        certs.issue(new_cert, new_key)
        new_cert.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")

    with caplog.at_level(logging.INFO, logger="flashsrv.tls"):
        taken = asyncio.run(certificates.reload(str(new_cert), str(new_key)))

    assert taken is False
    assert certificates.context is old
    assert (certificates.cert, certificates.key) == (str(certs.cert), str(certs.key))
    errors = [r for r in caplog.records if r.name == "flashsrv.tls" and r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert "TLS reload refused" in errors[0].getMessage()
    assert "reloaded" not in caplog.text


# --- AlpnSwitch ------------------------------------------------------------------------------


class FakeSslObject:
    def __init__(self, alpn: str | None) -> None:
        self.alpn = alpn

    def selected_alpn_protocol(self) -> str | None:
        return self.alpn


class FakeTransport:
    """Just what AlpnSwitch asks of a transport: its ssl_object, and set_protocol."""

    def __init__(self, ssl_object: FakeSslObject | None) -> None:
        self.ssl_object = ssl_object
        self.protocols: list[asyncio.BaseProtocol] = []

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.ssl_object if name == "ssl_object" else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocols.append(protocol)


class Recording(asyncio.Protocol):
    """A protocol that remembers what ALPN chose it for and which transport it was given."""

    def __init__(self, alpn: str | None) -> None:
        self.alpn = alpn
        self.transports: list[object] = []

    def connection_made(self, transport: Any) -> None:
        self.transports.append(transport)


@pytest.mark.parametrize("alpn", ["h2", "http/1.1", None])
def test_the_transport_goes_to_the_protocol_alpn_chose(alpn: str | None) -> None:
    chosen: list[Recording] = []

    def choose(protocol: str | None) -> Recording:
        chosen.append(Recording(protocol))
        return chosen[-1]

    transport = FakeTransport(FakeSslObject(alpn))
    AlpnSwitch(choose).connection_made(transport)  # type: ignore[arg-type]

    assert [p.alpn for p in chosen] == [alpn]
    assert transport.protocols == [chosen[0]], "set_protocol with the chosen protocol"
    assert chosen[0].transports == [transport]


def test_a_transport_without_an_ssl_object_chooses_for_no_alpn() -> None:
    chosen: list[str | None] = []
    protocol = Recording(None)

    def choose(alpn: str | None) -> Recording:
        chosen.append(alpn)
        return protocol

    transport = FakeTransport(None)
    AlpnSwitch(choose).connection_made(transport)  # type: ignore[arg-type]
    assert chosen == [None]
    assert transport.protocols == [protocol]
    assert protocol.transports == [transport]


# --- TlsListeners on loopback sockets ----------------------------------------------------------


class Echo(asyncio.Protocol):
    """Answers each chunk with the ALPN protocol it was chosen for, a colon, and the chunk."""

    made: list[Echo] = []

    def __init__(self, alpn: str | None) -> None:
        self.alpn = alpn
        self.transport: asyncio.Transport | None = None
        Echo.made.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(f"{self.alpn}:".encode() + data)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """Runs a scenario on the stock loop, or on uvloop (the server's); Echo's list of the
    protocols made starts empty."""
    Echo.made = []
    yield asyncio.run if request.param == "asyncio" else uvloop.run
    Echo.made = []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    yield sock
    sock.close()


def open_tls(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A client connection, its handshake done (blocking: run in a thread)."""
    raw = socket.create_connection((HOST, port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=HOST)
    except BaseException:
        raw.close()
        raise


def ask(sock: socket.socket, data: bytes) -> bytes:
    """Send data, read the Echo's answer (blocking: run in a thread)."""
    sock.sendall(data)
    answer = b""
    while not answer.endswith(data):
        chunk = sock.recv(1024)
        if not chunk:
            break
        answer += chunk
    return answer


async def started(certs: TlsFiles, listener: socket.socket) -> TlsListeners:
    listeners = TlsListeners(Certificates(server_context(certs), str(certs.cert),
                                          str(certs.key)), [listener])
    await listeners.start(Echo, handshake_timeout=5.0, backlog=16)
    return listeners


async def cleaned_up(listeners: TlsListeners, clients: list[ssl.SSLSocket]) -> None:
    listeners.close()
    for sock in clients:
        sock.close()
    for echo in Echo.made:
        if echo.transport is not None:
            echo.transport.abort()
    await asyncio.sleep(0.05)


def test_a_reload_presents_the_new_certificate_and_open_connections_carry_on(
        run: Runner, certs: TlsFiles, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    client = certs.client_context()
    client.set_alpn_protocols(["h2", "http/1.1"])
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        listeners = await started(certs, listener)
        clients: list[ssl.SSLSocket] = []
        try:
            before = await asyncio.to_thread(open_tls, port, client)
            clients.append(before)
            seen["before"] = peer_serial(before), await asyncio.to_thread(ask, before, b"one")
            first_servers = listeners.servers
            seen["new serial"] = certs.issue()  # over the files the listeners were made with
            await listeners.reload(str(certs.cert), str(certs.key))
            seen["old servers serving"] = [s.is_serving() for s in first_servers]
            seen["servers serving"] = [s.is_serving() for s in listeners.servers]
            after = await asyncio.to_thread(open_tls, port, client)
            clients.append(after)
            seen["after"] = peer_serial(after), await asyncio.to_thread(ask, after, b"two")
            seen["open one"] = peer_serial(before), await asyncio.to_thread(ask, before, b"3")
        finally:
            await cleaned_up(listeners, clients)

    run(scenario())

    assert seen["new serial"] != certs.serial
    assert seen["before"] == (certs.serial, b"h2:one")
    assert seen["old servers serving"] == [False]
    assert seen["servers serving"] == [True]
    assert seen["after"] == (seen["new serial"], b"h2:two"), "new handshakes: the new one"
    assert seen["open one"] == (certs.serial, b"h2:3"), "the open connection still works"


def test_a_broken_pair_at_reload_keeps_the_servers_and_the_certificate(
        run: Runner, certs: TlsFiles, listener: socket.socket, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    port = listener.getsockname()[1]
    client = certs.client_context()
    client.set_alpn_protocols(["http/1.1"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        listeners = await started(certs, listener)
        clients: list[ssl.SSLSocket] = []
        try:
            servers = listeners.servers
            await listeners.reload(str(garbage), str(certs.key))
            seen["same servers"] = listeners.servers is servers
            seen["serving"] = [s.is_serving() for s in listeners.servers]
            sock = await asyncio.to_thread(open_tls, port, client)
            clients.append(sock)
            seen["after"] = peer_serial(sock), await asyncio.to_thread(ask, sock, b"x")
        finally:
            await cleaned_up(listeners, clients)

    with caplog.at_level(logging.ERROR, logger="flashsrv.tls"):
        run(scenario())

    assert seen["same servers"] is True
    assert seen["serving"] == [True]
    assert seen["after"] == (certs.serial, b"http/1.1:x")
    assert "TLS reload refused" in caplog.text


def test_close_stops_the_servers_but_not_the_sockets_they_were_given(
        run: Runner, certs: TlsFiles, listener: socket.socket) -> None:
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        listeners = await started(certs, listener)
        servers = listeners.servers
        seen["serving"] = [s.is_serving() for s in servers]
        listeners.close()
        seen["closed"] = [s.is_serving() for s in servers]
        await cleaned_up(listeners, [])

    run(scenario())

    assert seen == {"serving": [True], "closed": [False]}
    assert listener.fileno() != -1
    assert listener.getsockname()[0] == HOST, "the listening socket is still the caller's"
