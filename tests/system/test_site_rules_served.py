"""Site rules over real sockets: the TOML config file and its precedence, `check-config`,
Cache-Control per pattern, extra headers, custom error pages, the SPA fallback and listings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from support import LISTEN_RE, Serve, ServerProcess, free_port, get, start_server

DEFAULT_CACHE_CONTROL = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
INDEX = b"<!doctype html><title>app shell</title><div id=app></div>\n"
CUSTOM_404 = b"<!doctype html><title>lost</title><h1>custom not found</h1>\n"

SITE_TOML = """\
root = "www"
default-cache-control = "no-cache"

[[cache-control]]
pattern = "assets/*"
value = "public, max-age=31536000, immutable"

[headers]
X-Content-Type-Options = "nosniff"
Access-Control-Allow-Origin = "*"

[error-pages]
404 = "errors/404.html"
"""


def make_site(base: Path) -> Path:
    root = base / "www"
    (root / "assets" / "img").mkdir(parents=True)
    (root / "errors").mkdir()
    (root / "empty").mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "about.html").write_bytes(b"<h1>about</h1>\n")
    (root / "assets" / "app.3f2a9c.js").write_bytes(b"console.log('hashed');\n" * 10)
    (root / "assets" / "img" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 64)
    (root / "errors" / "404.html").write_bytes(CUSTOM_404)
    (root / "data.bin").write_bytes(bytes(range(256)))
    return root


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("site")
    make_site(base)
    write(base / "site.toml", SITE_TOML)
    return base


@pytest.fixture(scope="module")
def configured(site_dir: Path) -> Iterator[ServerProcess]:
    """A server whose only source of settings (root included) is the config file."""
    srv = start_server(None, "--config", str(site_dir / "site.toml"), "--access-log", "off")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def plain(site_dir: Path) -> Iterator[ServerProcess]:
    srv = start_server(site_dir / "www", "--access-log", "off")
    yield srv
    srv.stop()


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flashsrv", "check-config", str(path)],
                          capture_output=True, text=True, timeout=30)


def message_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


# --- the config file and its precedence ----------------------------------------------------


def test_config_root_is_relative_to_the_config_file_folder(configured: ServerProcess) -> None:
    resp = get(configured, "/index.html")
    assert resp.status == 200
    assert resp.body == INDEX


def test_default_cache_control_without_configuration(plain: ServerProcess) -> None:
    for path in ("/index.html", "/assets/app.3f2a9c.js", "/data.bin"):
        assert get(plain, path).header("cache-control") == DEFAULT_CACHE_CONTROL, path


def test_cache_control_rule_applies_to_paths_matching_its_pattern(
        configured: ServerProcess) -> None:
    assert get(configured, "/assets/app.3f2a9c.js").header("cache-control") == IMMUTABLE
    assert get(configured, "/assets/img/logo.png").header("cache-control") == IMMUTABLE


def test_default_cache_control_from_config_applies_elsewhere(configured: ServerProcess) -> None:
    for path in ("/index.html", "/", "/about.html", "/data.bin"):
        assert get(configured, path).header("cache-control") == "no-cache", path


def test_cache_control_rule_is_repeated_on_304_and_206(configured: ServerProcess) -> None:
    full = get(configured, "/assets/app.3f2a9c.js")
    not_modified = get(configured, "/assets/app.3f2a9c.js",
                       {"If-None-Match": full.header("etag")})
    partial = get(configured, "/assets/app.3f2a9c.js", {"Range": "bytes=0-3"})
    assert not_modified.status == 304 and partial.status == 206
    assert not_modified.header("cache-control") == IMMUTABLE
    assert partial.header("cache-control") == IMMUTABLE


def test_first_matching_cache_control_rule_wins(tmp_path: Path, serve: Serve) -> None:
    make_site(tmp_path)
    config = write(tmp_path / "rules.toml", """\
root = "www"
[[cache-control]]
pattern = "*.html"
value = "no-store"
[[cache-control]]
pattern = "*"
value = "max-age=60"
""")
    srv = serve(None, "--config", str(config), "--access-log", "off")
    assert get(srv, "/about.html").header("cache-control") == "no-store"
    assert get(srv, "/data.bin").header("cache-control") == "max-age=60"


def test_extra_headers_are_sent_on_200_206_and_304(configured: ServerProcess) -> None:
    full = get(configured, "/about.html")
    responses = [full, get(configured, "/about.html", {"Range": "bytes=0-1"}),
                 get(configured, "/about.html", {"If-None-Match": full.header("etag")})]
    assert [r.status for r in responses] == [200, 206, 304]
    for resp in responses:
        assert resp.header("x-content-type-options") == "nosniff"
        assert resp.header("access-control-allow-origin") == "*"


def test_no_extra_headers_without_configuration(plain: ServerProcess) -> None:
    resp = get(plain, "/about.html")
    assert resp.header("x-content-type-options") is None
    assert resp.header("access-control-allow-origin") is None


def test_listing_precedence_flag_over_environment_over_file(site_dir: Path,
                                                            tmp_path: Path, serve: Serve) -> None:
    config = write(tmp_path / "listing.toml",
                   f'root = "{site_dir / "www"}"\nlisting = false\n')
    cases = [({}, (), 403), ({"FLASHSRV_LISTING": "1"}, (), 200),
             ({"FLASHSRV_LISTING": "1"}, ("--no-listing",), 403),
             ({}, ("--listing",), 200)]
    for env, flags, status in cases:
        srv = serve(None, "--config", str(config), "--access-log", "off", *flags, env=env)
        assert get(srv, "/empty/").status == status, (env, flags)


def _listening_port(config: Path, env: dict[str, str], *flags: str) -> int:
    """Start `flashsrv serve --config FILE` without --port and return the port it reports."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashsrv", "serve", "--config", str(config),
         "--access-log", "off", *flags],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **env})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for line in list(lines):
                m = LISTEN_RE.search(line)
                if m:
                    return int(m.group(2))
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.02)
        raise AssertionError(f"no listening line: {''.join(lines)}")
    finally:
        proc.terminate()
        proc.wait(10)


def test_port_precedence_flag_over_environment_over_file(site_dir: Path,
                                                         tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = write(tmp_path / "port.toml",
                   f'root = "{site_dir / "www"}"\nhost = "127.0.0.1"\nport = {file_port}\n')
    assert _listening_port(config, {}) == file_port
    assert _listening_port(config, {"FLASHSRV_PORT": str(env_port)}) == env_port
    assert _listening_port(config, {"FLASHSRV_PORT": str(env_port)},
                           "--port", str(flag_port)) == flag_port


def test_serve_refuses_a_broken_config_file_with_its_message(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", 'port = "x"\n')
    result = subprocess.run([sys.executable, "-m", "flashsrv", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "port" in result.stderr


# --- check-config ----------------------------------------------------------------------------


def test_check_config_accepts_a_good_file(site_dir: Path) -> None:
    result = check_config(site_dir / "site.toml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


BAD_CONFIGS = {
    "unknown-key": ('colour = "blue"\n', "colour"),
    "port-not-a-number": ('port = "x"\n', "port"),
    "port-not-an-integer": ("port = 1.5\n", "port"),
    "port-out-of-range": ("port = 70000\n", "port"),
    "listing-not-a-boolean": ('listing = "maybe"\n', "listing"),
    "pattern-leading-slash": ('[[cache-control]]\npattern = "/assets/*"\nvalue = "x"\n',
                              "pattern"),
    "pattern-unbalanced-bracket": ('[[cache-control]]\npattern = "assets/[ab"\nvalue = "x"\n',
                                   "pattern"),
    "cache-rule-missing-value": ('[[cache-control]]\npattern = "*.html"\n', "cache-control"),
    "bad-header-name": ('[headers]\n"X Bad" = "1"\n', "X Bad"),
    "multi-line-header-value": ('[headers]\nX-A = "a\\r\\nSet-Cookie: x=1"\n', "X-A"),
    "non-latin1-header-value": ('[headers]\nX-Price = "10 \u20ac"\n', "X-Price"),
    "framing-header": ('[headers]\nContent-Length = "0"\n', "Content-Length"),
    "non-error-status-page": ('[error-pages]\n200 = "ok.html"\n', "200"),
    "invalid-toml": ("port = \n", "TOML"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_check_config_reports_each_mistake_on_one_line(tmp_path: Path, name: str) -> None:
    text, needle = BAD_CONFIGS[name]
    path = write(tmp_path / "bad.toml", text)
    result = check_config(path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = message_lines(result)
    assert len(lines) == 1, lines
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_check_config_reports_every_mistake_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", """\
colour = "blue"
port = "x"
[[cache-control]]
pattern = "/abs"
value = "no-cache"
[headers]
"Bad Name" = "1"
[error-pages]
200 = "ok.html"
""")
    result = check_config(path)
    assert result.returncode == 1
    lines = message_lines(result)
    assert len(lines) == 5, lines
    for needle in (": colour:", ": port:", "pattern", "'Bad Name'", "'200'"):
        assert sum(needle in line for line in lines) == 1, (needle, lines)


def test_check_config_wrong_type_message_says_what_was_expected(tmp_path: Path) -> None:
    """`port = "x"` should read like a sentence about the setting, not a Python exception."""
    result = check_config(write(tmp_path / "bad.toml", 'port = "x"\n'))
    (line,) = message_lines(result)
    assert "port" in line
    assert "invalid literal" not in line and "int()" not in line, line


def test_check_config_names_the_file_once_per_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "port = \n")
    (line,) = message_lines(check_config(path))
    assert line.count(str(path)) == 1, line


# --- custom error pages ----------------------------------------------------------------------


def test_configured_error_page_is_served_with_status_404(configured: ServerProcess) -> None:
    for _ in range(2):  # the second answer may come from the caches
        resp = get(configured, "/no/such/page")
        assert resp.status == 404
        assert resp.body == CUSTOM_404
        assert resp.header("content-type") == "text/html; charset=utf-8"
        assert resp.header("content-length") == str(len(CUSTOM_404))


def test_root_404_html_is_used_without_configuration(tmp_path: Path, serve: Serve) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "404.html").write_bytes(b"<h1>our own 404</h1>\n")
    srv = serve(root, "--access-log", "off")
    resp = get(srv, "/missing.css")
    assert resp.status == 404
    assert resp.body == b"<h1>our own 404</h1>\n"
    head = get(srv, "/missing.css", method="HEAD")
    assert head.status == 404
    assert head.header("content-length") == str(len(b"<h1>our own 404</h1>\n"))


def test_without_404_html_the_builtin_404_page_is_used(plain: ServerProcess) -> None:
    resp = get(plain, "/missing")
    assert resp.status == 404
    assert CUSTOM_404 not in resp.body and b"404" in resp.body


def test_hidden_file_404_uses_the_custom_error_page(configured: ServerProcess) -> None:
    resp = get(configured, "/.env")
    assert resp.status == 404
    assert resp.body == CUSTOM_404


@pytest.fixture(scope="module")
def more_error_pages(site_dir: Path) -> Iterator[ServerProcess]:
    www = site_dir / "www"
    (www / "errors" / "403.html").write_bytes(b"<h1>custom forbidden</h1>\n")
    (www / "errors" / "416.html").write_bytes(b"<h1>custom range</h1>\n")
    config = write(site_dir / "pages.toml", """\
root = "www"
[error-pages]
403 = "errors/403.html"
404 = "errors/404.html"
416 = "errors/416.html"
""")
    srv = start_server(None, "--config", str(config), "--access-log", "off")
    yield srv
    srv.stop()


def test_custom_403_page_is_served_on_every_request(more_error_pages: ServerProcess) -> None:
    bodies = [get(more_error_pages, "/empty/").body for _ in range(3)]
    assert bodies == [b"<h1>custom forbidden</h1>\n"] * 3


def test_custom_416_page_keeps_the_content_range(more_error_pages: ServerProcess) -> None:
    for attempt in range(2):
        resp = get(more_error_pages, "/data.bin", {"Range": "bytes=9999-"})
        assert resp.status == 416
        assert resp.header("content-range") == "bytes */256", attempt
        assert resp.body == b"<h1>custom range</h1>\n", attempt


# --- SPA fallback ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spa(site_dir: Path) -> Iterator[ServerProcess]:
    srv = start_server(site_dir / "www", "--access-log", "off", "--fallback", "index.html")
    yield srv
    srv.stop()


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("path", ["/dashboard", "/users/42/settings", "/deep/page.html",
                                  "/route?tab=2"])
def test_fallback_serves_the_app_shell_for_unknown_pages(spa: ServerProcess,
                                                         path: str) -> None:
    for _ in range(2):
        resp = get(spa, path, {"Accept": BROWSER_ACCEPT})
        assert resp.status == 200
        assert resp.body == INDEX
        assert resp.header("content-type") == "text/html; charset=utf-8"


@pytest.mark.parametrize("path", ["/missing.js", "/static/missing.css", "/img/missing.png",
                                  "/font.woff2"])
def test_fallback_never_replaces_missing_assets(spa: ServerProcess, path: str) -> None:
    resp = get(spa, path, {"Accept": BROWSER_ACCEPT})
    assert resp.status == 404
    assert resp.body != INDEX


def test_fallback_needs_a_client_that_accepts_html(spa: ServerProcess) -> None:
    assert get(spa, "/dashboard").status == 404
    assert get(spa, "/dashboard", {"Accept": "application/json"}).status == 404


def test_fallback_does_not_shadow_existing_files(spa: ServerProcess) -> None:
    resp = get(spa, "/about.html", {"Accept": BROWSER_ACCEPT})
    assert resp.status == 200 and resp.body == b"<h1>about</h1>\n"


def test_fallback_response_declares_that_it_varies_on_accept(spa: ServerProcess) -> None:
    """The same URL is the app shell for text/html and a 404 otherwise: caches must know."""
    resp = get(spa, "/dashboard", {"Accept": BROWSER_ACCEPT})
    assert resp.status == 200
    vary = [v.strip().lower() for v in ",".join(resp.header_all("vary")).split(",")]
    assert "accept" in vary


def test_without_fallback_unknown_pages_are_404(plain: ServerProcess) -> None:
    assert get(plain, "/dashboard", {"Accept": BROWSER_ACCEPT}).status == 404


# --- directory listing -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def listing_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("listing")
    files = root / "files"
    (files / "zeta-dir").mkdir(parents=True)
    (files / "Alpha-dir").mkdir()
    (files / "<script>.txt").write_bytes(b"x" * 5)
    (files / "b&b.txt").write_bytes(b"y" * 1234)
    (files / "a file.txt").write_bytes(b"z")
    (files / ".secret").write_bytes(b"hidden")
    (files / ".hidden-dir").mkdir()
    os.utime(files / "b&b.txt", (1_600_000_000, 1_600_000_000))
    (root / "withindex").mkdir()
    (root / "withindex" / "index.html").write_bytes(b"<h1>index wins</h1>\n")
    return root


@pytest.fixture(scope="module")
def listing(listing_root: Path) -> Iterator[ServerProcess]:
    srv = start_server(listing_root, "--access-log", "off", "--listing")
    yield srv
    srv.stop()


def test_listing_is_off_by_default(listing_root: Path, serve: Serve) -> None:
    srv = serve(listing_root, "--access-log", "off")
    resp = get(srv, "/files/")
    assert resp.status == 403
    assert b"&lt;script&gt;" not in resp.body and b"b&amp;b.txt" not in resp.body


@pytest.fixture(scope="module")
def listing_page(listing: ServerProcess) -> bytes:
    """The listing of /files/, fetched once (so these tests do not depend on re-serving it)."""
    resp = get(listing, "/files/")
    assert resp.status == 200
    assert resp.header("content-type").startswith("text/html")
    return resp.body


def test_listing_is_html_with_escaped_names(listing_page: bytes) -> None:
    assert b"<script>" not in listing_page
    assert b"&lt;script&gt;.txt" in listing_page
    assert b'href="%3Cscript%3E.txt"' in listing_page
    assert b"b&amp;b.txt" in listing_page
    assert b'href="a%20file.txt"' in listing_page


def test_listing_puts_directories_first(listing_page: bytes) -> None:
    body = listing_page.decode()
    names = re.findall(r'<a href="[^"]*">([^<]*)</a>', body)
    names = [n for n in names if n != "../"]
    assert names[:2] == ["Alpha-dir/", "zeta-dir/"]
    assert sorted(names[2:]) == sorted(["a file.txt", "b&amp;b.txt", "&lt;script&gt;.txt"])


def test_listing_shows_sizes_and_dates(listing_page: bytes) -> None:
    body = listing_page.decode()
    row = next(r for r in body.split("<tr>") if "b&amp;b.txt" in r)
    assert "1.2 KiB" in row or "1234" in row, row
    assert formatdate(1_600_000_000, usegmt=True) in row


def test_listing_hides_dotfiles(listing_page: bytes) -> None:
    body = listing_page
    assert b".secret" not in body and b".hidden-dir" not in body


def test_listing_is_served_on_every_request(listing_root: Path, serve: Serve) -> None:
    """Also within the path cache's one-second trust window, not only on the first request."""
    srv = serve(listing_root, "--access-log", "off", "--listing")
    statuses = [get(srv, "/files/").status for _ in range(4)]
    assert statuses == [200] * 4


def test_listing_never_replaces_an_index_html(listing: ServerProcess) -> None:
    assert get(listing, "/withindex/").body == b"<h1>index wins</h1>\n"


def test_directory_without_slash_redirects_even_with_listing(listing: ServerProcess) -> None:
    resp = get(listing, "/files")
    assert resp.status == 301
    assert resp.header("location") == "/files/"
