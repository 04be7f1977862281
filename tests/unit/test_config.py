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
