"""flashsrv.connection_base: phases set deadlines, the ways a connection ends, and reclaiming
the oldest idle connection at the cap."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from flashsrv.connection_base import RECLAIM_SCAN, PhasedConnection, reclaim_one
from flashsrv.phases import CLOSING, IDLE


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class Conn(PhasedConnection):
    """A connection whose reclaimability the test sets."""

    def __init__(self, site: Any, idle: bool) -> None:
        self.site = site
        self.transport = FakeTransport()  # type: ignore[assignment]
        self.phase = IDLE
        self.deadline = 0.0
        self._input_closed = False
        self.idle = idle

    @property
    def reclaimable(self) -> bool:
        return self.idle


def fake_site() -> Any:
    return SimpleNamespace(timeouts={IDLE: 75.0, CLOSING: 1.0},
                           stats=SimpleNamespace(reclaimed=0), connections={})


def test_entering_a_phase_sets_the_deadline_from_the_table(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("flashsrv.connection_base.monotonic", lambda: 100.0)
    conn = Conn(fake_site(), idle=True)
    conn._enter(IDLE)
    assert (conn.phase, conn.deadline) == (IDLE, 175.0)


def test_abort_closes_input_and_aborts_the_transport():
    conn = Conn(fake_site(), idle=True)
    conn.abort()
    assert conn.phase is CLOSING and conn._input_closed
    assert conn.transport.aborted  # type: ignore[union-attr]


def test_a_gone_connection_leaves_the_sites_registry():
    site = fake_site()
    conn = Conn(site, idle=True)
    site.connections[conn] = None
    conn._gone()
    assert conn not in site.connections and conn.phase is CLOSING and conn._input_closed
    conn._gone()  # twice is harmless (connection_lost after a hand-over)


def test_reclaim_closes_the_oldest_idle_connection():
    site = fake_site()
    busy, idle_old, idle_new = Conn(site, False), Conn(site, True), Conn(site, True)
    for conn in (busy, idle_old, idle_new):
        site.connections[conn] = None
    assert reclaim_one(site.connections)
    assert list(site.connections) == [busy, idle_new]
    assert idle_old.transport.aborted and not busy.transport.aborted  # type: ignore[union-attr]
    assert site.stats.reclaimed == 1


def test_reclaim_looks_at_a_bounded_number_of_the_oldest():
    site = fake_site()
    for _ in range(RECLAIM_SCAN):
        site.connections[Conn(site, False)] = None
    late_idle = Conn(site, True)
    site.connections[late_idle] = None
    assert not reclaim_one(site.connections)
    assert late_idle in site.connections and site.stats.reclaimed == 0


@pytest.mark.parametrize("call", [
    lambda c: c.check_deadline(0.0), lambda c: c.close_idle(), lambda c: c.drain_idle(),
])
def test_each_protocol_must_say_how_it_ends(call):
    with pytest.raises(NotImplementedError):
        call(PhasedConnection())


def test_each_protocol_must_say_when_it_may_be_reclaimed():
    with pytest.raises(NotImplementedError):
        _ = PhasedConnection().reclaimable
