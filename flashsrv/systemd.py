"""The two systemd protocols flashsrv speaks: socket activation and sd_notify.

Socket activation (sd_listen_fds(3)): systemd binds the port (80 needs no privilege of ours),
passes the listening sockets from descriptor 3 on and says so in LISTEN_PID, LISTEN_FDS and
LISTEN_FDNAMES. Notification (sd_notify(3)): newline-separated KEY=VALUE datagrams sent to the
AF_UNIX socket named by NOTIFY_SOCKET (a path, or "@name" in the abstract namespace): READY=1,
RELOADING=1, STOPPING=1, WATCHDOG=1 and STATUS= lines.

The parsing (`listen_fds`, `notify_address`, `watchdog_interval`, `parse_notice`) and the
supervisor's bookkeeping (`WorkerNotices`) are pure: plain values in, plain values out. The
socket work is `passed_sockets` (at start-up, before any loop) and `Notifier`, whose sends
never block: a non-blocking datagram socket connected once at start-up (no path lookup on the
loop), errors counted and logged once, never raised. Nothing here knows an event loop.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

log = logging.getLogger("flashsrv")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first descriptor systemd passes
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
UNNAMED = "unknown"  # the name sd_listen_fds_with_names(3) gives a socket LISTEN_FDNAMES lacks
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


class ActivationError(Exception):
    """The environment says systemd passed sockets, but they are not what we can serve on."""


def _pid_value(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ActivationError(f"{name}={value!r} is not a process id") from None


def listen_fds(env: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """The (descriptor, name) pairs systemd passed to process pid; none when LISTEN_PID names
    another process (the variables were inherited by mistake). Names come from LISTEN_FDNAMES
    when it has one per descriptor, else every socket is "unknown" (as libsystemd does)."""
    if _pid_value(env, "LISTEN_PID") != pid:
        return []
    raw = env.get("LISTEN_FDS", "")
    try:
        count = int(raw)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={raw!r} is not a number") from None
    if count < 0:
        raise ActivationError(f"LISTEN_FDS={raw!r} is negative")
    names = env["LISTEN_FDNAMES"].split(":") if "LISTEN_FDNAMES" in env else []
    if len(names) != count:
        names = [UNNAMED] * count
    return [(LISTEN_FDS_START + i, name) for i, name in enumerate(names)]


def passed_sockets(environ: MutableMapping[str, str], pid: int) -> list[tuple[socket.socket, str]]:
    """The listening TCP sockets systemd passed to us, with their names; empty without socket
    activation. The LISTEN_* variables are removed (sd_listen_fds' unset_environment) so that
    no child takes them for its own, and each descriptor gets FD_CLOEXEC back: the helpers,
    which are exec'd, must not hold the port open (forked workers share it on purpose)."""
    try:
        fds = listen_fds(environ, pid)
    finally:
        for name in LISTEN_VARIABLES:
            environ.pop(name, None)
    found = []
    for fd, name in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(f"descriptor {fd} passed by systemd is not a socket: "
                                  f"{exc.strerror}") from None
        if (sock.family not in (socket.AF_INET, socket.AF_INET6)
                or sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            sock.detach()  # not ours to close: the message says what systemd should pass
            raise ActivationError(f"descriptor {fd} ({name}) passed by systemd is not a "
                                  "listening TCP socket (ListenStream= with an address or port)")
        sock.set_inheritable(False)
        sock.setblocking(False)
        found.append((sock, name))
    return found


def notify_address(value: str) -> bytes:
    """NOTIFY_SOCKET as a socket address: an absolute path, or "@name" for the abstract
    namespace (a leading NUL byte)."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    raise ValueError(f"NOTIFY_SOCKET={value!r} is neither an absolute path nor @name")


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds within which systemd wants WATCHDOG=1 from process pid; None when no watchdog
    is asked for, or it is meant for another process (WATCHDOG_PID)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        watched = int(env.get("WATCHDOG_PID", str(pid)))
    except ValueError:
        return None
    if usec <= 0 or watched != pid:
        return None
    return usec / 1e6


def parse_notice(data: bytes) -> dict[str, str]:
    """The KEY=VALUE lines of one notification datagram (lines without "=" are skipped)."""
    fields = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def reloading_notice() -> list[str]:
    """The notice that a reload has begun; READY=1 ends it. MONOTONIC_USEC is what
    Type=notify-reload matches against the time it sent SIGHUP."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return ["RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration"]


def stopping_notice() -> list[str]:
    return ["STOPPING=1", "STATUS=finishing responses in flight"]


class Notifier:
    """Sends notifications to systemd, or (in a worker) to the supervisor. A send never
    blocks and never raises: a full or vanished receiver costs a counted error, logged once.
    Without a socket every method is a no-op, so callers need no "under systemd?" checks."""

    def __init__(self, sock: socket.socket | None, watchdog: float | None = None) -> None:
        self.sock = sock
        if sock is not None:
            sock.setblocking(False)
        self.watchdog = watchdog if sock is not None else None
        self.errors = 0

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str], pid: int) -> Notifier:
        """The notifier NOTIFY_SOCKET asks for (the variables are then removed, as with
        sd_notify's unset_environment, so helpers never speak for the service)."""
        value = environ.get("NOTIFY_SOCKET")
        watchdog = watchdog_interval(environ, pid)
        for name in NOTIFY_VARIABLES:
            environ.pop(name, None)
        if value is None:
            return cls(None)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(notify_address(value))
        except (OSError, ValueError) as exc:
            sock.close()
            log.warning("cannot reach systemd's notification socket: %s", exc)
            return cls(None)
        return cls(sock, watchdog)

    def ping_period(self, longest: float) -> float:
        """How often the periodic tick must run: at most `longest`, and at least twice per
        watchdog interval, as sd_watchdog_enabled(3) recommends."""
        return longest if self.watchdog is None else min(longest, self.watchdog / 2)

    def notify(self, *lines: str) -> None:
        if self.sock is None or not lines:
            return
        try:
            self.sock.send("\n".join(lines).encode())
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("a notification to systemd failed (%s); further failures are "
                            "counted, not logged", exc)

    def ping(self) -> None:
        """WATCHDOG=1, when systemd watches us: called from the serving loop's tick, so it
        stops when that loop stops running callbacks."""
        if self.watchdog is not None:
            self.notify("WATCHDOG=1")

    def worker_channel(self) -> tuple[socket.socket, Notifier] | None:
        """For a supervisor: the socket it reads its workers' notices from (the kernel tells
        the sender's pid, SO_PASSCRED) and the notifier a forked worker sends them with.
        None when the supervisor itself has nobody to tell."""
        if self.sock is None:
            return None
        receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        receiver.setblocking(False)
        return receiver, Notifier(sender, self.watchdog)


def receive_notices(receiver: socket.socket) -> list[tuple[int, dict[str, str]]]:
    """Every (sender pid, fields) waiting on a supervisor's receiver, without blocking."""
    notices = []
    while True:
        try:
            data, ancillary, _flags, _addr = receiver.recvmsg(4096,
                                                              socket.CMSG_SPACE(_UCRED.size))
        except (BlockingIOError, InterruptedError):
            return notices
        for level, kind, value in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid = _UCRED.unpack_from(value)[0]
                notices.append((pid, parse_notice(data)))


@dataclass
class WorkerNotices:
    """What a supervisor tells systemd for its workers, which systemd does not hear (they are
    not the main process). READY=1 once every live worker is ready, at start-up and again
    after a reload; WATCHDOG=1 once every worker that has been ready has pinged since the
    last one, so one stuck worker loop lets the watchdog fire (systemd then restarts the
    service). Methods return the lines to send; an empty list means nothing to send."""

    pid: int
    live: set[int] = field(default_factory=set)
    ready: set[int] = field(default_factory=set)  # reported READY=1 since start or reload
    serving: set[int] = field(default_factory=set)  # ever ready: their pings are expected
    pinged: set[int] = field(default_factory=set)
    announced: bool = False  # READY=1 sent since start or reload
    up: bool = False  # READY=1 sent once: systemd's watchdog runs from then on
    stopped: bool = False

    def started(self, pid: int) -> None:
        self.live.add(pid)

    def exited(self, pid: int) -> list[str]:
        for group in (self.live, self.ready, self.serving, self.pinged):
            group.discard(pid)
        return self._ready_lines()

    def reloading(self) -> list[str]:
        self.ready.clear()
        self.announced = False
        return reloading_notice()

    def stopping(self) -> list[str]:
        self.stopped = True  # no READY=1 after STOPPING=1
        return stopping_notice()

    def heard(self, pid: int, fields: Mapping[str, str]) -> list[str]:
        if pid not in self.live:
            return []
        if fields.get("READY") == "1":
            self.ready.add(pid)
            self.serving.add(pid)
            return self._ready_lines()
        if fields.get("WATCHDOG") == "1":
            self.pinged.add(pid)
            if self.up and self.serving <= self.pinged:
                self.pinged.clear()
                return ["WATCHDOG=1"]
        return []

    def _ready_lines(self) -> list[str]:
        if self.announced or self.stopped or not self.live or not self.live <= self.ready:
            return []
        self.announced = self.up = True
        return ["READY=1", f"MAINPID={self.pid}", f"STATUS={len(self.live)} workers serving"]
