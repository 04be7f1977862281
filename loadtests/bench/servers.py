"""The servers compared, and how each one is configured, started, measured and stopped.

flashsrv (amped, sped, threads; once with its access log on), nginx (the reference), the Python
floor (loadtests/floor_server.py), granian's static files and uvicorn + starlette. Every server
runs in a session of its own, pinned to the server core, inside the slow-disk cgroup when there
is one; its CPU time is read from /proc for its whole process group.

For the TLS rows, nginx and flashsrv amped also listen on a TLS port with the same certificate
(self-signed ECDSA P-256, made per run by `openssl`), the same TLS 1.2 cipher list (flashsrv's,
Mozilla's intermediate) and TLS 1.2-1.3; nginx offers h2 there, flashsrv whatever its ALPN list
has."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path

from flashsrv.tls import INTERMEDIATE_CIPHERS

from .dataset import Dataset
from .machine import REPO, first_line
from .slow_disk import Throttle
from .workloads import ALL_WORKLOADS, CACHED, TLS

FLOOR_SERVER = REPO / "loadtests" / "floor_server.py"


@dataclass
class ServerSpec:
    key: str          # name on the command line (--servers)
    label: str        # name in the table
    kind: str         # flashsrv | nginx | floor | granian | uvicorn
    workloads: list[str]
    model: str | None = None
    access_log: bool = False
    prefix: str = ""  # URL prefix under which the data set is served
    only_why: str = ""  # why it runs only `workloads`: a note when others are asked for


FULL = [w for w in ALL_WORKLOADS if w not in TLS]
FLOOR = "floor (bare uvloop+httptools)"
SERVERS = [
    ServerSpec("nginx", "nginx", "nginx", [*FULL, *TLS]),
    ServerSpec("floor", FLOOR, "floor", ["small"],
               only_why="a constant 2 KB response, no files: loadtests/floor_server.py"),
    # Measured before any disk-bound run, whose evictions and writeback would tax its log file.
    ServerSpec("amped+log", "flashsrv amped, access log on", "flashsrv", ["small"],
               model="amped", access_log=True),
    ServerSpec("amped", "flashsrv amped", "flashsrv", [*FULL, *TLS], model="amped"),
    ServerSpec("sped", "flashsrv sped", "flashsrv", FULL, model="sped"),
    ServerSpec("threads", "flashsrv threads", "flashsrv", FULL, model="threads"),
    ServerSpec("granian", "granian static", "granian", list(CACHED), prefix="/static"),
    ServerSpec("uvicorn", "uvicorn+starlette", "uvicorn", list(CACHED)),
]

NGINX_CONF = """\
{user}worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    types {{ text/html html; text/css css; image/jpeg jpg; video/mp4 mp4; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=10000 inactive=120s;
    open_file_cache_valid 120s;
    open_file_cache_min_uses 1;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
{temp_paths}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
{tls}        root {root};
    }}
}}
"""

# The TLS listener: flashsrv's settings (flashsrv/tls.py), and h2 as issue 11 asks.
NGINX_TLS = """\
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers off;
"""

GRANIAN_APP = '''\
"""Everything is a static file: the app only answers what the mount does not."""


async def app(scope, proto):
    proto.response_empty(404, [])
'''

STARLETTE_APP = '''\
import os

from starlette.staticfiles import StaticFiles

app = StaticFiles(directory=os.environ["BENCH_ROOT"])
'''


@dataclass(frozen=True)
class Certificate:
    """The run's certificate and key (PEM files), served by every TLS listener."""

    cert: Path
    key: Path


def make_certificate(work: Path) -> tuple[Certificate | None, str]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (the load generators verify
    nothing), or None and why not."""
    if not shutil.which("openssl"):
        return None, "openssl not found (apt-get install openssl)"
    cert = Certificate(work / "tls-cert.pem", work / "tls-key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "7", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(cert.key), "-out", str(cert.cert)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"openssl could not make a certificate: {r.stderr.strip()[-300:]}"
    return cert, "self-signed ECDSA P-256 (openssl)"


@dataclass
class Tools:
    peers_bin: list[Path]
    flashsrv_help: str | None  # `flashsrv serve --help`, or None when flashsrv is not usable
    cpus: tuple[int, int] | None  # (server core, load-generator core)

    def find(self, name: str) -> Path | None:
        for d in self.peers_bin:
            if (d / name).exists():
                return d / name
        found = shutil.which(name)
        return Path(found) if found else None


def discover_tools(peers_venv: Path | None) -> Tools:
    bins = [Path(peers_venv) / "bin"] if peers_venv else []
    bins.append(Path(sys.executable).parent)
    r = subprocess.run([sys.executable, "-m", "flashsrv", "serve", "--help"],
                       capture_output=True, text=True, cwd=REPO)
    help_text = r.stdout if r.returncode == 0 else None
    cpus = sorted(os.sched_getaffinity(0))
    pair = (cpus[0], cpus[1]) if len(cpus) >= 2 and shutil.which("taskset") else None
    return Tools(bins, help_text, pair)


def tls_unavailable(spec: ServerSpec, tools: Tools) -> str | None:
    """Why this server cannot run the TLS rows here, or None."""
    if spec.kind == "flashsrv" and "--tls-cert" not in (tools.flashsrv_help or ""):
        return "this flashsrv has no --tls-cert option yet"
    return None


def unavailable(spec: ServerSpec, tools: Tools) -> str | None:
    """Why this server cannot run here, or None."""
    if spec.kind == "flashsrv":
        if tools.flashsrv_help is None:
            return "flashsrv is not installed (pip install -e .)"
        if "--model" not in tools.flashsrv_help and spec.model != "amped":
            return "this flashsrv has no --model option yet"
    if spec.kind == "nginx" and not shutil.which("nginx"):
        return "nginx not found (apt-get install nginx-light)"
    if spec.kind == "floor":
        import importlib.util
        missing = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install -e .)"
    if spec.kind == "granian" and not tools.find("granian"):
        return "granian not found (pip install granian, or --peers-venv DIR)"
    if spec.kind == "uvicorn":
        uv = tools.find("uvicorn")
        if uv is None:
            return "uvicorn not found (pip install uvicorn starlette, or --peers-venv DIR)"
        ok = subprocess.run([str(uv.parent / "python"), "-c", "import starlette"],
                            capture_output=True).returncode == 0
        if not ok:
            return f"starlette is not installed next to {uv}"
    return None


@dataclass(frozen=True)
class CpuTimes:
    """utime and stime, in seconds, of a server's main process and of all its processes."""

    main_user: float = 0.0
    main_sys: float = 0.0
    user: float = 0.0
    sys: float = 0.0

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def total(self) -> float:
        return self.user + self.sys


@dataclass(frozen=True)
class TlsSession:
    """What a TLS client offering h2 and http/1.1 got from a server."""

    version: str
    cipher: str
    alpn: str | None

    def __str__(self) -> str:
        return f"{self.version}, {self.cipher}, ALPN {self.alpn or 'none'}"


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen
    port: int
    log_path: Path
    tls_port: int | None = None
    tls: TlsSession | None = None  # what the TLS port negotiated when it was first asked

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.spec.prefix}"

    def url(self, path: str, tls: bool = False) -> str:
        if not tls:
            return self.base + path
        assert self.tls_port is not None, f"{self.spec.label} has no TLS port"
        return f"https://127.0.0.1:{self.tls_port}{self.spec.prefix}{path}"

    def cpu_times(self) -> CpuTimes:
        """User and system CPU of the main process and of its whole process group (workers,
        helpers; the server is started in a session of its own), from /proc/PID/stat."""
        tick = os.sysconf("SC_CLK_TCK")
        main = (0, 0)
        user = system = 0
        for pid, stat in group_stats(self.proc.pid):
            if pid == self.proc.pid:
                main = (int(stat[11]), int(stat[12]))
            # + cutime, cstime: a helper that exited (and was reaped) during the run counts too
            user += int(stat[11]) + int(stat[13])
            system += int(stat[12]) + int(stat[14])
        return CpuTimes(main[0] / tick, main[1] / tick, user / tick, system / tick)

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


def server_command(spec: ServerSpec, tools: Tools, ds: Dataset, work: Path, port: int,
                   args: argparse.Namespace, tls: tuple[Certificate, int] | None = None
                   ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment; `tls` (certificate, port): a TLS listener too
    (nginx and flashsrv only)."""
    env = dict(os.environ)
    if spec.kind == "flashsrv":
        cmd = [sys.executable, "-m", "flashsrv", "serve", str(ds.root), "--host", "127.0.0.1",
               "--port", str(port), "--cache-bytes", args.cache_bytes]
        if tls is not None:
            cmd += ["--tls-cert", str(tls[0].cert), "--tls-key", str(tls[0].key),
                    "--tls-port", str(tls[1])]
        if "--model" in (tools.flashsrv_help or ""):
            cmd += ["--model", spec.model or "amped"]
        if args.helpers:
            cmd += ["--helpers", str(args.helpers)]
        cmd += ["--access-log", str(work / f"access-{spec.key}.log") if spec.access_log
                else "off"]
        return cmd, env
    if spec.kind == "nginx":
        conf = work / f"nginx-{port}"
        conf.mkdir()
        (conf / "nginx.conf").write_text(nginx_conf(conf, ds.root, port, tls))
        return ["nginx", "-p", str(conf), "-c", "nginx.conf", "-g", "daemon off;"], env
    if spec.kind == "floor":  # the same body size as the cached small file
        size = (ds.root / CACHED["small"].lstrip("/")).stat().st_size
        return [sys.executable, str(FLOOR_SERVER),
                "--port", str(port), "--body-bytes", str(size)], env
    if spec.kind == "granian":
        (work / "bench_granian_app.py").write_text(GRANIAN_APP)
        return [str(tools.find("granian")), "--interface", "rsgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--runtime-threads", "1", "--no-ws",
                "--log-level", "warning", "--static-path-route", "/static",
                "--static-path-mount", str(ds.root), "--working-dir", str(work),
                "bench_granian_app:app"], env
    uv = tools.find("uvicorn")
    assert uv is not None
    (work / "bench_starlette_app.py").write_text(STARLETTE_APP)
    env["BENCH_ROOT"] = str(ds.root)
    return [str(uv.parent / "python"), "-m", "uvicorn", "--host", "127.0.0.1",
            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--app-dir", str(work),
            "bench_starlette_app:app"], env


def nginx_conf(prefix: Path, root: Path, port: int,
               tls: tuple[Certificate, int] | None = None) -> str:
    # Temp paths of the compiled-in modules, so that nginx never needs /var/lib/nginx.
    configure = first_line(["sh", "-c", "nginx -V 2>&1 | grep configure"])
    temp = ["    client_body_temp_path {d}/body;"]
    for mod in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{mod}_module" not in configure:
            temp.append(f"    {mod}_temp_path {{d}}/{mod};")
    user = ""
    if os.geteuid() == 0:  # as root, workers would switch to "nobody" and lose the files
        import pwd
        user = f"user {pwd.getpwuid(0).pw_name};\n"
    tls_conf = "" if tls is None else NGINX_TLS.format(
        port=tls[1], cert=tls[0].cert, key=tls[0].key, ciphers=INTERMEDIATE_CIPHERS)
    return NGINX_CONF.format(user=user, dir=prefix, port=port, root=root, tls=tls_conf,
                             temp_paths="\n".join(temp).format(d=prefix))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(spec: ServerSpec, tools: Tools, ds: Dataset, work: Path,
                 args: argparse.Namespace, throttle: Throttle | None,
                 certificate: Certificate | None = None) -> Running:
    """Start the server and wait until it answers (on its TLS port too, given a certificate:
    what that port negotiates is kept in `Running.tls`)."""
    port = free_port()
    tls = None if certificate is None else (certificate, free_port())
    cmd, env = server_command(spec, tools, ds, work, port, args, tls)
    if tools.cpus:
        cmd = ["taskset", "-c", str(tools.cpus[0]), *cmd]
    if throttle is not None:
        # The wrapper shell joins the cgroup and then execs the server: the server and every
        # helper it starts are in the cgroup from their first instruction on.
        cmd = ["sh", "-c", f'echo $$ > {shlex.quote(str(throttle.procs))} && exec "$@"',
               "sh", *cmd]
    log_path = work / f"server-{spec.key}.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=work,
                                start_new_session=True)
    running = Running(spec, proc, port, log_path, None if tls is None else tls[1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.label} exited with {proc.returncode}:\n"
                               f"{running.log_tail()}")
        with contextlib.suppress(OSError):
            if http_get(port, spec.prefix + CACHED["small"], timeout=2)[0] == 200:
                if tls is not None:
                    running.tls = tls_session(tls[1])
                return running
        time.sleep(0.1)
    stop_server(running)
    raise RuntimeError(f"{spec.label} did not answer within 30 s:\n{running.log_tail()}")


def stop_server(running: Running, grace: float = 15.0) -> list[str]:
    """SIGTERM (nginx: SIGQUIT), then SIGKILL; returns problems seen while stopping."""
    problems: list[str] = []
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT if running.spec.kind == "nginx" else signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            problems.append(f"did not exit within {grace:.0f} s of SIGTERM: killed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.returncode not in (0, -signal.SIGTERM) and not problems:
        problems.append(f"exit status {proc.returncode} after SIGTERM")
    time.sleep(0.3)
    left = [p for p in pids_in_group(proc.pid) if p != proc.pid]
    if left:
        problems.append(f"processes left after it exited: {left}: killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return problems


def group_stats(pgid: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, fields of /proc/PID/stat after the command name) of every process in `pgid`:
    fields[0] is the state, [2] the process group, [11:15] utime, stime, cutime, cstime."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    yield int(d.name), fields


def pids_in_group(pgid: int) -> list[int]:
    return [pid for pid, fields in group_stats(pgid) if fields[0] != "Z"]


def tls_session(port: int, timeout: float = 5.0) -> TlsSession:
    """Handshake with the TLS port, offering h2 and http/1.1 (as h2load does), verifying
    nothing (the certificate is the run's own)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
          context.wrap_socket(raw) as s):
        cipher = s.cipher()
        return TlsSession(s.version() or "?", cipher[0] if cipher else "?",
                          s.selected_alpn_protocol())


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data
