"""flashsrv.worker_metrics: the shared slots workers publish to, and the whole server's text.

The board is real shared memory; the concurrency test forks a real writer process.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from flashsrv.admin import WorkerAdmin, metrics_text, snapshot
from flashsrv.config import Config
from flashsrv.server import build_site
from flashsrv.site import Site
from flashsrv.worker_metrics import (
    BUFFER_BYTES,
    BUFFER_HEAD,
    CURRENT,
    PAYLOAD_BYTES,
    Family,
    MetricsBoard,
    MetricsSlot,
    render,
)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(Config(root=str(tmp_path), model="sped", access_log="off"),
                      str(tmp_path), 64)


def families(requests: dict[int, int], connections: int, delays: list[int]) -> dict[str, Family]:
    """A small snapshot: a labelled counter, a gauge and a histogram (two buckets)."""
    return {
        "t_requests_total": Family("counter", "Requests.",
                                   {f'{{status="{s}"}}': n for s, n in requests.items()}),
        "t_open": Family("gauge", "Open now.", {"": connections}),
        "t_delay": Family("histogram", "Delay.", {
            '_bucket{le="0.1"}': delays[0], '_bucket{le="+Inf"}': delays[1],
            "_sum": 0.25 * delays[1], "_count": delays[1]}),
    }


# -- slots ------------------------------------------------------------------------------------


def test_a_slot_reads_back_its_workers_last_write_and_nothing_before_the_first():
    board = MetricsBoard(3)
    assert board.read(1) is None and board.values(1) == {}
    board.write(1, b"first")
    board.write(1, b"second")
    board.write(1, b"third")
    assert board.read(1) == b"third"
    assert board.read(0) is None and board.read(2) is None


def test_a_payload_larger_than_a_slot_is_refused_and_the_last_one_kept():
    board = MetricsBoard(1)
    board.write(0, b"kept")
    with pytest.raises(ValueError):
        board.write(0, b"x" * (PAYLOAD_BYTES + 1))
    assert board.read(0) == b"kept"


def test_a_worker_killed_in_mid_write_leaves_its_last_snapshot_readable():
    board = MetricsBoard(1)
    board.write(0, b"complete")
    # What a write killed after its first step leaves: the other buffer odd and half-filled.
    other = CURRENT.size + (1 - CURRENT.unpack_from(board.memory, 0)[0]) * BUFFER_BYTES
    seq = BUFFER_HEAD.unpack_from(board.memory, other)[0]
    BUFFER_HEAD.pack_into(board.memory, other, seq + 1, 9, 0)
    board.memory[other + BUFFER_HEAD.size:other + BUFFER_HEAD.size + 4] = b"half"
    assert board.read(0) == b"complete"
    board.write(0, b"respawned")  # the next worker in the slot writes over the wreck
    assert board.read(0) == b"respawned"


def test_a_torn_buffer_is_never_returned():
    board = MetricsBoard(1)
    board.write(0, b"abcdef")
    current = CURRENT.size + CURRENT.unpack_from(board.memory, 0)[0] * BUFFER_BYTES
    board.memory[current + BUFFER_HEAD.size] = ord("X")  # a copy a weak CPU could reorder
    assert board.read(0) is None


def test_a_reader_never_sees_a_torn_snapshot_of_a_writer_process():
    """A forked worker publishes as fast as it can, each payload of another length and
    content; every snapshot the reader gets is one the writer wrote whole."""
    board = MetricsBoard(1)
    board.write(0, b"0:")
    pid = os.fork()
    if pid == 0:
        i = 0
        while True:  # until the parent kills it
            i += 1
            board.write(0, f"{i}:".encode() + bytes([i % 251]) * (i * 7 % 5000))
    try:
        complete = 0
        for _ in range(20_000):
            payload = board.read(0)
            if payload is None:
                continue
            head, _, body = payload.partition(b":")
            i = int(head)
            assert body == bytes([i % 251]) * (i * 7 % 5000) if i else body == b""
            complete += 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert complete > 10_000


# -- counters across a respawn ---------------------------------------------------------------


def test_a_respawned_worker_continues_its_predecessors_counters_but_not_its_gauges():
    board = MetricsBoard(2)
    MetricsSlot(board, 1).publish(families({200: 5, 404: 1}, 7, [2, 3]))
    successor = MetricsSlot(board, 1)  # what the supervisor makes for the replacement
    successor.publish(families({200: 1}, 1, [0, 1]))
    values = board.values(1)
    assert values["t_requests_total"] == {'{status="200"}': 6, '{status="404"}': 1}
    assert values["t_open"] == {"": 1}
    assert values["t_delay"]["_bucket{le=\"+Inf\"}"] == 4 and values["t_delay"]["_count"] == 4
    # ... and its own successor continues from there.
    MetricsSlot(board, 1).publish(families({}, 0, [0, 0]))
    assert board.values(1)["t_requests_total"] == {'{status="200"}': 6, '{status="404"}': 1}


def test_a_worker_with_every_status_code_still_fits_its_slot(site: Site):
    for status in range(100, 600):
        site.stats.by_status[status] = 10**15
    MetricsSlot(MetricsBoard(1), 0).publish(snapshot(site))


# -- rendering -------------------------------------------------------------------------------


def test_one_worker_is_rendered_as_it_is_without_a_worker_label():
    assert render(families({200: 3}, 2, [1, 2])) == "\n".join([
        "# HELP t_requests_total Requests.", "# TYPE t_requests_total counter",
        't_requests_total{status="200"} 3',
        "# HELP t_open Open now.", "# TYPE t_open gauge", "t_open 2",
        "# HELP t_delay Delay.", "# TYPE t_delay histogram",
        't_delay_bucket{le="0.1"} 1', 't_delay_bucket{le="+Inf"} 2',
        "t_delay_sum 0.5", "t_delay_count 2"]) + "\n"


def test_workers_counters_and_histograms_are_summed_and_gauges_labelled_per_worker():
    board = MetricsBoard(3)
    MetricsSlot(board, 0).publish(families({200: 3, 404: 1}, 2, [1, 2]))
    MetricsSlot(board, 2).publish(families({200: 4, 304: 5}, 0, [0, 3]))
    # Slot 1 has not published yet (a worker still starting): it adds nothing.
    text = render(families({}, 9, [0, 0]), board.all_values())
    lines = text.splitlines()
    assert 't_requests_total{status="200"} 7' in lines
    assert 't_requests_total{status="404"} 1' in lines
    assert 't_requests_total{status="304"} 5' in lines
    assert [line for line in lines if line.startswith("t_open")] == [
        't_open{worker="0"} 2', 't_open{worker="2"} 0']
    assert 't_delay_bucket{le="0.1"} 1' in lines and 't_delay_bucket{le="+Inf"} 5' in lines
    assert "t_delay_sum 1.25" in lines and "t_delay_count 5" in lines
    assert text.count("# TYPE t_open gauge") == 1


def test_the_worker_label_comes_before_a_gauges_own_labels():
    board = MetricsBoard(2)
    gauge = {"t_queue": Family("gauge", "Queued.", {'{kind="data"}': 4})}
    MetricsSlot(board, 1).publish(gauge)
    assert 't_queue{worker="1",kind="data"} 4' in render(gauge, board.all_values())


def test_float_sums_are_rendered_to_the_microsecond():
    board = MetricsBoard(2)
    for index, seconds in enumerate((0.1, 0.2)):  # 0.1 + 0.2 == 0.30000000000000004
        MetricsSlot(board, index).publish({"t_s": Family("counter", "S.", {"": seconds})})
    assert "t_s 0.3\n" in render({"t_s": Family("counter", "S.", {})}, board.all_values())


# -- the admin endpoint's view ---------------------------------------------------------------


def test_a_scraped_worker_publishes_itself_then_answers_for_every_worker(site: Site):
    board = MetricsBoard(2)
    other = build_site(site.config, str(site.config.root), 64)
    other.stats.by_status[200] = 4
    MetricsSlot(board, 1).publish(snapshot(other))
    site.stats.by_status[200] = 3
    with socket.socket() as unused:
        text = metrics_text(site, WorkerAdmin(unused, MetricsSlot(board, 0)))
    lines = text.splitlines()
    assert 'flashsrv_requests_total{status="200"} 7' in lines
    assert 'flashsrv_open_connections{worker="0"} 0' in lines
    assert 'flashsrv_open_connections{worker="1"} 0' in lines
    assert board.values(0)["flashsrv_requests_total"] == {'{status="200"}': 3}


def test_a_single_process_answers_without_worker_labels(site: Site):
    assert 'worker="' not in metrics_text(site)
