"""flashsrv.cli: the parser built from the options table, check-config and healthcheck.

healthcheck is pointed at a tiny HTTP server on a loopback port, run in a thread of the test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flashsrv import __version__
from flashsrv.cli import build_parser, check_config, healthcheck, main
from flashsrv.config import OPTIONS


def test_serve_takes_a_root_and_every_option_of_the_table():
    args = build_parser().parse_args(["serve", "/srv/www", "--port", "0", "--cache-bytes", "1M",
                                      "--model", "threads", "--listing", "--no-compress"])
    assert (args.command, args.root) == ("serve", "/srv/www")
    assert (args.port, args.cache_bytes, args.model) == (0, 1 << 20, "threads")
    assert args.listing is True and args.compress is False
    assert {option.attr for option in OPTIONS} <= set(vars(args))


def test_unset_options_stay_none_so_the_environment_and_the_file_can_fill_them():
    args = build_parser().parse_args(["serve"])
    assert args.root is None and args.config is None
    assert all(getattr(args, option.attr) is None for option in OPTIONS)


@pytest.mark.parametrize("argv", [
    ["serve", "--port", "70000"],
    ["serve", "--model", "forking"],
    ["serve", "--cache-bytes", "lots"],
    ["serve", "--helpers", "0"],
    [],  # a command is required
])
def test_bad_values_are_refused_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_names_each_option_with_its_environment_variable(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for option in OPTIONS:
        assert f"--{option.name}" in text and option.env in text


def test_version_flag(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"flashsrv {__version__}"


# -- check-config ------------------------------------------------------------------------------


def test_check_config_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "flashsrv.toml"
    path.write_text('port = 8081\ncache-bytes = "16M"\n[headers]\nX-Frame-Options = "DENY"\n')
    assert check_config(str(path)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK (")


def test_check_config_reports_every_mistake_with_the_file_name(
        tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "bad.toml"
    path.write_text('port = "eighty"\nspeed = 3\n[headers]\nContent-Length = "1"\n')
    assert check_config(str(path)) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3
    assert all(line.startswith(f"{path}: ") for line in errors)
    assert any("port" in line for line in errors) and any("speed" in line for line in errors)


@pytest.mark.parametrize("text", [None, "port = [unclosed\n"])
def test_check_config_fails_on_a_missing_or_unparseable_file(
        tmp_path: Path, text: str | None, capsys: pytest.CaptureFixture):
    path = tmp_path / "flashsrv.toml"
    if text is not None:
        path.write_text(text)
    assert check_config(str(path)) == 1
    assert capsys.readouterr().err.startswith(f"{path}: ")


def test_main_exits_with_check_configs_status(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("workers = 0\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config", str(path)])
    assert exit_info.value.code == 1


def test_main_refuses_a_bad_environment_variable_before_serving(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLASHSRV_PORT", "not-a-port")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert isinstance(exit_info.value.code, str)
    assert exit_info.value.code.startswith("flashsrv: FLASHSRV_PORT")


# -- healthcheck -------------------------------------------------------------------------------


class StatusByPath(BaseHTTPRequestHandler):
    """Answers HEAD /<status> with that status."""

    def do_HEAD(self) -> None:
        self.send_response(int(self.path.strip("/") or "200"))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusByPath)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(("status", "code"), [(200, 0), (404, 0), (500, 1), (503, 1)])
def test_healthcheck_is_healthy_below_500(
        http_port: int, status: int, code: int, capsys: pytest.CaptureFixture):
    assert healthcheck(f"http://127.0.0.1:{http_port}/{status}", 3.0) == code
    assert f"HTTP {status}" in capsys.readouterr().out


def test_healthcheck_defaults_to_the_configured_port(
        http_port: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLASHSRV_PORT", str(http_port))
    assert healthcheck(None, 3.0) == 0


def test_healthcheck_is_unhealthy_when_nothing_listens(capsys: pytest.CaptureFixture):
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert healthcheck(f"http://127.0.0.1:{free}/", 3.0) == 1
    assert capsys.readouterr().err.startswith("unhealthy: ")
