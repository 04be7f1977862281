"""The concurrency models (amped, sped, threads) serve identically; --workers runs N main
processes on one port, each with its own helpers, supervised and shut down together."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support import Serve, admin_address, children_of, get, scrape_metrics, wait_until

LARGE = bytes(range(256)) * 8192  # 2 MiB: streamed, not cached whole


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>models</h1>\n")
    (root / "large.bin").write_bytes(LARGE)
    return root


@pytest.mark.parametrize("model", ["amped", "sped", "threads"])
def test_every_model_serves_the_same_responses(site: Path, model: str, serve: Serve):
    server = serve(site, "--model", model, "--access-log", "off")
    page = get(server, "/")
    large = get(server, "/large.bin")
    part = get(server, "/large.bin", headers={"Range": "bytes=1000000-1000099"})
    missing = get(server, "/nope.txt")
    assert server.stop() == 0
    assert page.status == 200 and page.body == b"<h1>models</h1>\n"
    assert large.status == 200 and large.body == LARGE
    assert part.status == 206 and part.body == LARGE[1000000:1000100]
    assert missing.status == 404


def test_only_amped_starts_helper_processes(site: Path, serve: Serve):
    amped = serve(site, "--helpers", "3", "--access-log", "off")
    sped = serve(site, "--model", "sped", "--access-log", "off")
    assert wait_until(lambda: len(amped.helper_pids()) == 3, 5, interval=0.05)
    assert sped.helper_pids() == []


def test_workers_share_one_port_and_each_has_its_own_helpers(site: Path, serve: Serve):
    server = serve(site, "--workers", "2", "--helpers", "2", "--access-log", "off")
    assert wait_until(lambda: len(server.helper_pids()) == 2, 5, interval=0.05)
    workers = server.helper_pids()
    assert wait_until(lambda: all(len(children_of(w)) == 2 for w in workers), 5, interval=0.05)
    for _ in range(20):
        assert get(server, "/").status == 200
    helpers = [h for w in workers for h in children_of(w)]
    assert server.stop() == 0
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in workers + helpers),
                      5, interval=0.05)


def test_a_killed_worker_is_replaced_and_the_port_keeps_serving(site: Path, serve: Serve):
    server = serve(site, "--workers", "2", "--helpers", "1", "--access-log", "off")
    assert wait_until(lambda: len(server.helper_pids()) == 2, 5, interval=0.05)
    victim = server.helper_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in server.helper_pids()
                      and len(server.helper_pids()) == 2, 5, interval=0.05)
    for _ in range(10):
        assert get(server, "/").status == 200
    assert server.stop() == 0


def test_a_resident_large_file_goes_out_by_sendfile_with_the_right_bytes(site: Path,
                                                                          serve: Serve):
    data = (site / "large.bin").read_bytes()
    server = serve(site, "--access-log", "off", "--admin-port", "0")
    first = get(server, "/large.bin")  # the helpers' reads make its pages resident
    second = get(server, "/large.bin")
    part = get(server, "/large.bin", headers={"Range": "bytes=100000-1999999"})
    sent = scrape_metrics(admin_address(server))["flashsrv_sendfile_bytes_total"]
    assert first.body == data and second.body == data
    assert part.status == 206 and part.body == data[100000:2000000]
    assert sent >= len(data) - 8192, "the large file was copied through memory, not sendfile'd"
