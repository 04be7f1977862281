"""With --workers N the admin endpoint answers for the whole server, whichever worker a scrape
reaches: counters and histograms summed over the workers, gauges once per worker, and no summed
counter going backwards when a worker is killed and replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from support import (
    ServerProcess,
    admin_address,
    children_of,
    get,
    scrape_metrics,
    wait_until,
)

WORKERS = 3
OK = 'flashsrv_requests_total{status="200"}'


def start(docroot: Path, serve: Callable[..., ServerProcess]) -> tuple[ServerProcess,
                                                                         tuple[str, int]]:
    srv = serve(docroot, "--workers", str(WORKERS), "--admin-port", "0", "--access-log", "off")
    assert wait_until(lambda: len(children_of(srv.proc.pid)) == WORKERS, 10)
    return srv, admin_address(srv)


def send(srv: ServerProcess, count: int) -> None:
    """count requests, each on a new connection (SO_REUSEPORT spreads them over the workers)."""
    for _ in range(count):
        assert get(srv, "/style.css", headers={"Connection": "close"}).status == 200


def labelled(samples: dict[str, float], name: str) -> dict[str, float]:
    """A gauge's samples by worker label."""
    prefix = f'{name}{{worker="'
    return {key[len(prefix):].split('"')[0]: value for key, value in samples.items()
            if key.startswith(prefix)}


def summed(samples: dict[str, float]) -> dict[str, float]:
    """The samples without a worker label: every counter and histogram of the server."""
    return {key: value for key, value in samples.items() if 'worker="' not in key}


def test_every_scrape_counts_the_requests_of_all_workers(docroot: Path, serve):
    srv, admin = start(docroot, serve)
    send(srv, 60)
    assert wait_until(lambda: scrape_metrics(admin).get(OK) == 60, 5), scrape_metrics(admin)
    for _ in range(12):  # new connections: the scrapes land on different workers
        samples = scrape_metrics(admin)
        assert samples[OK] == 60
        assert set(labelled(samples, "flashsrv_open_connections")) == {"0", "1", "2"}
        assert set(labelled(samples, "flashsrv_helpers")) == {"0", "1", "2"}
        assert set(labelled(samples, "flashsrv_event_loop_lag_seconds")) == {"0", "1", "2"}
        assert "flashsrv_open_connections" not in samples
        delay = "flashsrv_event_loop_delay_seconds"
        assert samples[f'{delay}_bucket{{le="+Inf"}}'] == samples[f"{delay}_count"] > 0
        assert not labelled(samples, f"{delay}_count")


def test_a_killed_worker_is_replaced_without_the_sums_going_backwards(docroot: Path, serve):
    srv, admin = start(docroot, serve)
    send(srv, 45)
    # Until every worker has been up 2 s, so that a replacement shows by its uptime.
    assert wait_until(lambda: (scrape_metrics(admin).get(OK) == 45 and min(
        labelled(scrape_metrics(admin), "flashsrv_uptime_seconds").values()) >= 2), 10)
    last = summed(scrape_metrics(admin))
    victim = children_of(srv.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        nonlocal last
        samples = scrape_metrics(admin)
        now = summed(samples)
        went_back = {key: (last[key], now.get(key)) for key in last
                     if now.get(key, 0) < last[key]}
        assert not went_back, f"summed samples went backwards: {went_back}"
        last = now
        workers = children_of(srv.proc.pid)
        return (victim not in workers and len(workers) == WORKERS
                and min(labelled(samples, "flashsrv_uptime_seconds").values()) < 2)

    assert wait_until(replaced, 10), srv.stderr_text()[-2000:]
    for _ in range(6):  # the replacement has published: it went on from its predecessor's
        assert replaced()
        assert last[OK] == 45
    send(srv, 15)
    assert wait_until(lambda: scrape_metrics(admin).get(OK) == 60, 5)
