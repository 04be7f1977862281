"""The phases of a connection, and the setting that bounds the time spent in each.

A connection is in exactly one phase; entering a phase sets its deadline from this table, and
nothing else does, so what a client may hold and for how long is readable in one place.
"""

from __future__ import annotations

NEW, IDLE, HEAD, ANSWERING, SENDING, CLOSING = (
    "new", "idle", "head", "answering", "sending", "closing")

PHASE_TIMEOUTS = {
    NEW: "request_start_timeout",  # connected, nothing sent yet
    IDLE: "keepalive_timeout",  # between requests
    HEAD: "header_timeout",  # a request begun: its head (and any body) must arrive
    ANSWERING: "send_timeout",  # a response waits for the disk layer or the socket (per wait)
    SENDING: "send_timeout",  # an answered response still waits in the transport
    CLOSING: "send_timeout",  # the last bytes drain before the close
}


def phase_timeouts(config: object) -> dict[str, float]:
    """Seconds each phase may last under these settings."""
    return {phase: getattr(config, name) for phase, name in PHASE_TIMEOUTS.items()}
