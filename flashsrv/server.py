"""Start-up and shutdown: wire config, listening sockets, the loop, the disk layer and signals.

`run(config)` is what `flashsrv serve` calls. With one worker the calling process is the main
process of the AMPED design. With N workers it becomes a small supervisor: it binds N listening
sockets to the same port with SO_REUSEPORT (the kernel spreads connections among them), forks
one main process per socket before any event loop exists, replaces a worker that dies, and
forwards SIGTERM/SIGINT. Workers share nothing but a board of metrics slots in shared memory
(flashsrv.worker_metrics), each slot written by its worker alone, so there are still no locks.

Under systemd (flashsrv.systemd) the sockets systemd passed replace the bound ones (every
worker accepts on them), and the process systemd started reports READY, RELOADING, STOPPING
and the watchdog's pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import select
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from importlib import resources

import uvloop
from flashsrv_helpers.worker import die_with_parent

from flashsrv.accesslog import AccessLog
from flashsrv.admin import WorkerAdmin, start_admin
from flashsrv.allocator import keep_heap
from flashsrv.config import Config, ConfigError
from flashsrv.connection import HttpConnection
from flashsrv.content import Content, DataCache
from flashsrv.disk import Disk, InlineDisk, ThreadDisk
from flashsrv.h2_connection import H2Connection
from flashsrv.helper_pool import HelperPool
from flashsrv.logsink import ErrorLog, LogSink
from flashsrv.phases import phase_timeouts
from flashsrv.responder import Responder
from flashsrv.rule_files_watch import RuleFiles
from flashsrv.site import Docroot, HostTable, KeptStream, Site, Stats
from flashsrv.site_documents import SiteDocuments
from flashsrv.site_rules import SiteRules
from flashsrv.systemd import (
    ActivationError,
    Notifier,
    WorkerNotices,
    passed_sockets,
    receive_notices,
    reloading_notice,
    stopping_notice,
)
from flashsrv.tls import Certificates, TlsListeners, load_context
from flashsrv.worker_metrics import PUBLISH_EVERY, MetricsBoard, MetricsSlot

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


def port_group(host: str, port: int, count: int) -> list[socket.socket]:
    """count SO_REUSEPORT listening sockets on one port (port 0: the one the first got)."""
    first = listening_socket(host, port, reuse_port=True)
    port = first.getsockname()[1]
    return [first] + [listening_socket(host, port, reuse_port=True) for _ in range(count - 1)]


def address(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def announce(sock: socket.socket, what: str = "listening", scheme: str = "http") -> None:
    print(f"flashsrv {what} on {address(sock, scheme)}", file=sys.stderr, flush=True)


def reopen_log(site: Site) -> None:
    """SIGUSR1: reopen the access log file (after logrotate moved it); the log's own thread
    opens the new file and closes the old one."""
    if site.access_log is not None:
        site.access_log.reopen()


def _rules(config: Config, content: Content, files: RuleFiles
           ) -> tuple[Responder, SiteDocuments]:
    """The site rules, which SIGHUP and a change of a rule file replace (no I/O: they are
    built on the loop). The site's `_redirects` come before configured redirects (as on
    Netlify), its `_headers` after configured headers (a later rule's header wins)."""
    rules = SiteRules(cache_rules=config.cache_control, extra_headers=config.headers,
                      header_rules=[*config.header_rules, *files.header_rules],
                      redirects=[*files.redirects, *config.redirects],
                      clean_urls=config.clean_urls, trailing_slash=config.trailing_slash,
                      hidden=files.present)
    if config.default_cache_control is not None:
        rules.default_cache_control = config.default_cache_control
    responder = Responder(rules)
    documents = SiteDocuments(content, responder, config.error_pages, config.fallback,
                              config.listing)
    return responder, documents


def _alpn_choice(site: Site, alpn: str | None) -> asyncio.Protocol:
    """The protocol of a TLS connection, by what ALPN settled on."""
    if alpn == "h2":
        return H2Connection(site, tls=True)
    return HttpConnection(site, tls=True)


def docroots(site: Site) -> list[Docroot]:
    """The default site and every virtual host."""
    return [site] if site.hosts is None else [site, *site.hosts.sites]


def apply_rules(site: Site, docroot: Docroot) -> None:
    """New rules for new requests; responses kept under the old ones are dropped."""
    docroot.responder, docroot.documents = _rules(docroot.config, docroot.content,
                                                  docroot.rule_files)
    site.prepared.clear()


async def _read_rule_files(site: Site, everywhere: bool = False) -> None:
    """Read the rule files of each root that is due (every root: at start-up)."""
    now = time.monotonic()
    for docroot in docroots(site):
        due = everywhere or docroot.rule_files.due(now)
        if due and await docroot.rule_files.refresh(docroot.content):
            apply_rules(site, docroot)


async def _watch_rule_files(site: Site) -> None:
    while True:
        await asyncio.sleep(TICK)
        await _read_rule_files(site)


def _rules_and_log(config: Config, content: Content
                   ) -> tuple[Responder, SiteDocuments, AccessLog | None]:
    """The parts of a Site that SIGHUP may replace; at start-up, so it may open the log."""
    access_log = None
    if config.access_log != "off":
        access_log = AccessLog(config.access_log, config.access_log_format)
    return *_rules(config, content, RuleFiles()), access_log


def _content(config: Config, root: str, fd_limit: int, data: DataCache | None) -> Content:
    """One root's caches and disk layer. The descriptors the path caches may keep open are
    shared among the roots; the data cache is one for all (bounded in bytes once)."""
    max_entries = max(64, min(10_000, fd_limit // 8 // (1 + len(config.sites))))
    return Content(make_disk(config, root), config.cache_bytes, MAX_CACHED_FILE,
                   max_entries=max_entries,
                   compress=config.compress_encodings if config.compress else (), data=data)


def build_site(config: Config, root: str, fd_limit: int) -> Site:
    content = _content(config, root, fd_limit, None)
    site = Site(config, content, *_rules_and_log(config, content))
    if config.sites:
        virtual = []
        for site_config in config.sites:
            assert site_config.root is not None  # read_file requires it
            own = _content(config, os.path.realpath(site_config.root), fd_limit, content.data)
            virtual.append(Docroot(site_config, own,
                                   *_rules(site_config, own, RuleFiles())))
        site.hosts = HostTable(virtual, site if config.unknown_host == "default" else None)
    return site


# Settings a running process cannot change: they shape sockets, processes and caches.
RESTART_ONLY = ("root", "host", "port", "helpers", "model", "workers", "cache_bytes",
                "admin_port", "admin_host", "compress", "compress_encodings", "unknown_host",
                "tls_port")


async def reload_site(site: Site, load: Callable[[], Config], one_at_a_time: asyncio.Lock,
                      tls: TlsListeners | None = None) -> None:
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
        site.access_log = access_log
        if old_log is not None and old_log is not access_log:
            old_log.close()
        if new.show_dotfiles != site.config.show_dotfiles:
            site.content.paths.clear()  # translations made under the other dot-file rule
        _reload_sites(site, new)
        if tls is not None and new.tls_cert is not None and new.tls_key is not None:
            await tls.reload(new.tls_cert, new.tls_key)
        site.config = new
        apply_rules(site, site)
        site.timeouts = phase_timeouts(new)
        log.info("configuration reloaded")


def _reload_sites(site: Site, new: Config) -> None:
    """New rules for each virtual host; which hosts exist and where their roots are need a
    restart (they own helpers and caches)."""
    if site.hosts is None and not new.sites:
        return
    old = site.hosts.sites if site.hosts is not None else []
    if [(s.hosts, s.root) for s in new.sites] != [(d.config.hosts, d.config.root) for d in old]:
        log.warning("reload: [[sites]] hosts or roots changed; that takes effect only after a "
                    "restart (their rules are not reloaded either)")
        new.sites = site.config.sites
        return
    for docroot, site_config in zip(old, new.sites, strict=True):
        if site_config.show_dotfiles != docroot.config.show_dotfiles:
            docroot.content.paths.clear()
        docroot.config = site_config
        apply_rules(site, docroot)


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


async def _tick(site: Site, loop: asyncio.AbstractEventLoop, error_log: ErrorLog,
                notifier: Notifier, worker_admin: WorkerAdmin | None) -> None:
    """The periodic sweep: Date line, timeouts, log flush and rate-limit window, helper
    reaping, systemd's watchdog ping (sent from here, it stops when the loop stalls), and a
    supervised worker's metrics for the other workers' scrapes."""
    period = notifier.ping_period(TICK)
    published = 0.0
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        site.date.refresh()
        # Kept whole responses never outlive a tick (Date, trust period); kept streams go
        # when the path cache no longer holds their entry.
        site.prepared.expire(KeptStream.cached)
        for conn in list(site.connections):
            conn.check_deadline(now)
        if site.access_log is not None:
            site.access_log.flush()
        error_log.limit.roll(now)
        for docroot in docroots(site):
            docroot.content.disk.reap()
        notifier.ping()
        if worker_admin is not None and now - published >= PUBLISH_EVERY:
            worker_admin.publish(site)
            published = now


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


async def serve_forever(config: Config, socks: list[socket.socket], root: str, fd_limit: int,
                        announce_address: bool, load: Callable[[], Config],
                        notifier: Notifier, worker_admin: WorkerAdmin | None = None,
                        tls: TlsListeners | None = None) -> None:
    loop = asyncio.get_running_loop()
    site = build_site(config, root, fd_limit)
    for docroot in docroots(site):
        docroot.content.disk.start()
        docroot.content.watches.start()
        docroot.content.on_change.append(site.prepared.clear)  # a changed file's response
        docroot.content.on_change.append(docroot.rule_files.mark)
    await _read_rule_files(site, everywhere=True)  # before the first request
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task] = set()
    one_at_a_time = asyncio.Lock()

    tls_socks = [] if tls is None else tls.socks
    if tls_socks:
        site.https_port = tls_socks[0].getsockname()[1]
    serving = "STATUS=serving on " + ", ".join(
        [address(sock) for sock in socks] + [address(sock, "https") for sock in tls_socks])

    def on_sighup() -> None:
        notifier.notify(*reloading_notice())
        task = loop.create_task(reload_site(site, load, one_at_a_time, tls))
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(lambda _task: notifier.notify("READY=1", serving))

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log, site)
    servers = [await loop.create_server(lambda: HttpConnection(site), sock=sock, backlog=BACKLOG)
               for sock in socks]
    if tls is not None:
        await tls.start(partial(_alpn_choice, site), config.header_timeout, BACKLOG)
    admin = None
    if config.admin_port is not None:
        admin = await start_admin(site, config.admin_host, config.admin_port, worker_admin)
    error_log = ErrorLog(LOG_FORMAT)
    ticker = loop.create_task(_tick(site, loop, error_log, notifier, worker_admin))
    lag_watch = loop.create_task(_watch_lag(site.stats, loop))
    rule_watch = loop.create_task(_watch_rule_files(site))
    # Requests' objects die by reference counting; the cycle collector need not scan the
    # start-up objects again (freeze) nor run every 700 allocations.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if announce_address:
        for sock in socks:
            announce(sock)
        for sock in tls_socks:
            announce(sock, scheme="https")
        if admin is not None:
            announce(admin.sockets[0], "admin endpoint")
    notifier.notify("READY=1", serving)  # the helpers are started, the listeners accepting
    try:
        await stop.wait()
        notifier.notify(*stopping_notice())
        log.info("stopping: finishing responses in flight (up to %gs)", config.grace)
        for server in servers:
            server.close()
        if tls is not None:
            tls.close()
        if admin is not None:
            admin.close()
        await _drain(site, config.grace)
    finally:
        ticker.cancel()
        lag_watch.cancel()
        rule_watch.cancel()
        try:
            for docroot in docroots(site):
                docroot.content.watches.close()
                await docroot.content.disk.close()
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


def run_worker(config: Config, socks: list[socket.socket], root: str, announce_address: bool,
               load: Callable[[], Config], notifier: Notifier,
               worker_admin: WorkerAdmin | None = None, tls: TlsListeners | None = None
               ) -> None:
    fd_limit = raise_fd_limit()
    keep_heap()
    uvloop.run(serve_forever(config, socks, root, fd_limit, announce_address, load, notifier,
                             worker_admin, tls))


def _fork_worker(config: Config, socks: list[socket.socket], root: str,
                 load: Callable[[], Config], notifier: Notifier,
                 worker_admin: WorkerAdmin | None, tls: TlsListeners | None) -> int:
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
            run_worker(config, socks, root, False, load, notifier, worker_admin, tls)
        except BaseException:
            logging.getLogger("flashsrv").exception("worker failed")
            code = 1
        finally:
            os._exit(code)
    return pid


def supervise(config: Config, root: str, load: Callable[[], Config],
              passed: list[socket.socket], notifier: Notifier,
              certificates: Certificates | None) -> int:
    """Run config.workers main processes on one port and keep them running until a signal.
    They all accept on the sockets systemd passed, or each on its own SO_REUSEPORT socket.
    Under systemd the supervisor is the main process, so it alone notifies: its workers tell
    it (WorkerNotices), and it wakes every TICK to reap them and to read their notices."""
    if passed:
        groups = [passed] * config.workers
    else:
        groups = [[sock] for sock in port_group(config.host, config.port, config.workers)]
    # The admin port: one socket per worker on one port, and the board their metrics meet on.
    admin_socks = ([] if config.admin_port is None
                   else port_group(config.admin_host, config.admin_port, config.workers))
    board = MetricsBoard(config.workers) if admin_socks else None
    tls_socks = ([] if certificates is None
                 else port_group(config.host, config.tls_port, config.workers))
    channel = notifier.worker_channel()
    receiver, worker_notifier = channel if channel is not None else (None, Notifier(None))
    notices = WorkerNotices(os.getpid())
    stopping = False

    def on_signal(signum: int, _frame) -> None:
        nonlocal stopping
        stopping = True
        notifier.notify(*notices.stopping())
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            notifier.notify(*notices.reloading())
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def start(place: int) -> None:
        """Fork the worker of groups[place]; it takes that place's admin socket and metrics
        slot, whose counters it continues (a respawn does not set them back)."""
        admin = None if board is None else WorkerAdmin(admin_socks[place],
                                                       MetricsSlot(board, place))
        tls = None if certificates is None else TlsListeners(certificates, [tls_socks[place]])
        pid = _fork_worker(config, groups[place], root, load, worker_notifier, admin, tls)
        workers[pid] = place
        notices.started(pid)

    workers: dict[int, int] = {}  # pid -> its place
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGUSR1, forward)
    for place in range(config.workers):
        start(place)
    for sock in groups[0]:
        announce(sock)
    if tls_socks:
        announce(tls_socks[0], scheme="https")
    if admin_socks:
        announce(admin_socks[0], "admin endpoint")
    status = 0
    while workers:
        if receiver is None:
            time.sleep(TICK)
        elif select.select([receiver], [], [], TICK)[0]:
            for pid, fields in receive_notices(receiver):
                notifier.notify(*notices.heard(pid, fields))
        for pid, code in _exited_children():
            place = workers.pop(pid, None)
            notifier.notify(*notices.exited(pid))
            if stopping:
                status = status or (code if code > 0 else 0)
            elif place is not None:
                log.error("worker %d exited with %d; starting another", pid, code)
                time.sleep(0.2)
                start(place)
    return status


def _exited_children() -> Iterator[tuple[int, int]]:
    """(pid, exit code) of each child that has exited, without waiting for any."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(wait_status)


def run(config: Config, load: Callable[[], Config]) -> int:
    """Serve until SIGTERM/SIGINT; load() re-reads the configuration on SIGHUP."""
    # Blocking stderr for start-up and a supervisor (neither runs a loop); each main process
    # puts an ErrorLog in front of it while its loop runs (serve_forever).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    root = document_root(config)
    try:
        passed = passed_sockets(os.environ, os.getpid())
    except ActivationError as exc:
        raise SystemExit(f"flashsrv: {exc}") from None
    if passed:
        log.info("serving on the sockets systemd passed (%s); the host and port settings are "
                 "not used", ", ".join(name for _sock, name in passed))
    socks = [sock for sock, _name in passed]
    notifier = Notifier.from_environment(os.environ, os.getpid())
    certificates = _certificates(config)
    if config.workers > 1:
        return supervise(config, root, load, socks, notifier, certificates)
    if not socks:
        socks = [listening_socket(config.host, config.port, reuse_port=False)]
    tls = None
    if certificates is not None:
        tls = TlsListeners(certificates, [listening_socket(config.host, config.tls_port,
                                                           reuse_port=False)])
    run_worker(config, socks, root, True, load, notifier, tls=tls)
    return 0


def _certificates(config: Config) -> Certificates | None:
    """The HTTPS certificate, read at start-up (before any loop or client: a broken pair
    stops the start with a clear message instead of failing every handshake)."""
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise SystemExit("flashsrv: HTTPS needs both --tls-cert and --tls-key")
    try:
        context = load_context(config.tls_cert, config.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise SystemExit(f"flashsrv: cannot use the TLS certificate and key: {exc}") from None
    return Certificates(context, config.tls_cert, config.tls_key)
