"""HTTPS over real sockets: protocol versions and ciphers, ALPN, session resumption, certificate
reload on SIGHUP, --redirect-http, --hsts, large files and slow readers over TLS, hostile
handshakes, and a start with a broken certificate.

The certificates come from a test CA made by trustme in each run; clients trust that CA and
check the host name, as a browser would. Everything speaks to a real `flashsrv serve`.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    HTTPS_LISTEN_RE,
    ResponseReader,
    Serve,
    ServerProcess,
    SlowDownload,
    TlsFiles,
    admin_address,
    assert_no_leaks,
    connect,
    exchange,
    free_port,
    get,
    peer_serial,
    read_until_eof,
    request_bytes,
    scrape_metrics,
    serve_refused,
    socket_fd_count,
    start_server,
    tls_files,
    wait_until,
)

INDEX = b"<!doctype html><title>tls</title><p>over TLS</p>\n"
PAGE = b"plain text page\n"
BIG = random.Random(443).randbytes(8 * 1024 * 1024)
TEST_NAME = "flashsrv.test"  # a name the certificate carries besides 127.0.0.1 and localhost


def make_site(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "docs" / "page.txt").write_bytes(PAGE)
    (root / "big.bin").write_bytes(BIG)
    return root


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return tls_files(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("tls-site"))


@pytest.fixture(scope="module")
def srv(site: Path, certs: TlsFiles) -> Iterator[ServerProcess]:
    """The module's server (HTTP and HTTPS, --hsts 600) as seen on its plain port."""
    server = start_server(site, *certs.args, "--hsts", "600", "--access-log", "off", https=True)
    yield server
    server.stop()


@pytest.fixture
def tls_srv(srv: ServerProcess, certs: TlsFiles) -> ServerProcess:
    """The same server through its HTTPS port."""
    return srv.over_tls(certs.client_context())


def client(certs: TlsFiles, version: ssl.TLSVersion | None = None,
           ciphers: str | None = None) -> ssl.SSLContext:
    """A verifying client limited to one protocol version and/or a cipher list (legacy ones
    allowed: what is refused must be the server's choice, not this client's)."""
    context = certs.client_context()
    with warnings.catch_warnings():  # TLSv1 and TLSv1_1 are deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        if version is not None:
            context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers + ":@SECLEVEL=0")
    return context


def assert_refused(server: ServerProcess, context: ssl.SSLContext) -> None:
    """The handshake fails, promptly, because the server ended it: the client did send its
    ClientHello (a client unable to offer anything fails before connecting, differently)."""
    started = time.monotonic()
    with pytest.raises((ssl.SSLError, ConnectionError)) as failure:
        connect(server.over_tls(context), timeout=5).close()
    exc = failure.value
    assert isinstance(exc, ssl.SSLEOFError | ConnectionError) or "ALERT" in str(exc).upper(), (
        f"not refused by the server: {exc!r}")
    assert time.monotonic() - started < 3, "the refusal waited for a timeout"


def is_forward_secret_aead(cipher: str) -> bool:
    if cipher.startswith("TLS_"):  # TLS 1.3: every suite is AEAD over an (EC)DHE exchange
        return cipher.endswith(("GCM_SHA256", "GCM_SHA384", "CHACHA20_POLY1305_SHA256"))
    return cipher.startswith(("ECDHE-", "DHE-")) and ("GCM" in cipher or "CHACHA20" in cipher)


# --- protocol versions, ciphers, ALPN, resumption ---------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_accepted_with_forward_secret_aead_ciphers(
        srv: ServerProcess, certs: TlsFiles, version: ssl.TLSVersion) -> None:
    server = srv.over_tls(client(certs, version))
    with connect(server) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() == version.name.replace("TLSv1_", "TLSv1.")
        cipher = sock.cipher()
        assert cipher and is_forward_secret_aead(cipher[0]), cipher
        sock.sendall(request_bytes(server, "/index.html", close=True))
        r = ResponseReader(sock).read()
    assert (r.status, r.body) == (200, INDEX)


def test_every_handshake_completes_promptly(srv: ServerProcess, certs: TlsFiles) -> None:
    """A ClientHello already waiting when the server accepts the connection is not lost (it
    reaches the server before the TLS layer is in place)."""
    slow = []
    for i in range(100):
        version = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)[i % 2]
        started = time.monotonic()
        with connect(srv.over_tls(client(certs, version)), timeout=5):
            pass
        if time.monotonic() - started > 1:
            slow.append(i)
    assert not slow, f"handshakes {slow} took over a second"


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_are_refused(srv: ServerProcess, certs: TlsFiles, version: str) -> None:
    assert_refused(srv, client(certs, getattr(ssl.TLSVersion, version), "ALL"))


def test_a_client_offering_only_a_cipher_without_forward_secrecy_or_aead_is_refused(
        srv: ServerProcess, certs: TlsFiles) -> None:
    assert_refused(srv, client(certs, ssl.TLSVersion.TLSv1_2, "AES128-SHA"))


def test_every_tls_1_2_cipher_the_server_accepts_is_forward_secret_and_aead(
        srv: ServerProcess, certs: TlsFiles) -> None:
    """Offer each TLS 1.2 cipher this OpenSSL knows, one at a time."""
    offered = client(certs, ssl.TLSVersion.TLSv1_2, "ALL")
    names = sorted({c["name"] for c in offered.get_ciphers() if c["protocol"] == "TLSv1.2"})
    accepted = []
    for name in names:
        context = client(certs, ssl.TLSVersion.TLSv1_2, name)
        try:
            with connect(srv.over_tls(context), timeout=5) as sock:
                assert isinstance(sock, ssl.SSLSocket)
                accepted.append(name)
        except (ssl.SSLError, ConnectionError):
            continue
    assert accepted, f"no TLS 1.2 cipher accepted out of {len(names)}"
    weak = [name for name in accepted if not is_forward_secret_aead(name)]
    assert not weak, f"accepted without forward secrecy or AEAD: {weak}"


def test_alpn_negotiates_http_1_1(srv: ServerProcess, certs: TlsFiles) -> None:
    context = certs.client_context()
    context.set_alpn_protocols(["http/1.1"])
    server = srv.over_tls(context)
    with connect(server) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.selected_alpn_protocol() == "http/1.1"
        sock.sendall(request_bytes(server, "/docs/page.txt", close=True))
        r = ResponseReader(sock).read()
    assert (r.status, r.version, r.body) == (200, "HTTP/1.1", PAGE)


def test_a_client_without_alpn_is_served_http_1_1(tls_srv: ServerProcess) -> None:
    with connect(tls_srv) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.selected_alpn_protocol() is None
        sock.sendall(request_bytes(tls_srv, "/docs/page.txt", close=True))
        r = ResponseReader(sock).read()
    assert (r.status, r.version, r.body) == (200, "HTTP/1.1", PAGE)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_returning_client_resumes_its_session(srv: ServerProcess, certs: TlsFiles,
                                                version: ssl.TLSVersion) -> None:
    """TLS 1.2 session reuse, TLS 1.3 session tickets (which arrive after the handshake: the
    session is taken once a response has been read)."""
    context = client(certs, version)
    server = srv.over_tls(context)
    with connect(server) as first:
        assert isinstance(first, ssl.SSLSocket)
        first.sendall(request_bytes(server, "/index.html"))
        assert ResponseReader(first).read().status == 200
        session = first.session
        assert not first.session_reused
    assert session is not None
    raw = socket.create_connection((srv.host, server.port), timeout=5)
    with context.wrap_socket(raw, server_hostname=srv.host, session=session) as again:
        assert again.session_reused, f"{version.name}: full handshake again"
        again.sendall(request_bytes(server, "/index.html", close=True))
        assert ResponseReader(again).read().body == INDEX


def test_curl_over_https(srv: ServerProcess, certs: TlsFiles, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    assert srv.https_port is not None
    url = f"https://{TEST_NAME}:{srv.https_port}/docs/page.txt?x=1"
    body = tmp_path / "body"
    run = subprocess.run(
        [curl, "--http1.1", "--silent", "--show-error", "--verbose", "--cacert",
         str(certs.ca_file), "--resolve", f"{TEST_NAME}:{srv.https_port}:127.0.0.1",
         "--output", str(body), "--write-out", "%{http_code} %{http_version} %{ssl_verify_result}",
         url], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "200 1.1 0", run.stdout
    assert body.read_bytes() == PAGE
    assert "ALPN: server accepted http/1.1" in run.stderr or "ALPN, server accepted to use " \
        "http/1.1" in run.stderr, run.stderr


# --- HSTS -------------------------------------------------------------------------------------


def test_hsts_is_on_every_https_response(tls_srv: ServerProcess) -> None:
    ok = get(tls_srv, "/index.html")
    etag = ok.header("etag")
    assert etag
    not_modified = get(tls_srv, "/index.html", {"If-None-Match": etag})
    missing = get(tls_srv, "/no/such/page")
    with connect(tls_srv) as sock:  # a hot file on one keep-alive connection, as browsers ask
        reader = ResponseReader(sock)
        repeated = []
        for _ in range(3):
            sock.sendall(request_bytes(tls_srv, "/docs/page.txt"))
            repeated.append(reader.read())
    for r in (ok, not_modified, missing, *repeated):
        assert r.header_all("strict-transport-security") == ["max-age=600"], (r.status,
                                                                               r.headers)
    assert (ok.status, not_modified.status, missing.status) == (200, 304, 404)


def test_hsts_is_never_sent_over_plain_http(srv: ServerProcess) -> None:
    for path in ("/index.html", "/index.html", "/no/such/page"):
        r = get(srv, path)
        assert r.status in (200, 404)
        assert r.header("strict-transport-security") is None, r.headers


# --- large files and slow readers -------------------------------------------------------------


def test_a_multi_mebibyte_file_arrives_byte_exact(tls_srv: ServerProcess) -> None:
    r = get(tls_srv, "/big.bin", timeout=30)
    assert r.status == 200 and int(r.header("content-length") or -1) == len(BIG)
    assert r.body == BIG


def test_a_slow_reader_over_tls_does_not_stall_other_clients(tls_srv: ServerProcess) -> None:
    slow = SlowDownload(tls_srv, "/big.bin", first=256 * 1024)
    try:
        started = time.monotonic()
        small = get(tls_srv, "/docs/page.txt", timeout=5)
        assert (small.status, small.body) == (200, PAGE)
        assert time.monotonic() - started < 2, "a small file waited behind the slow reader"
        other = get(tls_srv, "/big.bin", timeout=30)
        assert other.body == BIG, "a second large download was corrupted or cut"
    finally:
        complete = slow.finish()
    assert complete and slow.body == BIG


# --- --redirect-http --------------------------------------------------------------------------


def test_redirect_http_answers_308_to_the_https_url_with_path_and_query(
        site: Path, certs: TlsFiles, serve: Serve) -> None:
    tls_port = free_port()
    server = serve(site, *certs.args[:4], "--tls-port", str(tls_port), "--redirect-http",
                   "--hsts", "600", "--access-log", "off", https=True)
    r = get(server, "/docs/page.txt?a=1&b=%20c")
    assert r.status == 308
    location = r.header("location")
    assert location == f"https://127.0.0.1:{tls_port}/docs/page.txt?a=1&b=%20c"
    assert r.header("strict-transport-security") is None, "HSTS is for HTTPS responses only"
    named = exchange(server, b"HEAD / HTTP/1.1\r\nHost: www.example.test:8080\r\n"
                             b"Connection: close\r\n\r\n", head_request=True)
    assert named.status == 308
    assert named.header("location") == f"https://www.example.test:{tls_port}/"
    # Following the redirect gets the page, over TLS.
    followed = get(server.over_tls(certs.client_context()), "/docs/page.txt?a=1&b=%20c")
    assert (followed.status, followed.body) == (200, PAGE)


def test_redirect_http_names_the_https_port_chosen_by_the_kernel(
        site: Path, certs: TlsFiles, serve: Serve) -> None:
    server = serve(site, *certs.args, "--redirect-http", "--access-log", "off", https=True)
    r = get(server, "/docs/page.txt")
    assert r.header("location") == f"https://127.0.0.1:{server.https_port}/docs/page.txt"


def test_redirect_http_holds_for_a_page_just_served_over_tls(
        site: Path, certs: TlsFiles, serve: Serve) -> None:
    server = serve(site, *certs.args, "--redirect-http", "--access-log", "off", https=True)
    secure = server.over_tls(certs.client_context())
    for view in (secure, server):
        with connect(view) as sock:
            reader = ResponseReader(sock)
            statuses = []
            for _ in range(3):
                sock.sendall(request_bytes(view, "/docs/page.txt"))
                statuses.append(reader.read().status)
        expected = [200] * 3 if view is secure else [308] * 3
        assert statuses == expected, (view.url, statuses)


# --- certificate reload -----------------------------------------------------------------------


def sighup_and_wait(server: ServerProcess, line: str, timeout: float = 10.0) -> None:
    """SIGHUP, then wait for the server's log line about it (one more than before)."""
    before = server.stderr_text().count(line)
    server.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: server.stderr_text().count(line) > before, timeout), (
        f"no {line!r} on stderr: {server.stderr_text()[-2000:]}")


def handshake_serial(server: ServerProcess) -> int:
    with connect(server) as sock:
        return peer_serial(sock)


def test_sighup_reloads_the_certificate_and_open_connections_carry_on(
        tmp_path: Path, site: Path, serve: Serve) -> None:
    certs = tls_files(tmp_path / "certs")
    server = serve(site, *certs.args, "--access-log", "off", https=True)
    secure = server.over_tls(certs.client_context())
    with connect(secure) as kept:
        reader = ResponseReader(kept)
        assert peer_serial(kept) == certs.serial
        kept.sendall(request_bytes(secure, "/docs/page.txt"))
        assert reader.read().body == PAGE
        renewed = certs.issue()  # a new pair over the same two files
        assert renewed != certs.serial
        sighup_and_wait(server, "TLS certificate reloaded")
        assert handshake_serial(secure) == renewed
        kept.sendall(request_bytes(secure, "/index.html"))  # the old connection still works
        r = reader.read()
        assert (r.status, r.body) == (200, INDEX)
        assert peer_serial(kept) == certs.serial

        # A broken pair (this certificate with another pair's key) is refused, logged, and the
        # running certificate stays.
        other = tls_files(tmp_path / "other")
        certs.key.write_bytes(other.key.read_bytes())
        sighup_and_wait(server, "TLS reload refused")
        assert "key values mismatch" in server.stderr_text().lower()
        assert handshake_serial(secure) == renewed
        assert get(secure, "/docs/page.txt").body == PAGE
        kept.sendall(request_bytes(secure, "/docs/page.txt", close=True))
        assert reader.read().body == PAGE
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr_text()


def test_sighup_uses_new_certificate_paths_from_the_config_file(
        tmp_path: Path, site: Path, serve: Serve) -> None:
    certs = tls_files(tmp_path / "certs")
    config = tmp_path / "site.toml"

    def write_config(cert: Path, key: Path) -> None:
        config.write_text(f'root = "{site}"\naccess-log = "off"\ntls-port = 0\n'
                          f'tls-cert = "{cert}"\ntls-key = "{key}"\n')

    write_config(certs.cert, certs.key)
    server = serve(None, "--config", str(config), https=True)
    secure = server.over_tls(certs.client_context())
    assert handshake_serial(secure) == certs.serial
    new_cert, new_key = tmp_path / "renewed-chain.pem", tmp_path / "renewed-key.pem"
    renewed = certs.issue(new_cert, new_key)
    write_config(new_cert, new_key)
    sighup_and_wait(server, f"TLS certificate reloaded from {new_cert}")
    assert handshake_serial(secure) == renewed
    assert get(secure, "/index.html").body == INDEX


# --- hostile handshakes: flood, garbage ------------------------------------------------------


def guarded(serve: Serve, site: Path, certs: TlsFiles, *args: str
            ) -> tuple[ServerProcess, ServerProcess, tuple[str, int], int]:
    """A server with its admin endpoint, warmed over TLS, its socket baseline taken with no
    client connected: (plain view, TLS view, admin address, baseline)."""
    server = serve(site, *certs.args, "--admin-port", "0", "--access-log", "off", *args,
                   https=True)
    admin = admin_address(server)
    secure = server.over_tls(certs.client_context())
    assert get(secure, "/index.html").status == 200
    assert wait_until(lambda: scrape_metrics(admin)["flashsrv_open_connections"] == 0, 5)
    return server, secure, admin, socket_fd_count(server.proc.pid)


def test_a_handshake_flood_does_not_stop_a_normal_client_and_times_out(
        site: Path, certs: TlsFiles, serve: Serve) -> None:
    server, secure, admin, baseline = guarded(serve, site, certs, "--header-timeout", "1")
    assert server.https_port is not None
    silent = [socket.create_connection((server.host, server.https_port), timeout=5)
              for _ in range(200)]  # TCP connected, never a ClientHello
    try:
        started = time.monotonic()
        for _ in range(5):
            r = get(secure, "/docs/page.txt", timeout=5)
            assert (r.status, r.body) == (200, PAGE)
        assert time.monotonic() - started < 3, "normal clients waited behind the flood"
        still_open = [s for s in silent if not ResponseReader(s).at_eof(timeout=5)]
        assert not still_open, f"{len(still_open)} half-open handshakes outlived the timeout"
    finally:
        for s in silent:
            s.close()
    assert_no_leaks(server, admin, baseline)


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    bytes(random.Random(7).randbytes(4096)),
    b"\x16\x03\x01\x00\x10" + b"\x01" * 16,  # a handshake record whose content is nonsense
    b"\x16\x03\x01\x40\x00",  # a record header announcing 16 KiB, then nothing
], ids=["plain-http", "random", "bad-clienthello", "truncated-record"])
def test_garbage_instead_of_a_client_hello_is_closed_without_a_traceback(
        site: Path, certs: TlsFiles, serve: Serve, garbage: bytes) -> None:
    server, secure, admin, baseline = guarded(serve, site, certs, "--header-timeout", "1")
    assert server.https_port is not None
    with socket.create_connection((server.host, server.https_port), timeout=5) as sock:
        sock.sendall(garbage)
        started = time.monotonic()
        answer = read_until_eof(sock, timeout=5)
        assert time.monotonic() - started < 4, "not closed"
    assert b"HTTP/1." not in answer, answer[:200]
    assert get(secure, "/index.html").body == INDEX
    assert_no_leaks(server, admin, baseline)


# --- start-up with a broken certificate -------------------------------------------------------


@pytest.mark.parametrize("problem", ["missing-cert", "missing-key", "mismatched-key",
                                     "key-without-cert"])
def test_a_start_with_a_broken_certificate_or_key_fails_with_a_clear_message(
        tmp_path: Path, site: Path, certs: TlsFiles, problem: str) -> None:
    other = tls_files(tmp_path / "other")
    args, expected = {
        "missing-cert": (["--tls-cert", str(tmp_path / "absent.pem"), "--tls-key",
                          str(certs.key)], str(tmp_path / "absent.pem")),
        "missing-key": (["--tls-cert", str(certs.cert), "--tls-key", str(tmp_path / "nokey")],
                        str(tmp_path / "nokey")),
        "mismatched-key": (["--tls-cert", str(certs.cert), "--tls-key", str(other.key)],
                           "key values mismatch"),
        "key-without-cert": (["--tls-key", str(certs.key)], "--tls-cert"),
    }[problem]
    code, err = serve_refused(site, *args, "--tls-port", "0",
                              failure=f"server started with {problem}")
    assert code != 0
    assert "Traceback" not in err
    assert expected in err, err
    assert not HTTPS_LISTEN_RE.search(err)


def test_environment_variables_configure_https(site: Path, certs: TlsFiles,
                                               serve: Serve) -> None:
    env = {"FLASHSRV_TLS_CERT": str(certs.cert), "FLASHSRV_TLS_KEY": str(certs.key),
           "FLASHSRV_TLS_PORT": "0", "FLASHSRV_HSTS": "60"}
    server = serve(site, "--access-log", "off", env=env, https=True)
    r = get(server.over_tls(certs.client_context()), "/index.html")
    assert (r.status, r.body) == (200, INDEX)
    assert r.header("strict-transport-security") == "max-age=60"
