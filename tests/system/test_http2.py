"""HTTP/2 over real sockets: h2c with prior knowledge on the plain port, h2 over TLS by ALPN,
the responses HTTP/1.1 gives (the same code decides them), large files under flow control,
many streams at once, a SIGTERM drain with GOAWAY, and the known HTTP/2 attacks.

Clients are the `h2` library over a socket (its state machine checks every frame the server
sends), curl, nghttp2's h2load, and raw frames (hyperframe) where an attack needs frames h2
will not make. Each attack test shows that the server's memory stays bounded, that a client
on another connection is still answered quickly meanwhile, and that nothing leaks.
"""

from __future__ import annotations

import contextlib
import gzip
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2_client import H2Client
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from support import (
    HotProbe,
    Serve,
    ServerProcess,
    TlsFiles,
    admin_address,
    assert_no_leaks,
    connect,
    get,
    rss_bytes,
    scrape_metrics,
    socket_fd_count,
    start_server,
    tls_files,
    wait_until,
)

MiB = 1 << 20
PAGE = b"<!doctype html><title>h2</title>" + b"<p>some words to compress</p>" * 60
SMALL = b"small file\n"
BIG = random.Random(2).randbytes(8 * MiB)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("h2-site")
    (root / "index.html").write_bytes(PAGE)
    (root / "index.html.gz").write_bytes(gzip.compress(PAGE))
    (root / "small.txt").write_bytes(SMALL)
    (root / "big.bin").write_bytes(BIG)
    return root


@pytest.fixture(scope="module")
def srv(site: Path) -> Iterator[ServerProcess]:
    server = start_server(site, "--access-log", "-")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return tls_files(tmp_path_factory.mktemp("h2-certs"))


@pytest.fixture(scope="module")
def tls_srv(site: Path, certs: TlsFiles) -> Iterator[ServerProcess]:
    """The site over HTTPS too (`https_port`), its access log on stdout."""
    server = start_server(site, *certs.args, "--access-log", "-", https=True)
    yield server
    server.stop()


def closed_with(client: H2Client, code: ErrorCodes, timeout: float = 10.0) -> bool:
    """The server sends GOAWAY with code, then closes the connection."""
    client.wait(lambda: client.closed, timeout)
    return client.closed and bool(client.goaways) and client.goaways[-1][1] == code


# -- answers -----------------------------------------------------------------------------------


def test_h2c_answers_as_http_1_1_does(srv: ServerProcess):
    client = H2Client.connect(srv)
    page = client.fetch("/index.html")
    assert page.status == 200 and bytes(page.body) == PAGE
    assert page.headers[b"content-type"] == b"text/html; charset=utf-8"
    assert b"date" in page.headers and b"connection" not in page.headers
    http1 = get(srv, "/index.html")
    for name in ("etag", "last-modified", "content-length", "accept-ranges", "cache-control"):
        assert page.headers[name.encode()].decode() == http1.header(name)
    head = client.fetch("/big.bin", method="HEAD")
    assert head.status == 200 and not head.body
    assert head.headers[b"content-length"] == str(len(BIG)).encode()
    assert client.fetch("/nope.txt").status == 404
    etag = page.headers[b"etag"].decode()
    assert client.fetch("/index.html", ("if-none-match", etag)).status == 304
    part = client.fetch("/big.bin", ("range", "bytes=1000-1999"))
    assert part.status == 206 and bytes(part.body) == BIG[1000:2000]
    parts = client.fetch("/big.bin", ("range", "bytes=0-9,-10"))
    assert parts.status == 206 and BIG[:10] in parts.body and BIG[-10:] in parts.body
    assert parts.headers[b"content-type"].startswith(b"multipart/byteranges")
    zipped = client.fetch("/index.html", ("accept-encoding", "gzip, br;q=0"))
    assert zipped.headers[b"content-encoding"] == b"gzip"
    assert gzip.decompress(bytes(zipped.body)) == PAGE
    assert client.fetch("/index.html", method="POST").status == 405
    client.close()
    assert wait_until(lambda: '"GET /index.html HTTP/2.0" 200' in srv.stdout_text(), 5)


def test_a_large_file_arrives_whole_under_flow_control(srv: ServerProcess):
    client = H2Client.connect(srv)  # 64 KiB windows: the 8 MiB need ~130 window updates
    big = client.fetch("/big.bin")
    assert big.ended and len(big.body) == len(BIG) and bytes(big.body) == BIG
    client.close()


def test_many_streams_at_once_are_all_answered(srv: ServerProcess):
    client = H2Client.connect(srv)
    paths = ["/small.txt", "/index.html", "/nope.txt", "/big.bin"] * 12
    ids = [client.request(path) for path in paths]
    assert client.wait(lambda: all(client.streams[i].ended for i in ids), timeout=30)
    for stream_id, path in zip(ids, paths, strict=True):
        stream = client.streams[stream_id]
        if path == "/nope.txt":
            assert stream.status == 404
        else:
            assert stream.status == 200 and len(stream.body) == int(
                stream.headers[b"content-length"])
    assert bytes(client.streams[ids[3]].body) == BIG
    client.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_http2_prior_knowledge(srv: ServerProcess, tmp_path: Path):
    for path, body in (("/small.txt", SMALL), ("/big.bin", BIG)):
        out = tmp_path / "body"
        result = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-o", str(out), "-w",
             "%{http_version} %{http_code}", f"http://{srv.host}:{srv.port}{path}"],
            capture_output=True, text=True, timeout=30, check=True)
        assert result.stdout == "2 200" and out.read_bytes() == body


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed")
def test_h2load_streams_all_succeed(srv: ServerProcess):
    result = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "20", f"http://{srv.host}:{srv.port}/"
         "small.txt"], capture_output=True, text=True, timeout=60, check=True)
    assert "2000 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout


def test_alpn_h2_over_tls(site: Path, serve: Serve, tmp_path: Path):
    certs = tls_files(tmp_path / "certs")
    server = serve(site, *certs.args, "--hsts", "600", "--access-log", "off", https=True)
    context = certs.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    sock = connect(server.over_tls(context))
    assert isinstance(sock, ssl.SSLSocket) and sock.selected_alpn_protocol() == "h2"
    client = H2Client(sock)
    page = client.fetch("/index.html")
    assert page.status == 200 and bytes(page.body) == PAGE
    assert page.headers[b"strict-transport-security"] == b"max-age=600"
    assert bytes(client.fetch("/big.bin").body) == BIG
    client.close()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed")
def test_h2load_over_tls_negotiates_h2_and_every_request_succeeds(tls_srv: ServerProcess):
    result = subprocess.run(
        ["h2load", "-c", "8", "-m", "10", "-n", "2000", "--npn-list=h2",
         f"https://{tls_srv.host}:{tls_srv.https_port}/small.txt"],
        capture_output=True, text=True, timeout=60, check=True)
    assert "Application protocol: h2" in result.stdout, result.stdout
    assert "2000 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout
    assert "status codes: 2000 2xx" in result.stdout, result.stdout

    def logged() -> int:
        return tls_srv.stdout_text().count('"GET /small.txt HTTP/2.0" 200')

    assert wait_until(lambda: logged() >= 2000, 10), f"{logged()} HTTP/2.0 lines logged"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("path", ["/small.txt", "/big.bin"])
def test_curl_http2_over_tls_checks_the_certificate_and_gets_h2(
        tls_srv: ServerProcess, certs: TlsFiles, tmp_path: Path, path: str):
    port = tls_srv.https_port
    out = tmp_path / "body"
    result = subprocess.run(
        ["curl", "--http2", "-sS", "-v", "--cacert", str(certs.ca_file), "--resolve",
         f"flashsrv.test:{port}:127.0.0.1", "-o", str(out), "-w",
         "%{http_version} %{http_code} %{ssl_verify_result}",
         f"https://flashsrv.test:{port}{path}"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 200 0", result.stdout
    assert out.read_bytes() == (SMALL if path == "/small.txt" else BIG)
    assert "ALPN: server accepted h2" in result.stderr or \
        "ALPN, server accepted to use h2" in result.stderr, result.stderr
    assert wait_until(lambda: f'"GET {path} HTTP/2.0" 200' in tls_srv.stdout_text(), 5)


def test_sigterm_sends_goaway_and_lets_the_open_stream_finish(site: Path, serve: Serve):
    server = serve(site, "--access-log", "off", "--grace", "20")
    client = H2Client.connect(server, acking=False)  # 64 KiB arrive, then the server waits
    stream_id = client.request("/big.bin")
    stream = client.streams[stream_id]
    assert client.wait(lambda: len(stream.body) >= 65535)
    server.proc.send_signal(signal.SIGTERM)
    assert client.wait(lambda: bool(client.goaways), timeout=5)
    assert client.goaways[0] == (stream_id, ErrorCodes.NO_ERROR)
    client.acking = True
    client.h2.acknowledge_received_data(len(stream.body), stream_id)
    client.flush()
    assert client.wait(lambda: stream.ended, timeout=20)
    assert bytes(stream.body) == BIG
    assert client.wait(lambda: client.closed, timeout=5)  # closed once nothing is open
    assert server.proc.wait(10) == 0


# -- attacks -------------------------------------------------------------------------------------


@pytest.fixture
def guarded(site: Path, serve: Serve) -> Iterator[tuple[ServerProcess, HotProbe]]:
    """A fresh server with an admin port and a short send timeout, its page warm, and an
    HTTP/1.1 client fetching it every 10 ms throughout the test; afterwards that client was
    answered quickly all along, the server's memory grew by less than 32 MiB, and nothing
    leaked."""
    server = serve(site, "--admin-port", "0", "--send-timeout", "2", "--access-log", "off")
    admin = admin_address(server)
    assert get(server, "/small.txt").status == 200
    normal = H2Client.connect(server)
    assert normal.fetch("/small.txt").status == 200
    normal.close()
    assert wait_until(lambda: scrape_metrics(admin)["flashsrv_open_connections"] == 0, 5)
    sockets = socket_fd_count(server.proc.pid)
    baseline = rss_bytes(server.proc.pid)
    with HotProbe(server, "/small.txt", SMALL) as probe:
        yield server, probe
    growth = rss_bytes(server.proc.pid) - baseline
    assert growth < 32 * MiB, f"RSS grew {growth / MiB:.1f} MiB"
    assert not probe.errors, probe.summary()
    assert probe.max() < 1.0, probe.summary()
    after = H2Client.connect(server)
    assert after.fetch("/small.txt").status == 200
    after.close()
    assert_no_leaks(server, admin, sockets)


def raw_connection(server: ServerProcess) -> socket.socket:
    """A connection that has sent the preface and an empty SETTINGS frame."""
    sock = connect(server)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    return sock


def goaway_code(sock: socket.socket, timeout: float = 10.0) -> int | None:
    """Read to the end of the connection: the error code of the last GOAWAY it carried."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    code = None
    while len(data) >= 9:
        end = 9 + int.from_bytes(data[:3], "big")
        if data[3] == 0x7 and len(data) >= 17:
            code = int.from_bytes(data[13:17], "big")
        data = data[end:]
    return code


def headers_frame(stream_id: int, encoder: Encoder, end_stream: bool = True) -> bytes:
    block = encoder.encode([(":method", "GET"), (":path", "/small.txt"), (":scheme", "http"),
                            (":authority", "localhost")])
    flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
    return HeadersFrame(stream_id, data=block, flags=flags).serialize()


def attack(server: ServerProcess, payload: bytes, seconds: float = 2.0) -> list[int | None]:
    """Send payload on one new connection after another for `seconds`, as an attacker sent
    away reconnects: the GOAWAY error code each connection got."""
    codes = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock = raw_connection(server)
        with contextlib.suppress(OSError):  # the server closed it while we were sending
            sock.sendall(payload)
        codes.append(goaway_code(sock))
        sock.close()
    return codes


def assert_sent_away(codes: list[int | None]) -> None:
    assert codes and set(codes) == {ErrorCodes.ENHANCE_YOUR_CALM}, codes


def test_rapid_reset_is_stopped_and_other_clients_carry_on(guarded):
    server, probe = guarded
    encoder = Encoder()
    flood = b"".join(headers_frame(2 * i + 1, encoder, end_stream=False)
                     + RstStreamFrame(2 * i + 1, error_code=ErrorCodes.CANCEL).serialize()
                     for i in range(2000))
    codes = attack(server, flood, seconds=3)
    assert_sent_away(codes)
    assert scrape_metrics(admin_address(server))["flashsrv_requests_rejected_total"] >= len(codes)
    assert len(probe.latencies) > 100  # the normal client was answered throughout


@pytest.mark.parametrize("frame", [
    PingFrame(0, opaque_data=b"12345678"),
    SettingsFrame(0, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 100}),
    PriorityFrame(1, depends_on=0, stream_weight=16),
    WindowUpdateFrame(0, window_increment=1),
    DataFrame(1, data=b""),
], ids=["PING", "SETTINGS", "PRIORITY", "WINDOW_UPDATE", "empty-DATA"])
def test_control_frame_floods_get_goaway(guarded, frame):
    server, _probe = guarded
    opener = headers_frame(1, Encoder(), end_stream=False)  # empty DATA needs an open stream
    assert_sent_away(attack(server, opener + frame.serialize() * 5000))


def test_continuation_flood_is_stopped_early(guarded):
    server, _probe = guarded
    start = HeadersFrame(1, data=Encoder().encode([(":method", "GET")]), flags=[])
    piece = ContinuationFrame(1, data=b"\x40\x01a\x01b" * 3000).serialize()  # never ends
    assert_sent_away(attack(server, start.serialize() + piece * 300))  # 4.5 MB offered


def test_hpack_bomb_is_stopped_by_the_header_list_size(guarded):
    server, _probe = guarded
    encoder = Encoder()
    big = "v" * 4000
    block = encoder.encode([(":method", "GET"), (":path", "/small.txt"), (":scheme", "http"),
                            ("x-bomb", big)])
    block += encoder.encode([("x-bomb", big)] * 3000)  # 12 MB once decoded, 10 KB sent
    assert len(block) < 16384
    bomb = HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    assert_sent_away(attack(server, bomb))


def test_a_zero_window_reader_is_reset_after_send_timeout(guarded):
    server, _probe = guarded
    stalled = H2Client.connect(server, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stream_id = stalled.request("/big.bin")
    stream = stalled.streams[stream_id]
    start = time.monotonic()
    assert stalled.wait(lambda: stream.reset is not None, timeout=8)
    assert stream.reset == ErrorCodes.CANCEL and not stream.body
    assert time.monotonic() - start < 5  # a 2 s send timeout, checked 4 times a second
    stalled.close()
    assert scrape_metrics(admin_address(server))["flashsrv_timeouts_total"] >= 1


def test_a_client_that_never_reads_is_disconnected_with_bounded_memory(guarded):
    server, _probe = guarded
    baseline = rss_bytes(server.proc.pid)  # the peak matters here: sampled while it lasts
    sock = connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    client = H2Client(sock, settings={SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
    client.h2.increment_flow_control_window((1 << 31) - 1 - 65535)
    client.flush()
    for _ in range(20):
        client.request("/big.bin")  # 160 MiB asked for, none of it read
    admin = admin_address(server)
    peak = baseline

    def gone() -> bool:
        nonlocal peak
        peak = max(peak, rss_bytes(server.proc.pid))
        return scrape_metrics(admin)["flashsrv_open_connections"] == 1  # the probe's

    assert wait_until(gone, timeout=8, interval=0.1), "still connected after 8 s"
    assert peak - baseline < 32 * MiB, f"RSS grew {(peak - baseline) / MiB:.1f} MiB"
    sock.close()
