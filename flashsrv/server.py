"""Start-up and shutdown: wire config, listening sockets, the loop, the disk layer and signals.

`run(config)` is what `flashsrv serve` calls. With one worker the calling process is the main
process of the AMPED design. With N workers it becomes a small supervisor: it binds N listening
sockets to the same port with SO_REUSEPORT (the kernel spreads connections among them), forks
one main process per socket before any event loop exists, replaces a worker that dies, and
forwards SIGTERM/SIGINT. Workers share nothing, so there are still no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from importlib import resources

import uvloop
from flashsrv_helpers.worker import die_with_parent

from flashsrv.accesslog import AccessLog
from flashsrv.config import Config, ConfigError
from flashsrv.connection import HttpConnection
from flashsrv.content import Content
from flashsrv.disk import Disk, InlineDisk, ThreadDisk
from flashsrv.helper_pool import HelperPool
from flashsrv.logsink import ErrorLog, LogSink
from flashsrv.phases import phase_timeouts
from flashsrv.responder import Responder
from flashsrv.site import Site, Stats
from flashsrv.site_documents import SiteDocuments
from flashsrv.site_rules import SiteRules

log = logging.getLogger("flashsrv")

TICK = 0.25
# The loop's lateness is sampled this often: a stall of a few tens of milliseconds, which a
# client feels, shows in the histogram even if no periodic tick happened to be late.
LAG_SAMPLE = 0.01
# Files up to this size are kept whole in the data cache and sent from memory (a prepared
# response: one write); larger ones go from the page cache to the socket with sendfile (or
# stream in chunks). Measured here: a 100 KB file from memory is 3x the req/s of the sendfile
# path (six system calls and a mincore per response against one write).
MAX_CACHED_FILE = 256 << 10
BACKLOG = 2048
LOG_FORMAT = "%(asctime)s flashsrv[%(process)d] %(levelname)s %(message)s"
# How long the end of a run waits for the log threads to write their last lines: a log nobody
# reads must not hold up the exit.
LOG_CLOSE_WAIT = 1.0


def document_root(config: Config) -> str:
    """The real path of the folder to serve; the embedded demo site when none is given."""
    if config.root is None:
        return os.path.realpath(str(resources.files("flashsrv") / "demo_site"))
    root = os.path.realpath(config.root)
    if not os.path.isdir(root):
        raise SystemExit(f"flashsrv: document root {config.root!r} is not a folder")
    return root


def make_disk(config: Config, root: str) -> Disk:
    if config.model == "sped":
        return InlineDisk(root)
    if config.model == "threads":
        return ThreadDisk(root, config.helpers)
    return HelperPool(root, config.helpers, config.helper_timeout, config.helper_queue)


def raise_fd_limit() -> int:
    """Lift the soft descriptor limit to the hard one: every connection costs a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG,
                                reuse_port=reuse_port, dualstack_ipv6=host == "::")
    sock.setblocking(False)
    return sock


def announce(sock: socket.socket, what: str = "listening") -> None:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"flashsrv {what} on http://{shown}:{port}", file=sys.stderr, flush=True)


def reopen_log(site: Site) -> None:
    """SIGUSR1: reopen the access log file (after logrotate moved it); the log's own thread
    opens the new file and closes the old one."""
    if site.access_log is not None:
        site.access_log.reopen()


def _rules(config: Config, content: Content) -> tuple[Responder, SiteDocuments]:
    """The site rules, which SIGHUP replaces (no I/O: they are built on the loop)."""
    rules = SiteRules(cache_rules=config.cache_control, extra_headers=config.headers)
    if config.default_cache_control is not None:
        rules.default_cache_control = config.default_cache_control
    responder = Responder(rules)
    documents = SiteDocuments(content, responder, config.error_pages, config.fallback,
                              config.listing)
    return responder, documents


def _rules_and_log(config: Config, content: Content
                   ) -> tuple[Responder, SiteDocuments, AccessLog | None]:
    """The parts of a Site that SIGHUP may replace; at start-up, so it may open the log."""
    access_log = None
    if config.access_log != "off":
        access_log = AccessLog(config.access_log, config.access_log_format)
    return *_rules(config, content), access_log


def build_site(config: Config, root: str, fd_limit: int) -> Site:
    disk = make_disk(config, root)
    content = Content(disk, config.cache_bytes, MAX_CACHED_FILE,
                      max_entries=max(64, min(10_000, fd_limit // 8)),
                      compress=config.compress)
    return Site(config, content, *_rules_and_log(config, content))


# Settings a running process cannot change: they shape sockets, processes and caches.
RESTART_ONLY = ("root", "host", "port", "helpers", "model", "workers", "cache_bytes",
                "admin_port", "admin_host", "compress")


async def reload_site(site: Site, load: Callable[[], Config], one_at_a_time: asyncio.Lock
                      ) -> None:
    """SIGHUP: read the configuration again and apply it to new requests; open connections
    carry on. Settings that need a restart are kept, with a warning; any error keeps the
    running configuration. Reading the file (and opening a new access log) is disk work, done
    in an executor thread; only the result is applied here, on the loop."""
    loop = asyncio.get_running_loop()
    async with one_at_a_time:
        try:
            new = await loop.run_in_executor(None, load)
        except (ConfigError, OSError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        for name in RESTART_ONLY:
            if getattr(new, name) != getattr(site.config, name):
                log.warning("reload: %s changed; it takes effect only after a restart", name)
                setattr(new, name, getattr(site.config, name))
        old_log = site.access_log
        access_log = old_log
        if (new.access_log, new.access_log_format) != (site.config.access_log,
                                                      site.config.access_log_format):
            access_log = None
            if new.access_log != "off":
                try:
                    access_log = await loop.run_in_executor(
                        None, AccessLog, new.access_log, new.access_log_format)
                except OSError as exc:
                    log.error("reload failed, keeping the running configuration: cannot open "
                              "the access log %s: %s", new.access_log, exc.strerror)
                    return
        site.responder, site.documents = _rules(new, site.content)
        site.access_log = access_log
        if old_log is not None and old_log is not access_log:
            old_log.close()
        site.prepared.clear()
        if new.show_dotfiles != site.config.show_dotfiles:
            site.content.paths.clear()  # translations made under the other dot-file rule
        site.config = new
        site.timeouts = phase_timeouts(new)
        log.info("configuration reloaded")


async def _watch_lag(stats: Stats, loop: asyncio.AbstractEventLoop) -> None:
    """How late the loop runs a callback it was asked to run every LAG_SAMPLE seconds: the
    last lateness, the largest since start, and their histogram. Any callback that keeps
    the loop busy delays every client by as much, so this is what a client's request waits
    before the loop even looks at it."""
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_SAMPLE)
        stats.loop_lag = lag = max(0.0, loop.time() - before - LAG_SAMPLE)
        stats.loop_lag_max = max(stats.loop_lag_max, lag)
        stats.loop_delay.observe(lag)


async def _tick(site: Site, loop: asyncio.AbstractEventLoop, error_log: ErrorLog) -> None:
    """The periodic sweep: Date line, timeouts, log flush and rate-limit window, helper
    reaping."""
    while True:
        await asyncio.sleep(TICK)
        now = time.monotonic()
        site.date.refresh()
        site.prepared.clear()  # kept responses never outlive a tick (Date, trust period)
        for conn in list(site.connections):
            conn.check_deadline(now)
        if site.access_log is not None:
            site.access_log.flush()
        error_log.limit.roll(now)
        site.content.disk.reap()


async def _drain(site: Site, grace: float) -> None:
    """Let responses in flight finish (up to grace seconds), closing idle connections."""
    site.stopping = True
    site.prepared.stop()
    deadline = time.monotonic() + grace
    while site.connections and time.monotonic() < deadline:
        for conn in list(site.connections):
            conn.drain_idle()
        await asyncio.sleep(0.05)
    for conn in list(site.connections):
        conn.abort()
    await asyncio.sleep(0)  # let the aborted transports report connection_lost


async def serve_forever(config: Config, sock: socket.socket, root: str, fd_limit: int,
                        announce_address: bool, load: Callable[[], Config]) -> None:
    loop = asyncio.get_running_loop()
    site = build_site(config, root, fd_limit)
    site.content.disk.start()
    site.content.watches.start()
    site.content.on_change.append(site.prepared.clear)  # a changed file's kept response too
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task] = set()
    one_at_a_time = asyncio.Lock()

    def on_sighup() -> None:
        task = loop.create_task(reload_site(site, load, one_at_a_time))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log, site)
    server = await loop.create_server(lambda: HttpConnection(site), sock=sock, backlog=BACKLOG)
    admin = None
    if config.admin_port is not None:
        from flashsrv.admin import start_admin

        admin = await start_admin(site, config.admin_host, config.admin_port)
    error_log = ErrorLog(LOG_FORMAT)
    ticker = loop.create_task(_tick(site, loop, error_log))
    lag_watch = loop.create_task(_watch_lag(site.stats, loop))
    # Requests' objects die by reference counting; the cycle collector need not scan the
    # start-up objects again (freeze) nor run every 700 allocations.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if announce_address:
        announce(sock)
        if admin is not None:
            announce(admin.sockets[0], "admin endpoint")
    try:
        await stop.wait()
        log.info("stopping: finishing responses in flight (up to %gs)", config.grace)
        server.close()
        if admin is not None:
            admin.close()
        await _drain(site, config.grace)
    finally:
        ticker.cancel()
        lag_watch.cancel()
        try:
            site.content.watches.close()
            await site.content.disk.close()
        finally:
            await _close_logs(site, error_log)


async def _close_logs(site: Site, error_log: ErrorLog) -> None:
    """Hand the last lines to the log threads, put the blocking stderr handler back for what
    comes after the loop, and give the threads LOG_CLOSE_WAIT to write (in an executor)."""
    sinks = [error_log.sink]
    if site.access_log is not None:
        site.access_log.close()
        sinks.append(site.access_log.sink)
    error_log.close()
    deadline = time.monotonic() + LOG_CLOSE_WAIT
    await asyncio.get_running_loop().run_in_executor(None, _join_logs, sinks, deadline)


def _join_logs(sinks: list[LogSink], deadline: float) -> None:
    for sink in sinks:
        sink.join(max(0.0, deadline - time.monotonic()))


def run_worker(config: Config, sock: socket.socket, root: str, announce_address: bool,
               load: Callable[[], Config]) -> None:
    fd_limit = raise_fd_limit()
    uvloop.run(serve_forever(config, sock, root, fd_limit, announce_address, load))


def _fork_worker(config: Config, sock: socket.socket, root: str,
                 load: Callable[[], Config]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            # Workers of a supervisor get SIGTERM when it dies, so none is ever orphaned.
            die_with_parent(parent, signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            run_worker(config, sock, root, False, load)
        except BaseException:
            logging.getLogger("flashsrv").exception("worker failed")
            code = 1
        finally:
            os._exit(code)
    return pid


def supervise(config: Config, root: str, load: Callable[[], Config]) -> int:
    """Run config.workers main processes on one port and keep them running until a signal."""
    first = listening_socket(config.host, config.port, reuse_port=True)
    port = first.getsockname()[1]
    sockets = [first] + [listening_socket(config.host, port, reuse_port=True)
                         for _ in range(config.workers - 1)]
    stopping = False

    def on_signal(signum: int, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(signum: int, _frame) -> None:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    workers: dict[int, socket.socket] = {}
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGUSR1, forward)
    for sock in sockets:
        workers[_fork_worker(config, sock, root, load)] = sock
    announce(first)
    status = 0
    while workers:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        sock = workers.pop(pid, None)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (code if code > 0 else 0)
        elif sock is not None:
            log.error("worker %d exited with %d; starting another", pid, code)
            time.sleep(0.2)
            workers[_fork_worker(config, sock, root, load)] = sock
    return status


def run(config: Config, load: Callable[[], Config]) -> int:
    """Serve until SIGTERM/SIGINT; load() re-reads the configuration on SIGHUP."""
    # Blocking stderr for start-up and a supervisor (neither runs a loop); each main process
    # puts an ErrorLog in front of it while its loop runs (serve_forever).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    root = document_root(config)
    if config.workers > 1:
        return supervise(config, root, load)
    sock = listening_socket(config.host, config.port, reuse_port=False)
    run_worker(config, sock, root, True, load)
    return 0
