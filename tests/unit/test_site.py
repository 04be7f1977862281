"""flashsrv.site: what a main process shares among its connections, and its counters."""

from __future__ import annotations

from pathlib import Path

from flashsrv.config import Config
from flashsrv.phases import HEAD, NEW
from flashsrv.server import build_site


def test_site_takes_its_phase_timeouts_from_the_config(tmp_path: Path):
    site = build_site(Config(root=str(tmp_path), model="sped", access_log="off",
                             header_timeout=3.0, request_start_timeout=2.0), str(tmp_path), 64)
    assert site.timeouts[HEAD] == 3.0 and site.timeouts[NEW] == 2.0
    assert site.access_log is None and not site.connections and not site.stopping


def test_log_request_counts_responses_by_status_and_body_bytes(tmp_path: Path):
    site = build_site(Config(root=str(tmp_path), model="sped", access_log="off"),
                      str(tmp_path), 64)
    site.log_request(b"- - - [", b"GET", b"/a", "1.1", 200, 6)
    site.log_request(b"- - - [", b"GET", b"/b", "1.1", 200, 10)
    site.log_request(b"- - - [", b"GET", b"/c", "1.1", 404, 0)
    assert dict(site.stats.by_status) == {200: 2, 404: 1}
    assert site.stats.bytes_sent == 16
