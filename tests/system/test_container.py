"""The real Dockerfile, built and run with rootful podman.

There is no Docker engine and no registry here, so the base image is made locally
(`debootstrap --variant=minbase bookworm`, imported as localhost/debian:bookworm) and the
Dockerfile is built on it with `--build-arg BASE=...`; the Dockerfile installs Python from apt when
the base has none. Podman's configuration and storage live in one fixed folder (STATE, below) so
that the base image and the build's layer cache survive between runs: the first run on a machine
takes about two minutes, later ones seconds. The container then runs the way users run it (site
mounted read-only, read-only root filesystem, no capabilities) and is checked over HTTP, with the
image's own HEALTHCHECK, through /proc (which user runs which process) and on `podman stop`.

Skips only where podman cannot run at all: podman or runc not installed (tests/run installs them
with apt), not root, or `podman info` failing on this machine. TEST_PODMAN_DIR moves the state
folder; TEST_DEBIAN_MIRROR picks the mirror for debootstrap.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import free_port

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TEST_PODMAN_DIR", "/var/tmp/flashsrv-podman"))
BASE_IMAGE = "localhost/debian:bookworm"
IMAGE = "localhost/flashsrv:test"
DEBIAN_MIRROR = os.environ.get("TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
UID = 10001
HELPERS = 2

# crun fails on this kernel's hybrid cgroups: runc with cgroupfs. Podman's default nofile limit
# (1048576) is above this machine's hard limit. No systemd: events go to a file.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{state}/storage"
runroot = "{state}/run"
"""

SITE = {
    "index.html": b"<!doctype html><title>container</title><h1>served from a volume</h1>\n",
    "style.css": b"h1 { color: #0a66c2; }\n",
    "docs/page.txt": b"plain text in a subfolder\n",
}

pytestmark = pytest.mark.timeout(900)


@dataclass
class Podman:
    """Runs podman with this test's configuration and storage."""

    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"podman {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def inspect(self, name: str, template: str) -> str:
        return self.run("inspect", "--format", template, name).stdout.strip()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock between concurrent test runs that share STATE."""
    with open(STATE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def podman() -> Podman:
    """Podman configured under STATE, or a skip when podman cannot run here at all."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (tests/run installs podman and runc with apt)")
    if os.geteuid() != 0:
        pytest.skip("the container test needs rootful podman: run the tests as root")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (crun fails here; tests/run installs runc with apt)")
    (STATE / "tmp").mkdir(parents=True, exist_ok=True)
    (STATE / "containers.conf").write_text(CONTAINERS_CONF)
    (STATE / "storage.conf").write_text(STORAGE_CONF.format(state=STATE))
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(STATE / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(STATE / "storage.conf"),
        TMPDIR=str(STATE / "tmp"),
    )
    pod = Podman(env)
    info = pod.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run on this machine: {info.stderr.strip()[-500:]}")
    return pod


def make_base_image(pod: Podman) -> None:
    """debootstrap a minimal bookworm and import it as BASE_IMAGE (once per machine)."""
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing (tests/run installs it with apt)")
    rootfs = STATE / "tmp" / f"rootfs-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-3000:]}{proc.stderr}"
        # What apt downloaded and indexed is only weight: the Dockerfile runs apt-get update.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftovers).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        imported = subprocess.run(
            ["podman", "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            env=pod.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The image built from the repository's Dockerfile on the local Debian base."""
    with locked("build"):
        if podman.run("image", "exists", BASE_IMAGE, check=False).returncode != 0:
            started = time.monotonic()
            make_base_image(podman)
            print(f"base image {BASE_IMAGE} made in {time.monotonic() - started:.0f} s")
        build = [
            "build",
            "--format", "docker",  # keeps HEALTHCHECK (OCI image configs have no such field)
            "--network", "host",
            "--pull=never",
            "--build-arg", f"BASE={BASE_IMAGE}",
            "--tag", IMAGE,
            "--file", str(REPO / "Dockerfile"),
        ]  # fmt: skip
        if CA_BUNDLE.is_file():
            build += ["--secret", f"id=pip_ca,src={CA_BUNDLE}"]
        started = time.monotonic()
        podman.run(*build, str(REPO), timeout=780)
        print(f"image {IMAGE} built in {time.monotonic() - started:.0f} s")
        # Superseded layers of earlier builds: dropped once they are a few days old.
        podman.run("image", "prune", "--force", "--filter", "until=72h", check=False)
    return IMAGE


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_until_serving(pod: Podman, name: str, port: int, timeout: float = 30) -> None:
    """Wait for the server to accept a connection; fail early if the container exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if pod.inspect(name, "{{.State.Running}}") != "true":
            logs = pod.run("logs", name, check=False)
            pytest.fail(f"container exited early:\n{logs.stdout}\n{logs.stderr}")
        time.sleep(0.1)
    pytest.fail(f"nothing listened on port {port} within {timeout} s")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (host PIDs), from /proc."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def proc_ids(pid: int) -> tuple[list[int], list[int], str]:
    """(uids, gids, command line) of a process: real, effective, saved and filesystem ids."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()], cmdline


def alive(pid: int, cmdline: str) -> bool:
    """Whether `pid` still runs the same program (not a zombie, not a reused PID)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        now = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z" and now == cmdline


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A TOML config file for `--config` / FLASHSRV_CONFIG, mounted read-only."""
    path = tmp_path / "flashsrv.toml"
    path.write_text(f'helpers = {HELPERS}\naccess-log = "-"\naccess-log-format = "json"\n')
    path.chmod(0o644)
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A small site folder, readable by the container's user (others may read)."""
    root = tmp_path / "www"
    for rel, data in SITE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_image_configuration(podman: Podman, image: str) -> None:
    """The built image carries the runtime contract (the Dockerfile's text is checked in
    test_manifests.py; this is what the builder made of it)."""
    config = json.loads(podman.inspect(image, "{{json .Config}}"))
    health = json.loads(podman.inspect(image, "{{json .HealthCheck}}"))
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["flashsrv", "serve"]
    assert not config.get("Cmd")
    assert config["StopSignal"] == "SIGTERM"
    assert "8080/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["FLASHSRV_HOST"] == "0.0.0.0"
    assert env["FLASHSRV_PORT"] == "8080"
    assert env["FLASHSRV_ROOT"] == "/srv/www"
    assert health["Test"] == ["CMD", "flashsrv", "healthcheck"]


def test_image_has_no_build_tools(podman: Podman, image: str) -> None:
    """No compiler, no pip, no apt lists in the final image; the site folder is not writable."""
    script = (
        "for tool in gcc cc make pip pip3; do command -v $tool && exit 1; done; "
        "[ -z \"$(ls /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$')\" ] "
        "|| exit 2; "
        "[ ! -w /srv/www ] || exit 3; "
        "[ -f /srv/www/index.html ] || exit 4; "
        "id -u"
    )
    proc = podman.run("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image,
                      "-c", script, check=False)  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert proc.stdout.strip() == str(UID)


def test_container_serves_a_mounted_site_and_stops_cleanly(
    podman: Podman, image: str, site: Path, config_file: Path
) -> None:
    """Settings arrive three ways, each checked below: the mounted config file (JSON access log,
    helpers), an environment variable (port) and a flag after the image name, which overrides
    the image's FLASHSRV_HOST=0.0.0.0 (and keeps this host-network container on loopback)."""
    port = free_port()
    name = f"flashsrv-test-{uuid.uuid4().hex[:10]}"
    run = [
        "run", "--detach", "--name", name,
        "--network", "host",
        "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
        "--volume", f"{site}:/srv/www:ro",
        "--volume", f"{config_file}:/etc/flashsrv/flashsrv.toml:ro",
        "--env", "FLASHSRV_CONFIG=/etc/flashsrv/flashsrv.toml",
        "--env", f"FLASHSRV_PORT={port}",
        image,
        "--host", "127.0.0.1",
    ]  # fmt: skip
    podman.run(*run, timeout=60)
    try:
        wait_until_serving(podman, name, port)

        # Pages over HTTP, from the read-only volume.
        status, headers, body = http_get(port, "/")
        assert (status, body) == (200, SITE["index.html"])
        assert headers["content-type"].startswith("text/html")
        status, headers, body = http_get(port, "/style.css")
        assert (status, body) == (200, SITE["style.css"])
        assert headers["content-type"].startswith("text/css")
        status, _, body = http_get(port, "/docs/page.txt")
        assert (status, body) == (200, SITE["docs/page.txt"])
        assert http_get(port, "/no-such-page.html")[0] == 404

        # The image's own HEALTHCHECK, run by podman inside the container.
        health = podman.run("healthcheck", "run", name, check=False, timeout=60)
        assert health.returncode == 0, f"healthcheck: {health.stdout}{health.stderr}"
        assert podman.inspect(name, "{{.State.Health.Status}}") == "healthy"

        # The server (PID 1 in the container) and its helpers all run as 10001:10001.
        init_pid = int(podman.inspect(name, "{{.State.Pid}}"))
        processes = {pid: proc_ids(pid) for pid in process_tree(init_pid)}
        assert len(processes) >= 1 + HELPERS, processes
        for pid, (uids, gids, cmdline) in processes.items():
            assert uids == [UID] * 4 and gids == [UID] * 4, (pid, uids, gids, cmdline)
        assert "flashsrv serve" in processes[init_pid][2]
        top = podman.run("top", name, "user", "huser").stdout.split("\n")[1:]
        assert {tuple(line.split()) for line in top if line.strip()} == {("flashsrv", str(UID))}

        # SIGTERM: the daemon drains and exits 0 by itself, in well under podman's 10 s grace,
        # also with an idle keep-alive connection open (as browsers and load balancers leave).
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        idle.request("GET", "/style.css")
        assert idle.getresponse().read() == SITE["style.css"]
        started = time.monotonic()
        try:
            podman.run("stop", "--time", "10", name, timeout=60)
        finally:
            idle.close()
        stop_seconds = time.monotonic() - started
        exit_code = int(podman.inspect(name, "{{.State.ExitCode}}"))
        logs = podman.run("logs", name)
        print(f"podman stop took {stop_seconds:.2f} s; exit code {exit_code}")
        assert exit_code == 0, f"exit code {exit_code}\n{logs.stdout}\n{logs.stderr}"
        assert stop_seconds < 5, f"stop took {stop_seconds:.1f} s (SIGKILL after 10 s?)"
        lingering = [pid for pid, (_, _, cmd) in processes.items() if alive(pid, cmd)]
        assert not lingering, f"processes still running after stop: {lingering}"

        # Logs: the listening line on stderr, JSON access-log lines on stdout.
        assert f"flashsrv listening on http://127.0.0.1:{port}" in logs.stderr
        assert "Traceback" not in logs.stderr
        records: list[object] = []
        for line in logs.stdout.splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        assert any("/style.css" in json.dumps(record) for record in records), logs.stdout
    finally:
        podman.run("rm", "--force", "--time", "0", name, check=False)
