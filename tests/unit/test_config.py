"""flashsrv.config: sizes, settings precedence and the file checker, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashsrv.config import Config, ConfigError, build_config, parse_size, read_file


@pytest.mark.parametrize(("text", "size"), [
    ("65536", 65536), ("0", 0), ("512k", 512 << 10), ("512K", 512 << 10), ("64M", 64 << 20),
    ("64MiB", 64 << 20), ("64mb", 64 << 20), ("1G", 1 << 30), ("2T", 2 << 40),
    (" 8 M ", 8 << 20), ("100b", 100), (4096, 4096),
])
def test_parse_size_accepts_binary_units(text, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1", "64X", "1 G B", "ten", -1, "1e6",
                                  "5i", "5ib"])
def test_parse_size_refuses_non_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "flashsrv.toml"
    path.write_text(text)
    return str(path)


def test_defaults_when_nothing_is_given():
    assert build_config({}, {}) == Config()
    assert Config().port == 8080 and Config().error_pages == {404: "404.html"}


def test_file_overrides_defaults_and_resolves_root_next_to_it(tmp_path: Path):
    (tmp_path / "site").mkdir()
    path = write(tmp_path, 'root = "site"\nport = 9000\ncache-bytes = "1M"\nlisting = true\n')
    config = build_config({"config": path}, {})
    assert config.port == 9000 and config.cache_bytes == 1 << 20 and config.listing is True
    assert config.root == str(tmp_path / "site")
    assert config.config_file == path
    assert config.helpers == Config().helpers


def test_precedence_defaults_file_env_flags(tmp_path: Path):
    path = write(tmp_path, "port = 9000\nhelpers = 2\nworkers = 3\n")
    environ = {"FLASHSRV_CONFIG": path, "FLASHSRV_HELPERS": "5", "FLASHSRV_WORKERS": "6"}
    config = build_config({"workers": 7, "port": None}, environ)
    assert config.port == 9000  # file; a None flag is unset
    assert config.helpers == 5  # env over file
    assert config.workers == 7  # flag over env
    assert config.host == "127.0.0.1"  # default


def test_config_flag_wins_over_env_config(tmp_path: Path):
    a = write(tmp_path, "port = 1111\n")
    other = tmp_path / "other.toml"
    other.write_text("port = 2222\n")
    config = build_config({"config": str(other)}, {"FLASHSRV_CONFIG": a})
    assert config.port == 2222 and config.config_file == str(other)


def test_environment_values_are_converted_and_named_in_errors():
    config = build_config({}, {"FLASHSRV_LISTING": "yes", "FLASHSRV_ADMIN_PORT": "off",
                               "FLASHSRV_HEADER_TIMEOUT": "2.5", "FLASHSRV_ROOT": "/srv"})
    assert config.listing is True and config.admin_port is None
    assert config.header_timeout == 2.5 and config.root == "/srv"
    with pytest.raises(ConfigError, match="FLASHSRV_PORT"):
        build_config({}, {"FLASHSRV_PORT": "70000"})


def test_file_tables(tmp_path: Path):
    path = write(tmp_path, """
default-cache-control = "max-age=60"
[headers]
X-Frame-Options = "DENY"
[error-pages]
404 = "/errors/404.html"
[[cache-control]]
pattern = "assets/*"
value = "immutable"
""")
    values, errors = read_file(path)
    assert errors == []
    assert values["headers"] == [("X-Frame-Options", "DENY")]
    assert values["cache_control"] == [("assets/*", "immutable")]
    assert values["default_cache_control"] == "max-age=60"
    assert values["error_pages"] == {404: "errors/404.html"}


def test_read_file_reports_every_mistake(tmp_path: Path):
    path = write(tmp_path, """
root = "missing-folder"
port = "http"
helpers = 1.5
model = "forks"
colour = "blue"
[headers]
Content-Length = "5"
"bad name" = "x"
[error-pages]
200 = "ok.html"
404 = "../outside.html"
[[cache-control]]
pattern = "/abs/*"
value = "x"
[[cache-control]]
pattern = "a"
""")
    _, errors = read_file(path)
    prefixes = sorted(e.split(":", 1)[0] for e in errors)
    assert prefixes == sorted([
        "root", "port", "helpers", "model", "colour", "headers", "headers",
        "error-pages", "error-pages.404", "cache-control[0].pattern", "cache-control[1]",
    ])
    with pytest.raises(ConfigError) as raised:
        build_config({"config": path}, {})
    assert all(e in str(raised.value) for e in errors)


def test_read_file_unreadable_or_not_toml(tmp_path: Path):
    _, errors = read_file(str(tmp_path / "nope.toml"))
    assert len(errors) == 1 and errors[0].startswith("cannot read the file")
    _, errors = read_file(write(tmp_path, "port = = 1\n"))
    assert len(errors) == 1 and errors[0].startswith("not valid TOML")


# --- site rules: [[redirects]], [[headers]], clean-urls, trailing-slash, [[sites]] ------------


def errors_of(tmp_path: Path, text: str) -> list[str]:
    """read_file's errors for a file with this text (a folder `www` exists next to it)."""
    (tmp_path / "www").mkdir(exist_ok=True)
    _, errors = read_file(write(tmp_path, text))
    return errors


def assert_one_error(tmp_path: Path, text: str, prefix: str) -> None:
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(prefix + ":"), errors
    with pytest.raises(ConfigError):
        build_config({"config": write(tmp_path, text)}, {})


def test_site_rules_are_read(tmp_path: Path):
    (tmp_path / "www").mkdir()
    (tmp_path / "blog").mkdir()
    values, errors = read_file(write(tmp_path, """
root = "www"
clean-urls = true
trailing-slash = "remove"
unknown-host = "421"
[[redirects]]
from = "/old/*"
to = "/new/:splat"
[[redirects]]
from = "/soft"
to = "https://example.com/x"
status = 302
force = false
[[headers]]
X-Frame-Options = "DENY"
[[headers]]
pattern = "/assets/*"
Cache-Control = "immutable"
[[sites]]
hosts = ["Blog.Example.", "*.blog.example"]
root = "blog"
clean-urls = true
[[sites.redirects]]
from = "/feed"
to = "/index.xml"
"""))
    assert errors == []
    assert values["clean_urls"] is True and values["trailing_slash"] == "remove"
    assert values["unknown_host"] == "421"
    assert [(r.pattern.text, r.to, r.status, r.force, r.where) for r in values["redirects"]] == [
        ("/old/*", "/new/:splat", 301, True, "redirects[0]"),
        ("/soft", "https://example.com/x", 302, False, "redirects[1]")]
    assert values["headers"] == [("X-Frame-Options", "DENY")]
    assert [(r.pattern.text, r.headers) for r in values["header_rules"]] == [
        ("/assets/*", (("Cache-Control", "immutable"),))]
    (site,) = values["sites"]
    assert site.hosts == ("blog.example", "*.blog.example")
    assert site.root == str(tmp_path / "blog") and site.clean_urls is True
    assert [(r.pattern.text, r.to) for r in site.redirects] == [("/feed", "/index.xml")]
    assert site.trailing_slash == "add"  # a site's own default, not the top level's


@pytest.mark.parametrize("rule", [
    'from = "/a"',
    'to = "/b"',
    'from = "/a"\nto = "/b"\ncode = 301',
    'from = "/a"\nto = "/b"\nstatus = "301"',
    'from = "/a"\nto = "/b"\nstatus = 301.0',
    'from = "/a"\nto = "/b"\nstatus = true',
    'from = "/a"\nto = "/b"\nforce = "yes"',
    'from = 1\nto = "/b"',
    'from = "/a"\nto = ["/b"]',
    'from = "/a"\nto = "//evil.com"',
    'from = "/a"\nto = "//evil.com/x"\nstatus = 302',
    'from = "/a/*"\nto = "https://:splat/"',
    'from = "/a/*"\nto = "https://example.com@:splat/"',
    'from = "/a"\nto = "javascript:alert(1)"',
    'from = "/a"\nto = "/b c"',
    'from = "/a"\nto = "/b\\\\c"',
    'from = "/a"\nto = "https://example.com/"\nstatus = 200',
    'from = "/a"\nto = "/b"\nstatus = 418',
    'from = "/a"\nto = "/b"\nstatus = 404',
    'from = "a"\nto = "/b"',
    'from = "/a/*/b"\nto = "/b"',
    'from = "/:x/:x"\nto = "/b"',
    'from = "/a?x=1"\nto = "/b"',
])
def test_bad_redirect_rule_is_reported(tmp_path: Path, rule: str):
    assert_one_error(tmp_path, f'[[redirects]]\nfrom = "/ok"\nto = "/fine"\n'
                               f"[[redirects]]\n{rule}\n", "redirects[1]")


@pytest.mark.parametrize(("rule", "prefix"), [
    ('pattern = "/a"\nContent-Length = "5"', "headers[1]"),
    ('pattern = "/a"\ncontent-type = "text/plain"', "headers[1]"),
    ('pattern = "/a"\nLocation = "/b"', "headers[1]"),
    ('pattern = "/a"\nTransfer-Encoding = "chunked"', "headers[1]"),
    ('Content-Length = "5"', "headers[1]"),
    ('pattern = "/a"\n"bad name" = "x"', "headers[1]"),
    ('pattern = "/a"\n"X-(A)" = "x"', "headers[1]"),
    ('pattern = "/a"\nX-A = "line\\nbreak"', "headers[1].X-A"),
    ('pattern = "/a"\nX-A = 5', "headers[1].X-A"),
    ('pattern = "a/*"\nX-A = "1"', "headers[1].pattern"),
    ('pattern = "/a/*/b"\nX-A = "1"', "headers[1].pattern"),
    ('pattern = "/a b"\nX-A = "1"', "headers[1].pattern"),
    ('pattern = 5\nX-A = "1"', "headers[1].pattern"),
])
def test_bad_header_rule_is_reported(tmp_path: Path, rule: str, prefix: str):
    assert_one_error(tmp_path, f'[[headers]]\nX-Ok = "1"\n[[headers]]\n{rule}\n', prefix)


@pytest.mark.parametrize(("text", "prefix"), [
    ('trailing-slash = "sometimes"', "trailing-slash"),
    ("trailing-slash = true", "trailing-slash"),
    ('unknown-host = "drop"', "unknown-host"),
    ('unknown-host = "403"', "unknown-host"),
    ('clean-urls = "maybe"', "clean-urls"),
])
def test_bad_site_rule_setting_is_reported(tmp_path: Path, text: str, prefix: str):
    assert_one_error(tmp_path, text + "\n", prefix)


@pytest.mark.parametrize("value", ["404", 404, "421", 421, "default"])
def test_unknown_host_accepts_its_statuses_as_string_or_number(tmp_path: Path, value):
    text = f"unknown-host = {value!r}\n".replace("'", '"')
    assert errors_of(tmp_path, text) == []


@pytest.mark.parametrize(("site", "prefix"), [
    ('root = "www"', "sites[0]"),
    ('hosts = ["a.example"]', "sites[0]"),
    ('hosts = "a.example"\nroot = "www"', "sites[0].hosts"),
    ('hosts = []\nroot = "www"', "sites[0].hosts"),
    ('hosts = [1]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["a.example:8080"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["http://a.example"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["a.example/x"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["a..example"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["a.*.example"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["*example"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["-a.example"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["a example"]\nroot = "www"', "sites[0].hosts"),
    ('hosts = ["a.example"]\nroot = "missing"', "sites[0].root"),
    ('hosts = ["a.example"]\nroot = "flashsrv.toml"', "sites[0].root"),
    ('hosts = ["a.example"]\nroot = 5', "sites[0].root"),
    ('hosts = ["a.example"]\nroot = "www"\nport = 8081', "sites[0].port"),
    ('hosts = ["a.example"]\nroot = "www"\nworkers = 2', "sites[0].workers"),
    ('hosts = ["a.example"]\nroot = "www"\nunknown-host = "404"', "sites[0].unknown-host"),
    ('hosts = ["a.example"]\nroot = "www"\ncolour = "blue"', "sites[0].colour"),
    ('hosts = ["a.example"]\nroot = "www"\ntrailing-slash = "x"', "sites[0].trailing-slash"),
    ('hosts = ["a.example"]\nroot = "www"\n[[sites.redirects]]\nfrom = "/a"\nto = "//evil"',
     "sites[0].redirects[0]"),
    ('hosts = ["a.example"]\nroot = "www"\n[[sites.headers]]\npattern = "/a"\nETag = "x"',
     "sites[0].headers[0]"),
])
def test_bad_site_is_reported(tmp_path: Path, site: str, prefix: str):
    assert_one_error(tmp_path, f"[[sites]]\n{site}\n", prefix)


def test_a_host_named_by_two_sites_is_reported(tmp_path: Path):
    (tmp_path / "other").mkdir()
    text = ('[[sites]]\nhosts = ["a.example", "*.b.example"]\nroot = "www"\n'
            '[[sites]]\nhosts = ["A.Example.", "c.example"]\nroot = "other"\n'
            '[[sites]]\nhosts = ["*.B.example"]\nroot = "other"\n')
    errors = errors_of(tmp_path, text)
    assert [e.split(":", 1)[0] for e in errors] == ["sites[1].hosts", "sites[2].hosts"], errors


@pytest.mark.parametrize(("text", "prefix"), [
    ('redirects = "/a /b"', "redirects"), ('redirects = ["/a /b"]', "redirects[0]"),
    ('headers = "X-A: 1"', "headers"), ('headers = ["X-A: 1"]', "headers[0]"),
    ('sites = "a.example"', "sites"), ('sites = ["a.example"]', "sites[0]"),
])
def test_rule_arrays_that_are_not_arrays_of_tables(tmp_path: Path, text: str, prefix: str):
    assert_one_error(tmp_path, text + "\n", prefix)
