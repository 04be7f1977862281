"""flashsrv.server: start-up pieces (root, disk model, sockets, descriptor limit, the Site) and
the SIGHUP reload, driven in-process; no server process and no helper process is started."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flashsrv.config import Config, ConfigError
from flashsrv.disk import InlineDisk, ThreadDisk
from flashsrv.entries import MISSING, Entry
from flashsrv.helper_pool import HelperPool
from flashsrv.phases import IDLE
from flashsrv.server import (
    RESTART_ONLY,
    announce,
    build_site,
    document_root,
    listening_socket,
    make_disk,
    port_group,
    raise_fd_limit,
    reload_site,
)
from flashsrv.site import Site

# -- start-up pieces ---------------------------------------------------------------------------


def test_the_document_root_is_the_real_path_of_the_folder(tmp_path: Path):
    (tmp_path / "www").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "www")
    assert document_root(Config(root=str(tmp_path / "link"))) == os.path.realpath(
        tmp_path / "www")


def test_no_root_serves_the_demo_site():
    root = document_root(Config(root=None))
    assert os.path.isfile(os.path.join(root, "index.html"))


@pytest.mark.parametrize("name", ["missing", "file.txt"])
def test_a_root_that_is_not_a_folder_stops_start_up(tmp_path: Path, name: str):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit, match="is not a folder"):
        document_root(Config(root=str(tmp_path / name)))


def test_the_model_setting_picks_the_disk_layer(tmp_path: Path):
    root = str(tmp_path)
    assert type(make_disk(Config(model="sped"), root)) is InlineDisk
    assert type(make_disk(Config(model="threads"), root)) is ThreadDisk
    pool = make_disk(Config(model="amped", helpers=3, helper_timeout=2.5, helper_queue=7), root)
    assert isinstance(pool, HelperPool)
    assert (pool.count, pool.job_timeout, pool.max_queue) == (3, 2.5, 7)


@pytest.fixture
def fd_limit() -> Iterator[tuple[int, int]]:
    """The process's descriptor limits, put back after the test."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(fd_limit: tuple[int, int]):
    _, hard = fd_limit
    if hard <= 256:
        pytest.skip("the hard descriptor limit leaves no room to lower the soft one")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert raise_fd_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def reuse_port(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def test_a_listening_socket_is_non_blocking_and_accepts(capsys: pytest.CaptureFixture):
    with listening_socket("127.0.0.1", 0, reuse_port=False) as server:
        assert not server.getblocking() and not reuse_port(server)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            server.settimeout(5)
            accepted, _ = server.accept()
            accepted.close()
        announce(server)
    assert capsys.readouterr().err == f"flashsrv listening on http://127.0.0.1:{port}\n"


def test_an_ipv6_address_gets_an_ipv6_socket_announced_in_brackets(
        capsys: pytest.CaptureFixture):
    try:
        server = listening_socket("::1", 0, reuse_port=False)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        assert server.family == socket.AF_INET6
        announce(server, "admin endpoint")
        port = server.getsockname()[1]
    assert capsys.readouterr().err == f"flashsrv admin endpoint on http://[::1]:{port}\n"


def test_a_port_group_shares_one_port_with_so_reuseport():
    group = port_group("127.0.0.1", 0, 3)
    try:
        assert len(group) == 3 and all(reuse_port(sock) for sock in group)
        assert len({sock.getsockname() for sock in group}) == 1
    finally:
        for sock in group:
            sock.close()


# -- the Site ----------------------------------------------------------------------------------


def sped(root: Path, **settings: Any) -> Config:
    """Settings for a site with no helper process and no access log, unless told otherwise."""
    return Config(**{"root": str(root), "model": "sped", "access_log": "off", **settings})


@pytest.mark.parametrize(("limit", "entries"), [(64, 64), (8000, 1000), (10**6, 10_000)])
def test_the_path_cache_is_sized_by_the_descriptor_limit(tmp_path: Path, limit: int,
                                                         entries: int):
    site = build_site(sped(tmp_path), str(tmp_path), limit)
    assert site.content.paths.max_entries == entries


def test_the_site_takes_rules_and_documents_from_the_config(tmp_path: Path):
    config = sped(tmp_path, headers=[("X-Frame-Options", "DENY")], fallback="index.html",
                  error_pages={404: "errors/404.html"}, cache_bytes=1 << 20)
    site = build_site(config, str(tmp_path), 1024)
    assert site.responder.rules.extra_headers == [("X-Frame-Options", "DENY")]
    assert site.documents.fallback_page == "index.html"
    assert site.documents.error_pages == {404: "errors/404.html"}
    assert site.content.data.max_bytes == 1 << 20
    assert site.access_log is None


def test_the_site_opens_its_access_log_file(tmp_path: Path):
    path = tmp_path / "access.log"
    site = build_site(sped(tmp_path, access_log=str(path)), str(tmp_path), 1024)
    assert site.access_log is not None and path.exists()
    site.access_log.close()
    site.access_log.sink.join(5)


# -- SIGHUP ------------------------------------------------------------------------------------


def reload(site: Site, load: Callable[[], Config]) -> None:
    async def scenario() -> None:
        await reload_site(site, load, asyncio.Lock())

    asyncio.run(scenario())


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(sped(tmp_path), str(tmp_path), 1024)


def test_reload_applies_rules_and_timeouts_to_new_requests(site: Site, tmp_path: Path):
    site.prepared.keep(b"/a", (b"a whole response", b"x"))
    old_responder = site.responder
    reload(site, lambda: sped(tmp_path, headers=[("X-New", "1")], keepalive_timeout=5.0))
    assert site.responder is not old_responder
    assert site.responder.rules.extra_headers == [("X-New", "1")]
    assert site.timeouts[IDLE] == 5.0 and site.config.keepalive_timeout == 5.0
    assert not site.prepared, "responses kept under the old rules are gone"


@pytest.mark.parametrize(("name", "value"), [("port", 9999), ("helpers", 9),
                                             ("cache_bytes", 1 << 20), ("model", "threads")])
def test_reload_keeps_restart_only_settings_with_a_warning(
        site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str,
        value: object):
    assert name in RESTART_ONLY
    before = getattr(site.config, name)
    with caplog.at_level(logging.WARNING, logger="flashsrv"):
        reload(site, lambda: sped(tmp_path, **{name: value}, listing=True))
    assert getattr(site.config, name) == before
    assert site.config.listing is True, "the rest of the new configuration applies"
    assert f"{name} changed" in caplog.text


def test_a_reload_that_fails_keeps_the_running_configuration(
        site: Site, caplog: pytest.LogCaptureFixture):
    config, responder = site.config, site.responder

    def broken() -> Config:
        raise ConfigError("flashsrv.toml: port: must be between 0 and 65535")

    with caplog.at_level(logging.ERROR, logger="flashsrv"):
        reload(site, broken)
    assert site.config is config and site.responder is responder
    assert "keeping the running configuration" in caplog.text


def test_reload_opens_a_new_access_log_off_the_loop(site: Site, tmp_path: Path):
    path = tmp_path / "access.log"
    reload(site, lambda: sped(tmp_path, access_log=str(path)))
    assert site.access_log is not None and site.access_log.target == str(path)
    assert path.exists()
    site.access_log.close()
    site.access_log.sink.join(5)


def test_an_access_log_that_cannot_be_opened_keeps_everything(
        site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    responder = site.responder
    with caplog.at_level(logging.ERROR, logger="flashsrv"):
        reload(site, lambda: sped(tmp_path, access_log=str(tmp_path / "no" / "such" / "log"),
                                  headers=[("X-New", "1")]))
    assert site.access_log is None and site.responder is responder
    assert site.config.access_log == "off"
    assert "cannot open the access log" in caplog.text


@pytest.mark.parametrize(("dotfiles", "kept"), [(True, False), (False, True)])
def test_path_translations_are_dropped_only_when_the_dotfile_rule_changes(
        site: Site, tmp_path: Path, dotfiles: bool, kept: bool):
    site.content.paths.put(b"/.env", Entry(MISSING, ".env"))
    reload(site, lambda: sped(tmp_path, show_dotfiles=dotfiles))
    assert (b"/.env" in site.content.paths) is kept
