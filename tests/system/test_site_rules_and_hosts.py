"""Issue 12 over real sockets: redirects and rewrites (TOML and `_redirects`), per-path headers
(`[[headers]]` and `_headers`), clean URLs, the trailing-slash policy, rule files that are never
served and are re-read while running, SIGHUP reloads, and virtual hosts (`[[sites]]`).

And what none of it may do: redirect to another origin unless a rule names it, put a second
line into a header, serve a file outside the root, or let one site read another's files. The
request forms of the safety and smuggling suites are replayed with every feature on.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from support import (
    Response,
    ResponseReader,
    Serve,
    ServerProcess,
    connect,
    exchange,
    get,
    request_bytes,
    start_server,
    wait_until,
)
from test_safety import (
    MALFORMED,
    REFUSED,
    SECRET,
    SIBLING_SECRET,
    TRAVERSALS,
    assert_no_secret,
    raw_get,
)
from test_smuggling import CL_CASES, FIRST, MARKER, START, TE_CASES, check

ABOUT = b"<h1>about</h1>\n"
DOCS = b"<h1>docs index</h1>\n"
DOCS_HTML = b"<h1>docs.html, shadowed by the docs folder</h1>\n"
SPA = b"<!doctype html><div id=app>spa shell</div>\n"
SOFT = b"a file that a shadowing rule does not hide\n"
NOT_FOUND_PAGE = b"<h1>custom 404</h1>\n"
APP_JS = b"console.log('asset');\n" * 20
SITE_A = b"<h1>site A</h1>\n"
SITE_B = b"<h1>site B</h1>\n"
ONLY_A = b"A-ONLY-5c1e\n"
ONLY_B = b"B-ONLY-9d7f\n"
DEFAULT = b"<h1>default site</h1>\n"

REDIRECTS_FILE = """\
# the site's own rules (read before the configured ones)
/from-file      /about        302
/shadow.txt     /about        302
/forced.txt     /about        302!
/app/*          /spa.html     200
/r/*            /:splat       200
/both           /file-wins    302!
/no-index/*     /spa.html     200
/bare-folder    /about        302
"""
HEADERS_FILE = """\
/*
  X-From-File: yes
/assets/*
  X-Asset: file
"""

FULL_TOML = """\
root = "www"
clean-urls = true
header-timeout = 2
keepalive-timeout = 2

[[headers]]
X-Global = "g"
X-Frame-Options = "DENY"

[[headers]]
pattern = "/assets/*"
Cache-Control = "public, max-age=60"
X-Asset = "toml"
X-Frame-Options = "SAMEORIGIN"

[error-pages]
404 = "errors/404.html"

[[redirects]]
from = "/s301"
to = "/about"
status = 301
[[redirects]]
from = "/s302"
to = "/about"
status = 302
[[redirects]]
from = "/s303"
to = "/about"
status = 303
[[redirects]]
from = "/s307"
to = "/about"
status = 307
[[redirects]]
from = "/s308"
to = "/about"
status = 308
[[redirects]]
from = "/blog/:year/:slug"
to = "/posts/:year-:slug"
status = 308
[[redirects]]
from = "/old/*"
to = "/new/:splat"
[[redirects]]
from = "/first/*"
to = "/one"
status = 302
[[redirects]]
from = "/first/x"
to = "/two"
status = 302
[[redirects]]
from = "/ext/*"
to = "https://docs.example.com/:splat"
status = 302
[[redirects]]
from = "/go/*"
to = "/:splat"
status = 302
[[redirects]]
from = "/x/*"
to = "/:splat"
status = 200
[[redirects]]
from = "/soft.txt"
to = "/about"
status = 302
force = false
[[redirects]]
from = "/soft-missing"
to = "/about"
status = 302
force = false
[[redirects]]
from = "/both"
to = "/toml-wins"
status = 302

[[sites]]
hosts = ["a.example", "*.a.example"]
root = "a"

[[sites]]
hosts = ["b.example", "*.w.example"]
root = "b"
clean-urls = true
[[sites.redirects]]
from = "/feed"
to = "/index.xml"
status = 302
[[sites.headers]]
X-Site = "b"
"""

# Requests that look for a way out through a rewrite (`/x/*` forced, `/r/*` shadowing), the
# clean-URL lookup or an encoded dot-dot; SECRET sits in a file right next to the root.
ESCAPES = [
    b"/x/..%2fsecret.txt", b"/x/..%2Fsecret.txt", b"/x/%2e%2e/secret.txt",
    b"/x/%2e%2e%2fsecret.txt", b"/x/..%2f..%2fsecret.txt", b"/x/%252e%252e/secret.txt",
    b"/x/%252e%252e%252fsecret.txt", b"/x/..%5csecret.txt", b"/x/%5c..%5csecret.txt",
    b"/x/../secret.txt", b"/x/%2e%2e/%2e%2e/etc/passwd", b"/x/..%2f..%2f..%2f..%2fetc%2fpasswd",
    b"/r/..%2fsecret.txt", b"/r/%2e%2e/secret.txt", b"/r/%252e%252e/secret.txt",
    b"/r/..%5csecret.txt", b"/%2e%2e/secret", b"/..%2fsecret", b"/x/%2e%2e/secret",
    b"/r/%2e%2e%2fsecret", b"/x/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    b"http://a.example/x/%2e%2e/secret.txt",
]
OPEN_REDIRECTS = [
    "/go//evil.com", "/go/%2F%2Fevil.com", "/go/%2f%2fevil.com", "/go/%5Cevil.com",
    "/go/%5C%5Cevil.com", "/go/%2F%5Cevil.com", "/go/..%2F..%2Fetc%2Fpasswd",
    "/go/%252F%252Fevil.com", "/go/%09/evil.com", "/go/https:%2F%2Fevil.com",
    "/go/%2F/evil.com/", "/go/evil.com", "/old//evil.com", "/old/%2F%2Fevil.com",
    "//evil.com", "//evil.com/", "/%2F%2Fevil.com", "//evil.com/index.html",
    "/%2F%2Fevil.com/index.html", "/evil.com/index.html",
]


def make_site(base: Path) -> Path:
    """The default root `www`, sites `a` and `b`, and secrets outside all of them."""
    (base / "secret.txt").write_bytes(SECRET)
    (base / "secret.html").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    (base / "www-private").mkdir()
    (base / "www-private" / "secret.txt").write_bytes(SIBLING_SECRET)
    www = base / "www"
    for folder in ("docs", "dir", "assets", "errors", "app", "evil.com", "sub", "no-index",
                   "bare-folder"):
        (www / folder).mkdir(parents=True)
    (www / "index.html").write_bytes(DEFAULT)
    (www / "about.html").write_bytes(ABOUT)
    (www / "docs" / "index.html").write_bytes(DOCS)
    (www / "docs.html").write_bytes(DOCS_HTML)
    (www / "dir" / "index.html").write_bytes(DOCS)
    (www / "spa.html").write_bytes(SPA)
    (www / "soft.txt").write_bytes(SOFT)
    (www / "shadow.txt").write_bytes(SOFT)
    (www / "forced.txt").write_bytes(SOFT)
    (www / "app" / "real.txt").write_bytes(SOFT)
    (www / "no-index" / "real.txt").write_bytes(SOFT)
    (www / "assets" / "app.js").write_bytes(APP_JS)
    (www / "errors" / "404.html").write_bytes(NOT_FOUND_PAGE)
    (www / "evil.com" / "index.html").write_bytes(DEFAULT)
    (www / "sub" / "file.txt").write_bytes(b"inside the root\n")
    (www / "a.txt").write_bytes(FIRST)
    (www / "SMUGGLED.txt").write_bytes(MARKER)
    (www / "_redirects").write_text(REDIRECTS_FILE)
    (www / "_headers").write_text(HEADERS_FILE)
    for name, index, only in (("a", SITE_A, ONLY_A), ("b", SITE_B, ONLY_B)):
        (base / name).mkdir()
        (base / name / "index.html").write_bytes(index)
        (base / name / f"only-{name}.txt").write_bytes(only)
    (base / "a" / "_redirects").write_text("/a-rule /only-a.txt 302\n")
    (base / "b" / "page.html").write_bytes(SITE_B)
    (base / "b" / "_headers").write_text("/*\n  X-From-B-File: yes\n")
    (base / "site.toml").write_text(FULL_TOML)
    return www


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("rules")
    make_site(base)
    return base


@pytest.fixture(scope="module")
def full(base: Path) -> Iterator[ServerProcess]:
    """Every feature on: TOML and file rules, clean URLs, error pages, two virtual hosts."""
    srv = start_server(None, "--config", str(base / "site.toml"), "--access-log", "off")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def by_policy(base: Path) -> Iterator[Callable[[str], ServerProcess]]:
    """A server of the default root with clean URLs and the given trailing-slash policy,
    started on first use and kept for the module."""
    started: dict[str, ServerProcess] = {}

    def server_for(policy: str) -> ServerProcess:
        if policy not in started:
            started[policy] = start_server(base / "www", "--trailing-slash", policy,
                                           "--clean-urls", "--access-log", "off")
        return started[policy]

    yield server_for
    for srv in started.values():
        srv.stop()


def on_host(server: ServerProcess, path: str, host: str | None, version: str = "HTTP/1.1",
            method: str = "GET") -> Response:
    """One request with this Host (None: no Host line at all)."""
    lines = [f"{method} {path} {version}", "Connection: close"]
    if host is not None:
        lines.insert(1, f"Host: {host}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return exchange(server, raw, head_request=method == "HEAD")


def assert_redirect(resp: Response, status: int, location: str) -> None:
    assert (resp.status, resp.header("location")) == (status, location), resp
    assert len(resp.header_all("location")) == 1


def assert_stays_on_origin(server: ServerProcess, resp: Response) -> None:
    """A Location resolved against the server's own URL is still on the server's origin."""
    for location in resp.header_all("location"):
        resolved = urlsplit(urljoin(server.url + "/go/", location))
        assert (resolved.scheme, resolved.netloc) == ("http", f"{server.host}:{server.port}"), \
            f"Location {location!r} leaves the origin"
        assert "\\" not in location, location
    assert not resp.header_all("set-cookie"), resp.headers


def assert_one_each(resp: Response, *names: str) -> None:
    for name in ("Content-Length", "Content-Type", *names):
        assert len(resp.header_all(name)) == 1, (name, resp.headers)


# --- redirects from TOML --------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_configured_redirect_statuses(full: ServerProcess, status: int):
    resp = get(full, f"/s{status}")
    assert_redirect(resp, status, "/about")
    assert_one_each(resp)
    assert resp.header("x-global") == "g"


def test_placeholders_and_splat_fill_the_location(full: ServerProcess):
    assert_redirect(get(full, "/blog/2024/hello"), 308, "/posts/2024-hello")
    assert_redirect(get(full, "/blog/2024/hello/"), 308, "/posts/2024-hello")
    assert_redirect(get(full, "/old/a/b.html"), 301, "/new/a/b.html")
    assert_redirect(get(full, "/old"), 301, "/new/")
    assert_redirect(get(full, "/old/a%20b"), 301, "/new/a%20b")
    assert_redirect(get(full, "/old/caf%C3%A9"), 301, "/new/caf%C3%A9")


def test_first_matching_rule_wins(full: ServerProcess):
    assert_redirect(get(full, "/first/x"), 302, "/one")


def test_query_string_is_kept(full: ServerProcess):
    assert_redirect(get(full, "/old/a?x=1&y=2"), 301, "/new/a?x=1&y=2")
    assert_redirect(get(full, "/s302?q=%20z"), 302, "/about?q=%20z")


def test_rule_naming_another_origin_goes_there_and_keeps_its_host(full: ServerProcess):
    assert_redirect(get(full, "/ext/a/b"), 302, "https://docs.example.com/a/b")
    for path in ("/ext/@evil.com", "/ext//evil.com", "/ext/%2F%2Fevil.com"):
        location = get(full, path).header("location") or ""
        assert urlsplit(location).hostname == "docs.example.com", (path, location)


def test_shadowing_configured_rule_applies_only_where_no_file_is(full: ServerProcess):
    resp = get(full, "/soft.txt")
    assert (resp.status, resp.body) == (200, SOFT)
    assert_redirect(get(full, "/soft-missing"), 302, "/about")


# --- redirects from _redirects --------------------------------------------------------------


def test_file_rules_shadow_by_default_and_bang_forces(full: ServerProcess):
    assert_redirect(get(full, "/from-file"), 302, "/about")
    resp = get(full, "/shadow.txt")
    assert (resp.status, resp.body) == (200, SOFT)
    assert_redirect(get(full, "/forced.txt"), 302, "/about")


def test_shadowing_rules_apply_in_a_folder_without_an_index(full: ServerProcess):
    """Netlify's reading: a folder with no index.html holds no file to serve, so a shadowing
    rule applies there (without it: a slash redirect, then 403); the folder's files stand."""
    for _ in range(2):  # the second time from a cached entry (the fast path must not answer)
        resp = get(full, "/no-index/")
        assert (resp.status, resp.body) == (200, SPA)
        assert_redirect(get(full, "/bare-folder"), 302, "/about")
    resp = get(full, "/no-index/real.txt")
    assert (resp.status, resp.body) == (200, SOFT)
    resp = get(full, "/docs/")  # a folder with an index is served as before
    assert (resp.status, resp.body) == (200, DOCS)
    assert_redirect(get(full, "/sub"), 301, "/sub/")  # no rule there: nginx's slash redirect


def test_a_listed_folder_is_not_filled_by_a_shadowing_rule(
        serve: Callable[..., ServerProcess], tmp_path: Path):
    """With --listing a folder without an index has something to serve: its listing."""
    www = tmp_path / "www"
    (www / "files").mkdir(parents=True)
    (www / "files" / "a.txt").write_bytes(SOFT)
    (www / "spa.html").write_bytes(SPA)
    (www / "_redirects").write_text("/files/*  /spa.html  200\n")
    srv = serve(www, "--listing", "--access-log", "off")
    resp = get(srv, "/files/")
    assert resp.status == 200 and b"a.txt" in resp.body and resp.body != SPA


def test_file_rules_come_before_configured_ones(full: ServerProcess):
    assert_redirect(get(full, "/both"), 302, "/file-wins")


def test_rewrite_serves_the_other_file_with_200(full: ServerProcess):
    for path in ("/app/deep/link", "/app/x?y=1", "/app/a/b/c.txt"):
        resp = get(full, path)
        assert (resp.status, resp.body) == (200, SPA), path
        assert resp.header("location") is None
        assert (resp.header("content-type") or "").startswith("text/html")
    resp = get(full, "/app/real.txt")
    assert (resp.status, resp.body) == (200, SOFT)


def test_forced_rewrite_serves_the_other_path(full: ServerProcess):
    resp = get(full, "/x/about.html")
    assert (resp.status, resp.body) == (200, ABOUT)
    assert get(full, "/x/nothing-here").status == 404


# --- headers: [[headers]], _headers, global; managed ones never doubled -----------------------


def test_path_headers_merge_over_global_headers(full: ServerProcess):
    resp = get(full, "/assets/app.js")
    assert (resp.status, resp.body) == (200, APP_JS)
    assert resp.header("x-global") == "g"
    assert resp.header_all("x-frame-options") == ["SAMEORIGIN"]
    assert resp.header_all("x-asset") == ["file"]  # _headers after [[headers]]: it wins
    assert resp.header_all("x-from-file") == ["yes"]
    other = get(full, "/about")
    assert other.header_all("x-frame-options") == ["DENY"]
    assert other.header("x-asset") is None and other.header("x-from-file") == "yes"


def test_managed_headers_are_never_duplicated(full: ServerProcess):
    for path in ("/assets/app.js", "/about", "/", "/s301", "/assets/missing.js", "/app/x"):
        resp = get(full, path)
        assert_one_each(resp, "Server", "Date")
        assert resp.header_all("content-length") == [str(len(resp.body))], path


def test_a_configured_cache_control_replaces_the_default_one(full: ServerProcess):
    resp = get(full, "/assets/app.js")
    assert resp.header_all("cache-control") == ["public, max-age=60"], resp.headers


def test_path_headers_also_on_304_206_and_error_pages(full: ServerProcess):
    etag = get(full, "/assets/app.js").header("etag")
    responses = {
        304: get(full, "/assets/app.js", {"If-None-Match": etag or ""}),
        206: get(full, "/assets/app.js", {"Range": "bytes=0-9"}),
        404: get(full, "/assets/missing.js"),
        416: get(full, "/assets/app.js", {"Range": "bytes=99999-"}),
    }
    for status, resp in responses.items():
        assert resp.status == status, resp
        assert resp.header_all("x-asset") == ["file"], (status, resp.headers)
        assert resp.header_all("x-frame-options") == ["SAMEORIGIN"], (status, resp.headers)
        assert resp.header("x-global") == "g"
    assert responses[206].body == APP_JS[:10]
    assert responses[404].body == NOT_FOUND_PAGE
    assert_one_each(responses[206])
    assert_one_each(responses[404])


# --- clean URLs and the trailing slash ------------------------------------------------------


def test_clean_urls(full: ServerProcess):
    resp = get(full, "/about")
    assert (resp.status, resp.body) == (200, ABOUT)
    assert (resp.header("content-type") or "").startswith("text/html")
    assert_redirect(get(full, "/about.html"), 301, "/about")
    assert_redirect(get(full, "/about.html?x=1"), 301, "/about?x=1")
    assert_redirect(get(full, "/dir/index.html"), 301, "/dir/")
    assert_redirect(get(full, "/index.html"), 301, "/")
    assert get(full, "/nothing").status == 404


def test_a_folder_wins_over_an_html_file_of_its_name(full: ServerProcess):
    assert_redirect(get(full, "/docs"), 301, "/docs/")
    resp = get(full, "/docs/")
    assert (resp.status, resp.body) == (200, DOCS)


@pytest.mark.parametrize("path", [
    "/x%0d%0aSet-Cookie:%20pwned=1.html", "/x%0aSet-Cookie:%20pwned=1.html",
    "/x%0d%0aLocation:%20//evil.com.html", "/a%20b.html", "/%E2%82%AC.html",
])
def test_clean_url_redirect_of_an_odd_name_is_one_header_line(full: ServerProcess, path):
    resp = get(full, path)
    assert resp.status == 301, resp
    assert len(resp.header_all("location")) == 1
    assert_stays_on_origin(full, resp)
    location = resp.header("location") or ""
    assert all(0x21 <= ord(ch) < 0x7f for ch in location), location
    assert get(full, "/about").status == 200


@pytest.mark.parametrize(("policy", "path", "status", "location"), [
    ("add", "/docs", 301, "/docs/"),
    ("add", "/docs?q=1", 301, "/docs/?q=1"),
    ("add", "/docs/", 200, None),
    ("remove", "/docs/", 301, "/docs"),
    ("remove", "/docs/?q=1", 301, "/docs?q=1"),
    ("remove", "/docs", 200, None),
    ("remove", "/", 200, None),
    ("remove", "/dir/index.html", 301, "/dir"),
    ("leave", "/docs", 200, None),
    ("leave", "/docs/", 200, None),
    ("leave", "/about/", 200, None),
])
def test_trailing_slash_policy(by_policy: Callable[[str], ServerProcess], policy: str, path: str,
                               status: int, location: str | None):
    resp = get(by_policy(policy), path)
    assert (resp.status, resp.header("location")) == (status, location), resp
    if status == 200:
        assert resp.body in (DOCS, DEFAULT, ABOUT)


def test_trailing_slash_redirect_of_an_odd_name_is_one_header_line(
        by_policy: Callable[[str], ServerProcess]):
    srv = by_policy("remove")
    for path in ("/x%0d%0aSet-Cookie:%20pwned=1/", "/%E2%82%AC/", "/a%3Fb/"):
        resp = get(srv, path)
        assert resp.status == 301, (path, resp)
        assert_stays_on_origin(srv, resp)
        location = resp.header("location") or ""
        assert all(0x21 <= ord(ch) < 0x7f for ch in location) and "?" not in location, location


# --- the rule files: never served, re-read when they change -----------------------------------


@pytest.mark.parametrize("path", [
    "/_redirects", "/_headers", "/%5Fredirects", "/%5fheaders", "/_redirects/", "/./_headers",
    "//_redirects", "/_headers?x=1", "/x/_redirects", "/x/_headers", "/r/_redirects",
    "/r/%5Fheaders",
])
def test_rule_files_answer_404_and_are_never_served(full: ServerProcess, path: str):
    for headers in ({}, {"Range": "bytes=0-5"}):
        resp = get(full, path, headers)
        assert resp.status == 404, (path, resp.status)
        assert b"X-From-File" not in resp.body and b"/from-file" not in resp.body
    assert get(full, path, method="HEAD").status == 404


def test_a_sites_rule_files_are_not_served_either(full: ServerProcess):
    resp = on_host(full, "/_redirects", "a.example")
    assert resp.status == 404 and b"a-rule" not in resp.body
    resp = on_host(full, "/_headers", "b.example")
    assert resp.status == 404 and b"X-From-B-File" not in resp.body


def test_editing_redirects_while_running_takes_effect(serve: Serve, tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(DEFAULT)
    (root / "_redirects").write_text("/live /first 302\n")
    srv = serve(root, "--access-log", "off")
    assert_redirect(get(srv, "/live"), 302, "/first")
    (root / "_redirects").write_text("# edited\n/live /second-target 302\n/new-rule /x 307\n")
    assert wait_until(lambda: get(srv, "/live").header("location") == "/second-target", 3.0)
    assert_redirect(get(srv, "/new-rule"), 307, "/x")
    (root / "_redirects").write_text("/live /third 302\nthis line is wrong\n/other /y 302\n")
    assert wait_until(lambda: "_redirects:2" in srv.stderr_text(), 3.0), srv.stderr_text()
    assert wait_until(lambda: get(srv, "/live").header("location") == "/third", 3.0)
    assert_redirect(get(srv, "/other"), 302, "/y")
    assert get(srv, "/new-rule").status == 404
    assert get(srv, "/").body == DEFAULT and srv.proc.poll() is None


def test_an_invalid_line_at_start_is_logged_and_the_rest_serves(serve: Serve, tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(DEFAULT)
    (root / "_redirects").write_text("/ok /fine 302\n/bad //evil.com 302\n/ok2 /fine2\n"
                                     "/euro /caf\u00e9/\u20ac 302\n", encoding="utf-8")
    (root / "_headers").write_text("/*\n  Content-Length: 1\n  X-Ok: 1\n")
    srv = serve(root, "--access-log", "off")
    assert wait_until(lambda: "_redirects:2" in srv.stderr_text()
                      and "_headers:2" in srv.stderr_text(), 3.0), srv.stderr_text()
    assert_redirect(get(srv, "/ok"), 302, "/fine")
    assert_redirect(get(srv, "/ok2"), 301, "/fine2")
    bad = get(srv, "/bad")
    assert bad.status == 404 and bad.header("location") is None
    resp = get(srv, "/")
    assert resp.header("x-ok") == "1" and resp.header_all("content-length") == [str(len(DEFAULT))]
    # A rule whose target is not ASCII is refused when read, or sent percent-encoded: either
    # way the request gets an answer (a Location header line is Latin-1 on the wire).
    euro = get(srv, "/euro")
    assert euro.status in (302, 404), euro
    assert (euro.header("location") or "").isascii(), euro.headers


def test_sighup_reloads_configured_rules(serve: Serve, base: Path, tmp_path: Path):
    toml = tmp_path / "reload.toml"
    sites = (f'[[sites]]\nhosts = ["b.example"]\nroot = "{base / "b"}"\n'
             '[[sites.redirects]]\nfrom = "/feed"\nto = "/{}"\nstatus = 302\n')
    rules = f'root = "{base / "www"}"\n[[redirects]]\nfrom = "/r"\nto = "/{{}}"\nstatus = 302\n'
    toml.write_text(rules.format("before") + sites.format("feed-before"))
    srv = serve(None, "--config", str(toml), "--access-log", "off")
    assert_redirect(get(srv, "/r"), 302, "/before")
    assert_redirect(on_host(srv, "/feed", "b.example"), 302, "/feed-before")
    toml.write_text(rules.format("after") + sites.format("feed-after")
                    + '[headers]\nX-Reloaded = "yes"\n')
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: get(srv, "/r").header("location") == "/after", 5.0)
    assert_redirect(on_host(srv, "/feed", "b.example"), 302, "/feed-after")
    assert get(srv, "/r").header("x-reloaded") == "yes"


# --- virtual hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "body"), [
    ("a.example", SITE_A), ("A.Example", SITE_A), ("A.EXAMPLE:8080", SITE_A),
    ("a.example.", SITE_A), ("www.a.example", SITE_A), ("x.y.A.example:1", SITE_A),
    ("b.example", SITE_B), ("q.w.example", SITE_B),
    ("w.example", DEFAULT), ("c.example", DEFAULT), ("a.example.evil", DEFAULT),
    ("evila.example", DEFAULT), ("127.0.0.1", DEFAULT), ("[::1]:8080", DEFAULT),
])
def test_host_chooses_the_site(full: ServerProcess, host: str, body: bytes):
    resp = on_host(full, "/", host)
    assert (resp.status, resp.body) == (200, body), host


def test_http10_without_host_gets_the_default_site(full: ServerProcess):
    resp = on_host(full, "/", None, version="HTTP/1.0")
    assert (resp.status, resp.body) == (200, DEFAULT)
    resp = on_host(full, "/only-a.txt", None, version="HTTP/1.0")
    assert resp.status == 404


def test_each_site_has_its_own_rules_and_rule_files(full: ServerProcess):
    assert_redirect(on_host(full, "/a-rule", "a.example"), 302, "/only-a.txt")
    assert on_host(full, "/a-rule", "b.example").status == 404
    assert on_host(full, "/a-rule", "c.example").status == 404
    assert_redirect(on_host(full, "/feed", "b.example"), 302, "/index.xml")
    assert on_host(full, "/feed", "a.example").status == 404
    assert on_host(full, "/from-file", "a.example").status == 404  # the default site's rule
    resp = on_host(full, "/page", "b.example")  # clean URLs on B only
    assert (resp.status, resp.body) == (200, SITE_B)
    assert on_host(full, "/about", "a.example").status == 404
    b = on_host(full, "/", "b.example")
    assert b.header("x-site") == "b" and b.header("x-from-b-file") == "yes"
    assert b.header("x-global") is None and b.header("x-from-file") is None
    a = on_host(full, "/", "a.example")
    assert a.header("x-site") is None and a.header("x-global") is None


def test_a_site_never_reads_another_sites_files(full: ServerProcess):
    for _ in range(2):  # the second round is answered from the caches
        for host, own, other in (("a.example", ONLY_A, "/only-b.txt"),
                                 ("b.example", ONLY_B, "/only-a.txt")):
            mine = on_host(full, f"/only-{host[0]}.txt", host)
            assert (mine.status, mine.body) == (200, own)
            theirs = on_host(full, other, host)
            assert theirs.status == 404 and ONLY_A not in theirs.body \
                and ONLY_B not in theirs.body
        for path in ("/index.html", "/only-a.txt", "/only-b.txt"):
            resp = on_host(full, path, "c.example")
            assert ONLY_A not in resp.body and ONLY_B not in resp.body
    for path in ("/../b/only-b.txt", "/%2e%2e/b/only-b.txt", "/x/..%2fb%2fonly-b.txt"):
        resp = on_host(full, path, "a.example")
        assert resp.status in REFUSED and ONLY_B not in resp.body, path


def test_keep_alive_connection_changing_host_changes_site(full: ServerProcess):
    with connect(full) as s:
        reader = ResponseReader(s)
        for host, body in (("a.example", SITE_A), ("b.example", SITE_B), ("a.example", SITE_A),
                           ("c.example", DEFAULT), ("b.example", SITE_B)):
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            resp = reader.read()
            assert (resp.status, resp.body) == (200, body), host


def test_absolute_form_target_names_the_site_not_the_host_header(full: ServerProcess):
    # RFC 9112 §3.2.2: with an absolute-form target the Host header field is ignored.
    resp = on_host(full, "http://b.example/only-b.txt", "a.example")
    assert (resp.status, resp.body) == (200, ONLY_B)


@pytest.mark.parametrize("policy", ["404", "421"])
def test_unknown_host_policy(serve: Serve, base: Path, policy: str):
    srv = serve(None, "--config", str(base / "site.toml"), "--unknown-host", policy,
                "--access-log", "off")
    for host in ("c.example", "w.example", "127.0.0.1", f"127.0.0.1:{srv.port}"):
        resp = on_host(srv, "/", host)
        assert resp.status == int(policy), host
        assert DEFAULT not in resp.body
    assert (on_host(srv, "/", "A.example:99").body) == SITE_A
    assert srv.proc.poll() is None


# --- no open redirect, no escape from the root --------------------------------------------------


@pytest.mark.parametrize("path", OPEN_REDIRECTS)
def test_no_redirect_leaves_the_origin(full: ServerProcess, path: str):
    resp = get(full, path)
    assert_stays_on_origin(full, resp)
    assert resp.status in (*REFUSED, 200, 301, 302), resp


@pytest.mark.parametrize("target", ESCAPES, ids=[t.decode() for t in ESCAPES])
def test_rewrites_and_clean_urls_never_serve_a_file_outside_the_root(full: ServerProcess,
                                                                     target: bytes):
    status, data = raw_get(full, target)
    assert_no_secret(data)
    assert status in REFUSED, (target, status, data[:200])


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
def test_safety_traversals_with_every_feature_on(full: ServerProcess, target: bytes):
    for prefix in (b"", b"/x", b"/r", b"/go"):
        candidate = prefix + target if target.startswith(b"/") else target
        status, data = raw_get(full, candidate)
        assert_no_secret(data)
        assert status in (*REFUSED, 301, 302), (candidate, status)
        if status in (301, 302):
            location = data.split(b"\r\n\r\n")[0].lower().split(b"\r\nlocation: ")[1]
            assert location.startswith(b"/") and not location.startswith(b"//"), location


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_with_every_feature_on(full: ServerProcess, name: str):
    with connect(full) as s:
        s.sendall(MALFORMED[name])
        reader = ResponseReader(s)
        assert reader.read().status == 400, name
        assert reader.at_eof(timeout=3)
    assert get(full, "/about").body == ABOUT


SMUGGLING = [*(("cl", n) for n in ("plus_sign", "different_values_in_two_lines",
                                   "leading_spaces", "zero")),
             *(("te", n) for n in ("chunked_then_identity", "identity_only", "two_header_lines",
                                   "with_content_length_and_a_payload", "trailing_space",
                                   "upper_case"))]


@pytest.mark.parametrize(("table", "name"), SMUGGLING)
def test_smuggling_forms_with_every_feature_on(full: ServerProcess, table: str, name: str):
    extra, expected = (CL_CASES if table == "cl" else TE_CASES)[name]
    check(full, START + extra, expected)


def test_pipelined_requests_across_rules_keep_their_order(full: ServerProcess):
    paths = ["/s301", "/about", "/app/z", "/_redirects", "/assets/app.js", "/old/q"]
    with connect(full) as s:
        s.sendall(b"".join(request_bytes(full, p) for p in paths))
        reader = ResponseReader(s)
        statuses = [reader.read().status for _ in paths]
    assert statuses == [301, 200, 200, 404, 200, 301]
