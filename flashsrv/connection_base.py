"""What the HTTP/1.1 and HTTP/2 connections share, and what the server and the admin endpoint
may ask of any connection: its phase (which alone sets the deadline the server's sweep
checks), the abrupt end, the graceful ones, and whether it may be reclaimed at the cap."""

from __future__ import annotations

import asyncio
from itertools import islice
from time import monotonic
from typing import TYPE_CHECKING

from flashsrv.phases import CLOSING

if TYPE_CHECKING:
    from flashsrv.site import Site

# How many of the oldest connections a new one at the cap may look at to find one to close.
RECLAIM_SCAN = 64


def reclaim_one(connections: dict[PhasedConnection, None]) -> bool:
    """At the connection cap: close the oldest connection that is waiting for a request, as
    nginx reuses idle connections when it runs short, so that a flood of connections that
    send nothing cannot lock real clients out. Looks at the RECLAIM_SCAN oldest only (a
    bounded cost per new connection); False when none of them can go."""
    for conn in islice(connections, RECLAIM_SCAN):
        if conn.reclaimable:
            conn.site.stats.reclaimed += 1
            connections.pop(conn)
            conn.abort()
            return True
    return False


class PhasedConnection:
    """The base of both connection protocols."""

    site: Site
    transport: asyncio.Transport | None
    phase: str
    deadline: float
    _input_closed: bool

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.deadline = monotonic() + self.site.timeouts[phase]

    def abort(self) -> None:
        self.phase = CLOSING
        self._input_closed = True
        if self.transport is not None:
            self.transport.abort()

    def _gone(self) -> None:
        """The transport is gone: nothing more is read, and the site forgets the connection."""
        self.phase = CLOSING
        self._input_closed = True
        self.site.connections.pop(self, None)

    # -- what each protocol says for itself -------------------------------------------------

    @property
    def reclaimable(self) -> bool:
        """Waiting for a request with nothing in flight: closing it loses nothing."""
        raise NotImplementedError

    def check_deadline(self, now: float) -> None:
        """The server's sweep: end the connection if its phase's deadline has passed."""
        raise NotImplementedError

    def close_idle(self) -> None:
        """Close once what is in flight is sent (SIGTERM, a response that closes)."""
        raise NotImplementedError

    def drain_idle(self) -> None:
        """While draining: close now if nothing is in flight."""
        raise NotImplementedError
