"""The concurrency models (amped, sped, threads) serve identically; --workers runs N main
processes on one port, each with its own helpers, supervised and shut down together."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from support import children_of, get, start_server

LARGE = bytes(range(256)) * 8192  # 2 MiB: streamed, not cached whole


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>models</h1>\n")
    (root / "large.bin").write_bytes(LARGE)
    return root


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("model", ["amped", "sped", "threads"])
def test_every_model_serves_the_same_responses(site: Path, model: str):
    server = start_server(site, "--model", model, "--access-log", "off")
    try:
        page = get(server, "/")
        large = get(server, "/large.bin")
        part = get(server, "/large.bin", headers={"Range": "bytes=1000000-1000099"})
        missing = get(server, "/nope.txt")
    finally:
        assert server.stop() == 0
    assert page.status == 200 and page.body == b"<h1>models</h1>\n"
    assert large.status == 200 and large.body == LARGE
    assert part.status == 206 and part.body == LARGE[1000000:1000100]
    assert missing.status == 404


def test_only_amped_starts_helper_processes(site: Path):
    amped = start_server(site, "--helpers", "3", "--access-log", "off")
    sped = start_server(site, "--model", "sped", "--access-log", "off")
    try:
        assert wait_for(lambda: len(amped.helper_pids()) == 3)
        assert sped.helper_pids() == []
    finally:
        amped.stop()
        sped.stop()


def test_workers_share_one_port_and_each_has_its_own_helpers(site: Path):
    server = start_server(site, "--workers", "2", "--helpers", "2", "--access-log", "off")
    try:
        assert wait_for(lambda: len(server.helper_pids()) == 2)
        workers = server.helper_pids()
        assert wait_for(lambda: all(len(children_of(w)) == 2 for w in workers))
        for _ in range(20):
            assert get(server, "/").status == 200
        helpers = [h for w in workers for h in children_of(w)]
    finally:
        assert server.stop() == 0
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in workers + helpers))


def test_a_killed_worker_is_replaced_and_the_port_keeps_serving(site: Path):
    server = start_server(site, "--workers", "2", "--helpers", "1", "--access-log", "off")
    try:
        assert wait_for(lambda: len(server.helper_pids()) == 2)
        victim = server.helper_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: victim not in server.helper_pids()
                        and len(server.helper_pids()) == 2)
        for _ in range(10):
            assert get(server, "/").status == 200
    finally:
        assert server.stop() == 0


def admin_metric(server, name: str) -> float:
    """One value from the admin endpoint whose address the server printed on stderr."""
    line = next(x for x in server.stderr_lines if "admin endpoint on" in x)
    host_port = line.rsplit("http://", 1)[1].strip()
    with urllib.request.urlopen(f"http://{host_port}/metrics", timeout=5) as resp:
        for row in resp.read().decode().splitlines():
            if row.startswith(name + " "):
                return float(row.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_resident_large_file_goes_out_by_sendfile_with_the_right_bytes(site: Path):
    data = (site / "large.bin").read_bytes()
    server = start_server(site, "--access-log", "off", "--admin-port", "0")
    try:
        first = get(server, "/large.bin")  # the helpers' reads make its pages resident
        second = get(server, "/large.bin")
        part = get(server, "/large.bin", headers={"Range": "bytes=100000-1999999"})
        sent = admin_metric(server, "flashsrv_sendfile_bytes_total")
    finally:
        server.stop()
    assert first.body == data and second.body == data
    assert part.status == 206 and part.body == data[100000:2000000]
    assert sent >= len(data) - 8192, "the large file was copied through memory, not sendfile'd"
